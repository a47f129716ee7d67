// Command stellar-bench runs Stellar's side-by-side benchmarks and writes
// bench/RESULTS.md.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"

	"stellar.dev/bench"
	"stellar.dev/bench/harness"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:])
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "stellar-bench:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("stellar-bench", flag.ContinueOnError)
	short := fs.Bool("short", false, "run each benchmark for a few seconds only, to prove it works (figures mean nothing)")
	runs := fs.Int("runs", 5, "repetitions of each measurement (medians need at least 5)")
	only := fs.String("only", "", "comma-separated benchmark names to run (default all)")
	out := fs.String("out", "bench/RESULTS.md", "where to write the report")
	binDir := fs.String("bin", "bin", "directory with Stellar's binaries (make build)")
	fresh := fs.Bool("fresh", false, "write a new report with only the benchmarks run now (default: replace their sections in the existing report and keep the others)")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), `Usage: stellar-bench [flags]

Runs Stellar's side-by-side benchmarks: each measures Stellar and the peer an
operator would pick instead, in the same run, on the same machine, with the same
CPU pinning, and writes medians [min-max] and ratios to a Markdown report.
Each benchmark has its own section, stamped with when it ran, the commit and
the machine's load; running some (-only) replaces their sections in the
existing report and keeps the others (-fresh starts a new report).
Needs root (network namespaces) and the peers (make bench-deps).

Benchmarks:
`)
		for _, b := range bench.All() {
			fmt.Fprintf(fs.Output(), "  %-14s %s\n", b.Name, b.Title)
		}
		fmt.Fprintln(fs.Output(), "\nFlags:")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return err
	}
	if *short {
		*runs = 1
	}
	bin, err := filepath.Abs(*binDir)
	if err != nil {
		return err
	}
	work, err := os.MkdirTemp("", "stellar-bench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)
	var names []string
	if *only != "" {
		names = strings.Split(*only, ",")
	}
	o := harness.Options{Short: *short, Runs: *runs, BinDir: bin, WorkDir: work, PlotDir: filepath.Dir(*out), Log: slog.New(slog.NewTextHandler(os.Stderr, nil))}
	if err := os.MkdirAll(o.PlotDir, 0o755); err != nil {
		return fmt.Errorf("make report directory: %w", err)
	}
	machine := harness.ReadMachine()
	machine.Stellar = stellarVersion(bin)
	machine.Command = "go run ./bench/cmd/stellar-bench " + strings.Join(args, " ")
	outs := harness.RunAll(ctx, bench.All(), names, o)
	if err := harness.WritePlots(o.PlotDir, outs); err != nil {
		o.Log.Error("plots", "err", err)
	}
	report := harness.Report(machine, outs)
	if old, err := os.ReadFile(*out); err == nil && !*fresh {
		report = harness.Update(string(old), machine, bench.All(), outs)
	}
	if err := os.WriteFile(*out, []byte(report), 0o644); err != nil {
		return fmt.Errorf("write report: %w", err)
	}
	fmt.Print(report)
	for _, oc := range outs {
		if oc.Err != nil {
			return fmt.Errorf("benchmark %s: %w", oc.Bench.Name, oc.Err)
		}
	}
	return nil
}

// stellarVersion is what the binaries say and the tree's commit.
func stellarVersion(bin string) string {
	v := "unknown version"
	if out, err := exec.Command(filepath.Join(bin, "stellar-gossip"), "version").Output(); err == nil {
		v = strings.TrimSpace(strings.SplitN(string(out), "\n", 2)[0])
	}
	if out, err := exec.Command("git", "rev-parse", "--short", "HEAD").Output(); err == nil {
		v += ", commit " + strings.TrimSpace(string(out))
	}
	return v
}
