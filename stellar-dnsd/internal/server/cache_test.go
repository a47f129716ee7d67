package server

import (
	"fmt"
	"testing"

	"github.com/miekg/dns"
)

func TestParseFast(t *testing.T) {
	plain := packed(t, query("Web.Example.Stellar.", dns.TypeA))
	withEDNS := func(size uint16, do bool) []byte {
		q := query("web.example.stellar.", dns.TypeA)
		q.SetEdns0(size, do)
		return packed(t, q)
	}
	withOption := func() []byte {
		q := query("web.example.stellar.", dns.TypeA)
		q.SetEdns0(1232, false)
		q.IsEdns0().Option = append(q.IsEdns0().Option, &dns.EDNS0_LOCAL{Code: 65001, Data: []byte{1}})
		return packed(t, q)
	}
	tests := []struct {
		name  string
		raw   []byte
		tcp   bool
		fast  bool
		limit int
	}{
		{name: "plain query", raw: plain, fast: true, limit: ClassicSize},
		{name: "over tcp", raw: plain, tcp: true, fast: true, limit: dns.MaxMsgSize},
		{name: "edns 4096 is capped", raw: withEDNS(4096, true), fast: true, limit: EDNSSize},
		{name: "edns 100 is 512", raw: withEDNS(100, false), fast: true, limit: ClassicSize},
		{name: "edns option takes the full path", raw: withOption()},
		{name: "trailing bytes take the full path", raw: append(append([]byte(nil), plain...), 0)},
		{name: "a response takes the full path", raw: func() []byte { b := append([]byte(nil), plain...); b[2] |= 0x80; return b }()},
		{name: "cut short", raw: plain[:len(plain)-1]},
		{name: "compressed name", raw: append(append([]byte(nil), plain[:12]...), 0xc0, 12, 0, 1, 0, 1)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var buf [300]byte
			f, ok := parseFast(tt.raw, tt.tcp, buf[:])
			if ok != tt.fast {
				t.Fatalf("fast = %v, want %v", ok, tt.fast)
			}
			if !ok {
				return
			}
			k := f.key
			if got := int(k[len(k)-3])<<8 | int(k[len(k)-2]); got != tt.limit {
				t.Errorf("limit %d, want %d", got, tt.limit)
			}
			if string(k[:len("\x03web")]) != "\x03web" {
				t.Errorf("key not lowercased: %q", k)
			}
		})
	}
}

func TestCache_isBounded(t *testing.T) {
	h := NewHandler("stellar.", nil, quiet())
	h.SetZone(testZone(t, 1))
	for i := 0; i < cacheEntries+500; i++ {
		out, _ := h.Handle(packed(t, query(fmt.Sprintf("n%d.example.stellar.", i), dns.TypeA)), false)
		if out == nil {
			t.Fatal("no answer")
		}
	}
	if n := h.zone.Load().size.Load(); n != cacheEntries {
		t.Fatalf("%d cached answers, want the bound %d", n, cacheEntries)
	}
}
