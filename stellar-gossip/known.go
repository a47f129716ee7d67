package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/hashicorp/serf/serf"

	"stellar.dev/api/gossipapi"
	"stellar.dev/daemon/atomicfile"
)

// knownFile is the last member list this node saw, kept in the state dir so
// that after a restart with no peer reachable the peers it knew are still
// listed (as failed) instead of vanishing: serf's snapshot only names the
// addresses to rejoin, it does not bring members back.
const knownFile = "members.json"

// knownMember is one peer as last seen.
type knownMember struct {
	Name string            `json:"name"`
	Addr string            `json:"addr"`
	Port int               `json:"port"`
	Tags map[string]string `json:"tags,omitempty"`
	// Seen is when this node last saw it alive (or first learned of it).
	Seen time.Time `json:"seen"`
}

type knownList struct {
	Format  int           `json:"format"`
	Members []knownMember `json:"members"`
}

// loadKnown reads the persisted member list, leaving out this node and
// entries that do not name a usable address. Age is not judged here: while
// this node was down it could not tell whether a peer was away, so the
// reconnect timeout of a member not seen again counts from this start.
func loadKnown(dir, self string) (map[string]knownMember, error) {
	out := map[string]knownMember{}
	raw, err := os.ReadFile(filepath.Join(dir, knownFile))
	if os.IsNotExist(err) {
		return out, nil
	}
	if err != nil {
		return out, fmt.Errorf("read known members: %w", err)
	}
	var l knownList
	if err := json.Unmarshal(raw, &l); err != nil {
		return out, fmt.Errorf("decode %s: %w", knownFile, err)
	}
	if l.Format != 1 {
		return out, fmt.Errorf("%s has format %d, this node reads 1", knownFile, l.Format)
	}
	for _, m := range l.Members {
		if m.Name == "" || m.Name == self || net.ParseIP(m.Addr) == nil || m.Port <= 0 || m.Port > 65535 {
			continue
		}
		out[m.Name] = m
	}
	return out, nil
}

// saveKnown writes the member list crash-safely (temp file, fsync, rename).
func saveKnown(dir string, ms map[string]knownMember) error {
	l := knownList{Format: 1, Members: make([]knownMember, 0, len(ms))}
	for _, m := range ms {
		l.Members = append(l.Members, m)
	}
	raw, err := json.Marshal(l)
	if err != nil {
		return err
	}
	if err := atomicfile.Write(filepath.Join(dir, knownFile), raw, 0o600); err != nil {
		return fmt.Errorf("save known members: %w", err)
	}
	return nil
}

// asMember is a known member serf has not seen since this node started:
// listed as failed until it comes back or its reconnect timeout passes.
func (k knownMember) asMember() gossipapi.Member {
	return gossipapi.Member{Name: k.Name, Addr: k.Addr, Port: k.Port, PeerAPI: k.Tags[tagPeer], Status: gossipapi.StatusFailed, Subnet: k.Tags[tagSubnet], Tags: copyMap(k.Tags)}
}

func (k knownMember) serfAddr() string {
	return net.JoinHostPort(k.Addr, strconv.Itoa(k.Port))
}

// startKnown loads the persisted member list and flags the keys of every
// member in it as failed until serf sees it again. It runs before serf
// starts, so a join event from the snapshot rejoin clears the flag.
func (s *service) startKnown() {
	known, err := loadKnown(s.dir, s.cfg.Node.Name)
	if err != nil {
		s.log.Warn("known members from before the restart are not listed", "err", err)
	}
	s.mu.Lock()
	s.known = known
	s.mu.Unlock()
	for _, k := range known {
		if err := s.st.SetFailed(k.Name, true); err != nil {
			s.log.Warn("flag keys of a member not seen since the restart", "node", k.Name, "err", err)
		}
		m := k.asMember()
		s.decorate(&m)
		s.hub.publish(m)
	}
	if len(known) > 0 {
		s.log.Info("members known from before the restart, failed until seen again", "count", len(known))
	}
}

// unseen returns the known members serf does not list (not seen since
// this node started), given serf's current member names.
func (s *service) unseen(inSerf map[string]bool) []knownMember {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []knownMember
	for name, k := range s.known {
		if !inSerf[name] {
			out = append(out, k)
		}
	}
	return out
}

// noteMembers records a serf member event in the known list and asks for
// it to be saved.
func (s *service) noteMembers(e serf.MemberEvent) {
	s.mu.Lock()
	changed := false
	for _, m := range e.Members {
		if m.Name == s.cfg.Node.Name {
			continue
		}
		switch e.Type {
		case serf.EventMemberLeave, serf.EventMemberReap:
			if _, ok := s.known[m.Name]; ok {
				delete(s.known, m.Name)
				changed = true
			}
		default:
			k := knownMember{Name: m.Name, Addr: m.Addr.String(), Port: int(m.Port), Tags: copyMap(m.Tags), Seen: s.known[m.Name].Seen}
			if m.Status == serf.StatusAlive || k.Seen.IsZero() {
				k.Seen = time.Now().UTC()
			}
			s.known[m.Name] = k
			changed = true
		}
	}
	s.mu.Unlock()
	if changed {
		select {
		case s.knownDirty <- struct{}{}:
		default:
		}
	}
}

// forget drops a member from the known list (removed by the operator).
func (s *service) forget(node string) {
	s.mu.Lock()
	delete(s.known, node)
	s.mu.Unlock()
	select {
	case s.knownDirty <- struct{}{}:
	default:
	}
}

// knownLoop saves the known list after changes (at most every 10 s: in a
// large cluster members change often, and each save rewrites every
// member's tags and syncs the file) and
// every 5 minutes (so that "last seen alive" stays fresh for members with
// no events), and reaps known members never seen since the restart once
// their reconnect timeout has passed, as serf reaps a failed member.
func (s *service) knownLoop(ctx context.Context) {
	tick := time.NewTicker(time.Minute)
	defer tick.Stop()
	for i := 1; ; i++ {
		select {
		case <-ctx.Done():
			s.flushKnown()
			return
		case <-s.knownDirty:
			s.flushKnown()
			select {
			case <-ctx.Done():
				return
			case <-time.After(10 * time.Second):
			}
		case <-tick.C:
			s.reapUnseen(time.Now())
			if i%5 == 0 {
				s.flushKnown()
			}
		}
	}
}

// flushKnown marks the members serf lists alive as seen now and saves
// the list.
func (s *service) flushKnown() {
	s.mu.Lock()
	sf := s.serf
	s.mu.Unlock()
	var alive []string
	if sf != nil {
		for _, m := range sf.Members() {
			if m.Status == serf.StatusAlive {
				alive = append(alive, m.Name)
			}
		}
	}
	now := time.Now().UTC()
	s.mu.Lock()
	for _, n := range alive {
		if k, ok := s.known[n]; ok {
			k.Seen = now
			s.known[n] = k
		}
	}
	snap := make(map[string]knownMember, len(s.known))
	for k, v := range s.known {
		snap[k] = v
	}
	s.mu.Unlock()
	if err := saveKnown(s.dir, snap); err != nil {
		s.log.Warn("save known members", "err", err)
	}
}

// reapUnseen drops the keys of known members serf never saw since the
// restart, once both their last sighting and this start are longer ago
// than the reconnect timeout.
func (s *service) reapUnseen(now time.Time) {
	inSerf := s.serfNames()
	for _, k := range s.unseen(inSerf) {
		// Counted from the later of when it was last seen and this start.
		if now.Sub(k.Seen) <= s.cfg.Gossip.ReconnectTimeout || now.Sub(s.started) <= s.cfg.Gossip.ReconnectTimeout {
			continue
		}
		n, err := s.st.DropOwner(k.Name)
		if err != nil {
			s.log.Warn("drop the keys of a reaped member", "node", k.Name, "err", err)
			continue
		}
		s.log.Info("reaped a member not seen since the restart", "node", k.Name, "keys", n)
		m := k.asMember()
		m.Status = gossipapi.StatusLeft
		s.hub.publish(m)
		s.forget(k.Name)
	}
}

// serfNames returns the names serf lists.
func (s *service) serfNames() map[string]bool {
	s.mu.Lock()
	sf := s.serf
	s.mu.Unlock()
	out := map[string]bool{}
	if sf == nil {
		return out
	}
	for _, m := range sf.Members() {
		out[m.Name] = true
	}
	return out
}
