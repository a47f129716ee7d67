package h1

import (
	"bufio"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
)

// bufferBeforeHead is how much of a body is held back before the head goes
// out, so a short answer gets a Content-Length (as net/http's 2 KiB).
const bufferBeforeHead = 2048

// writer is the http.ResponseWriter of the loop. It frames answers the way
// net/http's server does (Content-Length for a short finished body, else
// chunked; Date; sniffed Content-Type; Connection: close; trailers), so an
// answer is the same whichever server wrote it.
type writer struct {
	bw       *bufio.Writer
	hdr      http.Header
	method   string
	draining *atomic.Bool // the server's: an answer started while draining closes

	status     int  // 0 until WriteHeader with a final status
	headOut    bool // the head is written
	chunking   bool
	closeAfter bool  // the connection ends after this answer
	length     int64 // the Content-Length set by the handler, or -1
	written    int64
	pending    []byte // body held back before the head
	trailers   []string
	err        error
	date       [len(http.TimeFormat) + 4]byte
}

func (w *writer) reset(method string, closeAfter bool) {
	clear(w.hdr)
	w.method = method
	w.status, w.headOut, w.chunking, w.closeAfter = 0, false, false, closeAfter
	w.length, w.written = -1, 0
	w.pending = w.pending[:0]
	w.trailers = w.trailers[:0]
	w.err = nil
}

func (w *writer) Header() http.Header { return w.hdr }

func bodyAllowed(status int) bool {
	return !(status >= 100 && status <= 199 || status == 204 || status == 304)
}

func (w *writer) WriteHeader(code int) {
	if w.status != 0 || w.headOut {
		return
	}
	if code >= 100 && code <= 199 && code != http.StatusSwitchingProtocols {
		writeStatusLine(w.bw, code)
		w.hdr.WriteSubset(w.bw, map[string]bool{"Content-Length": true, "Transfer-Encoding": true})
		w.bw.WriteString("\r\n")
		if err := w.bw.Flush(); err != nil && w.err == nil {
			w.err = err
		}
		return
	}
	w.status = code
	if cl := w.hdr.Get("Content-Length"); cl != "" {
		if v, err := strconv.ParseInt(cl, 10, 64); err == nil && v >= 0 {
			w.length = v
		} else {
			w.hdr.Del("Content-Length")
		}
	}
}

func (w *writer) Write(p []byte) (int, error) {
	if w.status == 0 {
		w.WriteHeader(http.StatusOK)
	}
	if w.err != nil {
		return 0, w.err
	}
	if len(p) == 0 {
		return 0, nil
	}
	if !bodyAllowed(w.status) {
		return 0, http.ErrBodyNotAllowed
	}
	if w.length >= 0 && w.written+int64(len(p)) > w.length {
		return 0, http.ErrContentLength
	}
	w.written += int64(len(p))
	if w.method == http.MethodHead {
		return len(p), nil
	}
	if !w.headOut {
		if len(w.pending)+len(p) <= bufferBeforeHead {
			w.pending = append(w.pending, p...)
			return len(p), nil
		}
		w.pending = append(w.pending, p...)
		w.writeHead(w.pending, false)
		w.body(w.pending)
		w.pending = w.pending[:0]
		return len(p), w.err
	}
	w.body(p)
	return len(p), w.err
}

// Flush sends the head and everything written so far.
func (w *writer) Flush() {
	if w.status == 0 {
		w.WriteHeader(http.StatusOK)
	}
	if !w.headOut {
		w.writeHead(w.pending, false)
		w.body(w.pending)
		w.pending = w.pending[:0]
	}
	if err := w.bw.Flush(); err != nil && w.err == nil {
		w.err = err
	}
}

// FlushError is Flush reporting the error (for http.ResponseController).
func (w *writer) FlushError() error {
	w.Flush()
	return w.err
}

func (w *writer) body(p []byte) {
	if len(p) == 0 || w.method == http.MethodHead || !bodyAllowed(w.status) {
		return
	}
	if w.chunking {
		var n [16]byte
		w.bw.Write(strconv.AppendInt(n[:0], int64(len(p)), 16))
		w.bw.WriteString("\r\n")
		w.bw.Write(p)
		_, err := w.bw.WriteString("\r\n")
		if err != nil && w.err == nil {
			w.err = err
		}
		return
	}
	if _, err := w.bw.Write(p); err != nil && w.err == nil {
		w.err = err
	}
}

// finish ends the answer after the handler returned.
func (w *writer) finish() {
	if w.status == 0 {
		w.WriteHeader(http.StatusOK)
	}
	if !w.headOut {
		w.writeHead(w.pending, true)
		w.body(w.pending)
		w.pending = w.pending[:0]
	}
	if w.chunking {
		w.bw.WriteString("0\r\n")
		if t := w.finalTrailers(); t != nil {
			t.Write(w.bw)
		}
		w.bw.WriteString("\r\n")
	}
	if w.length >= 0 && bodyAllowed(w.status) && w.method != http.MethodHead && w.written != w.length {
		w.closeAfter = true // out of step with the client: end here
	}
}

func (w *writer) finalTrailers() http.Header {
	var t http.Header
	for k, vv := range w.hdr {
		if kk, ok := strings.CutPrefix(k, http.TrailerPrefix); ok {
			if t == nil {
				t = http.Header{}
			}
			t[kk] = vv
		}
	}
	for _, k := range w.trailers {
		for _, v := range w.hdr[k] {
			if t == nil {
				t = http.Header{}
			}
			t.Add(k, v)
		}
	}
	return t
}

// writeHead writes the status line and headers; p is the start of the
// body (sniffed for a Content-Type; its length is the Content-Length when
// done says the handler has returned).
func (w *writer) writeHead(p []byte, done bool) {
	w.headOut = true
	hdr := w.hdr
	var exclude map[string]bool
	trailers := false
	for k := range hdr {
		if strings.HasPrefix(k, http.TrailerPrefix) {
			if exclude == nil {
				exclude = map[string]bool{}
			}
			exclude[k] = true
			trailers = true
		}
	}
	for _, v := range hdr["Trailer"] {
		trailers = true
		for _, k := range strings.Split(v, ",") {
			if k = http.CanonicalHeaderKey(strings.TrimSpace(k)); k != "" && k != "Transfer-Encoding" && k != "Trailer" && k != "Content-Length" {
				w.trailers = append(w.trailers, k)
				if exclude == nil {
					exclude = map[string]bool{}
				}
				exclude[k] = true
			}
		}
	}
	isHEAD := w.method == http.MethodHead
	var clen []byte
	var clenBuf [20]byte
	if done && !trailers && bodyAllowed(w.status) && w.length < 0 && (!isHEAD || len(p) > 0) {
		w.length = int64(len(p))
		clen = strconv.AppendInt(clenBuf[:0], int64(len(p)), 10)
	}
	if hasToken(hdr.Get("Connection"), "close") || w.draining != nil && w.draining.Load() {
		w.closeAfter = true
	}
	contentType := ""
	if bodyAllowed(w.status) {
		_, haveType := hdr["Content-Type"]
		if hdr.Get("Content-Encoding") == "" && !haveType && len(p) > 0 {
			contentType = http.DetectContentType(p)
		}
	} else {
		hdr.Del("Content-Length")
		hdr.Del("Transfer-Encoding")
		if w.status == http.StatusNotModified {
			hdr.Del("Content-Type")
		}
	}
	var date []byte
	if _, ok := hdr["Date"]; !ok {
		date = time.Now().UTC().AppendFormat(w.date[:0], http.TimeFormat)
	}
	hdr.Del("Transfer-Encoding")
	te := ""
	if !isHEAD && bodyAllowed(w.status) && w.length < 0 {
		w.chunking, te = true, "chunked"
		hdr.Del("Content-Length")
	}
	conn := ""
	if w.closeAfter {
		hdr.Del("Connection")
		conn = "close"
	}
	bw := w.bw
	writeStatusLine(bw, w.status)
	hdr.WriteSubset(bw, exclude)
	if date != nil {
		bw.WriteString("Date: ")
		bw.Write(date)
		bw.WriteString("\r\n")
	}
	if clen != nil {
		bw.WriteString("Content-Length: ")
		bw.Write(clen)
		bw.WriteString("\r\n")
	}
	for i, v := range [3]string{contentType, conn, te} {
		if v != "" {
			bw.WriteString([3]string{"Content-Type: ", "Connection: ", "Transfer-Encoding: "}[i])
			bw.WriteString(v)
			bw.WriteString("\r\n")
		}
	}
	if _, err := bw.WriteString("\r\n"); err != nil && w.err == nil {
		w.err = err
	}
}

func writeStatusLine(bw *bufio.Writer, code int) {
	bw.WriteString("HTTP/1.1 ")
	var n [8]byte
	if text := http.StatusText(code); text != "" {
		bw.Write(strconv.AppendInt(n[:0], int64(code), 10))
		bw.WriteByte(' ')
		bw.WriteString(text)
	} else {
		bw.WriteString(strconv.Itoa(code) + " status code " + strconv.Itoa(code))
	}
	bw.WriteString("\r\n")
}
