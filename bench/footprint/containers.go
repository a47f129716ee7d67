package footprint

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
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"stellar.dev/testimages"
)

// busyboxRef is the image the containers run.
const busyboxRef = "stellar.test/busybox:latest"

// containerArgs is what every measured container runs: one process that
// sleeps, so the figures are the runtime's cost, not the workload's.
var containerArgs = []string{"sleep", "1000000"}

// writeBusybox writes the busybox image archive (Debian's busybox-static).
func writeBusybox(ctx context.Context, dir string) (string, error) {
	path := filepath.Join(dir, testimages.BusyboxFile)
	f, err := os.Create(path)
	if err != nil {
		return "", err
	}
	if err := testimages.WriteBusybox(ctx, f, ""); err != nil {
		f.Close()
		return "", fmt.Errorf("build busybox image: %w", err)
	}
	return path, f.Close()
}

func unixHTTP(sock string) *http.Client {
	return &http.Client{Timeout: 60 * time.Second, Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", sock)
	}}}
}

func appdCall(hc *http.Client, method, path string, body []byte, out any) error {
	req, err := http.NewRequest(method, "http://appd"+path, bytes.NewReader(body))
	if err != nil {
		return err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		var b bytes.Buffer
		b.ReadFrom(resp.Body)
		return fmt.Errorf("%s %s: %s: %s", method, path, resp.Status, strings.TrimSpace(b.String()))
	}
	if out != nil {
		return json.NewDecoder(resp.Body).Decode(out)
	}
	return nil
}

// runApp imports the busybox image through stellar-appd and creates an app
// of n instances (network false: they share the node's private namespace),
// then waits until every instance runs.
func runApp(ctx context.Context, runDir, image string, n int) error {
	hc := unixHTTP(filepath.Join(runDir, "appd.sock"))
	tar, err := os.ReadFile(image)
	if err != nil {
		return err
	}
	if err := appdCall(hc, "POST", "/v1/images/import", tar, nil); err != nil {
		return fmt.Errorf("import image through stellar-appd: %w", err)
	}
	spec, _ := json.Marshal(map[string]any{"name": "idle", "services": []any{map[string]any{
		"name": "sleep", "image": busyboxRef, "network": false, "instances": n,
		"process": map[string]any{"args": containerArgs},
	}}})
	if err := appdCall(hc, "POST", "/v1/apps", spec, nil); err != nil {
		return fmt.Errorf("create app: %w", err)
	}
	var last string
	err = waitFor(ctx, 5*time.Minute, func() bool {
		var st struct {
			Instances []struct {
				Status string `json:"status"`
				PID    int    `json:"pid"`
				Error  string `json:"error"`
			} `json:"instances"`
		}
		if err := appdCall(hc, "GET", "/v1/apps/idle", nil, &st); err != nil {
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
		last = fmt.Sprintf("%d of %d running (%s)", k, n, last)
		return k == n
	})
	if err != nil {
		return fmt.Errorf("wait for %d containers through stellar-appd: %w: %s", n, err, last)
	}
	return nil
}

// runPlain runs n containers with ctr on containerd alone (no Stellar).
func runPlain(ctx context.Context, sock, image string, n int) error {
	if out, err := ctrCmd(sock, "images", "import", image).CombinedOutput(); err != nil {
		return fmt.Errorf("ctr images import: %w: %s", err, out)
	}
	for i := 0; i < n; i++ {
		args := append([]string{"run", "-d", busyboxRef, fmt.Sprintf("idle-%d", i)}, containerArgs...)
		if out, err := ctrCmd(sock, args...).CombinedOutput(); err != nil {
			return fmt.Errorf("ctr run: %w: %s", err, out)
		}
	}
	return nil
}

// plainNamespace is the containerd namespace of the ctr containers;
// stellar-appd uses its default, "stellar".
const plainNamespace = "bench"

func ctrCmd(sock string, args ...string) *exec.Cmd {
	ns := plainNamespace
	if len(args) > 0 && args[0] == "-n" {
		ns, args = args[1], args[2:]
	}
	c := exec.CommandContext(context.Background(), "ctr", append([]string{"--address", sock, "-n", ns}, args...)...)
	c.WaitDelay = 30 * time.Second
	return c
}

// cleanContainers kills and deletes every container of containerd at sock
// in the namespaces given, then kills whatever shim of it is left.
func cleanContainers(sock string, namespaces ...string) {
	for _, ns := range namespaces {
		out, _ := ctrCmd(sock, "-n", ns, "containers", "ls", "-q").Output()
		for _, id := range strings.Fields(string(out)) {
			_ = ctrCmd(sock, "-n", ns, "tasks", "kill", "-s", "KILL", id).Run()
		}
		for _, id := range strings.Fields(string(out)) {
			_ = waitFor(context.Background(), 10*time.Second, func() bool {
				if ctrCmd(sock, "-n", ns, "tasks", "delete", "-f", id).Run() == nil {
					return true
				}
				ls, err := ctrCmd(sock, "-n", ns, "tasks", "ls", "-q").Output()
				return err != nil || !strings.Contains("\n"+string(ls), "\n"+id+"\n")
			})
			_ = ctrCmd(sock, "-n", ns, "containers", "delete", id).Run()
		}
	}
	for _, pid := range shimsOf(sock) {
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
}

// unmountUnder lazily unmounts whatever is still mounted below dir (rootfs
// overlays of containers whose shim was killed).
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

// shimsOf returns the pids of the containerd shims serving containerd at sock.
func shimsOf(sock string) []int {
	return procsWhere(func(args []string) bool {
		return strings.Contains(filepath.Base(args[0]), "containerd-shim") && flagIs(args, "-address", func(v string) bool { return v == sock })
	})
}

// procsWhere returns the pids of the processes whose command line (never
// empty) match accepts.
func procsWhere(match func(args []string) bool) []int {
	ents, _ := os.ReadDir("/proc")
	var pids []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		raw, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil || len(raw) == 0 {
			continue
		}
		if match(strings.Split(string(raw), "\x00")) {
			pids = append(pids, pid)
		}
	}
	return pids
}

// flagIs reports whether args has flag followed by a value ok accepts.
func flagIs(args []string, flag string, ok func(string) bool) bool {
	for i, a := range args {
		if a == flag && i+1 < len(args) && ok(args[i+1]) {
			return true
		}
	}
	return false
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
		case <-time.After(200 * time.Millisecond):
		}
	}
	return nil
}

// logDriversOf returns the PIDs of the log drivers of the node whose state
// directory is stateDir: stellar-appd processes started by the shims with
// --stellar-log-driver and a --dir under stateDir.
func logDriversOf(stateDir string) []int {
	return procsWhere(func(args []string) bool {
		return slices.Contains(args, "--stellar-log-driver") && flagIs(args, "--dir", func(v string) bool {
			return strings.HasPrefix(v, stateDir+string(filepath.Separator))
		})
	})
}
