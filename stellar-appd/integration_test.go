package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"stellar.dev/api/appapi"
	"stellar.dev/api/client"
	"stellar.dev/api/errdefs"
	"stellar.dev/api/gossipapi"
	"stellar.dev/daemon/daemontest"
	"stellar.dev/testimages"
)

// The integration test runs the real parts: containerd and runc started
// by the test with their own root, state and socket under a temp dir, a
// real stellar-gossip (a lone node on loopback) and stellar-appd as
// processes. Containers use the host network (network: false) and listen
// on loopback only.

type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuf) Write(p []byte) (int, error) { b.mu.Lock(); defer b.mu.Unlock(); return b.b.Write(p) }
func (b *syncBuf) String() string              { b.mu.Lock(); defer b.mu.Unlock(); return b.b.String() }

type proc struct {
	cmd  *exec.Cmd
	out  *syncBuf
	done chan struct{}
}

func startProc(t *testing.T, bin string, args ...string) *proc {
	t.Helper()
	p := &proc{cmd: exec.Command(bin, args...), out: &syncBuf{}, done: make(chan struct{})}
	p.cmd.Stdout, p.cmd.Stderr = p.out, p.out
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", bin, err)
	}
	go func() { _ = p.cmd.Wait(); close(p.done) }()
	return p
}

func (p *proc) kill() {
	select {
	case <-p.done:
	default:
		_ = p.cmd.Process.Signal(syscall.SIGKILL)
		<-p.done
	}
}

func (p *proc) stop() {
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(30 * time.Second):
		p.kill()
	}
}

var harnesses atomic.Int32

type harness struct {
	t       *testing.T
	dir     string
	ctdDir  string
	ctdSock string
	ns      string
	cfg     string
	ctd     *proc
	gossip  *proc
	appd    *proc
	appdBin string
	api     *appapi.Client
	g       *gossipapi.Client
	busybox string
	httpd   string
	netns   string // when set, gossip, netd and appd run in this network namespace
	netd    *proc
}

func eventually(t *testing.T, within time.Duration, what string, f func() error) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		err := f()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s: %v", what, within, err)
		}
		time.Sleep(250 * time.Millisecond)
	}
}

func newHarness(t *testing.T) *harness { return newHarnessIn(t, "") }

// inNS returns argv run inside the harness's network namespace.
func (h *harness) inNS(bin string, args ...string) (string, []string) {
	if h.netns == "" {
		return bin, args
	}
	// nsenter enters only the network namespace: "ip netns exec" would also
	// give the daemon a private mount namespace, hiding the namespaces it
	// pins under /run/netns from containerd and runc.
	return "nsenter", append([]string{"--net=/run/netns/" + h.netns, "--", bin}, args...)
}

func newHarnessIn(t *testing.T, netns string) *harness {
	return newNode(t, netns, "node-a", "127.0.0.1", "0")
}

// newNode starts containerd, gossip (serf on ip:port, the peer port on
// the next port) and appd as node name.
func newNode(t *testing.T, netns, name, ip, port string) *harness {
	if os.Geteuid() != 0 {
		t.Skip("stellar-appd integration runs containerd and runc: needs root: SKIPPED (run as root, as CI does)")
	}
	for _, bin := range []string{"containerd", "containerd-shim-runc-v2", "runc", "ctr"} {
		if _, err := exec.LookPath(bin); err != nil {
			t.Skipf("%s is not installed (make deps): SKIPPED", bin)
		}
	}
	dir, err := os.MkdirTemp("", "appd-")
	if err != nil {
		t.Fatal(err)
	}
	h := &harness{t: t, dir: dir, ns: fmt.Sprintf("stellar-it-%d-%d", os.Getpid(), harnesses.Add(1)), netns: netns}
	extra := ""
	if netns != "" {
		extra = h.networkConfig(dir)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	h.busybox, h.httpd, err = testimages.Build(context.Background(), filepath.Join(dir, "images"), testimages.Options{})
	if err != nil {
		t.Fatalf("build test images: %v", err)
	}
	h.startContainerd()
	gossipBin := daemontest.Build(t, "stellar.dev/stellar-gossip")
	h.appdBin = daemontest.Build(t, "stellar.dev/stellar-appd")
	run := filepath.Join(dir, "run")
	os.MkdirAll(run, 0o755)
	h.cfg = filepath.Join(dir, "stellar.toml")
	peerPort := port
	if p, err := strconv.Atoi(port); err == nil && p != 0 {
		peerPort = strconv.Itoa(p + 1)
	}
	cfg := fmt.Sprintf(`[node]
name = %q
run_dir = %q
state_dir = %q
log_level = "debug"
[gossip]
bind = "%s:%s"
peer_api = "%s:%s"
[apps]
containerd = %q
namespace = %q
%s
`, name, run, filepath.Join(dir, "state"), ip, port, ip, peerPort, h.ctdSock, h.ns, extra)
	if err := os.WriteFile(h.cfg, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	bin, args := h.inNS(gossipBin, "--config", h.cfg)
	h.gossip = startProc(t, bin, args...)
	h.g = gossipapi.New(client.Unix("stellar-gossip", filepath.Join(run, "gossip.sock")).WithTimeout(10 * time.Second))
	t.Cleanup(func() {
		h.gossip.kill()
		if t.Failed() {
			t.Logf("--- gossip output (tail):\n%s", tail(h.gossip.out.String(), 30))
		}
	})
	h.api = appapi.New(client.Unix("stellar-appd", filepath.Join(run, "appd.sock")).WithTimeout(60 * time.Second))
	h.startAppd()
	t.Cleanup(func() {
		if h.appd != nil {
			h.appd.kill()
			if t.Failed() {
				t.Logf("--- appd output (tail):\n%s", tail(h.appd.out.String(), 80))
			}
		}
		// Leave nothing behind in containerd.
		out, _ := h.ctr("containers", "ls", "-q")
		for _, id := range strings.Fields(out) {
			_, _ = h.ctr("task", "kill", "-s", "KILL", id)
			time.Sleep(100 * time.Millisecond)
			_, _ = h.ctr("task", "delete", "-f", id)
			_, _ = h.ctr("containers", "delete", id)
		}
	})
	eventually(t, 60*time.Second, "gossip serves", func() error {
		_, err := h.g.Members(context.Background())
		return err
	})
	return h
}

func tail(s string, n int) string {
	ls := strings.Split(s, "\n")
	if len(ls) > n {
		ls = ls[len(ls)-n:]
	}
	return strings.Join(ls, "\n")
}

func (h *harness) startAppd() {
	bin, args := h.inNS(h.appdBin, "--config", h.cfg)
	h.appd = startProc(h.t, bin, args...)
	eventually(h.t, 60*time.Second, "appd serves", func() error {
		_, err := h.api.List(context.Background())
		return err
	})
}

func (h *harness) startContainerd() {
	t := h.t
	if h.ctdDir == "" {
		d, err := os.MkdirTemp("", "ctd-")
		if err != nil {
			t.Fatal(err)
		}
		h.ctdDir = d
		h.ctdSock = filepath.Join(d, "c.sock")
		// containerd's shims keep a few things under /run/containerd
		// whatever the state dir; remove what this test made there.
		var made []string
		for _, p := range []string{"/run/containerd", "/run/containerd/runc", "/run/containerd/s", "/run/containerd/fifo"} {
			if _, err := os.Stat(p); err != nil {
				made = append(made, p)
			}
		}
		t.Cleanup(func() {
			_ = os.Remove(filepath.Join("/run/containerd/runc", h.ns))
			for i := len(made) - 1; i >= 0; i-- {
				_ = os.Remove(made[i]) // only if empty
			}
		})
		config := fmt.Sprintf(`version = 2
root = %q
state = %q
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = %q
[ttrpc]
  address = %q
[debug]
  address = ""
[metrics]
  address = ""
`, filepath.Join(d, "root"), filepath.Join(d, "state"), h.ctdSock, h.ctdSock+".ttrpc")
		if err := os.WriteFile(filepath.Join(d, "config.toml"), []byte(config), 0o644); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			if h.ctd != nil {
				h.ctd.kill()
			}
			if b, _ := exec.Command("sh", "-c", "grep ' "+d+"' /proc/self/mounts | cut -d' ' -f2").Output(); len(b) > 0 {
				for _, m := range strings.Fields(string(b)) {
					_ = exec.Command("umount", "-l", m).Run()
				}
			}
			os.RemoveAll(d)
		})
	}
	h.ctd = startProc(t, "containerd", "--config", filepath.Join(h.ctdDir, "config.toml"))
	eventually(t, 30*time.Second, "containerd serves", func() error {
		_, err := h.ctr("version")
		return err
	})
}

func (h *harness) ctr(args ...string) (string, error) {
	out, err := exec.Command("ctr", append([]string{"--address", h.ctdSock, "-n", h.ns}, args...)...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("ctr %s: %w: %s", strings.Join(args, " "), err, out)
	}
	return string(out), nil
}

// running waits until app has n running instances (healthy when asked)
// and returns them by name.
func (h *harness) running(app string, n int, healthy bool, within time.Duration) map[string]appapi.Instance {
	h.t.Helper()
	var got map[string]appapi.Instance
	eventually(h.t, within, fmt.Sprintf("%d running instances of %s", n, app), func() error {
		st, err := h.api.Get(context.Background(), app)
		if err != nil {
			return err
		}
		got = map[string]appapi.Instance{}
		for _, in := range st.Instances {
			if in.Status == appapi.StatusRunning && in.PID != 0 && (!healthy || in.Health == appapi.HealthHealthy) {
				got[in.Name()] = in
			}
		}
		if len(got) != n || len(st.Instances) != n {
			return fmt.Errorf("%d of %d instances running: %+v", len(got), len(st.Instances), st.Instances)
		}
		return nil
	})
	return got
}

func pids(m map[string]appapi.Instance) map[string]uint32 {
	out := map[string]uint32{}
	for k, v := range m {
		out[k] = v.PID
	}
	return out
}

func freePort(t *testing.T) int {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

func parse(t *testing.T, spec string) appapi.App {
	t.Helper()
	a, _, err := appapi.Parse([]byte(spec))
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func TestAppd_containersOnContainerd(t *testing.T) {
	h := newHarness(t)
	ctx := context.Background()

	t.Run("bad spec creates nothing", func(t *testing.T) {
		bad := appapi.App{Name: "bad", Services: []appapi.Service{{Name: "s", Image: testimages.BusyboxRef, Resources: appapi.Resources{Memory: 1}}}}
		_, err := h.api.Create(ctx, bad)
		if !errors.Is(err, errdefs.ErrInvalidArgument) || !strings.Contains(err.Error(), `service "s": resources.memory`) {
			t.Fatalf("create bad spec: %v", err)
		}
		if _, err := h.api.Get(ctx, "bad"); !errors.Is(err, errdefs.ErrNotFound) {
			t.Fatalf("bad app stored: %v", err)
		}
		if out, _ := h.ctr("containers", "ls", "-q"); strings.TrimSpace(out) != "" {
			t.Fatalf("containers after a bad spec: %s", out)
		}
	})

	t.Run("import images", func(t *testing.T) {
		for _, f := range []string{h.busybox, h.httpd} {
			r, err := os.Open(f)
			if err != nil {
				t.Fatal(err)
			}
			imgs, err := h.api.ImportImage(ctx, r)
			r.Close()
			if err != nil || len(imgs) == 0 {
				t.Fatalf("import %s: %v %v", f, imgs, err)
			}
		}
		imgs, err := h.api.Images(ctx)
		if err != nil || len(imgs) < 2 {
			t.Fatalf("images: %v %v", imgs, err)
		}
	})

	bb := parse(t, `{"name":"bb","services":[{"name":"sleep","image":"stellar.test/busybox:latest","network":false,
		"process":{"args":["sh","-c","trap 'exit 0' TERM; echo started $STELLAR_INSTANCE; while true; do sleep 1; done"]},"instances":3,
		"resources":{"cpu":0.2,"memory":32},"update":{"parallel":1,"auto_revert":true}}]}`)
	var before map[string]uint32
	t.Run("create three instances", func(t *testing.T) {
		res, err := h.api.Create(ctx, bb)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := h.api.Create(ctx, bb); !errors.Is(err, errdefs.ErrAlreadyExists) {
			t.Fatalf("second create: %v", err)
		}
		before = pids(h.running("bb", 3, true, 2*time.Minute))
		if res.Version == "" {
			t.Fatal("no version")
		}
	})

	t.Run("sctl", func(t *testing.T) {
		sctl := daemontest.Build(t, "stellar.dev/sctl")
		run := func(args ...string) string {
			out, err := exec.Command(sctl, append([]string{"--config", h.cfg}, args...)...).CombinedOutput()
			if err != nil {
				t.Fatalf("sctl %v: %v: %s", args, err, out)
			}
			return string(out)
		}
		lines := strings.Split(strings.TrimSpace(run("apps", "list")), "\n")
		if len(lines) != 2 || strings.Join(strings.Fields(lines[0]), " ") != "NAME SERVICES" || strings.Join(strings.Fields(lines[1]), " ") != "bb 1" {
			t.Fatalf("apps list:\n%s", strings.Join(lines, "\n"))
		}
		out := run("apps", "inspect", "bb")
		for _, want := range []string{"Name: bb", "Name: bb.sleep", "Image: stellar.test/busybox:latest", "Instances: 3", "0.sleep.bb", "node-a", "running"} {
			if !strings.Contains(out, want) {
				t.Fatalf("apps inspect lacks %q:\n%s", want, out)
			}
		}
		if out := run("images", "list"); !strings.Contains(out, "stellar.test/httpd:latest") {
			t.Fatalf("images list:\n%s", out)
		}
		bad := filepath.Join(h.dir, "bad.toml")
		_ = os.WriteFile(bad, []byte("name = \"x\"\n[[services]]\nname = \"s\"\nimage = \"busybox\"\ninstances = -2\n"), 0o644)
		if out, err := exec.Command(sctl, "--config", h.cfg, "apps", "create", "-f", bad).CombinedOutput(); err == nil || !strings.Contains(string(out), `service "s": instances: must be 0..1000, got -2`) {
			t.Fatalf("sctl apps create of a bad spec: %v: %s", err, out)
		}
		if out := run("node", "cordon", "node-a"); !strings.Contains(out, "cordoned node-a") {
			t.Fatalf("node cordon: %s", out)
		}
		run("node", "uncordon", "node-a")
	})

	t.Run("killed process is restarted with backoff", func(t *testing.T) {
		victim := "0.sleep.bb"
		if err := syscall.Kill(int(before[victim]), syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		eventually(t, 2*time.Minute, "restart", func() error {
			st, err := h.api.Get(ctx, "bb")
			if err != nil {
				return err
			}
			for _, in := range st.Instances {
				if in.Name() == victim {
					if in.Restarts < 1 || in.Status != appapi.StatusRunning || in.PID == before[victim] {
						return fmt.Errorf("%s: %+v", victim, in)
					}
					before[victim] = in.PID
					return nil
				}
			}
			return fmt.Errorf("%s not published", victim)
		})
	})

	t.Run("kill -9 of appd leaves containers alone", func(t *testing.T) {
		for i := range 10 {
			h.appd.kill()
			h.startAppd()
			now := pids(h.running("bb", 3, false, time.Minute))
			for k, pid := range before {
				if now[k] != pid {
					t.Fatalf("round %d: %s pid %d, was %d", i, k, now[k], pid)
				}
			}
		}
	})

	t.Run("containerd restart leaves containers alone", func(t *testing.T) {
		h.ctd.kill()
		h.startContainerd()
		time.Sleep(3 * time.Second) // a few reconcile passes against the new containerd
		now := pids(h.running("bb", 3, false, time.Minute))
		for k, pid := range before {
			if now[k] != pid {
				t.Fatalf("%s pid %d, was %d", k, now[k], pid)
			}
		}
	})

	t.Run("logs", func(t *testing.T) {
		var lines []appapi.LogLine
		eventually(t, 30*time.Second, "log lines", func() error {
			lines = nil
			err := h.api.Logs(ctx, "bb", "sleep", false, "", func(l appapi.LogLine) error { lines = append(lines, l); return nil })
			if err != nil {
				return err
			}
			for _, l := range lines {
				if strings.HasPrefix(l.Message, "started ") && l.Instance != "" {
					return nil
				}
			}
			ents, _ := os.ReadDir(filepath.Join(h.dir, "state", "appd", "logs"))
			var names []string
			for _, e := range ents {
				names = append(names, e.Name())
			}
			return fmt.Errorf("lines %+v; log files %v", lines, names)
		})
	})

	t.Run("failing health check restarts", func(t *testing.T) {
		port := freePort(t)
		web := parse(t, fmt.Sprintf(`{"name":"web","services":[{"name":"www","image":"stellar.test/httpd:latest","network":false,
			"process":{"args":["/httpd","--listen","127.0.0.1:%d"]},
			"health":{"http":"/health","port":%d,"interval":"1s","timeout":"1s","retries":2}}]}`, port, port))
		if _, err := h.api.Create(ctx, web); err != nil {
			t.Fatal(err)
		}
		first := h.running("web", 1, true, 2*time.Minute)["0.www.web"]
		resp, err := http.Post(fmt.Sprintf("http://127.0.0.1:%d/fail", port), "text/plain", nil)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		eventually(t, 2*time.Minute, "restart after failed checks", func() error {
			now := h.running("web", 1, true, time.Minute)["0.www.web"]
			if now.Restarts < 1 || now.PID == first.PID {
				return fmt.Errorf("instance %+v", now)
			}
			return nil
		})
		if err := h.api.Delete(ctx, "web", ""); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("broken update is reverted, old instances never all down", func(t *testing.T) {
		st, err := h.api.Get(ctx, "bb")
		if err != nil {
			t.Fatal(err)
		}
		broken := st.Spec
		broken.Services[0].Process.Args = []string{"sh", "-c", "exit 3"}
		if _, err := h.api.Update(ctx, broken, st.Version); err != nil {
			t.Fatal(err)
		}
		// A stale version conflicts.
		if _, err := h.api.Update(ctx, broken, st.Version); !errors.Is(err, errdefs.ErrConflict) {
			t.Fatalf("update with a stale version: %v", err)
		}
		deadline := time.Now().Add(4 * time.Minute)
		for {
			cur, err := h.api.Get(ctx, "bb")
			if err != nil {
				t.Fatal(err)
			}
			up := 0
			for _, in := range cur.Instances {
				if in.Status == appapi.StatusRunning {
					up++
				}
			}
			if up < 2 {
				t.Fatalf("only %d instances up during the update: %+v", up, cur.Instances)
			}
			if cur.Reverted != "" {
				if got := cur.Spec.Services[0].Process.Args; got[len(got)-1] == "exit 3" {
					t.Fatalf("reverted but spec still broken: %v", got)
				}
				t.Logf("reverted: %s", cur.Reverted)
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("not reverted: %+v", cur.Instances)
			}
			time.Sleep(300 * time.Millisecond)
		}
		h.running("bb", 3, true, 2*time.Minute)
	})

	t.Run("scale", func(t *testing.T) {
		st, err := h.api.Get(ctx, "bb")
		if err != nil {
			t.Fatal(err)
		}
		if _, err := h.api.Scale(ctx, "bb", "sleep", 1, st.Version); err != nil {
			t.Fatal(err)
		}
		if _, err := h.api.Scale(ctx, "bb", "sleep", 2, st.Version); !errors.Is(err, errdefs.ErrConflict) {
			t.Fatalf("scale with a stale version: %v", err)
		}
		h.running("bb", 1, false, time.Minute)
	})

	t.Run("delete leaves nothing behind", func(t *testing.T) {
		if err := h.api.Delete(ctx, "bb", ""); err != nil {
			t.Fatal(err)
		}
		eventually(t, time.Minute, "containers, snapshots and keys gone", func() error {
			if out, _ := h.ctr("containers", "ls", "-q"); strings.TrimSpace(out) != "" {
				return fmt.Errorf("containers left: %s", out)
			}
			out, _ := h.ctr("snapshots", "ls")
			for _, l := range strings.Split(out, "\n")[1:] {
				if f := strings.Fields(l); len(f) > 0 && strings.HasPrefix(f[0], "bb.") {
					return fmt.Errorf("snapshot left: %s", l)
				}
			}
			l, err := h.g.List(ctx, "nodes/node-a/instances/")
			if err != nil {
				return err
			}
			if len(l.Entries) != 0 {
				b, _ := json.Marshal(l.Entries)
				return fmt.Errorf("instance keys left: %s", b)
			}
			return nil
		})
	})
	_ = strconv.Itoa
}
