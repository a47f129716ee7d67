package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"stellar.dev/api/client"
	"stellar.dev/api/errdefs"
	"stellar.dev/api/gossipapi"
	"stellar.dev/daemon/daemontest"
)

// testNode is one real stellar-gossip process bound to its own loopback
// address, with its run and state dirs in a temp dir.
type testNode struct {
	t     *testing.T
	bin   string
	name  string
	ip    string
	dir   string
	extra string
	cmd   *exec.Cmd
	out   *syncBuf
	done  chan struct{}
	raw   *client.Client
	g     *gossipapi.Client
}

type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuf) Write(p []byte) (int, error) { b.mu.Lock(); defer b.mu.Unlock(); return b.b.Write(p) }
func (b *syncBuf) String() string              { b.mu.Lock(); defer b.mu.Unlock(); return b.b.String() }

func needRoot(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("cluster tests bind 127.0.3.x addresses and set packet filters: needs root: SKIPPED (run as root, as CI does)")
	}
}

// newTestNode writes a config and starts the node.
func newTestNode(t *testing.T, bin, name, ip, extra string) *testNode {
	d, err := os.MkdirTemp("", "sg-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(d) })
	n := &testNode{t: t, bin: bin, name: name, ip: ip, dir: d, extra: extra}
	n.writeConfig(extra)
	n.start()
	t.Cleanup(func() {
		n.kill()
		if t.Failed() {
			t.Logf("--- %s output (tail):\n%s", name, tail(n.out.String(), 60))
		}
	})
	return n
}

func tail(s string, lines int) string {
	ls := strings.Split(s, "\n")
	if len(ls) > lines {
		ls = ls[len(ls)-lines:]
	}
	return strings.Join(ls, "\n")
}

func (n *testNode) writeConfig(extra string) {
	if !strings.Contains(extra, "reconnect_timeout") {
		extra += "\nreconnect_timeout = \"10m\""
	}
	cfg := fmt.Sprintf(`[node]
name = %q
run_dir = %q
state_dir = %q
log_level = "debug"
labels = ["node=%s"]
[gossip]
bind = "%s:7946"
peer_api = "%s:7947"
%s
`, n.name, filepath.Join(n.dir, "run"), filepath.Join(n.dir, "state"), n.name, n.ip, n.ip, extra)
	os.MkdirAll(filepath.Join(n.dir, "run"), 0o755)
	if err := os.WriteFile(filepath.Join(n.dir, "stellar.toml"), []byte(cfg), 0o644); err != nil {
		n.t.Fatal(err)
	}
}

func (n *testNode) start() {
	n.out = &syncBuf{}
	n.done = make(chan struct{})
	n.cmd = exec.Command(n.bin, "--config", filepath.Join(n.dir, "stellar.toml"))
	n.cmd.Stdout, n.cmd.Stderr = n.out, n.out
	if err := n.cmd.Start(); err != nil {
		n.t.Fatal(err)
	}
	done := n.done
	cmd := n.cmd
	go func() { cmd.Wait(); close(done) }()
	n.raw = client.Unix("stellar-gossip", filepath.Join(n.dir, "run", "gossip.sock")).WithTimeout(10 * time.Second)
	n.g = gossipapi.New(n.raw)
	eventually(n.t, 30*time.Second, n.name+" serves", func() error {
		_, err := n.g.Members(context.Background())
		return err
	})
}

func (n *testNode) kill() {
	select {
	case <-n.done:
	default:
		n.cmd.Process.Signal(syscall.SIGKILL)
		<-n.done
	}
}

// eventually polls f until it returns nil or the time is up.
func eventually(t *testing.T, within time.Duration, what string, f func() error) {
	t.Helper()
	deadline := time.Now().Add(within)
	var err error
	for {
		if err = f(); err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s: %v", what, within, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func (n *testNode) status(of string) string {
	ms, err := n.g.Members(context.Background())
	if err != nil {
		return "error: " + err.Error()
	}
	for _, m := range ms {
		if m.Name == of {
			return m.Status
		}
	}
	return "unknown"
}

func (n *testNode) token(t *testing.T, ttl string, uses int) TokenResponse {
	var tr TokenResponse
	if err := n.raw.Do(context.Background(), http.MethodPost, "/v1/cluster/tokens", TokenRequest{TTL: ttl, Uses: uses}, &tr); err != nil {
		t.Fatal(err)
	}
	return tr
}

func (n *testNode) join(tok string) error {
	return n.raw.Do(context.Background(), http.MethodPost, "/v1/cluster/join", JoinRequest{Token: tok}, nil)
}

func allSee(t *testing.T, nodes []*testNode, within time.Duration, want map[string]string) {
	t.Helper()
	eventually(t, within, fmt.Sprintf("every node sees %v", want), func() error {
		for _, n := range nodes {
			for of, st := range want {
				if got := n.status(of); got != st {
					return fmt.Errorf("%s sees %s as %s", n.name, of, got)
				}
			}
		}
		return nil
	})
}

// converged checks that every node holds the same live keys and versions.
func converged(nodes []*testNode, prefix string) error {
	var ref map[string]string
	for _, n := range nodes {
		l, err := n.g.List(context.Background(), prefix)
		if err != nil {
			return err
		}
		m := map[string]string{}
		for _, e := range l.Entries {
			m[e.Key] = e.Version
		}
		if ref == nil {
			ref = m
			continue
		}
		if len(m) != len(ref) {
			return fmt.Errorf("%s has %d keys under %q, %s has %d", n.name, len(m), prefix, nodes[0].name, len(ref))
		}
		for k, v := range ref {
			if m[k] != v {
				return fmt.Errorf("%s has %s at %q, %s at %q", n.name, k, m[k], nodes[0].name, v)
			}
		}
	}
	return nil
}

// partition drops loopback traffic between the two groups (nftables on
// lo) until the returned func is called.
func partition(t *testing.T, a, b []*testNode) func() {
	table := fmt.Sprintf("stellar_gossip_test_%d", os.Getpid())
	var rules strings.Builder
	fmt.Fprintf(&rules, "table inet %s {\n chain input {\n  type filter hook input priority 0; policy accept;\n", table)
	for _, x := range a {
		for _, y := range b {
			fmt.Fprintf(&rules, "  iif \"lo\" ip saddr %s ip daddr %s drop\n  iif \"lo\" ip saddr %s ip daddr %s drop\n", x.ip, y.ip, y.ip, x.ip)
		}
	}
	rules.WriteString(" }\n}\n")
	cmd := exec.Command("nft", "-f", "-")
	cmd.Stdin = strings.NewReader(rules.String())
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("nft: %v\n%s", err, out)
	}
	healed := false
	heal := func() {
		if !healed {
			healed = true
			if out, err := exec.Command("nft", "delete", "table", "inet", table).CombinedOutput(); err != nil {
				t.Errorf("remove partition: %v\n%s", err, out)
			}
		}
	}
	t.Cleanup(heal)
	return heal
}

func TestCluster_fiveNodes(t *testing.T) {
	needRoot(t)
	if _, err := exec.LookPath("nft"); err != nil {
		t.Skip("nft is missing: SKIPPED (make deps installs nftables)")
	}
	bin := daemontest.Build(t, "stellar.dev/stellar-gossip")
	ctx := context.Background()
	var nodes []*testNode
	for i := 1; i <= 5; i++ {
		nodes = append(nodes, newTestNode(t, bin, fmt.Sprintf("n%d", i), fmt.Sprintf("127.0.3.%d", i), `anti_entropy = "2s"`))
	}
	n1 := nodes[0]

	t.Run("allJoinByToken", func(t *testing.T) {
		tok := n1.token(t, "1h", 10)
		for _, n := range nodes[1:] {
			if err := n.join(tok.Token); err != nil {
				t.Fatalf("%s join: %v", n.name, err)
			}
		}
		want := map[string]string{}
		for _, n := range nodes {
			want[n.name] = "alive"
		}
		allSee(t, nodes, 60*time.Second, want)
	})

	t.Run("writeOnOneReadOnAll", func(t *testing.T) {
		if _, err := n1.g.Put(ctx, "apps/web", map[string]int{"instances": 3}, ""); err != nil {
			t.Fatal(err)
		}
		eventually(t, 30*time.Second, "apps/web everywhere", func() error {
			for _, n := range nodes {
				e, err := n.g.Get(ctx, "apps/web")
				if err != nil {
					return fmt.Errorf("%s: %w", n.name, err)
				}
				if string(e.Value) != `{"instances":3}` {
					return fmt.Errorf("%s has %s", n.name, e.Value)
				}
			}
			return nil
		})
		// Labels and facts of every node are in every node's member list.
		eventually(t, 30*time.Second, "labels everywhere", func() error {
			ms, err := nodes[4].g.Members(ctx)
			if err != nil {
				return err
			}
			for _, m := range ms {
				if m.Labels["node"] != m.Name || m.Facts == nil || m.Facts.CPUs == 0 {
					return fmt.Errorf("member %s lacks labels or facts: %+v", m.Name, m)
				}
			}
			return nil
		})
	})

	t.Run("ifMatchStaleConflicts", func(t *testing.T) {
		e, err := nodes[2].g.Get(ctx, "apps/web")
		if err != nil {
			t.Fatal(err)
		}
		if _, err := nodes[1].g.Put(ctx, "apps/web", map[string]int{"instances": 4}, e.Version); err != nil {
			t.Fatal(err)
		}
		eventually(t, 30*time.Second, "the write reaches n3", func() error {
			e2, err := nodes[2].g.Get(ctx, "apps/web")
			if err != nil || e2.Version == e.Version {
				return fmt.Errorf("still at %s (%v)", e.Version, err)
			}
			return nil
		})
		_, err = nodes[2].g.Put(ctx, "apps/web", map[string]int{"instances": 5}, e.Version)
		if !errors.Is(err, errdefs.ErrConflict) {
			t.Fatalf("stale If-Match: got %v, want a conflict", err)
		}
	})

	t.Run("killedNodeFailsAndRejoinsFromSnapshot", func(t *testing.T) {
		n5 := nodes[4]
		n5.kill()
		allSee(t, nodes[:4], 60*time.Second, map[string]string{"n5": "failed"})
		eventually(t, 10*time.Second, "n5's keys flagged", func() error {
			e, err := n1.g.Get(ctx, "nodes/n5/facts")
			if err != nil {
				return err
			}
			if !e.OwnerFailed {
				return errors.New("nodes/n5/facts is not flagged owner_failed")
			}
			return nil
		})
		// No peers in its config: it rejoins from its serf snapshot.
		n5.start()
		allSee(t, nodes, 60*time.Second, map[string]string{"n5": "alive"})
		eventually(t, 10*time.Second, "flag cleared", func() error {
			e, err := n1.g.Get(ctx, "nodes/n5/facts")
			if err != nil || e.OwnerFailed {
				return fmt.Errorf("still flagged (%v)", err)
			}
			return nil
		})
	})

	t.Run("partitionHealsAndConverges", func(t *testing.T) {
		if _, err := n1.g.Put(ctx, "apps/doomed", "x", ""); err != nil {
			t.Fatal(err)
		}
		eventually(t, 30*time.Second, "apps/doomed everywhere", func() error { return converged(nodes, "apps/") })
		a, b := nodes[:2], nodes[2:]
		heal := partition(t, a, b)
		allSee(t, a, 90*time.Second, map[string]string{"n3": "failed", "n4": "failed", "n5": "failed"})
		allSee(t, b, 90*time.Second, map[string]string{"n1": "failed", "n2": "failed"})
		for i := 0; i < 5; i++ {
			if _, err := nodes[0].g.Put(ctx, fmt.Sprintf("apps/a%d", i), i, ""); err != nil {
				t.Fatal(err)
			}
			if _, err := nodes[3].g.Put(ctx, fmt.Sprintf("apps/b%d", i), i, ""); err != nil {
				t.Fatal(err)
			}
		}
		// Both sides write the same key; the delete on side a must stick
		// against side b's older copy.
		nodes[3].g.Put(ctx, "apps/both", "from b", "")
		// Two writes in the same millisecond tie on the clock and the node
		// name decides; a few ms apart, the later one wins.
		time.Sleep(20 * time.Millisecond)
		nodes[1].g.Put(ctx, "apps/both", "from a", "")
		if err := nodes[1].g.Delete(ctx, "apps/doomed", ""); err != nil {
			t.Fatal(err)
		}
		heal()
		want := map[string]string{}
		for _, n := range nodes {
			want[n.name] = "alive"
		}
		allSee(t, nodes, 120*time.Second, want)
		eventually(t, 60*time.Second, "state converges after healing", func() error { return converged(nodes, "") })
		for _, n := range nodes {
			if _, err := n.g.Get(ctx, "apps/doomed"); !errors.Is(err, errdefs.ErrNotFound) {
				t.Fatalf("%s: apps/doomed came back after the partition: %v", n.name, err)
			}
			if e, err := n.g.Get(ctx, "apps/both"); err != nil || string(e.Value) != `"from a"` {
				t.Fatalf("%s: apps/both = %s, %v; want the later write", n.name, e.Value, err)
			}
		}
	})

	t.Run("lostStateNewWritesWin", func(t *testing.T) {
		n4 := nodes[3]
		if _, err := n4.g.Put(ctx, "nodes/n4/thing", "old", ""); err != nil {
			t.Fatal(err)
		}
		eventually(t, 30*time.Second, "old value everywhere", func() error { return converged(nodes, "nodes/n4/") })
		n4.kill()
		if err := os.Remove(filepath.Join(n4.dir, "state", "gossip", "state.db")); err != nil {
			t.Fatal(err)
		}
		n4.start()
		if _, err := n4.g.Put(ctx, "nodes/n4/thing", "new", ""); err != nil {
			t.Fatal(err)
		}
		eventually(t, 60*time.Second, "the new write wins everywhere", func() error {
			if err := converged(nodes, "nodes/n4/"); err != nil {
				return err
			}
			e, err := n1.g.Get(ctx, "nodes/n4/thing")
			if err != nil || string(e.Value) != `"new"` {
				return fmt.Errorf("n1 has %s (%v)", e.Value, err)
			}
			return nil
		})
	})

	t.Run("subnetTagReachesPeers", func(t *testing.T) {
		if err := nodes[2].g.SetSubnet(ctx, "172.16.8.0/22"); err != nil {
			t.Fatal(err)
		}
		if err := nodes[2].g.SetSubnet(ctx, "172.16.8.1/22"); !errors.Is(err, errdefs.ErrInvalidArgument) {
			t.Fatalf("a subnet that is not a network: %v", err)
		}
		eventually(t, 30*time.Second, "n3's subnet on n1", func() error {
			ms, err := n1.g.Members(ctx)
			if err != nil {
				return err
			}
			for _, m := range ms {
				if m.Name == "n3" && m.Subnet == "172.16.8.0/22" {
					return nil
				}
			}
			return errors.New("n1 does not see n3's subnet yet")
		})
	})

	t.Run("keyRotationLosesNoWrite", func(t *testing.T) {
		stop := make(chan struct{})
		var wg sync.WaitGroup
		var written []string
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				k := fmt.Sprintf("rot/k%03d", i)
				if _, err := nodes[1].g.Put(ctx, k, i, ""); err == nil {
					written = append(written, k)
				}
				time.Sleep(50 * time.Millisecond)
			}
		}()
		// Each step is a serf query: on a loaded machine a reply can be
		// missed, and the operator runs the (idempotent) step again.
		keys := func(what string, ok func(KeysResult) bool) KeysResult {
			var kl KeysResult
			eventually(t, 60*time.Second, what, func() error {
				kl = KeysResult{}
				if err := n1.raw.Do(ctx, http.MethodGet, "/v1/cluster/keys", nil, &kl); err != nil {
					return err
				}
				if !ok(kl) {
					return fmt.Errorf("keys %v from %d of 5 nodes (%v)", kl.Keys, kl.NumResp, kl.Messages)
				}
				return nil
			})
			return kl
		}
		keyOp := func(op, key string) KeysResult {
			var res KeysResult
			eventually(t, 60*time.Second, op+" answered by all 5 nodes", func() error {
				res = KeysResult{}
				if err := n1.raw.Do(ctx, http.MethodPost, "/v1/cluster/keys/"+op, KeyRequest{Key: key}, &res); err != nil {
					return err
				}
				if res.NumErr != 0 || res.NumResp != 5 {
					return fmt.Errorf("%d of 5 answered, %d errors: %v", res.NumResp, res.NumErr, res.Messages)
				}
				return nil
			})
			return res
		}
		before := keys("one key on 5 nodes before rotation", func(k KeysResult) bool { return len(k.Keys) == 1 && k.NumResp == 5 })
		var old string
		for k := range before.Keys {
			old = k
		}
		inst := keyOp("install", "")
		keyOp("use", inst.Key)
		keyOp("remove", old)
		time.Sleep(2 * time.Second)
		close(stop)
		wg.Wait()
		eventually(t, 60*time.Second, "every rotated-through write everywhere", func() error {
			for _, n := range nodes {
				l, err := n.g.List(ctx, "rot/")
				if err != nil {
					return err
				}
				if len(l.Entries) != len(written) {
					return fmt.Errorf("%s has %d of %d writes", n.name, len(l.Entries), len(written))
				}
			}
			return nil
		})
		keys("only the new key on 5 nodes", func(k KeysResult) bool { return len(k.Keys) == 1 && k.Keys[inst.Key] == 5 })
		want := map[string]string{}
		for _, n := range nodes {
			want[n.name] = "alive"
		}
		allSee(t, nodes, 30*time.Second, want)
	})

	t.Run("removeDeadNodeDropsItsKeys", func(t *testing.T) {
		n5 := nodes[4]
		if err := n1.raw.Do(ctx, http.MethodPost, "/v1/cluster/remove/n5", nil, nil); !errors.Is(err, errdefs.ErrConflict) {
			t.Fatalf("removing an alive node: %v, want a conflict", err)
		}
		n5.kill()
		allSee(t, nodes[:4], 60*time.Second, map[string]string{"n5": "failed"})
		if err := n1.raw.Do(ctx, http.MethodPost, "/v1/cluster/remove/n5", nil, nil); err != nil {
			t.Fatal(err)
		}
		eventually(t, 60*time.Second, "n5's keys gone everywhere", func() error {
			for _, n := range nodes[:4] {
				l, err := n.g.List(ctx, "nodes/n5/")
				if err != nil {
					return err
				}
				if len(l.Entries) != 0 {
					return fmt.Errorf("%s still has %d keys of n5", n.name, len(l.Entries))
				}
			}
			return nil
		})
	})
}
