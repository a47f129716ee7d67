// Package apps measures how long an application takes from the create call
// to all of its instances running, through stellar-appd, beside the same
// containers started with `ctr run -d --cni` (the same CNI network netd
// writes) and with `podman run -d`.
package apps

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"stellar.dev/api/client"
	"stellar.dev/bench/harness"
	"stellar.dev/testimages"
)

// Benchmark is the apps benchmark.
var Benchmark = harness.Benchmark{
	Name:  "apps",
	Title: "Application start: create to all instances running",
	Run:   run,
}

const busyboxRef = "stellar.test/busybox:latest"

var (
	// containerArgs is what every container runs, for all subjects: a shell
	// that exits on SIGTERM (a bare sleep as PID 1 ignores it, and each
	// delete would wait out the 10 s stop grace).
	containerArgs = []string{"sh", "-c", "trap 'exit 0' TERM; while :; do sleep 1; done"}
	daemons       = []string{"gossip", "netd", "dnsd", "proxyd", "appd"}
)

type proc struct {
	name string
	cmd  *exec.Cmd
}

// node is one Stellar node (five daemons and containerd) in a private
// network namespace.
type node struct {
	dir, ns, conf, bins string
	procs               []proc
	api                 *client.Client // stellar-appd's socket
}

func run(ctx context.Context, o harness.Options) (harness.Result, error) {
	res := harness.Result{
		Metrics: []harness.Metric{{Name: "start-1", Unit: "ms"}, {Name: "start-20", Unit: "ms"}},
		Goal:    "Stellar's time at most 1.10x `ctr run -d --cni`, and below podman's",
	}
	sizes := []int{1, 20}
	if o.Short {
		sizes = []int{1, 2}
		res.Metrics[1].Name = "start-2"
	}
	ver := version(o.BinDir)
	stellar := harness.Subject{Name: "stellar-appd (POST /v1/apps, network: true)", Kind: harness.KindStellar, Version: ver}
	ctr := harness.Subject{Name: "ctr run -d --cni (same conflist: bridge + stellar-cni-ipam + portmap)", Kind: harness.KindPeer, Version: harness.PackageVersion("containerd")}
	ctrPar := harness.Subject{Name: fmt.Sprintf("ctr run -d --cni, %d at a time (as appd creates one pass's instances)", ctrParallel), Kind: harness.KindPeer, Version: harness.PackageVersion("containerd")}
	podman := harness.Subject{Name: "podman run -d (its default bridge network)", Kind: harness.KindPeer, Version: harness.PackageVersion("podman")}
	var notes []string

	image := filepath.Join(o.WorkDir, testimages.BusyboxFile)
	f, err := os.Create(image)
	if err != nil {
		return res, err
	}
	if err := testimages.WriteBusybox(ctx, f, ""); err != nil {
		f.Close()
		return res, fmt.Errorf("build busybox image: %w", err)
	}
	f.Close()
	ipam, err := cniIPAM(o)
	if err != nil {
		return res, err
	}

	dir, err := os.MkdirTemp(o.WorkDir, "apps-")
	if err != nil {
		return res, err
	}
	n, err := startNode(ctx, o, dir, ipam)
	if err != nil {
		if n != nil {
			n.stop()
		}
		return res, err
	}
	defer func() {
		n.stop()
		unmountUnder(dir)
		os.RemoveAll(dir)
	}()
	if err := n.prepare(ctx, image); err != nil {
		return res, err
	}
	hasPodman := true
	if _, err := exec.LookPath("podman"); err != nil {
		hasPodman = false
		notes = append(notes, "podman is not installed (make bench-deps): not measured.")
	}
	// podman refuses a runroot longer than 50 characters: a short one in /tmp.
	podmanRoot, err := os.MkdirTemp("", "pm-")
	if err != nil {
		return res, err
	}
	defer func() {
		_ = n.podman(podmanRoot, "rm", "-f", "-a", "-t", "0").Run()
		_ = n.podman(podmanRoot, "system", "reset", "-f").Run()
		unmountUnder(podmanRoot)
		os.RemoveAll(podmanRoot)
	}()
	if hasPodman {
		if out, err := n.podman(podmanRoot, "load", "-i", image).CombinedOutput(); err != nil {
			hasPodman = false
			notes = append(notes, fmt.Sprintf("podman load failed (%v: %s): podman not measured.", err, lastLine(out)))
		}
	}
	for si, size := range sizes {
		metric := res.Metrics[si].Name
		for r := 0; r < o.Runs; r++ {
			name := fmt.Sprintf("b%d-%d", size, r)
			d, err := n.stellarStart(ctx, name, size)
			if err != nil {
				return res, fmt.Errorf("stellar, %d instances: %w", size, err)
			}
			stellar.Add(metric, ms(d))
			if err := n.stellarDelete(ctx, name); err != nil {
				return res, err
			}
			d, err = n.ctrStart(ctx, name, size, 1)
			if err != nil {
				return res, fmt.Errorf("ctr, %d containers: %w", size, err)
			}
			ctr.Add(metric, ms(d))
			n.ctrClean()
			d, err = n.ctrStart(ctx, name, size, ctrParallel)
			if err != nil {
				return res, fmt.Errorf("ctr %d at a time, %d containers: %w", ctrParallel, size, err)
			}
			ctrPar.Add(metric, ms(d))
			n.ctrClean()
			if hasPodman {
				d, err := n.podmanStart(podmanRoot, name, size)
				if err != nil {
					hasPodman = false
					notes = append(notes, fmt.Sprintf("podman run failed (%v): podman not measured further.", err))
				} else {
					podman.Add(metric, ms(d))
				}
				_ = n.podman(podmanRoot, "rm", "-f", "-a", "-t", "0").Run()
			}
		}
	}
	res.Subjects = append(res.Subjects, stellar, ctr, ctrPar)
	if len(podman.Samples) > 0 {
		res.Subjects = append(res.Subjects, podman)
	}
	res.Notes = append(res.Notes,
		"One node (stellar-gossip, -netd, -dnsd, -proxyd, -appd and its own containerd) in a private network namespace; the busybox image is imported first (not timed). Every container runs a shell loop of `sleep 1` that exits on SIGTERM.",
		"Stellar: time from POST /v1/apps (an app of N instances, network: true: own namespace, CNI ADD through netd's conflist, resolv.conf) to GET /v1/apps/NAME showing N instances running with a PID, polled every 20 ms. The app is deleted between runs.",
		"ctr: the same N containers started one after the other with `ctr run -d --cni` against the same containerd, with /etc/cni/net.d and /opt/cni/bin replaced (private mount namespace) by netd's conflist and the plugins, so the networking work is the same; timed from the first call to the last return.",
		fmt.Sprintf("ctr, %d at a time: the same, with up to %d `ctr run` at once (xargs -P), since stellar-appd creates the new instances of one pass %d at a time: this shows how much of Stellar's figure for 20 is that concurrency. For 1 instance it is the same work as ctr alone.", ctrParallel, ctrParallel, ctrParallel),
		"Stellar's time includes what ctr's does not: the reconcile pass that notices the new app, a log driver process per container (stellar-appd under the shim, output to the journal), `ip netns add` for the pinned namespace, resolv.conf, and publishing each instance in the cluster state, which the 20 ms poll of GET /v1/apps/NAME reads back.",
		"podman: `podman run -d` N times with its own storage under the work dir, in the same network namespace, with its default network.",
		"Runs alternate the subjects; medians over the runs, min and max beside them.")
	res.Notes = append(res.Notes, notes...)
	return res, nil
}

// lastLine is the last non-empty line of a command's output.
func lastLine(out []byte) string {
	ls := strings.Split(strings.TrimSpace(string(out)), "\n")
	return strings.TrimSpace(ls[len(ls)-1])
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// cniIPAM returns the directory holding stellar-cni-ipam (built into the
// work dir when BinDir lacks it).
func cniIPAM(o harness.Options) (string, error) {
	if _, err := os.Stat(filepath.Join(o.BinDir, "stellar-cni-ipam")); err == nil {
		return o.BinDir, nil
	}
	dir := filepath.Join(o.WorkDir, "cni-ipam")
	cmd := exec.Command("go", "build", "-o", dir+"/", "stellar.dev/stellar-cni-ipam")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("build stellar-cni-ipam: %w: %s", err, out)
	}
	return dir, nil
}

func freePort() int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// startNode starts containerd and the five daemons in a new network
// namespace (netd makes a bridge there, never in the host's).
func startNode(ctx context.Context, o harness.Options, dir, ipam string) (*node, error) {
	n := &node{dir: dir, conf: filepath.Join(dir, "cni"), bins: filepath.Join(dir, "cnibin")}
	holder := exec.Command("unshare", "--net", "--", "sh", "-c", "ip link set lo up; exec sleep 100000")
	holder.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := holder.Start(); err != nil {
		return nil, fmt.Errorf("make network namespace (needs root): %w", err)
	}
	n.procs = append(n.procs, proc{"holder", holder})
	time.Sleep(200 * time.Millisecond)
	n.ns = fmt.Sprintf("/proc/%d/ns/net", holder.Process.Pid)

	// The plugins ctr finds in /opt/cni/bin: Debian's and stellar-cni-ipam.
	if err := os.MkdirAll(n.bins, 0o755); err != nil {
		return n, err
	}
	for _, src := range []string{"/usr/lib/cni", "/opt/cni/bin", ipam} {
		ents, _ := os.ReadDir(src)
		for _, e := range ents {
			_ = os.Symlink(filepath.Join(src, e.Name()), filepath.Join(n.bins, e.Name()))
		}
	}
	ctd := filepath.Join(dir, "containerd")
	os.MkdirAll(ctd, 0o755)
	sock := filepath.Join(ctd, "containerd.sock")
	ctdConf := fmt.Sprintf("version = 2\nroot = %q\nstate = %q\ndisabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n[grpc]\naddress = %q\n[ttrpc]\naddress = %q\n[debug]\naddress = \"\"\n[metrics]\naddress = \"\"\n",
		filepath.Join(ctd, "root"), filepath.Join(ctd, "state"), sock, sock+".ttrpc")
	if err := os.WriteFile(filepath.Join(ctd, "containerd.toml"), []byte(ctdConf), 0o644); err != nil {
		return n, err
	}
	if err := n.start("containerd", "containerd", "--config", filepath.Join(ctd, "containerd.toml")); err != nil {
		return n, err
	}
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
cni_bin_dirs = [%q]
[dns]
listen = ["127.0.0.1:%d"]
upstream = ["127.0.0.1:9"]
[proxy]
http = "127.0.0.1:%d"
https = "127.0.0.1:%d"
[apps]
containerd = %q
`, filepath.Join(dir, "run"), filepath.Join(dir, "state"), freePort(), freePort(), n.conf, n.bins, freePort(), freePort(), freePort(), sock)
	if err := os.WriteFile(cfg, []byte(body), 0o644); err != nil {
		return n, err
	}
	for _, d := range daemons {
		if err := n.start(d, filepath.Join(o.BinDir, "stellar-"+d), "--config", cfg); err != nil {
			return n, err
		}
	}
	n.api = client.Unix("stellar-appd", filepath.Join(dir, "run", "appd.sock")).WithTimeout(60 * time.Second)
	return n, nil
}

func (n *node) start(name, bin string, args ...string) error {
	c := exec.Command("nsenter", append([]string{"--net=" + n.ns, "--", bin}, args...)...)
	logf, _ := os.Create(filepath.Join(n.dir, name+".log"))
	c.Stdout, c.Stderr = logf, logf
	c.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := c.Start(); err != nil {
		return fmt.Errorf("start %s: %w", name, err)
	}
	n.procs = append(n.procs, proc{name, c})
	return nil
}

func (n *node) sock() string { return filepath.Join(n.dir, "containerd", "containerd.sock") }

// prepare waits for appd, gossip and netd's conflist and imports the image into
// both namespaces.
func (n *node) prepare(ctx context.Context, image string) error {
	var last error
	if err := waitFor(ctx, 2*time.Minute, func() bool {
		_, statErr := os.Stat(filepath.Join(n.conf, "10-stellar.conflist"))
		last = n.call("GET", "/v1/apps", nil, nil) // answered from gossip: both serve
		if last == nil && statErr != nil {
			last = fmt.Errorf("no conflist from netd yet: %w", statErr)
		}
		return last == nil
	}); err != nil {
		return fmt.Errorf("node not ready: %w: %v", err, last)
	}
	tar, err := os.ReadFile(image)
	if err != nil {
		return err
	}
	if err := n.call("POST", "/v1/images/import", tar, nil); err != nil {
		return fmt.Errorf("import through stellar-appd: %w", err)
	}
	if out, err := n.ctr("images", "import", image).CombinedOutput(); err != nil {
		return fmt.Errorf("ctr images import: %w: %s", err, out)
	}
	return nil
}

func (n *node) call(method, path string, body []byte, out any) error {
	var in any
	if body != nil {
		in = bytes.NewReader(body)
	}
	return n.api.Do(context.Background(), method, path, in, out)
}

type appStatus struct {
	Instances []struct {
		Status string `json:"status"`
		PID    int    `json:"pid"`
		Error  string `json:"error"`
	} `json:"instances"`
}

// stellarStart creates an app of size instances and times it to all running.
func (n *node) stellarStart(ctx context.Context, name string, size int) (time.Duration, error) {
	spec, _ := json.Marshal(map[string]any{"name": name, "services": []any{map[string]any{
		"name": "s", "image": busyboxRef, "instances": size,
		"process": map[string]any{"args": containerArgs},
	}}})
	t0 := time.Now()
	if err := n.call("POST", "/v1/apps", spec, nil); err != nil {
		return 0, err
	}
	var last string
	var took time.Duration
	err := waitFor(ctx, 5*time.Minute, func() bool {
		var st appStatus
		if err := n.call("GET", "/v1/apps/"+name, nil, &st); err != nil {
			last = err.Error()
			return false
		}
		k := 0
		for _, in := range st.Instances {
			if in.Status == "running" && in.PID != 0 {
				k++
			} else if in.Error != "" {
				last = in.Error
			}
		}
		took = time.Since(t0)
		return k == size
	})
	if err != nil {
		return 0, fmt.Errorf("%w: %s", err, last)
	}
	return took, nil
}

func (n *node) stellarDelete(ctx context.Context, name string) error {
	if err := n.call("DELETE", "/v1/apps/"+name, nil, nil); err != nil {
		return err
	}
	if err := waitFor(ctx, 10*time.Minute, func() bool {
		out, err := n.ctrNS("stellar", "containers", "ls", "-q").Output()
		return err == nil && strings.TrimSpace(string(out)) == ""
	}); err != nil {
		return fmt.Errorf("delete app %s: containers left: %w", name, err)
	}
	return nil
}

func (n *node) ctrNS(ns string, args ...string) *exec.Cmd {
	c := exec.Command("nsenter", append([]string{"--net=" + n.ns, "--", "ctr", "--address", n.sock(), "-n", ns}, args...)...)
	c.WaitDelay = 30 * time.Second
	return c
}

func (n *node) ctr(args ...string) *exec.Cmd { return n.ctrNS("bench", args...) }

// ctrParallel is how many `ctr run` the parallel ctr subject runs at once:
// stellar-appd's createParallel.
const ctrParallel = 4

// ctrStart runs size containers with ctr run -d --cni, parallel at a time,
// ctr seeing netd's conflist and the plugins at CNI's default paths
// (private mount namespace).
func (n *node) ctrStart(ctx context.Context, name string, size, parallel int) (time.Duration, error) {
	var script strings.Builder
	fmt.Fprintf(&script, "set -e; mount --make-rprivate /; mount --bind %q /etc/cni/net.d; mount -t tmpfs none /opt; mkdir -p /opt/cni; ln -s %q /opt/cni/bin; ", n.conf, n.bins)
	if parallel <= 1 {
		script.WriteString(`t0=$(date +%s%N); for i in $(seq 1 "$N"); do ctr --address "$SOCK" -n bench run -d --cni "$IMG" "$NAME-$i" sh -c "trap 'exit 0' TERM; while :; do sleep 1; done" >/dev/null; done; t1=$(date +%s%N); echo $((t1 - t0))`)
	} else {
		script.WriteString(`t0=$(date +%s%N); seq 1 "$N" | xargs -P "$P" -I{} ctr --address "$SOCK" -n bench run -d --cni "$IMG" "$NAME-p{}" sh -c "trap 'exit 0' TERM; while :; do sleep 1; done" >/dev/null; t1=$(date +%s%N); echo $((t1 - t0))`)
	}
	c := exec.CommandContext(ctx, "nsenter", "--net="+n.ns, "--", "unshare", "-m", "--", "sh", "-c", script.String())
	c.Env = append(os.Environ(), "N="+strconv.Itoa(size), "P="+strconv.Itoa(parallel), "SOCK="+n.sock(), "IMG="+busyboxRef, "NAME="+name)
	out, err := c.CombinedOutput()
	if err != nil {
		return 0, fmt.Errorf("%w: %s", err, out)
	}
	f := strings.Fields(string(out))
	if len(f) == 0 {
		return 0, fmt.Errorf("no time from the ctr script: %q", out)
	}
	ns, err := strconv.ParseInt(f[len(f)-1], 10, 64)
	if err != nil {
		return 0, fmt.Errorf("time from the ctr script: %q", out)
	}
	return time.Duration(ns), nil
}

// ctrClean kills and removes the ctr containers and releases their IPs
// (ctr's own CNI DEL runs when it deletes a --cni task's container? It
// does not: netd's GC with no live container frees them).
func (n *node) ctrClean() {
	out, _ := n.ctr("containers", "ls", "-q").Output()
	ids := strings.Fields(string(out))
	for _, id := range ids {
		_ = n.ctr("tasks", "kill", "-s", "KILL", id).Run()
	}
	for _, id := range ids {
		_ = waitFor(context.Background(), 10*time.Second, func() bool { return n.ctr("tasks", "delete", "-f", id).Run() == nil })
		_ = n.ctr("containers", "delete", id).Run()
	}
	gc, _ := json.Marshal(map[string]any{"containers": []string{}})
	req, _ := http.NewRequest("POST", "http://netd/v1/ipam/gc", bytes.NewReader(gc))
	hc := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", filepath.Join(n.dir, "run", "netd.sock"))
	}}}
	if resp, err := hc.Do(req); err == nil {
		resp.Body.Close()
	}
}

func (n *node) podman(root string, args ...string) *exec.Cmd {
	base := []string{"--net=" + n.ns, "--", "podman", "--root", filepath.Join(root, "root"), "--runroot", filepath.Join(root, "run"), "--storage-driver", "overlay", "--cgroup-manager", "cgroupfs", "--events-backend", "none"}
	c := exec.Command("nsenter", append(base, args...)...)
	c.WaitDelay = 30 * time.Second
	return c
}

// podmanUlimits are the limits podman's containers get: containerd's
// default spec (what ctr and appd's containers get) has nofile 1024:1024;
// podman's own defaults exceed the hard limits of this host and runc fails.
var podmanUlimits = []string{"--ulimit", "nofile=1024:1024", "--ulimit", "nproc=4096:4096"}

func (n *node) podmanStart(root, name string, size int) (time.Duration, error) {
	t0 := time.Now()
	for i := 1; i <= size; i++ {
		args := append(append([]string{"run", "-d", "--name", fmt.Sprintf("%s-%d", name, i)}, podmanUlimits...), busyboxRef)
		args = append(args, containerArgs...)
		if out, err := n.podman(root, args...).CombinedOutput(); err != nil {
			return 0, fmt.Errorf("%w: %s", err, lastLine(out))
		}
	}
	return time.Since(t0), nil
}

func (n *node) stop() {
	// appd first, so it does not restart what is being cleaned.
	for _, p := range n.procs {
		if p.name == "appd" {
			stopProc(p)
		}
	}
	n.ctrClean()
	for _, ns := range []string{"stellar", "bench"} {
		out, _ := n.ctrNS(ns, "containers", "ls", "-q").Output()
		for _, id := range strings.Fields(string(out)) {
			_ = n.ctrNS(ns, "tasks", "kill", "-s", "KILL", id).Run()
			_ = waitFor(context.Background(), 10*time.Second, func() bool { return n.ctrNS(ns, "tasks", "delete", "-f", id).Run() == nil })
			_ = n.ctrNS(ns, "containers", "delete", id).Run()
		}
	}
	for i := len(n.procs) - 1; i >= 0; i-- {
		if n.procs[i].name != "appd" {
			stopProc(n.procs[i])
		}
	}
}

func stopProc(p proc) {
	if p.cmd.ProcessState != nil {
		return
	}
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

func unmountUnder(dir string) {
	raw, err := os.ReadFile("/proc/self/mounts")
	if err != nil {
		return
	}
	var ms []string
	for _, l := range strings.Split(string(raw), "\n") {
		if f := strings.Fields(l); len(f) > 1 && strings.HasPrefix(f[1], dir+"/") {
			ms = append(ms, f[1])
		}
	}
	for i := len(ms) - 1; i >= 0; i-- {
		_ = syscall.Unmount(ms[i], syscall.MNT_DETACH)
	}
}

func version(binDir string) string {
	out, err := exec.Command(filepath.Join(binDir, "stellar-appd"), "version").Output()
	if err != nil {
		return "?"
	}
	if f := strings.Fields(string(out)); len(f) > 1 {
		return f[1]
	}
	return "?"
}

func waitFor(ctx context.Context, within time.Duration, f func() bool) error {
	deadline := time.Now().Add(within)
	for !f() {
		if time.Now().After(deadline) {
			return fmt.Errorf("not within %s", within)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
	return nil
}
