package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"stellar.dev/api/client"
	"stellar.dev/api/gossipapi"
	"stellar.dev/api/proxyapi"
	"stellar.dev/daemon/daemontest"
)

// gossipNode is a real stellar-gossip process on its own loopback address.
type gossipNode struct {
	t             *testing.T
	name, ip, dir string
	cmd           *exec.Cmd
	done          chan struct{}
	raw           *client.Client
	g             *gossipapi.Client
	out           *lockedWriter
	buf           *strings.Builder
	mu            sync.Mutex
}

func startGossip(t *testing.T, bin, name, ip string) *gossipNode {
	t.Helper()
	dir := tempDir(t)
	n := &gossipNode{t: t, name: name, ip: ip, dir: dir, done: make(chan struct{}), buf: &strings.Builder{}}
	n.out = &lockedWriter{mu: &n.mu, b: n.buf}
	cfg := fmt.Sprintf("[node]\nname = %q\nrun_dir = %q\nstate_dir = %q\nlog_level = \"debug\"\n[gossip]\nbind = \"%s:7946\"\npeer_api = \"%s:7947\"\nanti_entropy = \"1s\"\n",
		name, filepath.Join(dir, "run"), filepath.Join(dir, "state"), ip, ip)
	if err := os.WriteFile(filepath.Join(dir, "stellar.toml"), []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	n.cmd = exec.Command(bin, "--config", filepath.Join(dir, "stellar.toml"))
	n.cmd.Stdout, n.cmd.Stderr = n.out, n.out
	if err := n.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { n.cmd.Wait(); close(n.done) }()
	t.Cleanup(func() {
		n.cmd.Process.Kill()
		<-n.done
		if t.Failed() {
			n.mu.Lock()
			out := n.buf.String()
			n.mu.Unlock()
			if len(out) > 6000 {
				out = out[len(out)-6000:]
			}
			t.Logf("stellar-gossip %s output (tail):\n%s", name, out)
		}
	})
	n.raw = client.Unix("stellar-gossip", filepath.Join(dir, "run", "gossip.sock")).WithTimeout(10 * time.Second)
	n.g = gossipapi.New(n.raw)
	waitFor(t, name+" serves", func() bool {
		_, err := n.g.Members(context.Background())
		return err == nil
	})
	return n
}

func (g *gossipNode) putJSON(key string, v any) {
	g.t.Helper()
	if _, err := g.g.Put(context.Background(), key, v, ""); err != nil {
		g.t.Fatalf("put %s: %v", key, err)
	}
}

func (g *gossipNode) delete(key string) {
	g.t.Helper()
	if err := g.g.Delete(context.Background(), key, ""); err != nil {
		g.t.Fatalf("delete %s: %v", key, err)
	}
}

// proxyOn starts stellar-proxyd beside gossip node g (its own dir, with
// run/gossip.sock pointing at g's socket).
func proxyOn(t *testing.T, g *gossipNode) *node {
	t.Helper()
	dir := tempDir(t)
	if err := os.Symlink(filepath.Join(g.dir, "run", "gossip.sock"), filepath.Join(dir, "run", "gossip.sock")); err != nil {
		t.Fatal(err)
	}
	n := &node{http: freePort(t), https: freePort(t)}
	n.d = daemontest.Start(t, daemontest.Build(t, pkg), daemontest.Options{Name: "proxyd", Dir: dir, Config: proxyConfig(n.http, n.https)})
	n.d.WaitHealth(t, 30*time.Second)
	n.api = proxyapi.New(n.d.Client)
	waitFor(t, "proxyd on "+g.name+" reads the state", func() bool {
		st, err := n.api.Status(context.Background())
		return err == nil && st.Synced
	})
	return n
}

func putInstanceOn(t *testing.T, g *gossipNode, app string, i int, b *backend) {
	t.Helper()
	_, err := g.g.Put(context.Background(), fmt.Sprintf("nodes/%s/instances/%s/web/%d", g.name, app, i), map[string]any{
		"app": app, "service": "web", "index": i, "node": g.name, "ip": b.ip(), "status": "running", "health": "healthy",
		"ports": []map[string]int{{"host": 8080, "container": b.port()}},
	}, "")
	if err != nil {
		t.Fatal(err)
	}
}

// TestCluster_realGossip runs two stellar-gossip nodes with a proxyd each:
// instances published on either node are reachable through both proxies,
// weights set on one node apply on the other, and a node that fails stops
// getting traffic.
func TestCluster_realGossip(t *testing.T) {
	bin := daemontest.Build(t, "stellar.dev/stellar-gossip")
	g1 := startGossip(t, bin, "p1", "127.0.6.1")
	g2 := startGossip(t, bin, "p2", "127.0.6.2")
	joinCluster(t, g1, g2)
	waitFor(t, "p1 sees p2 alive", func() bool {
		ms, err := g1.g.Members(context.Background())
		if err != nil {
			return false
		}
		for _, m := range ms {
			if m.Name == "p2" {
				return m.Status == gossipapi.StatusAlive
			}
		}
		return false
	})
	p1 := proxyOn(t, g1)
	p2 := proxyOn(t, g2)

	b1 := startBackend(t, "c1", "127.0.6.11")
	b2 := startBackend(t, "c2", "127.0.6.12")
	if _, err := g1.g.Put(context.Background(), "apps/shop", appSpec("shop", "shop.test", "", false, nil), ""); err != nil {
		t.Fatal(err)
	}
	putInstanceOn(t, g1, "shop", 0, b1)
	putInstanceOn(t, g2, "shop", 1, b2)
	for _, p := range []*node{p1, p2} {
		waitBackends(t, p, "shop.test", 2)
		c := clientTo(p.http)
		seen := map[string]bool{}
		for i := 0; i < 10; i++ {
			_, body := get(t, c, "http://shop.test/")
			seen[strings.Fields(body)[0]] = true
		}
		if !seen["c1"] || !seen["c2"] {
			t.Errorf("proxy %s reached %v, want c1 and c2", p.http, seen)
		}
	}

	t.Run("weights set on one node apply on the other", func(t *testing.T) {
		b3 := startBackend(t, "k1", "127.0.6.13")
		if _, err := g1.g.Put(context.Background(), "apps/shopnext", appSpec("shopnext", "shop.test", "", false, nil), ""); err != nil {
			t.Fatal(err)
		}
		putInstanceOn(t, g1, "shopnext", 0, b3)
		if err := p2.api.SetHost(context.Background(), "shop.test", proxyapi.HostSettings{Weights: map[string]int{"shop/web": 0, "shopnext/web": 100}}); err != nil {
			t.Fatal(err)
		}
		waitFor(t, "p1 sends everything to shopnext", func() bool {
			for i := 0; i < 5; i++ {
				code, body := get(t, clientTo(p1.http), "http://shop.test/")
				if code != 200 || !strings.HasPrefix(body, "k1 ") {
					return false
				}
			}
			return true
		})
		if err := p2.api.SetHost(context.Background(), "shop.test", proxyapi.HostSettings{Weights: map[string]int{"shop/web": 100}}); err != nil {
			t.Fatal(err)
		}
		waitFor(t, "p1 back on shop", func() bool {
			_, body := get(t, clientTo(p1.http), "http://shop.test/")
			return !strings.HasPrefix(body, "k1 ")
		})
	})

	t.Run("a failed node's instances get no traffic", func(t *testing.T) {
		g2.cmd.Process.Kill()
		<-g2.done
		waitFor(t, "p1 drops p2's instance", func() bool {
			bs, err := p1.api.Backends(context.Background(), "shop.test")
			if err != nil {
				return false
			}
			for _, b := range bs {
				if b.Node == "p2" {
					return false
				}
			}
			return len(bs) >= 1
		})
	})
}
