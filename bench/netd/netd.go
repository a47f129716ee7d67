// Package netd measures Stellar's IPAM path (stellar-cni-ipam asking
// stellar-netd) against Debian's host-local IPAM plugin on the same range:
// ADD+DEL pairs per second, each call its own plugin process as a runtime
// makes them, beside the floor of exec'ing the plugin for VERSION only.
package netd

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"stellar.dev/bench/harness"
)

// Benchmark is the IPAM benchmark.
var Benchmark = harness.Benchmark{
	Name:  "netd",
	Title: "IPAM: CNI ADD+DEL per second, stellar-cni-ipam + stellar-netd vs host-local",
	Run:   run,
}

const (
	block   = "172.16.0.0/22"
	workers = 4
)

func run(ctx context.Context, o harness.Options) (harness.Result, error) {
	dur := 5 * time.Second
	runs := o.Runs
	if o.Short {
		dur, runs = time.Second, 1
	}
	res := harness.Result{
		Goal:    "at least 1x host-local's ADD+DEL rate on the same range",
		Metrics: []harness.Metric{{Name: "pairs", Unit: "ADD+DEL/s", HigherIsBetter: true}},
		Notes: []string{
			fmt.Sprintf("%d workers, each running ADD then DEL of its own container IDs for %s per run; every call is a new plugin process (as a container runtime makes it).", workers, dur),
			"Both keep a file per IP and neither fsyncs it: stellar-netd moves each complete allocation to its IP's name with renameat2(RENAME_NOREPLACE), so a kill -9 never yields a duplicate (allocations need not outlive the kernel: a power loss kills their containers too).",
			"Both binaries are built as shipped (-trimpath, -ldflags \"-s -w\"); stellar-cni-ipam writes its HTTP/1.1 request to netd.sock itself (no net/http).",
			"netd runs in a network namespace the benchmark makes, with its claim seeded as final so it serves at once.",
		},
	}
	netdBin, plugin, err := build(o)
	if err != nil {
		return res, err
	}
	hostLocal := "/usr/lib/cni/host-local"
	if _, err := os.Stat(hostLocal); err != nil {
		return res, fmt.Errorf("debian's host-local plugin is missing (apt-get install containernetworking-plugins): %w", err)
	}
	sock, stop, err := startNetd(ctx, o, netdBin)
	if err != nil {
		return res, err
	}
	defer stop()

	stellar := harness.Subject{Name: "stellar-cni-ipam + stellar-netd", Kind: harness.KindStellar, Version: version(netdBin)}
	peer := harness.Subject{Name: "host-local (Debian containernetworking-plugins)", Kind: harness.KindPeer, Version: harness.PackageVersion("containernetworking-plugins")}
	floor := harness.Subject{Name: "exec floor: the plugin answering VERSION twice", Kind: harness.KindLimit}

	stellarConf := fmt.Sprintf(`{"cniVersion":"1.0.0","name":"bench","type":"stellar-cni-ipam","ipam":{"type":"stellar-cni-ipam","socket":%q}}`, sock)
	hostLocalConf := fmt.Sprintf(`{"cniVersion":"1.0.0","name":"bench","type":"host-local","ipam":{"type":"host-local","ranges":[[{"subnet":%q}]],"dataDir":%q}}`, block, filepath.Join(o.WorkDir, "host-local"))
	for r := range runs {
		// Alternate which goes first.
		order := []func() error{
			func() error { return measure(ctx, &stellar, plugin, stellarConf, dur, "ADD", fmt.Sprint("s", r)) },
			func() error { return measure(ctx, &peer, hostLocal, hostLocalConf, dur, "ADD", fmt.Sprint("h", r)) },
			func() error { return measure(ctx, &floor, plugin, stellarConf, dur, "VERSION", fmt.Sprint("v", r)) },
		}
		if r%2 == 1 {
			order[0], order[1] = order[1], order[0]
		}
		for _, f := range order {
			if err := f(); err != nil {
				return res, err
			}
		}
	}
	res.Subjects = []harness.Subject{stellar, peer, floor}
	// The load of this shared machine changes from run to run more than
	// the subjects differ; each run measures both back to back, so the
	// ratio within a run is the steadier figure.
	if ss, hs := stellar.Samples["pairs"], peer.Samples["pairs"]; len(ss) == len(hs) && len(ss) > 0 {
		var ratios []float64
		for i := range ss {
			if hs[i] > 0 {
				ratios = append(ratios, ss[i]/hs[i])
			}
		}
		st := harness.Summarise(ratios)
		res.Notes = append(res.Notes, fmt.Sprintf("Stellar/host-local within each run (measured back to back, alternating which goes first): median %.2f [%.2f–%.2f] over %d runs.", st.Median, st.Min, st.Max, st.N))
	}
	return res, nil
}

// measure runs workers doing ADD+DEL pairs (or VERSION pairs) for dur.
func measure(ctx context.Context, s *harness.Subject, bin, conf string, dur time.Duration, op, tag string) error {
	var pairs atomic.Int64
	var firstErr error
	var once sync.Once
	deadline := time.Now().Add(dur)
	var wg sync.WaitGroup
	start := time.Now()
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; time.Now().Before(deadline) && ctx.Err() == nil; i++ {
				cid := fmt.Sprintf("bench-%s-%d-%d", tag, w, i)
				second := "DEL"
				if op == "VERSION" {
					second = "VERSION"
				}
				for _, cmd := range []string{op, second} {
					if out, err := call(bin, cmd, cid, conf); err != nil {
						once.Do(func() { firstErr = fmt.Errorf("%s %s %s: %v: %s", filepath.Base(bin), cmd, cid, err, out) })
						return
					}
				}
				pairs.Add(1)
			}
		}()
	}
	wg.Wait()
	if firstErr != nil {
		return firstErr
	}
	s.Add("pairs", float64(pairs.Load())/time.Since(start).Seconds())
	return nil
}

func call(bin, cmd, cid, conf string) ([]byte, error) {
	c := exec.Command(bin)
	c.Env = []string{"CNI_COMMAND=" + cmd, "CNI_CONTAINERID=" + cid, "CNI_NETNS=/nonexistent/bench-netns", "CNI_IFNAME=eth0", "CNI_PATH=/usr/lib/cni"}
	c.Stdin = strings.NewReader(conf)
	return c.CombinedOutput()
}

// build compiles stellar-netd and stellar-cni-ipam from this checkout into
// the work dir (a stale ./bin must not be measured; the build is cached).
func build(o harness.Options) (netd, plugin string, err error) {
	netd, plugin = filepath.Join(o.WorkDir, "stellar-netd"), filepath.Join(o.WorkDir, "stellar-cni-ipam")
	// Built as the Makefile and the packages build them (-trimpath, no
	// symbol table): the plugin's size is paid at every exec.
	cmd := exec.Command("go", "build", "-trimpath", "-ldflags", "-s -w", "-o", o.WorkDir+"/", "stellar.dev/stellar-netd", "stellar.dev/stellar-cni-ipam")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", "", fmt.Errorf("build stellar-netd and stellar-cni-ipam: %v: %s", err, out)
	}
	return netd, plugin, nil
}

// startNetd runs stellar-netd in a namespace of its own with a final claim.
func startNetd(ctx context.Context, o harness.Options, bin string) (sock string, stop func(), err error) {
	ns := fmt.Sprintf("stellar-bench-netd-%d", os.Getpid())
	exec.Command("ip", "netns", "del", ns).Run()
	if out, err := exec.Command("ip", "netns", "add", ns).CombinedOutput(); err != nil {
		return "", nil, fmt.Errorf("ip netns add: %v: %s", err, out)
	}
	dir := filepath.Join(o.WorkDir, "node")
	run, state := filepath.Join(dir, "run"), filepath.Join(dir, "state")
	for _, d := range []string{run, filepath.Join(state, "netd")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return "", nil, err
		}
	}
	os.RemoveAll(filepath.Join(state, "netd", "ipam"))
	if err := os.WriteFile(filepath.Join(state, "netd", "claim.json"), []byte(`{"subnet":"`+block+`","final":true}`), 0o600); err != nil {
		return "", nil, err
	}
	cfg := filepath.Join(dir, "stellar.toml")
	conf := fmt.Sprintf("[node]\nname = \"bench\"\nrun_dir = %q\nstate_dir = %q\n[network]\ncni_conf_dir = %q\n", run, state, filepath.Join(dir, "cni"))
	if err := os.WriteFile(cfg, []byte(conf), 0o644); err != nil {
		return "", nil, err
	}
	log, _ := os.Create(filepath.Join(dir, "netd.log"))
	// Not pinned: the plugins (Stellar's and host-local) are not either.
	cmd := exec.Command("ip", "netns", "exec", ns, bin, "--config", cfg)
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		return "", nil, err
	}
	stop = func() {
		cmd.Process.Signal(os.Interrupt)
		done := make(chan struct{})
		go func() { cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(20 * time.Second):
			cmd.Process.Kill()
			<-done
		}
		log.Close()
		exec.Command("ip", "netns", "del", ns).Run()
	}
	sock = filepath.Join(run, "netd.sock")
	deadline := time.Now().Add(30 * time.Second)
	for {
		if c, err := net.Dial("unix", sock); err == nil {
			c.Close()
			// The seeded claim is final: netd allocates as soon as it serves.
			return sock, stop, nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			stop()
			return "", nil, fmt.Errorf("stellar-netd did not serve within 30s (log in %s)", filepath.Join(dir, "netd.log"))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func version(netd string) string {
	out, err := exec.Command(netd, "version").Output()
	if err != nil {
		return "unknown"
	}
	return strings.TrimSpace(string(out))
}
