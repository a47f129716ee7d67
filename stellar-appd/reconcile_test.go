package main

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"stellar.dev/api/appapi"
	"stellar.dev/api/errdefs"
	"stellar.dev/api/gossipapi"
	"stellar.dev/stellar-appd/internal/containers"
	"stellar.dev/stellar-appd/internal/placement"
)

// fakeStore is an in-memory cluster state for unit tests of the loop.
type fakeStore struct {
	mu      sync.Mutex
	members []gossipapi.Member
	kv      map[string]json.RawMessage
	ver     int
}

func newFakeStore(nodes ...string) *fakeStore {
	s := &fakeStore{kv: map[string]json.RawMessage{}}
	for _, n := range nodes {
		s.members = append(s.members, gossipapi.Member{Name: n, Status: gossipapi.StatusAlive})
	}
	return s
}

func (s *fakeStore) Members(context.Context) ([]gossipapi.Member, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]gossipapi.Member(nil), s.members...), nil
}

func (s *fakeStore) setStatus(node, status string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for i := range s.members {
		if s.members[i].Name == node {
			s.members[i].Status = status
		}
	}
}

func (s *fakeStore) Get(_ context.Context, key string) (gossipapi.Entry, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	v, ok := s.kv[key]
	if !ok {
		return gossipapi.Entry{}, errdefs.New(errdefs.ErrNotFound, "no key %s", key)
	}
	return gossipapi.Entry{Key: key, Value: v, Version: "v"}, nil
}

func (s *fakeStore) List(_ context.Context, prefix string) (gossipapi.List, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var l gossipapi.List
	for k, v := range s.kv {
		if strings.HasPrefix(k, prefix) {
			l.Entries = append(l.Entries, gossipapi.Entry{Key: k, Value: v, Version: "v"})
		}
	}
	return l, nil
}

func (s *fakeStore) Put(_ context.Context, key string, value any, _ string) (gossipapi.PutResult, error) {
	b, err := json.Marshal(value)
	if err != nil {
		return gossipapi.PutResult{}, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.kv[key] = b
	s.ver++
	return gossipapi.PutResult{Key: key, Version: "v"}, nil
}

func (s *fakeStore) Delete(_ context.Context, key, _ string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.kv, key)
	return nil
}

func (s *fakeStore) keys(prefix string) []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	for k := range s.kv {
		if strings.HasPrefix(k, prefix) {
			out = append(out, k)
		}
	}
	return out
}

// fakeRuntime is an in-memory containerd.
type fakeRuntime struct {
	mu      sync.Mutex
	cs      map[string]*containers.Container
	missing map[string]bool // images that cannot be had
	starts  map[string]int
	pid     uint32
}

func newFakeRuntime() *fakeRuntime {
	return &fakeRuntime{cs: map[string]*containers.Container{}, missing: map[string]bool{}, starts: map[string]int{}, pid: 100}
}

func (f *fakeRuntime) List(context.Context) ([]containers.Container, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []containers.Container
	for _, c := range f.cs {
		cc := *c
		cc.Labels = map[string]string{}
		for k, v := range c.Labels {
			cc.Labels[k] = v
		}
		out = append(out, cc)
	}
	return out, nil
}

func (f *fakeRuntime) Create(_ context.Context, s containers.Spec) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.missing[s.Service.Image] {
		return errdefs.New(errdefs.ErrNotFound, "image %s is not on this node and cannot be pulled", s.Service.Image)
	}
	if _, ok := f.cs[s.ID]; ok {
		return errdefs.New(errdefs.ErrAlreadyExists, "exists")
	}
	f.cs[s.ID] = &containers.Container{ID: s.ID, Labels: s.Labels, State: containers.StateCreated}
	return nil
}

func (f *fakeRuntime) Start(_ context.Context, id string, _ map[string]string) (uint32, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	c := f.cs[id]
	f.pid++
	c.State, c.PID = containers.StateRunning, f.pid
	f.starts[id]++
	return c.PID, nil
}

func (f *fakeRuntime) Stop(_ context.Context, id string, _ time.Duration) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if c := f.cs[id]; c != nil {
		c.State = containers.StateStopped
	}
	return nil
}

func (f *fakeRuntime) Remove(_ context.Context, id string, _ time.Duration) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.cs, id)
	return nil
}

func (f *fakeRuntime) SetLabel(_ context.Context, id, k, v string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.cs[id].Labels[k] = v
	return nil
}

func (f *fakeRuntime) PrepareImage(_ context.Context, ref string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.missing[ref] {
		return errdefs.New(errdefs.ErrNotFound, "image %s missing", ref)
	}
	return nil
}

func (f *fakeRuntime) crash(id string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.cs[id].State = containers.StateStopped
}

func (f *fakeRuntime) ids() map[string]bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := map[string]bool{}
	for id := range f.cs {
		out[id] = true
	}
	return out
}

func putApp(t *testing.T, st *fakeStore, spec string) appapi.App {
	t.Helper()
	a, _, err := appapi.Parse([]byte(spec))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.Put(context.Background(), appapi.AppKey(a.Name), appapi.Record{Spec: a, Generation: 1}, ""); err != nil {
		t.Fatal(err)
	}
	return a
}

func newTestReconciler(node string, st store, rt runtime) *reconciler {
	return newReconciler(reconcilerConfig{Node: node, RescheduleAfter: time.Minute, BackoffMin: 50 * time.Millisecond, BackoffMax: time.Second},
		st, rt, func(context.Context, containers.Container, *appapi.Health) error { return nil },
		slog.New(slog.NewTextHandler(io.Discard, nil)))
}

func TestReconciler_runsOnlyItsShare(t *testing.T) {
	st := newFakeStore("a", "b", "c")
	a := putApp(t, st, `{"name":"web","services":[{"name":"www","image":"img","instances":6}]}`)
	placed := placement.Place("web", &a.Services[0], []placement.Node{{Name: "a", Eligible: true}, {Name: "b", Eligible: true}, {Name: "c", Eligible: true}})
	all := map[string]bool{}
	for _, node := range []string{"a", "b", "c"} {
		rt := newFakeRuntime()
		r := newTestReconciler(node, st, rt)
		if err := r.Pass(context.Background()); err != nil {
			t.Fatal(err)
		}
		for i, n := range placed {
			id := containerID("web", "www", i)
			if rt.ids()[id] != (n == node) {
				t.Fatalf("node %s: has %s = %v, placed on %s", node, id, rt.ids()[id], n)
			}
			if n == node {
				all[id] = true
			}
		}
		// Its instances are published under its own keys.
		if got := len(st.keys("nodes/" + node + "/instances/web/www/")); got != len(rt.ids()) {
			t.Fatalf("node %s published %d instances, runs %d", node, got, len(rt.ids()))
		}
	}
	if len(all) != 6 {
		t.Fatalf("%d of 6 instances run somewhere", len(all))
	}
}

func TestReconciler_restartsWithBackoff(t *testing.T) {
	st := newFakeStore("a")
	putApp(t, st, `{"name":"web","services":[{"name":"www","image":"img"}]}`)
	rt := newFakeRuntime()
	r := newTestReconciler("a", st, rt)
	ctx := context.Background()
	id := containerID("web", "www", 0)
	if err := r.Pass(ctx); err != nil {
		t.Fatal(err)
	}
	var waits []time.Duration
	for round := range 3 {
		rt.crash(id)
		crashed := time.Now()
		if err := r.Pass(ctx); err != nil { // notices the exit
			t.Fatal(err)
		}
		for rt.starts[id] < round+2 {
			if time.Since(crashed) > 10*time.Second {
				t.Fatalf("round %d: not restarted", round)
			}
			time.Sleep(10 * time.Millisecond)
			if err := r.Pass(ctx); err != nil {
				t.Fatal(err)
			}
		}
		waits = append(waits, time.Since(crashed))
	}
	// Backoff doubles: 50ms, 100ms, 200ms at least.
	for i, min := range []time.Duration{50 * time.Millisecond, 100 * time.Millisecond, 200 * time.Millisecond} {
		if waits[i] < min {
			t.Fatalf("restart %d after %s, want at least %s (waits %v)", i, waits[i], min, waits)
		}
	}
	var in appapi.Instance
	e, _ := st.Get(ctx, appapi.InstanceKey("a", "web", "www", 0))
	_ = json.Unmarshal(e.Value, &in)
	if in.Restarts != 3 || in.Status != appapi.StatusRunning {
		t.Fatalf("published %+v, want 3 restarts, running", in)
	}
}

func TestReconciler_declinesWhatItCannotRun(t *testing.T) {
	st := newFakeStore("a", "b")
	putApp(t, st, `{"name":"web","services":[{"name":"www","image":"gone","instances":2}]}`)
	rtA, rtB := newFakeRuntime(), newFakeRuntime()
	rtA.missing["gone"] = true
	ra, rb := newTestReconciler("a", st, rtA), newTestReconciler("b", st, rtB)
	ctx := context.Background()
	_ = ra.Pass(ctx)
	if len(st.keys("nodes/a/declined/web/www")) != 1 {
		t.Fatal("no decline written")
	}
	_ = rb.Pass(ctx)
	if len(rtB.ids()) != 2 {
		t.Fatalf("b runs %v, want both instances once a declined", rtB.ids())
	}
	_ = ra.Pass(ctx)
	if len(rtA.ids()) != 0 {
		t.Fatalf("a runs %v after declining", rtA.ids())
	}
}

func TestReconciler_everyNodeDeclinedKeepsTrying(t *testing.T) {
	st := newFakeStore("a")
	putApp(t, st, `{"name":"web","services":[{"name":"www","image":"gone"}]}`)
	rt := newFakeRuntime()
	rt.missing["gone"] = true
	r := newTestReconciler("a", st, rt)
	ctx := context.Background()
	_ = r.Pass(ctx)
	_ = r.Pass(ctx)
	e, err := st.Get(ctx, appapi.InstanceKey("a", "web", "www", 0))
	if err != nil {
		t.Fatalf("failed instance not published: %v", err)
	}
	var in appapi.Instance
	_ = json.Unmarshal(e.Value, &in)
	if in.Status != appapi.StatusFailed || !strings.Contains(in.Error, "gone") {
		t.Fatalf("published %+v", in)
	}
	rt.mu.Lock()
	rt.missing["gone"] = false
	rt.mu.Unlock()
	deadline := time.Now().Add(10 * time.Second)
	for len(rt.ids()) != 1 {
		if time.Now().After(deadline) {
			t.Fatal("not created once the image came")
		}
		time.Sleep(20 * time.Millisecond)
		_ = r.Pass(ctx)
	}
}

func TestReconciler_handoverWaitsForHealthyCopy(t *testing.T) {
	st := newFakeStore("a", "b")
	a := putApp(t, st, `{"name":"web","services":[{"name":"www","image":"img","instances":1}]}`)
	ctx := context.Background()
	// Find who ranks first; the other node runs the instance now.
	ranked := placement.Rank("web", &a.Services[0], []placement.Node{{Name: "a", Eligible: true}, {Name: "b", Eligible: true}})
	owner, other := ranked[0], ranked[1]
	rtOther := newFakeRuntime()
	rOther := newTestReconciler(other, st, rtOther)
	// Cordon the owner: the other node takes the instance.
	_, _ = st.Put(ctx, appapi.ScheduleKey(owner), appapi.Schedule{State: appapi.Cordoned}, "")
	_ = rOther.Pass(ctx)
	id := containerID("web", "www", 0)
	if !rtOther.ids()[id] {
		t.Fatal("other node did not take the instance")
	}
	// Uncordon: the owner gets it back, but the other keeps its copy
	// until the owner publishes a running, healthy copy.
	_ = st.Delete(ctx, appapi.ScheduleKey(owner), "")
	_ = rOther.Pass(ctx)
	if !rtOther.ids()[id] {
		t.Fatal("old copy stopped before the new one runs")
	}
	rtOwner := newFakeRuntime()
	rOwner := newTestReconciler(owner, st, rtOwner)
	_ = rOwner.Pass(ctx)
	_ = rOther.Pass(ctx)
	if rtOther.ids()[id] {
		t.Fatal("old copy still running after the new one is healthy")
	}
	if !rtOwner.ids()[id] {
		t.Fatal("owner does not run it")
	}
}

func TestMemberClock_damping(t *testing.T) {
	mc := newMemberClock()
	t0 := time.Unix(1000, 0)
	after := time.Minute
	v := &view{members: []gossipapi.Member{{Name: "a", Status: "alive"}, {Name: "b", Status: "alive"}}, schedule: map[string]string{}}
	eligible := func(now time.Time) map[string]bool {
		out := map[string]bool{}
		for _, n := range mc.nodes(v, "a", now, after) {
			out[n.Name] = n.Eligible
		}
		return out
	}
	if e := eligible(t0); !e["a"] || !e["b"] {
		t.Fatalf("alive nodes not eligible: %v", e)
	}
	v.members[1].Status = "failed"
	if e := eligible(t0.Add(time.Second)); !e["b"] {
		t.Fatal("b lost its instances at once on failing")
	}
	if e := eligible(t0.Add(after + 2*time.Second)); e["b"] {
		t.Fatal("b still eligible after reschedule_after")
	}
	v.members[1].Status = "alive"
	back := t0.Add(2 * after)
	if e := eligible(back); e["b"] {
		t.Fatal("returning b eligible before it was stable")
	}
	if e := eligible(back.Add(after + time.Second)); !e["b"] {
		t.Fatal("b not eligible after being stable")
	}
	v.members[1].Status = "left"
	if e := eligible(back.Add(3 * after)); e["b"] {
		t.Fatal("a node that left is eligible")
	}
	v.schedule["a"] = appapi.Drained
	if e := eligible(back.Add(3 * after)); e["a"] {
		t.Fatal("drained node eligible")
	}
}

func TestReconciler_cordonedLoneNodeKeepsItsInstances(t *testing.T) {
	st := newFakeStore("a")
	putApp(t, st, `{"name":"web","services":[{"name":"www","image":"img","instances":2}]}`)
	rt := newFakeRuntime()
	r := newTestReconciler("a", st, rt)
	ctx := context.Background()
	_ = r.Pass(ctx)
	if len(rt.ids()) != 2 {
		t.Fatalf("runs %v", rt.ids())
	}
	_, _ = st.Put(ctx, appapi.ScheduleKey("a"), appapi.Schedule{State: appapi.Cordoned}, "")
	_ = r.Pass(ctx)
	if len(rt.ids()) != 2 {
		t.Fatalf("cordon with nowhere to go stopped instances: %v", rt.ids())
	}
	// Drained: stopped once the handover timeout passes.
	r.cfg.HandoverTimeout = 10 * time.Millisecond
	_, _ = st.Put(ctx, appapi.ScheduleKey("a"), appapi.Schedule{State: appapi.Drained}, "")
	_ = r.Pass(ctx)
	time.Sleep(20 * time.Millisecond)
	_ = r.Pass(ctx)
	if len(rt.ids()) != 0 {
		t.Fatalf("drained node still runs %v", rt.ids())
	}
}

func TestReconciler_declinesWithoutCapacity(t *testing.T) {
	st := newFakeStore("a", "b")
	putApp(t, st, `{"name":"big","services":[{"name":"db","image":"img","instances":1,"resources":{"memory":512}}]}`)
	ctx := context.Background()
	rts := map[string]*fakeRuntime{"a": newFakeRuntime(), "b": newFakeRuntime()}
	recs := map[string]*reconciler{}
	for n, rt := range rts {
		r := newTestReconciler(n, st, rt)
		r.cfg.MemoryMiB = 1024
		recs[n] = r
	}
	// Whichever node it lands on first is told it has only 256 MiB.
	for range 3 {
		for n, r := range recs {
			if len(st.keys("nodes/"+n+"/declined/")) == 0 && len(st.keys("nodes/a/declined/"))+len(st.keys("nodes/b/declined/")) == 0 {
				r.cfg.MemoryMiB = 256
			}
			_ = r.Pass(ctx)
			r.cfg.MemoryMiB = 1024
		}
	}
	declined := st.keys("nodes/a/declined/big/db")
	declined = append(declined, st.keys("nodes/b/declined/big/db")...)
	if len(declined) != 1 {
		t.Fatalf("declines %v, want one", declined)
	}
	e, _ := st.Get(ctx, declined[0])
	if !strings.Contains(string(e.Value), "no capacity: instance asks 512 MiB, 0 of 256 MiB are reserved") {
		t.Fatalf("decline %s", e.Value)
	}
	if len(rts["a"].ids())+len(rts["b"].ids()) != 1 {
		t.Fatalf("the instance does not run exactly once: a %v b %v", rts["a"].ids(), rts["b"].ids())
	}
}

// TestReconciler_onePassCreatesConcurrentlyWithinCapacity: the instances
// one pass creates at once still count against this node's memory as
// they are admitted, so a pass never overcommits.
func TestReconciler_onePassCreatesConcurrentlyWithinCapacity(t *testing.T) {
	st := newFakeStore("a")
	putApp(t, st, `{"name":"m","services":[{"name":"s","image":"img","instances":10,"resources":{"memory":100}}]}`)
	rt := newFakeRuntime()
	r := newTestReconciler("a", st, rt)
	r.cfg.MemoryMiB = 550
	if err := r.Pass(context.Background()); err != nil {
		t.Fatal(err)
	}
	if n := len(rt.ids()); n != 5 {
		t.Fatalf("%d instances created with room for 5", n)
	}
	running := 0
	for _, k := range st.keys("nodes/a/instances/m/s/") {
		e, _ := st.Get(context.Background(), k)
		var in appapi.Instance
		_ = json.Unmarshal(e.Value, &in)
		if in.Status == appapi.StatusRunning {
			running++
		}
	}
	if running != 5 {
		t.Fatalf("%d instances published running, want 5", running)
	}
}

// A restart of appd must not count a node that failed long ago as freshly
// failed: that would make it eligible again and move instances onto it.
func TestMemberClock_keptAcrossRestart(t *testing.T) {
	path := filepath.Join(t.TempDir(), "members-clock.json")
	after := time.Minute
	t0 := time.Unix(1000, 0)
	v := &view{members: []gossipapi.Member{{Name: "a", Status: "alive"}, {Name: "b", Status: "alive"}, {Name: "c", Status: "failed"}}, schedule: map[string]string{}}
	eligible := func(mc *memberClock, now time.Time) map[string]bool {
		out := map[string]bool{}
		for _, n := range mc.nodes(v, "a", now, after) {
			out[n.Name] = n.Eligible
		}
		if err := mc.save(); err != nil {
			t.Fatal(err)
		}
		return out
	}
	mc, err := loadMemberClock(path)
	if err != nil {
		t.Fatalf("missing file: %v", err)
	}
	eligible(mc, t0)
	if e := eligible(mc, t0.Add(2*after)); e["c"] {
		t.Fatal("c still eligible long after it failed")
	}
	tests := []struct {
		name    string
		content string // "" keeps what was saved
		wantC   bool
		wantErr string
	}{
		{name: "kept clock: c stays ineligible", wantC: false},
		{name: "unreadable clock starts over", content: "{not json", wantC: true, wantErr: "decode member clock"},
		{name: "other format starts over", content: `{"format": 2}`, wantC: true, wantErr: "format 2"},
	}
	saved, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			content := string(saved)
			if tc.content != "" {
				content = tc.content
			}
			if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
				t.Fatal(err)
			}
			mc, err := loadMemberClock(path)
			if tc.wantErr == "" && err != nil || tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)) {
				t.Fatalf("load: %v, want %q", err, tc.wantErr)
			}
			if e := eligible(mc, t0.Add(2*after+time.Second)); e["c"] != tc.wantC || !e["a"] || !e["b"] {
				t.Fatalf("after restart: %v, want c eligible %v", e, tc.wantC)
			}
		})
	}
}
