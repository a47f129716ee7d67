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

// gcPercent is stellar-gossip's GOGC when the environment sets none: an
// idle node keeps a live heap of a few MB, and Go's default (100) let a
// node of a 10-member cluster idle at 20 MiB RSS; 50 keeps it near 17.5 for
// a collection every few seconds of a small heap. See README.md.
const gcPercent = 50

func run(ctx context.Context, args []string) error {
	daemon.SetDefaultGCPercent(gcPercent)
	return daemon.Run(ctx, spec(), args)
}
