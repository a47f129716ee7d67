package lab_test

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"testing"
	"time"

	"stellar.dev/lab"
	"stellar.dev/testimages"
)

func TestMain(m *testing.M) {
	lab.RunHelper() // the delay helper re-executes this binary
	os.Exit(m.Run())
}

// needLab skips, loudly, unless this machine can run the lab.
func needLab(t *testing.T) {
	t.Helper()
	if os.Getenv("STELLAR_LAB") == "0" {
		t.Skip("STELLAR_LAB=0: lab tests skipped")
	}
	if os.Geteuid() != 0 {
		fmt.Fprintln(os.Stderr, "SKIP: lab tests need root (systemd-nspawn, network namespaces, mounts); run as root or set STELLAR_LAB=0 to silence this")
		t.Skip("lab tests need root")
	}
	if testing.Short() {
		t.Skip("lab tests are slow; skipped with -short")
	}
	for _, tool := range []string{"systemd-nspawn", "debootstrap", "nsenter", "ip", "nft", "iptables", "dpkg-deb"} {
		if _, err := exec.LookPath(tool); err != nil {
			fmt.Fprintf(os.Stderr, "SKIP: lab tests need %s (apt-get install debootstrap systemd-container iproute2 nftables iptables)\n", tool)
			t.Skipf("lab tests need %s", tool)
		}
	}
}

// newLab returns a lab of its own (own namespaces, state and disks), torn
// down at the end of the test.
func newLab(t *testing.T) *lab.Lab {
	t.Helper()
	l := lab.NewNamed("stellar-labtest", slog.New(slog.NewTextHandler(testWriter{t}, nil)))
	ctx := context.Background()
	if err := l.Down(ctx, lab.DownOptions{}); err != nil {
		t.Fatalf("clean up an earlier test lab: %v", err)
	}
	t.Cleanup(func() {
		if err := l.Down(context.Background(), lab.DownOptions{}); err != nil {
			t.Errorf("down: %v", err)
		}
	})
	return l
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// cniConf is the bridge network the data-path test gives each node, as
// stellar-netd will (with host-local IPAM until netd's own plugin exists).
func cniConf(subnet, gateway string) string {
	return fmt.Sprintf(`{
  "cniVersion": "1.0.0",
  "name": "stellar",
  "plugins": [{
    "type": "bridge", "bridge": "stellar0", "isGateway": true, "ipMasq": false,
    "ipam": {"type": "host-local", "ranges": [[{"subnet": %q, "gateway": %q}]], "routes": [{"dst": "0.0.0.0/0"}]}
  }]
}
`, subnet, gateway)
}

func TestTwoNodeDataPath(t *testing.T) {
	needLab(t)
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()

	images := t.TempDir()
	busybox, _, err := testimages.Build(ctx, images, testimages.Options{})
	if err != nil {
		t.Fatalf("build test images: %v", err)
	}

	l := newLab(t)
	if err := l.Up(ctx, lab.UpOptions{Nodes: 2, NoStellar: true}); err != nil {
		t.Fatalf("up: %v", err)
	}
	st, err := l.Status(ctx)
	if err != nil {
		t.Fatalf("status: %v", err)
	}
	if len(st) != 2 {
		t.Fatalf("status: got %d nodes, want 2: %+v", len(st), st)
	}

	nodes := []struct {
		name, addr, subnet, gateway, peerSubnet, peerAddr string
	}{
		{"node1", "10.77.0.11", "172.16.0.0/22", "172.16.0.1", "172.16.4.0/22", "10.77.0.12"},
		{"node2", "10.77.0.12", "172.16.4.0/22", "172.16.4.1", "172.16.0.0/22", "10.77.0.11"},
	}
	for _, n := range nodes {
		out, err := l.Output(ctx, n.name, "systemctl", "is-system-running")
		if got := strings.TrimSpace(out); got != "running" {
			failed, _ := l.Output(ctx, n.name, "systemctl", "--failed", "--no-legend")
			t.Fatalf("%s: is-system-running = %q (%v), want running; failed units: %s", n.name, got, err, failed)
		}
		if out, err := l.Output(ctx, n.name, "ip", "-4", "-o", "addr", "show", "eth0"); err != nil || !strings.Contains(out, n.addr+"/24") {
			t.Fatalf("%s: eth0 = %q (%v), want %s/24", n.name, out, err, n.addr)
		}
		if out, err := l.Output(ctx, n.name, "systemctl", "is-active", "containerd"); err != nil {
			t.Fatalf("%s: containerd is %q: %v", n.name, strings.TrimSpace(out), err)
		}
		f, err := os.Open(busybox)
		if err != nil {
			t.Fatal(err)
		}
		var stderr bytes.Buffer
		err = l.Exec(ctx, n.name, f, &stderr, &stderr, "ctr", "-n", "stellar", "images", "import", "-")
		f.Close()
		if err != nil {
			t.Fatalf("%s: import busybox: %v: %s", n.name, err, stderr.String())
		}
		if err := l.WriteFile(ctx, n.name, "/etc/cni/net.d/10-stellar.conflist", []byte(cniConf(n.subnet, n.gateway))); err != nil {
			t.Fatal(err)
		}
		// ctr --cni looks for plugins in /opt/cni/bin; Debian has them in /usr/lib/cni.
		script := fmt.Sprintf("set -e; mkdir -p /opt/cni; ln -sfn /usr/lib/cni /opt/cni/bin; sysctl -qw net.ipv4.ip_forward=1; ip route replace %s via %s", n.peerSubnet, n.peerAddr)
		if _, err := l.Sh(ctx, n.name, script); err != nil {
			t.Fatalf("%s: route to peer subnet: %v", n.name, err)
		}
	}

	if _, err := l.Output(ctx, "node2", "ctr", "-n", "stellar", "run", "-d", "--cni", testimages.BusyboxRef, "target", "sleep", "3600"); err != nil {
		t.Fatalf("node2: run target container: %v", err)
	}
	out, err := l.Output(ctx, "node2", "ctr", "-n", "stellar", "task", "exec", "--exec-id", "addr", "target", "ip", "-4", "-o", "addr", "show", "eth0")
	if err != nil {
		t.Fatalf("node2: container address: %v", err)
	}
	m := regexp.MustCompile(`inet (172\.16\.[4-7]\.\d+)/22`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("node2: container eth0 = %q, want an address in 172.16.4.0/22", out)
	}
	target := m[1]
	t.Logf("container on node2 has %s", target)

	out, err = l.Output(ctx, "node1", "ctr", "-n", "stellar", "run", "--rm", "--cni", testimages.BusyboxRef, "pinger", "ping", "-c", "3", "-W", "2", target)
	if err != nil {
		t.Fatalf("node1 container pings node2 container: %v\n%s", err, out)
	}
	if !strings.Contains(out, "3 packets received") {
		t.Fatalf("ping from node1's container to %s: %s", target, out)
	}
	t.Logf("ping across nodes:\n%s", out)

	if err := l.Down(ctx, lab.DownOptions{}); err != nil {
		t.Fatalf("down: %v", err)
	}
	checkNothingLeft(t, l)
}

// checkNothingLeft fails if any namespace, mount, process or state of the lab remains.
func checkNothingLeft(t *testing.T, l *lab.Lab) {
	t.Helper()
	out, err := exec.Command("ip", "netns", "list").Output()
	if err != nil {
		t.Fatalf("ip netns list: %v", err)
	}
	if strings.Contains(string(out), l.Name+"-") {
		t.Errorf("namespaces left after down:\n%s", out)
	}
	mounts, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(mounts), "\n") {
		if strings.Contains(line, l.StateDir) || strings.Contains(line, l.DataDir) {
			t.Errorf("mount left after down: %s", line)
		}
	}
	ps, err := exec.Command("ps", "-eo", "pid,stat,args").Output()
	if err != nil {
		t.Fatalf("ps: %v", err)
	}
	for _, line := range strings.Split(string(ps), "\n") {
		if strings.Contains(line, l.StateDir) && !strings.Contains(line, " Z") {
			t.Errorf("process left after down: %s", line)
		}
	}
	for _, dir := range []string{l.StateDir, l.DataDir} {
		if _, err := os.Stat(dir); err == nil {
			t.Errorf("%s left after down", dir)
		}
	}
}
