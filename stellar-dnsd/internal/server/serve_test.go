package server

import (
	"context"
	"encoding/binary"
	"io"
	"net"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// serve starts s on fresh loopback sockets and returns their address.
func serve(t *testing.T, s *Server) string {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", pc.LocalAddr().String())
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); _ = s.ServeUDP(ctx, pc) }()
	go func() { defer wg.Done(); _ = s.ServeTCP(ctx, l) }()
	t.Cleanup(func() { cancel(); wg.Wait() })
	return pc.LocalAddr().String()
}

func TestServer_udpTruncatesTCPCompletes(t *testing.T) {
	h := NewHandler("stellar.", nil, quiet())
	h.SetZone(testZone(t, 40))
	addr := serve(t, New(h, DefaultLimits(), quiet()))
	q := query("web.example.stellar.", dns.TypeA)
	udp := &dns.Client{Net: "udp", Timeout: 10 * time.Second}
	m, _, err := udp.Exchange(q, addr)
	if err != nil {
		t.Fatal(err)
	}
	if !m.Truncated {
		t.Errorf("UDP answer of 40 instances without EDNS0: TC not set")
	}
	tcp := &dns.Client{Net: "tcp", Timeout: 10 * time.Second}
	m, _, err = tcp.Exchange(q, addr)
	if err != nil {
		t.Fatal(err)
	}
	if m.Truncated || len(m.Answer) != 40 {
		t.Errorf("TCP answer: TC=%v, %d answers, want 40", m.Truncated, len(m.Answer))
	}
}

func TestServer_idleTCPIsClosed(t *testing.T) {
	h := NewHandler("stellar.", nil, quiet())
	h.SetZone(testZone(t, 1))
	lim := DefaultLimits()
	lim.TCPIdle = 300 * time.Millisecond
	addr := serve(t, New(h, lim, quiet()))
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetReadDeadline(time.Now().Add(30 * time.Second))
	if _, err := c.Read(make([]byte, 1)); err != io.EOF {
		t.Fatalf("idle connection: read gave %v, want EOF (closed by the server)", err)
	}
}

func TestServer_oversizedTCPMessageClosesConnection(t *testing.T) {
	h := NewHandler("stellar.", nil, quiet())
	h.SetZone(testZone(t, 1))
	addr := serve(t, New(h, DefaultLimits(), quiet()))
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	msg := make([]byte, 2+MaxTCPQuery+1)
	binary.BigEndian.PutUint16(msg, uint16(MaxTCPQuery+1))
	_, _ = c.Write(msg)
	_ = c.SetReadDeadline(time.Now().Add(30 * time.Second))
	if n, err := c.Read(make([]byte, 64)); err == nil {
		t.Fatalf("got %d bytes back, want the connection closed", n)
	}
	// The server still answers.
	m, _, err := (&dns.Client{Net: "tcp", Timeout: 10 * time.Second}).Exchange(query("web.example.stellar.", dns.TypeA), addr)
	if err != nil || len(m.Answer) != 1 {
		t.Fatalf("after an oversized message: %v %v", m, err)
	}
}

func TestServer_pipelinedTCPQueries(t *testing.T) {
	h := NewHandler("stellar.", nil, quiet())
	h.SetZone(testZone(t, 2))
	addr := serve(t, New(h, DefaultLimits(), quiet()))
	c, err := dns.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for i := 0; i < 5; i++ {
		q := query("web.example.stellar.", dns.TypeA)
		q.Id = uint16(100 + i)
		if err := c.WriteMsg(q); err != nil {
			t.Fatal(err)
		}
	}
	_ = c.SetReadDeadline(time.Now().Add(30 * time.Second))
	for i := 0; i < 5; i++ {
		m, err := c.ReadMsg()
		if err != nil {
			t.Fatal(err)
		}
		if m.Id != uint16(100+i) || len(m.Answer) != 2 {
			t.Fatalf("answer %d: id %d, %d answers", i, m.Id, len(m.Answer))
		}
	}
}

// slowForwarder blocks until released.
type slowForwarder struct{ release chan struct{} }

func (f *slowForwarder) Forward(ctx context.Context, q *dns.Msg, tcp bool) (*dns.Msg, error) {
	select {
	case <-f.release:
	case <-ctx.Done():
	}
	return nil, ctx.Err()
}

func TestServer_floodKeepsGoroutinesBounded(t *testing.T) {
	fwd := &slowForwarder{release: make(chan struct{})}
	h := NewHandler("stellar.", fwd, quiet())
	h.SetZone(testZone(t, 1))
	lim := DefaultLimits()
	lim.Forwards = 50
	lim.TCPConns = 20
	before := runtime.NumGoroutine()
	addr := serve(t, New(h, lim, quiet()))
	c, err := net.Dial("udp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	raw := packed(t, query("example.org.", dns.TypeA)) // forwarded: held by the slow forwarder
	for i := 0; i < 5000; i++ {
		_, _ = c.Write(raw)
	}
	var conns []net.Conn
	for i := 0; i < 100; i++ {
		tc, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, tc)
	}
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	// Zone queries are still answered during the flood.
	deadline := time.Now().Add(60 * time.Second)
	for {
		m, _, err := (&dns.Client{Net: "udp", Timeout: 2 * time.Second}).Exchange(query("web.example.stellar.", dns.TypeA), addr)
		if err == nil && len(m.Answer) == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("zone not answered during a flood: %v", err)
		}
	}
	limit := before + lim.UDPWorkers + lim.Forwards + lim.TCPConns + 20
	if n := runtime.NumGoroutine(); n > limit {
		t.Fatalf("%d goroutines during the flood, want at most %d", n, limit)
	}
	if h.Count(false, OutDropped) == 0 {
		t.Errorf("no forwarded query was dropped: the bound did not act")
	}
	close(fwd.release)
}
