package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"stellar.dev/api/errdefs"
	"stellar.dev/api/gossipapi"
	"stellar.dev/daemon/daemontest"
	"stellar.dev/stellar-gossip/store"
)

// member returns of as n lists it.
func member(n *testNode, of string) (gossipapi.Member, int, error) {
	ms, err := n.g.Members(context.Background())
	if err != nil {
		return gossipapi.Member{}, 0, err
	}
	for _, m := range ms {
		if m.Name == of {
			return m, len(ms), nil
		}
	}
	return gossipapi.Member{}, len(ms), fmt.Errorf("%s does not list %s", n.name, of)
}

func TestAddressChange_nodeIsStillItself(t *testing.T) {
	needRoot(t)
	bin := daemontest.Build(t, "stellar.dev/stellar-gossip")
	nodes := joinAll(t, bin, "m", []string{"127.0.3.61", "127.0.3.62", "127.0.3.63"}, `anti_entropy = "2s"`)
	ctx := context.Background()
	m1, m3 := nodes[0], nodes[2]
	if _, err := m3.g.Put(ctx, "nodes/m3/thing", "before", ""); err != nil {
		t.Fatal(err)
	}
	eventually(t, 30*time.Second, "nodes/m3/thing everywhere", func() error { return converged(nodes, "nodes/m3/") })
	// Same name and state dir, another address (a new DHCP lease), back
	// at once: the others still know it alive at the old address.
	m3.kill()
	m3.ip = "127.0.3.64"
	m3.writeConfig(m3.extra)
	m3.start()
	// The others let a dead node's name be reclaimed from a new address
	// after DeadNodeReclaimTime (30 s) once the old address is found dead.
	eventually(t, 150*time.Second, "m3 alive at its new address everywhere", func() error {
		for _, n := range nodes {
			m, count, err := member(n, "m3")
			if err != nil {
				return err
			}
			if m.Status != "alive" || m.Addr != "127.0.3.64" || !strings.HasPrefix(m.PeerAPI, "127.0.3.64:") {
				return fmt.Errorf("%s sees m3 %s at %s (peer API %s)", n.name, m.Status, m.Addr, m.PeerAPI)
			}
			if count != 3 {
				return fmt.Errorf("%s lists %d members, want 3", n.name, count)
			}
		}
		return nil
	})
	// Its keys are still its own: not flagged, and it can write them.
	if _, err := m3.g.Put(ctx, "nodes/m3/thing", "after", ""); err != nil {
		t.Fatal(err)
	}
	eventually(t, 60*time.Second, "m3's new write everywhere, unflagged", func() error {
		for _, n := range nodes {
			e, err := n.g.Get(ctx, "nodes/m3/thing")
			if err != nil {
				return fmt.Errorf("%s: %w", n.name, err)
			}
			if string(e.Value) != `"after"` || e.OwnerFailed || e.Owner != "m3" {
				return fmt.Errorf("%s has %s owner %s failed=%v", n.name, e.Value, e.Owner, e.OwnerFailed)
			}
		}
		return nil
	})
	// Anti-entropy and the relay reach it at the new address.
	var in info
	if err := m1.raw.Do(ctx, http.MethodGet, "/v1/peers/m3/relay/gossip/v1/cluster/info", nil, &in); err != nil || in.Node != "m3" {
		t.Fatalf("relay to m3 at its new address: %+v, %v", in, err)
	}
}

// metric reads one counter from a node's gossip.sock /metrics.
func metric(n *testNode, name string) (float64, error) {
	hc := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", filepath.Join(n.dir, "run", "gossip.sock"))
	}}}
	resp, err := hc.Get("http://x/metrics")
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0, err
	}
	for _, l := range strings.Split(string(raw), "\n") {
		if f := strings.Fields(l); len(f) == 2 && (f[0] == name || strings.HasPrefix(f[0], name+"{")) {
			return strconv.ParseFloat(f[1], 64)
		}
	}
	return 0, fmt.Errorf("%s has no metric %s", n.name, name)
}

func TestLargeValue_travelsByReference(t *testing.T) {
	needRoot(t)
	bin := daemontest.Build(t, "stellar.dev/stellar-gossip")
	// Anti-entropy far apart: within the test only the pushed reference
	// (or the tag-triggered pull) can carry the value.
	nodes := joinAll(t, bin, "b", []string{"127.0.3.71", "127.0.3.72", "127.0.3.73"}, `anti_entropy = "1h"`)
	ctx := context.Background()
	big := strings.Repeat("0123456789abcdef", 256) // 4 KiB
	if _, err := nodes[0].g.Put(ctx, "apps/big", big, ""); err != nil {
		t.Fatal(err)
	}
	eventually(t, 60*time.Second, "the 4 KiB value on every node", func() error {
		for _, n := range nodes {
			e, err := n.g.Get(ctx, "apps/big")
			if err != nil {
				return fmt.Errorf("%s: %w", n.name, err)
			}
			if string(e.Value) != `"`+big+`"` {
				return fmt.Errorf("%s has %d bytes", n.name, len(e.Value))
			}
		}
		return nil
	})
	pulled := 0.0
	for _, n := range nodes[1:] {
		v, err := metric(n, "stellar_gossip_pulled_by_reference_total")
		if err != nil {
			t.Fatal(err)
		}
		pulled += v
	}
	if pulled == 0 {
		t.Fatal("no node pulled the value on a reference")
	}
}

func TestEventPayload_largeGoesByReference(t *testing.T) {
	for _, tc := range []struct {
		name  string
		value string
		ref   bool
	}{
		{"small", `"x"`, false},
		{"justUnder", `"` + strings.Repeat("a", 700) + `"`, false},
		{"large", `"` + strings.Repeat("a", 2000) + `"`, true},
		{"max", `"` + strings.Repeat("a", store.MaxValue-2) + `"`, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rec := store.Record{Key: "apps/x", Value: []byte(tc.value), HLC: 42, Node: "a"}
			raw := eventPayload("a", rec)
			if len(raw) > maxEventPayload {
				t.Fatalf("payload of %d bytes, more than %d", len(raw), maxEventPayload)
			}
			m, err := decodeStateMsg(raw)
			if err != nil {
				t.Fatal(err)
			}
			if (m.Ref != nil) != tc.ref {
				t.Fatalf("by reference = %v, want %v", m.Ref != nil, tc.ref)
			}
			if tc.ref && (m.Ref.Key != "apps/x" || m.Ref.HLC != 42 || m.Ref.Node != "a") {
				t.Fatalf("reference %+v", m.Ref)
			}
		})
	}
}

func TestLongAbsence_fullResyncKeepsDeletes(t *testing.T) {
	needRoot(t)
	bin := daemontest.Build(t, "stellar.dev/stellar-gossip")
	// Tombstones live reconnect_timeout plus as much again (40 s here).
	nodes := joinAll(t, bin, "c", []string{"127.0.3.81", "127.0.3.82", "127.0.3.83"}, "anti_entropy = \"2s\"\nreconnect_timeout = \"20s\"")
	ctx := context.Background()
	c1, c2, c3 := nodes[0], nodes[1], nodes[2]
	for _, k := range []string{"apps/gone", "apps/kept"} {
		if _, err := c1.g.Put(ctx, k, "v", ""); err != nil {
			t.Fatal(err)
		}
	}
	eventually(t, 30*time.Second, "both keys everywhere", func() error {
		if err := converged(nodes, "apps/"); err != nil {
			return err
		}
		if l, err := c3.g.List(ctx, "apps/"); err != nil || len(l.Entries) != 2 {
			return fmt.Errorf("c3 has %d keys (%v)", len(l.Entries), err)
		}
		return nil
	})
	c3.kill()
	allSee(t, nodes[:2], 60*time.Second, map[string]string{"c3": "failed"})
	if err := c1.g.Delete(ctx, "apps/gone", ""); err != nil {
		t.Fatal(err)
	}
	if _, err := c2.g.Put(ctx, "apps/new", "v", ""); err != nil {
		t.Fatal(err)
	}
	// Away longer than the reconnect timeout: reaped, and the tombstone
	// of apps/gone collected on both nodes that stayed.
	eventually(t, 180*time.Second, "c3 reaped and the tombstone collected", func() error {
		for _, n := range nodes[:2] {
			if _, _, err := member(n, "c3"); err == nil {
				return fmt.Errorf("%s still lists c3", n.name)
			}
			if !strings.Contains(n.out.String(), "dropped old tombstones") {
				return fmt.Errorf("%s has not dropped the tombstone yet", n.name)
			}
		}
		return nil
	})
	c3.start()
	allSee(t, nodes, 120*time.Second, allAlive(nodes))
	check := func() error {
		if err := converged(nodes, "apps/"); err != nil {
			return err
		}
		for _, n := range nodes {
			if _, err := n.g.Get(ctx, "apps/gone"); !errors.Is(err, errdefs.ErrNotFound) {
				return fmt.Errorf("%s: apps/gone came back: %v", n.name, err)
			}
			if _, err := n.g.Get(ctx, "apps/new"); err != nil {
				return fmt.Errorf("%s: apps/new: %w", n.name, err)
			}
		}
		return nil
	}
	eventually(t, 60*time.Second, "c3 resynced: same state, apps/gone still deleted", check)
	if !strings.Contains(c3.out.String(), "full resync") {
		t.Error("c3 did not log a full resync")
	}
	// Several more anti-entropy rounds must not bring it back either.
	time.Sleep(8 * time.Second)
	if err := check(); err != nil {
		t.Fatal(err)
	}
}
