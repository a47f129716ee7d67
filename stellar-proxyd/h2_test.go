package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"io"
	"net"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"

	"stellar.dev/api/proxyapi"
)

// TestProxy_http2RapidResetBounded opens streams and resets them at once
// (CVE-2023-44487): the backend never sees more requests in flight than the
// per-connection stream limit, and the proxy keeps serving others.
func TestProxy_http2RapidResetBounded(t *testing.T) {
	n := startNode(t)
	var inFlight, peak, hits atomic.Int64
	l, err := net.Listen("tcp", "127.0.0.60:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		v := inFlight.Add(1)
		defer inFlight.Add(-1)
		for {
			p := peak.Load()
			if v <= p || peak.CompareAndSwap(p, v) {
				break
			}
		}
		select {
		case <-time.After(200 * time.Millisecond):
		case <-r.Context().Done():
		}
		io.WriteString(w, "slow")
	})}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	_, port, _ := net.SplitHostPort(l.Addr().String())
	n.gossip.putJSON("apps/rr", appSpec("rr", "rr.test", "", true, nil))
	putInstance(n.gossip, "rr", 0, "127.0.0.60", mustAtoi(port))
	certPEM, keyPEM := selfSigned(t, "rr.test")
	n.gossip.putJSON("acme/certs/rr.test", proxyapi.Certificate{Host: "rr.test", CertPEM: certPEM, KeyPEM: keyPEM})
	waitBackends(t, n, "rr.test", 1)
	waitFor(t, "a certificate for rr.test", func() bool {
		_, err := servedCert(n.https, "rr.test")
		return err == nil
	})

	conn, err := tls.Dial("tcp", n.https, &tls.Config{ServerName: "rr.test", InsecureSkipVerify: true, NextProtos: []string{"h2"}})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if p := conn.ConnectionState().NegotiatedProtocol; p != "h2" {
		t.Fatalf("negotiated %q", p)
	}
	io.WriteString(conn, http2.ClientPreface)
	fr := http2.NewFramer(conn, conn)
	fr.WriteSettings()
	go func() { // drain the server's frames
		for {
			if _, err := fr.ReadFrame(); err != nil {
				return
			}
		}
	}()
	var hb bytes.Buffer
	enc := hpack.NewEncoder(&hb)
	for _, f := range [][2]string{{":method", "GET"}, {":scheme", "https"}, {":authority", "rr.test"}, {":path", "/"}} {
		enc.WriteField(hpack.HeaderField{Name: f[0], Value: f[1]})
	}
	sent := 0
	deadline := time.Now().Add(5 * time.Second)
	for i := 0; i < 20000 && time.Now().Before(deadline); i++ {
		id := uint32(2*i + 1)
		if err := fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: hb.Bytes(), EndStream: true, EndHeaders: true}); err != nil {
			break
		}
		if err := fr.WriteRSTStream(id, http2.ErrCodeCancel); err != nil {
			break
		}
		sent++
	}
	t.Logf("sent %d HEADERS+RST_STREAM pairs; backend saw %d requests, at most %d at once", sent, hits.Load(), peak.Load())
	if peak.Load() > 250 {
		t.Errorf("backend saw %d requests in flight from one connection, want at most the stream limit 250", peak.Load())
	}

	// The proxy still serves another client.
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM([]byte(certPEM))
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, ServerName: "rr.test"}, ForceAttemptHTTP2: true,
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "tcp", n.https)
		}}
	hc := &http.Client{Transport: tr, Timeout: 20 * time.Second}
	resp, err := hc.Get("https://rr.test/")
	if err != nil {
		t.Fatalf("a normal client after the flood: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Errorf("a normal client after the flood: %d", resp.StatusCode)
	}
}
