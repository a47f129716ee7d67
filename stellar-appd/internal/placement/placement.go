// Package placement computes, with no master, which node runs each instance
// of a service: placement v1 of Stellar's design. Every node computes the
// same answer from the same view of the cluster.
package placement

import (
	"crypto/sha256"
	"encoding/binary"
	"slices"

	"stellar.dev/api/appapi"
)

// Version is the placement algorithm's version, published in the node's tags.
const Version = 1

// Node is one node as placement sees it.
type Node struct {
	Name   string
	Labels map[string]string
	// Eligible is false for nodes that must get nothing: failed for longer
	// than reschedule_after, left, returning and not yet stable, cordoned
	// or drained.
	Eligible bool
	// Declined lists "<app>/<service>" this node declined.
	Declined map[string]bool
}

// Score is H = the first 8 bytes, big-endian, of
// SHA-256("<app>\x00<service>\x00<node>").
func Score(app, service, node string) uint64 {
	h := sha256.Sum256([]byte(app + "\x00" + service + "\x00" + node))
	return binary.BigEndian.Uint64(h[:8])
}

// Rank returns the nodes eligible for the service, highest score first
// (ties, which need a hash collision, broken by name).
func Rank(app string, svc *appapi.Service, nodes []Node) []string {
	var ranked []string
	var allowed map[string]bool
	if len(svc.Placement.NodeIDs) > 0 {
		allowed = make(map[string]bool, len(svc.Placement.NodeIDs))
		for _, n := range svc.Placement.NodeIDs {
			allowed[n] = true
		}
	}
	for _, n := range nodes {
		if !n.Eligible || n.Declined[app+"/"+svc.Name] {
			continue
		}
		if allowed != nil && !allowed[n.Name] {
			continue
		}
		if !labelsMatch(svc.Placement.Labels, n.Labels) {
			continue
		}
		ranked = append(ranked, n.Name)
	}
	slices.SortFunc(ranked, func(a, b string) int {
		sa, sb := Score(app, svc.Name, a), Score(app, svc.Name, b)
		switch {
		case sa > sb:
			return -1
		case sa < sb:
			return 1
		case a < b:
			return -1
		case a > b:
			return 1
		}
		return 0
	})
	return slices.Compact(ranked)
}

func labelsMatch(want, have map[string]string) bool {
	for k, v := range want {
		if hv, ok := have[k]; !ok || hv != v {
			return false
		}
	}
	return true
}

// Place returns the node of each instance index of the service: instance i
// on ranked node i mod len(ranked); a global service gets one instance per
// ranked node (index i on ranked node i). An empty result means no node
// can run it.
func Place(app string, svc *appapi.Service, nodes []Node) []string {
	ranked := Rank(app, svc, nodes)
	if len(ranked) == 0 {
		return nil
	}
	if svc.Global {
		return ranked
	}
	n := svc.Count()
	out := make([]string, n)
	for i := range n {
		out[i] = ranked[i%len(ranked)]
	}
	return out
}
