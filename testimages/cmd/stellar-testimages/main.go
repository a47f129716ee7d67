// Command stellar-testimages writes Stellar's test image archives
// (busybox.tar and httpd.tar, OCI image layouts) into a directory.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"

	"stellar.dev/testimages"
)

func main() {
	if err := run(context.Background(), os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "stellar-testimages:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string) error {
	fset := flag.NewFlagSet("stellar-testimages", flag.ContinueOnError)
	out := fset.String("out", ".", "directory to write busybox.tar and httpd.tar into")
	busybox := fset.String("busybox", "/bin/busybox", "static busybox binary (Debian's busybox-static)")
	httpd := fset.String("httpd", "", "prebuilt static httpd binary (default: build testimages/httpd with go)")
	fset.Usage = func() {
		fmt.Fprintf(fset.Output(), `Usage: stellar-testimages [--out DIR]

Writes two OCI image archives for Stellar's tests into DIR:
  busybox.tar  %s (static busybox and its applets)
  httpd.tar    %s (GET / -> hostname, GET /health -> 200; listens on :8080)
Import them with: ctr -n NS images import FILE

Flags:
`, testimages.BusyboxRef, testimages.HTTPDRef)
		fset.PrintDefaults()
	}
	if err := fset.Parse(args); err != nil {
		return err
	}
	bb, hd, err := testimages.Build(ctx, *out, testimages.Options{Busybox: *busybox, HTTPD: *httpd})
	if err != nil {
		return err
	}
	fmt.Println(bb)
	fmt.Println(hd)
	return nil
}
