package zone

import (
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"

	"stellar.dev/api/gossipapi"
)

var update = flag.Bool("update", false, "rewrite golden files")

type fixture struct {
	Members map[string]string `json:"members"`
	Entries []gossipapi.Entry `json:"entries"`
}

func loadFixture(t *testing.T) Input {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join("testdata", "state.json"))
	if err != nil {
		t.Fatal(err)
	}
	var f fixture
	if err := json.Unmarshal(raw, &f); err != nil {
		t.Fatal(err)
	}
	in := Input{Domain: "stellar", TTL: 5 * time.Second, Serial: 42, Entries: map[string]gossipapi.Entry{}, Members: f.Members}
	for _, e := range f.Entries {
		in.Entries[e.Key] = e
	}
	return in
}

func TestBuild_goldenZone(t *testing.T) {
	z := Build(loadFixture(t))
	var b strings.Builder
	b.WriteString(z.Text())
	st := z.Stats()
	b.WriteString("; instances=" + itoa(st.Instances) + " custom=" + itoa(st.Custom) + " names=" + itoa(st.Names) + " skipped=" + itoa(st.Skipped) + "\n")
	for _, p := range st.Problems {
		b.WriteString("; skipped: " + p + "\n")
	}
	for _, r := range z.Records() {
		b.WriteString("; record " + r.Name + " " + r.Type + " " + r.Value + " source=" + r.Source + " node=" + r.Node + "\n")
	}
	golden := filepath.Join("testdata", "zone.golden")
	if *update {
		if err := os.WriteFile(golden, []byte(b.String()), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatalf("read golden file (run go test -update): %v", err)
	}
	if got := b.String(); got != string(want) {
		t.Errorf("zone differs from %s (go test -update rewrites it):\ngot:\n%s\nwant:\n%s", golden, got, want)
	}
}

func itoa(n int) string { return fmtInt(n) }

func fmtInt(n int) string {
	b, _ := json.Marshal(n)
	return string(b)
}

func TestLookup(t *testing.T) {
	z := Build(loadFixture(t))
	tests := []struct {
		name    string
		qname   string
		qtype   uint16
		forward bool
		rcode   int
		answer  []string // values of the answer's RRs, in any order
		soa     bool     // an SOA in the authority section
	}{
		{name: "service A has healthy running instances on alive nodes", qname: "web.example.stellar.", qtype: dns.TypeA, answer: []string{"172.16.0.2", "172.16.4.2"}},
		{name: "service AAAA", qname: "web.example.stellar.", qtype: dns.TypeAAAA, answer: []string{"fd00::4:2"}},
		{name: "AAAA of one instance", qname: "4.web.example.stellar.", qtype: dns.TypeAAAA, answer: []string{"fd00::4:2"}},
		{name: "one instance", qname: "1.web.example.stellar.", qtype: dns.TypeA, answer: []string{"172.16.4.2"}},
		{name: "unhealthy instance is absent", qname: "2.web.example.stellar.", qtype: dns.TypeA, rcode: dns.RcodeNameError, soa: true},
		{name: "instance on a failed node is absent", qname: "3.web.example.stellar.", qtype: dns.TypeA, rcode: dns.RcodeNameError, soa: true},
		{name: "key of a failed owner is absent", qname: "api.other.stellar.", qtype: dns.TypeA, rcode: dns.RcodeNameError, soa: true},
		{name: "suspect node still answers", qname: "db.other.stellar.", qtype: dns.TypeA, answer: []string{"172.16.12.3"}},
		{name: "exited instance is absent", qname: "1.redis.example.stellar.", qtype: dns.TypeA, rcode: dns.RcodeNameError, soa: true},
		{name: "TXT names node and time", qname: "0.redis.example.stellar.", qtype: dns.TypeTXT, answer: []string{"node=node-a; updated=2026-11-20T10:00:03Z"}},
		{name: "SRV of an endpoint", qname: "_tcp._tcp.redis.example.stellar.", qtype: dns.TypeSRV, answer: []string{"0 10 6379 0.redis.example.stellar."}},
		{name: "SRV of an http endpoint", qname: "_http._tcp.web.example.stellar.", qtype: dns.TypeSRV, answer: []string{"0 10 8080 0.web.example.stellar.", "0 10 8080 1.web.example.stellar.", "0 10 8080 4.web.example.stellar."}},
		{name: "NODATA has an SOA", qname: "web.example.stellar.", qtype: dns.TypeMX, soa: true},
		{name: "empty non-terminal is NODATA, not NXDOMAIN", qname: "_tcp.web.example.stellar.", qtype: dns.TypeA, soa: true},
		{name: "NXDOMAIN has an SOA", qname: "nope.example.stellar.", qtype: dns.TypeA, rcode: dns.RcodeNameError, soa: true},
		{name: "apex SOA", qname: "stellar.", qtype: dns.TypeSOA, answer: []string{"ns.stellar. hostmaster.stellar. 42 60 30 86400 5"}},
		{name: "custom A records", qname: "db.example.stellar.", qtype: dns.TypeA, answer: []string{"10.0.0.5", "10.0.0.6"}},
		{name: "custom CNAME is chased inside the zone", qname: "www.example.stellar.", qtype: dns.TypeA, answer: []string{"web.example.stellar.", "172.16.0.2", "172.16.4.2"}},
		{name: "custom CNAME out of the zone", qname: "ext.example.stellar.", qtype: dns.TypeA, answer: []string{"example.com."}},
		{name: "CNAME to a missing name is NXDOMAIN with the CNAME", qname: "gone.example.stellar.", qtype: dns.TypeA, rcode: dns.RcodeNameError, answer: []string{"nothing.example.stellar."}, soa: true},
		{name: "custom MX", qname: "example.stellar.", qtype: dns.TypeMX, answer: []string{"10 mail.example.com."}},
		{name: "custom SRV", qname: "_sip._udp.example.stellar.", qtype: dns.TypeSRV, answer: []string{"10 5 5060 sip.example.com."}},
		{name: "custom AAAA", qname: "v6.example.stellar.", qtype: dns.TypeAAAA, answer: []string{"fd00::1"}},
		{name: "custom record outside the zone overrides its type", qname: "override.example.com.", qtype: dns.TypeA, answer: []string{"192.0.2.1"}},
		{name: "other types of an override are forwarded", qname: "override.example.com.", qtype: dns.TypeAAAA, forward: true},
		{name: "names outside the zone are forwarded", qname: "example.org.", qtype: dns.TypeA, forward: true},
		{name: "a name ending like the zone is not in it", qname: "notstellar.", qtype: dns.TypeA, forward: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res := z.Lookup(tt.qname, tt.qtype)
			if res.Forward != tt.forward {
				t.Fatalf("forward = %v, want %v", res.Forward, tt.forward)
			}
			if tt.forward {
				return
			}
			if res.Rcode != tt.rcode {
				t.Errorf("rcode = %s, want %s", dns.RcodeToString[res.Rcode], dns.RcodeToString[tt.rcode])
			}
			var got []string
			for _, rr := range res.Answer {
				f := strings.SplitN(rr.String(), "\t", 5)
				got = append(got, strings.Trim(f[4], `"`))
			}
			if !sameSet(got, tt.answer) {
				t.Errorf("answer = %q, want %q", got, tt.answer)
			}
			hasSOA := len(res.Ns) == 1 && res.Ns[0].Header().Rrtype == dns.TypeSOA
			if hasSOA != tt.soa {
				t.Errorf("SOA in authority = %v, want %v", hasSOA, tt.soa)
			}
		})
	}
}

func sameSet(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	m := map[string]int{}
	for _, s := range a {
		m[s]++
	}
	for _, s := range b {
		m[s]--
	}
	for _, n := range m {
		if n != 0 {
			return false
		}
	}
	return true
}

func TestBuild_emptyStateAnswersNXDOMAIN(t *testing.T) {
	z := Build(Input{Domain: "cluster.local.", TTL: time.Second, Serial: 1})
	if res := z.Lookup("web.app.cluster.local.", dns.TypeA); res.Rcode != dns.RcodeNameError || len(res.Ns) != 1 {
		t.Fatalf("got %+v, want NXDOMAIN with SOA", res)
	}
	if res := z.Lookup("cluster.local.", dns.TypeSOA); len(res.Answer) != 1 {
		t.Fatalf("apex SOA missing: %+v", res)
	}
}
