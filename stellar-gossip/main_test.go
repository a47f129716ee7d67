package main

import (
	"testing"

	"stellar.dev/daemon/daemontest"
)

func TestDaemon_lifecycle(t *testing.T) {
	daemontest.Lifecycle(t, "stellar.dev/stellar-gossip", "gossip", `[gossip]
bind = "127.0.0.1:0"
peer_api = "127.0.0.1:0"`)
}
