package main

import (
	"bufio"
	"context"
	"fmt"
	"log"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/hashicorp/memberlist"
	"github.com/hashicorp/serf/serf"

	"stellar.dev/api/gossipapi"
	"stellar.dev/daemon"
)

// startSerf creates the embedded serf member: encrypted with the keyring,
// rejoining from its snapshot.
func (s *service) startSerf() error {
	keys, err := readKeyring(s.dir)
	if err != nil {
		return err
	}
	kr, err := memberlist.NewKeyring(keys, keys[0])
	if err != nil {
		return fmt.Errorf("load gossip keyring: %w", err)
	}
	host, portS, err := net.SplitHostPort(s.cfg.Gossip.Bind)
	if err != nil {
		return fmt.Errorf("read gossip.bind: %w", err)
	}
	port, _ := strconv.Atoi(portS)
	conf := serf.DefaultConfig()
	conf.NodeName = s.cfg.Node.Name
	ml := memberlist.DefaultLANConfig()
	if s.cfg.Gossip.Profile == "edge" {
		// Slow links: probe every 5 s, gossip every second, full state
		// exchange every 2 min. Idle traffic stays under 1 kbit/s per node;
		// a dead node is found in ~30 s instead of ~5 s.
		ml.ProbeInterval = 5 * time.Second
		ml.ProbeTimeout = 3 * time.Second
		ml.GossipInterval = time.Second
		ml.GossipToTheDeadTime = 2 * time.Minute
		ml.PushPullInterval = 2 * time.Minute
		ml.TCPTimeout = 30 * time.Second
		ml.SuspicionMult = 6
	}
	ml.Name = s.cfg.Node.Name
	logger := log.New(&serfLog{log: s.log}, "", 0)
	tr, port, err := newTransport(host, port, logger)
	if err != nil {
		return err
	}
	ml.Transport = tr
	ml.BindAddr = host
	ml.BindPort = port
	ml.AdvertisePort = port
	ml.AdvertiseAddr = s.advertiseIP()
	ml.Keyring = kr
	ml.SecretKey = nil
	ml.GossipVerifyIncoming, ml.GossipVerifyOutgoing = true, true
	// A node whose address changed is still itself: let it reclaim its name.
	ml.DeadNodeReclaimTime = 30 * time.Second
	ml.Logger = logger
	conf.Logger = logger
	conf.MemberlistConfig = ml
	conf.SnapshotPath = filepath.Join(s.dir, "serf.snapshot")
	conf.KeyringFile = filepath.Join(s.dir, "keyring.json")
	conf.RejoinAfterLeave = false
	conf.ReconnectTimeout = s.cfg.Gossip.ReconnectTimeout
	conf.TombstoneTimeout = s.cfg.Gossip.ReconnectTimeout
	conf.ReconnectInterval = 10 * time.Second
	// serf sends its whole user-event buffer in every push/pull, for good:
	// changes are pushed as queries, which serf does not keep, and only
	// nodes of an earlier version still send user events; a small buffer
	// keeps what they leave there small. An event older than the buffer is
	// dropped by receivers; anti-entropy carries that change.
	conf.EventBuffer = 16
	// Changes are pushed as queries (see pushRecord): room for the largest
	// payload with the query's header and a 63-byte node name.
	conf.QuerySizeLimit = 1200
	conf.CoalescePeriod = 0
	conf.UserCoalescePeriod = 0
	// No name conflict resolution: a node that comes back at a new address
	// before the others noticed it died would lose the vote (the others
	// still know it at the old address) and serf would shut itself down.
	// Without it the conflict is logged and the new address wins once the
	// old one is declared dead (DeadNodeReclaimTime). Two hosts with one
	// name cannot both join: a token join refuses a name already alive.
	conf.EnableNameConflictResolution = false
	// No network coordinates: serf would put its Vivaldi coordinate in
	// every probe ack (about 130 bytes a second per node, a third of idle
	// traffic), and nothing in Stellar reads round-trip estimates.
	conf.DisableCoordinates = true
	ch := make(chan serf.Event, 1024)
	conf.EventCh = ch
	s.mu.Lock()
	s.tags[tagProto] = protoState
	s.tags[tagPeer] = s.peerAddr
	s.tags[tagSeq] = strconv.FormatUint(s.st.Seq(), 10)
	s.tags[tagKeys] = keyDigest(keys)
	conf.Tags = copyMap(s.tags)
	s.applied = copyMap(s.tags)
	s.keyring = kr
	s.mu.Unlock()
	sf, err := serf.Create(conf)
	if err != nil {
		tr.Shutdown()
		return fmt.Errorf("start serf on %s: %w", s.cfg.Gossip.Bind, err)
	}
	lm := sf.LocalMember()
	s.mu.Lock()
	s.serf = sf
	s.serfAddr = net.JoinHostPort(lm.Addr.String(), strconv.Itoa(int(lm.Port)))
	s.mu.Unlock()
	s.log.Info("gossip started", "serf", s.serfAddr, "peer_api", s.peerAddr, "profile", s.cfg.Gossip.Profile, "encrypted", sf.EncryptionEnabled())
	go s.eventLoop(ch, sf.ShutdownCh())
	return nil
}

// eventLoop handles serf's member events, queries and user events.
func (s *service) eventLoop(ch <-chan serf.Event, done <-chan struct{}) {
	for {
		select {
		case <-done:
			return
		case ev := <-ch:
			switch e := ev.(type) {
			case serf.MemberEvent:
				s.onMembers(e)
				s.sizeGC()
			case serf.UserEvent:
				s.onUserEvent(e)
			case *serf.Query:
				s.onQuery(e)
			}
		}
	}
}

// sizeGC sets GOGC for the cluster's size (see gcPercent).
func (s *service) sizeGC() {
	s.mu.Lock()
	sf := s.serf
	s.mu.Unlock()
	if sf == nil {
		return
	}
	if p := gcPercent(sf.NumNodes()); p != s.gcPercent {
		s.gcPercent = p
		daemon.SetDefaultGCPercent(p)
		s.log.Debug("garbage collection target set for the cluster's size", "members", sf.NumNodes(), "gogc", p)
	}
}

func (s *service) onMembers(e serf.MemberEvent) {
	s.noteMembers(e)
	for _, m := range e.Members {
		gm := toMember(m, false)
		if e.Type == serf.EventMemberReap {
			gm.Status = gossipapi.StatusLeft
		}
		s.decorate(&gm)
		s.hub.publish(gm)
		if m.Name == s.cfg.Node.Name {
			continue
		}
		s.log.Info("member event", "event", e.Type.String(), "node", m.Name, "addr", m.Addr.String(), "status", gm.Status)
		var err error
		switch e.Type {
		case serf.EventMemberFailed:
			err = s.st.SetFailed(m.Name, true)
		case serf.EventMemberJoin, serf.EventMemberUpdate:
			err = s.st.SetFailed(m.Name, false)
			s.maybePull(m)
		case serf.EventMemberLeave, serf.EventMemberReap:
			var n int
			n, err = s.st.DropOwner(m.Name)
			if err == nil && n > 0 {
				s.log.Info("dropped the keys of a node that left or was reaped", "node", m.Name, "keys", n)
			}
		}
		if err != nil {
			s.log.Warn("apply member event to state", "node", m.Name, "err", err)
		}
	}
}

// maybePull asks for a sync with m when its tag says it has writes we lack.
func (s *service) maybePull(m serf.Member) {
	seq, err := strconv.ParseUint(m.Tags[tagSeq], 10, 64)
	if err != nil || seq == 0 {
		return
	}
	_, seqs, err := s.st.Digest()
	if err != nil || seqs[m.Name] >= seq {
		return
	}
	select {
	case s.syncNow <- m.Name:
	default:
	}
}

// joinLoop joins the configured peers at start, and keeps retrying them
// and every failed member until they are reaped, so a partition longer
// than the suspicion time heals with no operator.
func (s *service) joinLoop(ctx context.Context) {
	every := 10 * time.Second
	if s.cfg.Gossip.Profile == "edge" {
		every = 30 * time.Second
	}
	first := true
	for {
		s.mu.Lock()
		sf := s.serf
		s.mu.Unlock()
		var addrs []string
		alive := 0
		for _, m := range sf.Members() {
			switch {
			case m.Name == s.cfg.Node.Name:
			case m.Status == serf.StatusFailed:
				addrs = append(addrs, net.JoinHostPort(m.Addr.String(), strconv.Itoa(int(m.Port))))
			case m.Status == serf.StatusAlive:
				alive++
			}
		}
		// Members known from before a restart that serf has not seen
		// since: keep trying them as serf tries its failed members.
		for _, k := range s.unseen(s.serfNames()) {
			addrs = append(addrs, k.serfAddr())
		}
		if alive == 0 || first {
			for _, p := range s.cfg.Gossip.Peers {
				addrs = append(addrs, withPort(p, "7946"))
			}
		}
		if len(addrs) > 0 {
			n, err := sf.Join(addrs, true)
			if err != nil && n == 0 {
				s.log.Debug("join peers", "peers", addrs, "err", err)
			} else if n > 0 && (first || alive == 0) {
				s.log.Info("joined peers", "contacted", n)
			}
		}
		first = false
		select {
		case <-ctx.Done():
			return
		case <-time.After(every):
		}
	}
}

func withPort(p, def string) string {
	if _, _, err := net.SplitHostPort(p); err == nil {
		return p
	}
	return net.JoinHostPort(p, def)
}

// serfLog sends serf's and memberlist's log lines to slog: errors and
// warnings (a peer with the wrong key, for one) at warn, the rest at debug.
type serfLog struct{ log *slog.Logger }

func (l *serfLog) Write(p []byte) (int, error) {
	msg := strings.TrimSpace(string(p))
	lvl := slog.LevelDebug
	switch {
	case strings.Contains(msg, "[ERR]"), strings.Contains(msg, "[WARN]"):
		lvl = slog.LevelWarn
	}
	if i := strings.Index(msg, "] "); i >= 0 && strings.HasPrefix(msg, "[") {
		msg = msg[i+2:]
	}
	l.log.Log(context.Background(), lvl, msg, "component", "serf")
	return len(p), nil
}

// hostFacts describes this host.
func hostFacts(started time.Time) gossipapi.NodeFacts {
	f := gossipapi.NodeFacts{OS: "linux", CPUs: runtime.NumCPU(), Started: started.UTC()}
	if raw, err := os.ReadFile("/etc/os-release"); err == nil {
		for _, l := range strings.Split(string(raw), "\n") {
			if v, ok := strings.CutPrefix(l, "PRETTY_NAME="); ok {
				f.OS = strings.Trim(v, `"`)
			}
		}
	}
	var u syscall.Utsname
	if syscall.Uname(&u) == nil {
		var b strings.Builder
		for _, c := range u.Release {
			if c == 0 {
				break
			}
			b.WriteByte(byte(c))
		}
		f.Kernel = b.String()
	}
	if fh, err := os.Open("/proc/meminfo"); err == nil {
		sc := bufio.NewScanner(fh)
		var total, avail uint64
		for sc.Scan() {
			fs := strings.Fields(sc.Text())
			if len(fs) < 2 {
				continue
			}
			v, _ := strconv.ParseUint(fs[1], 10, 64)
			switch fs[0] {
			case "MemTotal:":
				total = v * 1024
			case "MemAvailable:":
				avail = v * 1024
			}
		}
		fh.Close()
		f.MemoryTotal = total
		if total > avail {
			f.MemoryUsed = total - avail
		}
	}
	if raw, err := os.ReadFile("/proc/stat"); err == nil {
		for _, l := range strings.Split(string(raw), "\n") {
			if v, ok := strings.CutPrefix(l, "btime "); ok {
				if n, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64); err == nil {
					f.Booted = time.Unix(n, 0).UTC()
				}
			}
		}
	}
	return f
}

// defaultRouteIP returns the first global address of the interface that
// holds the IPv4 default route, or "".
func defaultRouteIP() string {
	raw, err := os.ReadFile("/proc/net/route")
	if err != nil {
		return ""
	}
	for _, l := range strings.Split(string(raw), "\n")[1:] {
		fs := strings.Fields(l)
		if len(fs) < 3 || fs[1] != "00000000" {
			continue
		}
		ifc, err := net.InterfaceByName(fs[0])
		if err != nil {
			continue
		}
		addrs, _ := ifc.Addrs()
		for _, a := range addrs {
			if n, ok := a.(*net.IPNet); ok && n.IP.To4() != nil && n.IP.IsGlobalUnicast() {
				return n.IP.String()
			}
		}
	}
	return ""
}
