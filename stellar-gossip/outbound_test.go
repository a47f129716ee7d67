package main

import (
	"context"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"stellar.dev/api/errdefs"
	"stellar.dev/api/gossipapi"
	"stellar.dev/daemon/daemontest"
)

// TestOutbound_relayToPeer: a local daemon calls another member's daemon
// through its own gossip; unknown nodes, bad daemons and calls outside the
// receiving node's allowlist are refused; the placement tag reaches peers.
func TestOutbound_relayToPeer(t *testing.T) {
	needRoot(t)
	bin := daemontest.Build(t, "stellar.dev/stellar-gossip")
	ctx := context.Background()
	a := newTestNode(t, bin, "oa", "127.0.3.51", "")
	b := newTestNode(t, bin, "ob", "127.0.3.52", "")
	tok := a.token(t, "1h", 1)
	if err := b.join(tok.Token); err != nil {
		t.Fatalf("join: %v", err)
	}
	allSee(t, []*testNode{a, b}, 60*time.Second, map[string]string{"oa": "alive", "ob": "alive"})
	if _, err := b.g.Put(ctx, "nodes/ob/probe", map[string]string{"on": "ob"}, ""); err != nil {
		t.Fatal(err)
	}

	t.Run("readsThePeersDaemon", func(t *testing.T) {
		var info struct {
			Node string `json:"node"`
		}
		if err := a.raw.Do(ctx, http.MethodGet, "/v1/peers/ob/relay/gossip/v1/cluster/info", nil, &info); err != nil {
			t.Fatal(err)
		}
		if info.Node != "ob" {
			t.Fatalf("answered by %q, want ob", info.Node)
		}
	})
	t.Run("streamsABody", func(t *testing.T) {
		resp, err := a.raw.Open(ctx, http.MethodGet, "/v1/peers/ob/relay/gossip/v1/state?prefix=nodes/ob/", nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		raw, _ := io.ReadAll(resp.Body)
		if !strings.Contains(string(raw), "nodes/ob/probe") {
			t.Fatalf("answer lacks the key: %s", raw)
		}
	})
	for _, tc := range []struct {
		name, method, path string
		want               error
	}{
		{"unknownNode", http.MethodGet, "/v1/peers/nobody/relay/gossip/v1/members", errdefs.ErrNotFound},
		{"unknownDaemon", http.MethodGet, "/v1/peers/ob/relay/sshd/v1/x", errdefs.ErrInvalidArgument},
		{"outsideAllowlist", http.MethodPost, "/v1/peers/ob/relay/gossip/v1/cluster/leave", errdefs.ErrPermissionDenied},
	} {
		t.Run("refuses/"+tc.name, func(t *testing.T) {
			err := a.raw.Do(ctx, tc.method, tc.path, nil, nil)
			if !errors.Is(err, tc.want) {
				t.Fatalf("got %v, want %v", err, tc.want)
			}
		})
	}
	t.Run("placementTag", func(t *testing.T) {
		if err := a.raw.Do(ctx, http.MethodPut, "/v1/tags/placement", PlacementTag{Placement: "waytoolongvalue"}, nil); !errors.Is(err, errdefs.ErrInvalidArgument) {
			t.Fatalf("long value: got %v", err)
		}
		if err := a.raw.Do(ctx, http.MethodPut, "/v1/tags/placement", PlacementTag{Placement: "1"}, nil); err != nil {
			t.Fatal(err)
		}
		eventually(t, 60*time.Second, "ob sees oa's placement tag", func() error {
			ms, err := b.g.Members(ctx)
			if err != nil {
				return err
			}
			for _, m := range ms {
				if m.Name == "oa" && m.Tags[tagPlacement] == "1" {
					return nil
				}
			}
			return errors.New("not yet")
		})
	})
	_ = gossipapi.StatusAlive
}
