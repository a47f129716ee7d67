package h1

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

// Config tunes a Server.
type Config struct {
	// ReadHeaderTimeout bounds reading a request head, from its first byte.
	ReadHeaderTimeout time.Duration
	// IdleTimeout bounds waiting for the next request on a kept-alive
	// connection.
	IdleTimeout time.Duration
	// HeadBuffer is the read buffer of a connection: a head that does not
	// fit is handed to net/http's server (which applies its own limit).
	HeadBuffer int
}

// DefaultConfig returns the limits of stellar-proxyd.
func DefaultConfig() Config {
	return Config{ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 120 * time.Second, HeadBuffer: 8 << 10}
}

// Validate checks the limits.
func (c Config) Validate() error {
	if c.ReadHeaderTimeout <= 0 || c.IdleTimeout <= 0 {
		return errors.New("h1 config: timeouts must be positive")
	}
	if c.HeadBuffer < 1024 {
		return fmt.Errorf("h1 config: head buffer %d under 1024 bytes", c.HeadBuffer)
	}
	return nil
}

// Server runs the loop on every connection of its listeners.
type Server struct {
	cfg      Config
	handler  http.Handler
	fallback func(net.Conn)
	log      *slog.Logger

	readers sync.Pool
	writers sync.Pool

	draining atomic.Bool
	mu       sync.Mutex
	conns    map[*conn]struct{}
	lns      []net.Listener
	wg       sync.WaitGroup
}

// New returns a server answering lean requests with handler and handing
// every other connection to fallback (with the bytes already read replayed
// first). fallback must take ownership of the connection.
func New(cfg Config, handler http.Handler, fallback func(net.Conn), log *slog.Logger) *Server {
	s := &Server{cfg: cfg, handler: handler, fallback: fallback, log: log, conns: map[*conn]struct{}{}}
	s.readers.New = func() any { return bufio.NewReaderSize(nil, cfg.HeadBuffer) }
	s.writers.New = func() any { return bufio.NewWriterSize(nil, 4<<10) }
	return s
}

// Serve accepts connections from l until it is closed.
func (s *Server) Serve(l net.Listener) error {
	s.mu.Lock()
	if s.draining.Load() {
		s.mu.Unlock()
		return http.ErrServerClosed
	}
	s.lns = append(s.lns, l)
	s.mu.Unlock()
	var delay time.Duration
	for {
		c, err := l.Accept()
		if err != nil {
			if s.draining.Load() {
				return http.ErrServerClosed
			}
			if errors.Is(err, net.ErrClosed) {
				return fmt.Errorf("accept: %w", err)
			}
			// Anything else (out of file descriptors, a connection reset
			// before it was accepted) passes: back off and go on, as
			// net/http does.
			delay = min(max(2*delay, 5*time.Millisecond), time.Second)
			s.log.Warn("accept", "err", err, "retry_in", delay)
			time.Sleep(delay)
			continue
		}
		delay = 0
		if !s.start(&conn{s: s, c: c, fallback: s.fallback}) {
			return http.ErrServerClosed
		}
	}
}

// start registers c and runs its loop; false if the server is draining
// (c is closed).
func (s *Server) start(c *conn) bool {
	s.mu.Lock()
	if s.draining.Load() {
		s.mu.Unlock()
		c.c.Close()
		return false
	}
	s.conns[c] = struct{}{}
	s.wg.Add(1)
	s.mu.Unlock()
	go c.serve()
	return true
}

// ServeTLS runs the loop on a TLS connection whose handshake chose
// HTTP/1.1 (or no protocol); requests carry its state in Request.TLS.
// Requests the loop does not take go to fallback, which owns the
// connection from then on (fallback, not the server's: a TLS connection's
// net/http server is another).
func (s *Server) ServeTLS(c *tls.Conn, fallback func(net.Conn)) {
	st := c.ConnectionState()
	s.start(&conn{s: s, c: c, tls: &st, fallback: fallback})
}

// Shutdown stops accepting, closes idle connections, and waits for the
// requests in flight (their answers say Connection: close) until ctx ends;
// then it closes what is left.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	s.draining.Store(true)
	for _, l := range s.lns {
		l.Close()
	}
	for c := range s.conns {
		// Wakes a connection waiting for a request; one busy with a request
		// sees draining after its answer.
		c.c.SetReadDeadline(time.Now())
	}
	s.mu.Unlock()
	done := make(chan struct{})
	go func() { s.wg.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		s.mu.Lock()
		for c := range s.conns {
			c.c.Close()
		}
		s.mu.Unlock()
		return fmt.Errorf("drain connections: %w", ctx.Err())
	}
}

// conn is one client connection.
type conn struct {
	s        *Server
	c        net.Conn
	tls      *tls.ConnectionState // nil on plain connections
	fallback func(net.Conn)
}

func (c *conn) done() {
	c.s.mu.Lock()
	delete(c.s.conns, c)
	c.s.mu.Unlock()
	c.s.wg.Done()
}

// serve runs the request loop until the connection ends or is handed over.
func (c *conn) serve() {
	s := c.s
	defer c.done()
	br := s.readers.Get().(*bufio.Reader)
	br.Reset(c.c)
	bw := s.writers.Get().(*bufio.Writer)
	bw.Reset(c.c)
	defer func() {
		br.Reset(nil)
		s.readers.Put(br)
		bw.Reset(nil)
		s.writers.Put(bw)
	}()
	ctx := context.Background()
	req := (&http.Request{
		Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1,
		Header: http.Header{}, Body: http.NoBody, RemoteAddr: c.c.RemoteAddr().String(), TLS: c.tls,
	}).WithContext(ctx)
	w := &writer{bw: bw, hdr: http.Header{}, draining: &s.draining}
	var p parser
	for {
		head, err := c.readHead(br)
		if err != nil {
			if errors.Is(err, errHandOver) {
				c.handOver(br, bw)
				return
			}
			c.c.Close()
			return
		}
		if !p.parse(head, req) {
			c.handOver(br, bw)
			return
		}
		br.Discard(len(head))
		w.reset(req.Method, req.Close || s.draining.Load())
		if !c.call(w, req) {
			bw.Flush()
			c.c.Close()
			return
		}
		w.finish()
		if err := bw.Flush(); err != nil || w.closeAfter || w.err != nil {
			c.c.Close()
			return
		}
	}
}

// call runs the handler; false means it aborted the answer.
func (c *conn) call(w *writer, req *http.Request) (ok bool) {
	defer func() {
		if v := recover(); v != nil {
			if v != http.ErrAbortHandler {
				c.s.log.Error("handler panic", "remote", req.RemoteAddr, "err", fmt.Sprint(v))
			}
			ok = false
		}
	}()
	c.s.handler.ServeHTTP(w, req)
	return true
}

var errHandOver = errors.New("hand over to net/http")

// readHead waits (idle timeout) for a request and reads its head (header
// timeout from its first byte); the head stays in br. errHandOver: the
// head does not fit, or starts in a way the loop leaves to net/http.
func (c *conn) readHead(br *bufio.Reader) ([]byte, error) {
	s := c.s
	if br.Buffered() == 0 {
		c.c.SetReadDeadline(time.Now().Add(s.cfg.IdleTimeout))
		if s.draining.Load() {
			return nil, errDraining
		}
		if _, err := br.Peek(1); err != nil {
			return nil, err
		}
	}
	var deadline bool
	for {
		b, _ := br.Peek(br.Buffered())
		if b[0] == '\r' || b[0] == '\n' {
			return nil, errHandOver // empty lines before a request: net/http's
		}
		if n := headEnd(b); n > 0 {
			return b[:n], nil
		}
		if len(b) >= br.Size() {
			return nil, errHandOver
		}
		if !deadline {
			deadline = true
			c.c.SetReadDeadline(time.Now().Add(s.cfg.ReadHeaderTimeout))
		}
		if _, err := br.Peek(len(b) + 1); err != nil {
			if len(b) > 0 && !isTimeout(err) && err != io.EOF {
				return nil, err
			}
			if err == io.EOF {
				// A short head and the end: net/http answers it as before.
				return nil, errHandOver
			}
			return nil, err
		}
	}
}

var errDraining = errors.New("server draining")

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// handOver gives the connection to net/http's server, the bytes already
// read first.
func (c *conn) handOver(br *bufio.Reader, bw *bufio.Writer) {
	if err := bw.Flush(); err != nil {
		c.c.Close()
		return
	}
	c.c.SetReadDeadline(time.Time{})
	n := br.Buffered()
	pre, _ := br.Peek(n)
	rc := &replayConn{Conn: c.c, pre: append([]byte(nil), pre...)}
	c.fallback(rc)
}

// replayConn reads pre before the connection's own bytes.
type replayConn struct {
	net.Conn
	pre []byte
}

func (r *replayConn) Read(p []byte) (int, error) {
	if len(r.pre) > 0 {
		n := copy(p, r.pre)
		r.pre = r.pre[n:]
		return n, nil
	}
	return r.Conn.Read(p)
}

// Listener is a net.Listener fed with connections handed over; give it to
// net/http's server.
type Listener struct {
	c    chan net.Conn
	done chan struct{}
	once sync.Once
	addr net.Addr
}

// NewListener returns a Listener reporting addr.
func NewListener(addr net.Addr) *Listener {
	return &Listener{c: make(chan net.Conn), done: make(chan struct{}), addr: addr}
}

// Push hands c to the server, or closes it once the listener is closed.
func (l *Listener) Push(c net.Conn) {
	select {
	case l.c <- c:
	case <-l.done:
		c.Close()
	}
}

// Accept returns the next connection handed over.
func (l *Listener) Accept() (net.Conn, error) {
	select {
	case c := <-l.c:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

// Close ends Accept.
func (l *Listener) Close() error {
	l.once.Do(func() { close(l.done) })
	return nil
}

// Addr reports the address given to NewListener.
func (l *Listener) Addr() net.Addr { return l.addr }
