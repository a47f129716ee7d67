package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"stellar.dev/api/client"
	"stellar.dev/api/gossipapi"
	"stellar.dev/daemon"
	"stellar.dev/daemon/config"
	"stellar.dev/daemon/metrics"
	"stellar.dev/stellar-dnsd/internal/forward"
	"stellar.dev/stellar-dnsd/internal/mirror"
	"stellar.dev/stellar-dnsd/internal/server"
	"stellar.dev/stellar-dnsd/internal/zone"
)

// upstreamTimeout bounds the wait for one upstream server.
const upstreamTimeout = 2 * time.Second

// service is stellar-dnsd's work: the DNS server, the mirror of the
// cluster state that feeds its zone, and the local API.
type service struct {
	env    *daemon.Env
	log    *slog.Logger
	gossip *gossipapi.Client
	h      *server.Handler
	srv    *server.Server
	mirror *mirror.Mirror

	mu     sync.Mutex
	cfg    config.DNS
	own    []string // Stellar's own DNS addresses: never upstreams
	fwd    *forward.Forwarder
	serial uint32

	serveErr atomic.Pointer[error]
}

func newService(env *daemon.Env) (daemon.Service, error) {
	cfg := env.Config
	s := &service{
		env:    env,
		log:    env.Log,
		gossip: gossipapi.New(client.Unix("stellar-gossip", cfg.Socket("gossip"))),
		cfg:    cfg.DNS,
		own:    append([]string{cfg.Network.DNSAddress}, cfg.DNS.Listen...),
		serial: uint32(time.Now().Unix()),
	}
	s.h = server.NewHandler(cfg.DNS.Domain, nil, env.Log)
	s.srv = server.New(s.h, server.DefaultLimits(), env.Log)
	s.mirror = mirror.New(s.gossip, mirror.DefaultConfig(), env.Log, s.rebuild)
	s.metrics()
	s.routes()
	return s, nil
}

// rebuild builds and swaps in a new zone from the mirror's copy.
func (s *service) rebuild(entries map[string]gossipapi.Entry, members map[string]string) {
	s.mu.Lock()
	s.serial++
	in := zone.Input{Domain: s.cfg.Domain, TTL: s.cfg.TTL, Serial: s.serial, Entries: entries, Members: members}
	s.mu.Unlock()
	z := zone.Build(in)
	st := z.Stats()
	if st.Skipped > 0 {
		s.log.Warn("left entries out of the zone", "count", st.Skipped, "first", st.Problems)
	}
	s.h.SetZone(z)
	s.log.Debug("zone rebuilt", "serial", z.Serial(), "names", st.Names, "instances", st.Instances, "custom", st.Custom)
}

// setUpstreams resolves the upstream servers of cfg and swaps them in.
func (s *service) setUpstreams(cfg config.DNS) error {
	ups, skipped, err := forward.Resolve(cfg.Upstream, cfg.UpstreamResolvConf, s.own)
	if err != nil {
		return err
	}
	if len(skipped) > 0 {
		s.log.Info("not forwarding to Stellar's own addresses", "skipped", skipped)
	}
	if len(ups) == 0 {
		s.log.Warn("no upstream name server: names outside the zone get SERVFAIL", "upstream_resolv_conf", cfg.UpstreamResolvConf)
	} else {
		s.log.Info("forwarding to upstream servers", "upstreams", ups)
	}
	f := forward.New(ups, upstreamTimeout)
	s.mu.Lock()
	s.fwd = f
	s.mu.Unlock()
	s.h.SetForwarder(f)
	return nil
}

func (s *service) upstreams() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.fwd == nil {
		return nil
	}
	return s.fwd.Upstreams()
}

// Run serves DNS on the "dns" sockets, keeps the zone in step with the
// cluster state, and stops when ctx is done.
func (s *service) Run(ctx context.Context, ready func()) error {
	if err := s.setUpstreams(s.cfg); err != nil {
		// A missing resolv.conf must not keep the zone from being served.
		s.log.Warn("no upstream name servers", "err", err)
		s.h.SetForwarder(nil)
	}
	pcs := s.env.Sockets.PacketConns("dns")
	ls := s.env.Sockets.Listeners("dns")
	if len(pcs) == 0 && len(ls) == 0 {
		return errors.New("serve dns: no dns sockets (check [dns] listen or stellar-dnsd.socket)")
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	fail := func(err error) {
		if err != nil && ctx.Err() == nil {
			s.serveErr.Store(&err)
			cancel()
		}
	}
	for _, pc := range pcs {
		wg.Add(1)
		go func(pc net.PacketConn) {
			defer wg.Done()
			fail(s.srv.ServeUDP(ctx, pc))
		}(pc)
		s.log.Info("serving dns", "proto", "udp", "addr", pc.LocalAddr().String())
	}
	for _, l := range ls {
		wg.Add(1)
		go func(l net.Listener) {
			defer wg.Done()
			fail(s.srv.ServeTCP(ctx, l))
		}(l)
		s.log.Info("serving dns", "proto", "tcp", "addr", l.Addr().String())
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		_ = s.mirror.Run(ctx)
	}()
	ready()
	<-ctx.Done()
	wg.Wait()
	if p := s.serveErr.Load(); p != nil {
		return fmt.Errorf("serve dns: %w", *p)
	}
	return nil
}

// Health fails only when serving DNS failed; a missing stellar-gossip is
// not a reason to restart dnsd (it shows in /v1/status).
func (s *service) Health(ctx context.Context) error {
	if p := s.serveErr.Load(); p != nil {
		return *p
	}
	return nil
}

// Reload applies new upstreams and TTL; domain and listen addresses need a
// restart.
func (s *service) Reload(ctx context.Context, cfg config.Config) error {
	s.mu.Lock()
	old := s.cfg
	s.mu.Unlock()
	if cfg.DNS.Domain != old.Domain || fmt.Sprint(cfg.DNS.Listen) != fmt.Sprint(old.Listen) {
		s.log.Warn("dns.domain and dns.listen change only with a restart")
	}
	if err := s.setUpstreams(cfg.DNS); err != nil {
		return fmt.Errorf("reload upstreams: %w", err)
	}
	s.mu.Lock()
	s.cfg.TTL = cfg.DNS.TTL
	s.cfg.Upstream = cfg.DNS.Upstream
	s.cfg.UpstreamResolvConf = cfg.DNS.UpstreamResolvConf
	s.mu.Unlock()
	return nil
}

func (s *service) metrics() {
	reg := s.env.Metrics
	q := reg.Counter("stellar_dnsd_queries_total", "DNS queries by protocol and outcome.", "proto", "outcome")
	var cs [2][server.NumOutcomes]*metrics.Counter
	for tcp := 0; tcp < 2; tcp++ {
		proto := "udp"
		if tcp == 1 {
			proto = "tcp"
		}
		for o := server.Outcome(0); o < server.NumOutcomes; o++ {
			cs[tcp][o] = q.With(proto, o.String())
		}
	}
	s.h.SetCounters(func(tcp bool, o server.Outcome) {
		i := 0
		if tcp {
			i = 1
		}
		cs[i][o].Inc()
	})
	reg.GaugeFunc("stellar_dnsd_zone_synced", "1 once the zone was loaded from the cluster state.", func() float64 {
		if s.h.Zone() != nil {
			return 1
		}
		return 0
	})
	reg.GaugeFunc("stellar_dnsd_zone_names", "Names in the zone.", func() float64 {
		if z := s.h.Zone(); z != nil {
			return float64(z.Stats().Names)
		}
		return 0
	})
	reg.GaugeFunc("stellar_dnsd_zone_serial", "SOA serial of the zone.", func() float64 {
		if z := s.h.Zone(); z != nil {
			return float64(z.Serial())
		}
		return 0
	})
}
