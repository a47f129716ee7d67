package netd

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
	"strings"
	"time"

	"stellar.dev/bench/harness"
)

// DataPath is the container-to-container throughput benchmark.
var DataPath = harness.Benchmark{
	Name:  "netd-datapath",
	Title: "Container to container across two nodes (static routes, no tunnel) vs a bare veth pair: iperf3 TCP",
	Run:   runDataPath,
}

// node is one benchmark node: a network namespace with stellar-gossip and
// stellar-netd.
type node struct {
	name, ns, dir, ip string
}

func (n *node) conf() string { return filepath.Join(n.dir, "stellar.toml") }

func (n *node) sock(d string) string { return filepath.Join(n.dir, "run", d+".sock") }

func ipns(ns string, args ...string) ([]byte, error) {
	return exec.Command("ip", append([]string{"netns", "exec", ns}, args...)...).CombinedOutput()
}

func mustIP(args ...string) error {
	if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
		return fmt.Errorf("ip %s: %v: %s", strings.Join(args, " "), err, out)
	}
	return nil
}

func runDataPath(ctx context.Context, o harness.Options) (harness.Result, error) {
	secs, runs := 5, o.Runs
	if o.Short {
		secs, runs = 1, 1
	}
	res := harness.Result{
		Goal:    "at least 95% of the bare veth pair's throughput (and of the same topology built by hand)",
		Metrics: []harness.Metric{{Name: "tcp", Unit: "Gbit/s", HigherIsBetter: true}},
		Notes: []string{
			fmt.Sprintf("iperf3 -t %d, one TCP stream. Stellar: two nodes (network namespaces on a veth link, each with stellar-gossip and stellar-netd, joined by token); a container namespace on each (Debian's bridge plugin + stellar-cni-ipam); the path is container veth -> bridge -> static route -> node veth -> bridge -> container veth.", secs),
			"Bare veth: two namespaces joined by one veth pair, the physical limit of this machine's virtual links. Stellar's path crosses three veth pairs and two bridges (netd is not on the data path: the kernel forwards, no tunnel, no encapsulation), so on a CPU-bound virtual link it pays for the extra hops; between real hosts the NIC is the limit.",
			"Hand-built: Stellar's topology made with ip(8) alone (3 veth pairs, 2 bridges, 2 static routes, forwarding on; no netd, no nftables, no CNI plugin): the physical cost of the topology. Stellar/hand-built is what Stellar adds; hand-built/bare is what the hops cost (stellar-netd/README.md, Data path performance).",
		},
	}
	measure := iperf
	if _, err := exec.LookPath("iperf3"); err != nil {
		if !o.Short {
			return res, fmt.Errorf("iperf3 is missing (make bench-deps installs it): %w", err)
		}
		measure = goTCP
		res.Notes = append(res.Notes, "iperf3 is missing (make bench-deps): one TCP stream of Go sockets instead.")
	}
	netdBin, plugin, err := build(o)
	if err != nil {
		return res, err
	}
	gossipBin := filepath.Join(o.WorkDir, "stellar-gossip")
	if out, err := exec.Command("go", "build", "-o", gossipBin, "stellar.dev/stellar-gossip").CombinedOutput(); err != nil {
		return res, fmt.Errorf("build stellar-gossip: %v: %s", err, out)
	}
	pid := os.Getpid()
	var cleanups []func()
	defer func() {
		for i := len(cleanups) - 1; i >= 0; i-- {
			cleanups[i]()
		}
	}()
	addNS := func(name string) (string, error) {
		ns := fmt.Sprintf("sbd-%d-%s", pid, name)
		exec.Command("ip", "netns", "del", ns).Run()
		if err := mustIP("netns", "add", ns); err != nil {
			return "", err
		}
		cleanups = append(cleanups, func() { exec.Command("ip", "netns", "del", ns).Run() })
		ipns(ns, "ip", "link", "set", "lo", "up")
		return ns, nil
	}
	veth := func(nsA, nsB, name, ipA, ipB string) error {
		if err := mustIP("link", "add", name+"a", "netns", nsA, "type", "veth", "peer", "name", name+"b", "netns", nsB); err != nil {
			return err
		}
		for _, x := range [][3]string{{nsA, name + "a", ipA}, {nsB, name + "b", ipB}} {
			if out, err := ipns(x[0], "ip", "addr", "add", x[2], "dev", x[1]); err != nil {
				return fmt.Errorf("address %s: %v: %s", x[1], err, out)
			}
			ipns(x[0], "ip", "link", "set", x[1], "up")
		}
		return nil
	}

	// Bare veth pair.
	bareA, err := addNS("bare-a")
	if err != nil {
		return res, err
	}
	bareB, err := addNS("bare-b")
	if err != nil {
		return res, err
	}
	if err := veth(bareA, bareB, fmt.Sprintf("sbv%d", pid%10000), "10.79.0.1/24", "10.79.0.2/24"); err != nil {
		return res, err
	}

	// The same topology as Stellar's, built by hand: the physical cost of
	// three veth pairs, two bridges and a routed hop, with no netd, no
	// nftables and no CNI plugin.
	handSrv, handClt, err := handTopology(addNS, veth, pid)
	if err != nil {
		return res, err
	}

	// Two Stellar nodes.
	var nodes []*node
	for i, name := range []string{"node-a", "node-b"} {
		ns, err := addNS(name)
		if err != nil {
			return res, err
		}
		n := &node{name: name, ns: ns, dir: filepath.Join(o.WorkDir, name), ip: fmt.Sprintf("10.78.0.%d", i+1)}
		os.RemoveAll(n.dir)
		os.MkdirAll(filepath.Join(n.dir, "run"), 0o755)
		conf := fmt.Sprintf("[node]\nname = %q\nrun_dir = %q\nstate_dir = %q\n[gossip]\nbind = \"%s:7946\"\npeer_api = \"%s:7947\"\n[network]\ncni_conf_dir = %q\n",
			name, filepath.Join(n.dir, "run"), filepath.Join(n.dir, "state"), n.ip, n.ip, filepath.Join(n.dir, "cni"))
		if err := os.WriteFile(n.conf(), []byte(conf), 0o644); err != nil {
			return res, err
		}
		nodes = append(nodes, n)
	}
	a, b := nodes[0], nodes[1]
	if err := veth(a.ns, b.ns, fmt.Sprintf("sbn%d", pid%10000), a.ip+"/24", b.ip+"/24"); err != nil {
		return res, err
	}
	for _, n := range nodes {
		for _, bin := range []string{gossipBin, netdBin} {
			log, _ := os.Create(filepath.Join(n.dir, filepath.Base(bin)+".log"))
			cmd := exec.Command("ip", "netns", "exec", n.ns, bin, "--config", n.conf())
			cmd.Stdout, cmd.Stderr = log, log
			if err := cmd.Start(); err != nil {
				return res, err
			}
			cleanups = append(cleanups, func() {
				cmd.Process.Signal(os.Interrupt)
				done := make(chan struct{})
				go func() { cmd.Wait(); close(done) }()
				select {
				case <-done:
				case <-time.After(15 * time.Second):
					cmd.Process.Kill()
					<-done
				}
				log.Close()
			})
		}
	}
	if err := join(ctx, a, b); err != nil {
		return res, err
	}
	// Wait for routes both ways.
	deadline := time.Now().Add(120 * time.Second)
	for {
		ra, _ := ipns(a.ns, "ip", "route", "show", "proto", "83")
		rb, _ := ipns(b.ns, "ip", "route", "show", "proto", "83")
		if strings.Contains(string(ra), "via "+b.ip) && strings.Contains(string(rb), "via "+a.ip) {
			break
		}
		if time.Now().After(deadline) {
			return res, fmt.Errorf("no routes between the nodes within 120s (logs in %s)", o.WorkDir)
		}
		time.Sleep(200 * time.Millisecond)
	}
	var ctrIP [2]string
	var ctrNS [2]string
	for i, n := range nodes {
		cns, err := addNS("ctr-" + n.name)
		if err != nil {
			return res, err
		}
		ip, err := cniAdd(n, cns, filepath.Dir(plugin))
		if err != nil {
			return res, err
		}
		ctrIP[i], ctrNS[i] = ip, cns
	}

	stellar := harness.Subject{Name: "Stellar: container to container across nodes", Kind: harness.KindStellar, Version: version(netdBin)}
	bare := harness.Subject{Name: "bare veth pair between two namespaces", Kind: harness.KindLimit}
	hand := harness.Subject{Name: "the same topology built by hand (3 veth pairs, 2 bridges, static routes; no netd, no nftables)", Kind: harness.KindLimit}
	for r := range runs {
		order := []func() error{
			func() error { return measure(ctx, &stellar, ctrNS[1], ctrNS[0], ctrIP[1], secs) },
			func() error { return measure(ctx, &bare, bareB, bareA, "10.79.0.2", secs) },
			func() error { return measure(ctx, &hand, handSrv, handClt, handServerIP, secs) },
		}
		// Rotate which goes first, so a load that changes during the
		// run does not favour one subject.
		order = append(order[r%len(order):], order[:r%len(order)]...)
		for _, f := range order {
			if err := f(); err != nil {
				return res, err
			}
		}
	}
	res.Subjects = []harness.Subject{stellar, bare, hand}
	res.Notes = append(res.Notes, pairedNote(stellar.Samples["tcp"], bare.Samples["tcp"], hand.Samples["tcp"]))
	return res, nil
}

// join makes b join a's cluster with a token from a's gossip.
func join(ctx context.Context, a, b *node) error {
	ca, cb := unixClient(a.sock("gossip")), unixClient(b.sock("gossip"))
	var tok struct {
		Token string `json:"token"`
	}
	var last error
	deadline := time.Now().Add(90 * time.Second)
	for time.Now().Before(deadline) && ctx.Err() == nil {
		if last = post(ca, "/v1/cluster/tokens", map[string]any{"ttl": "1h", "uses": 1}, &tok); last == nil {
			if last = post(cb, "/v1/cluster/join", map[string]string{"token": tok.Token}, nil); last == nil {
				return nil
			}
		}
		time.Sleep(500 * time.Millisecond)
	}
	return fmt.Errorf("join node-b to node-a: %w", last)
}

func unixClient(path string) *http.Client {
	return &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", path)
	}}}
}

func post(c *http.Client, path string, in, out any) error {
	body, _ := json.Marshal(in)
	resp, err := c.Post("http://x"+path, "application/json", bytes.NewReader(body))
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		var b bytes.Buffer
		b.ReadFrom(resp.Body)
		return fmt.Errorf("%s: %s: %s", path, resp.Status, b.String())
	}
	if out != nil {
		return json.NewDecoder(resp.Body).Decode(out)
	}
	return nil
}

// cniAdd runs Debian's bridge plugin with stellar-cni-ipam, from the node's
// own CNI configuration, inside the node's namespace.
func cniAdd(n *node, ctrNS, pluginDir string) (string, error) {
	var conf []byte
	var err error
	deadline := time.Now().Add(60 * time.Second)
	for {
		conf, err = os.ReadFile(filepath.Join(n.dir, "cni", "10-stellar.conflist"))
		if err == nil || time.Now().After(deadline) {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	if err != nil {
		return "", fmt.Errorf("netd wrote no CNI configuration: %w", err)
	}
	var list struct {
		CNIVersion string           `json:"cniVersion"`
		Name       string           `json:"name"`
		Plugins    []map[string]any `json:"plugins"`
	}
	if err := json.Unmarshal(conf, &list); err != nil {
		return "", err
	}
	br := list.Plugins[0]
	br["cniVersion"], br["name"] = list.CNIVersion, list.Name
	raw, _ := json.Marshal(br)
	cmd := exec.Command("ip", "netns", "exec", n.ns, "/usr/lib/cni/bridge")
	cmd.Env = []string{"CNI_COMMAND=ADD", "CNI_CONTAINERID=bench-" + n.name, "CNI_NETNS=/run/netns/" + ctrNS, "CNI_IFNAME=eth0", "CNI_PATH=" + pluginDir + ":/usr/lib/cni", "PATH=/usr/sbin:/usr/bin:/sbin:/bin"}
	cmd.Stdin = bytes.NewReader(raw)
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("bridge ADD on %s: %v: %s", n.name, err, out)
	}
	var r struct {
		IPs []struct {
			Address string `json:"address"`
		} `json:"ips"`
	}
	if err := json.Unmarshal(out, &r); err != nil || len(r.IPs) == 0 {
		return "", fmt.Errorf("bridge ADD result %s: %v", out, err)
	}
	return strings.SplitN(r.IPs[0].Address, "/", 2)[0], nil
}

// iperf measures one iperf3 run, retried twice when it fails (a loaded
// machine sometimes loses the one-off server's start).
func iperf(ctx context.Context, s *harness.Subject, serverNS, clientNS, serverIP string, secs int) error {
	var err error
	for range 3 {
		if err = iperfOnce(ctx, s, serverNS, clientNS, serverIP, secs); err == nil || ctx.Err() != nil {
			return err
		}
	}
	return err
}

// iperfOnce runs an iperf3 server in serverNS and a client in clientNS.
func iperfOnce(ctx context.Context, s *harness.Subject, serverNS, clientNS, serverIP string, secs int) error {
	srv := exec.Command("ip", "netns", "exec", serverNS, "iperf3", "-s", "-1", "-B", serverIP)
	if err := srv.Start(); err != nil {
		return err
	}
	defer func() { srv.Process.Kill(); srv.Wait() }()
	var out []byte
	var err error
	for i := 0; i < 50; i++ {
		out, err = ipns(clientNS, "iperf3", "-c", serverIP, "-t", fmt.Sprint(secs), "-J")
		// iperf3 3.12 may exit 0 with -J when the server is not
		// listening yet: the error is only in the JSON.
		if err == nil && !bytes.Contains(out, []byte("Connection refused")) {
			break
		}
		if err == nil {
			err = fmt.Errorf("connection refused")
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil {
		return fmt.Errorf("iperf3 to %s: %v: %s", serverIP, err, out)
	}
	var r struct {
		End struct {
			SumReceived struct {
				BitsPerSecond float64 `json:"bits_per_second"`
			} `json:"sum_received"`
		} `json:"end"`
	}
	if err := json.Unmarshal(out, &r); err != nil {
		return fmt.Errorf("decode iperf3 output: %w", err)
	}
	if r.End.SumReceived.BitsPerSecond <= 0 {
		return fmt.Errorf("iperf3 to %s measured nothing: %s", serverIP, out)
	}
	s.Add("tcp", r.End.SumReceived.BitsPerSecond/1e9)
	return nil
}

// handServerIP is the server container's address in the hand-built topology.
const handServerIP = "172.30.4.2"

// handTopology builds Stellar's data path by hand: two node namespaces on a
// veth link, each with a bridge holding the gateway of its /22, a container
// namespace on each bridge through a veth pair, and one static route per
// node to the other's block. It returns the server's and the client's
// container namespaces.
func handTopology(addNS func(string) (string, error), veth func(nsA, nsB, name, ipA, ipB string) error, pid int) (srv, clt string, err error) {
	var nodes, ctrs [2]string
	for i, side := range []string{"a", "b"} {
		if nodes[i], err = addNS("hand-node-" + side); err != nil {
			return "", "", err
		}
		if ctrs[i], err = addNS("hand-ctr-" + side); err != nil {
			return "", "", err
		}
	}
	if err := veth(nodes[0], nodes[1], fmt.Sprintf("shn%d", pid%10000), "10.76.0.1/24", "10.76.0.2/24"); err != nil {
		return "", "", err
	}
	for i := range nodes {
		gw, ctr, other := fmt.Sprintf("172.30.%d.1", 4*i), fmt.Sprintf("172.30.%d.2/22", 4*i), fmt.Sprintf("172.30.%d.0/22", 4*(1-i))
		steps := [][]string{
			{nodes[i], "ip", "link", "add", "hbr0", "type", "bridge"},
			{nodes[i], "ip", "addr", "add", gw + "/22", "dev", "hbr0"},
			{nodes[i], "ip", "link", "set", "hbr0", "up"},
			{nodes[i], "sysctl", "-qw", "net.ipv4.ip_forward=1"},
			{nodes[i], "ip", "route", "add", other, "via", fmt.Sprintf("10.76.0.%d", 2-i)},
		}
		for _, st := range steps {
			if out, err := ipns(st[0], st[1:]...); err != nil {
				return "", "", fmt.Errorf("hand-built topology: %s: %v: %s", strings.Join(st[1:], " "), err, out)
			}
		}
		host := fmt.Sprintf("shc%d%d", pid%10000, i)
		if err := mustIP("link", "add", "eth0", "netns", ctrs[i], "type", "veth", "peer", "name", host, "netns", nodes[i]); err != nil {
			return "", "", err
		}
		steps = [][]string{
			{nodes[i], "ip", "link", "set", host, "master", "hbr0"},
			{nodes[i], "ip", "link", "set", host, "up"},
			{ctrs[i], "ip", "addr", "add", ctr, "dev", "eth0"},
			{ctrs[i], "ip", "link", "set", "eth0", "up"},
			{ctrs[i], "ip", "route", "add", "default", "via", gw},
		}
		for _, st := range steps {
			if out, err := ipns(st[0], st[1:]...); err != nil {
				return "", "", fmt.Errorf("hand-built topology: %s: %v: %s", strings.Join(st[1:], " "), err, out)
			}
		}
	}
	return ctrs[1], ctrs[0], nil
}

// pairedNote summarises the ratios within each round: the three subjects run
// back to back in a round, so a load that changes between rounds (other
// work on the machine) cancels out of them, while it widens each subject's
// own spread.
func pairedNote(stellar, bare, hand []float64) string {
	ratio := func(a, b []float64) string {
		var rs []float64
		for i := range min(len(a), len(b)) {
			if b[i] > 0 {
				rs = append(rs, a[i]/b[i])
			}
		}
		st := harness.Summarise(rs)
		return fmt.Sprintf("%.2f [%.2f–%.2f]", st.Median, st.Min, st.Max)
	}
	return fmt.Sprintf("Ratios within each round (median [min–max] over the rounds; the subjects run back to back, so a load change between rounds cancels): Stellar/bare veth %s, Stellar/hand-built %s, hand-built/bare veth %s.",
		ratio(stellar, bare), ratio(stellar, hand), ratio(hand, bare))
}
