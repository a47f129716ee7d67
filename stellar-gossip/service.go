package main

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/memberlist"
	"github.com/hashicorp/serf/serf"

	"stellar.dev/api"
	"stellar.dev/api/errdefs"
	"stellar.dev/api/gossipapi"
	"stellar.dev/daemon"
	"stellar.dev/daemon/config"
	"stellar.dev/daemon/httpapi"
	"stellar.dev/daemon/metrics"
	"stellar.dev/stellar-gossip/store"
)

// Tag names. Every tag is small and fixed-size: serf caps all tags of a
// member at 512 bytes and every change is a full broadcast.
const (
	tagProto   = "v"  // state protocol version
	tagPeer    = "p"  // peer API host:port
	tagSubnet  = "sn" // container subnet (netd)
	tagSeq     = "sq" // owner sequence of node-owned keys
	tagKeys    = "kd" // short digest of the gossip keys held
	tagDigest  = "dg" // 8 hex of the store's digest, once it is quiet
	tagMinGap  = 3 * time.Second
	protoState = "1"

	// digestQuiet is how long the store must be unchanged before its
	// digest is published: a busy node would otherwise broadcast a new tag
	// every few seconds, and while it changes it syncs on its own anyway.
	digestQuiet = 10 * time.Second
	// digestEvery recomputes the digest with no new revision (dropped
	// tombstones change it without one).
	digestEvery = time.Minute
)

// service is stellar-gossip's work: the store, serf, replication and the
// peer port.
type service struct {
	env *daemon.Env
	cfg config.Config
	log *slog.Logger
	dir string

	st  *store.Store
	hub *memberHub
	sec *security

	mu       sync.Mutex
	serf     *serf.Serf
	keyring  *memberlist.Keyring
	tags     map[string]string // desired
	applied  map[string]string // last set on serf
	started  time.Time
	peerAddr string // advertised peer API host:port
	serfAddr string // advertised serf host:port
	syncNow  chan string

	// known is the member list as last seen, persisted in members.json:
	// members serf has not seen since this start are listed as failed.
	known      map[string]knownMember
	knownDirty chan struct{}
	// gcPercent is the GOGC set for the cluster's size (eventLoop only).
	gcPercent int

	// up is set once the store, the keys and serf are ready; until then
	// the API answers 503.
	up atomic.Bool

	mPush, mPull, mSync, mSyncErr, mRef, mSkip *metrics.Counter
	mKeys                                      *metrics.Gauge
}

func newService(env *daemon.Env) *service {
	s := &service{
		env: env, cfg: env.Config, log: env.Log,
		dir:     env.Config.StateDirOf("gossip"),
		hub:     newMemberHub(),
		tags:    map[string]string{},
		syncNow: make(chan string, 16),
		known:   map[string]knownMember{},

		knownDirty: make(chan struct{}, 1),
	}
	s.mPush = env.Metrics.Counter("stellar_gossip_pushed_total", "State changes broadcast (serf queries with no response).").With()
	s.mPull = env.Metrics.Counter("stellar_gossip_pulled_records_total", "Records received from peers that changed the store.").With()
	s.mSync = env.Metrics.Counter("stellar_gossip_antientropy_total", "Anti-entropy rounds completed.").With()
	s.mRef = env.Metrics.Counter("stellar_gossip_pulled_by_reference_total", "Changes too large to gossip, pulled from their writer on a reference.").With()
	s.mSkip = env.Metrics.Counter("stellar_gossip_antientropy_skipped_total", "Anti-entropy intervals with no round: every alive peer published this node's digest.").With()
	s.mSyncErr = env.Metrics.Counter("stellar_gossip_antientropy_errors_total", "Anti-entropy rounds that failed.").With()
	s.mKeys = env.Metrics.Gauge("stellar_gossip_keys", "Live keys in the local store.").With()
	s.routes(env.Mux)
	return s
}

// antiEntropy returns the anti-entropy interval.
func (s *service) antiEntropy() time.Duration {
	if d := s.cfg.Gossip.AntiEntropy; d > 0 {
		return d
	}
	if s.cfg.Gossip.Profile == "edge" {
		return 2 * time.Minute
	}
	return 30 * time.Second
}

func (s *service) Run(ctx context.Context, ready func()) error {
	s.started = time.Now()
	if err := os.MkdirAll(s.dir, 0o700); err != nil {
		return fmt.Errorf("create state dir %s: %w", s.dir, err)
	}
	st, err := store.Open(filepath.Join(s.dir, "state.db"), s.cfg.Node.Name, store.Options{})
	if err != nil {
		return err
	}
	s.st = st
	defer st.Close()
	sec, err := loadSecurity(s.dir, s.cfg.Node.Name, s.log)
	if err != nil {
		return err
	}
	s.sec = sec

	peerLns := s.env.Sockets.Listeners("peer")
	if len(peerLns) == 0 {
		return fmt.Errorf("no peer port listener")
	}
	s.peerAddr = s.advertisedPeer(peerLns[0].Addr())
	s.startKnown()
	if err := s.startSerf(); err != nil {
		return err
	}
	defer func() {
		s.mu.Lock()
		sf := s.serf
		s.mu.Unlock()
		// Shutdown without Leave: a restart must not look like a departure.
		if sf != nil {
			_ = sf.Shutdown()
		}
	}()

	srv := s.peerServer()
	for _, l := range peerLns {
		go func(l net.Listener) {
			if err := srv.Serve(newTLSListener(l, s.sec)); err != nil && err != http.ErrServerClosed {
				s.log.Error("serve peer port", "addr", l.Addr().String(), "err", err)
			}
		}(l)
	}
	defer srv.Close()
	if s.cfg.Node.Metrics != "" {
		go s.serveMetrics(ctx)
	}
	if err := s.publishFacts(); err != nil {
		s.log.Warn("publish node facts", "err", err)
	}
	s.up.Store(true)
	ready()

	var wg sync.WaitGroup
	for _, f := range []func(context.Context){s.joinLoop, s.tagLoop, s.antiEntropyLoop, s.factsLoop, s.gcLoop, s.knownLoop} {
		wg.Add(1)
		go func(f func(context.Context)) { defer wg.Done(); f(ctx) }(f)
	}
	<-ctx.Done()
	wg.Wait()
	return nil
}

// Health fails while the store cannot be read.
func (s *service) Health(ctx context.Context) error {
	if !s.up.Load() {
		return fmt.Errorf("starting: state, keys and serf not ready yet")
	}
	if _, _, err := s.st.List("nodes/" + s.cfg.Node.Name + "/facts"); err != nil {
		return fmt.Errorf("read state: %w", err)
	}
	return nil
}

// guard answers 503 until the service is up, then runs h.
func (s *service) guard(h httpapi.HandlerFunc) http.Handler {
	return httpapi.Handle(func(w http.ResponseWriter, r *http.Request) error {
		if !s.up.Load() {
			return errdefs.New(errdefs.ErrUnavailable, "stellar-gossip is starting: try again in a moment")
		}
		return h(w, r)
	})
}

// advertisedPeer turns the peer listener's address into one peers can dial.
func (s *service) advertisedPeer(a net.Addr) string {
	host, port, _ := net.SplitHostPort(a.String())
	if ip := net.ParseIP(host); ip == nil || ip.IsUnspecified() {
		host = s.advertiseIP()
	}
	return net.JoinHostPort(host, port)
}

// advertiseIP is [node] advertise, else the bind address when specific,
// else the first global address of the default-route interface.
func (s *service) advertiseIP() string {
	if s.cfg.Node.Advertise != "" {
		return s.cfg.Node.Advertise
	}
	if h, _, err := net.SplitHostPort(s.cfg.Gossip.Bind); err == nil {
		if ip := net.ParseIP(h); ip != nil && !ip.IsUnspecified() {
			return h
		}
	}
	if ip := defaultRouteIP(); ip != "" {
		return ip
	}
	s.log.Warn("no default route with a global address: advertising 127.0.0.1; set [node] advertise")
	return "127.0.0.1"
}

// published pushes a local change to peers at once.
func (s *service) published(rec store.Record) {
	s.bumpSeqTag()
	if !s.cfg.Gossip.UserEvents {
		return
	}
	s.pushRecord(rec)
}

func (s *service) bumpSeqTag() {
	s.mu.Lock()
	s.tags[tagSeq] = strconv.FormatUint(s.st.Seq(), 10)
	s.mu.Unlock()
}

// setTag sets a desired tag; tagLoop applies it (at most every few seconds).
func (s *service) setTag(k, v string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if v == "" {
		delete(s.tags, k)
	} else {
		s.tags[k] = v
	}
	return nil
}

func (s *service) tagLoop(ctx context.Context) {
	t := time.NewTicker(tagMinGap)
	defer t.Stop()
	var (
		rev       = s.st.Rev()
		changed   = time.Now()
		published = ^uint64(0) // the revision whose digest the tag holds
		computed  time.Time
	)
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if r := s.st.Rev(); r != rev {
			rev, changed = r, time.Now()
		}
		var dg string
		if time.Since(changed) >= digestQuiet && (published != rev || time.Since(computed) >= digestEvery) {
			if buckets, _, err := s.st.Digest(); err == nil {
				dg, published, computed = digestTag(topHash(buckets)), rev, time.Now()
			}
		}
		s.mu.Lock()
		if dg != "" {
			s.tags[tagDigest] = dg
		}
		s.tags[tagKeys] = s.keyDigestLocked()
		same := len(s.tags) == len(s.applied)
		for k, v := range s.tags {
			if s.applied[k] != v {
				same = false
			}
		}
		if same || s.serf == nil {
			s.mu.Unlock()
			continue
		}
		tags := copyMap(s.tags)
		sf := s.serf
		s.mu.Unlock()
		if err := sf.SetTags(tags); err != nil {
			s.log.Warn("set gossip tags", "err", err)
			continue
		}
		s.mu.Lock()
		s.applied = tags
		s.mu.Unlock()
	}
}

func copyMap(m map[string]string) map[string]string {
	c := make(map[string]string, len(m))
	for k, v := range m {
		c[k] = v
	}
	return c
}

// members lists the cluster as this node sees it, without labels and
// facts (decoratedMembers adds them): reading them from the store is the
// costly part, and only the API shows them.
func (s *service) members() []gossipapi.Member {
	s.mu.Lock()
	sf := s.serf
	s.mu.Unlock()
	var out []gossipapi.Member
	if sf == nil {
		out = []gossipapi.Member{{Name: s.cfg.Node.Name, Status: gossipapi.StatusAlive, PeerAPI: s.peerAddr}}
	} else {
		suspect := map[string]bool{}
		for _, n := range sf.Memberlist().Members() {
			if n.State == memberlist.StateSuspect {
				suspect[n.Name] = true
			}
		}
		inSerf := map[string]bool{}
		for _, m := range sf.Members() {
			inSerf[m.Name] = true
			out = append(out, toMember(m, suspect[m.Name]))
		}
		for _, k := range s.unseen(inSerf) {
			out = append(out, k.asMember())
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// decoratedMembers is members with the labels and facts each member
// published under its node-owned keys.
func (s *service) decoratedMembers() []gossipapi.Member {
	out := s.members()
	for i := range out {
		s.decorate(&out[i])
	}
	return out
}

func toMember(m serf.Member, suspect bool) gossipapi.Member {
	st := gossipapi.StatusAlive
	switch m.Status {
	case serf.StatusFailed:
		st = gossipapi.StatusFailed
	case serf.StatusLeft, serf.StatusLeaving:
		st = gossipapi.StatusLeft
	default:
		if suspect {
			st = gossipapi.StatusSuspect
		}
	}
	return gossipapi.Member{Name: m.Name, Addr: m.Addr.String(), Port: int(m.Port), PeerAPI: m.Tags[tagPeer], Status: st, Subnet: m.Tags[tagSubnet], Tags: m.Tags}
}

// decorate adds the labels and facts a member published under its keys.
func (s *service) decorate(m *gossipapi.Member) {
	if rec, err := s.st.Get("nodes/" + m.Name + "/facts"); err == nil {
		var f gossipapi.NodeFacts
		if json.Unmarshal(rec.Value, &f) == nil {
			m.Facts = &f
		}
	}
	if rec, err := s.st.Get("nodes/" + m.Name + "/labels"); err == nil {
		var l map[string]string
		if json.Unmarshal(rec.Value, &l) == nil && len(l) > 0 {
			m.Labels = l
		}
	}
}

// publishFacts writes this node's facts and labels. They are not pushed
// as user events: serf keeps its last user events in every push/pull for
// good, so facts there would be idle traffic forever. The owner-sequence
// tag (applied within a few seconds) makes every peer pull them.
func (s *service) publishFacts() error {
	f := hostFacts(s.started)
	raw, _ := json.Marshal(f)
	if _, err := s.st.Put("nodes/"+s.cfg.Node.Name+"/facts", raw, ""); err != nil {
		return err
	}
	s.bumpSeqTag()
	labels, _ := json.Marshal(s.cfg.LabelMap())
	if cur, err := s.st.Get("nodes/" + s.cfg.Node.Name + "/labels"); err == nil && string(cur.Value) == string(labels) {
		return nil
	}
	if _, err := s.st.Put("nodes/"+s.cfg.Node.Name+"/labels", labels, ""); err != nil {
		return err
	}
	s.bumpSeqTag()
	return nil
}

// factsLoop refreshes the facts when factsStale says so: every write
// is a tag broadcast and a pull by every peer, so idle nodes stay quiet.
func (s *service) factsLoop(ctx context.Context) {
	t := time.NewTicker(time.Minute)
	defer t.Stop()
	last := time.Now()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		cur := hostFacts(s.started)
		var pub gossipapi.NodeFacts
		if rec, err := s.st.Get("nodes/" + s.cfg.Node.Name + "/facts"); err == nil {
			_ = json.Unmarshal(rec.Value, &pub)
		}
		if !factsStale(pub, cur, time.Since(last)) {
			continue
		}
		last = time.Now()
		if err := s.publishFacts(); err != nil {
			s.log.Warn("publish node facts", "err", err)
		}
	}
}

// factsStale reports whether the published facts need a refresh: every
// 15 minutes, at once when a fixed fact changed, or when memory use moved
// by 10% of the host's memory and at least 64 MiB (a busy host's memory use
// swings by tens of MiB a minute; the figure is for people and placement
// hints, not accounting).
func factsStale(pub, cur gossipapi.NodeFacts, since time.Duration) bool {
	if since >= 15*time.Minute || pub.OS != cur.OS || pub.Kernel != cur.Kernel || pub.CPUs != cur.CPUs || pub.MemoryTotal != cur.MemoryTotal {
		return true
	}
	diff := int64(cur.MemoryUsed) - int64(pub.MemoryUsed)
	if diff < 0 {
		diff = -diff
	}
	return diff >= 64<<20 && float64(diff) >= 0.1*float64(cur.MemoryTotal)
}

// tombstoneKeep is how long a delete is remembered: the reconnect
// timeout plus a margin of the same length, at most an hour. A node away
// longer than the reconnect timeout resyncs in full, so it never needs a
// tombstone older than that.
func tombstoneKeep(reconnect time.Duration) time.Duration {
	return reconnect + min(reconnect, time.Hour)
}

// gcEvery is how often old tombstones are dropped: every minute, or four
// times per reconnect timeout when that is shorter.
func gcEvery(reconnect time.Duration) time.Duration {
	return max(min(reconnect/4, time.Minute), time.Second)
}

// gcLoop drops old tombstones and counts keys.
func (s *service) gcLoop(ctx context.Context) {
	t := time.NewTicker(gcEvery(s.cfg.Gossip.ReconnectTimeout))
	defer t.Stop()
	for {
		_, recs, err := s.st.List("")
		if err == nil {
			s.mKeys.Set(float64(len(recs)))
		}
		if n, err := s.st.GC(tombstoneKeep(s.cfg.Gossip.ReconnectTimeout)); err != nil {
			s.log.Warn("drop old tombstones", "err", err)
		} else if n > 0 {
			s.log.Info("dropped old tombstones", "count", n)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// info is the answer of GET /v1/cluster/info.
type info struct {
	Node     string            `json:"node"`
	Version  string            `json:"version"`
	Serf     string            `json:"serf_addr"`
	PeerAPI  string            `json:"peer_api"`
	Profile  string            `json:"profile"`
	Keys     int               `json:"keys"`
	Rev      uint64            `json:"rev"`
	Seq      uint64            `json:"seq"`
	GossipKs int               `json:"gossip_keys"`
	CAHash   string            `json:"ca_hash"`
	Members  map[string]int    `json:"members"`
	Peers    []string          `json:"peers"`
	Tags     map[string]string `json:"tags"`
}

func (s *service) handleInfo(w http.ResponseWriter, r *http.Request) error {
	_, recs, err := s.st.List("")
	if err != nil {
		return err
	}
	in := info{Node: s.cfg.Node.Name, Version: api.Version, Serf: s.serfAddr, PeerAPI: s.peerAddr, Profile: s.cfg.Gossip.Profile,
		Keys: len(recs), Rev: s.st.Rev(), Seq: s.st.Seq(), CAHash: s.sec.ca().Hash(), Members: map[string]int{}, Peers: []string{}}
	s.mu.Lock()
	if s.keyring != nil {
		in.GossipKs = len(s.keyring.GetKeys())
	}
	in.Tags = copyMap(s.applied)
	s.mu.Unlock()
	for _, m := range s.members() {
		in.Members[m.Status]++
		if m.Name != s.cfg.Node.Name && m.Status != gossipapi.StatusLeft {
			in.Peers = append(in.Peers, m.Name+" "+net.JoinHostPort(m.Addr, strconv.Itoa(m.Port)))
		}
	}
	writeJSON(w, in)
	return nil
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(v)
}

// memberHub keeps recent member events for watchers.
type memberHub struct {
	mu   sync.Mutex
	n    uint64
	evs  []gossipapi.Member // the last events, evs[i] has seq n-len+i+1
	wake chan struct{}
}

func newMemberHub() *memberHub { return &memberHub{wake: make(chan struct{})} }

func (h *memberHub) publish(m gossipapi.Member) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.n++
	h.evs = append(h.evs, m)
	if len(h.evs) > 1024 {
		h.evs = h.evs[len(h.evs)-1024:]
	}
	close(h.wake)
	h.wake = make(chan struct{})
}

func (h *memberHub) seq() uint64 { h.mu.Lock(); defer h.mu.Unlock(); return h.n }

func (h *memberHub) changed() <-chan struct{} { h.mu.Lock(); defer h.mu.Unlock(); return h.wake }

// since returns the events after seq (the kept ones) and the new seq.
func (h *memberHub) since(seq uint64) ([]gossipapi.Member, uint64) {
	h.mu.Lock()
	defer h.mu.Unlock()
	first := h.n - uint64(len(h.evs)) + 1
	if seq+1 < first {
		seq = first - 1
	}
	out := append([]gossipapi.Member(nil), h.evs[seq+1-first:]...)
	return out, h.n
}
