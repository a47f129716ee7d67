package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"stellar.dev/daemon/daemontest"
)

// joinAll starts nodes named prefix1..N on ips and joins them by the
// first node's token; every node sees every other alive.
func joinAll(t *testing.T, bin, prefix string, ips []string, extra string) []*testNode {
	t.Helper()
	var nodes []*testNode
	for i, ip := range ips {
		nodes = append(nodes, newTestNode(t, bin, fmt.Sprintf("%s%d", prefix, i+1), ip, extra))
	}
	tok := nodes[0].token(t, "1h", 0)
	for _, n := range nodes[1:] {
		if err := n.join(tok.Token); err != nil {
			t.Fatalf("%s join: %v", n.name, err)
		}
	}
	allSee(t, nodes, 60*time.Second, allAlive(nodes))
	return nodes
}

func allAlive(nodes []*testNode) map[string]string {
	want := map[string]string{}
	for _, n := range nodes {
		want[n.name] = "alive"
	}
	return want
}

// flagged reports an error unless nodes/<of>/facts on n has owner_failed == want.
func flagged(n *testNode, of string, want bool) error {
	e, err := n.g.Get(context.Background(), "nodes/"+of+"/facts")
	if err != nil {
		return fmt.Errorf("%s: nodes/%s/facts: %w", n.name, of, err)
	}
	if e.OwnerFailed != want {
		return fmt.Errorf("%s: nodes/%s/facts owner_failed=%v, want %v", n.name, of, e.OwnerFailed, want)
	}
	return nil
}

func TestRestart_aloneListsKnownPeersAsFailed(t *testing.T) {
	needRoot(t)
	bin := daemontest.Build(t, "stellar.dev/stellar-gossip")
	nodes := joinAll(t, bin, "r", []string{"127.0.3.51", "127.0.3.52", "127.0.3.53"}, `anti_entropy = "2s"`)
	r1, r2, r3 := nodes[0], nodes[1], nodes[2]
	// Every node's facts everywhere before the power cut.
	eventually(t, 30*time.Second, "facts everywhere", func() error {
		for _, of := range nodes {
			if err := flagged(r1, of.name, false); err != nil {
				return err
			}
		}
		return nil
	})
	// The known list is saved within a few seconds of the joins.
	eventually(t, 30*time.Second, "members.json names r2 and r3", func() error {
		k, err := loadKnown(filepath.Join(r1.dir, "state", "gossip"), "r1")
		if err != nil || len(k) != 2 {
			return fmt.Errorf("known %v (%v)", k, err)
		}
		return nil
	})
	r2.kill()
	r3.kill()
	r1.kill()
	// No peer is reachable and none is configured: r1 alone.
	r1.start()
	ms, err := r1.g.Members(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, m := range ms {
		got[m.Name] = m.Status
		if m.Name != "r1" && (m.Addr == "" || m.Port == 0 || m.PeerAPI == "" || m.Labels["node"] != m.Name) {
			t.Errorf("known member listed without its address, peer API or labels: %+v", m)
		}
	}
	if want := map[string]string{"r1": "alive", "r2": "failed", "r3": "failed"}; fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("members after a lone restart: %v, want %v", got, want)
	}
	for _, of := range []string{"r2", "r3"} {
		if err := flagged(r1, of, true); err != nil {
			t.Error(err)
		}
	}
	if err := flagged(r1, "r1", false); err != nil {
		t.Error(err)
	}
	// They stay listed while nobody answers (r1 keeps trying them).
	time.Sleep(3 * time.Second)
	allSee(t, nodes[:1], time.Second, map[string]string{"r2": "failed", "r3": "failed"})

	// The two come back (from their snapshots, no peers configured).
	r2.start()
	r3.start()
	allSee(t, nodes, 90*time.Second, allAlive(nodes))
	eventually(t, 30*time.Second, "flags cleared everywhere", func() error {
		for _, n := range nodes {
			for _, of := range nodes {
				if err := flagged(n, of.name, false); err != nil {
					return err
				}
			}
		}
		return nil
	})
	ms, _ = r1.g.Members(context.Background())
	if len(ms) != 3 {
		t.Fatalf("r1 lists %d members after the rejoin, want 3: %+v", len(ms), ms)
	}
}

func TestKnown_load(t *testing.T) {
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	ok := knownMember{Name: "b", Addr: "10.0.0.2", Port: 7946, Seen: now.Add(-time.Hour)}
	tests := []struct {
		name    string
		file    string // "" = no file
		want    []string
		wantErr bool
	}{
		{name: "noFile", want: nil},
		{name: "keepsRecent", file: mustJSON(knownList{Format: 1, Members: []knownMember{ok}}), want: []string{"b"}},
		{name: "dropsSelf", file: mustJSON(knownList{Format: 1, Members: []knownMember{ok, {Name: "a", Addr: "10.0.0.1", Port: 7946, Seen: now}}}), want: []string{"b"}},
		{name: "keepsOldOnes", file: mustJSON(knownList{Format: 1, Members: []knownMember{{Name: "c", Addr: "10.0.0.3", Port: 7946, Seen: now.Add(-48 * time.Hour)}}}), want: []string{"c"}},
		{name: "dropsBadAddress", file: mustJSON(knownList{Format: 1, Members: []knownMember{{Name: "d", Addr: "nope", Port: 7946, Seen: now}, {Name: "e", Addr: "10.0.0.5", Port: 70000, Seen: now}}}), want: nil},
		{name: "wrongFormat", file: `{"format":2,"members":[]}`, wantErr: true},
		{name: "garbage", file: `{"format":`, wantErr: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			if tc.file != "" {
				if err := os.WriteFile(filepath.Join(dir, knownFile), []byte(tc.file), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			got, err := loadKnown(dir, "a")
			if (err != nil) != tc.wantErr {
				t.Fatalf("err = %v, want error %v", err, tc.wantErr)
			}
			if len(got) != len(tc.want) {
				t.Fatalf("got %v, want %v", got, tc.want)
			}
			for _, n := range tc.want {
				if _, ok := got[n]; !ok {
					t.Fatalf("got %v, want %v", got, tc.want)
				}
			}
		})
	}
	t.Run("saveThenLoad", func(t *testing.T) {
		dir := t.TempDir()
		if err := saveKnown(dir, map[string]knownMember{"b": ok}); err != nil {
			t.Fatal(err)
		}
		got, err := loadKnown(dir, "a")
		if err != nil || got["b"].Addr != "10.0.0.2" {
			t.Fatalf("got %v, %v", got, err)
		}
	})
}

func mustJSON(v any) string {
	raw, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return string(raw)
}
