package main

import (
	"context"
	"strings"
	"testing"
	"time"

	"stellar.dev/api/netapi"
)

// TestClaim_aloneSkipsHostRoutesAndSurvivesRestart: with no stellar-gossip
// at all, netd serves at once, stays provisional for the grace period,
// then claims a block that skips the host's own routes, and keeps it
// across a restart.
func TestClaim_aloneSkipsHostRoutesAndSurvivesRestart(t *testing.T) {
	needRoot(t)
	bin, _, _ := binaries(t)
	ns := netns(t, "alone")
	// A host route over 172.16.0.0/16, as a cloud VPC or Docker would have.
	inNS(t, ns, "ip", "link", "add", "vpc0", "type", "veth", "peer", "name", "vpc1")
	inNS(t, ns, "ip", "addr", "add", "172.16.0.10/16", "dev", "vpc0")
	inNS(t, ns, "ip", "link", "set", "vpc0", "up")
	n := newNode(t, bin, "alone", ns, "")
	n.start(t)
	ctx := context.Background()
	waitFor(t, 20*time.Second, "netd serves without gossip", func() bool {
		st, err := n.c.Status(ctx)
		return err == nil && st.Subnet != ""
	})
	st, _ := n.c.Status(ctx)
	if st.ClaimStatus != "provisional" || !strings.Contains(st.Reason, "provisional") {
		t.Fatalf("a lone new node must be provisional first: %+v", st)
	}
	if _, err := n.c.Allocate(ctx, allocReq("early")); err == nil {
		t.Fatal("allocated from a provisional claim")
	}
	st = n.waitReady(t)
	if st.Subnet != "172.17.0.0/22" {
		t.Fatalf("claimed %s, want 172.17.0.0/22 (172.16.0.0/16 is a host route)", st.Subnet)
	}
	a, err := n.c.Allocate(ctx, allocReq("c1"))
	if err != nil {
		t.Fatal(err)
	}
	n.stop()
	n.start(t)
	waitFor(t, 20*time.Second, "netd is back with its claim", func() bool {
		s, err := n.c.Status(ctx)
		return err == nil && s.ClaimStatus == "claimed"
	})
	st, _ = n.c.Status(ctx)
	if st.Subnet != "172.17.0.0/22" {
		t.Fatalf("after restart the claim is %s", st.Subnet)
	}
	b, err := n.c.Allocate(ctx, allocReq("c1"))
	if err != nil || b.Address != a.Address {
		t.Fatalf("after restart c1 has %v (%v), had %s", b.Address, err, a.Address)
	}
}

// TestClaim_fullRangeIsAClearError: a range with one block and two nodes:
// the loser says the range is full instead of hanging or sharing it.
// Which node loses depends on timing: node-a wins a conflict (lower
// name), but a node that has not picked yet when the other's claim is
// final picks around it and finds no free block.
func TestClaim_fullRangeIsAClearError(t *testing.T) {
	needRoot(t)
	bin, _, _ := binaries(t)
	g := newFakeGossip()
	g.setMember("node-a", "10.80.0.1", "alive")
	g.setMember("node-b", "10.80.0.2", "alive")
	extra := "subnet = \"172.16.0.0/22\"\nnode_prefix = 22\n"
	a := newNode(t, bin, "node-a", netns(t, "fulla"), extra)
	b := newNode(t, bin, "node-b", netns(t, "fullb"), extra)
	g.serve(t, "node-a", a.gossipSocket())
	g.serve(t, "node-b", b.gossipSocket())
	a.start(t)
	b.start(t)
	ctx := context.Background()
	var loser *testNode
	waitFor(t, 60*time.Second, "one node holds the block and the other reports the full range", func() bool {
		sa, err1 := a.c.Status(ctx)
		sb, err2 := b.c.Status(ctx)
		if err1 != nil || err2 != nil {
			return false
		}
		holds := func(s netapi.Status) bool { return s.ClaimStatus == "claimed" && s.Subnet == "172.16.0.0/22" }
		full := func(s netapi.Status) bool { return s.ClaimStatus != "claimed" && strings.Contains(s.Reason, "is full") }
		switch {
		case holds(sa) && full(sb):
			loser = b
		case holds(sb) && full(sa):
			loser = a
		}
		return loser != nil
	})
	if _, err := loser.c.Allocate(ctx, allocReq("c1")); err == nil {
		t.Fatalf("%s allocated without a subnet of its own", loser.name)
	}
}
