package main

import (
	"testing"

	"stellar.dev/daemon/daemontest"
)

func TestDaemon_lifecycle(t *testing.T) {
	daemontest.Lifecycle(t, "stellar.dev/stellar-appd", "appd", ``)
}
