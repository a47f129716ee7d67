package forward

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// upstream starts a DNS server on loopback answering every A question
// with ip (or with rcode when ip is empty).
func upstream(t *testing.T, ip string, rcode int) string {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", pc.LocalAddr().String())
	if err != nil {
		t.Fatal(err)
	}
	h := dns.HandlerFunc(func(w dns.ResponseWriter, r *dns.Msg) {
		m := new(dns.Msg)
		m.SetReply(r)
		if ip == "" {
			m.Rcode = rcode
		} else {
			rr, _ := dns.NewRR(r.Question[0].Name + " 60 IN A " + ip)
			m.Answer = []dns.RR{rr}
		}
		_ = w.WriteMsg(m)
	})
	us := &dns.Server{PacketConn: pc, Handler: h}
	ts := &dns.Server{Listener: l, Handler: h}
	go func() { _ = us.ActivateAndServe() }()
	go func() { _ = ts.ActivateAndServe() }()
	t.Cleanup(func() { _ = us.Shutdown(); _ = ts.Shutdown() })
	return pc.LocalAddr().String()
}

// blackhole is a UDP socket that reads and never answers.
func blackhole(t *testing.T) string {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	return pc.LocalAddr().String()
}

// closedPort is a loopback UDP address nothing listens on.
func closedPort(t *testing.T) string {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	a := pc.LocalAddr().String()
	pc.Close()
	return a
}

func q(name string) *dns.Msg {
	m := new(dns.Msg)
	m.SetQuestion(name, dns.TypeA)
	return m
}

func TestForward_failover(t *testing.T) {
	good := upstream(t, "192.0.2.1", 0)
	tests := []struct {
		name    string
		ups     []string
		tcp     bool
		wantA   bool
		wantErr bool
		rcode   int
	}{
		{name: "first answers", ups: []string{good}, wantA: true},
		{name: "over tcp", ups: []string{good}, tcp: true, wantA: true},
		{name: "dead then good", ups: []string{closedPort(t), good}, wantA: true},
		{name: "silent then good", ups: []string{blackhole(t), good}, wantA: true},
		{name: "servfail then good", ups: []string{upstream(t, "", dns.RcodeServerFailure), good}, wantA: true},
		{name: "only servfail is passed on", ups: []string{upstream(t, "", dns.RcodeServerFailure)}, rcode: dns.RcodeServerFailure},
		{name: "nxdomain is an answer", ups: []string{upstream(t, "", dns.RcodeNameError), good}, rcode: dns.RcodeNameError},
		{name: "none answers", ups: []string{closedPort(t), blackhole(t)}, wantErr: true},
		{name: "no upstreams", ups: nil, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := New(tt.ups, 500*time.Millisecond)
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			m, err := f.Forward(ctx, q("example.org."), tt.tcp)
			if tt.wantErr {
				if err == nil {
					t.Fatalf("got %v, want an error", m)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if tt.wantA && (len(m.Answer) != 1 || m.Rcode != dns.RcodeSuccess) {
				t.Fatalf("answer %v", m)
			}
			if !tt.wantA && m.Rcode != tt.rcode {
				t.Fatalf("rcode = %s, want %s", dns.RcodeToString[m.Rcode], dns.RcodeToString[tt.rcode])
			}
		})
	}
}

func TestForward_remembersTheUpstreamThatAnswered(t *testing.T) {
	good := upstream(t, "192.0.2.1", 0)
	f := New([]string{blackhole(t), good}, 300*time.Millisecond)
	if _, err := f.Forward(context.Background(), q("a.example."), false); err != nil {
		t.Fatal(err)
	}
	if f.next.Load() != 1 {
		t.Fatalf("next = %d, want 1 (the upstream that answered)", f.next.Load())
	}
}

func TestResolve(t *testing.T) {
	dir := t.TempDir()
	rc := filepath.Join(dir, "resolv.conf")
	if err := os.WriteFile(rc, []byte("# comment\nsearch example.com\nnameserver 169.254.53.53\nnameserver 10.0.0.2\nnameserver fe80::1%eth0\nnameserver 127.0.0.53\nnameserver bogus\noptions edns0\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name       string
		configured []string
		own        []string
		want       []string
		skipped    []string
	}{
		{name: "resolv.conf without Stellar's own address", own: []string{"169.254.53.53", "169.254.53.53:53"}, want: []string{"10.0.0.2:53", "[fe80::1]:53", "127.0.0.53:53"}, skipped: []string{"169.254.53.53:53"}},
		{name: "own listen address on the same port", own: []string{"127.0.0.53:53"}, want: []string{"169.254.53.53:53", "10.0.0.2:53", "[fe80::1]:53"}, skipped: []string{"127.0.0.53:53"}},
		{name: "own address on another port is fine", own: []string{"127.0.0.53:5353"}, want: []string{"169.254.53.53:53", "10.0.0.2:53", "[fe80::1]:53", "127.0.0.53:53"}},
		{name: "configured wins", configured: []string{"192.0.2.1", "192.0.2.2:5353"}, want: []string{"192.0.2.1:53", "192.0.2.2:5353"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, skipped, err := Resolve(tt.configured, rc, tt.own)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tt.want) || !reflect.DeepEqual(skipped, tt.skipped) {
				t.Fatalf("got %v skipped %v, want %v skipped %v", got, skipped, tt.want, tt.skipped)
			}
		})
	}
	if _, _, err := Resolve(nil, filepath.Join(dir, "missing"), nil); err == nil || !strings.Contains(err.Error(), "missing") {
		t.Fatalf("missing resolv.conf: %v", err)
	}
}
