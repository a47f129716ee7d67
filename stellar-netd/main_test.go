package main

import (
	"fmt"
	"os"
	"os/exec"
	"testing"

	"stellar.dev/daemon/daemontest"
)

// netnsMarker is set in the environment of the test binary re-run inside
// its own network namespace.
const netnsMarker = "STELLAR_NETD_TEST_NETNS"

// TestMain runs every test of this package, as root, inside a network
// namespace of its own (unshare -n): netd changes host networking, and
// nothing of it may reach the host's namespace.
func TestMain(m *testing.M) {
	if code, ok := helperMain(); ok {
		os.Exit(code)
	}
	if os.Geteuid() == 0 && os.Getenv(netnsMarker) == "" {
		args := append([]string{"-n", "--", os.Args[0]}, os.Args[1:]...)
		cmd := exec.Command("unshare", args...)
		cmd.Env = append(os.Environ(), netnsMarker+"=1")
		cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
		if err := cmd.Run(); err != nil {
			if ee, ok := err.(*exec.ExitError); ok {
				os.Exit(ee.ExitCode())
			}
			fmt.Fprintf(os.Stderr, "run the tests in a private network namespace: %v\n", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	if os.Getenv(netnsMarker) != "" {
		_ = exec.Command("ip", "link", "set", "lo", "up").Run()
	}
	code := m.Run()
	if binDir != "" {
		os.RemoveAll(binDir)
	}
	os.Exit(code)
}

func TestDaemon_lifecycle(t *testing.T) {
	daemontest.Lifecycle(t, "stellar.dev/stellar-netd", "netd", ``)
}
