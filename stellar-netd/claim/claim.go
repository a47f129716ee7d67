// Package claim decides which block of the cluster range a node claims:
// picking a free block, and resolving two nodes' conflicting claims
// deterministically so that every node reaches the same answer.
package claim

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"time"

	"stellar.dev/api/errdefs"
	"stellar.dev/daemon/atomicfile"
)

// Claim is one node's claim as the conflict rule sees it.
type Claim struct {
	Node   string
	Subnet netip.Prefix
	// Allocations > 0 makes the claim established.
	Allocations int
}

// Beats reports whether claim a wins over claim b for overlapping blocks:
// an established claim (with allocations) beats a new one; between equals
// the lower node name wins.
func Beats(a, b Claim) bool {
	ae, be := a.Allocations > 0, b.Allocations > 0
	if ae != be {
		return ae
	}
	return a.Node < b.Node
}

// Overlaps reports whether two prefixes share an address.
func Overlaps(a, b netip.Prefix) bool {
	return a.Overlaps(b)
}

// Pick returns the first block of /bits in clusterRange that overlaps none
// of avoid. A full range is an errdefs.ErrResourceExhausted error.
func Pick(clusterRange netip.Prefix, bits int, avoid []netip.Prefix) (netip.Prefix, error) {
	if bits < clusterRange.Bits() || bits > 32 {
		return netip.Prefix{}, errdefs.New(errdefs.ErrInvalidArgument, "node prefix /%d does not fit in %s", bits, clusterRange)
	}
	n := 1 << (bits - clusterRange.Bits())
	base := clusterRange.Masked().Addr().As4()
	start := uint32(base[0])<<24 | uint32(base[1])<<16 | uint32(base[2])<<8 | uint32(base[3])
	size := uint32(1) << (32 - bits)
	for i := range n {
		v := start + uint32(i)*size
		b := netip.PrefixFrom(netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)}), bits)
		free := true
		for _, p := range avoid {
			if p.IsValid() && b.Overlaps(p) {
				free = false
				break
			}
		}
		if free {
			return b, nil
		}
	}
	return netip.Prefix{}, errdefs.New(errdefs.ErrResourceExhausted,
		"cluster range %s is full: all %d blocks of /%d are claimed by other nodes or overlap this host's routes", clusterRange, n, bits)
}

// State is what a node keeps of its own claim across restarts.
type State struct {
	// Subnet is the block (CIDR).
	Subnet string `json:"subnet"`
	// Final is false while the claim is provisional.
	Final bool `json:"final"`
	// Since is when the claim became final.
	Since time.Time `json:"since,omitzero"`
}

// Load reads the state file; a missing file is the zero State.
func Load(path string) (State, error) {
	data, err := os.ReadFile(path)
	if os.IsNotExist(err) {
		return State{}, nil
	}
	if err != nil {
		return State{}, fmt.Errorf("read subnet claim: %w", err)
	}
	return Parse(data)
}

// Parse decodes and checks a state file's contents.
func Parse(data []byte) (State, error) {
	var s State
	if err := json.Unmarshal(data, &s); err != nil {
		return State{}, fmt.Errorf("decode subnet claim: %w", err)
	}
	if s.Subnet != "" {
		p, err := netip.ParsePrefix(s.Subnet)
		if err != nil || !p.Addr().Is4() || p.Masked() != p {
			return State{}, fmt.Errorf("decode subnet claim: %q is not an IPv4 block", s.Subnet)
		}
	}
	return s, nil
}

// Save writes the state file atomically and durably.
func Save(path string, s State) error {
	data, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return fmt.Errorf("encode subnet claim: %w", err)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return fmt.Errorf("save subnet claim: %w", err)
	}
	if err := atomicfile.Write(path, append(data, '\n'), 0o600); err != nil {
		return fmt.Errorf("save subnet claim: %w", err)
	}
	return nil
}
