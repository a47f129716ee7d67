package proxy

import (
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"testing"

	"stellar.dev/api/gossipapi"
	"stellar.dev/stellar-proxyd/internal/guard"
	"stellar.dev/stellar-proxyd/internal/route"
)

// BenchmarkProxy_get measures one proxied GET end to end on loopback
// (client, guard, proxy, backend in one process): for allocations and
// profiles, not for throughput claims.
func BenchmarkProxy_get(b *testing.B) {
	p := benchProxy(b)
	pl, _ := net.Listen("tcp", "127.0.0.1:0")
	srv := &http.Server{Handler: p, ConnContext: guard.WithConn}
	go srv.Serve(guard.Listener{Listener: pl})
	defer srv.Close()
	benchGets(b, pl.Addr().String())
}

// benchBackend starts a backend answering "ok" and returns its address.
func benchBackend(b *testing.B) string {
	bl, _ := net.Listen("tcp", "127.0.0.1:0")
	backend := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") })}
	go backend.Serve(bl)
	b.Cleanup(func() { backend.Close() })
	return bl.Addr().String()
}

// benchProxy returns a Proxy with one route, b.test, to a new backend.
func benchProxy(b *testing.B) *Proxy {
	host, port, _ := net.SplitHostPort(benchBackend(b))
	tab, _ := route.Build([]gossipapi.Entry{
		{Key: "apps/b", Value: []byte(`{"name":"b","services":[{"name":"web","endpoints":[{"host":"b.test","port":` + port + `}]}]}`)},
		{Key: "nodes/n/instances/b/web/0", Value: []byte(`{"ip":"` + host + `"}`)},
	}, route.DefaultDefaults(1e9))
	p := New(DefaultConfig(), slog.New(slog.DiscardHandler), nil)
	p.Update(tab, Extras{})
	return p
}

// benchGets runs parallel GETs for b.test through addr with net/http's
// client.
func benchGets(b *testing.B, addr string) {
	c := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
	url := "http://" + addr + "/"
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			req, _ := http.NewRequest(http.MethodGet, url, nil)
			req.Host = "b.test"
			resp, err := c.Do(req)
			if err != nil {
				b.Fatal(err)
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
	})
}

// BenchmarkBareReverseProxy is the same GET through a bare
// httputil.ReverseProxy (idle pool 256), for comparison.
func BenchmarkBareReverseProxy_get(b *testing.B) {
	target := benchBackend(b)
	rp := &httputil.ReverseProxy{
		Rewrite:   func(pr *httputil.ProxyRequest) { pr.Out.URL.Scheme = "http"; pr.Out.URL.Host = target },
		Transport: &http.Transport{MaxIdleConnsPerHost: 256},
	}
	pl, _ := net.Listen("tcp", "127.0.0.1:0")
	srv := &http.Server{Handler: rp}
	go srv.Serve(pl)
	defer srv.Close()
	benchGets(b, pl.Addr().String())
}
