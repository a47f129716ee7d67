// Command sctl is the operator's command-line tool of a Stellar cluster: it
// talks to the daemons of this node over their Unix sockets, or to a remote
// node's peer port with --addr.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:])
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "sctl:", err)
		os.Exit(1)
	}
}
