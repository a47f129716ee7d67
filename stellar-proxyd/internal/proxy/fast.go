package proxy

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"net/textproto"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// The lean path forwards plain HTTP/1 requests without a body (GET, HEAD,
// OPTIONS, DELETE) over pooled backend connections used synchronously by
// the request's own goroutine: the request head is written straight from
// the incoming request, the answer's head is parsed straight into the
// ResponseWriter's header map, and the body is copied with pooled buffers.
// Anything else (upgrades, HTTP/2, request bodies, Expect, absolute-form
// targets) takes the httputil.ReverseProxy path.

// maxRespHead bounds a backend answer's head (status line and headers).
const maxRespHead = 64 << 10

// backendIdleTimeout is how long a pooled backend connection may wait idle.
const backendIdleTimeout = 60 * time.Second

var errRespHead = errors.New("malformed answer head")

// bconn is a kept-alive connection to a backend.
type bconn struct {
	c    net.Conn
	br   *bufio.Reader
	bw   *bufio.Writer
	used time.Time // when it went idle
}

// connPool keeps idle connections to one backend, newest last.
type connPool struct {
	mu     sync.Mutex
	idle   []*bconn
	closed bool
}

func (cp *connPool) get() *bconn {
	cp.mu.Lock()
	defer cp.mu.Unlock()
	for len(cp.idle) > 0 {
		bc := cp.idle[len(cp.idle)-1]
		cp.idle[len(cp.idle)-1] = nil
		cp.idle = cp.idle[:len(cp.idle)-1]
		if time.Since(bc.used) < backendIdleTimeout {
			return bc
		}
		bc.c.Close()
	}
	return nil
}

func (cp *connPool) put(bc *bconn, max int) {
	cp.mu.Lock()
	if cp.closed || len(cp.idle) >= max {
		cp.mu.Unlock()
		bc.c.Close()
		return
	}
	bc.used = time.Now()
	cp.idle = append(cp.idle, bc)
	cp.mu.Unlock()
}

// close drops every idle connection and keeps no more.
func (cp *connPool) close() {
	cp.mu.Lock()
	idle := cp.idle
	cp.idle, cp.closed = nil, true
	cp.mu.Unlock()
	for _, bc := range idle {
		bc.c.Close()
	}
}

// leanOK reports whether r can take the lean path.
func (p *Proxy) leanOK(r *http.Request) bool {
	if p.cfg.DisableLean || r.ProtoMajor != 1 {
		return false
	}
	switch r.Method {
	case http.MethodGet, http.MethodHead, http.MethodOptions, http.MethodDelete:
	default:
		return false
	}
	if r.ContentLength != 0 || len(r.TransferEncoding) > 0 || (r.Body != nil && r.Body != http.NoBody) {
		return false
	}
	if len(r.RequestURI) == 0 || r.RequestURI[0] != '/' {
		return false
	}
	h := r.Header
	return len(h["Upgrade"]) == 0 && len(h["Expect"]) == 0 && len(h["Trailer"]) == 0
}

// hopHeaders are dropped in both directions (RFC 9110 7.6.1), as
// httputil.ReverseProxy does.
var hopHeaders = map[string]bool{
	"Connection": true, "Proxy-Connection": true, "Keep-Alive": true, "Proxy-Authenticate": true,
	"Proxy-Authorization": true, "Te": true, "Trailer": true, "Transfer-Encoding": true, "Upgrade": true,
}

// forwardedHeaders are set by the proxy, never passed on from clients.
var forwardedHeaders = map[string]bool{"Forwarded": true, "X-Forwarded-For": true, "X-Forwarded-Host": true, "X-Forwarded-Proto": true}

// serveLean forwards r on the lean path; st.backend is already picked.
func (p *Proxy) serveLean(w http.ResponseWriter, r *http.Request, st *reqState) {
	var tried []*backend
	for {
		b := st.backend
		b.active.Add(1)
		wrote, err := p.forwardLean(w, r, st)
		b.active.Add(-1)
		if err == nil {
			return
		}
		if !wrote {
			clear(w.Header()) // a partly read answer head
		}
		if wrote {
			// The answer's head is out: all that is left is to cut the
			// connection, as httputil.ReverseProxy does.
			p.log.Debug("backend answer cut", "host", r.Host, "backend", b.spec.Addr, "err", err)
			panic(http.ErrAbortHandler)
		}
		if r.Context().Err() != nil {
			w.WriteHeader(499)
			return
		}
		refused := errors.Is(err, syscall.ECONNREFUSED) || isDial(err)
		b.reportError(err, refused)
		// Every lean method is idempotent and has no body: retry on
		// another backend (at most twice), like the other path.
		if len(tried) >= 2 {
			p.leanError(w, r, st, err)
			return
		}
		tried = append(tried, b)
		next := st.route.pick(tried)
		if next == nil {
			p.leanError(w, r, st, err)
			return
		}
		st.backend = next
	}
}

func (p *Proxy) leanError(w http.ResponseWriter, r *http.Request, st *reqState, err error) {
	p.log.Debug("backend request failed", "host", r.Host, "backend", st.backend.spec.Addr, "err", err)
	http.Error(w, "stellar-proxyd: backend unavailable", http.StatusBadGateway)
}

// forwardLean sends r to st.backend and copies the answer to w. wrote
// tells whether anything was written to w (then err cannot be answered).
// A kept-alive connection that fails before any answer byte is replaced
// by a new one once (the backend may have closed it while idle).
func (p *Proxy) forwardLean(w http.ResponseWriter, r *http.Request, st *reqState) (wrote bool, err error) {
	b := st.backend
	ctx := r.Context()
	bc := b.pool.get()
	reused := bc != nil
	for {
		if bc == nil {
			c, err := p.dialer.DialContext(ctx, "tcp", b.spec.Addr)
			if err != nil {
				return false, err
			}
			bc = &bconn{c: c, br: bufio.NewReaderSize(c, 8<<10), bw: bufio.NewWriterSize(c, 4<<10)}
		}
		// A request of the h1 loop has a context that never ends (the loop
		// has no background read): nothing to watch.
		var stop func() bool
		if ctx.Done() != nil {
			stop = context.AfterFunc(ctx, func() { bc.c.SetDeadline(time.Unix(1, 0)) })
		}
		keep, wrote, got, err := p.exchange(w, r, st, bc)
		if stop != nil && !stop() {
			keep = false // the deadline was set or is being set
		}
		if err == nil {
			// Bytes after the answer mean the backend's framing is not ours:
			// such a connection is not reused.
			if keep && bc.br.Buffered() == 0 {
				b.pool.put(bc, p.cfg.IdleConnsPerBackend)
			} else {
				bc.c.Close()
			}
			b.reportSuccess()
			return true, nil
		}
		bc.c.Close()
		if !reused || got || wrote || ctx.Err() != nil {
			return wrote, err
		}
		reused, bc = false, nil
	}
}

// exchange writes the request and copies the answer. got tells whether
// any byte of the answer arrived; keep whether bc may be reused.
func (p *Proxy) exchange(w http.ResponseWriter, r *http.Request, st *reqState, bc *bconn) (keep, wrote, got bool, err error) {
	bw := bc.bw
	bw.WriteString(r.Method)
	bw.WriteByte(' ')
	bw.WriteString(r.RequestURI)
	bw.WriteString(" HTTP/1.1\r\nHost: ")
	bw.WriteString(r.Host)
	bw.WriteString("\r\n")
	conn := r.Header["Connection"]
	for k, vv := range r.Header {
		// No body goes this way: a "Content-Length: 0" is not passed on
		// (as net/http's Transport does for these methods).
		if hopHeaders[k] || forwardedHeaders[k] || k == "Content-Length" || (len(conn) > 0 && listed(conn, k)) {
			continue
		}
		for _, v := range vv {
			bw.WriteString(k)
			bw.WriteString(": ")
			bw.WriteString(v)
			bw.WriteString("\r\n")
		}
	}
	if hasToken(r.Header["Te"], "trailers") {
		bw.WriteString("Te: trailers\r\n")
	}
	// This is the edge: forwarded headers from clients are not trusted.
	if ip, _, err := net.SplitHostPort(r.RemoteAddr); err == nil {
		bw.WriteString("X-Forwarded-For: ")
		bw.WriteString(ip)
		bw.WriteString("\r\n")
	}
	bw.WriteString("X-Forwarded-Host: ")
	bw.WriteString(r.Host)
	if st.tls {
		bw.WriteString("\r\nX-Forwarded-Proto: https\r\n\r\n")
	} else {
		bw.WriteString("\r\nX-Forwarded-Proto: http\r\n\r\n")
	}
	if err := bw.Flush(); err != nil {
		return false, false, false, fmt.Errorf("write request: %w", err)
	}

	br := bc.br
	var h respHead
	for {
		if _, err := br.Peek(1); err != nil {
			return false, false, false, fmt.Errorf("read answer: %w", err)
		}
		h = respHead{}
		if err := h.read(br, w.Header()); err != nil {
			return false, false, true, err
		}
		if h.status >= 200 {
			break
		}
		if h.status == http.StatusSwitchingProtocols {
			return false, false, true, fmt.Errorf("read answer: %w: 101 to a request without Upgrade", errRespHead)
		}
		// An interim answer (103 Early Hints) is passed on, as
		// httputil.ReverseProxy does.
		w.WriteHeader(h.status)
		clear(w.Header())
	}
	noBody := r.Method == http.MethodHead || h.status == http.StatusNoContent || h.status == http.StatusNotModified
	hdr := w.Header()
	for _, k := range h.drop {
		delete(hdr, k)
	}
	// Trailers a chunked answer announces stay announced to the client.
	for k := range hopHeaders {
		if k != "Trailer" || noBody || !h.chunked {
			delete(hdr, k)
		}
	}
	keep = !h.close
	switch {
	case noBody:
		w.WriteHeader(h.status)
		return keep, true, true, nil
	case h.chunked:
		delete(hdr, "Content-Length")
		w.WriteHeader(h.status)
		if err := copyFlush(w, httputil.NewChunkedReader(br)); err != nil {
			return false, true, true, err
		}
		if err := readTrailers(br, hdr); err != nil {
			return false, true, true, err
		}
		return keep, true, true, nil
	case h.length >= 0:
		w.WriteHeader(h.status)
		if h.length <= int64(br.Size()) {
			// Small answers are written from the read buffer itself.
			n := int(h.length)
			b, err := br.Peek(n)
			if err != nil {
				return false, true, true, fmt.Errorf("read answer body: %w", err)
			}
			if _, err := w.Write(b); err != nil {
				return false, true, true, fmt.Errorf("write answer: %w", err)
			}
			br.Discard(n)
			return keep, true, true, nil
		}
		bp := pool.Get().(*[]byte)
		n, err := io.CopyBuffer(writerOnly{w}, io.LimitReader(br, h.length), *bp)
		pool.Put(bp)
		if err != nil {
			return false, true, true, fmt.Errorf("copy answer body: %w", err)
		}
		if n != h.length {
			return false, true, true, fmt.Errorf("copy answer body: %w", io.ErrUnexpectedEOF)
		}
		return keep, true, true, nil
	default:
		// Delimited by the connection's end.
		w.WriteHeader(h.status)
		if err := copyFlush(w, br); err != nil {
			return false, true, true, err
		}
		return false, true, true, nil
	}
}

// writerOnly hides ReadFrom, so io.CopyBuffer uses the pooled buffer.
type writerOnly struct{ io.Writer }

// copyFlush copies an answer of unknown length, flushing every write.
func copyFlush(w http.ResponseWriter, r io.Reader) error {
	bp := pool.Get().(*[]byte)
	defer pool.Put(bp)
	buf := *bp
	rc := http.NewResponseController(w)
	for {
		n, err := r.Read(buf)
		if n > 0 {
			if _, werr := w.Write(buf[:n]); werr != nil {
				return fmt.Errorf("write answer: %w", werr)
			}
			if ferr := rc.Flush(); ferr != nil {
				return fmt.Errorf("flush answer: %w", ferr)
			}
		}
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return fmt.Errorf("copy answer body: %w", err)
		}
	}
}

// readTrailers reads the trailer section after the last chunk into hdr.
func readTrailers(br *bufio.Reader, hdr http.Header) error {
	announced := map[string]bool{}
	for _, v := range hdr["Trailer"] {
		for _, k := range strings.Split(v, ",") {
			if k = strings.TrimSpace(k); k != "" {
				announced[textproto.CanonicalMIMEHeaderKey(k)] = true
			}
		}
	}
	total := 0
	for {
		line, err := readLine(br, &total)
		if err != nil {
			return fmt.Errorf("read trailers: %w", err)
		}
		if len(line) == 0 {
			return nil
		}
		k, v, err := splitHeader(line)
		if err != nil {
			return fmt.Errorf("read trailers: %w", err)
		}
		if hopHeaders[k] || k == "Content-Length" {
			continue
		}
		if !announced[k] {
			k = http.TrailerPrefix + k
		}
		hdr[k] = append(hdr[k], v)
	}
}

// respHead is a parsed answer head.
type respHead struct {
	status  int
	length  int64 // -1: not given
	chunked bool
	close   bool
	drop    []string // headers named in Connection
}

// read parses a status line and headers from br, putting the headers in
// hdr (which it clears first).
func (h *respHead) read(br *bufio.Reader, hdr http.Header) error {
	clear(hdr)
	h.length = -1
	total := 0
	line, err := readLine(br, &total)
	if err != nil {
		return fmt.Errorf("read answer: %w", err)
	}
	minor, status, err := parseStatusLine(line)
	if err != nil {
		return fmt.Errorf("read answer: %w", err)
	}
	h.status = status
	h.close = minor == 0 // HTTP/1.0: no keep-alive assumed
	sawCL := false
	for {
		line, err := readLine(br, &total)
		if err != nil {
			return fmt.Errorf("read answer: %w", err)
		}
		if len(line) == 0 {
			break
		}
		k, v, err := splitHeader(line)
		if err != nil {
			return fmt.Errorf("read answer: %w", err)
		}
		switch k {
		case "Content-Length":
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil || n < 0 || v == "" || v[0] == '+' {
				return fmt.Errorf("read answer: %w: bad Content-Length %q", errRespHead, v)
			}
			if sawCL && n != h.length {
				return fmt.Errorf("read answer: %w: conflicting Content-Length", errRespHead)
			}
			if sawCL {
				continue
			}
			sawCL, h.length = true, n
		case "Transfer-Encoding":
			if !strings.EqualFold(strings.TrimSpace(v), "chunked") || h.chunked {
				return fmt.Errorf("read answer: %w: unsupported Transfer-Encoding %q", errRespHead, v)
			}
			h.chunked = true
		case "Connection":
			for _, t := range strings.Split(v, ",") {
				t = strings.TrimSpace(t)
				switch {
				case strings.EqualFold(t, "close"):
					h.close = true
				case strings.EqualFold(t, "keep-alive"):
					if minor == 0 {
						h.close = false
					}
				case t != "":
					h.drop = append(h.drop, textproto.CanonicalMIMEHeaderKey(t))
				}
			}
		}
		hdr[k] = append(hdr[k], v)
	}
	if h.chunked {
		h.length = -1
		if minor == 0 {
			return fmt.Errorf("read answer: %w: chunked HTTP/1.0 answer", errRespHead)
		}
	}
	if h.length < 0 && !h.chunked {
		h.close = true
	}
	return nil
}

// readLine returns one line without its CRLF (or LF), counting its length
// into total, which is bounded by maxRespHead. The line is only valid
// until the next read.
func readLine(br *bufio.Reader, total *int) ([]byte, error) {
	line, err := br.ReadSlice('\n')
	if err == bufio.ErrBufferFull {
		long := append([]byte(nil), line...)
		for err == bufio.ErrBufferFull {
			if len(long)+*total > maxRespHead {
				return nil, fmt.Errorf("%w: head over %d bytes", errRespHead, maxRespHead)
			}
			line, err = br.ReadSlice('\n')
			long = append(long, line...)
		}
		line = long
	}
	if err != nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return nil, err
	}
	*total += len(line)
	if *total > maxRespHead {
		return nil, fmt.Errorf("%w: head over %d bytes", errRespHead, maxRespHead)
	}
	line = line[:len(line)-1]
	if n := len(line); n > 0 && line[n-1] == '\r' {
		line = line[:n-1]
	}
	return line, nil
}

// parseStatusLine parses "HTTP/1.x NNN reason".
func parseStatusLine(l []byte) (minor, status int, err error) {
	if len(l) < 12 || !bytes.HasPrefix(l, []byte("HTTP/1.")) || (l[7] != '0' && l[7] != '1') || l[8] != ' ' ||
		(len(l) > 12 && l[12] != ' ') {
		return 0, 0, fmt.Errorf("%w: bad status line %q", errRespHead, truncate(l))
	}
	for _, c := range l[9:12] {
		if c < '0' || c > '9' {
			return 0, 0, fmt.Errorf("%w: bad status code in %q", errRespHead, truncate(l))
		}
		status = status*10 + int(c-'0')
	}
	if status < 100 {
		return 0, 0, fmt.Errorf("%w: bad status code in %q", errRespHead, truncate(l))
	}
	return int(l[7] - '0'), status, nil
}

// splitHeader splits "Name: value" into the canonical name and the
// trimmed value.
func splitHeader(l []byte) (string, string, error) {
	if len(l) > 0 && (l[0] == ' ' || l[0] == '\t') {
		return "", "", fmt.Errorf("%w: obs-fold header line", errRespHead)
	}
	i := bytes.IndexByte(l, ':')
	if i <= 0 {
		return "", "", fmt.Errorf("%w: header line without a name: %q", errRespHead, truncate(l))
	}
	for _, c := range l[:i] {
		if !isTokenByte(c) {
			return "", "", fmt.Errorf("%w: bad header name %q", errRespHead, truncate(l[:i]))
		}
	}
	v := bytes.Trim(l[i+1:], " \t")
	for _, c := range v {
		if c < ' ' && c != '\t' || c == 0x7f {
			return "", "", fmt.Errorf("%w: bad character in header %q", errRespHead, truncate(l[:i]))
		}
	}
	return canonicalKey(l[:i]), string(v), nil
}

// canonicalKey returns the canonical form of a header name, without an
// allocation for names already in canonical form that net/textproto
// interns (the common ones).
func canonicalKey(k []byte) string {
	if s, ok := commonKeys[string(k)]; ok { // no allocation for the lookup
		return s
	}
	return textproto.CanonicalMIMEHeaderKey(string(k))
}

// commonKeys are header names backends send, as they are spelled on the
// wire by most servers (and by Go's), mapped to their canonical form.
var commonKeys = func() map[string]string {
	m := map[string]string{}
	for _, k := range []string{"Accept-Ranges", "Age", "Cache-Control", "Connection", "Content-Encoding",
		"Content-Language", "Content-Length", "Content-Type", "Date", "Etag", "ETag", "Expires", "Keep-Alive",
		"Last-Modified", "Link", "Location", "Server", "Set-Cookie", "Trailer", "Transfer-Encoding", "Vary",
		"X-Content-Type-Options", "X-Frame-Options"} {
		m[k] = textproto.CanonicalMIMEHeaderKey(k)
		m[strings.ToLower(k)] = textproto.CanonicalMIMEHeaderKey(k)
	}
	return m
}()

func isTokenByte(c byte) bool {
	if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' {
		return true
	}
	return strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0
}

func truncate(b []byte) []byte {
	if len(b) > 64 {
		return b[:64]
	}
	return b
}

// listed reports whether header name k is named in Connection values.
func listed(conn []string, k string) bool {
	for _, v := range conn {
		for _, t := range strings.Split(v, ",") {
			if strings.EqualFold(strings.TrimSpace(t), k) {
				return true
			}
		}
	}
	return false
}

func hasToken(vv []string, tok string) bool {
	for _, v := range vv {
		for _, t := range strings.Split(v, ",") {
			if strings.EqualFold(strings.TrimSpace(t), tok) {
				return true
			}
		}
	}
	return false
}
