package main

import (
	"context"
	"encoding/json"
	"net/http"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"stellar.dev/api/client"
	"stellar.dev/api/gossipapi"
	"stellar.dev/api/netapi"
	"stellar.dev/daemon/daemontest"
)

// TestIntegration_realGossip runs two nodes, each a network namespace with
// its own stellar-gossip and stellar-netd, joined with a token: each
// claims its own block, routes the other's, and drops the route when the
// other leaves the cluster.
func TestIntegration_realGossip(t *testing.T) {
	needRoot(t)
	bin, _, _ := binaries(t)
	gbin := daemontest.Build(t, "stellar.dev/stellar-gossip")
	nsA, nsB, _ := linkedNamespaces(t, "g")
	gossipConf := func(ip string) string {
		return "[gossip]\nbind = \"" + ip + ":7946\"\npeer_api = \"" + ip + ":7947\"\nreconnect_timeout = \"10m\"\n"
	}
	a := newNode(t, bin, "node-a", nsA, gossipConf("10.77.0.1"))
	b := newNode(t, bin, "node-b", nsB, gossipConf("10.77.0.2"))
	startGossip := func(n *testNode) *client.Client {
		cmd := exec.Command("ip", "netns", "exec", n.ns, gbin, "--config", n.cfgPath)
		w := syncWriter{n.logMu, n.logs}
		cmd.Stdout, cmd.Stderr = w, w
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		done := make(chan struct{})
		go func() { cmd.Wait(); close(done) }()
		t.Cleanup(func() {
			cmd.Process.Kill()
			<-done
		})
		return client.Unix("stellar-gossip", filepath.Join(n.dir, "run", "gossip.sock")).WithTimeout(10 * time.Second)
	}
	ga, gb := startGossip(a), startGossip(b)
	a.start(t)
	b.start(t)
	ctx := context.Background()
	var tok struct {
		Token string `json:"token"`
	}
	waitFor(t, 60*time.Second, "node-a's gossip makes a join token", func() bool {
		return ga.Do(ctx, http.MethodPost, "/v1/cluster/tokens", map[string]any{"ttl": "1h", "uses": 1}, &tok) == nil
	})
	waitFor(t, 60*time.Second, "node-b joins with the token", func() bool {
		err := gb.Do(ctx, http.MethodPost, "/v1/cluster/join", map[string]string{"token": tok.Token}, nil)
		if err != nil {
			t.Logf("join: %v", err)
		}
		return err == nil
	})
	var subA, subB string
	waitFor(t, 90*time.Second, "both nodes claim different subnets", func() bool {
		sa, err1 := a.c.Status(ctx)
		sb, err2 := b.c.Status(ctx)
		if err1 != nil || err2 != nil || sa.ClaimStatus != "claimed" || sb.ClaimStatus != "claimed" || !sa.HostReady || !sb.HostReady {
			return false
		}
		subA, subB = sa.Subnet, sb.Subnet
		return subA != subB
	})
	t.Logf("node-a %s, node-b %s", subA, subB)
	// Each claim is in gossip: the tag on the member and the node-owned key,
	// as node-a's gossip sees them.
	gcA := gossipapi.New(ga)
	waitFor(t, 90*time.Second, "node-b's claim reaches node-a's gossip as tag and key", func() bool {
		ms, err := gcA.Members(ctx)
		if err != nil {
			return false
		}
		tag := false
		for _, m := range ms {
			tag = tag || (m.Name == "node-b" && m.Subnet == subB)
		}
		e, err := gcA.Get(ctx, "nodes/node-b/subnet")
		if err != nil {
			return false
		}
		var c netapi.Claim
		return tag && json.Unmarshal(e.Value, &c) == nil && c.Subnet == subB && c.Node == "node-b"
	})
	waitFor(t, 90*time.Second, "each node routes the other's subnet through real gossip", func() bool {
		return strings.Contains(routeOf(t, a, subB), "via 10.77.0.2") && strings.Contains(routeOf(t, b, subA), "via 10.77.0.1")
	})
	ipA := addContainer(t, a, "rg-a")
	ipB := addContainer(t, b, "rg-b")
	if out, err := tryNS(netnsName(t, "rg-a"), "ping", "-c", "2", "-W", "5", ipB); err != nil {
		t.Fatalf("ping %s from a's container: %v\n%s", ipB, err, out)
	}
	_ = ipA
	// node-b leaves the cluster: node-a drops its route.
	if err := gb.Do(ctx, http.MethodPost, "/v1/cluster/leave", nil, nil); err != nil {
		t.Fatalf("leave: %v", err)
	}
	waitFor(t, 90*time.Second, "node-a drops the route of the node that left", func() bool {
		return routeOf(t, a, subB) == ""
	})
}
