// Package server is stellar-dnsd's DNS protocol engine: it parses queries
// from raw bytes, answers the cluster zone, hands every other name to the
// forwarder, and serves UDP and TCP with bounded goroutines and memory.
package server

import (
	"context"
	"encoding/binary"
	"log/slog"
	"strings"
	"sync/atomic"

	"github.com/miekg/dns"

	"stellar.dev/stellar-dnsd/internal/zone"
)

// Sizes of answers.
const (
	// EDNSSize is the UDP payload size Stellar advertises and the largest
	// UDP answer it sends (DNS flag day 2020).
	EDNSSize = 1232
	// ClassicSize is the largest UDP answer to a query without EDNS0.
	ClassicSize = 512
	// MaxTCPQuery is the largest query accepted over TCP; a longer one
	// closes the connection.
	MaxTCPQuery = 16 << 10
	// MaxUDPQuery is the read buffer of UDP queries; a longer datagram is
	// cut and answered FORMERR.
	MaxUDPQuery = 4096
)

// Forwarder resolves a question outside the zone.
type Forwarder interface {
	Forward(ctx context.Context, q *dns.Msg, tcp bool) (*dns.Msg, error)
}

// Outcome counts what happened to queries, for metrics.
type Outcome int

// Outcomes.
const (
	OutDropped Outcome = iota
	OutZone
	OutForward
	OutServfail
	OutFormerr
	OutRefused
	OutNotimp
	// NumOutcomes is the number of outcomes.
	NumOutcomes
)

var outcomeNames = [...]string{"dropped", "zone", "forward", "servfail", "formerr", "refused", "notimp"}

// String names o for metrics labels.
func (o Outcome) String() string { return outcomeNames[o] }

// Handler answers DNS messages.
type Handler struct {
	origin string
	zone   atomic.Pointer[zoneState]
	fwd    atomic.Pointer[fwdBox]
	log    *slog.Logger
	counts [2][NumOutcomes]atomic.Uint64 // [tcp][outcome]
	rr     atomic.Uint32
	onOut  func(tcp bool, o Outcome)
}

// SetCounters makes the handler call count for every query's outcome
// (metrics). Call it before serving.
func (h *Handler) SetCounters(count func(tcp bool, o Outcome)) { h.onOut = count }

func (h *Handler) count(tcp bool, o Outcome) {
	h.counts[b2i(tcp)][o].Add(1)
	if h.onOut != nil {
		h.onOut(tcp, o)
	}
}

type fwdBox struct{ f Forwarder }

// NewHandler returns a handler for the zone origin; until SetZone is
// called, questions for the zone are answered SERVFAIL.
func NewHandler(origin string, fwd Forwarder, log *slog.Logger) *Handler {
	h := &Handler{origin: zone.Fqdn(origin), log: log}
	h.SetForwarder(fwd)
	return h
}

// SetZone swaps in a new zone.
func (h *Handler) SetZone(z *zone.Zone) { h.zone.Store(&zoneState{z: z}) }

// Zone returns the zone answered from, nil before the first sync.
func (h *Handler) Zone() *zone.Zone {
	if st := h.zone.Load(); st != nil {
		return st.z
	}
	return nil
}

// SetForwarder swaps the forwarder (after a reload).
func (h *Handler) SetForwarder(f Forwarder) { h.fwd.Store(&fwdBox{f}) }

// Count returns how many queries over the protocol ended with o.
func (h *Handler) Count(tcp bool, o Outcome) uint64 { return h.counts[b2i(tcp)][o].Load() }

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}

// Pending is a parsed query waiting for its answer.
type Pending struct {
	req   *dns.Msg
	limit int  // largest answer in bytes
	edns  bool // the query had an OPT record
	tcp   bool
}

// Handle answers the raw query. It returns the packed answer, or nil when
// the query is dropped; when the name must be forwarded it returns a nil
// answer and a non-nil pending query: finish it with Forward.
func (h *Handler) Handle(raw []byte, tcp bool) ([]byte, *Pending) {
	out, q, o := h.handle(raw, tcp)
	if q == nil {
		h.count(tcp, o)
	}
	return out, q
}

func (h *Handler) handle(raw []byte, tcp bool) ([]byte, *Pending, Outcome) {
	if len(raw) < 12 {
		return nil, nil, OutDropped // not even a header
	}
	st := h.zone.Load()
	var keyBuf [300]byte
	fq, fast := parseFast(raw, tcp, keyBuf[:])
	if fast && st != nil {
		if v, ok := st.cache.Load(string(fq.key)); ok {
			return v.(*cachedAnswer).answer(raw, fq), nil, OutZone
		}
	}
	id := binary.BigEndian.Uint16(raw)
	flags := binary.BigEndian.Uint16(raw[2:])
	if flags&(1<<15) != 0 {
		return nil, nil, OutDropped // a response: never answer it (no loops)
	}
	opcode := int(flags>>11) & 0xf
	req := new(dns.Msg)
	if err := req.Unpack(raw); err != nil {
		return headerOnly(id, opcode, dns.RcodeFormatError), nil, OutFormerr
	}
	if opcode != dns.OpcodeQuery {
		m := new(dns.Msg)
		m.SetRcode(req, dns.RcodeNotImplemented)
		return pack(m, ClassicSize), nil, OutNotimp
	}
	if len(req.Question) != 1 {
		return headerOnly(id, opcode, dns.RcodeFormatError), nil, OutFormerr
	}
	q := &Pending{req: req, limit: ClassicSize, tcp: tcp}
	var opt *dns.OPT
	for _, rr := range req.Extra {
		if o, ok := rr.(*dns.OPT); ok {
			if opt != nil {
				return h.reply(q, dns.RcodeFormatError), nil, OutFormerr // two OPT records
			}
			opt = o
		}
	}
	if opt != nil {
		q.edns = true
		if opt.Hdr.Name != "." {
			return h.reply(q, dns.RcodeFormatError), nil, OutFormerr
		}
		size := int(opt.UDPSize())
		if size < ClassicSize {
			size = ClassicSize
		}
		q.limit = min(size, EDNSSize)
		if opt.Version() != 0 {
			return h.reply(q, dns.RcodeBadVers), nil, OutFormerr
		}
	}
	if tcp {
		q.limit = dns.MaxMsgSize
	}
	question := req.Question[0]
	if question.Qclass != dns.ClassINET && question.Qclass != dns.ClassANY {
		return h.reply(q, dns.RcodeRefused), nil, OutRefused
	}
	switch question.Qtype {
	case dns.TypeAXFR, dns.TypeIXFR:
		return h.reply(q, dns.RcodeRefused), nil, OutRefused
	}
	qname := strings.ToLower(question.Name)
	if st == nil {
		if dns.IsSubDomain(h.origin, qname) {
			// Not synced yet: never a cacheable NXDOMAIN.
			return h.reply(q, dns.RcodeServerFailure), nil, OutServfail
		}
		return nil, q, OutForward
	}
	res := st.z.Lookup(qname, question.Qtype)
	if res.Forward {
		return nil, q, OutForward
	}
	if !fast {
		m := h.newReply(q, res.Rcode)
		m.Authoritative = res.Authoritative
		m.Answer = h.rotate(res.Answer)
		m.Ns = res.Ns
		return h.finish(q, m), nil, OutZone
	}
	// Pack every rotation once and keep them for the next askers.
	orders := rotationsOf(res.Answer)
	variants := make([][]byte, len(orders))
	for i, ans := range orders {
		m := h.newReply(q, res.Rcode)
		m.Authoritative = res.Authoritative
		m.Answer = ans
		m.Ns = res.Ns
		variants[i] = h.finish(q, m)
		if variants[i] == nil {
			return nil, nil, OutDropped
		}
	}
	ca := &cachedAnswer{variants: variants}
	st.store(fq.key, variants)
	return ca.answer(raw, fq), nil, OutZone
}

// rotate turns the answer so successive queries start at a different
// address (round robin among instances).
func (h *Handler) rotate(rrs []dns.RR) []dns.RR {
	if len(rrs) < 2 {
		return rrs
	}
	t := rrs[0].Header().Rrtype
	if t != dns.TypeA && t != dns.TypeAAAA || rrs[len(rrs)-1].Header().Rrtype != t {
		return rrs
	}
	n := int(h.rr.Add(1)) % len(rrs)
	out := make([]dns.RR, 0, len(rrs))
	out = append(out, rrs[n:]...)
	return append(out, rrs[:n]...)
}

func (h *Handler) newReply(q *Pending, rcode int) *dns.Msg {
	m := new(dns.Msg)
	m.SetReply(q.req)
	m.Rcode = rcode
	m.RecursionAvailable = true
	m.Compress = true
	return m
}

func (h *Handler) reply(q *Pending, rcode int) []byte {
	return h.finish(q, h.newReply(q, rcode))
}

// finish adds the OPT record when the query had one and packs m within the
// query's size limit, truncating (TC=1) what does not fit.
func (h *Handler) finish(q *Pending, m *dns.Msg) []byte {
	if q.edns {
		m.SetEdns0(EDNSSize, false)
		// SetEdns0 cannot carry the extended rcode bits: set them.
		if m.Rcode > 0xf {
			opt := m.IsEdns0()
			opt.SetExtendedRcode(uint16(m.Rcode))
		}
	}
	return pack(m, q.limit)
}

func pack(m *dns.Msg, limit int) []byte {
	m.Compress = true
	b, err := m.Pack()
	if err == nil && len(b) <= limit {
		return b
	}
	m.Truncate(limit)
	b, err = m.Pack()
	if err != nil {
		return nil
	}
	return b
}

// headerOnly is an answer to a query that could not be parsed: its id and
// opcode with the rcode, nothing else.
func headerOnly(id uint16, opcode, rcode int) []byte {
	b := make([]byte, 12)
	binary.BigEndian.PutUint16(b, id)
	binary.BigEndian.PutUint16(b[2:], uint16(1<<15|opcode<<11|1<<7|rcode&0xf))
	return b
}

// Forward resolves a pending query upstream and returns the packed answer
// (SERVFAIL when no upstream answers).
func (h *Handler) Forward(ctx context.Context, q *Pending) []byte {
	fb := h.fwd.Load()
	if fb == nil || fb.f == nil {
		h.count(q.tcp, OutServfail)
		return h.reply(q, dns.RcodeServerFailure)
	}
	up := q.req.Copy()
	up.Id = dns.Id()
	resp, err := fb.f.Forward(ctx, up, q.tcp)
	if err != nil || resp == nil {
		h.log.Debug("forward", "name", q.req.Question[0].Name, "err", err)
		h.count(q.tcp, OutServfail)
		return h.reply(q, dns.RcodeServerFailure)
	}
	h.count(q.tcp, OutForward)
	resp.Id = q.req.Id
	// Answer with the client's EDNS0 view, not the upstream's.
	resp.Extra = stripOPT(resp.Extra)
	if q.edns {
		resp.SetEdns0(EDNSSize, false)
	}
	return pack(resp, q.limit)
}

func stripOPT(rrs []dns.RR) []dns.RR {
	out := rrs[:0]
	for _, rr := range rrs {
		if _, ok := rr.(*dns.OPT); !ok {
			out = append(out, rr)
		}
	}
	return out
}
