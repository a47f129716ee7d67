// Command stellar-gossip is the membership and replicated-state daemon of a Stellar node.
package main

import (
	"context"
	"fmt"
	"os"

	"stellar.dev/daemon"
)

func main() {
	if err := run(context.Background(), os.Args[1:]); err != nil {
		fmt.Fprintf(os.Stderr, "stellar-gossip: %v\n", err)
		os.Exit(1)
	}
}

// gcPercent is stellar-gossip's GOGC when the environment sets none, for
// a cluster of n members. A node keeps a live heap of a few MB; Go's
// default (100) let a node of a 10-member cluster idle at 20 MiB RSS, and
// 50 keeps it near 17.5. Collecting twice as often costs CPU, though (a
// node of 30 used 5.0 ms of CPU a second at 50 and 3.9 at 100, serf's
// agent 3.9), and past 32 members, where the state and its garbage grow
// with every member, the CPU counts for more: there it is 100. See
// README.md.
func gcPercent(n int) int {
	if n > 32 {
		return 100
	}
	return 50
}

func run(ctx context.Context, args []string) error {
	daemon.SetDefaultGCPercent(gcPercent(1))
	return daemon.Run(ctx, spec(), args)
}
