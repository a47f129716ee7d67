package store

import (
	"encoding/json"
	"errors"
	"maps"
	"path/filepath"
	"testing"
	"time"

	"stellar.dev/api/errdefs"
)

func open(t *testing.T, self string) *Store {
	t.Helper()
	s, err := Open(filepath.Join(t.TempDir(), "state.db"), self, Options{History: 5})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func TestStore_ifMatch(t *testing.T) {
	s := open(t, "a")
	r1, err := s.Put("apps/web", json.RawMessage(`{"n":1}`), "")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, ifMatch string
		want          error
	}{
		{"stale version", "0000000000000001.a", errdefs.ErrConflict},
		{"must not exist", "0", errdefs.ErrConflict},
		{"current version", r1.Version(), nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := s.Put("apps/web", json.RawMessage(`{"n":2}`), tc.ifMatch)
			if !errors.Is(err, tc.want) && !(tc.want == nil && err == nil) {
				t.Fatalf("Put with If-Match %q = %v, want %v", tc.ifMatch, err, tc.want)
			}
		})
	}
}

func TestStore_nodeOwnedKeysOfOthersRefused(t *testing.T) {
	s := open(t, "a")
	if _, err := s.Put("nodes/b/facts", json.RawMessage(`{}`), ""); !errors.Is(err, errdefs.ErrPermissionDenied) {
		t.Fatalf("got %v, want permission denied", err)
	}
	if _, err := s.Put("nodes/a/facts", json.RawMessage(`{}`), ""); err != nil {
		t.Fatal(err)
	}
}

func TestStore_mergeHighestVersionWins(t *testing.T) {
	a, b := open(t, "a"), open(t, "b")
	ra, _ := a.Put("apps/x", json.RawMessage(`"from a"`), "")
	rb, _ := b.Put("apps/x", json.RawMessage(`"from b"`), "")
	if _, err := a.Merge([]Record{rb.Wire()}); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Merge([]Record{ra.Wire()}); err != nil {
		t.Fatal(err)
	}
	ga, _ := a.Get("apps/x")
	gb, _ := b.Get("apps/x")
	if string(ga.Value) != string(gb.Value) || ga.Version() != gb.Version() {
		t.Fatalf("diverged: a=%s b=%s", ga.Value, gb.Value)
	}
}

func TestStore_tombstoneBeatsOlderValue(t *testing.T) {
	a, b := open(t, "a"), open(t, "b")
	r, _ := a.Put("apps/x", json.RawMessage(`1`), "")
	b.Merge([]Record{r.Wire()})
	del, err := b.Delete("apps/x", "")
	if err != nil {
		t.Fatal(err)
	}
	// The old value arrives again after the delete: it must not come back.
	b.Merge([]Record{r.Wire()})
	if _, err := b.Get("apps/x"); !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("deleted key came back: %v", err)
	}
	a.Merge([]Record{del.Wire()})
	if _, err := a.Get("apps/x"); !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("delete not applied: %v", err)
	}
}

func TestStore_watchBehindHistoryIsGone(t *testing.T) {
	s := open(t, "a")
	for i := 0; i < 8; i++ {
		s.Put("apps/x", json.RawMessage(`1`), "")
	}
	if _, err := s.Events(1, 100); !errors.Is(err, errdefs.ErrGone) {
		t.Fatalf("Events(1) = %v, want gone", err)
	}
	evs, err := s.Events(s.Oldest(), 100)
	if err != nil || len(evs) != 5 {
		t.Fatalf("Events(oldest) = %d, %v", len(evs), err)
	}
}

func TestStore_persistsAcrossReopen(t *testing.T) {
	p := filepath.Join(t.TempDir(), "state.db")
	s, _ := Open(p, "a", Options{})
	r, _ := s.Put("nodes/a/x", json.RawMessage(`1`), "")
	s.Close()
	s2, err := Open(p, "a", Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	if s2.Seq() != 1 || s2.Rev() != r.Rev {
		t.Fatalf("seq %d rev %d after reopen", s2.Seq(), s2.Rev())
	}
	r2, _ := s2.Put("nodes/a/x", json.RawMessage(`2`), "")
	if !Newer(r2.HLC, r2.Node, r.HLC, r.Node) {
		t.Fatal("clock went backwards after reopen")
	}
}

func TestStore_failedOwnerFlagged(t *testing.T) {
	a, b := open(t, "a"), open(t, "b")
	r, _ := b.Put("nodes/b/instances/x", json.RawMessage(`1`), "")
	a.Merge([]Record{r.Wire()})
	a.SetFailed("b", true)
	g, _ := a.Get("nodes/b/instances/x")
	if !a.Entry(g).OwnerFailed {
		t.Fatal("key of a failed node not flagged")
	}
	if n, _ := a.DropOwner("b"); n != 1 {
		t.Fatalf("dropped %d keys", n)
	}
	a.Merge([]Record{r.Wire()})
	if _, err := a.Get("nodes/b/instances/x"); err == nil {
		t.Fatal("a removed node's old key came back")
	}
}

func TestHLC_monotonic(t *testing.T) {
	fixed := time.Unix(1000, 0)
	c := NewHLC(func() time.Time { return fixed }, 0)
	a := c.Now()
	c.Observe(a + 100)
	if b := c.Now(); b <= a+100 {
		t.Fatalf("clock did not pass an observed time: %d <= %d", b, a+100)
	}
}

// TestStore_digestFollowsEveryChange checks that the digest, which is
// cached between changes, always equals one computed from the records.
func TestStore_digestFollowsEveryChange(t *testing.T) {
	now := time.Now()
	s, err := Open(filepath.Join(t.TempDir(), "state.db"), "a", Options{History: 5, Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	b := open(t, "b")
	rb, _ := b.Put("nodes/b/facts", json.RawMessage(`{"cpus":2}`), "")
	dc, _ := b.Put("apps/gone", json.RawMessage(`1`), "")
	dc, _ = b.Delete("apps/gone", dc.Version())
	for _, step := range []struct {
		name string
		do   func() error
	}{
		{"put", func() error { _, err := s.Put("apps/web", json.RawMessage(`1`), ""); return err }},
		{"put again", func() error { _, err := s.Put("apps/web", json.RawMessage(`2`), ""); return err }},
		{"own key", func() error { _, err := s.Put("nodes/a/facts", json.RawMessage(`{}`), ""); return err }},
		{"merge a peer's key", func() error { _, err := s.Merge([]Record{rb.Wire()}); return err }},
		{"merge a tombstone never seen", func() error { _, err := s.Merge([]Record{dc.Wire()}); return err }},
		{"delete", func() error { _, err := s.Delete("apps/web", ""); return err }},
		{"flag the owner failed", func() error { return s.SetFailed("b", true) }},
		{"drop the owner", func() error { _, err := s.DropOwner("b"); return err }},
		{"gc tombstones", func() error { now = now.Add(time.Hour); _, err := s.GC(time.Minute); return err }},
		{"drop cluster keys", func() error { _, err := s.DropClusterKeys(); return err }},
	} {
		t.Run(step.name, func(t *testing.T) {
			if _, _, err := s.Digest(); err != nil { // fills the cache
				t.Fatal(err)
			}
			if err := step.do(); err != nil {
				t.Fatal(err)
			}
			got, gotSeqs, err := s.Digest()
			if err != nil {
				t.Fatal(err)
			}
			recs, err := s.All()
			if err != nil {
				t.Fatal(err)
			}
			want, wantSeqs := digestOf(recs)
			if got != want || !maps.Equal(gotSeqs, wantSeqs) {
				t.Fatalf("digest after %s is stale: got %v %v, want %v %v", step.name, got, gotSeqs, want, wantSeqs)
			}
		})
	}
}
