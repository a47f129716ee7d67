package netapi

import (
	"context"
	"fmt"
	"net/http"

	"stellar.dev/api/client"
)

// Client is a typed client of netd.sock.
type Client struct {
	c *client.Client
}

// New wraps a base client pointed at stellar-netd.
func New(c *client.Client) *Client { return &Client{c: c} }

// Allocate returns the IP of a container interface, allocating one if it
// has none yet.
func (n *Client) Allocate(ctx context.Context, req AllocateRequest) (Allocation, error) {
	var a Allocation
	if err := n.c.Do(ctx, http.MethodPost, "/v1/ipam/allocate", req, &a); err != nil {
		return Allocation{}, fmt.Errorf("allocate ip for %s/%s: %w", req.ContainerID, req.IfName, err)
	}
	return a, nil
}

// Release frees the IP of a container interface (all of the container's
// with an empty IfName). Releasing an unknown one succeeds.
func (n *Client) Release(ctx context.Context, req ReleaseRequest) (ReleaseResult, error) {
	var r ReleaseResult
	if err := n.c.Do(ctx, http.MethodPost, "/v1/ipam/release", req, &r); err != nil {
		return ReleaseResult{}, fmt.Errorf("release ip of %s/%s: %w", req.ContainerID, req.IfName, err)
	}
	return r, nil
}

// Check returns the allocation of a container interface, or an
// errdefs.ErrNotFound error.
func (n *Client) Check(ctx context.Context, req CheckRequest) (Allocation, error) {
	var a Allocation
	if err := n.c.Do(ctx, http.MethodPost, "/v1/ipam/check", req, &a); err != nil {
		return Allocation{}, fmt.Errorf("check ip of %s/%s: %w", req.ContainerID, req.IfName, err)
	}
	return a, nil
}

// GC frees every allocation not named in req.
func (n *Client) GC(ctx context.Context, req GCRequest) (GCResult, error) {
	var r GCResult
	if err := n.c.Do(ctx, http.MethodPost, "/v1/ipam/gc", req, &r); err != nil {
		return GCResult{}, fmt.Errorf("collect unused ips: %w", err)
	}
	return r, nil
}

// Allocations lists the node's container IPs.
func (n *Client) Allocations(ctx context.Context) ([]Allocation, error) {
	var as []Allocation
	if err := n.c.Do(ctx, http.MethodGet, "/v1/ipam/allocations", nil, &as); err != nil {
		return nil, fmt.Errorf("list ip allocations: %w", err)
	}
	return as, nil
}

// Subnets lists every node's block as this node sees it.
func (n *Client) Subnets(ctx context.Context) ([]Subnet, error) {
	var ss []Subnet
	if err := n.c.Do(ctx, http.MethodGet, "/v1/subnets", nil, &ss); err != nil {
		return nil, fmt.Errorf("list subnets: %w", err)
	}
	return ss, nil
}

// Routes lists the static routes netd keeps.
func (n *Client) Routes(ctx context.Context) ([]Route, error) {
	var rs []Route
	if err := n.c.Do(ctx, http.MethodGet, "/v1/routes", nil, &rs); err != nil {
		return nil, fmt.Errorf("list routes: %w", err)
	}
	return rs, nil
}

// Status returns netd's view of the node's networking.
func (n *Client) Status(ctx context.Context) (Status, error) {
	var s Status
	if err := n.c.Do(ctx, http.MethodGet, "/v1/status", nil, &s); err != nil {
		return Status{}, fmt.Errorf("read network status: %w", err)
	}
	return s, nil
}
