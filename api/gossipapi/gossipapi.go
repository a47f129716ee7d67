// Package gossipapi is the wire contract of stellar-gossip's local API
// (gossip.sock): membership and the replicated cluster state.
//
// Keys of the cluster state come in two kinds:
//   - node-owned keys, "nodes/<node>/...": only that node writes them; each
//     carries the owner's sequence number. Conventional keys:
//     nodes/<node>/facts (NodeFacts), nodes/<node>/labels,
//     nodes/<node>/subnet (written by netd),
//     nodes/<node>/instances/<app>/<service>/<index> (written by appd).
//   - cluster keys (apps/..., dns/..., proxy/..., acme/..., schedule/...):
//     any node writes them; the highest version wins.
//
// Versions are opaque strings to clients: compare them only for equality
// (If-Match).
package gossipapi

import (
	"encoding/json"
	"time"
)

// Member statuses.
const (
	StatusAlive   = "alive"
	StatusSuspect = "suspect"
	StatusFailed  = "failed"
	StatusLeft    = "left"
)

// Member is one node of the cluster as this node sees it.
type Member struct {
	// Name is the node's identity; it never changes when its address does.
	Name string `json:"name"`
	// Addr is the node's advertised IP address.
	Addr string `json:"addr"`
	// Port is the node's serf port.
	Port int `json:"port"`
	// PeerAPI is host:port of the node's peer port.
	PeerAPI string `json:"peer_api,omitempty"`
	// Status is alive, suspect, failed or left.
	Status string `json:"status"`
	// Subnet is the node's container subnet (CIDR), empty until claimed.
	Subnet string `json:"subnet,omitempty"`
	// Labels are the node's labels ("k" -> "v").
	Labels map[string]string `json:"labels,omitempty"`
	// Facts are the node's facts, when known.
	Facts *NodeFacts `json:"facts,omitempty"`
	// Tags are the raw serf tags.
	Tags map[string]string `json:"tags,omitempty"`
}

// NodeFacts describe a node's host; the node publishes them under
// nodes/<node>/facts.
type NodeFacts struct {
	OS          string    `json:"os"`
	Kernel      string    `json:"kernel"`
	CPUs        int       `json:"cpus"`
	MemoryTotal uint64    `json:"memory_total"` // bytes
	MemoryUsed  uint64    `json:"memory_used"`  // bytes
	Started     time.Time `json:"started"`      // when stellar-gossip started
	Booted      time.Time `json:"booted"`       // when the host booted
}

// Entry is one key of the cluster state.
type Entry struct {
	Key string `json:"key"`
	// Value is the stored JSON document.
	Value json.RawMessage `json:"value,omitempty"`
	// Version identifies this write; send it back in If-Match.
	Version string `json:"version"`
	// Owner is the owning node of a node-owned key; empty for cluster keys.
	Owner string `json:"owner,omitempty"`
	// OwnerFailed is true while the owner of a node-owned key is failed:
	// consumers such as DNS and the proxy stop using the key at once.
	OwnerFailed bool `json:"owner_failed,omitempty"`
	// Rev is this node's local store revision at which the key last changed.
	Rev uint64 `json:"rev"`
}

// List is the answer of GET /v1/state?prefix=P.
type List struct {
	// Rev is the local revision the list was read at: watch from Rev+1.
	Rev     uint64  `json:"rev"`
	Entries []Entry `json:"entries"`
}

// Event kinds on a watch stream.
const (
	EventPut    = "put"    // a key was written (Entry set)
	EventDelete = "delete" // a key was deleted (Entry.Key, Entry.Rev set)
	EventFlag   = "flag"   // Entry.OwnerFailed changed
	EventMember = "member" // a member changed (Member set)
)

// Event is one line of GET /v1/watch.
type Event struct {
	Type   string  `json:"type"`
	Entry  *Entry  `json:"entry,omitempty"`
	Member *Member `json:"member,omitempty"`
	// Rev is the local revision of a state event.
	Rev uint64 `json:"rev,omitempty"`
}

// PutResult is the answer of PUT /v1/state/{key}: the version that won.
type PutResult struct {
	Key     string `json:"key"`
	Version string `json:"version"`
	Rev     uint64 `json:"rev"`
}

// SubnetTag is the body of PUT /v1/tags/subnet, sent by netd.
type SubnetTag struct {
	Subnet string `json:"subnet"`
}
