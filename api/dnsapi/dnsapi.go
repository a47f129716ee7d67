// Package dnsapi is the wire contract of stellar-dnsd's local API
// (dnsd.sock): the cluster's custom DNS records, their validation, and the
// keys under which they live in the cluster state.
//
// A custom record is stored by stellar-dnsd as the cluster key
// "dns/records/<name>/<TYPE>/<id>" (RecordKey), with the Record as its JSON
// value; <id> is derived from the value, so creating the same record twice
// is idempotent and two different values of one name and type coexist.
package dnsapi

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"stellar.dev/api/errdefs"
)

// RecordPrefix is the cluster-state prefix of every custom record.
const RecordPrefix = "dns/records/"

// Record types a custom record may have.
const (
	TypeA     = "A"
	TypeAAAA  = "AAAA"
	TypeCNAME = "CNAME"
	TypeTXT   = "TXT"
	TypeSRV   = "SRV"
	TypeMX    = "MX"
)

// Types lists the record types custom records may have.
var Types = []string{TypeA, TypeAAAA, TypeCNAME, TypeTXT, TypeSRV, TypeMX}

// Sources of a record in a listing.
const (
	SourceCustom  = "custom"  // created with sctl nameserver create
	SourceService = "service" // made from a running instance
)

// MaxTTL is the longest TTL a custom record may have, in seconds.
const MaxTTL = 86400

// MaxTXT is the longest TXT value, in bytes.
const MaxTXT = 4000

// Record is one DNS record.
type Record struct {
	// Name is the owner name: lowercase, without the trailing dot
	// ("db.example.stellar", "mail.example.com").
	Name string `json:"name"`
	// Type is A, AAAA, CNAME, TXT, SRV or MX.
	Type string `json:"type"`
	// Value is the record data in zone-file form, without quotes for TXT:
	// A "10.0.0.1", AAAA "fd00::1", CNAME "web.example.stellar",
	// TXT "any text", SRV "priority weight port target" ("10 5 8080 web.example.stellar"),
	// MX "preference host" ("10 mail.example.com").
	Value string `json:"value"`
	// TTL in seconds; 0 means the zone's TTL ([dns] ttl).
	TTL uint32 `json:"ttl,omitempty"`
	// Source is "custom" or "service" in listings; ignored on create.
	Source string `json:"source,omitempty"`
	// Node is the node of a service record's instance.
	Node string `json:"node,omitempty"`
	// Created is when a custom record was created (set by stellar-dnsd).
	Created time.Time `json:"created,omitzero"`
}

// RecordList is the answer of GET /v1/records.
type RecordList struct {
	Records []Record `json:"records"`
}

// DeleteResult is the answer of DELETE /v1/records/{name}.
type DeleteResult struct {
	// Deleted are the records removed.
	Deleted []Record `json:"deleted"`
}

// Status is the answer of GET /v1/status.
type Status struct {
	// Domain is the cluster zone, with the trailing dot.
	Domain string `json:"domain"`
	// Synced is true once the zone was loaded from the cluster state; until
	// then the zone answers SERVFAIL.
	Synced bool `json:"synced"`
	// Serial is the zone's SOA serial; it grows with every change.
	Serial uint32 `json:"serial"`
	// Names is the number of names in the zone.
	Names int `json:"names"`
	// Instances is the number of instances answered for.
	Instances int `json:"instances"`
	// Custom is the number of custom records.
	Custom int `json:"custom"`
	// Updated is when the zone last changed.
	Updated time.Time `json:"updated,omitzero"`
	// Upstreams are the forwarding servers in use.
	Upstreams []string `json:"upstreams"`
	// GossipError is the last error talking to stellar-gossip, if any.
	GossipError string `json:"gossip_error,omitempty"`
}

// NormalizeName lowercases name and drops one trailing dot; it does not
// validate.
func NormalizeName(name string) string {
	return strings.TrimSuffix(strings.ToLower(strings.TrimSpace(name)), ".")
}

// ValidateName reports whether name (normalized) is a DNS name a record may
// have: 1 to 253 bytes, labels of 1 to 63 letters, digits, '-' or '_', not
// starting or ending with '-', and at least two labels.
func ValidateName(name string) error {
	if name == "" {
		return fmt.Errorf("name is empty")
	}
	if len(name) > 253 {
		return fmt.Errorf("name %q is longer than 253 bytes", clip(name))
	}
	labels := strings.Split(name, ".")
	if len(labels) < 2 {
		return fmt.Errorf("name %q needs at least two labels (e.g. db.example.stellar)", name)
	}
	for _, l := range labels {
		if err := ValidateLabel(l); err != nil {
			return fmt.Errorf("name %q: %w", clip(name), err)
		}
	}
	return nil
}

// ValidateLabel reports whether l is one valid DNS label.
func ValidateLabel(l string) error {
	if l == "" {
		return fmt.Errorf("empty label")
	}
	if len(l) > 63 {
		return fmt.Errorf("label %q is longer than 63 bytes", clip(l))
	}
	for i := 0; i < len(l); i++ {
		c := l[i]
		switch {
		case c >= 'a' && c <= 'z', c >= '0' && c <= '9', c == '_':
		case c == '-':
			if i == 0 || i == len(l)-1 {
				return fmt.Errorf("label %q starts or ends with '-'", l)
			}
		default:
			return fmt.Errorf("label %q has the character %q (use a-z, 0-9, '-', '_')", clip(l), c)
		}
	}
	return nil
}

func clip(s string) string {
	if len(s) > 70 {
		return s[:70] + "..."
	}
	return s
}

// Normalize returns r with its name, type and value in canonical form and
// checks every field, with an errdefs.ErrInvalidArgument error naming what
// is wrong.
func Normalize(r Record) (Record, error) {
	bad := func(format string, args ...any) (Record, error) {
		return Record{}, errdefs.New(errdefs.ErrInvalidArgument, format, args...)
	}
	r.Name = NormalizeName(r.Name)
	r.Type = strings.ToUpper(strings.TrimSpace(r.Type))
	if r.Type == "" {
		r.Type = TypeA
	}
	if err := ValidateName(r.Name); err != nil {
		return bad("record name: %v", err)
	}
	if r.TTL > MaxTTL {
		return bad("record %s: ttl %ds is longer than %ds", r.Name, r.TTL, MaxTTL)
	}
	v := strings.TrimSpace(r.Value)
	if v == "" {
		return bad("record %s %s: value is empty", r.Name, r.Type)
	}
	switch r.Type {
	case TypeA:
		a, err := netip.ParseAddr(v)
		if err != nil || !a.Is4() {
			return bad("record %s A: value %q is not an IPv4 address", r.Name, clip(v))
		}
		v = a.String()
	case TypeAAAA:
		a, err := netip.ParseAddr(v)
		if err != nil || !a.Is6() || a.Is4In6() || a.Zone() != "" {
			return bad("record %s AAAA: value %q is not an IPv6 address", r.Name, clip(v))
		}
		v = a.String()
	case TypeCNAME:
		t := NormalizeName(v)
		if err := ValidateName(t); err != nil {
			return bad("record %s CNAME: target: %v", r.Name, err)
		}
		if t == r.Name {
			return bad("record %s CNAME: points at itself", r.Name)
		}
		v = t
	case TypeTXT:
		if len(v) > MaxTXT {
			return bad("record %s TXT: value is %d bytes, more than %d", r.Name, len(v), MaxTXT)
		}
		for _, c := range []byte(v) {
			if c < 0x20 || c == 0x7f {
				return bad("record %s TXT: value has the control character %q", r.Name, c)
			}
		}
	case TypeSRV:
		f := strings.Fields(v)
		if len(f) != 4 {
			return bad("record %s SRV: value %q must be \"priority weight port target\"", r.Name, clip(v))
		}
		nums := make([]uint64, 3)
		for i, what := range []string{"priority", "weight", "port"} {
			n, err := strconv.ParseUint(f[i], 10, 16)
			if err != nil {
				return bad("record %s SRV: %s %q is not a number from 0 to 65535", r.Name, what, clip(f[i]))
			}
			nums[i] = n
		}
		t := NormalizeName(f[3])
		if err := ValidateName(t); err != nil {
			return bad("record %s SRV: target: %v", r.Name, err)
		}
		v = fmt.Sprintf("%d %d %d %s", nums[0], nums[1], nums[2], t)
	case TypeMX:
		f := strings.Fields(v)
		if len(f) != 2 {
			return bad("record %s MX: value %q must be \"preference host\"", r.Name, clip(v))
		}
		n, err := strconv.ParseUint(f[0], 10, 16)
		if err != nil {
			return bad("record %s MX: preference %q is not a number from 0 to 65535", r.Name, clip(f[0]))
		}
		t := NormalizeName(f[1])
		if err := ValidateName(t); err != nil {
			return bad("record %s MX: host: %v", r.Name, err)
		}
		v = fmt.Sprintf("%d %s", n, t)
	default:
		return bad("record %s: type %q is not one of %s", r.Name, clip(r.Type), strings.Join(Types, ", "))
	}
	r.Value = v
	return r, nil
}

// RecordKey is the cluster-state key of a normalized record.
func RecordKey(r Record) string {
	sum := sha256.Sum256([]byte(r.Value))
	return RecordPrefix + r.Name + "/" + r.Type + "/" + hex.EncodeToString(sum[:8])
}

// NamePrefix is the cluster-state prefix of every custom record of name.
func NamePrefix(name string) string { return RecordPrefix + NormalizeName(name) + "/" }
