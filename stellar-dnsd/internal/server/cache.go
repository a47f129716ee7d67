package server

import (
	"encoding/binary"
	"sync"
	"sync/atomic"

	"github.com/miekg/dns"

	"stellar.dev/stellar-dnsd/internal/zone"
)

// Limits of the answer cache of one zone.
const (
	// cacheEntries is the most answers cached per zone; past it, answers
	// are computed every time (a flood of random names cannot grow it).
	cacheEntries = 20000
	// cacheMaxAnswer is the largest packed answer cached.
	cacheMaxAnswer = 4096
	// rotations is the most round-robin variants cached per answer.
	rotations = 8
)

// zoneState is a zone and the packed answers computed from it: the zone is
// immutable, so an answer stays right until the next zone replaces both.
type zoneState struct {
	z     *zone.Zone
	cache sync.Map // string(fastKey) -> *cachedAnswer
	size  atomic.Int64
}

// cachedAnswer holds packed variants of one answer (rotations of a
// multi-address answer), with ID 0; the question is overwritten with the
// asker's own bytes (its letter case) on the way out.
type cachedAnswer struct {
	variants [][]byte
	next     atomic.Uint32
}

// fastQuery is what the cache needs of a plain query, read straight from
// its bytes: one uncompressed question of class IN, and at most an OPT
// record with no options.
type fastQuery struct {
	key    []byte // lowercased qname wire bytes, qtype, limit, edns
	qStart int    // question bytes: raw[12:qEnd]
	qEnd   int
}

// parseFast reads raw as a plain query; ok is false for anything else,
// which then takes the full path.
func parseFast(raw []byte, tcp bool, buf []byte) (fastQuery, bool) {
	var f fastQuery
	if len(raw) < 12+5 {
		return f, false
	}
	flags := binary.BigEndian.Uint16(raw[2:])
	if flags&0xFA00 != 0 { // QR, opcode, AA, TC set
		return f, false
	}
	if binary.BigEndian.Uint16(raw[4:]) != 1 || binary.BigEndian.Uint16(raw[6:]) != 0 || binary.BigEndian.Uint16(raw[8:]) != 0 {
		return f, false
	}
	ar := binary.BigEndian.Uint16(raw[10:])
	if ar > 1 {
		return f, false
	}
	key := buf[:0]
	i := 12
	for {
		if i >= len(raw) {
			return f, false
		}
		l := int(raw[i])
		if l > 63 || i+1+l > len(raw) {
			return f, false // a pointer, or cut short
		}
		key = append(key, byte(l))
		for _, c := range raw[i+1 : i+1+l] {
			if c >= 'A' && c <= 'Z' {
				c += 'a' - 'A'
			}
			key = append(key, c)
		}
		i += 1 + l
		if l == 0 {
			break
		}
		if i-12 > 255 {
			return f, false
		}
	}
	if i+4 > len(raw) {
		return f, false
	}
	qtype := binary.BigEndian.Uint16(raw[i:])
	if binary.BigEndian.Uint16(raw[i+2:]) != dns.ClassINET {
		return f, false
	}
	switch qtype {
	case dns.TypeAXFR, dns.TypeIXFR, dns.TypeOPT:
		return f, false
	}
	f.qStart, f.qEnd = 12, i+4
	i += 4
	limit, edns := ClassicSize, byte(0)
	if ar == 1 {
		// OPT: root name, type 41, class = size, ttl = ext rcode/version/flags, rdlen 0.
		if i+11 != len(raw) || raw[i] != 0 || binary.BigEndian.Uint16(raw[i+1:]) != dns.TypeOPT {
			return f, false
		}
		size := int(binary.BigEndian.Uint16(raw[i+3:]))
		if raw[i+5] != 0 || raw[i+6] != 0 || binary.BigEndian.Uint16(raw[i+9:]) != 0 {
			return f, false // extended rcode, version or options
		}
		limit = min(max(size, ClassicSize), EDNSSize)
		edns = 1
	} else if i != len(raw) {
		return f, false
	}
	if tcp {
		limit = dns.MaxMsgSize
	}
	key = append(key, byte(qtype>>8), byte(qtype), byte(limit>>8), byte(limit), edns)
	f.key = key
	return f, true
}

// answer copies the cached variant into a fresh answer for raw.
func (c *cachedAnswer) answer(raw []byte, f fastQuery) []byte {
	v := c.variants[0]
	if len(c.variants) > 1 {
		v = c.variants[int(c.next.Add(1))%len(c.variants)]
	}
	out := make([]byte, len(v))
	copy(out, v)
	copy(out[0:2], raw[0:2]) // ID
	// RD and CD are copied from the query, as SetReply does.
	out[2] = out[2]&^0x01 | raw[2]&0x01
	out[3] = out[3]&^0x10 | raw[3]&0x10
	copy(out[f.qStart:f.qEnd], raw[f.qStart:f.qEnd])
	return out
}

// store caches the variants of an answer to a fast query.
func (s *zoneState) store(key []byte, variants [][]byte) {
	for _, v := range variants {
		if len(v) > cacheMaxAnswer || len(v) < 12 {
			return
		}
	}
	if s.size.Load() >= cacheEntries {
		return
	}
	if _, loaded := s.cache.LoadOrStore(string(key), &cachedAnswer{variants: variants}); !loaded {
		s.size.Add(1)
	}
}

// rotationsOf returns the answer orders to cache: the answer itself, or up
// to 8 rotations of a set of addresses, spread over it.
func rotationsOf(rrs []dns.RR) [][]dns.RR {
	if len(rrs) < 2 {
		return [][]dns.RR{rrs}
	}
	t := rrs[0].Header().Rrtype
	if t != dns.TypeA && t != dns.TypeAAAA || rrs[len(rrs)-1].Header().Rrtype != t {
		return [][]dns.RR{rrs}
	}
	n := min(len(rrs), rotations)
	out := make([][]dns.RR, 0, n)
	for k := 0; k < n; k++ {
		start := k * len(rrs) / n
		r := make([]dns.RR, 0, len(rrs))
		r = append(r, rrs[start:]...)
		out = append(out, append(r, rrs[:start]...))
	}
	return out
}
