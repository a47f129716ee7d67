// Command stellar-appd runs this node's share of the cluster's applications on containerd.
package main

import (
	"context"
	"fmt"
	"os"

	"stellar.dev/daemon"
	"stellar.dev/stellar-appd/internal/logdriver"
)

func main() {
	if err := run(context.Background(), os.Args[1:]); err != nil {
		fmt.Fprintf(os.Stderr, "stellar-appd: %v\n", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string) error {
	daemon.SetDefaultGCPercent(gcPercent)
	if logdriver.Is(args) {
		// Started by containerd's shim as the binary log driver of a task.
		releaseInitHeap()
		return logdriver.Main(args)
	}
	return daemon.Run(ctx, spec(), args)
}
