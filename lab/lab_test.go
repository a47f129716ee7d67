package lab_test

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
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

// pingOK says whether from (a node or "client") reaches addr.
func pingOK(ctx context.Context, l *lab.Lab, from, addr string) bool {
	args := []string{"ping", "-c", "1", "-W", "1", addr}
	if from == lab.Client {
		args = append([]string{"busybox"}, args...) // the client runs the host's tools
	}
	return l.Exec(ctx, from, nil, nil, nil, args...) == nil
}

func TestFaults(t *testing.T) {
	needLab(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	l := newLab(t)
	if err := l.Up(ctx, lab.UpOptions{Nodes: 3, NoStellar: true}); err != nil {
		t.Fatalf("up: %v", err)
	}

	if err := l.Exec(ctx, "node1", nil, nil, nil, "sh", "-c", "exit 3"); lab.ExitCode(err) != 3 {
		t.Errorf("exit code of `sh -c 'exit 3'` = %d (%v), want 3", lab.ExitCode(err), err)
	}

	type reach struct {
		from, to string
		want     bool
	}
	// check pings once for "unreachable", and for up to 5 s for
	// "reachable" (neighbour entries may need a retry after a heal).
	check := func(step string, want []reach) {
		t.Helper()
		for _, r := range want {
			got := pingOK(ctx, l, r.from, r.to)
			for try := 0; r.want && !got && try < 5; try++ {
				got = pingOK(ctx, l, r.from, r.to)
			}
			if got != r.want {
				t.Errorf("%s: %s -> %s reachable = %v, want %v", step, r.from, r.to, got, r.want)
			}
		}
	}
	n1, n2, n3 := "10.77.0.11", "10.77.0.12", "10.77.0.13"

	if err := l.Partition(ctx, "node1"); err != nil {
		t.Fatalf("partition: %v", err)
	}
	check("partition node1", []reach{{"node1", n2, false}, {"node3", n1, false}, {"node2", n3, true}, {"client", n1, true}, {"client", n2, true}})
	if err := l.Heal(ctx); err != nil {
		t.Fatalf("heal: %v", err)
	}
	check("healed", []reach{{"node1", n2, true}, {"node3", n1, true}})

	if err := l.Loss(ctx, "node2", 100); err != nil {
		t.Fatalf("loss: %v", err)
	}
	check("loss 100% to node2", []reach{{"node1", n2, false}, {"node1", n3, true}})
	if err := l.Heal(ctx); err != nil {
		t.Fatalf("heal: %v", err)
	}

	if err := l.Delay(ctx, "node2", 200*time.Millisecond); err != nil {
		t.Fatalf("delay: %v", err)
	}
	out, err := l.Output(ctx, "node1", "ping", "-c", "2", "-W", "2", n2)
	if err != nil {
		t.Fatalf("ping through delay: %v", err)
	}
	m := regexp.MustCompile(`= ([0-9.]+)/`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("no rtt in %q", out)
	}
	if rtt, _ := strconv.ParseFloat(m[1], 64); rtt < 200 || rtt > 400 {
		t.Errorf("min rtt with 200ms delay = %vms, want 200..400:\n%s", rtt, out)
	}
	if err := l.Heal(ctx); err != nil {
		t.Fatalf("heal: %v", err)
	}

	// kill -9 a unit's main process: systemd restarts containerd.
	before, _ := l.Output(ctx, "node1", "systemctl", "show", "-p", "MainPID", "--value", "containerd")
	if err := l.Kill(ctx, "node1", "containerd"); err != nil {
		t.Fatalf("kill: %v", err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		after, _ := l.Output(ctx, "node1", "systemctl", "show", "-p", "MainPID", "--value", "containerd")
		if a := strings.TrimSpace(after); a != "0" && a != "" && a != strings.TrimSpace(before) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("containerd not restarted after kill -9 (MainPID %s)", strings.TrimSpace(before))
		}
		time.Sleep(200 * time.Millisecond)
	}

	// Power off keeps the disk; up brings the node back.
	if err := l.WriteFile(ctx, "node2", "/var/lib/marker", []byte("still here\n")); err != nil {
		t.Fatal(err)
	}
	if err := l.PowerOff(ctx, "node2"); err != nil {
		t.Fatalf("poweroff: %v", err)
	}
	check("node2 off", []reach{{"node1", n2, false}})
	if _, err := l.Output(ctx, "node2", "true"); err == nil {
		t.Error("exec in a powered-off node worked")
	}
	if err := l.Up(ctx, lab.UpOptions{Nodes: 3, NoStellar: true}); err != nil {
		t.Fatalf("up after poweroff: %v", err)
	}
	if out, err := l.Output(ctx, "node2", "cat", "/var/lib/marker"); err != nil || out != "still here\n" {
		t.Errorf("marker after power cycle = %q, %v", out, err)
	}
	check("node2 back", []reach{{"node1", n2, true}})
}

// fakeDeb builds a stand-in for Stellar's .deb: stellar.target, a unit that
// records the config it started with, and an sctl that hands out and takes
// join tokens. It proves the lab's install and cluster steps, not Stellar.
func fakeDeb(t *testing.T) string {
	t.Helper()
	root := t.TempDir()
	files := map[string]string{
		"DEBIAN/control":                          "Package: stellar\nVersion: 0.0.1-lab\nArchitecture: amd64\nMaintainer: Stellar developers <dev@stellar.dev>\nDepends: containerd, runc\nDescription: lab stand-in for Stellar\n",
		"lib/systemd/system/stellar.target":       "[Unit]\nDescription=Stellar\nWants=stellar-fake.service\n[Install]\nWantedBy=multi-user.target\n",
		"lib/systemd/system/stellar-fake.service": "[Unit]\nDescription=fake Stellar daemon\nPartOf=stellar.target\n[Service]\nExecStartPre=/bin/cp /etc/stellar/stellar.toml /run/stellar-started-with.toml\nExecStart=/bin/sleep infinity\n",
		"usr/bin/sctl": `#!/bin/sh
case "$1 $2" in
"cluster token") echo "token: tok-$(hostname)";;
"cluster join") echo "$3" > /var/lib/stellar-joined-with;;
*) echo "usage: sctl cluster token|join" >&2; exit 2;;
esac
`,
	}
	for name, content := range files {
		p := filepath.Join(root, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	deb := filepath.Join(t.TempDir(), "stellar_0.0.1-lab_amd64.deb")
	if out, err := exec.Command("dpkg-deb", "--root-owner-group", "--build", root, deb).CombinedOutput(); err != nil {
		t.Fatalf("dpkg-deb: %v: %s", err, out)
	}
	return deb
}

func TestInstallDeb(t *testing.T) {
	needLab(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	l := newLab(t)
	deb := fakeDeb(t)
	if err := l.Up(ctx, lab.UpOptions{Nodes: 2, Deb: deb}); err != nil {
		t.Fatalf("up: %v", err)
	}
	for i, name := range []string{"node1", "node2"} {
		out, err := l.Output(ctx, name, "cat", "/run/stellar-started-with.toml")
		if err != nil || out != lab.NodeConfig(i+1) {
			t.Errorf("%s: Stellar started with config %q (%v), want %q", name, out, err, lab.NodeConfig(i+1))
		}
	}
	if out, err := l.Output(ctx, "node2", "cat", "/var/lib/stellar-joined-with"); err != nil || strings.TrimSpace(out) != "tok-node1" {
		t.Errorf("node2 joined with %q (%v), want tok-node1", out, err)
	}
	st, err := l.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range st {
		if s.Stellar != "active" || s.System != "running" {
			t.Errorf("status %+v, want running and stellar.target active", s)
		}
	}
	// Up again changes nothing.
	if err := l.Up(ctx, lab.UpOptions{Nodes: 2, Deb: deb}); err != nil {
		t.Fatalf("second up: %v", err)
	}
}

// TestStellarDeb installs a real Stellar .deb (STELLAR_LAB_DEB=path) on three
// nodes and checks that stellar.target comes up everywhere.
func TestStellarDeb(t *testing.T) {
	deb := os.Getenv("STELLAR_LAB_DEB")
	if deb == "" {
		t.Skip("set STELLAR_LAB_DEB=dist/stellar_<version>_amd64.deb to install a real Stellar .deb in the lab")
	}
	needLab(t)
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	l := newLab(t)
	if err := l.Up(ctx, lab.UpOptions{Nodes: 3, Deb: deb}); err != nil {
		t.Fatalf("up: %v", err)
	}
	st, err := l.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range st {
		if s.Stellar != "active" {
			failed, _ := l.Output(ctx, s.Name, "systemctl", "--failed", "--no-legend")
			t.Errorf("%s: stellar.target is %q; failed units: %s", s.Name, s.Stellar, failed)
		}
		if s.System != "running" {
			t.Errorf("%s: system is %q", s.Name, s.System)
		}
	}
}
