package main

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"stellar.dev/api/appapi"
	"stellar.dev/api/client"
	"stellar.dev/api/netapi"
	"stellar.dev/daemon/daemontest"
	"stellar.dev/stellar-appd/internal/network"
)

// networkConfig builds stellar-netd and the CNI plugins for a test, starts
// netd in the harness's namespace and returns the config lines.
func (h *harness) networkConfig(dir string) string {
	t := h.t
	plugins := filepath.Join(dir, "plugins")
	os.MkdirAll(plugins, 0o755)
	if out, err := exec.Command("go", "build", "-o", filepath.Join(plugins, "stellar-cni-ipam"), "stellar.dev/stellar-cni-ipam").CombinedOutput(); err != nil {
		t.Fatalf("build stellar-cni-ipam: %v: %s", err, out)
	}
	for _, p := range []string{"bridge", "portmap", "loopback"} {
		if _, err := os.Stat(filepath.Join("/usr/lib/cni", p)); err != nil {
			t.Skipf("Debian's CNI plugins are missing (make deps): SKIPPED: %v", err)
		}
		if err := os.Symlink(filepath.Join("/usr/lib/cni", p), filepath.Join(plugins, p)); err != nil {
			t.Fatal(err)
		}
	}
	return fmt.Sprintf(`[network]
cni_conf_dir = %q
cni_bin_dirs = [%q]
`, filepath.Join(dir, "cni"), plugins)
}

func (h *harness) startNetd() {
	bin, args := h.inNS(daemontest.Build(h.t, "stellar.dev/stellar-netd"), "--config", h.cfg)
	h.netd = startProc(h.t, bin, args...)
	h.t.Cleanup(func() {
		h.netd.stop()
		if h.t.Failed() {
			h.t.Logf("--- netd output (tail):\n%s", tail(h.netd.out.String(), 40))
		}
	})
}

func makeNetns(t *testing.T) string {
	name := fmt.Sprintf("appd-it-%d", os.Getpid())
	_ = exec.Command("ip", "netns", "del", name).Run()
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add: %v: %s", err, out)
	}
	t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", name).Run() })
	if out, err := exec.Command("ip", "netns", "exec", name, "ip", "link", "set", "lo", "up").CombinedOutput(); err != nil {
		t.Fatalf("lo up: %v: %s", err, out)
	}
	return name
}

// Everything that touches networking (netd's bridge and routes, the CNI
// plugins) runs inside a network namespace this test made.
func TestAppd_networking(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("stellar-appd networking test makes network namespaces: needs root: SKIPPED (run as root, as CI does)")
	}
	ns := makeNetns(t)
	h := newHarnessIn(t, ns)
	h.startNetd()
	ctx := context.Background()
	nc := netapi.New(client.Unix("stellar-netd", filepath.Join(h.dir, "run", "netd.sock")).WithTimeout(10 * time.Second))
	eventually(t, 2*time.Minute, "netd claims a subnet and writes the CNI network", func() error {
		st, err := nc.Status(ctx)
		if err != nil {
			return err
		}
		if st.Subnet == "" || !st.HostReady {
			return fmt.Errorf("status %+v", st)
		}
		if _, err := os.Stat(filepath.Join(h.dir, "cni", network.ConfName)); err != nil {
			return err
		}
		return nil
	})
	f, err := os.Open(h.httpd)
	if err != nil {
		t.Fatal(err)
	}
	_, err = h.api.ImportImage(ctx, f)
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	web := parse(t, `{"name":"web","services":[{"name":"www","image":"stellar.test/httpd:latest","instances":2,
		"process":{"args":["/httpd","--listen",":8080"]},
		"health":{"http":"/health","port":8080,"interval":"1s","timeout":"1s","retries":3}}]}`)
	if _, err := h.api.Create(ctx, web); err != nil {
		t.Fatal(err)
	}
	// Healthy means appd reached each instance on its own IP over the bridge.
	ins := h.running("web", 2, true, 2*time.Minute)
	st, err := nc.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	subnet := netip.MustParsePrefix(st.Subnet)
	ips := map[string]bool{}
	for name, in := range ins {
		ip, err := netip.ParseAddr(in.IP)
		if err != nil || !subnet.Contains(ip) {
			t.Fatalf("%s has IP %q, not in the node's subnet %s", name, in.IP, subnet)
		}
		ips[in.IP] = true
		out, err := exec.Command("ip", "netns", "exec", ns, "wget", "-q", "-O", "-", "http://"+in.IP+":8080/").CombinedOutput()
		if err == nil && !strings.HasPrefix(string(out), name+"\n") {
			t.Fatalf("GET / of %s answered %q, want its hostname first", name, out)
		}
		if _, err := os.Stat(network.NetNSPath(in.ContainerID)); err != nil {
			t.Fatalf("no pinned namespace for %s: %v", name, err)
		}
	}
	if len(ips) != 2 {
		t.Fatalf("instances share an IP: %v", ins)
	}
	// kill -9 of appd: same IPs, same PIDs.
	h.appd.kill()
	h.startAppd()
	time.Sleep(2 * time.Second)
	again := h.running("web", 2, true, time.Minute)
	for name, in := range ins {
		if again[name].IP != in.IP || again[name].PID != in.PID {
			t.Fatalf("%s changed across an appd kill: %+v -> %+v", name, in, again[name])
		}
	}
	// The restarted appd collected leaked IPs (netd GC with the live
	// containers): the live ones are still allocated.
	eventually(t, 30*time.Second, "live IPs kept by GC", func() error {
		allocs, err := nc.Allocations(ctx)
		if err != nil {
			return err
		}
		if len(allocs) != 2 {
			return fmt.Errorf("allocations %+v, want the 2 live ones", allocs)
		}
		return nil
	})
	// A reboot empties /run/netns: a stopped container whose pinned
	// namespace is gone is attached again (new namespace, CNI ADD, IP label)
	// and its old IP released, instead of failing in runc forever.
	var lost appapi.Instance
	for _, in := range again {
		lost = in
		break
	}
	if out, err := exec.Command("ip", "netns", "delete", "stellar-"+lost.ContainerID).CombinedOutput(); err != nil {
		t.Fatalf("delete the pinned namespace of %s: %v: %s", lost.ContainerID, err, out)
	}
	if err := syscall.Kill(int(lost.PID), syscall.SIGKILL); err != nil {
		t.Fatalf("kill %s: %v", lost.ContainerID, err)
	}
	eventually(t, 2*time.Minute, "instance with a lost namespace back, healthy, on the network", func() error {
		st, err := h.api.Get(ctx, "web")
		if err != nil {
			return err
		}
		for _, in := range st.Instances {
			if in.Name() != lost.Name() {
				continue
			}
			if in.Status != appapi.StatusRunning || in.PID == 0 || in.PID == lost.PID || in.Health != appapi.HealthHealthy {
				return fmt.Errorf("instance %+v", in)
			}
			ip, err := netip.ParseAddr(in.IP)
			if err != nil || !subnet.Contains(ip) {
				return fmt.Errorf("IP %q not in the node's subnet %s", in.IP, subnet)
			}
			if _, err := os.Stat(network.NetNSPath(in.ContainerID)); err != nil {
				return fmt.Errorf("namespace not pinned again: %v", err)
			}
			return nil
		}
		return fmt.Errorf("%s not listed: %+v", lost.Name(), st.Instances)
	})
	h.running("web", 2, true, time.Minute)
	allocs, err := nc.Allocations(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(allocs) != 2 {
		t.Fatalf("allocations after re-attaching %+v, want 2 (the old IP released)", allocs)
	}
	if err := h.api.Delete(ctx, "web", ""); err != nil {
		t.Fatal(err)
	}
	eventually(t, time.Minute, "IPs and namespaces released", func() error {
		allocs, err := nc.Allocations(ctx)
		if err != nil {
			return err
		}
		if len(allocs) != 0 {
			return fmt.Errorf("allocations left: %+v", allocs)
		}
		for _, in := range ins {
			if _, err := os.Stat(network.NetNSPath(in.ContainerID)); err == nil {
				return fmt.Errorf("namespace of %s left", in.ContainerID)
			}
		}
		return nil
	})
}
