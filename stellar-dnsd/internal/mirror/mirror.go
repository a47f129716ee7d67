// Package mirror keeps a local copy of the parts of the cluster state DNS
// answers from (instances under nodes/, app specs under apps/ for their
// endpoints, custom records under dns/records/, and member statuses), fed by stellar-gossip's list and watch API, and
// rebuilds the zone whenever they change.
package mirror

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"time"

	"stellar.dev/api/appapi"
	"stellar.dev/api/dnsapi"
	"stellar.dev/api/errdefs"
	"stellar.dev/api/gossipapi"
	"stellar.dev/stellar-dnsd/internal/zone"
)

// Source is the part of stellar-gossip's API the mirror uses;
// *gossipapi.Client implements it.
type Source interface {
	Members(ctx context.Context) ([]gossipapi.Member, error)
	List(ctx context.Context, prefix string) (gossipapi.List, error)
	Watch(ctx context.Context, prefix string, rev uint64, members bool, fn func(gossipapi.Event) error) error
}

// Config tunes a Mirror.
type Config struct {
	// Settle is how long changes are gathered before the zone is rebuilt.
	Settle time.Duration
	// RetryMin and RetryMax bound the backoff between attempts to reach
	// stellar-gossip.
	RetryMin, RetryMax time.Duration
}

// DefaultConfig returns the timings stellar-dnsd uses: changes show in
// answers well within a second.
func DefaultConfig() Config {
	return Config{Settle: 20 * time.Millisecond, RetryMin: 200 * time.Millisecond, RetryMax: 5 * time.Second}
}

// Mirror is the local copy.
type Mirror struct {
	src     Source
	cfg     Config
	log     *slog.Logger
	publish func(entries map[string]gossipapi.Entry, members map[string]string)

	mu      sync.Mutex
	entries map[string]gossipapi.Entry
	members map[string]string
	synced  bool
	lastErr error
	dirty   chan struct{}
}

// New returns a mirror of src; publish is called with the whole copy after
// the first full sync and after every change (never concurrently; it must
// not keep the maps).
func New(src Source, cfg Config, log *slog.Logger, publish func(entries map[string]gossipapi.Entry, members map[string]string)) *Mirror {
	return &Mirror{src: src, cfg: cfg, log: log, publish: publish, dirty: make(chan struct{}, 1)}
}

// Relevant reports whether DNS reads key.
func Relevant(key string) bool {
	if strings.HasPrefix(key, dnsapi.RecordPrefix) || strings.HasPrefix(key, appapi.AppsPrefix) {
		return true
	}
	return strings.HasPrefix(key, zone.InstancePrefix) && strings.Contains(key, "/instances/")
}

// Err returns the last error talking to stellar-gossip, nil once a sync or
// watch works again.
func (m *Mirror) Err() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.lastErr
}

// Synced reports whether the first full sync is done.
func (m *Mirror) Synced() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.synced
}

// Run keeps the copy until ctx is done: list, then watch; after any error,
// list again (with backoff while stellar-gossip is away).
func (m *Mirror) Run(ctx context.Context) error {
	go m.publisher(ctx)
	backoff := m.cfg.RetryMin
	failures := 0
	for ctx.Err() == nil {
		listed, err := m.syncAndWatch(ctx)
		if listed {
			backoff = m.cfg.RetryMin
			failures = 0
		}
		if ctx.Err() != nil {
			return nil
		}
		m.mu.Lock()
		m.lastErr = err
		m.mu.Unlock()
		if errors.Is(err, errdefs.ErrGone) {
			m.log.Info("state watch fell behind: listing again")
			continue
		}
		if failures == 0 || failures%60 == 0 {
			m.log.Warn("sync with stellar-gossip: retrying (answering from the last zone; SERVFAIL for the zone until the first sync)", "err", err, "in", backoff, "failures", failures+1)
		} else {
			m.log.Debug("sync with stellar-gossip: retrying", "err", err, "in", backoff)
		}
		failures++
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, m.cfg.RetryMax)
	}
	return nil
}

var errWatchEnded = errors.New("state watch ended")

// syncAndWatch lists the state, publishes it, and follows the watch; listed
// says whether the list worked.
func (m *Mirror) syncAndWatch(ctx context.Context) (listed bool, err error) {
	members, err := m.src.Members(ctx)
	if err != nil {
		return false, err
	}
	entries := map[string]gossipapi.Entry{}
	var rev uint64
	for i, prefix := range []string{zone.InstancePrefix, appapi.AppsPrefix, dnsapi.RecordPrefix} {
		l, err := m.src.List(ctx, prefix)
		if err != nil {
			return false, err
		}
		if i == 0 || l.Rev < rev {
			rev = l.Rev
		}
		for _, e := range l.Entries {
			if Relevant(e.Key) {
				entries[e.Key] = e
			}
		}
	}
	ms := map[string]string{}
	for _, mb := range members {
		ms[mb.Name] = mb.Status
	}
	m.mu.Lock()
	first := !m.synced
	m.entries, m.members, m.synced, m.lastErr = entries, ms, true, nil
	m.mu.Unlock()
	if first {
		m.log.Info("zone synced with the cluster state", "entries", len(entries), "members", len(ms), "rev", rev)
	}
	m.kick()
	err = m.src.Watch(ctx, "", rev+1, true, func(ev gossipapi.Event) error {
		m.apply(ev)
		return nil
	})
	if err == nil {
		return true, errWatchEnded
	}
	return true, err
}

func (m *Mirror) apply(ev gossipapi.Event) {
	m.mu.Lock()
	defer m.mu.Unlock()
	changed := false
	switch ev.Type {
	case gossipapi.EventPut:
		if ev.Entry != nil && Relevant(ev.Entry.Key) {
			m.entries[ev.Entry.Key] = *ev.Entry
			changed = true
		}
	case gossipapi.EventDelete:
		if ev.Entry != nil && Relevant(ev.Entry.Key) {
			delete(m.entries, ev.Entry.Key)
			changed = true
		}
	case gossipapi.EventFlag:
		if ev.Entry != nil && Relevant(ev.Entry.Key) {
			if e, ok := m.entries[ev.Entry.Key]; ok {
				e.OwnerFailed = ev.Entry.OwnerFailed
				m.entries[ev.Entry.Key] = e
				changed = true
			} else if len(ev.Entry.Value) > 0 {
				// stellar-gossip sends the whole entry with the flag.
				m.entries[ev.Entry.Key] = *ev.Entry
				changed = true
			}
		}
	case gossipapi.EventMember:
		if ev.Member != nil && m.members[ev.Member.Name] != ev.Member.Status {
			m.members[ev.Member.Name] = ev.Member.Status
			changed = true
		}
	}
	if m.lastErr != nil {
		m.lastErr = nil
	}
	if changed {
		m.kickLocked()
	}
}

func (m *Mirror) kick() {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.kickLocked()
}

func (m *Mirror) kickLocked() {
	select {
	case m.dirty <- struct{}{}:
	default:
	}
}

// publisher rebuilds after changes settle, at most once per Settle.
func (m *Mirror) publisher(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-m.dirty:
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(m.cfg.Settle):
		}
		m.mu.Lock()
		if m.synced {
			m.publish(m.entries, m.members)
		}
		m.mu.Unlock()
	}
}
