package main

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"stellar.dev/api/appapi"
	"stellar.dev/api/client"
)

// twoNodes starts two full nodes (containerd, gossip, appd each) on
// 127.0.4.x and joins the second to the first.
func twoNodes(t *testing.T) (a, b *harness) {
	a = newNode(t, "", "node-a", "127.0.4.1", "7946")
	b = newNode(t, "", "node-b", "127.0.4.2", "7946")
	ctx := context.Background()
	ga := client.Unix("stellar-gossip", filepath.Join(a.dir, "run", "gossip.sock"))
	gb := client.Unix("stellar-gossip", filepath.Join(b.dir, "run", "gossip.sock"))
	var tok struct {
		Token string `json:"token"`
	}
	if err := ga.Do(ctx, http.MethodPost, "/v1/cluster/tokens", map[string]any{"ttl": "1h", "uses": 1}, &tok); err != nil {
		t.Fatalf("make join token: %v", err)
	}
	if err := gb.Do(ctx, http.MethodPost, "/v1/cluster/join", map[string]string{"token": tok.Token}, nil); err != nil {
		t.Fatalf("join node-b: %v", err)
	}
	eventually(t, 90*time.Second, "both nodes see each other alive", func() error {
		for _, h := range []*harness{a, b} {
			ms, err := h.g.Members(ctx)
			if err != nil {
				return err
			}
			alive := 0
			for _, m := range ms {
				if m.Status == "alive" {
					alive++
				}
			}
			if alive != 2 {
				return fmt.Errorf("%d alive members: %+v", alive, ms)
			}
		}
		return nil
	})
	return a, b
}

// TestAppd_twoNodes: an image imported on one node runs on the other,
// fetched through the peer port; logs of instances on both nodes are read
// from either.
func TestAppd_twoNodes(t *testing.T) {
	a, b := twoNodes(t)
	ctx := context.Background()
	r, err := os.Open(a.busybox)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.api.ImportImage(ctx, r); err != nil {
		t.Fatalf("import on node-a: %v", err)
	}
	r.Close()
	eventually(t, 60*time.Second, "node-b sees node-a's image list", func() error {
		e, err := b.g.Get(ctx, appapi.ImagesKey("node-a"))
		if err != nil {
			return err
		}
		if !strings.Contains(string(e.Value), "stellar.test/busybox:latest") {
			return fmt.Errorf("list: %s", e.Value)
		}
		return nil
	})
	spec := parse(t, `{"name":"pair","services":[{"name":"s","image":"stellar.test/busybox:latest","network":false,
		"process":{"args":["sh","-c","trap 'exit 0' TERM; while true; do echo line from $STELLAR_NODE; sleep 1; done"]},"instances":2}]}`)
	if _, err := a.api.Create(ctx, spec); err != nil {
		t.Fatal(err)
	}
	t.Run("imageFetchedFromPeer", func(t *testing.T) {
		eventually(t, 3*time.Minute, "one running instance on each node", func() error {
			st, err := b.api.Get(ctx, "pair")
			if err != nil {
				return err
			}
			on := map[string]bool{}
			for _, in := range st.Instances {
				if in.Status == appapi.StatusRunning && in.PID != 0 {
					on[in.Node] = true
				}
			}
			if !on["node-a"] || !on["node-b"] {
				return fmt.Errorf("running on %v: %+v", on, st.Instances)
			}
			return nil
		})
		imgs, err := b.api.Images(ctx)
		if err != nil {
			t.Fatal(err)
		}
		found := false
		for _, im := range imgs {
			found = found || im.Name == "stellar.test/busybox:latest"
		}
		if !found {
			t.Fatalf("node-b's images lack busybox: %+v", imgs)
		}
	})
	t.Run("logsOfEveryNode", func(t *testing.T) {
		for _, h := range []*harness{a, b} {
			eventually(t, 60*time.Second, "lines of both nodes", func() error {
				seen := map[string]bool{}
				err := h.api.Logs(ctx, "pair", "s", false, "", func(l appapi.LogLine) error {
					if l.Stream != "error" && strings.Contains(l.Message, "line from "+l.Node) && strings.HasSuffix(l.Instance, ".s.pair") {
						seen[l.Node] = true
					}
					return nil
				})
				if err != nil {
					return err
				}
				if !seen["node-a"] || !seen["node-b"] {
					return fmt.Errorf("lines from %v", seen)
				}
				return nil
			})
		}
	})
	t.Run("placementTag", func(t *testing.T) {
		eventually(t, 60*time.Second, "node-a sees node-b's placement tag", func() error {
			ms, err := a.g.Members(ctx)
			if err != nil {
				return err
			}
			for _, m := range ms {
				if m.Name == "node-b" && m.Tags["pl"] == "1" {
					return nil
				}
			}
			return fmt.Errorf("members: %+v", ms)
		})
	})
}
