// Command stellar-lab runs a multi-node Stellar lab on this machine: nodes are
// systemd-nspawn containers booted with systemd, each in its own network
// namespace on a lab switch. See lab/README.md.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"stellar.dev/lab"
)

const usage = `Usage: stellar-lab COMMAND [ARGS]

A Stellar cluster on one machine: nodes node1..nodeN are systemd-nspawn
containers booted with systemd, each in its own network namespace, wired to a
lab switch. Node N has 10.77.0.(10+N)/24; the client namespace (10.77.0.100,
also the nodes' gateway 10.77.0.1) plays the outside world. Needs root.

Commands:
  up [-n 3] [--deb PATH] [--no-stellar] [--package PKG]...
        Boot the nodes (idempotent: running nodes are left alone) and, unless
        --no-stellar, install Stellar's .deb in each (default: the newest
        dist/stellar_*_amd64.deb), write /etc/stellar/stellar.toml, enable
        stellar.target and form the cluster (sctl cluster token/join).
  down [--keep-disks]
        Remove every namespace, mount, veth and process of the lab, and the
        nodes' disks unless --keep-disks.
  status
        Each node, its address, systemd's state and stellar.target's state.
  exec NODE|client -- CMD [ARG...]
        Run CMD inside the node (or the client namespace) with stdin, stdout
        and stderr passed through; exits with CMD's exit code.
  logs [-f] [-n LINES] NODE [UNIT]
        The node's journal, all or one unit's.
  fault kill NODE UNIT          kill -9 the unit's main process in the node
  fault poweroff NODE           cut the node's power (up boots it again, disk kept)
  fault partition NODE...       cut these nodes from all other nodes (client reaches all)
  fault delay NODE MS           delay IPv4 packets arriving at the node (0: none)
  fault loss NODE PERCENT       drop packets going to the node (0: none)
  fault heal                    remove every network fault
  fault list                    show the faults in force
  rootfs [--package PKG]...
        Build (or find) the cached node rootfs and print its path.

State: /run/stellar-lab   Disks: /var/lib/stellar-lab/nodes   Cache: /var/cache/stellar-lab
STELLAR_LAB_NAME=NAME drives the lab NAME instead (/run/NAME, namespaces NAME-*).
`

func main() {
	lab.RunHelper()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	if len(os.Args) > 1 && (os.Args[1] == "exec" || os.Args[1] == "logs") {
		// Signals are passed on to the command inside (runInside); an
		// interactive shell in a node must survive ^C.
		stop()
		ctx = context.Background()
	}
	err := run(ctx, os.Args[1:])
	stop()
	if err != nil {
		var ec exitCode
		if errors.As(err, &ec) {
			os.Exit(int(ec))
		}
		if errors.Is(err, flag.ErrHelp) {
			os.Exit(0)
		}
		fmt.Fprintln(os.Stderr, "stellar-lab:", err)
		os.Exit(2)
	}
}

// exitCode is returned by exec to pass the command's exit code through.
type exitCode int

func (e exitCode) Error() string { return "exit code " + strconv.Itoa(int(e)) }

// labName is what STELLAR_LAB_NAME may be: it names namespaces and /run, /var/lib directories.
var labName = regexp.MustCompile(`^[a-z][a-z0-9-]{0,23}$`)

type multiFlag []string

func (m *multiFlag) String() string     { return strings.Join(*m, ",") }
func (m *multiFlag) Set(v string) error { *m = append(*m, v); return nil }

func newFlags(name, synopsis string) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: stellar-lab %s\n", synopsis)
		fs.PrintDefaults()
	}
	return fs
}

func run(ctx context.Context, args []string) error {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		fmt.Print(usage)
		if len(args) == 0 {
			return errors.New("no command")
		}
		return nil
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	l := lab.New(log)
	if name := os.Getenv("STELLAR_LAB_NAME"); name != "" && name != lab.DefaultName {
		if !labName.MatchString(name) {
			return fmt.Errorf("STELLAR_LAB_NAME %q: want a-z, 0-9 and '-', starting with a letter, at most 24 characters", name)
		}
		// Another lab, e.g. the end-to-end tests' stellar-e2e left up with STELLAR_E2E_KEEP=1.
		l = lab.NewNamed(name, log)
	}
	cmd, args := args[0], args[1:]
	switch cmd {
	case "up":
		fs := newFlags("up", "up [-n 3] [--deb PATH] [--no-stellar] [--package PKG]...")
		n := fs.Int("n", 3, "number of nodes (node1..nodeN)")
		deb := fs.String("deb", "", "Stellar .deb to install (default: newest dist/stellar_*_amd64.deb)")
		noStellar := fs.Bool("no-stellar", false, "boot plain nodes: no .deb, no cluster")
		timeout := fs.Duration("boot-timeout", 2*time.Minute, "how long one node may take to boot")
		var pkgs multiFlag
		fs.Var(&pkgs, "package", "extra Debian package for the node rootfs (repeatable)")
		if err := fs.Parse(args); err != nil {
			return err
		}
		if err := l.Up(ctx, lab.UpOptions{Nodes: *n, Deb: *deb, NoStellar: *noStellar, ExtraPackages: pkgs, BootTimeout: *timeout}); err != nil {
			return err
		}
		return printStatus(ctx, l)
	case "down":
		fs := newFlags("down", "down [--keep-disks]")
		keep := fs.Bool("keep-disks", false, "keep the nodes' disks for the next up")
		if err := fs.Parse(args); err != nil {
			return err
		}
		return l.Down(ctx, lab.DownOptions{KeepDisks: *keep})
	case "status":
		return printStatus(ctx, l)
	case "exec":
		if len(args) > 0 && (args[0] == "-h" || args[0] == "--help") {
			fmt.Println("Usage: stellar-lab exec NODE|client -- CMD [ARG...]")
			return nil
		}
		if len(args) < 2 {
			return errors.New("usage: stellar-lab exec NODE|client -- CMD [ARG...]")
		}
		node, rest := args[0], args[1:]
		if rest[0] == "--" {
			rest = rest[1:]
		}
		if len(rest) == 0 {
			return errors.New("exec: no command")
		}
		err := runInside(ctx, l, node, rest...)
		if isExit(err) {
			return exitCode(lab.ExitCode(err))
		}
		return err
	case "logs":
		fs := newFlags("logs", "logs [-f] [-n LINES] NODE [UNIT]")
		follow := fs.Bool("f", false, "follow the journal")
		lines := fs.Int("n", 0, "show only the last LINES lines")
		if err := fs.Parse(args); err != nil {
			return err
		}
		if fs.NArg() < 1 || fs.NArg() > 2 {
			fs.Usage()
			return errors.New("logs: want NODE [UNIT]")
		}
		largs := []string{"journalctl", "--no-pager"}
		if fs.Arg(1) != "" {
			largs = append(largs, "-u", fs.Arg(1))
		}
		if *follow {
			largs = append(largs, "-f")
		}
		if *lines > 0 {
			largs = append(largs, "-n", strconv.Itoa(*lines))
		}
		err := runInside(ctx, l, fs.Arg(0), largs...)
		if isExit(err) {
			return exitCode(lab.ExitCode(err))
		}
		return err
	case "fault":
		return fault(ctx, l, args)
	case "rootfs":
		fs := newFlags("rootfs", "rootfs [--package PKG]...")
		var pkgs multiFlag
		fs.Var(&pkgs, "package", "extra Debian package (repeatable)")
		if err := fs.Parse(args); err != nil {
			return err
		}
		dir, err := l.EnsureRootfs(ctx, pkgs)
		if err != nil {
			return err
		}
		fmt.Println(dir)
		return nil
	}
	return fmt.Errorf("unknown command %q (see stellar-lab --help)", cmd)
}

// runInside runs a command in a node with our stdio, passing SIGINT, SIGTERM
// and SIGHUP sent to stellar-lab on to it.
func runInside(ctx context.Context, l *lab.Lab, node string, args ...string) error {
	cmd, err := l.Command(ctx, node, args...)
	if err != nil {
		return err
	}
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM, syscall.SIGHUP)
	defer signal.Stop(sigs)
	if err := cmd.Start(); err != nil {
		return err
	}
	go func() {
		for s := range sigs {
			if node == lab.Client {
				_ = cmd.Process.Signal(s)
			} else {
				lab.SignalInside(cmd, s.(syscall.Signal))
			}
		}
	}()
	return cmd.Wait()
}

func isExit(err error) bool {
	var ee interface{ ExitCode() int }
	return errors.As(err, &ee)
}

func fault(ctx context.Context, l *lab.Lab, args []string) error {
	want := func(n int, syn string) error {
		if len(args)-1 != n {
			return fmt.Errorf("usage: stellar-lab fault %s", syn)
		}
		return nil
	}
	if len(args) == 0 {
		return errors.New("usage: stellar-lab fault kill|poweroff|partition|delay|loss|heal|list ARGS")
	}
	switch args[0] {
	case "kill":
		if err := want(2, "kill NODE UNIT"); err != nil {
			return err
		}
		return l.Kill(ctx, args[1], args[2])
	case "poweroff":
		if err := want(1, "poweroff NODE"); err != nil {
			return err
		}
		return l.PowerOff(ctx, args[1])
	case "partition":
		if len(args) < 2 {
			return errors.New("usage: stellar-lab fault partition NODE [NODE...]")
		}
		return l.Partition(ctx, args[1:]...)
	case "delay":
		if err := want(2, "delay NODE MS"); err != nil {
			return err
		}
		ms, err := strconv.Atoi(args[2])
		if err != nil || ms < 0 {
			return fmt.Errorf("delay %q: want milliseconds", args[2])
		}
		return l.Delay(ctx, args[1], time.Duration(ms)*time.Millisecond)
	case "loss":
		if err := want(2, "loss NODE PERCENT"); err != nil {
			return err
		}
		p, err := strconv.ParseFloat(strings.TrimSuffix(args[2], "%"), 64)
		if err != nil {
			return fmt.Errorf("loss %q: want a percentage", args[2])
		}
		return l.Loss(ctx, args[1], p)
	case "heal":
		return l.Heal(ctx)
	case "list":
		f, err := l.Faults()
		if err != nil {
			return err
		}
		for _, g := range f.Partitions {
			fmt.Printf("partition %s\n", strings.Join(g, " "))
		}
		for n, ms := range f.DelayMS {
			fmt.Printf("delay %s %dms\n", n, ms)
		}
		for n, p := range f.LossPercent {
			fmt.Printf("loss %s %g%%\n", n, p)
		}
		return nil
	}
	return fmt.Errorf("unknown fault %q", args[0])
}

func printStatus(ctx context.Context, l *lab.Lab) error {
	st, err := l.Status(ctx)
	if err != nil {
		return err
	}
	return writeStatus(os.Stdout, st)
}

func writeStatus(w io.Writer, st []lab.NodeStatus) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NODE\tADDRESS\tSYSTEM\tSTELLAR")
	for _, s := range st {
		stellar := s.Stellar
		if stellar == "" {
			stellar = "-"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", s.Name, s.Addr, s.System, stellar)
	}
	return tw.Flush()
}
