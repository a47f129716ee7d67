package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"stellar.dev/api/client"
	"stellar.dev/api/errdefs"
	"stellar.dev/api/gossipapi"
	"stellar.dev/api/netapi"
	"stellar.dev/daemon"
	"stellar.dev/daemon/config"
	"stellar.dev/daemon/metrics"
	"stellar.dev/stellar-netd/claim"
	"stellar.dev/stellar-netd/hostnet"
	"stellar.dev/stellar-netd/ipam"
)

const (
	// claimGrace is how long a node that has met nobody waits before its
	// provisional claim becomes final.
	claimGrace = 30 * time.Second
	// checkInterval is how often the host networking and the routes are
	// checked and repaired without any event.
	checkInterval = 5 * time.Second
	// gossipInterval is how often membership and claims are read.
	gossipInterval = 2 * time.Second
)

// service is stellar-netd's work: the claim, the host networking, the
// routes and the IPAM API.
type service struct {
	env     *daemon.Env
	cfg     config.Config
	log     *slog.Logger
	cluster netip.Prefix
	dns     netip.Addr
	gossip  *gossipapi.Client
	poke    chan struct{}
	started time.Time
	// table is netd's nftables table, reloaded only when it changed.
	table hostnet.Table

	allocs     *metrics.CounterVec
	allocTotal *metrics.GaugeVec

	mu         sync.Mutex
	state      claim.State
	alloc      *ipam.Allocator
	members    []gossipapi.Member
	peerClaims map[string]netapi.Claim
	gossipOK   bool
	gossipSeen bool
	reason     string
	routes     []netapi.Route
	hostErr    string
	hostReady  bool
	published  *netapi.Claim
	tagged     string
	// selfKey and selfTag are what gossip holds for this node: when they
	// differ from the claim (gossip lost or restored its state), netd
	// publishes again.
	selfKey string
	selfTag string
	// lastPublish is when the claim was last sent, so that a tag gossip
	// has not shown yet is not sent again at every pass.
	lastPublish time.Time
}

func newService(env *daemon.Env) *service {
	cfg := env.Config
	s := &service{
		env: env, cfg: cfg, log: env.Log,
		cluster:    netip.MustParsePrefix(cfg.Network.Subnet),
		dns:        netip.MustParseAddr(cfg.Network.DNSAddress),
		gossip:     gossipapi.New(client.Unix("stellar-gossip", cfg.Socket("gossip")).WithTimeout(5 * time.Second)),
		poke:       make(chan struct{}, 1),
		peerClaims: map[string]netapi.Claim{},
		allocs:     env.Metrics.Counter("stellar_netd_ipam_calls_total", "IPAM calls by operation and result.", "op", "result"),
		allocTotal: env.Metrics.Gauge("stellar_netd_allocations", "Container IPs allocated on this node."),
	}
	return s
}

func (s *service) stateDir() string { return s.cfg.StateDirOf("netd") }

func (s *service) claimPath() string { return filepath.Join(s.stateDir(), "claim.json") }

// Run loads the claim and the allocations, serves, and reconciles until
// ctx is done.
func (s *service) Run(ctx context.Context, ready func()) error {
	s.started = time.Now()
	if err := os.MkdirAll(s.stateDir(), 0o700); err != nil {
		return fmt.Errorf("create state dir: %w", err)
	}
	st, err := claim.Load(s.claimPath())
	if err != nil {
		// Never throw a claim away: the operator must look at the file.
		return fmt.Errorf("load subnet claim %s: %w", s.claimPath(), err)
	}
	s.state = st
	if st.Final {
		if err := s.openAllocator(netip.MustParsePrefix(st.Subnet)); err != nil {
			return err
		}
		s.log.Info("kept subnet claim from before the restart", "subnet", st.Subnet, "allocations", s.alloc.Len())
	}
	s.routesAPI()
	ready()

	go s.gossipLoop(ctx)
	go s.watchLoop(ctx)
	t := time.NewTicker(checkInterval)
	defer t.Stop()
	for {
		s.reconcile(ctx)
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		case <-s.poke:
		}
	}
}

// Health fails only when the allocations cannot be served.
func (s *service) Health(ctx context.Context) error { return nil }

func (s *service) kick() {
	select {
	case s.poke <- struct{}{}:
	default:
	}
}

func (s *service) openAllocator(block netip.Prefix) error {
	a := ipam.New(filepath.Join(s.stateDir(), "ipam"), block)
	if err := a.Load(); err != nil {
		return fmt.Errorf("load ip allocations: %w", err)
	}
	if f := a.Foreign(); len(f) > 0 {
		s.log.Warn("allocations outside this node's subnet are kept on disk but not served", "subnet", block, "ips", strings.Join(f, ","))
	}
	s.alloc = a
	s.allocTotal.With().Set(float64(a.Len()))
	return nil
}

// gossipLoop reads membership and claims from stellar-gossip, retrying
// forever: netd never waits for gossip to serve.
func (s *service) gossipLoop(ctx context.Context) {
	t := time.NewTicker(gossipInterval)
	defer t.Stop()
	for {
		s.syncGossip(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// watchLoop turns gossip's watch events into prompt reconciles.
func (s *service) watchLoop(ctx context.Context) {
	for ctx.Err() == nil {
		err := s.gossip.Watch(ctx, "nodes/", 0, true, func(ev gossipapi.Event) error {
			if ev.Type == gossipapi.EventMember || (ev.Entry != nil && strings.HasSuffix(ev.Entry.Key, "/subnet")) {
				s.syncGossip(ctx)
			}
			return nil
		})
		if ctx.Err() != nil {
			return
		}
		s.log.Debug("gossip watch ended; retrying", "err", err)
		select {
		case <-ctx.Done():
		case <-time.After(gossipInterval):
		}
	}
}

func (s *service) syncGossip(ctx context.Context) {
	ms, err := s.gossip.Members(ctx)
	var list gossipapi.List
	if err == nil {
		list, err = s.gossip.List(ctx, "nodes/")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if err != nil {
		if s.gossipOK {
			s.log.Warn("stellar-gossip is unreachable; keeping the last known peers", "err", err)
		}
		s.gossipOK = false
		return
	}
	claims := map[string]netapi.Claim{}
	s.selfKey, s.selfTag = "", ""
	for _, m := range ms {
		if m.Name == s.cfg.Node.Name {
			s.selfTag = m.Subnet
		}
	}
	for _, e := range list.Entries {
		parts := strings.Split(e.Key, "/")
		if len(parts) != 3 || parts[2] != "subnet" {
			continue
		}
		if parts[1] == s.cfg.Node.Name {
			var c netapi.Claim
			if json.Unmarshal(e.Value, &c) == nil {
				s.selfKey = c.Subnet
			}
			continue
		}
		var c netapi.Claim
		if json.Unmarshal(e.Value, &c) != nil {
			continue
		}
		if _, err := netip.ParsePrefix(c.Subnet); err != nil {
			continue
		}
		c.Node = parts[1]
		claims[c.Node] = c
	}
	changed := !s.gossipOK || !sameMembers(s.members, ms) || !sameClaims(s.peerClaims, claims)
	if !s.gossipOK {
		s.log.Info("connected to stellar-gossip", "members", len(ms))
	}
	s.gossipOK, s.gossipSeen = true, true
	s.members, s.peerClaims = ms, claims
	if changed {
		s.kick()
	}
}

func sameMembers(a, b []gossipapi.Member) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i].Name != b[i].Name || a[i].Addr != b[i].Addr || a[i].Status != b[i].Status || a[i].Subnet != b[i].Subnet {
			return false
		}
	}
	return true
}

func sameClaims(a, b map[string]netapi.Claim) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		w, ok := b[k]
		if !ok || w.Subnet != v.Subnet || (w.Allocations > 0) != (v.Allocations > 0) {
			return false
		}
	}
	return true
}

// peer is another node's claim as netd uses it.
type peer struct {
	node   string
	addr   string
	status string
	subnet netip.Prefix
	allocs int
}

// peersLocked merges members and claim keys: the tag is the fastest source
// of a peer's subnet, the key carries whether it is established.
func (s *service) peersLocked() []peer {
	seen := map[string]bool{}
	var out []peer
	for _, m := range s.members {
		if m.Name == s.cfg.Node.Name {
			continue
		}
		seen[m.Name] = true
		p := peer{node: m.Name, addr: m.Addr, status: m.Status}
		c, hasClaim := s.peerClaims[m.Name]
		sub := m.Subnet
		if hasClaim {
			p.allocs = c.Allocations
			if sub == "" {
				sub = c.Subnet
			}
		}
		if pf, err := netip.ParsePrefix(sub); err == nil {
			p.subnet = pf.Masked()
		}
		out = append(out, p)
	}
	for n, c := range s.peerClaims {
		if seen[n] {
			continue
		}
		out = append(out, peer{node: n, status: "", subnet: netip.MustParsePrefix(c.Subnet).Masked(), allocs: c.Allocations})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].node < out[j].node })
	return out
}

func (s *service) selfAddrLocked() string {
	for _, m := range s.members {
		if m.Name == s.cfg.Node.Name {
			return m.Addr
		}
	}
	return ""
}

// reconcile runs one pass: the claim, publishing it, the host networking
// and the routes.
func (s *service) reconcile(ctx context.Context) {
	hostRoutes, err := hostnet.HostRoutes(s.cfg.Network.Bridge)
	if err != nil {
		s.log.Debug("read host routes", "err", err)
	}
	s.mu.Lock()
	changed := s.claimStepLocked(hostRoutes)
	final := s.state.Final
	block, _ := netip.ParsePrefix(s.state.Subnet)
	s.mu.Unlock()
	if changed {
		s.kick()
	}
	if !final {
		return
	}
	s.publish(ctx, block)
	s.host(ctx, block)
	s.syncRoutes(block)
}

// claimStepLocked moves the claim forward; it returns true when the
// claim changed.
func (s *service) claimStepLocked(hostRoutes []netip.Prefix) bool {
	bits := s.cfg.Network.NodePrefix
	var others []netip.Prefix
	for _, p := range s.peersLocked() {
		if p.subnet.IsValid() {
			others = append(others, p.subnet)
		}
	}
	avoid := append(append([]netip.Prefix{}, hostRoutes...), others...)
	save := func() {
		if err := claim.Save(s.claimPath(), s.state); err != nil {
			s.log.Error("save subnet claim", "err", err)
		}
	}
	if s.state.Subnet == "" || !s.state.Final {
		cur, _ := netip.ParsePrefix(s.state.Subnet)
		if !cur.IsValid() || overlapsAny(cur, avoid) {
			b, err := claim.Pick(s.cluster, bits, avoid)
			if err != nil {
				if s.reason != err.Error() {
					s.log.Error("pick a subnet", "err", err)
				}
				s.reason = err.Error()
				return false
			}
			for _, h := range hostRoutes {
				if h.Overlaps(s.cluster) {
					s.log.Warn("skipping blocks that overlap a host route", "route", h)
				}
			}
			s.state = claim.State{Subnet: b.String()}
			save()
			s.log.Info("picked a provisional subnet", "subnet", b)
		}
		joined := s.gossipOK && countAlive(s.members, s.cfg.Node.Name) > 0
		alone := time.Since(s.started) >= claimGrace
		if !joined && !alone {
			s.reason = fmt.Sprintf("provisional until this node meets the cluster or has been alone for %s", claimGrace)
			return false
		}
		s.state.Final, s.state.Since = true, time.Now().UTC()
		save()
		if err := s.openAllocator(netip.MustParsePrefix(s.state.Subnet)); err != nil {
			s.log.Error("open allocator", "err", err)
			s.state.Final = false
			return false
		}
		s.reason = ""
		how := "met the cluster"
		if !joined {
			how = "alone for the grace period"
		}
		s.log.Info("claimed subnet", "subnet", s.state.Subnet, "how", how)
		return true
	}
	// A final claim: resolve conflicts with peers' claims.
	mine := claim.Claim{Node: s.cfg.Node.Name, Subnet: netip.MustParsePrefix(s.state.Subnet), Allocations: s.alloc.Len()}
	for _, p := range s.peersLocked() {
		if !p.subnet.IsValid() || !p.subnet.Overlaps(mine.Subnet) || p.status == gossipapi.StatusLeft {
			continue
		}
		theirs := claim.Claim{Node: p.node, Subnet: p.subnet, Allocations: p.allocs}
		if claim.Beats(mine, theirs) {
			continue
		}
		b, err := claim.Pick(s.cluster, bits, avoid)
		if err != nil {
			// No block left: stop allocating from the lost one and wait,
			// provisional, for a block to free up.
			s.reason = fmt.Sprintf("lost %s to %s and %v", mine.Subnet, p.node, err)
			s.log.Error("lost subnet claim and cannot pick another", "subnet", mine.Subnet, "winner", p.node, "err", err)
			s.state.Final = false
			save()
			s.alloc = nil
			return true
		}
		s.log.Warn("lost subnet claim to another node; picking again", "subnet", mine.Subnet, "winner", p.node,
			"allocations", mine.Allocations, "new_subnet", b)
		s.state = claim.State{Subnet: b.String(), Final: true, Since: time.Now().UTC()}
		save()
		if err := s.openAllocator(b); err != nil {
			s.log.Error("open allocator", "err", err)
		}
		return true
	}
	return false
}

func overlapsAny(p netip.Prefix, ps []netip.Prefix) bool {
	for _, q := range ps {
		if q.IsValid() && p.Overlaps(q) {
			return true
		}
	}
	return false
}

func countAlive(ms []gossipapi.Member, self string) int {
	n := 0
	for _, m := range ms {
		if m.Name != self && m.Status == gossipapi.StatusAlive {
			n++
		}
	}
	return n
}

// publish writes the claim under nodes/<node>/subnet and in the tags when
// it changed.
func (s *service) publish(ctx context.Context, block netip.Prefix) {
	s.mu.Lock()
	c := netapi.Claim{Node: s.cfg.Node.Name, Subnet: block.String(), Since: s.state.Since, Allocations: s.alloc.Len()}
	stale := time.Since(s.lastPublish) > 30*time.Second
	need := s.gossipOK && (s.published == nil || s.published.Subnet != c.Subnet ||
		(s.published.Allocations > 0) != (c.Allocations > 0) || (stale && s.selfKey != c.Subnet))
	needTag := s.gossipOK && (s.tagged != c.Subnet || (stale && s.selfTag != c.Subnet))
	if need || needTag {
		s.lastPublish = time.Now()
	}
	s.mu.Unlock()
	if need {
		if _, err := s.gossip.Put(ctx, "nodes/"+s.cfg.Node.Name+"/subnet", c, ""); err != nil {
			s.log.Warn("publish subnet claim", "err", err)
		} else {
			s.mu.Lock()
			s.published, s.selfKey = &c, c.Subnet
			s.mu.Unlock()
		}
	}
	if needTag {
		if err := s.gossip.SetSubnet(ctx, c.Subnet); err != nil {
			s.log.Warn("publish subnet tag", "err", err)
		} else {
			s.mu.Lock()
			s.tagged, s.selfTag = c.Subnet, c.Subnet
			s.mu.Unlock()
		}
	}
}

// host sets up the bridge, forwarding, masquerade, the DNS address and the
// CNI configuration.
func (s *service) host(ctx context.Context, block netip.Prefix) {
	gw := netip.PrefixFrom(block.Addr().Next(), block.Bits())
	var errs []error
	if err := hostnet.EnsureBridge(s.cfg.Network.Bridge, gw, s.cluster); err != nil {
		errs = append(errs, err)
	}
	if err := hostnet.EnableForwarding(); err != nil {
		errs = append(errs, err)
	}
	if loaded, err := s.table.Ensure(ctx, block, s.cluster, s.cfg.Network.Bridge); err != nil {
		errs = append(errs, err)
	} else if loaded {
		s.log.Debug("loaded the nftables table", "table", hostnet.NftTable, "subnet", block)
	}
	if err := hostnet.EnsureDNSAddress(s.dns); err != nil {
		errs = append(errs, err)
	}
	if err := writeCNIConf(s.cfg); err != nil {
		errs = append(errs, err)
	}
	err := errors.Join(errs...)
	s.mu.Lock()
	defer s.mu.Unlock()
	msg := ""
	if err != nil {
		msg = err.Error()
	}
	if msg != s.hostErr {
		if err != nil {
			s.log.Error("set up host networking", "err", err)
		} else {
			s.log.Info("host networking is set up", "bridge", s.cfg.Network.Bridge, "gateway", gw)
		}
	}
	s.hostErr, s.hostReady = msg, err == nil
}

// syncRoutes keeps one route per alive peer with a subnet.
func (s *service) syncRoutes(block netip.Prefix) {
	s.mu.Lock()
	if !s.gossipSeen {
		// Never drop routes before the peers are known.
		s.mu.Unlock()
		return
	}
	peers := s.peersLocked()
	s.mu.Unlock()
	var want []hostnet.Route
	for _, p := range peers {
		if p.status != gossipapi.StatusAlive && p.status != gossipapi.StatusSuspect {
			continue
		}
		if !p.subnet.IsValid() || p.subnet.Overlaps(block) || losesToOtherPeer(p, peers) {
			continue
		}
		via, err := netip.ParseAddr(p.addr)
		if err != nil || !via.Is4() {
			continue
		}
		want = append(want, hostnet.Route{Dst: p.subnet, Via: via, Node: p.node})
	}
	res, err := hostnet.SyncRoutes(want)
	if err != nil {
		s.log.Warn("sync routes", "err", err)
	}
	routes := make([]netapi.Route, 0, len(res))
	for _, r := range res {
		nr := netapi.Route{Destination: r.Dst.String(), Via: r.Via.String(), Node: r.Node, Status: netapi.StatusRouted}
		if r.Err != nil {
			nr.Status, nr.Reason = netapi.StatusUnroutable, r.Err.Error()
		}
		routes = append(routes, nr)
	}
	s.mu.Lock()
	if !sameRoutes(s.routes, routes) {
		for _, r := range routes {
			s.log.Info("route", "destination", r.Destination, "via", r.Via, "node", r.Node, "status", r.Status, "reason", r.Reason)
		}
	}
	s.routes = routes
	s.mu.Unlock()
}

func sameRoutes(a, b []netapi.Route) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// losesToOtherPeer reports whether p's block overlaps another peer's claim
// that beats it (such a peer is routed instead).
func losesToOtherPeer(p peer, peers []peer) bool {
	for _, q := range peers {
		if q.node == p.node || !q.subnet.IsValid() || !q.subnet.Overlaps(p.subnet) {
			continue
		}
		if q.status != gossipapi.StatusAlive && q.status != gossipapi.StatusSuspect {
			continue
		}
		if claim.Beats(claim.Claim{Node: q.node, Subnet: q.subnet, Allocations: q.allocs}, claim.Claim{Node: p.node, Subnet: p.subnet, Allocations: p.allocs}) {
			return true
		}
	}
	return false
}

// errNoClaim says why IPAM cannot serve yet.
func (s *service) errNoClaimLocked() error {
	r := s.reason
	if r == "" {
		r = "no subnet is claimed yet"
	}
	return errdefs.New(errdefs.ErrUnavailable, "this node has no subnet to allocate from yet: %s", r)
}
