package main

import (
	"context"
	"log/slog"
	"sync"
	"time"
)

// imageStore is what the fetcher needs of containerd (containers.Runtime
// has it): whether an image is here, and getting it (from a peer, else its
// registry) when it is not.
type imageStore interface {
	HasImage(ctx context.Context, ref string) (bool, error)
	PrepareImage(ctx context.Context, ref string) error
}

// fetcherConfig tunes the image fetcher.
type fetcherConfig struct {
	// Parallel is how many images are fetched at once.
	Parallel int
	// BackoffMin and BackoffMax bound the wait before a failed fetch is
	// tried again (doubling from min).
	BackoffMin, BackoffMax time.Duration
	// Timeout bounds one fetch (a transfer from a peer, or a pull).
	Timeout time.Duration
}

// fetcher gets images this node lacks in the background, so a reconcile
// pass never waits for a transfer: at most Parallel at once, one fetch per
// image however many instances want it, a failed one tried again with
// backoff.
type fetcher struct {
	cfg   fetcherConfig
	store imageStore
	done  func() // called when a fetch ends (asks for a pass)
	log   *slog.Logger
	sem   chan struct{}

	mu   sync.Mutex
	jobs map[string]*fetchJob // by image ref
}

// fetchJob is the state of one image's fetch.
type fetchJob struct {
	running  bool
	failures int
	nextTry  time.Time
	err      error // of the last attempt
}

func newFetcher(cfg fetcherConfig, store imageStore, done func(), log *slog.Logger) *fetcher {
	if cfg.Parallel <= 0 {
		cfg.Parallel = 2
	}
	if cfg.BackoffMin <= 0 {
		cfg.BackoffMin = 2 * time.Second
	}
	if cfg.BackoffMax <= 0 {
		cfg.BackoffMax = 5 * time.Minute
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 30 * time.Minute
	}
	if done == nil {
		done = func() {}
	}
	return &fetcher{cfg: cfg, store: store, done: done, log: log, sem: make(chan struct{}, cfg.Parallel), jobs: map[string]*fetchJob{}}
}

// Image reports whether ref is on this node. When it is not, a fetch is
// started unless one runs or the last one failed less than its backoff
// ago: ready false with a nil error means it is being fetched (or queued);
// with an error, the last attempt failed (ErrNotFound: no peer has it and
// it cannot be pulled) and the next one waits out its backoff. ctx bounds
// the fetches started (the daemon's lifetime, not the pass's).
func (f *fetcher) Image(ctx context.Context, ref string, now time.Time) (bool, error) {
	f.mu.Lock()
	j := f.jobs[ref]
	if j != nil && j.running {
		f.mu.Unlock()
		return false, nil
	}
	f.mu.Unlock()
	ok, err := f.store.HasImage(ctx, ref)
	if err != nil {
		return false, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if ok {
		delete(f.jobs, ref)
		return true, nil
	}
	j = f.jobs[ref]
	if j == nil {
		j = &fetchJob{}
		f.jobs[ref] = j
	}
	if j.running {
		return false, nil
	}
	if j.err != nil && now.Before(j.nextTry) {
		return false, j.err
	}
	j.running = true
	go f.run(ctx, ref, j)
	return false, nil
}

// Fetching lists the images being fetched or queued.
func (f *fetcher) Fetching() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []string
	for ref, j := range f.jobs {
		if j.running {
			out = append(out, ref)
		}
	}
	return out
}

func (f *fetcher) run(ctx context.Context, ref string, j *fetchJob) {
	select {
	case f.sem <- struct{}{}:
	case <-ctx.Done():
		f.mu.Lock()
		j.running = false
		f.mu.Unlock()
		return
	}
	start := time.Now()
	fctx, cancel := context.WithTimeout(ctx, f.cfg.Timeout)
	err := f.store.PrepareImage(fctx, ref)
	cancel()
	<-f.sem
	f.mu.Lock()
	j.running = false
	j.err = err
	if err != nil {
		j.failures++
		d := f.cfg.BackoffMin << min(j.failures-1, 20)
		if d > f.cfg.BackoffMax || d <= 0 {
			d = f.cfg.BackoffMax
		}
		j.nextTry = time.Now().Add(d)
		f.log.Warn("fetch image", "image", ref, "err", err, "attempt", j.failures, "retry_in", d)
	} else {
		delete(f.jobs, ref)
		f.log.Info("image fetched", "image", ref, "took", time.Since(start).Round(time.Millisecond))
	}
	f.mu.Unlock()
	f.done()
}
