// Package netapi is the wire contract of stellar-netd's local API
// (netd.sock): the node's subnet claim, routes to peers and container IP
// allocations (IPAM), used by stellar-cni-ipam, stellar-appd and sctl.
//
// Endpoints:
//
//	POST /v1/ipam/allocate  AllocateRequest -> Allocation (idempotent per container and interface)
//	POST /v1/ipam/release   ReleaseRequest  -> ReleaseResult (unknown is not an error)
//	POST /v1/ipam/check     CheckRequest    -> Allocation (not_found when it has none)
//	POST /v1/ipam/gc        GCRequest       -> GCResult
//	GET  /v1/ipam/allocations               -> []Allocation
//	GET  /v1/subnets                        -> []Subnet
//	GET  /v1/routes                         -> []Route
//	GET  /v1/status                         -> Status
package netapi

import "time"

// Subnet claim states, as shown by Subnet.Status.
const (
	// StatusProvisional: the block is picked but not yet claimed (the node
	// has not met the cluster nor stayed alone for the grace period).
	StatusProvisional = "provisional"
	// StatusClaimed: this node's established claim.
	StatusClaimed = "claimed"
	// StatusRouted: a peer whose route is in place.
	StatusRouted = "routed"
	// StatusUnroutable: a peer whose route the kernel refused (not on a
	// shared link); Reason says why.
	StatusUnroutable = "unroutable"
	// StatusConflict: a peer claiming a block that overlaps another claim.
	StatusConflict = "conflict"
	// StatusDown: a peer that is not alive (no route).
	StatusDown = "down"
	// StatusPending: a peer with a claim but no usable address yet.
	StatusPending = "pending"
)

// Claim is the value netd publishes under nodes/<node>/subnet.
type Claim struct {
	// Node is the owner.
	Node string `json:"node"`
	// Subnet is the claimed block (CIDR).
	Subnet string `json:"subnet"`
	// Since is when the claim became final.
	Since time.Time `json:"since"`
	// Allocations is how many container IPs the owner holds in it: a claim
	// with allocations is established and beats a new one.
	Allocations int `json:"allocations"`
}

// AllocateRequest asks for an IP for one container interface.
type AllocateRequest struct {
	// ContainerID is the CNI container ID.
	ContainerID string `json:"container_id"`
	// IfName is the interface inside the container (e.g. eth0).
	IfName string `json:"if_name"`
	// Netns is the container's network namespace path (informational).
	Netns string `json:"netns,omitempty"`
}

// Allocation is one container interface's IP.
type Allocation struct {
	ContainerID string `json:"container_id"`
	IfName      string `json:"if_name"`
	// Address is the IP with the block's prefix length (CIDR), e.g. 172.16.0.2/22.
	Address string `json:"address"`
	// Gateway is the bridge's address, the first IP of the block.
	Gateway string `json:"gateway"`
	// Subnet is the node's block.
	Subnet string `json:"subnet"`
	// ClusterRange is the whole cluster range.
	ClusterRange string `json:"cluster_range"`
	// DNS is the cluster DNS address for the container's resolv.conf.
	DNS string `json:"dns,omitempty"`
	// Created is when the IP was allocated.
	Created time.Time `json:"created"`
}

// ReleaseRequest frees the IP of a container interface; an empty IfName
// frees every interface of the container.
type ReleaseRequest struct {
	ContainerID string `json:"container_id"`
	IfName      string `json:"if_name,omitempty"`
}

// ReleaseResult lists what was freed (empty when nothing was known).
type ReleaseResult struct {
	Released []Allocation `json:"released"`
}

// CheckRequest asks whether a container interface still holds its IP.
// With Address set, it must be that IP (CIDR or bare).
type CheckRequest struct {
	ContainerID string `json:"container_id"`
	IfName      string `json:"if_name"`
	Address     string `json:"address,omitempty"`
}

// Attachment names one container interface.
type Attachment struct {
	ContainerID string `json:"container_id"`
	IfName      string `json:"if_name"`
}

// GCRequest frees every allocation that is not in use: an allocation is
// kept when its container is in Containers or its container and interface
// are in Attachments.
type GCRequest struct {
	Containers  []string     `json:"containers"`
	Attachments []Attachment `json:"attachments,omitempty"`
}

// GCResult lists what GC freed.
type GCResult struct {
	Released []Allocation `json:"released"`
	Kept     int          `json:"kept"`
}

// Subnet is one node's block as this node sees it.
type Subnet struct {
	Node    string `json:"node"`
	Subnet  string `json:"subnet"`
	Address string `json:"address"`
	// Status is one of the Status constants.
	Status string `json:"status"`
	// Reason explains a conflict, an unroutable peer or a provisional claim.
	Reason string `json:"reason,omitempty"`
	// Self is true for this node.
	Self bool `json:"self,omitempty"`
}

// Route is one static route netd keeps (its own protocol number).
type Route struct {
	Destination string `json:"destination"`
	Via         string `json:"via"`
	Node        string `json:"node"`
	// Status is "routed" or "unroutable".
	Status string `json:"status"`
	Reason string `json:"reason,omitempty"`
}

// Status is netd's view of the node's networking.
type Status struct {
	Node         string `json:"node"`
	Subnet       string `json:"subnet,omitempty"`
	ClaimStatus  string `json:"claim_status"`
	Reason       string `json:"reason,omitempty"`
	Gateway      string `json:"gateway,omitempty"`
	Bridge       string `json:"bridge"`
	ClusterRange string `json:"cluster_range"`
	Allocations  int    `json:"allocations"`
	Capacity     int    `json:"capacity"`
	Gossip       bool   `json:"gossip"`
	// HostReady is true once the bridge, forwarding and masquerade are set.
	HostReady bool   `json:"host_ready"`
	HostError string `json:"host_error,omitempty"`
}
