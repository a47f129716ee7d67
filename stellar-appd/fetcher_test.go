package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"testing"
	"time"

	"stellar.dev/api/appapi"
	"stellar.dev/api/errdefs"
)

// gatedImages is an image store whose fetches wait for the test to open
// the gate, and may fail as told.
type gatedImages struct {
	mu         sync.Mutex
	has        map[string]bool
	calls      map[string]int
	fail       map[string]error // next fetch of ref fails with this
	running    int
	maxRunning int
	gate       chan struct{}
}

func newGatedImages() *gatedImages {
	return &gatedImages{has: map[string]bool{}, calls: map[string]int{}, fail: map[string]error{}, gate: make(chan struct{})}
}

func (g *gatedImages) HasImage(_ context.Context, ref string) (bool, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.has[ref], nil
}

func (g *gatedImages) PrepareImage(ctx context.Context, ref string) error {
	g.mu.Lock()
	g.calls[ref]++
	g.running++
	g.maxRunning = max(g.maxRunning, g.running)
	g.mu.Unlock()
	defer func() {
		g.mu.Lock()
		g.running--
		g.mu.Unlock()
	}()
	select {
	case <-g.gate:
	case <-ctx.Done():
		return ctx.Err()
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if err := g.fail[ref]; err != nil {
		delete(g.fail, ref)
		return err
	}
	g.has[ref] = true
	return nil
}

func (g *gatedImages) stats(ref string) (calls, running, maxRunning int) {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.calls[ref], g.running, g.maxRunning
}

func quietLog() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// waitUntil polls f (no timing assertion: the limit is only a guard).
func waitUntil(t *testing.T, what string, f func() bool) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for !f() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within 60s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestFetcher_oneFetchPerImageAtMostParallel(t *testing.T) {
	g := newGatedImages()
	f := newFetcher(fetcherConfig{Parallel: 2}, g, nil, quietLog())
	ctx := context.Background()
	refs := []string{"a", "b", "c", "d"}
	for round := 0; round < 3; round++ {
		for _, ref := range refs {
			ready, err := f.Image(ctx, ref, time.Now())
			if ready || err != nil {
				t.Fatalf("Image(%s) = %v, %v; want fetching", ref, ready, err)
			}
		}
	}
	waitUntil(t, "two fetches running", func() bool { _, running, _ := g.stats("a"); return running == 2 })
	if got := len(f.Fetching()); got != 4 {
		t.Fatalf("Fetching lists %d images, want 4 (2 running, 2 queued)", got)
	}
	close(g.gate)
	waitUntil(t, "every image fetched", func() bool { return len(f.Fetching()) == 0 })
	for _, ref := range refs {
		if ready, err := f.Image(ctx, ref, time.Now()); !ready || err != nil {
			t.Fatalf("Image(%s) after the fetch = %v, %v", ref, ready, err)
		}
		if calls, _, _ := g.stats(ref); calls != 1 {
			t.Fatalf("%s fetched %d times, want once", ref, calls)
		}
	}
	if _, _, most := g.stats(""); most > 2 {
		t.Fatalf("%d fetches ran at once, limit 2", most)
	}
}

func TestFetcher_failedFetchRetriesWithBackoff(t *testing.T) {
	g := newGatedImages()
	close(g.gate)
	done := make(chan struct{}, 10)
	f := newFetcher(fetcherConfig{BackoffMin: time.Hour, BackoffMax: 2 * time.Hour}, g, func() { done <- struct{}{} }, quietLog())
	ctx := context.Background()
	g.fail["img"] = errdefs.New(errdefs.ErrUnavailable, "peer went away")
	now := time.Now()
	if ready, err := f.Image(ctx, "img", now); ready || err != nil {
		t.Fatalf("first Image = %v, %v; want fetching", ready, err)
	}
	<-done
	// Within its backoff: the error, and no new attempt.
	ready, err := f.Image(ctx, "img", now.Add(time.Minute))
	if ready || !errors.Is(err, errdefs.ErrUnavailable) {
		t.Fatalf("Image within the backoff = %v, %v; want the last error", ready, err)
	}
	if calls, _, _ := g.stats("img"); calls != 1 {
		t.Fatalf("%d fetches within the backoff, want 1", calls)
	}
	// After it: tried again, and this time it works.
	if ready, err := f.Image(ctx, "img", time.Now().Add(61*time.Minute)); ready || err != nil {
		t.Fatalf("Image after the backoff = %v, %v; want fetching again", ready, err)
	}
	<-done
	if ready, err := f.Image(ctx, "img", time.Now()); !ready || err != nil {
		t.Fatalf("Image after the second fetch = %v, %v", ready, err)
	}
}

// TestReconciler_passNeverWaitsForAFetch: a pass that needs an image
// starts its fetch and returns; the instances show "fetching"; the fetch
// ends with a kick and the next pass creates them.
func TestReconciler_passNeverWaitsForAFetch(t *testing.T) {
	st := newFakeStore("a")
	putApp(t, st, `{"name":"web","services":[{"name":"www","image":"img","instances":3}]}`)
	rt := newFakeRuntime()
	r := newTestReconciler("a", st, rt)
	g := newGatedImages()
	r.images = newFetcher(fetcherConfig{}, g, r.Kick, quietLog())
	ctx := context.Background()
	passed := make(chan error, 1)
	go func() { passed <- r.Pass(ctx) }()
	select {
	case err := <-passed:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(60 * time.Second):
		t.Fatal("the pass waits for the image fetch")
	}
	if n := len(rt.ids()); n != 0 {
		t.Fatalf("%d containers made before the image is here", n)
	}
	for i := 0; i < 3; i++ {
		in := published(t, st, appapi.InstanceKey("a", "web", "www", i))
		if in.Status != appapi.StatusFetching {
			t.Fatalf("instance %d status %q, want fetching", i, in.Status)
		}
	}
	waitUntil(t, "the fetch running", func() bool { _, running, _ := g.stats("img"); return running == 1 })
	if err := r.Pass(ctx); err != nil { // a second pass while it runs
		t.Fatal(err)
	}
	if calls, _, _ := g.stats("img"); calls != 1 {
		t.Fatalf("image fetched %d times for 3 instances, want once", calls)
	}
	close(g.gate)
	select {
	case <-r.kick:
	case <-time.After(60 * time.Second):
		t.Fatal("no pass asked for when the fetch ended")
	}
	if err := r.Pass(ctx); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 3; i++ {
		if in := published(t, st, appapi.InstanceKey("a", "web", "www", i)); in.Status != appapi.StatusRunning {
			t.Fatalf("instance %d status %q after the fetch, want running", i, in.Status)
		}
	}
}

// TestReconciler_declinesOnlyWhenNoPeerHasTheImage: a fetch that fails
// for a reason worth another try keeps the instance "fetching" with the
// error; one that finds the image nowhere declines the service.
func TestReconciler_declinesOnlyWhenNoPeerHasTheImage(t *testing.T) {
	for _, tc := range []struct {
		name        string
		err         error
		wantStatus  string
		wantDecline bool
	}{
		{"transferFailed", errdefs.New(errdefs.ErrUnavailable, "a peer publishes image img but did not give it"), appapi.StatusFetching, false},
		{"digestMismatch", fmt.Errorf("no good copy: %w", errors.New("digest mismatch")), appapi.StatusFetching, false},
		{"nowhere", errdefs.New(errdefs.ErrNotFound, "no peer has image img and it cannot be pulled"), appapi.StatusFailed, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st := newFakeStore("a")
			putApp(t, st, `{"name":"web","services":[{"name":"www","image":"img"}]}`)
			rt := newFakeRuntime()
			r := newTestReconciler("a", st, rt)
			g := newGatedImages()
			close(g.gate)
			g.fail["img"] = tc.err
			done := make(chan struct{}, 1)
			r.images = newFetcher(fetcherConfig{BackoffMin: time.Hour}, g, func() { done <- struct{}{} }, quietLog())
			ctx := context.Background()
			if err := r.Pass(ctx); err != nil {
				t.Fatal(err)
			}
			<-done
			if err := r.Pass(ctx); err != nil {
				t.Fatal(err)
			}
			in := published(t, st, appapi.InstanceKey("a", "web", "www", 0))
			if in.Status != tc.wantStatus || in.Error == "" {
				t.Fatalf("instance %+v; want status %s with the error", in, tc.wantStatus)
			}
			declined := len(st.keys(appapi.DeclineKey("a", "web", "www"))) > 0
			if declined != tc.wantDecline {
				t.Fatalf("declined = %v, want %v", declined, tc.wantDecline)
			}
		})
	}
}

func published(t *testing.T, st *fakeStore, key string) appapi.Instance {
	t.Helper()
	e, err := st.Get(context.Background(), key)
	if err != nil {
		t.Fatalf("instance %s not published: %v", key, err)
	}
	var in appapi.Instance
	if err := json.Unmarshal(e.Value, &in); err != nil {
		t.Fatal(err)
	}
	return in
}
