package h1

import (
	"bufio"
	"context"
	"crypto/tls"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// startServer runs a Server with handler; connections handed over are
// answered by a net/http server with the same handler.
func startServer(t *testing.T, cfg Config, handler http.Handler) (*Server, string) {
	t.Helper()
	handed := NewListener(&net.TCPAddr{})
	fallback := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Served-By", "net/http")
		handler.ServeHTTP(w, r)
	})}
	go fallback.Serve(handed)
	s := New(cfg, handler, handed.Push, slog.New(slog.DiscardHandler))
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go s.Serve(l)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		s.Shutdown(ctx)
		fallback.Close()
	})
	return s, l.Addr().String()
}

func dial(t *testing.T, addr string) (net.Conn, *bufio.Reader) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(30 * time.Second))
	return c, bufio.NewReader(c)
}

func readAnswer(t *testing.T, br *bufio.Reader) *http.Response {
	t.Helper()
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("read answer: %v", err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp
}

// waitClosed polls until the peer closes c (or fails after 20 s).
func waitClosed(t *testing.T, c net.Conn, br *bufio.Reader) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(20 * time.Second))
	if _, err := br.ReadByte(); err == nil {
		t.Fatal("bytes after the answer, want the connection closed")
	} else if ne, ok := err.(net.Error); ok && ne.Timeout() {
		t.Fatal("connection still open")
	}
}

func TestServer_keepsAliveAndHandsOverTheRest(t *testing.T) {
	_, addr := startServer(t, DefaultConfig(), http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, r.Method+" "+r.URL.Path)
	}))
	c, br := dial(t, addr)
	for i := 0; i < 3; i++ {
		io.WriteString(c, "GET /a HTTP/1.1\r\nHost: x\r\n\r\n")
		if resp := readAnswer(t, br); resp.StatusCode != 200 || resp.Header.Get("X-Served-By") != "" || resp.ContentLength != 6 {
			t.Fatalf("answer %d %v", resp.StatusCode, resp.Header)
		}
	}
	io.WriteString(c, "POST /b HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhi")
	if resp := readAnswer(t, br); resp.Header.Get("X-Served-By") != "net/http" {
		t.Fatalf("a request with a body was not handed over: %v", resp.Header)
	}
	// Once handed over, the connection stays with net/http.
	io.WriteString(c, "GET /c HTTP/1.1\r\nHost: x\r\n\r\n")
	if resp := readAnswer(t, br); resp.Header.Get("X-Served-By") != "net/http" {
		t.Fatalf("the connection came back from net/http: %v", resp.Header)
	}
}

func TestServer_idleAndHeaderTimeouts(t *testing.T) {
	cfg := DefaultConfig()
	cfg.IdleTimeout, cfg.ReadHeaderTimeout = 300*time.Millisecond, 300*time.Millisecond
	_, addr := startServer(t, cfg, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	t.Run("idle", func(t *testing.T) {
		c, br := dial(t, addr)
		io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
		readAnswer(t, br)
		waitClosed(t, c, br)
	})
	t.Run("slow head", func(t *testing.T) {
		c, br := dial(t, addr)
		io.WriteString(c, "GET / HTTP/1.1\r\nHo")
		waitClosed(t, c, br)
	})
}

func TestServer_drainFinishesRequestsInFlight(t *testing.T) {
	started := make(chan struct{})
	release := make(chan struct{})
	s, addr := startServer(t, DefaultConfig(), http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			close(started)
			<-release
		}
		io.WriteString(w, "done")
	}))
	idle, idleBr := dial(t, addr)
	io.WriteString(idle, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	readAnswer(t, idleBr)
	busy, busyBr := dial(t, addr)
	io.WriteString(busy, "GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
	<-started
	drained := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		drained <- s.Shutdown(ctx)
	}()
	waitClosed(t, idle, idleBr)
	close(release)
	resp := readAnswer(t, busyBr)
	if resp.StatusCode != 200 || !resp.Close {
		t.Fatalf("answer during drain: %d close=%v, want 200 with Connection: close", resp.StatusCode, resp.Close)
	}
	if err := <-drained; err != nil {
		t.Fatalf("drain: %v", err)
	}
	if _, err := net.DialTimeout("tcp", addr, 5*time.Second); err == nil && !strings.Contains(addr, ":0") {
		t.Fatal("still accepting after the drain")
	}
}

// BenchmarkServer_get measures the loop around a handler that answers a
// fixed body (allocations per request; not a throughput claim).
func BenchmarkServer_get(b *testing.B) {
	s := New(DefaultConfig(), http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header()["Content-Length"] = []string{"2"}
		w.Header()["Date"] = []string{"Sun, 22 Nov 2026 04:05:32 GMT"}
		io.WriteString(w, "ok")
	}), func(c net.Conn) { c.Close() }, slog.New(slog.DiscardHandler))
	l, _ := net.Listen("tcp", "127.0.0.1:0")
	go s.Serve(l)
	defer s.Shutdown(context.Background())
	c, _ := net.Dial("tcp", l.Addr().String())
	defer c.Close()
	br := bufio.NewReader(c)
	req := []byte("GET /path?q=1 HTTP/1.1\r\nHost: b.test\r\nUser-Agent: wrk\r\nAccept: */*\r\n\r\n")
	b.ReportAllocs()
	for b.Loop() {
		c.Write(req)
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			b.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
	}
}

func TestServer_tlsConnections(t *testing.T) {
	// A certificate from net/http's test server (its own, for loopback).
	ts := httptest.NewUnstartedServer(nil)
	ts.StartTLS()
	cert := ts.TLS.Certificates[0]
	ts.Close()
	handed := NewListener(&net.TCPAddr{})
	fallback := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "net/http")
	})}
	go fallback.Serve(handed)
	t.Cleanup(func() { fallback.Close() })
	s := New(DefaultConfig(), http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.TLS == nil {
			io.WriteString(w, "no tls")
			return
		}
		io.WriteString(w, "loop tls")
	}), func(c net.Conn) { c.Close() }, slog.New(slog.DiscardHandler))
	t.Cleanup(func() { s.Shutdown(context.Background()) })
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			tc := tls.Server(c, &tls.Config{Certificates: []tls.Certificate{cert}, NextProtos: []string{"http/1.1"}})
			if err := tc.Handshake(); err != nil {
				c.Close()
				continue
			}
			s.ServeTLS(tc, handed.Push)
		}
	}()
	c, err := tls.Dial("tcp", l.Addr().String(), &tls.Config{InsecureSkipVerify: true, NextProtos: []string{"http/1.1"}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(30 * time.Second))
	br := bufio.NewReader(c)
	body := func() string {
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("read answer: %v", err)
		}
		b, _ := io.ReadAll(resp.Body)
		return string(b)
	}
	io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	if got := body(); got != "loop tls" {
		t.Fatalf("answer %q, want the loop's with the TLS state", got)
	}
	io.WriteString(c, "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n\r\nx")
	if got := body(); got != "net/http" {
		t.Fatalf("answer %q, want net/http's (handed over)", got)
	}
}
