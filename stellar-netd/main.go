// Command stellar-netd is the networking daemon of a Stellar node.
package main

import (
	"context"
	"fmt"
	"os"

	"stellar.dev/daemon"
)

func main() {
	if err := run(context.Background(), os.Args[1:]); err != nil {
		fmt.Fprintf(os.Stderr, "stellar-netd: %v\n", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string) error {
	return daemon.Run(ctx, spec(), args)
}
