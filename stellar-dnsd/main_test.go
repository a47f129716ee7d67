package main

import (
	"testing"

	"stellar.dev/daemon/daemontest"
)

func TestDaemon_lifecycle(t *testing.T) {
	daemontest.Lifecycle(t, "stellar.dev/stellar-dnsd", "dnsd", `[dns]
listen = ["127.0.0.1:0"]`)
}
