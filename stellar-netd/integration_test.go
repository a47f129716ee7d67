package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"stellar.dev/api/gossipapi"
	"stellar.dev/api/netapi"
)

// twoNodes starts nodes a (10.77.0.1) and b (10.77.0.2) in their own
// network namespaces joined by a veth pair, with a shared fake gossip.
// linkedNamespaces makes two node namespaces joined by a veth pair:
// 10.77.0.1/24 in the first, 10.77.0.2/24 in the second.
func linkedNamespaces(t *testing.T, suffix string) (nsA, nsB, vethB string) {
	t.Helper()
	nsA, nsB = netns(t, suffix+"a"), netns(t, suffix+"b")
	veth := fmt.Sprintf("stv%d%s", os.Getpid()%100000, suffix)
	if out, err := exec.Command("ip", "link", "add", veth+"a", "netns", nsA, "type", "veth", "peer", "name", veth+"b", "netns", nsB).CombinedOutput(); err != nil {
		t.Fatalf("make veth: %v: %s", err, out)
	}
	inNS(t, nsA, "ip", "addr", "add", "10.77.0.1/24", "dev", veth+"a")
	inNS(t, nsA, "ip", "link", "set", veth+"a", "up")
	inNS(t, nsB, "ip", "addr", "add", "10.77.0.2/24", "dev", veth+"b")
	inNS(t, nsB, "ip", "link", "set", veth+"b", "up")
	return nsA, nsB, veth + "b"
}

// twoNodes starts nodes a (10.77.0.1) and b (10.77.0.2) in their own
// network namespaces joined by a veth pair, with a shared fake gossip.
func twoNodes(t *testing.T) (a, b *testNode, g *fakeGossip, vethB string) {
	t.Helper()
	bin, _, _ := binaries(t)
	nsA, nsB, vethB := linkedNamespaces(t, "")
	g = newFakeGossip()
	g.setMember("node-a", "10.77.0.1", gossipapi.StatusAlive)
	g.setMember("node-b", "10.77.0.2", gossipapi.StatusAlive)
	a = newNode(t, bin, "node-a", nsA, "")
	b = newNode(t, bin, "node-b", nsB, "")
	g.serve(t, "node-a", a.gossipSocket())
	g.serve(t, "node-b", b.gossipSocket())
	a.start(t)
	b.start(t)
	return a, b, g, vethB
}

func routeOf(t *testing.T, n *testNode, dst string) string {
	t.Helper()
	out, _ := tryNS(n.ns, "ip", "-4", "route", "show", "proto", "83", dst)
	return strings.TrimSpace(out)
}

func TestIntegration_twoNodesRoutesAndContainersPing(t *testing.T) {
	needRoot(t)
	a, b, g, vethB := twoNodes(t)
	a.waitReady(t)
	b.waitReady(t)
	// Both met the cluster at about the same time. When they picked the
	// same block the conflict rule makes node-b (the higher name, no
	// allocations) move; when one saw the other's claim first it picked
	// another block and there was no conflict. Either way they end apart,
	// with the first two blocks between them (the rule itself is unit-tested
	// in claim/).
	var sa, sb netapi.Status
	waitFor(t, 30*time.Second, "the two nodes hold different subnets", func() bool {
		sa, sb = a.waitReady(t), b.waitReady(t)
		return sa.Subnet != "" && sb.Subnet != "" && sa.Subnet != sb.Subnet
	})
	if got := map[string]bool{sa.Subnet: true, sb.Subnet: true}; !got["172.16.0.0/22"] || !got["172.16.4.0/22"] {
		t.Fatalf("node-a holds %s and node-b %s, want the first two blocks between them", sa.Subnet, sb.Subnet)
	}
	t.Logf("node-a %s, node-b %s", sa.Subnet, sb.Subnet)

	waitFor(t, 30*time.Second, "each node routes the other's subnet", func() bool {
		return strings.Contains(routeOf(t, a, sb.Subnet), "via 10.77.0.2") && strings.Contains(routeOf(t, b, sa.Subnet), "via 10.77.0.1")
	})
	// The bridge, the DNS address and the masquerade table are in place.
	if out := inNS(t, a.ns, "ip", "-4", "addr", "show", "dev", "stellar0"); !strings.Contains(out, sa.Gateway+"/22") {
		t.Fatalf("bridge address: %s", out)
	}
	if out := inNS(t, a.ns, "ip", "-4", "addr", "show", "dev", "lo"); !strings.Contains(out, "169.254.53.53/32") {
		t.Fatalf("dns address on lo: %s", out)
	}
	if out := inNS(t, a.ns, "nft", "list", "table", "ip", "stellar"); !strings.Contains(out, "masquerade") {
		t.Fatalf("nft table: %s", out)
	}

	// A container on each side (real bridge plugin + stellar-cni-ipam via libcni).
	ipA := addContainer(t, a, "ctr-a")
	ipB := addContainer(t, b, "ctr-b")
	t.Logf("container on a: %s, on b: %s", ipA, ipB)
	out, err := tryNS(netnsName(t, "ctr-a"), "ping", "-c", "2", "-W", "5", ipB)
	if err != nil {
		t.Fatalf("ping from a's container to b's: %v\n%s\nroutes a: %s", err, out, inNS(t, a.ns, "ip", "route"))
	}
	if out, err := tryNS(netnsName(t, "ctr-b"), "ping", "-c", "1", "-W", "5", ipA); err != nil {
		t.Fatalf("ping back: %v\n%s", err, out)
	}

	// A route deleted by hand comes back within the check interval.
	inNS(t, a.ns, "ip", "route", "del", sb.Subnet)
	waitFor(t, 30*time.Second, "the deleted route comes back", func() bool {
		return strings.Contains(routeOf(t, a, sb.Subnet), "via 10.77.0.2")
	})

	// A peer whose address changes gets its route moved.
	inNS(t, b.ns, "ip", "addr", "add", "10.77.0.3/24", "dev", vethB)
	g.setMember("node-b", "10.77.0.3", gossipapi.StatusAlive)
	waitFor(t, 30*time.Second, "the route follows the new address", func() bool {
		return strings.Contains(routeOf(t, a, sb.Subnet), "via 10.77.0.3")
	})

	// A peer that is not on a shared link is unroutable, with the reason.
	g.setMember("node-b", "192.0.2.50", gossipapi.StatusAlive)
	waitFor(t, 30*time.Second, "node-b shows as unroutable", func() bool {
		ss, err := a.c.Subnets(context.Background())
		if err != nil {
			return false
		}
		for _, s := range ss {
			if s.Node == "node-b" && s.Status == netapi.StatusUnroutable && s.Reason != "" {
				return true
			}
		}
		return false
	})

	// A peer that leaves loses its route.
	g.setMember("node-b", "10.77.0.2", gossipapi.StatusLeft)
	waitFor(t, 30*time.Second, "the route of a departed node goes away", func() bool {
		return routeOf(t, a, sb.Subnet) == ""
	})

	// A route netd did not make is never touched.
	inNS(t, a.ns, "ip", "route", "add", "192.168.99.0/24", "via", "10.77.0.2")
	time.Sleep(6 * time.Second) // more than one check interval
	if out := inNS(t, a.ns, "ip", "route", "show", "192.168.99.0/24"); !strings.Contains(out, "via 10.77.0.2") {
		t.Fatalf("a foreign route was touched: %q", out)
	}

	// DEL through the chain releases the IPs.
	delContainer(t, a, "ctr-a")
	delContainer(t, b, "ctr-b")
	if l, _ := a.c.Allocations(context.Background()); len(l) != 0 {
		t.Fatalf("after DEL node-a still holds %v", l)
	}

	// cleanup removes everything netd made.
	a.stop()
	if out, err := tryNS(a.ns, a.bin, "--config", a.cfgPath, "cleanup"); err != nil {
		t.Fatalf("cleanup: %v: %s", err, out)
	}
	if out, err := tryNS(a.ns, "ip", "link", "show", "stellar0"); err == nil {
		t.Fatalf("bridge left after cleanup: %s", out)
	}
	if out := inNS(t, a.ns, "ip", "-4", "addr", "show", "dev", "lo"); strings.Contains(out, "169.254.53.53") {
		t.Fatalf("dns address left after cleanup: %s", out)
	}
	if out := inNS(t, a.ns, "ip", "route", "show", "proto", "83"); strings.TrimSpace(out) != "" {
		t.Fatalf("routes left after cleanup: %s", out)
	}
	if _, err := tryNS(a.ns, "nft", "list", "table", "ip", "stellar"); err == nil {
		t.Fatal("nft table left after cleanup")
	}
}

func netnsName(t *testing.T, ctr string) string {
	return fmt.Sprintf("stn-%d-%s", os.Getpid(), ctr)
}

// addContainer makes a container netns and runs ADD of the node's CNI
// configuration in the node's namespace; it returns the container's IP.
func addContainer(t *testing.T, n *testNode, ctr string) string {
	t.Helper()
	ns := netns(t, ctr)
	res := cniRun(t, n, n.conflist(), "add", ctr, "/run/netns/"+ns, "eth0")
	var r struct {
		IPs []struct {
			Address string `json:"address"`
		} `json:"ips"`
	}
	if err := json.Unmarshal([]byte(res), &r); err != nil || len(r.IPs) == 0 {
		t.Fatalf("ADD result %q: %v", res, err)
	}
	return strings.SplitN(r.IPs[0].Address, "/", 2)[0]
}

func delContainer(t *testing.T, n *testNode, ctr string) {
	t.Helper()
	cniRun(t, n, n.conflist(), "del", ctr, "/run/netns/"+netnsName(t, ctr), "eth0")
}

func cniRun(t *testing.T, n *testNode, conflist, op, cid, netnsPath, ifname string) string {
	t.Helper()
	out, err := tryCNIRun(t, n, conflist, op, cid, netnsPath, ifname)
	if err != nil {
		t.Fatalf("cni %s %s: %v\n%s", op, cid, err, out)
	}
	return out
}

func tryCNIRun(t *testing.T, n *testNode, conflist, op, cid, netnsPath, ifname string) (string, error) {
	_, plugins, cnirun := binaries(t)
	cache := filepath.Join(n.dir, "cni-cache")
	return tryNS(n.ns, cnirun, op, conflist, cid, netnsPath, ifname, plugins, cache)
}
