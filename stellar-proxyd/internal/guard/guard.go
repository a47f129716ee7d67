// Package guard checks the HTTP/1 framing of every request on a connection
// before net/http reads it, so request-smuggling shapes are refused with a
// 400 and the connection closed: Content-Length with Transfer-Encoding,
// repeated or malformed Content-Length, any Transfer-Encoding but a single
// "chunked", obs-fold header lines, bare LF line ends, and malformed chunk
// sizes. (net/http alone drops the Content-Length of a CL+TE message and
// keeps the connection open, and merges identical repeated lengths.)
//
// A refused head is replaced by a request line net/http itself rejects,
// so the server answers "400 Bad Request" with "Connection: close" in
// order after any earlier pipelined request. A malformed chunk inside a
// body makes Read fail; the handler sees Bad() and answers 400.
package guard

import (
	"bytes"
	"context"
	"errors"
	"net"
	"strconv"
	"sync/atomic"
)

// MaxHead is the largest request head checked; a longer head is passed on
// unchanged for net/http to refuse (431) by its own limit.
const MaxHead = 64 << 10

// maxChunkLine bounds a chunk-size line with its extensions.
const maxChunkLine = 4096

// ErrBadFraming is returned by Read after a malformed chunk.
var ErrBadFraming = errors.New("bad request framing")

// rejectLine is what net/http reads instead of a refused head.
var rejectLine = []byte("REFUSED-BY-STELLAR-PROXYD\r\n\r\n")

type state int

const (
	stHead state = iota
	stBody
	stChunkSize
	stChunkData
	stChunkCRLF
	stTrailer
	stPass // opaque (upgraded connection or head too long): no more checks
	stDone // refused: EOF after the reject line
)

// Conn wraps a connection carrying HTTP/1 requests.
type Conn struct {
	net.Conn
	tls bool

	st     state
	head   []byte // a head (or chunk line, or trailer) being gathered
	remain int64  // bytes left of a body or chunk
	out    []byte // checked bytes not yet read by the server
	outBuf []byte // out's backing array, reused once drained
	buf    []byte
	err    error
	bad    atomic.Bool
	// Reason says why the connection was refused.
	reason atomic.Value
}

// New wraps c; tlsConn marks a connection that came over TLS.
func New(c net.Conn, tlsConn bool) *Conn {
	return &Conn{Conn: c, tls: tlsConn}
}

type ctxKey struct{}

// WithConn returns ctx carrying c (for http.Server.ConnContext).
func WithConn(ctx context.Context, c net.Conn) context.Context {
	if gc, ok := c.(*Conn); ok {
		return context.WithValue(ctx, ctxKey{}, gc)
	}
	return ctx
}

// FromContext returns the Conn of a request, or nil.
func FromContext(ctx context.Context) *Conn {
	c, _ := ctx.Value(ctxKey{}).(*Conn)
	return c
}

// Bad reports whether the connection carried a malformed body.
func (c *Conn) Bad() bool { return c != nil && c.bad.Load() }

// TLS reports whether the connection came over TLS.
func (c *Conn) TLS() bool { return c != nil && c.tls }

// Reason says why the connection was refused ("" if it was not).
func (c *Conn) Reason() string {
	if c == nil {
		return ""
	}
	s, _ := c.reason.Load().(string)
	return s
}

// Read returns checked bytes.
func (c *Conn) Read(p []byte) (int, error) {
	for len(c.out) == 0 {
		if c.st == stDone {
			return 0, errors.Join(ErrBadFraming, errors.New(c.Reason()))
		}
		if c.err != nil {
			return 0, c.err
		}
		if c.buf == nil {
			c.buf = make([]byte, 16<<10)
		}
		n, err := c.Conn.Read(c.buf)
		if n > 0 {
			c.out = c.outBuf[:0] // reuse the drained buffer
			c.feed(c.buf[:n])
			c.outBuf = c.out[:0]
		}
		if err != nil {
			if isTimeout(err) {
				// A deadline (net/http aborts its background read this
				// way): not the end of the stream.
				if len(c.out) > 0 {
					break
				}
				return 0, err
			}
			// Release what is held so the server sees the short head.
			c.out = append(c.out, c.head...)
			c.head = nil
			c.err = err
		}
	}
	n := copy(p, c.out)
	c.out = c.out[n:]
	return n, nil
}

// isTimeout reports a deadline error, without errors.As's reflection in
// the common case (net/http's deadline after every request comes as a
// *net.OpError).
func isTimeout(err error) bool {
	if ne, ok := err.(net.Error); ok {
		return ne.Timeout()
	}
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// feed runs the framing state machine over b, moving checked bytes to out.
func (c *Conn) feed(b []byte) {
	for len(b) > 0 {
		switch c.st {
		case stPass:
			c.out = append(c.out, b...)
			return
		case stDone:
			return
		case stBody, stChunkData:
			n := int64(len(b))
			if n > c.remain {
				n = c.remain
			}
			c.out = append(c.out, b[:n]...)
			b = b[n:]
			c.remain -= n
			if c.remain == 0 {
				if c.st == stBody {
					c.st = stHead
				} else {
					c.st = stChunkCRLF
				}
			}
		case stHead:
			// Skip empty lines before a request line (RFC 9112 2.2).
			if len(c.head) == 0 {
				for len(b) > 0 && (b[0] == '\r' || b[0] == '\n') {
					c.out = append(c.out, b[0])
					b = b[1:]
				}
				if len(b) == 0 {
					return
				}
			}
			end := headEnd(c.head, b)
			if end < 0 {
				c.head = append(c.head, b...)
				b = nil
				if len(c.head) > MaxHead {
					c.out = append(c.out, c.head...)
					c.head = nil
					c.st = stPass
				}
				continue
			}
			c.head = append(c.head, b[:end]...)
			b = b[end:]
			c.checkHead()
			c.head = c.head[:0]
		case stChunkSize, stChunkCRLF, stTrailer:
			i := bytes.IndexByte(b, '\n')
			if i < 0 {
				c.head = append(c.head, b...)
				b = nil
				if len(c.head) > maxChunkLine {
					c.fail("chunk line too long")
				}
				continue
			}
			line := append(c.head, b[:i+1]...)
			b = b[i+1:]
			c.line(line)
			if c.st != stDone {
				c.head = line[:0]
			}
		}
	}
}

// headEnd returns how many bytes of b complete the head gathered so far
// (through the empty line: "\n\r\n" or "\n\n"), or -1.
func headEnd(have, b []byte) int {
	best := -1
	if i := bytes.Index(b, []byte("\n\r\n")); i >= 0 {
		best = i + 3
	}
	if i := bytes.Index(b, []byte("\n\n")); i >= 0 && (best < 0 || i+2 < best) {
		best = i + 2
	}
	// A terminator that starts in have and ends in b's first bytes.
	var small [6]byte
	t := len(have)
	if t > 3 {
		t = 3
	}
	k := copy(small[:], have[len(have)-t:])
	k += copy(small[k:], b[:min(len(b), 3)])
	j := small[:k]
	for i := 0; i < t; i++ {
		if j[i] != '\n' {
			continue
		}
		end := -1
		switch {
		case i+1 < len(j) && j[i+1] == '\n':
			end = i + 2
		case i+2 < len(j) && j[i+1] == '\r' && j[i+2] == '\n':
			end = i + 3
		}
		if end > t && (best < 0 || end-t < best) {
			return end - t
		}
	}
	return best
}

func (c *Conn) fail(reason string) {
	c.reason.Store(reason)
	c.bad.Store(true)
	c.st = stDone
	c.head = nil
}

// line handles one line of chunked framing.
func (c *Conn) line(l []byte) {
	if len(l) < 2 || l[len(l)-2] != '\r' {
		c.fail("bare LF in chunked body")
		return
	}
	body := l[:len(l)-2]
	switch c.st {
	case stChunkCRLF:
		if len(body) != 0 {
			c.fail("chunk data longer than its size")
			return
		}
		c.out = append(c.out, l...)
		c.st = stChunkSize
	case stTrailer:
		c.out = append(c.out, l...)
		if len(body) == 0 {
			c.st = stHead
		} else if body[0] == ' ' || body[0] == '\t' {
			c.fail("obs-fold in trailer")
		}
	case stChunkSize:
		size := body
		if i := bytes.IndexByte(size, ';'); i >= 0 {
			size = size[:i]
		}
		if len(size) == 0 || len(size) > 15 {
			c.fail("bad chunk size")
			return
		}
		for _, ch := range size {
			if !(ch >= '0' && ch <= '9' || ch >= 'a' && ch <= 'f' || ch >= 'A' && ch <= 'F') {
				c.fail("bad chunk size")
				return
			}
		}
		n, err := strconv.ParseInt(string(size), 16, 64)
		if err != nil {
			c.fail("bad chunk size")
			return
		}
		c.out = append(c.out, l...)
		if n == 0 {
			c.st = stTrailer
		} else {
			c.remain = n
			c.st = stChunkData
		}
	}
}

// checkHead validates a complete head and sets the body's framing.
func (c *Conn) checkHead() {
	reason, next, remain := Check(c.head)
	if reason != "" {
		c.reason.Store(reason)
		c.out = append(c.out, rejectLine...)
		c.st = stDone
		return
	}
	c.out = append(c.out, c.head...)
	c.st, c.remain = next, remain
}

// Check validates one request head (request line through the empty line)
// and returns why it is refused ("" if it is not) and the framing of the
// body that follows.
func Check(head []byte) (reason string, next state, remain int64) {
	// Every line, the empty one at the end too, must end in CRLF.
	if !bytes.HasSuffix(head, []byte("\r\n\r\n")) {
		return "bare LF line end", stHead, 0
	}
	body := head[:len(head)-2] // drop the empty line's CRLF
	first := true
	http10 := false
	var cl, te []byte
	ncl, nte := 0, 0
	upgrade := false
	for len(body) > 0 {
		i := bytes.IndexByte(body, '\n')
		if i < 1 || body[i-1] != '\r' {
			return "bare LF line end", stHead, 0
		}
		l := body[:i-1]
		body = body[i+1:]
		if first {
			first = false
			sp1 := bytes.IndexByte(l, ' ')
			if sp1 <= 0 {
				return "malformed request line", stHead, 0
			}
			rest := l[sp1+1:]
			sp2 := bytes.IndexByte(rest, ' ')
			if sp2 <= 0 {
				return "malformed request line", stHead, 0
			}
			proto := rest[sp2+1:]
			if !bytes.HasPrefix(proto, []byte("HTTP/1.")) || bytes.IndexByte(proto, ' ') >= 0 {
				return "malformed request line", stHead, 0
			}
			http10 = string(proto) == "HTTP/1.0"
			continue
		}
		if len(l) == 0 {
			return "empty header line", stHead, 0
		}
		if l[0] == ' ' || l[0] == '\t' {
			return "obs-fold header line", stHead, 0
		}
		colon := bytes.IndexByte(l, ':')
		if colon <= 0 {
			return "header line without a name", stHead, 0
		}
		name := l[:colon]
		for _, ch := range name {
			if !isToken(ch) {
				return "bad character in header name", stHead, 0
			}
		}
		val := bytes.Trim(l[colon+1:], " \t")
		if bytes.IndexByte(val, 0) >= 0 || bytes.IndexByte(val, '\r') >= 0 {
			return "bad character in header value", stHead, 0
		}
		switch {
		case bytes.EqualFold(name, []byte("Content-Length")):
			cl = val
			ncl++
		case bytes.EqualFold(name, []byte("Transfer-Encoding")):
			te = val
			nte++
		case bytes.EqualFold(name, []byte("Upgrade")):
			upgrade = true
		}
	}
	if first {
		return "short head", stHead, 0
	}
	switch {
	case ncl > 0 && nte > 0:
		return "both Content-Length and Transfer-Encoding", stHead, 0
	case ncl > 1:
		return "repeated Content-Length", stHead, 0
	case nte > 1:
		return "repeated Transfer-Encoding", stHead, 0
	case nte == 1:
		if http10 {
			return "Transfer-Encoding in an HTTP/1.0 request", stHead, 0
		}
		if !bytes.EqualFold(te, []byte("chunked")) {
			return "Transfer-Encoding other than chunked", stHead, 0
		}
		return "", stChunkSize, 0
	case ncl == 1:
		if len(cl) == 0 || len(cl) > 18 {
			return "bad Content-Length", stHead, 0
		}
		for _, ch := range cl {
			if ch < '0' || ch > '9' {
				return "bad Content-Length", stHead, 0
			}
		}
		n, _ := strconv.ParseInt(string(cl), 10, 64)
		if n > 0 {
			return "", stBody, n
		}
	}
	if upgrade {
		return "", stPass, 0 // the connection may switch protocols
	}
	return "", stHead, 0
}

func isToken(c byte) bool {
	if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' {
		return true
	}
	return bytes.IndexByte([]byte("!#$%&'*+-.^_`|~"), c) >= 0
}

// Listener wraps every accepted connection in a Conn.
type Listener struct {
	net.Listener
}

// Accept returns the next connection, wrapped.
func (l Listener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return New(c, false), nil
}
