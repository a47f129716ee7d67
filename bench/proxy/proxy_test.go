package proxy

import (
	"context"
	"io"
	"net"
	"net/http"
	"testing"
	"time"
)

func TestParseWrk(t *testing.T) {
	out := `Running 2s test @ http://127.0.0.1:1/
  1 threads and 64 connections
  Latency Distribution
     50%  600.00us
     75%    1.20ms
     90%    2.00ms
     99%    4.50ms
  20000 requests in 2.00s, 2.00MB read
Requests/sec:  10000.50
Transfer/sec:      1.00MB
`
	rps, p99, err := parseWrk(out)
	if err != nil || rps != 10000.50 || p99 != 4.5 {
		t.Fatalf("parseWrk = %v %v %v", rps, p99, err)
	}
	if _, _, err := parseWrk("nothing"); err == nil {
		t.Fatal("parsed garbage")
	}
}

func TestGoLoad(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Host != host {
			http.Error(w, "wrong host", 400)
			return
		}
		io.WriteString(w, "ok")
	})}
	go srv.Serve(l)
	defer srv.Close()
	rps, p99, err := goLoad(context.Background(), l.Addr().String(), 500*time.Millisecond)
	if err != nil || rps <= 0 || p99 <= 0 {
		t.Fatalf("goLoad = %v %v %v", rps, p99, err)
	}
}
