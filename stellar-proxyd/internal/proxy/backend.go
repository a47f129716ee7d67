package proxy

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"stellar.dev/api/proxyapi"
	"stellar.dev/stellar-proxyd/internal/route"
)

// Passive ejection: a backend with ejectAfter errors in a row, or one
// refused connection, gets no traffic for ejectFor (doubling while it keeps
// failing, up to ejectMax) unless an active check passes first.
const (
	ejectAfter = 3
	ejectFor   = 5 * time.Second
	ejectMax   = 60 * time.Second
)

// backend is the live state of one backend: health, ejection, requests in
// flight. It outlives table swaps as long as the backend stays in the table.
type backend struct {
	spec route.Backend

	healthy  atomic.Bool
	active   atomic.Int64
	ejectEnd atomic.Int64 // unix nanos

	mu        sync.Mutex
	errors    int // consecutive request errors
	ejections int // consecutive ejections
	lastErr   string

	pool connPool // kept-alive connections of the lean path

	stop func()
}

func newBackend(spec route.Backend) *backend {
	b := &backend{spec: spec}
	b.healthy.Store(true) // optimistic: passive ejection covers a dead one
	return b
}

// available reports whether the backend may get a request now.
func (b *backend) available(now int64) bool {
	return b.healthy.Load() && now >= b.ejectEnd.Load()
}

// reportError counts a failed request; refused connects eject at once.
func (b *backend) reportError(err error, refused bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.errors++
	b.lastErr = err.Error()
	if refused || b.errors >= ejectAfter {
		d := ejectFor << min(b.ejections, 4)
		d = min(d, ejectMax)
		b.ejections++
		b.errors = 0
		b.ejectEnd.Store(time.Now().Add(d).UnixNano())
	}
}

// reportSuccess resets the error count.
func (b *backend) reportSuccess() {
	if b.ejectEnd.Load() == 0 {
		b.mu.Lock()
		b.errors = 0
		b.mu.Unlock()
		return
	}
	b.mu.Lock()
	b.errors, b.ejections = 0, 0
	b.mu.Unlock()
	b.ejectEnd.Store(0)
}

func (b *backend) state() (health, lastErr string) {
	b.mu.Lock()
	lastErr = b.lastErr
	b.mu.Unlock()
	switch {
	case !b.healthy.Load():
		return proxyapi.HealthUnhealthy, lastErr
	case time.Now().UnixNano() < b.ejectEnd.Load():
		return proxyapi.HealthEjected, lastErr
	}
	return proxyapi.HealthHealthy, lastErr
}

// checkLoop runs the active health check until ctx is done.
func (b *backend) checkLoop(ctx context.Context, host string, hc *http.Client, onChange func(addr string, healthy bool, err error)) {
	c := b.spec.Check
	t := time.NewTicker(c.Interval)
	defer t.Stop()
	passes, fails := 0, 0
	for {
		err := b.check(ctx, host, hc)
		if ctx.Err() != nil {
			return
		}
		if err == nil {
			passes, fails = passes+1, 0
			if !b.healthy.Load() && passes >= c.Rise {
				b.healthy.Store(true)
				b.reportSuccess()
				onChange(b.spec.Addr, true, nil)
			} else if b.healthy.Load() && b.ejectEnd.Load() != 0 {
				b.reportSuccess() // a passing check ends a passive ejection
			}
		} else {
			fails, passes = fails+1, 0
			b.mu.Lock()
			b.lastErr = err.Error()
			b.mu.Unlock()
			if b.healthy.Load() && fails >= c.Fall {
				b.healthy.Store(false)
				onChange(b.spec.Addr, false, err)
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (b *backend) check(ctx context.Context, host string, hc *http.Client) error {
	c := b.spec.Check
	addr := b.spec.Addr
	if c.Port > 0 {
		h, _, _ := net.SplitHostPort(addr)
		addr = net.JoinHostPort(h, strconv.Itoa(c.Port))
	}
	ctx, cancel := context.WithTimeout(ctx, c.Timeout)
	defer cancel()
	if c.Kind != route.CheckHTTP {
		var d net.Dialer
		conn, err := d.DialContext(ctx, "tcp", addr)
		if err != nil {
			return fmt.Errorf("tcp check: %w", err)
		}
		return conn.Close()
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+c.Path, nil)
	if err != nil {
		return fmt.Errorf("http check: %w", err)
	}
	req.Host = host
	req.Header.Set("User-Agent", "stellar-proxyd-health")
	resp, err := hc.Do(req)
	if err != nil {
		return fmt.Errorf("http check: %w", err)
	}
	resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode >= 400 {
		return fmt.Errorf("http check: GET %s answered %d", c.Path, resp.StatusCode)
	}
	return nil
}
