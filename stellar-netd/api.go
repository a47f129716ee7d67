package main

import (
	"net/http"
	"net/netip"
	"strings"
	"time"

	"stellar.dev/api/errdefs"
	"stellar.dev/api/gossipapi"
	"stellar.dev/api/netapi"
	"stellar.dev/daemon/httpapi"
	"stellar.dev/stellar-netd/ipam"
)

// routesAPI registers netd's handlers on the API mux.
func (s *service) routesAPI() {
	m := s.env.Mux
	m.Handle("POST /v1/ipam/allocate", httpapi.Handle(s.handleAllocate))
	m.Handle("POST /v1/ipam/release", httpapi.Handle(s.handleRelease))
	m.Handle("POST /v1/ipam/check", httpapi.Handle(s.handleCheck))
	m.Handle("POST /v1/ipam/gc", httpapi.Handle(s.handleGC))
	m.Handle("GET /v1/ipam/allocations", httpapi.Handle(s.handleList))
	m.Handle("GET /v1/subnets", httpapi.Handle(s.handleSubnets))
	m.Handle("GET /v1/routes", httpapi.Handle(s.handleRoutes))
	m.Handle("GET /v1/status", httpapi.Handle(s.handleStatus))
}

func (s *service) allocator() (*ipam.Allocator, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.alloc == nil {
		return nil, s.errNoClaimLocked()
	}
	return s.alloc, nil
}

func (s *service) toWire(a *ipam.Allocator, e ipam.Entry) netapi.Allocation {
	return netapi.Allocation{
		ContainerID: e.ContainerID, IfName: e.IfName,
		Address:      netip.PrefixFrom(e.IP, a.Block().Bits()).String(),
		Gateway:      a.Gateway().String(),
		Subnet:       a.Block().String(),
		ClusterRange: s.cluster.String(),
		DNS:          s.dns.String(),
		Created:      e.Created,
	}
}

func (s *service) count(op string, err error) {
	res := "ok"
	if err != nil {
		res = errdefs.Code(err)
	}
	s.allocs.With(op, res).Inc()
}

func (s *service) handleAllocate(w http.ResponseWriter, r *http.Request) (err error) {
	defer func() { s.count("allocate", err) }()
	var req netapi.AllocateRequest
	if err := httpapi.DecodeJSON(r, &req); err != nil {
		return err
	}
	if err := ipam.ValidateID(req.ContainerID, req.IfName); err != nil {
		return err
	}
	a, err := s.allocator()
	if err != nil {
		return err
	}
	before := a.Len()
	e, err := a.Allocate(req.ContainerID, req.IfName, time.Now())
	if err != nil {
		return err
	}
	s.allocTotal.With().Set(float64(a.Len()))
	if before == 0 {
		s.kick() // the claim is now established: publish it
	}
	httpapi.WriteJSON(w, http.StatusOK, s.toWire(a, e))
	return nil
}

func (s *service) handleRelease(w http.ResponseWriter, r *http.Request) (err error) {
	defer func() { s.count("release", err) }()
	var req netapi.ReleaseRequest
	if err := httpapi.DecodeJSON(r, &req); err != nil {
		return err
	}
	ifn := req.IfName
	if ifn == "" {
		ifn = "x"
	}
	if err := ipam.ValidateID(req.ContainerID, ifn); err != nil {
		return err
	}
	res := netapi.ReleaseResult{Released: []netapi.Allocation{}}
	s.mu.Lock()
	a := s.alloc
	s.mu.Unlock()
	if a != nil {
		es, err := a.Release(req.ContainerID, req.IfName)
		for _, e := range es {
			res.Released = append(res.Released, s.toWire(a, e))
		}
		if err != nil {
			return err
		}
		s.allocTotal.With().Set(float64(a.Len()))
	}
	httpapi.WriteJSON(w, http.StatusOK, res)
	return nil
}

func (s *service) handleCheck(w http.ResponseWriter, r *http.Request) (err error) {
	defer func() { s.count("check", err) }()
	var req netapi.CheckRequest
	if err := httpapi.DecodeJSON(r, &req); err != nil {
		return err
	}
	if err := ipam.ValidateID(req.ContainerID, req.IfName); err != nil {
		return err
	}
	a, err := s.allocator()
	if err != nil {
		return err
	}
	e, ok := a.Get(req.ContainerID, req.IfName)
	if !ok {
		return errdefs.New(errdefs.ErrNotFound, "container %s interface %s has no IP in %s", req.ContainerID, req.IfName, a.Block())
	}
	if req.Address != "" {
		want := req.Address
		if i := strings.IndexByte(want, '/'); i >= 0 {
			want = want[:i]
		}
		ip, perr := netip.ParseAddr(want)
		if perr != nil {
			return errdefs.New(errdefs.ErrInvalidArgument, "address %q is not an IP address", req.Address)
		}
		if ip != e.IP {
			return errdefs.New(errdefs.ErrConflict, "container %s interface %s holds %s, not %s", req.ContainerID, req.IfName, e.IP, ip)
		}
	}
	httpapi.WriteJSON(w, http.StatusOK, s.toWire(a, e))
	return nil
}

func (s *service) handleGC(w http.ResponseWriter, r *http.Request) (err error) {
	defer func() { s.count("gc", err) }()
	var req netapi.GCRequest
	if err := httpapi.DecodeJSON(r, &req); err != nil {
		return err
	}
	live := map[string]bool{}
	for _, c := range req.Containers {
		live[c] = true
	}
	att := map[[2]string]bool{}
	for _, a := range req.Attachments {
		att[[2]string{a.ContainerID, a.IfName}] = true
	}
	res := netapi.GCResult{Released: []netapi.Allocation{}}
	s.mu.Lock()
	a := s.alloc
	s.mu.Unlock()
	if a != nil {
		es, kept, err := a.GC(func(e ipam.Entry) bool {
			return live[e.ContainerID] || att[[2]string{e.ContainerID, e.IfName}]
		})
		for _, e := range es {
			res.Released = append(res.Released, s.toWire(a, e))
		}
		res.Kept = kept
		if err != nil {
			return err
		}
		s.allocTotal.With().Set(float64(a.Len()))
		if len(es) > 0 {
			s.log.Info("gc released unused ips", "released", len(es), "kept", kept)
		}
	}
	httpapi.WriteJSON(w, http.StatusOK, res)
	return nil
}

func (s *service) handleList(w http.ResponseWriter, r *http.Request) error {
	out := []netapi.Allocation{}
	s.mu.Lock()
	a := s.alloc
	s.mu.Unlock()
	if a != nil {
		for _, e := range a.List() {
			out = append(out, s.toWire(a, e))
		}
	}
	httpapi.WriteJSON(w, http.StatusOK, out)
	return nil
}

func (s *service) handleSubnets(w http.ResponseWriter, r *http.Request) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := []netapi.Subnet{}
	self := netapi.Subnet{Node: s.cfg.Node.Name, Subnet: s.state.Subnet, Address: s.selfAddrLocked(), Self: true, Status: netapi.StatusProvisional, Reason: s.reason}
	if s.state.Final {
		self.Status = netapi.StatusClaimed
	}
	out = append(out, self)
	routes := map[string]netapi.Route{}
	for _, rt := range s.routes {
		routes[rt.Node] = rt
	}
	mine, _ := netip.ParsePrefix(s.state.Subnet)
	peers := s.peersLocked()
	for _, p := range peers {
		sn := netapi.Subnet{Node: p.node, Address: p.addr}
		if p.subnet.IsValid() {
			sn.Subnet = p.subnet.String()
		}
		switch {
		case !p.subnet.IsValid():
			sn.Status, sn.Reason = netapi.StatusPending, "no subnet claimed yet"
		case p.status != gossipapi.StatusAlive && p.status != gossipapi.StatusSuspect:
			sn.Status = netapi.StatusDown
			sn.Reason = "member is " + orUnknown(p.status)
		case mine.IsValid() && s.state.Final && p.subnet.Overlaps(mine):
			sn.Status, sn.Reason = netapi.StatusConflict, "overlaps this node's "+mine.String()
		case losesToOtherPeer(p, peers):
			sn.Status, sn.Reason = netapi.StatusConflict, "overlaps another node's claim that wins"
		default:
			if rt, ok := routes[p.node]; ok {
				sn.Status, sn.Reason = rt.Status, rt.Reason
			} else {
				sn.Status, sn.Reason = netapi.StatusPending, "route not set yet"
			}
		}
		out = append(out, sn)
	}
	httpapi.WriteJSON(w, http.StatusOK, out)
	return nil
}

func orUnknown(s string) string {
	if s == "" {
		return "not a known member"
	}
	return s
}

func (s *service) handleRoutes(w http.ResponseWriter, r *http.Request) error {
	s.mu.Lock()
	out := append([]netapi.Route{}, s.routes...)
	s.mu.Unlock()
	httpapi.WriteJSON(w, http.StatusOK, out)
	return nil
}

func (s *service) handleStatus(w http.ResponseWriter, r *http.Request) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := netapi.Status{
		Node: s.cfg.Node.Name, Subnet: s.state.Subnet, ClaimStatus: netapi.StatusProvisional, Reason: s.reason,
		Bridge: s.cfg.Network.Bridge, ClusterRange: s.cluster.String(), Gossip: s.gossipOK,
		HostReady: s.hostReady, HostError: s.hostErr,
	}
	if s.state.Final {
		st.ClaimStatus = netapi.StatusClaimed
	}
	if s.alloc != nil {
		st.Gateway = s.alloc.Gateway().String()
		st.Allocations = s.alloc.Len()
		st.Capacity = ipam.Capacity(s.alloc.Block())
	}
	httpapi.WriteJSON(w, http.StatusOK, st)
	return nil
}
