// Package footprint measures what a Stellar node costs at rest: binary
// sizes, idle resident memory and idle CPU of each daemon and of all five
// together, beside Debian's serf agent and containerd itself.
package footprint

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"stellar.dev/bench/harness"
)

// Benchmark is the footprint benchmark.
var Benchmark = harness.Benchmark{
	Name:  "footprint",
	Title: "Whole-node footprint: binary size, idle RSS and idle CPU",
	Run:   run,
}

var daemons = []string{"gossip", "netd", "dnsd", "proxyd", "appd"}

// proc is a process being measured.
type proc struct {
	name string
	cmd  *exec.Cmd
}

func run(ctx context.Context, o harness.Options) (harness.Result, error) {
	// warm lets each daemon reach its idle state before the window: the
	// first collections, the first reconcile passes and announcements. RSS
	// grows in the first minute (stellar-appd's by ~1 MiB as its heap
	// reaches its goal), so a reading seconds after start flatters.
	warm, idle, settle, containers := 50*time.Second, 10*time.Second, 3*time.Second, 20
	if o.Short {
		warm, idle, settle, containers = 2*time.Second, 2*time.Second, time.Second, 2
	}
	res := harness.Result{
		Goal: "every daemon under 20 MB (19.1 MiB) RSS idle; all five together under 100 MB (95.4 MiB); a k3s agent is published at ~275 MB",
		Metrics: []harness.Metric{
			{Name: "rss", Unit: "MiB"},
			{Name: "anon", Unit: "MiB"},
			{Name: "cpu", Unit: "% of a core"},
			{Name: "size", Unit: "MiB"},
		},
	}
	ver := version(o.BinDir)
	total := harness.Subject{Name: "Stellar node, 0 containers (five daemons)", Kind: harness.KindStellar, Version: ver}
	loaded := harness.Subject{Name: fmt.Sprintf("Stellar node, %d containers (five daemons + log drivers)", containers), Kind: harness.KindStellar, Version: ver}
	loadedAll := harness.Subject{Name: fmt.Sprintf("Stellar node, %d containers (five daemons + log drivers + containerd + shims)", containers), Kind: harness.KindStellar, Version: ver}
	drivers := harness.Subject{Name: fmt.Sprintf("stellar-appd log drivers, %d containers (one process per container)", containers), Kind: harness.KindStellar, Version: ver}
	subs := map[string]*harness.Subject{}
	for _, d := range daemons {
		subs[d] = &harness.Subject{Name: "stellar-" + d + " (0 containers)", Kind: harness.KindStellar, Version: ver}
	}
	serf := harness.Subject{Name: "serf agent (Debian)", Kind: harness.KindPeer, Version: harness.PackageVersion("serf")}
	ctrd := harness.Subject{Name: "containerd (Debian), 0 containers", Kind: harness.KindPeer, Version: harness.PackageVersion("containerd")}
	plain := harness.Subject{Name: fmt.Sprintf("containerd + shims, %d containers by ctr (no Stellar)", containers), Kind: harness.KindPeer, Version: ctrd.Version}

	var sizeTotal float64
	for _, d := range daemons {
		fi, err := os.Stat(filepath.Join(o.BinDir, "stellar-"+d))
		if err != nil {
			return res, fmt.Errorf("stat stellar-%s (run make build): %w", d, err)
		}
		mib := float64(fi.Size()) / (1 << 20)
		subs[d].Add("size", mib)
		sizeTotal += mib
	}
	total.Add("size", sizeTotal)
	for _, p := range []struct {
		s   *harness.Subject
		bin string
	}{{&serf, "serf"}, {&ctrd, "containerd"}} {
		if path, err := exec.LookPath(p.bin); err == nil {
			if fi, err := os.Stat(path); err == nil {
				p.s.Add("size", float64(fi.Size())/(1<<20))
			}
		}
	}
	image, err := writeBusybox(ctx, o.WorkDir)
	var notes []string
	if err != nil {
		notes = append(notes, fmt.Sprintf("No node with containers was measured: %v.", err))
	}

	for i := 0; i < o.Runs; i++ {
		dir, err := os.MkdirTemp(o.WorkDir, "node-")
		if err != nil {
			return res, err
		}
		procs, err := startNode(ctx, o, dir)
		if err != nil {
			stopAll(procs)
			return res, err
		}
		ns := fmt.Sprintf("/proc/%d/ns/net", procs[0].cmd.Process.Pid)
		sock := filepath.Join(dir, "containerd", "containerd.sock")
		if p, err := startSerf(dir); err == nil {
			procs = append(procs, p)
		} else {
			o.Log.Warn("serf agent not measured", "err", err)
		}
		if p, err := startContainerd(filepath.Join(dir, "containerd"), ns); err == nil {
			procs = append(procs, p)
		} else {
			o.Log.Warn("containerd not measured", "err", err)
		}
		pids := map[string][]int{}
		for _, p := range procs {
			if p.name != "holder" {
				pids[p.name] = []int{p.cmd.Process.Pid}
			}
		}
		// Let start-up settle, then measure CPU over the idle window.
		select {
		case <-ctx.Done():
			stopAll(procs)
			return res, ctx.Err()
		case <-time.After(warm):
		}
		m, err := measure(ctx, idle, pids)
		if err != nil {
			stopAll(procs)
			return res, err
		}
		var rssTotal, anonTotal, cpuTotal float64
		for name, v := range m {
			switch name {
			case "serf":
				serf.Add("rss", v.rss)
				serf.Add("anon", v.anon)
				serf.Add("cpu", v.cpu)
			case "containerd":
				ctrd.Add("rss", v.rss)
				ctrd.Add("anon", v.anon)
				ctrd.Add("cpu", v.cpu)
			default:
				subs[name].Add("rss", v.rss)
				subs[name].Add("anon", v.anon)
				anonTotal += v.anon
				subs[name].Add("cpu", v.cpu)
				rssTotal += v.rss
				cpuTotal += v.cpu
			}
		}
		total.Add("rss", rssTotal)
		total.Add("anon", anonTotal)
		total.Add("cpu", cpuTotal)

		if image != "" && pids["containerd"] != nil {
			if err := runApp(ctx, filepath.Join(dir, "run"), image, containers); err != nil {
				o.Log.Warn("node with containers not measured", "err", err)
				notes = append(notes, fmt.Sprintf("Run %d: the node with %d containers was not measured: %v.", i+1, containers, err))
			} else {
				time.Sleep(settle)
				delete(pids, "serf")
				pids["shims"] = shimsOf(sock)
				pids["logdrivers"] = logDriversOf(filepath.Join(dir, "state"))
				m, err := measure(ctx, idle, pids)
				if err != nil {
					cleanContainers(sock, "stellar")
					stopAll(procs)
					return res, err
				}
				var rss, anon, cpu float64
				for name, v := range m {
					if name != "containerd" && name != "shims" {
						rss += v.rss
						anon += v.anon
						cpu += v.cpu
					}
				}
				drivers.Add("rss", m["logdrivers"].rss)
				drivers.Add("anon", m["logdrivers"].anon)
				drivers.Add("cpu", m["logdrivers"].cpu)
				loaded.Add("rss", rss)
				loaded.Add("anon", anon)
				loaded.Add("cpu", cpu)
				loadedAll.Add("rss", rss+m["containerd"].rss+m["shims"].rss)
				loadedAll.Add("anon", anon+m["containerd"].anon+m["shims"].anon)
				loadedAll.Add("cpu", cpu+m["containerd"].cpu+m["shims"].cpu)
			}
		}
		// appd first, so it does not restart what is being cleaned.
		for _, p := range procs {
			if p.name == "appd" {
				stopAll([]proc{p})
			}
		}
		cleanContainers(sock, "stellar")
		stopAll(procs)
		unmountUnder(dir)

		if image != "" {
			if err := measurePlain(ctx, o, filepath.Join(dir, "plain"), image, containers, idle, settle, &plain); err != nil {
				o.Log.Warn("containerd with containers not measured", "err", err)
				notes = append(notes, fmt.Sprintf("Run %d: containerd alone with %d containers was not measured: %v.", i+1, containers, err))
			}
			unmountUnder(dir)
		}
		os.RemoveAll(dir)
	}
	res.Subjects = append(res.Subjects, total, loaded, loadedAll, drivers)
	for _, d := range daemons {
		res.Subjects = append(res.Subjects, *subs[d])
	}
	res.Subjects = append(res.Subjects, serf, ctrd, plain)
	res.Notes = append(res.Notes,
		fmt.Sprintf("Each run starts a fresh node (all five daemons, containerd, serf agent) in a private network namespace, waits %s, then measures CPU over %s of idle and RSS at its end (a minute after start: RSS grows in the first minute as the heaps reach their goals).", warm, idle),
		fmt.Sprintf("Then stellar-appd runs %d containers (busybox `sleep`, network false, in the node's private namespace) through that real containerd; after %s the same window is measured again. The containers' own processes are not counted; stellar-appd's log drivers (containerd's binary log driver: one stellar-appd process per container, under its shim) are; containerd and its shims (one per container) are, in the row that names them.", containers, settle),
		fmt.Sprintf("Peer for the loaded node: a fresh containerd in its own private namespace running the same %d containers with `ctr run -d` (what an operator without an orchestrator has), containerd + shims counted.", containers),
		"RSS is VmRSS from /proc (shared pages counted in every process, so totals overstate); anon is RssAnon, the memory the process allocated itself (heap, stacks), without the pages of its own binary that it maps from the page cache (most of a Go daemon's RSS is its binary: the larger the binary, the larger the RSS). CPU is utime+stime over the window. The ratio column compares the node with 0 containers.")
	res.Notes = append(res.Notes, notes...)
	return res, nil
}

// sample is one group of processes' figures.
type sample struct{ rss, anon, cpu float64 }

// measure returns each group's RSS at the end of an idle window and its CPU
// (percent of a core) over it.
func measure(ctx context.Context, idle time.Duration, groups map[string][]int) (map[string]sample, error) {
	before := map[string]float64{}
	for name, ps := range groups {
		for _, pid := range ps {
			before[name] += harness.CPUSeconds(pid)
		}
	}
	select {
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-time.After(idle):
	}
	out := map[string]sample{}
	for name, ps := range groups {
		var s sample
		for _, pid := range ps {
			s.rss += harness.StatusMiB(pid, "VmRSS:")
			s.anon += harness.StatusMiB(pid, "RssAnon:")
			s.cpu += harness.CPUSeconds(pid)
		}
		s.cpu = (s.cpu - before[name]) / idle.Seconds() * 100
		out[name] = s
	}
	return out, nil
}

// measurePlain runs n containers on a fresh containerd with ctr, in a
// private network namespace, and adds containerd + shims to s.
func measurePlain(ctx context.Context, o harness.Options, dir, image string, n int, idle, settle time.Duration, s *harness.Subject) error {
	holder, err := newHolder()
	if err != nil {
		return err
	}
	defer stopAll([]proc{holder})
	c, err := startContainerd(dir, fmt.Sprintf("/proc/%d/ns/net", holder.cmd.Process.Pid))
	if err != nil {
		return err
	}
	sock := filepath.Join(dir, "containerd.sock")
	defer func() {
		cleanContainers(sock, plainNamespace)
		stopAll([]proc{c})
	}()
	if err := waitFor(ctx, 30*time.Second, func() bool { return ctrCmd(sock, "version").Run() == nil }); err != nil {
		return fmt.Errorf("containerd did not serve: %w", err)
	}
	if err := runPlain(ctx, sock, image, n); err != nil {
		return err
	}
	time.Sleep(settle)
	m, err := measure(ctx, idle, map[string][]int{"containerd": {c.cmd.Process.Pid}, "shims": shimsOf(sock)})
	if err != nil {
		return err
	}
	s.Add("rss", m["containerd"].rss+m["shims"].rss)
	s.Add("anon", m["containerd"].anon+m["shims"].anon)
	s.Add("cpu", m["containerd"].cpu+m["shims"].cpu)
	return nil
}

func version(binDir string) string {
	out, err := exec.Command(filepath.Join(binDir, "stellar-gossip"), "version").Output()
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(out))
	if len(f) > 1 {
		return f[1]
	}
	return "?"
}

// freePort asks the kernel for a free loopback port.
func freePort() int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// startNode starts the five daemons, each in the same new network namespace
// (netd changes networking: never the host's), on loopback addresses.
func startNode(ctx context.Context, o harness.Options, dir string) ([]proc, error) {
	cfg := filepath.Join(dir, "stellar.toml")
	body := fmt.Sprintf(`[node]
name = "bench"
run_dir = %q
state_dir = %q
advertise = "127.0.0.1"
[gossip]
bind = "127.0.0.1:%d"
peer_api = "127.0.0.1:%d"
[network]
cni_conf_dir = %q
[dns]
listen = ["127.0.0.1:%d"]
upstream = ["127.0.0.1:9"]
[proxy]
http = "127.0.0.1:%d"
https = "127.0.0.1:%d"
[apps]
containerd = %q
`, filepath.Join(dir, "run"), filepath.Join(dir, "state"), freePort(), freePort(), filepath.Join(dir, "cni"), freePort(), freePort(), freePort(), filepath.Join(dir, "containerd", "containerd.sock"))
	if err := os.WriteFile(cfg, []byte(body), 0o644); err != nil {
		return nil, err
	}
	// One holder process keeps the namespace; the daemons join it.
	holder, err := newHolder()
	if err != nil {
		return nil, err
	}
	procs := []proc{holder}
	ns := fmt.Sprintf("/proc/%d/ns/net", holder.cmd.Process.Pid)
	for _, d := range daemons {
		c := exec.Command("nsenter", "--net="+ns, "--", filepath.Join(o.BinDir, "stellar-"+d), "--config", cfg)
		logf, _ := os.Create(filepath.Join(dir, d+".log"))
		c.Stdout, c.Stderr = logf, logf
		c.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
		if err := c.Start(); err != nil {
			return procs, fmt.Errorf("start stellar-%s: %w", d, err)
		}
		procs = append(procs, proc{name: d, cmd: c})
	}
	// Wait for every API socket.
	deadline := time.Now().Add(30 * time.Second)
	for _, d := range daemons {
		for {
			if c, err := net.Dial("unix", filepath.Join(dir, "run", d+".sock")); err == nil {
				c.Close()
				break
			}
			if time.Now().After(deadline) || ctx.Err() != nil {
				log, _ := os.ReadFile(filepath.Join(dir, d+".log"))
				return procs, fmt.Errorf("stellar-%s did not serve its socket: %s", d, log)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	return procs, nil
}

// newHolder starts a process in a new network namespace (lo up) that keeps
// it while others join it.
func newHolder() (proc, error) {
	holder := exec.Command("unshare", "--net", "--", "sh", "-c", "ip link set lo up; exec sleep 100000")
	holder.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := holder.Start(); err != nil {
		return proc{}, fmt.Errorf("make network namespace (needs root): %w", err)
	}
	time.Sleep(200 * time.Millisecond)
	return proc{name: "holder", cmd: holder}, nil
}

func startSerf(dir string) (proc, error) {
	if _, err := exec.LookPath("serf"); err != nil {
		return proc{}, fmt.Errorf("serf is not installed (make bench-deps): %w", err)
	}
	c := exec.Command("serf", "agent", "-node", "bench-serf", "-bind", fmt.Sprintf("127.0.0.1:%d", freePort()), "-rpc-addr", fmt.Sprintf("127.0.0.1:%d", freePort()))
	c.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := c.Start(); err != nil {
		return proc{}, err
	}
	return proc{name: "serf", cmd: c}, nil
}

// startContainerd starts containerd with its root, state and socket
// (containerd.sock) under root, inside the network namespace ns, so its
// shims and containers are there too.
func startContainerd(root, ns string) (proc, error) {
	if _, err := exec.LookPath("containerd"); err != nil {
		return proc{}, err
	}
	cfg := filepath.Join(root, "containerd.toml")
	sock := filepath.Join(root, "containerd.sock")
	body := fmt.Sprintf("version = 2\nroot = %q\nstate = %q\ndisabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n[grpc]\naddress = %q\n[ttrpc]\naddress = %q\n[debug]\naddress = \"\"\n[metrics]\naddress = \"\"\n",
		filepath.Join(root, "root"), filepath.Join(root, "state"), sock, sock+".ttrpc")
	if err := os.MkdirAll(root, 0o755); err != nil {
		return proc{}, err
	}
	if err := os.WriteFile(cfg, []byte(body), 0o644); err != nil {
		return proc{}, err
	}
	c := exec.Command("nsenter", "--net="+ns, "--", "containerd", "--config", cfg)
	logf, _ := os.Create(filepath.Join(root, "containerd.log"))
	c.Stdout, c.Stderr = logf, logf
	c.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := c.Start(); err != nil {
		return proc{}, err
	}
	return proc{name: "containerd", cmd: c}, nil
}

func stopAll(ps []proc) {
	for i := len(ps) - 1; i >= 0; i-- {
		p := ps[i]
		p.cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { p.cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			p.cmd.Process.Kill()
			<-done
		}
	}
}
