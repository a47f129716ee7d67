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
	"strconv"
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
	idle := 15 * time.Second
	if o.Short {
		idle = 2 * time.Second
	}
	res := harness.Result{
		Goal: "every daemon under 20 MiB RSS idle; all five together under 100 MiB (a k3s agent is published at ~275 MB)",
		Metrics: []harness.Metric{
			{Name: "rss", Unit: "MiB"},
			{Name: "cpu", Unit: "% of a core"},
			{Name: "size", Unit: "MiB"},
		},
	}
	total := harness.Subject{Name: "Stellar node (all five daemons)", Kind: harness.KindStellar, Version: version(o.BinDir)}
	subs := map[string]*harness.Subject{}
	for _, d := range daemons {
		subs[d] = &harness.Subject{Name: "stellar-" + d, Kind: harness.KindStellar, Version: total.Version}
	}
	serf := harness.Subject{Name: "serf agent (Debian)", Kind: harness.KindPeer, Version: harness.PackageVersion("serf")}
	ctrd := harness.Subject{Name: "containerd (Debian)", Kind: harness.KindPeer, Version: harness.PackageVersion("containerd")}

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
		if p, err := startSerf(dir); err == nil {
			procs = append(procs, p)
		} else {
			o.Log.Warn("serf agent not measured", "err", err)
		}
		if p, err := startContainerd(dir); err == nil {
			procs = append(procs, p)
		} else {
			o.Log.Warn("containerd not measured", "err", err)
		}
		// Let start-up settle, then measure CPU over the idle window.
		time.Sleep(2 * time.Second)
		before := map[string]float64{}
		for _, p := range procs {
			before[p.name] = cpuSeconds(p.cmd.Process.Pid)
		}
		select {
		case <-ctx.Done():
			stopAll(procs)
			return res, ctx.Err()
		case <-time.After(idle):
		}
		var rssTotal, cpuTotal float64
		for _, p := range procs {
			rss := rssMiB(p.cmd.Process.Pid)
			cpu := (cpuSeconds(p.cmd.Process.Pid) - before[p.name]) / idle.Seconds() * 100
			switch p.name {
			case "holder":
			case "serf":
				serf.Add("rss", rss)
				serf.Add("cpu", cpu)
			case "containerd":
				ctrd.Add("rss", rss)
				ctrd.Add("cpu", cpu)
			default:
				subs[p.name].Add("rss", rss)
				subs[p.name].Add("cpu", cpu)
				rssTotal += rss
				cpuTotal += cpu
			}
		}
		total.Add("rss", rssTotal)
		total.Add("cpu", cpuTotal)
		stopAll(procs)
		os.RemoveAll(dir)
	}
	res.Subjects = append(res.Subjects, total)
	for _, d := range daemons {
		res.Subjects = append(res.Subjects, *subs[d])
	}
	res.Subjects = append(res.Subjects, serf, ctrd)
	res.Notes = append(res.Notes,
		fmt.Sprintf("Each run starts a fresh node (all five daemons, serf agent, containerd) in a private network namespace, waits 2 s, then measures CPU over %s of idle and RSS at its end.", idle),
		"A node with 20 containers is not measured yet: it needs stellar-appd running containers through the lab.",
		"RSS is VmRSS from /proc; CPU is utime+stime over the window.")
	return res, nil
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
	holder := exec.Command("unshare", "--net", "--", "sh", "-c", "ip link set lo up; exec sleep 100000")
	holder.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := holder.Start(); err != nil {
		return nil, fmt.Errorf("make network namespace (needs root): %w", err)
	}
	procs := []proc{{name: "holder", cmd: holder}}
	time.Sleep(200 * time.Millisecond)
	ns := fmt.Sprintf("/proc/%d/ns/net", holder.Process.Pid)
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

func startContainerd(dir string) (proc, error) {
	if _, err := exec.LookPath("containerd"); err != nil {
		return proc{}, err
	}
	root := filepath.Join(dir, "containerd")
	cfg := filepath.Join(dir, "containerd.toml")
	body := fmt.Sprintf("version = 2\nroot = %q\nstate = %q\ndisabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n[grpc]\naddress = %q\n", filepath.Join(root, "root"), filepath.Join(root, "state"), filepath.Join(root, "containerd.sock"))
	if err := os.MkdirAll(root, 0o755); err != nil {
		return proc{}, err
	}
	if err := os.WriteFile(cfg, []byte(body), 0o644); err != nil {
		return proc{}, err
	}
	c := exec.Command("containerd", "--config", cfg)
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

// rssMiB reads VmRSS of pid.
func rssMiB(pid int) float64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, "VmRSS:") {
			f := strings.Fields(l)
			if len(f) >= 2 {
				kb, _ := strconv.ParseFloat(f[1], 64)
				return kb / 1024
			}
		}
	}
	return 0
}

// cpuSeconds reads utime+stime of pid.
func cpuSeconds(pid int) float64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	s := string(b)
	i := strings.LastIndex(s, ")")
	if i < 0 {
		return 0
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 13 {
		return 0
	}
	ut, _ := strconv.ParseFloat(f[11], 64)
	st, _ := strconv.ParseFloat(f[12], 64)
	return (ut + st) / 100 // USER_HZ
}
