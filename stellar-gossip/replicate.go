package main

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"math/rand/v2"
	"net/http"
	"time"

	"github.com/hashicorp/serf/serf"

	"stellar.dev/api/errdefs"
	"stellar.dev/api/gossipapi"
	"stellar.dev/stellar-gossip/store"
)

// wireVersion is the version of the replication messages (user events and
// peer-port calls). A node refuses, with a clear message, what it cannot read.
const wireVersion = 1

// maxEventPayload is the largest user event we gossip: memberlist never
// gossips bigger ones, so larger changes go by reference.
const maxEventPayload = 900

// userEventName names the serf query (user event before) carrying state
// changes.
const userEventName = "st"

// stateMsg is a pushed change: whole records, or a reference to pull.
type stateMsg struct {
	W       int            `json:"w"`
	From    string         `json:"from"`
	Records []store.Record `json:"r,omitempty"`
	Ref     *store.Summary `json:"ref,omitempty"`
}

// decodeStateMsg reads and checks a pushed change.
func decodeStateMsg(raw []byte) (stateMsg, error) {
	var m stateMsg
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&m); err != nil {
		return stateMsg{}, fmt.Errorf("decode state message: %w", err)
	}
	if m.W != wireVersion {
		return stateMsg{}, fmt.Errorf("state message of wire version %d: this node reads %d (upgrade the older node)", m.W, wireVersion)
	}
	if m.From == "" || len(m.From) > 63 {
		return stateMsg{}, errors.New("state message names no sender")
	}
	if len(m.Records) == 0 && m.Ref == nil {
		return stateMsg{}, errors.New("state message carries nothing")
	}
	for _, r := range m.Records {
		if err := r.Validate(); err != nil {
			return stateMsg{}, fmt.Errorf("state message: %w", err)
		}
	}
	if m.Ref != nil {
		if err := store.ValidKey(m.Ref.Key); err != nil {
			return stateMsg{}, fmt.Errorf("state message reference: %w", err)
		}
	}
	return m, nil
}

// pushRecord broadcasts one change as a serf query that asks for no ack
// and no response (gossiped like a user event, but not kept: serf ships its
// last user events in every push/pull for as long as no newer ones replace
// them), by reference when it is too large to gossip.
func (s *service) pushRecord(rec store.Record) {
	s.mu.Lock()
	sf := s.serf
	s.mu.Unlock()
	if sf == nil {
		return
	}
	raw := eventPayload(s.cfg.Node.Name, rec)
	if _, err := sf.Query(userEventName, raw, nil); err != nil {
		s.log.Warn("broadcast state change (anti-entropy will carry it)", "key", rec.Key, "err", err)
		return
	}
	s.mPush.Inc()
}

// eventPayload is the user event for one change: the whole record when
// it fits in maxEventPayload, else a reference receivers pull.
func eventPayload(from string, rec store.Record) []byte {
	w := rec.Wire()
	raw, _ := json.Marshal(stateMsg{W: wireVersion, From: from, Records: []store.Record{w}})
	if len(raw) > maxEventPayload {
		raw, _ = json.Marshal(stateMsg{W: wireVersion, From: from, Ref: &store.Summary{Key: w.Key, HLC: w.HLC, Node: w.Node, Deleted: w.Deleted}})
	}
	return raw
}

// onUserEvent takes a change pushed as a user event (nodes of an earlier
// version push that way).
func (s *service) onUserEvent(e serf.UserEvent) {
	s.onPush(e.Name, e.Payload)
}

// onQuery takes a change pushed as a serf query; nothing is answered.
func (s *service) onQuery(q *serf.Query) {
	s.onPush(q.Name, q.Payload)
}

// onPush applies a pushed change.
func (s *service) onPush(name string, payload []byte) {
	if name != userEventName {
		return
	}
	if !s.cfg.Gossip.UserEvents {
		return
	}
	m, err := decodeStateMsg(payload)
	if err != nil {
		s.log.Warn("refused a state message", "err", err)
		return
	}
	if m.From == s.cfg.Node.Name {
		return
	}
	if len(m.Records) > 0 {
		won, err := s.st.Merge(m.Records)
		if err != nil {
			s.log.Warn("apply pushed change", "from", m.From, "err", err)
			return
		}
		s.mPull.Add(float64(len(won)))
		return
	}
	// By reference: pull it from the sender unless we already have it.
	if cur, err := s.st.Records([]string{m.Ref.Key}); err == nil && len(cur) == 1 && !store.Newer(m.Ref.HLC, m.Ref.Node, cur[0].HLC, cur[0].Node) {
		return
	}
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		addr := s.peerOf(m.From)
		if addr == "" {
			return
		}
		var resp exchangeResp
		if err := s.peerCall(ctx, addr, "/v1/peer/exchange", exchangeReq{W: wireVersion, Node: s.cfg.Node.Name, Pull: []string{m.Ref.Key}}, &resp); err != nil {
			s.log.Debug("pull a large change (anti-entropy will carry it)", "key", m.Ref.Key, "from", m.From, "err", err)
			return
		}
		if won, err := s.st.Merge(resp.Records); err == nil {
			s.mPull.Add(float64(len(won)))
			s.mRef.Inc()
		}
	}()
}

// peerOf returns the peer API address of an alive member, or "".
func (s *service) peerOf(node string) string {
	for _, m := range s.members() {
		if m.Name == node && (m.Status == "alive" || m.Status == "suspect") {
			return m.PeerAPI
		}
	}
	return ""
}

// digestReq/Resp and exchangeReq/Resp are the anti-entropy calls on the
// peer port.
//
// A round sends only the hash of all buckets first; the buckets follow only
// when it differs, so an idle, converged cluster exchanges a few hundred
// bytes per round.
type digestReq struct {
	W        int                    `json:"w"`
	Node     string                 `json:"node"`
	LastSync int64                  `json:"last_sync"`
	Top      uint64                 `json:"top"`
	Buckets  *[store.Buckets]uint64 `json:"buckets,omitempty"`
}

type digestResp struct {
	W           int             `json:"w"`
	Node        string          `json:"node"`
	LastSync    int64           `json:"last_sync"`
	Equal       bool            `json:"equal,omitempty"`
	NeedBuckets bool            `json:"need_buckets,omitempty"`
	Differ      []int           `json:"differ,omitempty"`
	Summaries   []store.Summary `json:"summaries,omitempty"`
}

// topHash folds the bucket hashes into one.
func topHash(b [store.Buckets]uint64) uint64 {
	h := fnv.New64a()
	var buf [8]byte
	for _, x := range b {
		binary.BigEndian.PutUint64(buf[:], x)
		h.Write(buf[:])
	}
	return h.Sum64()
}

type exchangeReq struct {
	W    int            `json:"w"`
	Node string         `json:"node"`
	Push []store.Record `json:"push,omitempty"`
	Pull []string       `json:"pull,omitempty"`
}

type exchangeResp struct {
	W       int            `json:"w"`
	Records []store.Record `json:"records"`
}

// fullRoundEvery is how many intervals may pass with every peer's
// published digest equal to this node's before a round is run anyway
// (a safety net: the 32-bit tag could collide).
const fullRoundEvery = 10

// digestTag is the published form of a store digest: 8 hex digits.
func digestTag(top uint64) string { return fmt.Sprintf("%08x", uint32(top)) }

// syncCandidates returns the peer API addresses an anti-entropy round may
// pick among the members, and how many alive peers were left out because
// they publish mine (this node's digest tag). With a target, only that
// member; with full, every alive peer.
func syncCandidates(self, mine, target string, full bool, members []gossipapi.Member) (peers []string, same int) {
	for _, m := range members {
		if m.Name == self || m.Status != gossipapi.StatusAlive || m.PeerAPI == "" {
			continue
		}
		if target != "" {
			if m.Name == target {
				peers = append(peers, m.PeerAPI)
			}
			continue
		}
		if !full && mine != "" && m.Tags[tagDigest] == mine {
			same++
			continue
		}
		peers = append(peers, m.PeerAPI)
	}
	return peers, same
}

// antiEntropyLoop compares state with one random peer every interval, and
// at once with a peer whose tag shows writes we lack. Peers whose published
// digest (tag dg) equals this node's are skipped: an idle, converged
// cluster sends nothing over the peer port; every fullRoundEvery intervals
// a round runs regardless.
func (s *service) antiEntropyLoop(ctx context.Context) {
	iv := s.antiEntropy()
	lastRound := time.Now()
	for {
		// Jitter so that nodes do not sync in lockstep.
		wait := iv/2 + time.Duration(rand.Int64N(int64(iv)))
		var target string
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		case target = <-s.syncNow:
		}
		mine := ""
		if buckets, _, err := s.st.Digest(); err == nil {
			mine = digestTag(topHash(buckets))
		}
		full := time.Since(lastRound) >= fullRoundEvery*iv
		peers, same := syncCandidates(s.cfg.Node.Name, mine, target, full, s.members())
		if len(peers) == 0 {
			if same > 0 {
				// Every alive peer published the digest this node has:
				// in sync, as a round would have found.
				s.mSkip.Inc()
				if err := s.st.SetMeta("last_sync", uint64(time.Now().Unix())); err != nil {
					s.log.Warn("note an anti-entropy round", "err", err)
				}
			}
			continue
		}
		p := peers[rand.IntN(len(peers))]
		sctx, cancel := context.WithTimeout(ctx, 60*time.Second)
		err := s.syncWith(sctx, p)
		cancel()
		if err != nil {
			s.mSyncErr.Inc()
			s.log.Debug("anti-entropy", "peer", p, "err", err)
			continue
		}
		lastRound = time.Now()
		s.mSync.Inc()
	}
}

// syncWith runs one anti-entropy round with the peer at addr.
func (s *service) syncWith(ctx context.Context, addr string) error {
	buckets, _, err := s.st.Digest()
	if err != nil {
		return err
	}
	last := int64(s.st.Meta("last_sync"))
	var d digestResp
	req := digestReq{W: wireVersion, Node: s.cfg.Node.Name, LastSync: last, Top: topHash(buckets)}
	if err := s.peerCall(ctx, addr, "/v1/peer/digest", req, &d); err != nil {
		return err
	}
	if d.NeedBuckets {
		req.Buckets = &buckets
		if err := s.peerCall(ctx, addr, "/v1/peer/digest", req, &d); err != nil {
			return err
		}
	}
	now := time.Now()
	if s.stale(last, d.LastSync, now) {
		// Away longer than tombstones live: a delete we missed may be
		// forgotten by now, so take the cluster keys from the cluster whole.
		n, err := s.st.DropClusterKeys()
		if err != nil {
			return fmt.Errorf("drop stale cluster keys: %w", err)
		}
		s.log.Warn("out of contact longer than the reconnect timeout: cluster keys dropped for a full resync", "dropped", n, "away", now.Sub(time.Unix(last, 0)).Round(time.Second))
		if err := s.st.SetMeta("last_sync", 0); err != nil {
			return err
		}
		return s.syncWith(ctx, addr)
	}
	if len(d.Differ) > 0 {
		pull, push, err := s.st.Diff(d.Differ, d.Summaries)
		if err != nil {
			return err
		}
		if len(pull) > 0 || len(push) > 0 {
			var x exchangeResp
			if err := s.peerCall(ctx, addr, "/v1/peer/exchange", exchangeReq{W: wireVersion, Node: s.cfg.Node.Name, Push: push, Pull: pull}, &x); err != nil {
				return err
			}
			won, err := s.st.Merge(x.Records)
			if err != nil {
				return err
			}
			s.mPull.Add(float64(len(won)))
		}
	}
	return s.st.SetMeta("last_sync", uint64(now.Unix()))
}

// stale reports whether a node whose last anti-entropy round was at mine
// (Unix seconds) must take its cluster keys whole from a peer whose last
// round was at theirs: it was away longer than the reconnect timeout (so a
// delete it missed may be forgotten) and the peer was not (so a whole
// cluster powered off for days does not wipe itself).
func (s *service) stale(mine, theirs int64, now time.Time) bool {
	keep := s.cfg.Gossip.ReconnectTimeout
	return mine != 0 && now.Sub(time.Unix(mine, 0)) > keep && theirs != 0 && now.Sub(time.Unix(theirs, 0)) < keep
}

// handlePeerDigest answers a digest: the differing buckets' summaries.
func (s *service) handlePeerDigest(w http.ResponseWriter, r *http.Request) error {
	var req digestReq
	if err := decodePeer(r, &req); err != nil {
		return err
	}
	mine, _, err := s.st.Digest()
	if err != nil {
		return err
	}
	resp := digestResp{W: wireVersion, Node: s.cfg.Node.Name, LastSync: int64(s.st.Meta("last_sync"))}
	if s.stale(resp.LastSync, req.LastSync, time.Now()) {
		// This node was away longer than tombstones live: its cluster keys
		// may hold deletes the cluster has forgotten. Nobody may pull from
		// it until it has resynced from the caller.
		select {
		case s.syncNow <- req.Node:
		default:
		}
		return errdefs.New(errdefs.ErrUnavailable, "%s was out of contact longer than the reconnect timeout and resyncs first", s.cfg.Node.Name)
	}
	switch {
	case topHash(mine) == req.Top:
		resp.Equal = true
		writeJSON(w, resp)
		return nil
	case req.Buckets == nil:
		resp.NeedBuckets = true
		writeJSON(w, resp)
		return nil
	}
	for i := range mine {
		if mine[i] != req.Buckets[i] {
			resp.Differ = append(resp.Differ, i)
		}
	}
	if len(resp.Differ) > 0 {
		if resp.Summaries, err = s.st.Summaries(resp.Differ); err != nil {
			return err
		}
	}
	writeJSON(w, resp)
	return nil
}

// handlePeerExchange merges pushed records and returns the pulled ones.
func (s *service) handlePeerExchange(w http.ResponseWriter, r *http.Request) error {
	var req exchangeReq
	if err := decodePeer(r, &req); err != nil {
		return err
	}
	if len(req.Push) > 0 {
		won, err := s.st.Merge(req.Push)
		if err != nil {
			return errdefs.New(errdefs.ErrInvalidArgument, "merge pushed records: %v", err)
		}
		s.mPull.Add(float64(len(won)))
	}
	recs, err := s.st.Records(req.Pull)
	if err != nil {
		return err
	}
	if recs == nil {
		recs = []store.Record{}
	}
	writeJSON(w, exchangeResp{W: wireVersion, Records: recs})
	return nil
}

// decodePeer reads a peer-port JSON body and checks its wire version.
func decodePeer(r *http.Request, v any) error {
	raw, err := io.ReadAll(http.MaxBytesReader(nil, r.Body, 256<<20))
	if err != nil {
		return errdefs.New(errdefs.ErrInvalidArgument, "read request: %v", err)
	}
	var probe struct {
		W int `json:"w"`
	}
	if err := json.Unmarshal(raw, &probe); err != nil {
		return errdefs.New(errdefs.ErrInvalidArgument, "decode request: %v", err)
	}
	if probe.W != wireVersion {
		return errdefs.New(errdefs.ErrUnsupportedVersion, "peer speaks replication wire version %d, this node %d: upgrade the older node", probe.W, wireVersion)
	}
	if err := json.Unmarshal(raw, v); err != nil {
		return errdefs.New(errdefs.ErrInvalidArgument, "decode request: %v", err)
	}
	return nil
}
