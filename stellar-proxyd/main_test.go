package main

import (
	"testing"

	"stellar.dev/daemon/daemontest"
)

func TestDaemon_lifecycle(t *testing.T) {
	daemontest.Lifecycle(t, "stellar.dev/stellar-proxyd", "proxyd", `[proxy]
http = "127.0.0.1:0"
https = "127.0.0.1:0"`)
}
