package server

import (
	"testing"

	"github.com/miekg/dns"
)

// BenchmarkHandle measures the packet path of a zone answer (no sockets).
func BenchmarkHandle(b *testing.B) {
	h := NewHandler("stellar.", nil, quiet())
	h.SetZone(testZone(b, 3))
	q := query("web.example.stellar.", dns.TypeA)
	q.SetEdns0(1232, false)
	raw := packed(b, q)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		out, _ := h.Handle(raw, false)
		if out == nil {
			b.Fatal("no answer")
		}
	}
}
