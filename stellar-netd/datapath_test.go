package main

import (
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"
)

// The test binary doubles as the two ends of a TCP connection run inside
// namespaces (ip netns exec): a server that answers each client with the
// client's address as it sees it, and a client that prints that answer.
const (
	peerEchoEnv = "STELLAR_NETD_TEST_PEER_ECHO"
	dialEnv     = "STELLAR_NETD_TEST_DIAL"
)

// helperMain runs the binary as one of the helpers when asked; it reports
// whether it did.
func helperMain() (int, bool) {
	if addr := os.Getenv(peerEchoEnv); addr != "" {
		ln, err := net.Listen("tcp4", addr)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1, true
		}
		for {
			c, err := ln.Accept()
			if err != nil {
				fmt.Fprintln(os.Stderr, err)
				return 1, true
			}
			fmt.Fprintf(c, "%s\n", c.RemoteAddr().(*net.TCPAddr).IP)
			c.Close()
		}
	}
	if addr := os.Getenv(dialEnv); addr != "" {
		c, err := net.DialTimeout("tcp4", addr, 10*time.Second)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1, true
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(10 * time.Second))
		b, err := io.ReadAll(c)
		if err != nil || len(b) == 0 {
			fmt.Fprintf(os.Stderr, "read the answer of %s: %v (%d bytes)\n", addr, err, len(b))
			return 1, true
		}
		os.Stdout.Write(b)
		return 0, true
	}
	return 0, false
}

// peerEcho starts the echo server in ns on port 9000.
func peerEcho(t *testing.T, ns string) {
	t.Helper()
	cmd := exec.Command("ip", "netns", "exec", ns, os.Args[0])
	cmd.Env = append(os.Environ(), peerEchoEnv+"=0.0.0.0:9000")
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
}

// seenAs connects from ns to addr and returns the source address the
// server saw. A refused connection (the server not listening yet) is
// retried for a while; any other failure is the answer.
func seenAs(t *testing.T, ns, addr string) string {
	t.Helper()
	var out []byte
	var err error
	deadline := time.Now().Add(30 * time.Second)
	for {
		cmd := exec.Command("ip", "netns", "exec", ns, os.Args[0])
		cmd.Env = append(os.Environ(), dialEnv+"="+addr)
		out, err = cmd.CombinedOutput()
		if err == nil {
			return strings.TrimSpace(string(out))
		}
		if !strings.Contains(string(out), "connection refused") || time.Now().After(deadline) {
			t.Fatalf("connect from %s to %s: %v: %s", ns, addr, err, out)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// tracked returns the conntrack entries of ns that mention ip.
func tracked(t *testing.T, ns, ip string) []string {
	t.Helper()
	var out []string
	for _, l := range strings.Split(inNS(t, ns, "cat", "/proc/net/nf_conntrack"), "\n") {
		if strings.Contains(l, "="+ip+" ") {
			out = append(out, strings.TrimSpace(l))
		}
	}
	return out
}

// TestIntegration_notrackKeepsPortmapAndMasquerade: container to container
// traffic between nodes is not tracked by conntrack (netd's raw-priority
// notrack rules) and keeps its source address, while what needs conntrack
// still works: the masquerade of traffic leaving the cluster, and
// portmap's DNAT of a hostPort reached through a node's address (from a
// container on another node, through the node's gateway address, and from
// a container on the same bridge).
func TestIntegration_notrackKeepsPortmapAndMasquerade(t *testing.T) {
	needRoot(t)
	a, b, _, _ := twoNodes(t)
	var gwB string
	waitFor(t, 60*time.Second, "the two nodes hold different subnets and route each other's", func() bool {
		sa, sb := a.waitReady(t), b.waitReady(t)
		gwB = sb.Gateway
		return sa.Subnet != sb.Subnet && strings.Contains(routeOf(t, a, sb.Subnet), "via 10.77.0.2") && strings.Contains(routeOf(t, b, sa.Subnet), "via 10.77.0.1")
	})

	// An outside network beyond node a, with no route back to the cluster
	// range: only masqueraded traffic can get an answer.
	outside := netns(t, "out")
	veth := fmt.Sprintf("sto%d", os.Getpid()%100000)
	if out, err := exec.Command("ip", "link", "add", veth+"a", "netns", a.ns, "type", "veth", "peer", "name", veth+"b", "netns", outside).CombinedOutput(); err != nil {
		t.Fatalf("make veth: %v: %s", err, out)
	}
	inNS(t, a.ns, "ip", "addr", "add", "10.99.0.1/24", "dev", veth+"a")
	inNS(t, a.ns, "ip", "link", "set", veth+"a", "up")
	inNS(t, outside, "ip", "addr", "add", "10.99.0.2/24", "dev", veth+"b")
	inNS(t, outside, "ip", "link", "set", veth+"b", "up")

	ipA := addContainer(t, a, "nt-a")
	t.Setenv("CNIRUN_PORT_MAPPINGS", `[{"hostPort":8080,"containerPort":9000,"protocol":"tcp"}]`)
	ipB := addContainer(t, b, "nt-b")
	os.Unsetenv("CNIRUN_PORT_MAPPINGS")
	ipB2 := addContainer(t, b, "nt-b2")
	t.Cleanup(func() {
		for _, c := range []struct {
			n   *testNode
			ctr string
		}{{a, "nt-a"}, {b, "nt-b"}, {b, "nt-b2"}} {
			tryCNIRun(t, c.n, c.n.conflist(), "del", c.ctr, "/run/netns/"+netnsName(t, c.ctr), "eth0")
		}
	})
	ctrA, ctrB, ctrB2 := netnsName(t, "nt-a"), netnsName(t, "nt-b"), netnsName(t, "nt-b2")
	peerEcho(t, ctrB)
	peerEcho(t, outside)

	// Container to container across nodes: the real source address, and
	// no conntrack entry on either node.
	if got := seenAs(t, ctrA, ipB+":9000"); got != ipA {
		t.Fatalf("b's container saw a's container as %s, want %s (container traffic must not be masqueraded)", got, ipA)
	}
	for _, n := range []*testNode{a, b} {
		if got := tracked(t, n.ns, ipA); len(got) != 0 {
			t.Fatalf("node %s tracks container to container traffic, want none (notrack):\n%s\n%s", n.name, strings.Join(got, "\n"), inNS(t, n.ns, "nft", "list", "table", "ip", "stellar"))
		}
	}

	gwAddr := strings.SplitN(gwB, "/", 2)[0]
	cases := []struct {
		name, from, to string
		want           []string
	}{
		{"leaving the cluster is masqueraded", ctrA, "10.99.0.2:9000", []string{"10.99.0.1"}},
		{"hostPort on another node's address", ctrA, "10.77.0.2:8080", []string{"10.77.0.1"}},
		{"hostPort on another node's gateway address", ctrA, gwAddr + ":8080", []string{"10.77.0.1"}},
		// portmap (snat on) may rewrite a client on the same bridge to the
		// gateway; either way the connection must work.
		{"hostPort on the node's address from the same bridge", ctrB2, "10.77.0.2:8080", []string{ipB2, gwAddr}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := seenAs(t, tc.from, tc.to); !slices.Contains(tc.want, got) {
				t.Fatalf("the server saw the client as %s, want one of %v", got, tc.want)
			}
		})
	}
	if got := tracked(t, a.ns, ipA); len(got) == 0 {
		t.Fatal("node a tracks no connection of its container after masqueraded traffic: conntrack is off altogether")
	}

	// At rest netd does not reload its table (the kernel keeps the table's
	// handle), and a table deleted by hand comes back.
	handle := func() string {
		return strings.SplitN(inNS(t, b.ns, "nft", "-a", "list", "table", "ip", "stellar"), "\n", 2)[0]
	}
	before := handle()
	time.Sleep(2*checkInterval + time.Second)
	if after := handle(); after != before {
		t.Fatalf("netd reloaded an unchanged table: %q, then %q", before, after)
	}
	inNS(t, b.ns, "nft", "delete", "table", "ip", "stellar")
	waitFor(t, 30*time.Second, "the deleted nftables table comes back", func() bool {
		out, err := tryNS(b.ns, "nft", "list", "table", "ip", "stellar")
		return err == nil && strings.Contains(out, "notrack") && strings.Contains(out, "masquerade")
	})
}
