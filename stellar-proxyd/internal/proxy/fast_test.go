package proxy

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"stellar.dev/api/gossipapi"
	"stellar.dev/stellar-proxyd/internal/guard"
	"stellar.dev/stellar-proxyd/internal/route"
)

// echoBackend answers according to the request's path, echoing what it
// received so both paths can be compared.
func echoBackend(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	echo := func(w io.Writer, r *http.Request) {
		var keys []string
		for k := range r.Header {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		fmt.Fprintf(w, "%s %s host=%s\n", r.Method, r.RequestURI, r.Host)
		for _, k := range keys {
			fmt.Fprintf(w, "%s=%q\n", k, r.Header[k])
		}
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/echo/", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Answer", "echo")
		w.Header().Set("Connection", "X-Private")
		w.Header().Set("X-Private", "secret")
		w.Header().Set("Keep-Alive", "timeout=5")
		echo(w, r)
	})
	mux.HandleFunc("/chunked", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Trailer", "X-Sum")
		for i := range 5 {
			fmt.Fprintf(w, "part %d\n", i)
			w.(http.Flusher).Flush()
		}
		w.Header().Set("X-Sum", "15")
		w.Header().Set(http.TrailerPrefix+"X-Late", "late")
	})
	mux.HandleFunc("/big", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", "300000")
		w.Write(bytes.Repeat([]byte("0123456789"), 30000))
	})
	mux.HandleFunc("/status/", func(w http.ResponseWriter, r *http.Request) {
		code, _ := strconv.Atoi(strings.TrimPrefix(r.URL.Path, "/status/"))
		w.Header().Set("X-Code", strconv.Itoa(code))
		w.WriteHeader(code)
		if code != http.StatusNoContent && code != http.StatusNotModified {
			io.WriteString(w, "body of "+strconv.Itoa(code))
		}
	})
	mux.HandleFunc("/hints", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Link", "</style.css>; rel=preload")
		w.WriteHeader(http.StatusEarlyHints)
		w.Header().Del("Link")
		io.WriteString(w, "after hints")
	})
	mux.HandleFunc("/close", func(w http.ResponseWriter, r *http.Request) {
		// An answer delimited by the end of the connection (HTTP/1.0 style).
		c, bw, _ := http.NewResponseController(w).Hijack()
		defer c.Close()
		// With its own Content-Type: httputil.ReverseProxy's flush timer
		// may send the head before the first write, so whether net/http
		// sniffs one is a race on that path.
		bw.WriteString("HTTP/1.0 200 OK\r\nX-Old: yes\r\nContent-Type: text/plain\r\n\r\nuntil the end")
		bw.Flush()
	})
	mux.HandleFunc("/short", func(w http.ResponseWriter, r *http.Request) {
		// An answer cut before its announced length.
		c, bw, _ := http.NewResponseController(w).Hijack()
		defer c.Close()
		bw.WriteString("HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n" + strings.Repeat("x", 50000))
		bw.Flush()
	})
	mux.HandleFunc("/bad-head", func(w http.ResponseWriter, r *http.Request) {
		c, bw, _ := http.NewResponseController(w).Hijack()
		defer c.Close()
		bw.WriteString("HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd")
		bw.Flush()
	})
	srv := &http.Server{Handler: mux}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	return l.Addr().String()
}

// startProxy serves a one-route table to backend through guard, as the
// daemon does.
func startProxy(t *testing.T, backend string, lean bool) string {
	t.Helper()
	host, port, _ := net.SplitHostPort(backend)
	tab, err := route.Build([]gossipapi.Entry{
		{Key: "apps/b", Value: []byte(`{"name":"b","services":[{"name":"web","endpoints":[{"host":"b.test","port":` + port + `}]}]}`)},
		{Key: "nodes/n/instances/b/web/0", Value: []byte(`{"ip":"` + host + `"}`)},
	}, route.DefaultDefaults(time.Hour))
	if len(err) > 0 {
		t.Fatal(err)
	}
	cfg := DefaultConfig()
	cfg.DisableLean = !lean
	p := New(cfg, slog.New(slog.DiscardHandler), nil)
	p.Update(tab, Extras{})
	l, lerr := net.Listen("tcp", "127.0.0.1:0")
	if lerr != nil {
		t.Fatal(lerr)
	}
	srv := &http.Server{Handler: p, ConnContext: guard.WithConn}
	go srv.Serve(guard.Listener{Listener: l})
	t.Cleanup(func() { srv.Close() })
	return l.Addr().String()
}

// rawExchange sends one raw request and returns the answer normalized:
// status line, headers sorted without Date, body (chunked decoded), and
// trailers.
func rawExchange(t *testing.T, addr, req string) string {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(30 * time.Second))
	if _, err := io.WriteString(c, req); err != nil {
		t.Fatal(err)
	}
	method := strings.SplitN(req, " ", 2)[0]
	resp, err := http.ReadResponse(bufio.NewReader(c), &http.Request{Method: method})
	if err != nil {
		return "error: " + err.Error()
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	var b strings.Builder
	fmt.Fprintf(&b, "%s %d\n", resp.Proto, resp.StatusCode)
	var keys []string
	for k := range resp.Header {
		if k != "Date" {
			keys = append(keys, k)
		}
	}
	slices.Sort(keys)
	for _, k := range keys {
		fmt.Fprintf(&b, "%s: %q\n", k, resp.Header[k])
	}
	fmt.Fprintf(&b, "chunked=%v length=%d\n\n%s\n", slices.Contains(resp.TransferEncoding, "chunked"), resp.ContentLength, body)
	if err != nil {
		fmt.Fprintf(&b, "body error: %v\n", err)
	}
	for _, k := range slices.Sorted(func(yield func(string) bool) {
		for k := range resp.Trailer {
			if !yield(k) {
				return
			}
		}
	}) {
		fmt.Fprintf(&b, "trailer %s: %q\n", k, resp.Trailer[k])
	}
	return b.String()
}

func TestLean_sameAnswersAsReverseProxy(t *testing.T) {
	backend := echoBackend(t)
	lean := startProxy(t, backend, true)
	classic := startProxy(t, backend, false)
	const h = "Host: b.test\r\n"
	tests := append(forwardingCorpus(h), []struct{ name, req string }{
		{"escaped path", "GET /echo/a%2Fb/%7Ec?q=%2F#frag HTTP/1.1\r\n" + h + "\r\n"},
		{"no user agent", "GET /echo/ua HTTP/1.1\r\n" + h + "\r\n"},
	}...)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := rawExchange(t, lean, tt.req)
			want := rawExchange(t, classic, tt.req)
			if got != want {
				t.Errorf("lean path answered\n%s\nReverseProxy path answered\n%s", got, want)
			}
		})
	}
}

func FuzzAnswerHead(f *testing.F) {
	for _, s := range []string{
		"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
		"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X\r\n\r\n2\r\nok\r\n0\r\nX: 1\r\n\r\n",
		"HTTP/1.0 200 OK\r\nConnection: keep-alive, X-A\r\nX-A: 1\r\n\r\n",
		"HTTP/1.1 103 Early Hints\r\nLink: <a>\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n",
		"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
		"HTTP/1.1 200 OK\r\n folded: x\r\n\r\n",
		"HTTP/1.1 999\r\n\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		br := bufio.NewReaderSize(bytes.NewReader(data), 8<<10)
		hdr := http.Header{}
		var h respHead
		if err := h.read(br, hdr); err != nil {
			return
		}
		if h.status < 100 || h.status > 999 {
			t.Fatalf("status %d accepted", h.status)
		}
		if h.chunked && h.length != -1 || h.length < -1 {
			t.Fatalf("chunked=%v with length %d", h.chunked, h.length)
		}
		if h.length < 0 && !h.chunked && !h.close {
			t.Fatal("an answer delimited by the connection's end keeps the connection")
		}
		for k, vv := range hdr {
			for _, v := range vv {
				if strings.ContainsAny(k, " :\r\n") || strings.ContainsAny(v, "\r\n\x00") {
					t.Fatalf("header %q: %q accepted", k, v)
				}
			}
		}
		if h.chunked {
			io.Copy(io.Discard, httputil.NewChunkedReader(br))
			readTrailers(br, hdr)
		}
	})
}

func TestLean_reusesAndReplacesBackendConnections(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	// Connections that carried a request (the TCP health check's do not).
	var mu sync.Mutex
	used := map[net.Conn]bool{}
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") }),
		ConnState: func(c net.Conn, s http.ConnState) {
			if s == http.StateActive {
				mu.Lock()
				used[c] = true
				mu.Unlock()
			}
		},
	}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	addr := startProxy(t, l.Addr().String(), true)
	get := func() {
		t.Helper()
		got := rawExchange(t, addr, "GET / HTTP/1.1\r\nHost: b.test\r\n\r\n")
		if !strings.Contains(got, "HTTP/1.1 200") || !strings.HasSuffix(got, "\n\nok\n") {
			t.Fatalf("answer:\n%s", got)
		}
	}
	for range 20 {
		get()
	}
	mu.Lock()
	n := len(used)
	mu.Unlock()
	if n != 1 {
		t.Errorf("20 sequential requests opened %d backend connections, want 1 (kept alive)", n)
	}
	// The backend drops its idle connections: the next request must not
	// fail on the stale pooled one.
	srv.SetKeepAlivesEnabled(false)
	srv.SetKeepAlivesEnabled(true)
	for range 5 {
		get()
	}
}
