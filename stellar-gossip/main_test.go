package main

import (
	"fmt"
	"testing"

	"stellar.dev/daemon/daemontest"
)

func TestDaemon_lifecycle(t *testing.T) {
	daemontest.Lifecycle(t, "stellar.dev/stellar-gossip", "gossip", `[gossip]
bind = "127.0.0.1:0"
peer_api = "127.0.0.1:0"`)
}

func TestGCPercent_raisedPast32Members(t *testing.T) {
	for _, tc := range []struct{ n, want int }{{1, 50}, {10, 50}, {32, 50}, {33, 100}, {100, 100}} {
		t.Run(fmt.Sprint(tc.n), func(t *testing.T) {
			if got := gcPercent(tc.n); got != tc.want {
				t.Fatalf("gcPercent(%d) = %d, want %d", tc.n, got, tc.want)
			}
		})
	}
}
