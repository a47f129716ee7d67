package main

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"sync/atomic"

	"stellar.dev/api/appapi"
	"stellar.dev/stellar-appd/internal/containers"
)

// execer runs a command in a container (containers.Runtime has it).
type execer interface {
	Exec(ctx context.Context, id, execID string, args []string) (uint32, error)
}

// newProber returns the health check runner: HTTP and TCP checks go to the
// instance's address (loopback for host-network instances), exec checks
// run inside the container.
func newProber(ex execer, addrOf func(c containers.Container) string) prober {
	var seq atomic.Uint64
	hc := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	return func(ctx context.Context, c containers.Container, h *appapi.Health) error {
		switch {
		case h.HTTP != "":
			url := "http://" + net.JoinHostPort(addrOf(c), strconv.Itoa(h.Port)) + h.HTTP
			req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
			if err != nil {
				return fmt.Errorf("probe %s: %w", url, err)
			}
			req.Header.Set("User-Agent", "stellar-appd health check")
			resp, err := hc.Do(req)
			if err != nil {
				return fmt.Errorf("probe %s: %w", url, err)
			}
			resp.Body.Close()
			if resp.StatusCode >= 400 {
				return fmt.Errorf("probe %s: status %d", url, resp.StatusCode)
			}
			return nil
		case h.TCP:
			addr := net.JoinHostPort(addrOf(c), strconv.Itoa(h.Port))
			var d net.Dialer
			conn, err := d.DialContext(ctx, "tcp", addr)
			if err != nil {
				return fmt.Errorf("probe tcp %s: %w", addr, err)
			}
			return conn.Close()
		case len(h.Exec) > 0:
			code, err := ex.Exec(ctx, c.ID, fmt.Sprintf("health-%d", seq.Add(1)), h.Exec)
			if err != nil {
				return fmt.Errorf("probe exec %v: %w", h.Exec, err)
			}
			if code != 0 {
				return fmt.Errorf("probe exec %v: exit code %d", h.Exec, code)
			}
			return nil
		}
		return nil
	}
}
