package proxy

import (
	"bufio"
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"stellar.dev/api/gossipapi"
	"stellar.dev/stellar-proxyd/internal/guard"
	"stellar.dev/stellar-proxyd/internal/h1"
	"stellar.dev/stellar-proxyd/internal/route"
)

// startLoopProxy serves like startProxy but through the h1 loop, handing
// what it does not take to net/http behind the guard, as the daemon does.
func startLoopProxy(t *testing.T, backend string) string {
	t.Helper()
	host, port, _ := net.SplitHostPort(backend)
	p := New(DefaultConfig(), slog.New(slog.DiscardHandler), nil)
	p.Update(oneRoute(t, host, port), Extras{})
	handed := h1.NewListener(&net.TCPAddr{})
	srv := &http.Server{Handler: p, ConnContext: guard.WithConn, ReadHeaderTimeout: 10 * time.Second, MaxHeaderBytes: 16<<10 - 4096}
	go srv.Serve(handed)
	loop := h1.New(h1.DefaultConfig(), p, func(c net.Conn) { handed.Push(guard.New(c, false)) }, slog.New(slog.DiscardHandler))
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go loop.Serve(l)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		loop.Shutdown(ctx)
		srv.Close()
	})
	return l.Addr().String()
}

func oneRoute(t *testing.T, host, port string) *route.Table {
	t.Helper()
	tab, err := route.Build([]gossipapi.Entry{
		{Key: "apps/b", Value: []byte(`{"name":"b","services":[{"name":"web","endpoints":[{"host":"b.test","port":` + port + `}]}]}`)},
		{Key: "nodes/n/instances/b/web/0", Value: []byte(`{"ip":"` + host + `"}`)},
	}, route.DefaultDefaults(time.Hour))
	if len(err) > 0 {
		t.Fatal(err)
	}
	return tab
}

// startClassicProxy serves the lean path inside net/http's server behind
// the guard, with the daemon's limits (STELLAR_PROXYD_LEAN=handler).
func startClassicProxy(t *testing.T, backend string) string {
	t.Helper()
	host, port, _ := net.SplitHostPort(backend)
	p := New(DefaultConfig(), slog.New(slog.DiscardHandler), nil)
	p.Update(oneRoute(t, host, port), Extras{})
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: p, ConnContext: guard.WithConn, ReadHeaderTimeout: 10 * time.Second, MaxHeaderBytes: 16<<10 - 4096}
	go srv.Serve(guard.Listener{Listener: l})
	t.Cleanup(func() { srv.Close() })
	return l.Addr().String()
}

// rawAll sends raw bytes and returns every answer read until the
// connection ends (or nothing more comes for a while), normalized, and
// whether the proxy closed the connection.
func rawAll(t *testing.T, addr, req string) string {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		return "dial: " + err.Error() // called from several goroutines: no t.Fatal
	}
	defer c.Close()
	go io.WriteString(c, req)
	br := bufio.NewReader(c)
	var b strings.Builder
	method := strings.SplitN(req, " ", 2)[0]
	for i := 0; i < 8; i++ {
		c.SetReadDeadline(time.Now().Add(3 * time.Second))
		if _, err := br.Peek(1); err != nil {
			if ne, ok := err.(net.Error); ok && ne.Timeout() {
				b.WriteString("[open]\n")
			} else {
				b.WriteString("[closed]\n")
			}
			break
		}
		c.SetReadDeadline(time.Now().Add(30 * time.Second))
		resp, err := http.ReadResponse(br, &http.Request{Method: method})
		if err != nil {
			b.WriteString("error: " + err.Error() + "\n")
			break
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		resp.Header.Del("Date")
		var hb strings.Builder
		resp.Header.Write(&hb)
		b.WriteString(resp.Status + "\n" + hb.String() + "\n" + string(body) + "\n---\n")
	}
	return b.String()
}

func TestLoop_sameAnswersAsNetHTTP(t *testing.T) {
	backend := echoBackend(t)
	loop := startLoopProxy(t, backend)
	classic := startClassicProxy(t, backend)
	const h = "Host: b.test\r\n"
	single := append(forwardingCorpus(h), []struct{ name, req string }{
		{"lower-case names", "GET /echo/lc HTTP/1.1\r\nhost: b.test\r\nx-custom-NAME: 1\r\naccept-ENCODING: gzip\r\n\r\n"},
		{"escaped path", "GET /echo/a%2Fb/%7Ec?q=%2F HTTP/1.1\r\n" + h + "\r\n"},
		{"fragment", "GET /echo/a#frag HTTP/1.1\r\n" + h + "\r\n"},
		{"empty query", "GET /echo/q? HTTP/1.1\r\n" + h + "\r\n"},
		{"double slash", "GET //echo/x HTTP/1.1\r\n" + h + "\r\n"},
		{"values with spaces", "GET /echo/sp HTTP/1.1\r\n" + h + "X-A:   padded\t \r\nX-Empty:\r\n\r\n"},
		{"http/1.0 keep-alive", "GET /echo/old HTTP/1.0\r\n" + h + "Connection: keep-alive\r\n\r\n"},
		{"pragma", "GET /echo/pragma HTTP/1.1\r\n" + h + "Pragma: no-cache\r\n\r\n"},
		{"answer cut short", "GET /short HTTP/1.1\r\n" + h + "\r\n"},
		{"no host", "GET /echo/nohost HTTP/1.1\r\n\r\n"},
		{"two hosts", "GET /echo/2 HTTP/1.1\r\n" + h + h + "\r\n"},
		{"bad host", "GET /echo/bh HTTP/1.1\r\nHost: b.test/x\r\n\r\n"},
		{"control character in value", "GET /echo/ctl HTTP/1.1\r\n" + h + "X-A: a\x01b\r\n\r\n"},
		{"absolute form", "GET http://b.test/echo/abs HTTP/1.1\r\n" + h + "\r\n"},
		{"asterisk", "OPTIONS * HTTP/1.1\r\n" + h + "\r\n"},
		{"expect", "GET /echo/e HTTP/1.1\r\n" + h + "Expect: 100-continue\r\n\r\n"},
		{"upgrade", "GET /echo/u HTTP/1.1\r\n" + h + "Connection: Upgrade\r\nUpgrade: websocket\r\n\r\n"},
		{"empty lines before", "\r\n\r\nGET /echo/el HTTP/1.1\r\n" + h + "\r\n"},
		{"unknown method", "BREW /echo/m HTTP/1.1\r\n" + h + "\r\n"},
		{"http/2 preface", "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"},
		{"garbage", "\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03\r\n\r\n"},
		// The smuggling corpus: 400 and the connection closed, in order
		// after the requests before it.
		{"cl te", "POST /echo/s HTTP/1.1\r\n" + h + "Content-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\n" + h + "\r\n"},
		{"te cl", "POST /echo/s HTTP/1.1\r\n" + h + "Transfer-Encoding: chunked\r\nContent-Length: 6\r\n\r\n0\r\n\r\n"},
		{"duplicate cl", "POST /echo/s HTTP/1.1\r\n" + h + "Content-Length: 3\r\nContent-Length: 3\r\n\r\nabc"},
		{"duplicate cl on a get", "GET /echo/s HTTP/1.1\r\n" + h + "Content-Length: 0\r\nContent-Length: 0\r\n\r\n"},
		{"cl list", "GET /echo/s HTTP/1.1\r\n" + h + "Content-Length: 0, 0\r\n\r\n"},
		{"te on a get", "GET /echo/s HTTP/1.1\r\n" + h + "Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n"},
		{"te gzip", "GET /echo/s HTTP/1.1\r\n" + h + "Transfer-Encoding: gzip\r\n\r\n"},
		{"bad chunk size", "POST /echo/s HTTP/1.1\r\n" + h + "Transfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n"},
		{"chunk size overflow", "POST /echo/s HTTP/1.1\r\n" + h + "Transfer-Encoding: chunked\r\n\r\nfffffffffffffffff\r\nabc\r\n0\r\n\r\n"},
		{"obs-fold", "GET /echo/s HTTP/1.1\r\n" + h + "X-A: b\r\n c\r\n\r\n"},
		{"space before colon", "GET /echo/s HTTP/1.1\r\n" + h + "X-A : b\r\n\r\n"},
		{"bare lf", "GET /echo/s HTTP/1.1\n" + h + "\n"},
		{"bare lf at the end", "GET /echo/s HTTP/1.1\r\n" + h + "\n"},
		{"nul in value", "GET /echo/s HTTP/1.1\r\n" + h + "X-A: a\x00b\r\n\r\n"},
		{"bad request line", "GET /echo/s  HTTP/1.1\r\n" + h + "\r\n"},
		{"head of 15 KiB", "GET /echo/big HTTP/1.1\r\n" + h + "X-Big: " + strings.Repeat("a", 15<<10) + "\r\n\r\n"},
		{"head over 16 KiB", "GET /echo/big HTTP/1.1\r\n" + h + "X-Big: " + strings.Repeat("a", 16<<10) + "\r\n\r\n"},
		{"head of 7 KiB", "GET /echo/7k HTTP/1.1\r\n" + h + "X-Big: " + strings.Repeat("a", 7<<10) + "\r\n\r\n"},
		{"head across the buffer's end", "GET /echo/8k HTTP/1.1\r\n" + h + "X-Big: " + strings.Repeat("a", 8<<10-50) + "\r\n\r\n"},
	}...)
	// Pipelined: lean requests then one the loop hands over, and the
	// reverse; smuggling shapes after a good request.
	get := "GET /echo/p1 HTTP/1.1\r\n" + h + "\r\n"
	pipelined := []struct{ name, req string }{
		{"two gets", get + get},
		{"get then post", get + "POST /echo/p HTTP/1.1\r\n" + h + "Content-Length: 3\r\n\r\nabc" + get},
		{"get then close", "GET /echo/c HTTP/1.1\r\n" + h + "Connection: close\r\n\r\n" + get},
		{"get then chunked then big", get + "GET /chunked HTTP/1.1\r\n" + h + "\r\n" + "GET /big HTTP/1.1\r\n" + h + "\r\n" + get},
	}
	// Every exchange waits a while to see whether the connection stays
	// open: run them all at once, then report each.
	type result struct{ got, want string }
	type named struct{ name, req, bad string }
	var cases []named
	for _, tt := range append(single, pipelined...) {
		cases = append(cases, named{name: tt.name, req: tt.req})
	}
	// A smuggling shape pipelined after a good request: the loop answers
	// the good one and then refuses the bad one exactly as net/http does
	// alone. (net/http itself answers the good one 499: its background
	// read meets the refused head and cancels the request.)
	for _, tt := range []struct{ name, bad string }{
		{"get then cl te", "POST /echo/s HTTP/1.1\r\n" + h + "Content-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n" + get},
		{"get then obs-fold", "GET /echo/s HTTP/1.1\r\n" + h + "X-A: b\r\n c\r\n\r\n" + get},
		{"get then duplicate cl", "GET /echo/s HTTP/1.1\r\n" + h + "Content-Length: 0\r\nContent-Length: 0\r\n\r\n" + get},
		{"get then bad chunk size", "POST /echo/s HTTP/1.1\r\n" + h + "Transfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n"},
	} {
		cases = append(cases, named{name: tt.name, req: get + tt.bad, bad: tt.bad})
	}
	results := make([]result, len(cases))
	var wg sync.WaitGroup
	for i, c := range cases {
		wg.Add(1)
		go func() {
			defer wg.Done()
			results[i].got = rawAll(t, loop, c.req)
			if c.bad == "" {
				results[i].want = rawAll(t, classic, c.req)
				return
			}
			first := strings.TrimSuffix(rawAll(t, classic, get), "[open]\n")
			results[i].want = first + rawAll(t, classic, c.bad)
		}()
	}
	wg.Wait()
	for i, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if r := results[i]; r.got != r.want {
				t.Errorf("loop answered\n%.3000s\nnet/http answered\n%.3000s", r.got, r.want)
			}
		})
	}
}

// BenchmarkLoop_get is BenchmarkProxy_get through the h1 loop: for
// allocations and profiles, not for throughput claims.
func BenchmarkLoop_get(b *testing.B) {
	p := benchProxy(b)
	loop := h1.New(h1.DefaultConfig(), p, func(c net.Conn) { c.Close() }, slog.New(slog.DiscardHandler))
	pl, _ := net.Listen("tcp", "127.0.0.1:0")
	go loop.Serve(pl)
	defer loop.Shutdown(context.Background())
	req := []byte("GET /path?q=1 HTTP/1.1\r\nHost: b.test\r\nUser-Agent: wrk\r\nAccept: */*\r\n\r\n")
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		c, err := net.Dial("tcp", pl.Addr().String())
		if err != nil {
			b.Error(err)
			return
		}
		defer c.Close()
		br := bufio.NewReader(c)
		for pb.Next() {
			c.Write(req)
			resp, err := http.ReadResponse(br, nil)
			if err != nil {
				b.Error(err)
				return
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
	})
}

// forwardingCorpus holds the plain requests both differential tests send
// (lean path against ReverseProxy, loop against net/http), h being the
// Host line.
func forwardingCorpus(h string) []struct{ name, req string } {
	return []struct{ name, req string }{
		{"plain get", "GET /echo/a?x=1&y=%20z HTTP/1.1\r\n" + h + "User-Agent: t\r\nAccept: */*\r\n\r\n"},
		{"repeated headers", "GET /echo/r HTTP/1.1\r\n" + h + "X-Multi: 1\r\nX-Multi: 2\r\nCookie: a=1\r\n\r\n"},
		{"forwarded headers replaced", "GET /echo/f HTTP/1.1\r\n" + h + "X-Forwarded-For: 6.6.6.6\r\nX-Forwarded-Host: evil\r\nX-Forwarded-Proto: https\r\nForwarded: for=1.2.3.4\r\n\r\n"},
		{"hop headers dropped", "GET /echo/h HTTP/1.1\r\n" + h + "Connection: keep-alive, X-Hop\r\nX-Hop: 1\r\nKeep-Alive: 300\r\nProxy-Connection: x\r\nTe: trailers, deflate\r\nProxy-Authorization: basic x\r\n\r\n"},
		{"get with an empty body", "GET /echo/cl0 HTTP/1.1\r\n" + h + "Content-Length: 0\r\n\r\n"},
		{"host with port", "GET /echo/port HTTP/1.1\r\nHost: b.test:8080\r\n\r\n"},
		{"client closes", "GET /echo/close HTTP/1.1\r\n" + h + "Connection: close\r\n\r\n"},
		{"head", "HEAD /echo/head HTTP/1.1\r\n" + h + "\r\n"},
		{"options", "OPTIONS /echo/o HTTP/1.1\r\n" + h + "\r\n"},
		{"delete", "DELETE /echo/d HTTP/1.1\r\n" + h + "\r\n"},
		{"http/1.0 client", "GET /echo/old HTTP/1.0\r\n" + h + "\r\n"},
		{"chunked answer with trailers", "GET /chunked HTTP/1.1\r\n" + h + "\r\n"},
		{"big answer", "GET /big HTTP/1.1\r\n" + h + "\r\n"},
		{"head of big answer", "HEAD /big HTTP/1.1\r\n" + h + "\r\n"},
		{"no content", "GET /status/204 HTTP/1.1\r\n" + h + "\r\n"},
		{"not modified", "GET /status/304 HTTP/1.1\r\n" + h + "\r\n"},
		{"not found", "GET /status/404 HTTP/1.1\r\n" + h + "\r\n"},
		{"server error", "GET /status/503 HTTP/1.1\r\n" + h + "\r\n"},
		{"early hints passed on", "GET /hints HTTP/1.1\r\n" + h + "\r\n"},
		{"answer until close", "GET /close HTTP/1.1\r\n" + h + "\r\n"},
		{"conflicting lengths", "GET /bad-head HTTP/1.1\r\n" + h + "\r\n"},
		{"post goes the other way", "POST /echo/p HTTP/1.1\r\n" + h + "Content-Length: 3\r\n\r\nabc"},
		{"no route", "GET / HTTP/1.1\r\nHost: nowhere.test\r\n\r\n"},
	}
}
