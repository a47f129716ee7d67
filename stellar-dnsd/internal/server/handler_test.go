package server

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/miekg/dns"

	"stellar.dev/api/appapi"
	"stellar.dev/api/gossipapi"
	"stellar.dev/stellar-dnsd/internal/zone"
)

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// testZone has web.example.stellar with n instances and one custom record.
func testZone(t testing.TB, n int) *zone.Zone {
	t.Helper()
	in := zone.Input{Domain: "stellar.", TTL: 5 * time.Second, Serial: 7, Entries: map[string]gossipapi.Entry{}}
	for i := 0; i < n; i++ {
		doc, _ := json.Marshal(appapi.Instance{App: "example", Service: "web", Index: i, Node: "node-a", IP: fmt.Sprintf("172.16.%d.%d", i/200, 2+i%200), Status: "running"})
		key := fmt.Sprintf("nodes/node-a/instances/example/web/%d", i)
		in.Entries[key] = gossipapi.Entry{Key: key, Value: doc}
	}
	in.Entries["dns/records/db.example.stellar/A/1"] = gossipapi.Entry{Key: "dns/records/db.example.stellar/A/1", Value: json.RawMessage(`{"name":"db.example.stellar","type":"A","value":"10.0.0.5"}`)}
	return zone.Build(in)
}

type fakeForwarder struct {
	answer *dns.Msg
	err    error
	asked  []string
}

func (f *fakeForwarder) Forward(ctx context.Context, q *dns.Msg, tcp bool) (*dns.Msg, error) {
	f.asked = append(f.asked, q.Question[0].Name)
	if f.err != nil {
		return nil, f.err
	}
	m := f.answer.Copy()
	m.SetReply(q)
	m.Answer = f.answer.Answer
	return m, nil
}

func query(name string, qtype uint16) *dns.Msg {
	m := new(dns.Msg)
	m.SetQuestion(name, qtype)
	m.Id = 4242
	return m
}

func packed(t testing.TB, m *dns.Msg) []byte {
	t.Helper()
	b, err := m.Pack()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// answer runs raw through h, forwarding when needed, and unpacks the reply
// (nil when dropped).
func answer(t *testing.T, h *Handler, raw []byte, tcp bool) *dns.Msg {
	t.Helper()
	out, p := h.Handle(raw, tcp)
	if p != nil {
		out = h.Forward(context.Background(), p)
	}
	if out == nil {
		return nil
	}
	m := new(dns.Msg)
	if err := m.Unpack(out); err != nil {
		t.Fatalf("answer does not unpack: %v", err)
	}
	return m
}

func TestHandler_beforeFirstSyncZoneIsServfail(t *testing.T) {
	fwd := &fakeForwarder{err: fmt.Errorf("no upstream")}
	h := NewHandler("stellar", fwd, quiet())
	m := answer(t, h, packed(t, query("web.example.stellar.", dns.TypeA)), false)
	if m.Rcode != dns.RcodeServerFailure {
		t.Fatalf("rcode = %s, want SERVFAIL", dns.RcodeToString[m.Rcode])
	}
	if len(fwd.asked) != 0 {
		t.Fatalf("the zone was forwarded: %v", fwd.asked)
	}
	h.SetZone(testZone(t, 1))
	m = answer(t, h, packed(t, query("web.example.stellar.", dns.TypeA)), false)
	if m.Rcode != dns.RcodeSuccess || len(m.Answer) != 1 || !m.Authoritative {
		t.Fatalf("after sync: %v", m)
	}
}

func TestHandler_answers(t *testing.T) {
	up := new(dns.Msg)
	rr, _ := dns.NewRR("example.org. 300 IN A 192.0.2.7")
	up.Answer = []dns.RR{rr}
	fwd := &fakeForwarder{answer: up}
	h := NewHandler("stellar.", fwd, quiet())
	h.SetZone(testZone(t, 2))
	tests := []struct {
		name    string
		q       *dns.Msg
		rcode   int
		answers int
		soa     bool
		aa      bool
	}{
		{name: "service A", q: query("web.example.stellar.", dns.TypeA), answers: 2, aa: true},
		{name: "mixed case name", q: query("WEB.Example.STELLAR.", dns.TypeA), answers: 2, aa: true},
		{name: "NXDOMAIN with SOA", q: query("nope.example.stellar.", dns.TypeA), rcode: dns.RcodeNameError, soa: true, aa: true},
		{name: "NODATA with SOA", q: query("web.example.stellar.", dns.TypeMX), soa: true, aa: true},
		{name: "custom record", q: query("db.example.stellar.", dns.TypeA), answers: 1, aa: true},
		{name: "outside the zone is forwarded", q: query("example.org.", dns.TypeA), answers: 1},
		{name: "CHAOS class is refused", q: func() *dns.Msg {
			m := query("version.bind.", dns.TypeTXT)
			m.Question[0].Qclass = dns.ClassCHAOS
			return m
		}(), rcode: dns.RcodeRefused},
		{name: "AXFR is refused", q: query("stellar.", dns.TypeAXFR), rcode: dns.RcodeRefused},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := answer(t, h, packed(t, tt.q), false)
			if m == nil {
				t.Fatal("dropped")
			}
			if m.Id != tt.q.Id || !m.Response {
				t.Errorf("id %d response %v", m.Id, m.Response)
			}
			if m.Rcode != tt.rcode {
				t.Errorf("rcode = %s, want %s", dns.RcodeToString[m.Rcode], dns.RcodeToString[tt.rcode])
			}
			if len(m.Answer) != tt.answers {
				t.Errorf("%d answers, want %d: %v", len(m.Answer), tt.answers, m.Answer)
			}
			hasSOA := len(m.Ns) == 1 && m.Ns[0].Header().Rrtype == dns.TypeSOA
			if hasSOA != tt.soa {
				t.Errorf("SOA = %v, want %v", hasSOA, tt.soa)
			}
			if m.Authoritative != tt.aa {
				t.Errorf("AA = %v, want %v", m.Authoritative, tt.aa)
			}
		})
	}
}

func TestHandler_forwardFailureIsServfail(t *testing.T) {
	h := NewHandler("stellar.", &fakeForwarder{err: fmt.Errorf("all upstreams timed out")}, quiet())
	h.SetZone(testZone(t, 1))
	m := answer(t, h, packed(t, query("example.org.", dns.TypeA)), false)
	if m.Rcode != dns.RcodeServerFailure {
		t.Fatalf("rcode = %s, want SERVFAIL", dns.RcodeToString[m.Rcode])
	}
	h.SetForwarder(nil)
	m = answer(t, h, packed(t, query("example.org.", dns.TypeA)), false)
	if m.Rcode != dns.RcodeServerFailure {
		t.Fatalf("no forwarder: rcode = %s, want SERVFAIL", dns.RcodeToString[m.Rcode])
	}
}

// malformed builds the raw queries of the malformed-query matrix.
func malformed(t testing.TB) map[string][]byte {
	good := packed(t, query("web.example.stellar.", dns.TypeA))
	set := func(b []byte, f func([]byte)) []byte {
		c := append([]byte(nil), b...)
		f(c)
		return c
	}
	withOpt := func(f func(o *dns.OPT), extra ...dns.RR) []byte {
		m := query("web.example.stellar.", dns.TypeA)
		m.SetEdns0(4096, false)
		f(m.IsEdns0())
		m.Extra = append(m.Extra, extra...)
		return packed(t, m)
	}
	compressionLoop := func() []byte {
		b := make([]byte, 12)
		binary.BigEndian.PutUint16(b, 99)
		binary.BigEndian.PutUint16(b[4:], 1)   // QDCOUNT 1
		return append(b, 0xc0, 12, 0, 1, 0, 1) // name points at itself
	}
	badOptionLength := func() []byte {
		b := withOpt(func(o *dns.OPT) {
			o.Option = append(o.Option, &dns.EDNS0_LOCAL{Code: 65001, Data: []byte{1, 2, 3, 4}})
		})
		// Make the option claim more bytes than the record has.
		b[len(b)-5] = 0x40
		return b
	}
	two := func() []byte {
		m := query("web.example.stellar.", dns.TypeA)
		m.Question = append(m.Question, dns.Question{Name: "db.example.stellar.", Qtype: dns.TypeA, Qclass: dns.ClassINET})
		return packed(t, m)
	}
	return map[string][]byte{
		"qr set":              set(good, func(b []byte) { b[2] |= 0x80 }),
		"opcode update":       set(good, func(b []byte) { b[2] = b[2]&^0x78 | dns.OpcodeUpdate<<3 }),
		"qdcount 0":           packed(t, &dns.Msg{MsgHdr: dns.MsgHdr{Id: 5}}),
		"qdcount 2":           two(),
		"truncated header":    good[:7],
		"empty":               {},
		"compression loop":    compressionLoop(),
		"question cut short":  good[:len(good)-3],
		"edns version 1":      withOpt(func(o *dns.OPT) { o.SetVersion(1) }),
		"two OPT records":     withOpt(func(o *dns.OPT) {}, &dns.OPT{Hdr: dns.RR_Header{Name: ".", Rrtype: dns.TypeOPT}}),
		"bad option length":   badOptionLength(),
		"unknown edns option": withOpt(func(o *dns.OPT) { o.Option = append(o.Option, &dns.EDNS0_LOCAL{Code: 65001, Data: []byte{1}}) }),
		"tiny edns size":      withOpt(func(o *dns.OPT) { o.SetUDPSize(10) }),
	}
}

func TestHandler_malformedQueries(t *testing.T) {
	h := NewHandler("stellar.", &fakeForwarder{err: fmt.Errorf("none")}, quiet())
	h.SetZone(testZone(t, 2))
	want := map[string]struct {
		drop  bool
		rcode int
	}{
		"qr set":              {drop: true},
		"opcode update":       {rcode: dns.RcodeNotImplemented},
		"qdcount 0":           {rcode: dns.RcodeFormatError},
		"qdcount 2":           {rcode: dns.RcodeFormatError},
		"truncated header":    {drop: true},
		"empty":               {drop: true},
		"compression loop":    {rcode: dns.RcodeFormatError},
		"question cut short":  {rcode: dns.RcodeFormatError},
		"edns version 1":      {rcode: dns.RcodeBadVers},
		"two OPT records":     {rcode: dns.RcodeFormatError},
		"bad option length":   {rcode: dns.RcodeFormatError},
		"unknown edns option": {rcode: dns.RcodeSuccess},
		"tiny edns size":      {rcode: dns.RcodeSuccess},
	}
	cases := malformed(t)
	if len(cases) != len(want) {
		t.Fatalf("%d cases, %d expectations", len(cases), len(want))
	}
	for name, raw := range cases {
		t.Run(name, func(t *testing.T) {
			w := want[name]
			for _, tcp := range []bool{false, true} {
				out, p := h.Handle(raw, tcp)
				if p != nil {
					t.Fatalf("tcp=%v: forwarded", tcp)
				}
				if w.drop {
					if out != nil {
						t.Fatalf("tcp=%v: answered, want dropped", tcp)
					}
					continue
				}
				if out == nil {
					t.Fatalf("tcp=%v: dropped, want %s", tcp, dns.RcodeToString[w.rcode])
				}
				m := new(dns.Msg)
				if err := m.Unpack(out); err != nil {
					t.Fatalf("tcp=%v: answer does not unpack: %v", tcp, err)
				}
				if !m.Response || m.Rcode != w.rcode {
					t.Fatalf("tcp=%v: rcode = %s, want %s", tcp, dns.RcodeToString[m.Rcode], dns.RcodeToString[w.rcode])
				}
			}
		})
	}
}

func TestHandler_truncation(t *testing.T) {
	h := NewHandler("stellar.", nil, quiet())
	h.SetZone(testZone(t, 40))
	for _, tt := range []struct {
		name string
		edns uint16
		tcp  bool
		tc   bool
	}{
		{name: "UDP without EDNS0 is truncated", tc: true},
		{name: "UDP with EDNS0 512 is truncated", edns: 512, tc: true},
		{name: "UDP with EDNS0 1232 fits", edns: 1232},
		{name: "TCP is complete", tcp: true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			q := query("web.example.stellar.", dns.TypeA)
			if tt.edns != 0 {
				q.SetEdns0(tt.edns, false)
			}
			out, _ := h.Handle(packed(t, q), tt.tcp)
			m := new(dns.Msg)
			if err := m.Unpack(out); err != nil {
				t.Fatal(err)
			}
			limit := ClassicSize
			if tt.edns > 0 {
				limit = int(tt.edns)
			}
			if !tt.tcp && len(out) > limit {
				t.Errorf("answer is %d bytes, more than %d", len(out), limit)
			}
			if m.Truncated != tt.tc {
				t.Errorf("TC = %v, want %v", m.Truncated, tt.tc)
			}
			if !tt.tc && len(m.Answer) != 40 {
				t.Errorf("%d answers, want 40", len(m.Answer))
			}
			if tt.edns != 0 && m.IsEdns0() == nil {
				t.Error("no OPT in the answer to an EDNS0 query")
			}
			if o := m.IsEdns0(); o != nil && o.UDPSize() != EDNSSize {
				t.Errorf("advertised size %d, want %d", o.UDPSize(), EDNSSize)
			}
		})
	}
}

func TestHandler_roundRobin(t *testing.T) {
	h := NewHandler("stellar.", nil, quiet())
	h.SetZone(testZone(t, 3))
	firsts := map[string]bool{}
	for i := 0; i < 6; i++ {
		m := answer(t, h, packed(t, query("web.example.stellar.", dns.TypeA)), false)
		firsts[m.Answer[0].(*dns.A).A.String()] = true
	}
	if len(firsts) != 3 {
		t.Fatalf("first answers %v, want all 3 instances in turn", firsts)
	}
}

// FuzzHandle feeds raw bytes through the whole packet path: parse, answer
// (the zone, or a forwarder), pack. It must never panic, and every answer
// must unpack and be a response.
func FuzzHandle(f *testing.F) {
	for _, raw := range malformed(f) {
		f.Add(raw, false)
	}
	f.Add(packed(f, query("web.example.stellar.", dns.TypeA)), false)
	f.Add(packed(f, query("example.org.", dns.TypeAAAA)), true)
	up := new(dns.Msg)
	h := NewHandler("stellar.", &fakeForwarder{answer: up}, quiet())
	h.SetZone(testZone(f, 40))
	one := NewHandler("stellar.", nil, quiet())
	one.SetZone(testZone(f, 1))
	f.Fuzz(func(t *testing.T, raw []byte, tcp bool) {
		// A cached answer is byte for byte the computed one (no rotation
		// with one instance).
		first, _ := one.Handle(raw, tcp)
		second, _ := one.Handle(raw, tcp)
		if string(first) != string(second) {
			t.Fatalf("cached answer differs:\n%x\n%x", first, second)
		}
		out, p := h.Handle(raw, tcp)
		if p != nil {
			out = h.Forward(context.Background(), p)
		}
		if out == nil {
			return
		}
		m := new(dns.Msg)
		if err := m.Unpack(out); err != nil && len(out) > 12 {
			t.Fatalf("answer does not unpack: %v", err)
		}
		if out[2]&0x80 == 0 {
			t.Fatal("answer is not a response")
		}
		if !tcp && len(out) > EDNSSize {
			t.Fatalf("UDP answer of %d bytes", len(out))
		}
	})
}

func TestHandler_cachedAnswerKeepsTheAskersIDCaseAndFlags(t *testing.T) {
	h := NewHandler("stellar.", nil, quiet())
	h.SetZone(testZone(t, 1))
	for i, name := range []string{"web.example.stellar.", "WeB.ExAmPlE.StElLaR.", "web.example.stellar."} {
		q := query(name, dns.TypeA)
		q.Id = uint16(1000 + i)
		q.RecursionDesired = i%2 == 0
		q.CheckingDisabled = i == 1
		m := answer(t, h, packed(t, q), false)
		if m.Id != q.Id || m.Question[0].Name != name || m.RecursionDesired != q.RecursionDesired || m.CheckingDisabled != q.CheckingDisabled {
			t.Fatalf("query %d: id %d name %s rd %v cd %v", i, m.Id, m.Question[0].Name, m.RecursionDesired, m.CheckingDisabled)
		}
		if len(m.Answer) != 1 || !m.Authoritative {
			t.Fatalf("query %d: %v", i, m)
		}
	}
	// A new zone drops the cached answers.
	h.SetZone(testZone(t, 2))
	if m := answer(t, h, packed(t, query("web.example.stellar.", dns.TypeA)), false); len(m.Answer) != 2 {
		t.Fatalf("after a new zone: %d answers, want 2", len(m.Answer))
	}
}
