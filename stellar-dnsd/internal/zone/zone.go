// Package zone builds the cluster DNS zone from the replicated state (the
// instances appd publishes and the custom records under dns/records/) and
// answers lookups in it. A Zone is immutable once built: the server swaps
// whole zones atomically.
package zone

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/miekg/dns"

	"stellar.dev/api/appapi"
	"stellar.dev/api/dnsapi"
	"stellar.dev/api/gossipapi"
)

// InstancePrefix is the state prefix of every node-owned key; instances
// are nodes/<node>/instances/<app>/<service>/<index> (appapi.Instance).
const InstancePrefix = appapi.NodesPrefix

// serving reports whether DNS answers for the instance: it runs, and its
// health check (if any) has not failed. "unknown" (no verdict yet, or no
// check) counts as serving: without a check, running is healthy.
func serving(in appapi.Instance) bool {
	return in.Status == appapi.StatusRunning && in.Health != appapi.HealthUnhealthy
}

// Input is what a zone is built from.
type Input struct {
	// Domain is the zone's origin ("stellar" or "stellar.").
	Domain string
	// TTL is the TTL of generated records and of negative answers.
	TTL time.Duration
	// Serial is the SOA serial.
	Serial uint32
	// Entries are the state's keys under nodes/ (instances), apps/ (for
	// the endpoints of services) and dns/records/.
	Entries map[string]gossipapi.Entry
	// Members maps node names to their member status; a node whose status
	// is failed or left is not answered for.
	Members map[string]string
}

// Stats counts what went into a zone.
type Stats struct {
	Names     int
	Instances int
	Custom    int
	// Skipped counts entries that could not be used (bad documents,
	// invalid names), for the log and metrics.
	Skipped int
	// Problems describes the first few skipped entries.
	Problems []string
}

type rrset map[uint16][]dns.RR

// Zone is a built zone.
type Zone struct {
	origin string
	ttl    uint32
	soa    *dns.SOA
	// names holds every name of the zone, empty non-terminals with a nil
	// set, and custom names outside it.
	names   map[string]rrset
	records []dnsapi.Record
	stats   Stats
	built   time.Time
}

// Origin returns the zone's origin with the trailing dot.
func (z *Zone) Origin() string { return z.origin }

// Serial returns the SOA serial.
func (z *Zone) Serial() uint32 { return z.soa.Serial }

// Stats returns what went into the zone.
func (z *Zone) Stats() Stats { return z.stats }

// Built returns when the zone was built.
func (z *Zone) Built() time.Time { return z.built }

// Records returns the records made from instances (Source "service") and
// the custom ones (Source "custom"), sorted.
func (z *Zone) Records() []dnsapi.Record { return z.records }

// Fqdn returns domain as a lowercase fully qualified name.
func Fqdn(domain string) string { return dns.Fqdn(strings.ToLower(strings.TrimSuffix(domain, "."))) }

// Build makes the zone from in. It never fails: an entry it cannot use is
// counted in Stats.Skipped and left out.
func Build(in Input) *Zone {
	origin := Fqdn(in.Domain)
	ttl := uint32(in.TTL / time.Second)
	if ttl == 0 {
		ttl = 1
	}
	z := &Zone{origin: origin, ttl: ttl, names: map[string]rrset{}, built: time.Now()}
	z.soa = &dns.SOA{
		Hdr:     dns.RR_Header{Name: origin, Rrtype: dns.TypeSOA, Class: dns.ClassINET, Ttl: ttl},
		Ns:      "ns." + origin,
		Mbox:    "hostmaster." + origin,
		Serial:  in.Serial,
		Refresh: 60, Retry: 30, Expire: 86400, Minttl: ttl,
	}
	z.add(z.soa)
	skip := func(key, format string, args ...any) {
		z.stats.Skipped++
		if len(z.stats.Problems) < 5 {
			z.stats.Problems = append(z.stats.Problems, key+": "+fmt.Sprintf(format, args...))
		}
	}
	keys := make([]string, 0, len(in.Entries))
	for k := range in.Entries {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var custom []dnsapi.Record
	endpoints := map[[2]string][]appapi.Endpoint{} // app, service -> endpoints
	for _, k := range keys {
		if !strings.HasPrefix(k, appapi.AppsPrefix) {
			continue
		}
		var rec appapi.Record
		if err := json.Unmarshal(in.Entries[k].Value, &rec); err != nil {
			skip(k, "decode app: %v", err)
			continue
		}
		app := strings.TrimPrefix(k, appapi.AppsPrefix)
		for _, svc := range rec.Spec.Services {
			for _, ep := range svc.Endpoints {
				target := svc.Name
				if ep.Service != "" {
					target = ep.Service
				}
				endpoints[[2]string{app, target}] = append(endpoints[[2]string{app, target}], ep)
			}
		}
	}
	for _, k := range keys {
		e := in.Entries[k]
		switch {
		case strings.HasPrefix(k, dnsapi.RecordPrefix):
			var r dnsapi.Record
			if err := json.Unmarshal(e.Value, &r); err != nil {
				skip(k, "decode record: %v", err)
				continue
			}
			n, err := dnsapi.Normalize(r)
			if err != nil {
				skip(k, "%v", err)
				continue
			}
			n.Source = dnsapi.SourceCustom
			custom = append(custom, n)
		case strings.HasPrefix(k, appapi.NodesPrefix):
			node, app, svc, n, ok := appapi.ParseInstanceKey(k)
			if !ok {
				continue // facts, labels, subnet, declined: not for DNS
			}
			if e.OwnerFailed {
				continue
			}
			if st := in.Members[node]; st == gossipapi.StatusFailed || st == gossipapi.StatusLeft {
				continue
			}
			var inst appapi.Instance
			if err := json.Unmarshal(e.Value, &inst); err != nil {
				skip(k, "decode instance: %v", err)
				continue
			}
			if !serving(inst) {
				continue
			}
			if err := z.addInstance(node, app, svc, n, inst, endpoints[[2]string{app, svc}]); err != nil {
				skip(k, "%v", err)
				continue
			}
			z.stats.Instances++
		}
	}
	for _, r := range custom {
		if err := z.addCustom(r); err != nil {
			skip(dnsapi.RecordKey(r), "%v", err)
			continue
		}
		z.stats.Custom++
		z.records = append(z.records, r)
	}
	sort.Slice(z.records, func(i, j int) bool {
		a, b := z.records[i], z.records[j]
		if a.Name != b.Name {
			return a.Name < b.Name
		}
		if a.Type != b.Type {
			return a.Type < b.Type
		}
		return a.Value < b.Value
	})
	for name, set := range z.names {
		if set != nil {
			z.stats.Names++
		}
		_ = name
	}
	return z
}

func (z *Zone) hdr(name string, t uint16, ttl uint32) dns.RR_Header {
	return dns.RR_Header{Name: name, Rrtype: t, Class: dns.ClassINET, Ttl: ttl}
}

// add puts rr into the zone and marks the names between it and the origin
// as existing (empty non-terminals).
func (z *Zone) add(rr dns.RR) {
	name := rr.Header().Name
	set := z.names[name]
	if set == nil {
		set = rrset{}
		z.names[name] = set
	}
	t := rr.Header().Rrtype
	for _, old := range set[t] {
		if dns.IsDuplicate(old, rr) {
			return
		}
	}
	set[t] = append(set[t], rr)
	if !dns.IsSubDomain(z.origin, name) {
		return
	}
	for off, end := dns.NextLabel(name, 0); !end; off, end = dns.NextLabel(name, off) {
		parent := name[off:]
		if len(parent) < len(z.origin) {
			break
		}
		if _, ok := z.names[parent]; !ok {
			z.names[parent] = nil
		}
	}
}

func (z *Zone) addInstance(node, app, svc string, idx int, inst appapi.Instance, eps []appapi.Endpoint) error {
	for _, l := range []string{app, svc} {
		if err := dnsapi.ValidateLabel(l); err != nil {
			return fmt.Errorf("instance name: %w", err)
		}
	}
	svcName := svc + "." + app + "." + z.origin
	instName := strconv.Itoa(idx) + "." + svcName
	if len(instName) > 254 {
		return fmt.Errorf("name %s is too long", instName)
	}
	if inst.IP == "" {
		return fmt.Errorf("running instance has no ip")
	}
	a, err := netip.ParseAddr(inst.IP)
	if err != nil || a.Zone() != "" {
		return fmt.Errorf("instance ip %q is not an IP address", inst.IP)
	}
	a = a.Unmap()
	typ := dnsapi.TypeA
	for _, name := range []string{svcName, instName} {
		if a.Is4() {
			z.add(&dns.A{Hdr: z.hdr(name, dns.TypeA, z.ttl), A: a.AsSlice()})
		} else {
			typ = dnsapi.TypeAAAA
			z.add(&dns.AAAA{Hdr: z.hdr(name, dns.TypeAAAA, z.ttl), AAAA: a.AsSlice()})
		}
	}
	svcRec := strings.TrimSuffix(svcName, ".")
	z.records = append(z.records, dnsapi.Record{Name: svcRec, Type: typ, Value: a.String(), TTL: z.ttl, Source: dnsapi.SourceService, Node: node})
	updated := ""
	if !inst.Updated.IsZero() {
		updated = inst.Updated.UTC().Format(time.RFC3339)
	}
	txt := fmt.Sprintf("node=%s; updated=%s", node, updated)
	for _, name := range []string{svcName, instName} {
		z.add(&dns.TXT{Hdr: z.hdr(name, dns.TypeTXT, z.ttl), Txt: []string{txt}})
	}
	z.records = append(z.records, dnsapi.Record{Name: svcRec, Type: dnsapi.TypeTXT, Value: txt, TTL: z.ttl, Source: dnsapi.SourceService, Node: node})
	for _, ep := range eps {
		// _<protocol>._<transport>: "http" -> _http._tcp, "udp" -> _udp._udp.
		label := strings.ToLower(ep.Protocol)
		proto := "tcp"
		if label == "udp" {
			proto = "udp"
		}
		if ep.Port <= 0 || ep.Port > 65535 || dnsapi.ValidateLabel(label) != nil {
			continue // the app spec's validation refuses these; never fatal here
		}
		srvName := "_" + label + "._" + proto + "." + svcName
		z.add(&dns.SRV{Hdr: z.hdr(srvName, dns.TypeSRV, z.ttl), Priority: 0, Weight: 10, Port: uint16(ep.Port), Target: instName})
		z.records = append(z.records, dnsapi.Record{Name: strings.TrimSuffix(srvName, "."), Type: dnsapi.TypeSRV, Value: fmt.Sprintf("0 10 %d %s", ep.Port, strings.TrimSuffix(instName, ".")), TTL: z.ttl, Source: dnsapi.SourceService, Node: node})
	}
	return nil
}

// RR turns a normalized custom record into a resource record; ttl is used
// when the record has none.
func RR(r dnsapi.Record, ttl uint32) (dns.RR, error) {
	if r.TTL != 0 {
		ttl = r.TTL
	}
	h := dns.RR_Header{Name: dns.Fqdn(r.Name), Class: dns.ClassINET, Ttl: ttl}
	switch r.Type {
	case dnsapi.TypeA, dnsapi.TypeAAAA:
		a, err := netip.ParseAddr(r.Value)
		if err != nil {
			return nil, fmt.Errorf("record %s: %w", r.Name, err)
		}
		if r.Type == dnsapi.TypeA {
			h.Rrtype = dns.TypeA
			return &dns.A{Hdr: h, A: a.AsSlice()}, nil
		}
		h.Rrtype = dns.TypeAAAA
		return &dns.AAAA{Hdr: h, AAAA: a.AsSlice()}, nil
	case dnsapi.TypeCNAME:
		h.Rrtype = dns.TypeCNAME
		return &dns.CNAME{Hdr: h, Target: dns.Fqdn(r.Value)}, nil
	case dnsapi.TypeTXT:
		h.Rrtype = dns.TypeTXT
		var parts []string
		for v := r.Value; ; v = v[255:] {
			if len(v) <= 255 {
				parts = append(parts, v)
				break
			}
			parts = append(parts, v[:255])
		}
		return &dns.TXT{Hdr: h, Txt: parts}, nil
	case dnsapi.TypeSRV:
		var p, w, port uint16
		var t string
		if _, err := fmt.Sscanf(r.Value, "%d %d %d %s", &p, &w, &port, &t); err != nil {
			return nil, fmt.Errorf("record %s SRV: %w", r.Name, err)
		}
		h.Rrtype = dns.TypeSRV
		return &dns.SRV{Hdr: h, Priority: p, Weight: w, Port: port, Target: dns.Fqdn(t)}, nil
	case dnsapi.TypeMX:
		var p uint16
		var t string
		if _, err := fmt.Sscanf(r.Value, "%d %s", &p, &t); err != nil {
			return nil, fmt.Errorf("record %s MX: %w", r.Name, err)
		}
		h.Rrtype = dns.TypeMX
		return &dns.MX{Hdr: h, Preference: p, Mx: dns.Fqdn(t)}, nil
	}
	return nil, fmt.Errorf("record %s: unknown type %q", r.Name, r.Type)
}

func (z *Zone) addCustom(r dnsapi.Record) error {
	rr, err := RR(r, z.ttl)
	if err != nil {
		return err
	}
	name := rr.Header().Name
	set := z.names[name]
	if r.Type == dnsapi.TypeCNAME {
		for t, rrs := range set {
			if t != dns.TypeCNAME && len(rrs) > 0 {
				return fmt.Errorf("CNAME at %s beside other records: left out", r.Name)
			}
		}
		if len(set[dns.TypeCNAME]) > 0 {
			return fmt.Errorf("second CNAME at %s: left out", r.Name)
		}
	} else if len(set[dns.TypeCNAME]) > 0 {
		return fmt.Errorf("%s record at %s beside a CNAME: left out", r.Type, r.Name)
	}
	z.add(rr)
	return nil
}

// Result is the answer to one question.
type Result struct {
	// Forward is true when the name is not the zone's to answer: the
	// question goes to the upstream servers.
	Forward bool
	// Authoritative is true for names inside the zone.
	Authoritative bool
	Rcode         int
	Answer        []dns.RR
	Ns            []dns.RR
}

// InZone reports whether qname (lowercase, fully qualified) is the zone's.
func (z *Zone) InZone(qname string) bool { return dns.IsSubDomain(z.origin, qname) }

// Lookup answers qtype for qname (lowercase, fully qualified). The RRs of
// a Result are shared with the zone: never modify them.
func (z *Zone) Lookup(qname string, qtype uint16) Result {
	if !z.InZone(qname) {
		set := z.names[qname]
		if set == nil || (len(set[qtype]) == 0 && len(set[dns.TypeCNAME]) == 0 && qtype != dns.TypeANY) {
			return Result{Forward: true}
		}
		res := Result{Rcode: dns.RcodeSuccess}
		z.answer(&res, qname, qtype, set)
		return res
	}
	res := Result{Authoritative: true, Rcode: dns.RcodeSuccess}
	set, ok := z.names[qname]
	if !ok {
		res.Rcode = dns.RcodeNameError
		res.Ns = []dns.RR{z.soa}
		return res
	}
	z.answer(&res, qname, qtype, set)
	if len(res.Answer) == 0 || res.Rcode == dns.RcodeNameError {
		res.Ns = []dns.RR{z.soa}
	}
	return res
}

func (z *Zone) answer(res *Result, qname string, qtype uint16, set rrset) {
	if qtype == dns.TypeANY {
		for _, t := range []uint16{dns.TypeSOA, dns.TypeCNAME, dns.TypeA, dns.TypeAAAA, dns.TypeMX, dns.TypeSRV, dns.TypeTXT} {
			res.Answer = append(res.Answer, set[t]...)
		}
		return
	}
	for hops := 0; hops < 8; hops++ {
		if rrs := set[qtype]; len(rrs) > 0 {
			res.Answer = append(res.Answer, rrs...)
			return
		}
		c := set[dns.TypeCNAME]
		if len(c) == 0 || qtype == dns.TypeCNAME {
			return
		}
		res.Answer = append(res.Answer, c[0])
		target := c[0].(*dns.CNAME).Target
		next, ok := z.names[target]
		if !ok {
			if z.InZone(target) {
				// The chain ends in a name the zone does not have.
				res.Rcode = dns.RcodeNameError
			}
			return
		}
		set = next
	}
}

// Text renders the zone in zone-file form, sorted, for golden tests and
// debugging.
func (z *Zone) Text() string {
	var lines []string
	for _, set := range z.names {
		for _, rrs := range set {
			for _, rr := range rrs {
				lines = append(lines, strings.ReplaceAll(rr.String(), "\t", " "))
			}
		}
	}
	sort.Strings(lines)
	return strings.Join(lines, "\n") + "\n"
}
