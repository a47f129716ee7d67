package mirror

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"stellar.dev/api/errdefs"
	"stellar.dev/api/gossipapi"
)

// fakeSource is an in-memory stellar-gossip: List returns its entries,
// Watch replays the events sent on its channel.
type fakeSource struct {
	mu      sync.Mutex
	entries map[string]gossipapi.Entry
	members []gossipapi.Member
	events  chan gossipapi.Event
	lists   int
	down    bool
}

func (f *fakeSource) Members(ctx context.Context) ([]gossipapi.Member, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.down {
		return nil, errdefs.New(errdefs.ErrUnavailable, "stellar-gossip is not running")
	}
	return f.members, nil
}

func (f *fakeSource) List(ctx context.Context, prefix string) (gossipapi.List, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.lists++
	l := gossipapi.List{Rev: 10}
	for k, e := range f.entries {
		if strings.HasPrefix(k, prefix) {
			l.Entries = append(l.Entries, e)
		}
	}
	return l, nil
}

func (f *fakeSource) Watch(ctx context.Context, prefix string, rev uint64, members bool, fn func(gossipapi.Event) error) error {
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case ev := <-f.events:
			if ev.Type == "gone" {
				return errdefs.New(errdefs.ErrGone, "behind")
			}
			if err := fn(ev); err != nil {
				return err
			}
		}
	}
}

type published struct {
	mu      sync.Mutex
	entries map[string]gossipapi.Entry
	members map[string]string
	count   int
}

func (p *published) publish(e map[string]gossipapi.Entry, m map[string]string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.entries, p.members = map[string]gossipapi.Entry{}, map[string]string{}
	for k, v := range e {
		p.entries[k] = v
	}
	for k, v := range m {
		p.members[k] = v
	}
	p.count++
}

func (p *published) wait(t *testing.T, what string, ok func(e map[string]gossipapi.Entry, m map[string]string) bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		p.mu.Lock()
		done := p.entries != nil && ok(p.entries, p.members)
		p.mu.Unlock()
		if done {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("never published: %s (last %v %v)", what, p.entries, p.members)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func entry(key string, failed bool) gossipapi.Entry {
	return gossipapi.Entry{Key: key, Value: json.RawMessage(`{}`), OwnerFailed: failed}
}

func TestMirror_followsListAndWatch(t *testing.T) {
	key := "nodes/a/instances/app/web/0"
	src := &fakeSource{
		entries: map[string]gossipapi.Entry{key: entry(key, false), "nodes/a/facts": entry("nodes/a/facts", false), "apps/app": entry("apps/app", false)},
		members: []gossipapi.Member{{Name: "a", Status: "alive"}},
		events:  make(chan gossipapi.Event, 16),
		down:    true,
	}
	var p published
	m := New(src, Config{Settle: time.Millisecond, RetryMin: time.Millisecond, RetryMax: 10 * time.Millisecond}, slog.New(slog.NewTextHandler(io.Discard, nil)), p.publish)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go m.Run(ctx)

	time.Sleep(20 * time.Millisecond)
	if m.Synced() || m.Err() == nil {
		t.Fatalf("synced with gossip down: synced=%v err=%v", m.Synced(), m.Err())
	}
	src.mu.Lock()
	src.down = false
	src.mu.Unlock()
	p.wait(t, "the first list", func(e map[string]gossipapi.Entry, ms map[string]string) bool {
		_, facts := e["nodes/a/facts"]
		return len(e) == 2 && !facts && ms["a"] == "alive"
	})

	rr := "dns/records/db.example.stellar/A/1"
	src.events <- gossipapi.Event{Type: gossipapi.EventPut, Entry: &gossipapi.Entry{Key: rr, Value: json.RawMessage(`{}`)}}
	src.events <- gossipapi.Event{Type: gossipapi.EventPut, Entry: &gossipapi.Entry{Key: "proxy/routes/x", Value: json.RawMessage(`{}`)}}
	p.wait(t, "a put", func(e map[string]gossipapi.Entry, _ map[string]string) bool {
		_, ok := e[rr]
		_, proxy := e["proxy/routes/x"]
		return ok && !proxy
	})
	src.events <- gossipapi.Event{Type: gossipapi.EventFlag, Entry: &gossipapi.Entry{Key: key, OwnerFailed: true}}
	src.events <- gossipapi.Event{Type: gossipapi.EventMember, Member: &gossipapi.Member{Name: "a", Status: "failed"}}
	p.wait(t, "owner failed", func(e map[string]gossipapi.Entry, ms map[string]string) bool {
		return e[key].OwnerFailed && ms["a"] == "failed"
	})
	src.events <- gossipapi.Event{Type: gossipapi.EventDelete, Entry: &gossipapi.Entry{Key: rr}}
	p.wait(t, "a delete", func(e map[string]gossipapi.Entry, _ map[string]string) bool {
		_, ok := e[rr]
		return !ok
	})

	// A watcher that falls behind lists again.
	src.mu.Lock()
	before := src.lists
	src.entries[rr] = entry(rr, false)
	src.mu.Unlock()
	src.events <- gossipapi.Event{Type: "gone"}
	p.wait(t, "the list after 410 Gone", func(e map[string]gossipapi.Entry, _ map[string]string) bool {
		_, ok := e[rr]
		return ok
	})
	src.mu.Lock()
	after := src.lists
	src.mu.Unlock()
	if after <= before {
		t.Fatalf("no new list after Gone (%d -> %d)", before, after)
	}
	if err := m.Err(); err != nil && !errors.Is(err, errdefs.ErrGone) {
		t.Fatalf("err = %v", err)
	}
}
