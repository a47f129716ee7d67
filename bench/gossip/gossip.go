// Package gossip measures stellar-gossip beside Debian's serf agent: time
// for a write (a user event for serf) to reach every node, time for a
// kill -9 to be detected, idle traffic and RSS per node, for N nodes on
// loopback inside a network namespace the benchmark makes.
package gossip

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"stellar.dev/bench/harness"
	"stellar.dev/bench/plot"
)

// Benchmark is the gossip benchmark.
var Benchmark = harness.Benchmark{
	Name:  "gossip",
	Title: "Membership and replication: stellar-gossip beside Debian's serf agent",
	Run:   run,
}

// node is one process of a measured cluster.
type node struct {
	name string
	ip   string
	dir  string
	cmd  *exec.Cmd
	hc   *http.Client // stellar-gossip's socket
}

// cluster is N processes in one network namespace.
type cluster struct {
	kind   string // "stellar-lan", "stellar-edge", "serf"
	dir    string
	holder *exec.Cmd
	nodes  []*node
}

func (c *cluster) ns() string { return fmt.Sprintf("/proc/%d/ns/net", c.holder.Process.Pid) }

func (c *cluster) stop() {
	for _, n := range c.nodes {
		if n.cmd != nil && n.cmd.Process != nil {
			n.cmd.Process.Kill()
			n.cmd.Wait()
		}
	}
	if c.holder != nil && c.holder.Process != nil {
		c.holder.Process.Kill()
		c.holder.Wait()
	}
}

// loBytes is the bytes sent on the namespace's lo so far.
func (c *cluster) loBytes() (uint64, error) {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/net/dev", c.holder.Process.Pid))
	if err != nil {
		return 0, err
	}
	for _, l := range strings.Split(string(raw), "\n") {
		name, rest, ok := strings.Cut(strings.TrimSpace(l), ":")
		if !ok || name != "lo" {
			continue
		}
		f := strings.Fields(rest)
		if len(f) < 9 {
			break
		}
		return strconv.ParseUint(f[8], 10, 64)
	}
	return 0, fmt.Errorf("no lo in the namespace's /proc/net/dev")
}

func newNamespace(dir string) (*exec.Cmd, error) {
	h := exec.Command("unshare", "--net", "--", "sh", "-c", "ip link set lo up; exec sleep 100000")
	h.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := h.Start(); err != nil {
		return nil, fmt.Errorf("make network namespace (needs root): %w", err)
	}
	time.Sleep(200 * time.Millisecond)
	return h, nil
}

func unixClient(sock string) *http.Client {
	return &http.Client{Timeout: 60 * time.Second, Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", sock)
	}}}
}

func call(hc *http.Client, method, path string, in, out any) error {
	var body bytes.Buffer
	if in != nil {
		json.NewEncoder(&body).Encode(in)
	}
	req, _ := http.NewRequest(method, "http://gossip"+path, &body)
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

// startStellar starts n stellar-gossip nodes and joins them by token.
func startStellar(ctx context.Context, o harness.Options, n int, profile string) (*cluster, error) {
	dir, err := os.MkdirTemp(o.WorkDir, "gossip-")
	if err != nil {
		return nil, err
	}
	c := &cluster{kind: "stellar-" + profile, dir: dir}
	if c.holder, err = newNamespace(dir); err != nil {
		return nil, err
	}
	for i := 0; i < n; i++ {
		nd := &node{name: fmt.Sprintf("b%02d", i), ip: fmt.Sprintf("127.0.1.%d", i+1), dir: filepath.Join(dir, strconv.Itoa(i))}
		os.MkdirAll(filepath.Join(nd.dir, "run"), 0o755)
		cfg := fmt.Sprintf("[node]\nname = %q\nrun_dir = %q\nstate_dir = %q\n[gossip]\nbind = \"%s:7946\"\npeer_api = \"%s:7947\"\nprofile = %q\n",
			nd.name, filepath.Join(nd.dir, "run"), filepath.Join(nd.dir, "state"), nd.ip, nd.ip, profile)
		if err := os.WriteFile(filepath.Join(nd.dir, "stellar.toml"), []byte(cfg), 0o644); err != nil {
			return c, err
		}
		nd.cmd = exec.Command("nsenter", "--net="+c.ns(), "--", filepath.Join(o.BinDir, "stellar-gossip"), "--config", filepath.Join(nd.dir, "stellar.toml"))
		logf, _ := os.Create(filepath.Join(nd.dir, "log"))
		nd.cmd.Stdout, nd.cmd.Stderr = logf, logf
		nd.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
		if err := nd.cmd.Start(); err != nil {
			return c, err
		}
		nd.hc = unixClient(filepath.Join(nd.dir, "run", "gossip.sock"))
		c.nodes = append(c.nodes, nd)
	}
	for _, nd := range c.nodes {
		if err := poll(ctx, 30*time.Second, func() bool { return call(nd.hc, "GET", "/v1/health", nil, nil) == nil }); err != nil {
			return c, fmt.Errorf("%s did not start", nd.name)
		}
	}
	var tok struct {
		Token string `json:"token"`
	}
	if err := call(c.nodes[0].hc, "POST", "/v1/cluster/tokens", map[string]any{"ttl": "1h"}, &tok); err != nil {
		return c, err
	}
	for _, nd := range c.nodes[1:] {
		if err := call(nd.hc, "POST", "/v1/cluster/join", map[string]string{"token": tok.Token}, nil); err != nil {
			return c, fmt.Errorf("%s join: %w", nd.name, err)
		}
	}
	err = poll(ctx, 120*time.Second, func() bool {
		for _, nd := range c.nodes {
			if c.count(nd, "alive") != n {
				return false
			}
		}
		return true
	})
	return c, err
}

// startSerf starts n Debian serf agents (encrypted, like stellar-gossip).
func startSerf(ctx context.Context, o harness.Options, n int) (*cluster, error) {
	if _, err := exec.LookPath("serf"); err != nil {
		return nil, fmt.Errorf("serf is not installed (make bench-deps): %w", err)
	}
	dir, err := os.MkdirTemp(o.WorkDir, "serf-")
	if err != nil {
		return nil, err
	}
	c := &cluster{kind: "serf", dir: dir}
	if c.holder, err = newNamespace(dir); err != nil {
		return nil, err
	}
	key := make([]byte, 32)
	rand.Read(key)
	for i := 0; i < n; i++ {
		nd := &node{name: fmt.Sprintf("s%02d", i), ip: fmt.Sprintf("127.0.1.%d", i+1), dir: filepath.Join(dir, strconv.Itoa(i))}
		os.MkdirAll(nd.dir, 0o755)
		handler := fmt.Sprintf("user:bench=read p; touch %s/seen-$SERF_SELF_NAME-$p", dir)
		args := []string{"--net=" + c.ns(), "--", "serf", "agent", "-node", nd.name, "-bind", nd.ip + ":7946", "-rpc-addr", nd.ip + ":7373",
			"-encrypt", base64.StdEncoding.EncodeToString(key), "-event-handler", handler, "-log-level", "warn"}
		if i > 0 {
			args = append(args, "-join", c.nodes[0].ip+":7946")
		}
		nd.cmd = exec.Command("nsenter", args...)
		logf, _ := os.Create(filepath.Join(nd.dir, "log"))
		nd.cmd.Stdout, nd.cmd.Stderr = logf, logf
		nd.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
		if err := nd.cmd.Start(); err != nil {
			return c, err
		}
		c.nodes = append(c.nodes, nd)
		if i == 0 {
			time.Sleep(500 * time.Millisecond)
		}
	}
	err = poll(ctx, 120*time.Second, func() bool { return c.count(c.nodes[0], "alive") == n })
	return c, err
}

// count returns how many members nd sees with status st.
func (c *cluster) count(nd *node, st string) int {
	if c.kind == "serf" {
		out, err := exec.Command("nsenter", "--net="+c.ns(), "--", "serf", "members", "-rpc-addr", nd.ip+":7373", "-status", st).Output()
		if err != nil {
			return -1
		}
		return len(strings.Fields(strings.TrimSpace(string(out)))) / 3
	}
	var ms []struct {
		Name   string `json:"name"`
		Status string `json:"status"`
	}
	if err := call(nd.hc, "GET", "/v1/members", nil, &ms); err != nil {
		return -1
	}
	k := 0
	for _, m := range ms {
		if m.Status == st {
			k++
		}
	}
	return k
}

// converge writes once on node 0 and returns when every node has it.
func (c *cluster) converge(ctx context.Context, i int) (time.Duration, error) {
	start := time.Now()
	if c.kind == "serf" {
		if err := exec.Command("nsenter", "--net="+c.ns(), "--", "serf", "event", "-coalesce=false", "-rpc-addr", c.nodes[0].ip+":7373", "bench", strconv.Itoa(i)).Run(); err != nil {
			return 0, fmt.Errorf("serf event: %w", err)
		}
	} else if err := call(c.nodes[0].hc, "PUT", fmt.Sprintf("/v1/state/bench/k%d", i), map[string]int{"i": i}, nil); err != nil {
		return 0, err
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var last time.Duration
	var ferr error
	for _, nd := range c.nodes {
		wg.Add(1)
		go func(nd *node) {
			defer wg.Done()
			err := poll(ctx, 60*time.Second, func() bool {
				if c.kind == "serf" {
					_, err := os.Stat(filepath.Join(c.dir, fmt.Sprintf("seen-%s-%d", nd.name, i)))
					return err == nil
				}
				return call(nd.hc, "GET", fmt.Sprintf("/v1/state/bench/k%d", i), nil, nil) == nil
			})
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				ferr = fmt.Errorf("%s never saw write %d", nd.name, i)
			}
			if d := time.Since(start); d > last {
				last = d
			}
		}(nd)
	}
	wg.Wait()
	return last, ferr
}

// detect kills the last node and returns when node 0 sees it failed
// (the killed-th failed member); the node leaves c.nodes.
func (c *cluster) detect(ctx context.Context, killed int) (time.Duration, error) {
	victim := c.nodes[len(c.nodes)-1]
	start := time.Now()
	victim.cmd.Process.Signal(syscall.SIGKILL)
	victim.cmd.Wait()
	c.nodes = c.nodes[:len(c.nodes)-1]
	err := poll(ctx, 120*time.Second, func() bool { return c.count(c.nodes[0], "failed") >= killed })
	return time.Since(start), err
}

func poll(ctx context.Context, within time.Duration, f func() bool) error {
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

func rssMiB(pid int) float64 {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, l := range strings.Split(string(raw), "\n") {
		if v, ok := strings.CutPrefix(l, "VmRSS:"); ok {
			f := strings.Fields(v)
			if len(f) > 0 {
				kb, _ := strconv.ParseFloat(f[0], 64)
				return kb / 1024
			}
		}
	}
	return 0
}

// pidOf returns the pid of the measured program (nsenter execs it, so it
// is nsenter's own pid).
func pidOf(nd *node) int { return nd.cmd.Process.Pid }

func run(ctx context.Context, o harness.Options) (harness.Result, error) {
	sizes := []int{10, 30, 100}
	idle := 10 * time.Second
	writes := 5
	if o.Short {
		sizes, idle, writes = []int{3}, 2*time.Second, 1
	}
	res := harness.Result{
		Goal: "lan: write convergence within 1.2x of serf's user events, idle traffic no more than serf's, under 20 MiB RSS per node; edge: under 1 kbit/s idle per node",
		Metrics: []harness.Metric{
			{Name: "converge", Unit: "ms"},
			{Name: "detect", Unit: "s"},
			{Name: "idle", Unit: "kbit/s per node"},
			{Name: "rss", Unit: "MiB per node"},
		},
	}
	version := harness.PackageVersion("serf")
	curves := curves{}
	for _, n := range sizes {
		rounds := o.Runs
		kinds := []string{"stellar-lan", "serf", "stellar-edge"}
		if o.Short {
			kinds = kinds[:2]
		}
		if n >= 100 {
			kinds = kinds[:2] // time: the edge profile's figure is its idle traffic, measured at 10 and 30
		}
		for _, kind := range kinds {
			s := harness.Subject{Name: fmt.Sprintf("%s N=%d", kind, n), Kind: harness.KindStellar, Version: "this tree"}
			if kind == "serf" {
				s.Name, s.Kind, s.Version = fmt.Sprintf("serf agent (Debian) N=%d", n), harness.KindPeer, version
			}
			o.Log.Info("gossip bench", "kind", kind, "n", n, "rounds", rounds)
			var c *cluster
			var err error
			switch kind {
			case "serf":
				c, err = startSerf(ctx, o, n)
			default:
				c, err = startStellar(ctx, o, n, strings.TrimPrefix(kind, "stellar-"))
			}
			if err != nil {
				if c != nil {
					c.stop()
				}
				if kind == "serf" {
					o.Log.Warn("serf not measured", "err", err)
					continue
				}
				return res, fmt.Errorf("start %s N=%d: %w", kind, n, err)
			}
			time.Sleep(2 * time.Second) // let joins settle
			// Rounds of an idle window and writes, then as many kills: the
			// idle windows see no failure handling.
			for r := 0; r < rounds; r++ {
				b0, _ := c.loBytes()
				select {
				case <-ctx.Done():
					c.stop()
					return res, ctx.Err()
				case <-time.After(idle):
				}
				b1, _ := c.loBytes()
				s.Add("idle", float64(b1-b0)*8/1000/idle.Seconds()/float64(n))
				var rss float64
				for _, nd := range c.nodes {
					rss += rssMiB(pidOf(nd))
				}
				s.Add("rss", rss/float64(n))
				for i := 0; i < writes; i++ {
					d, err := c.converge(ctx, r*100+i)
					if err != nil {
						c.stop()
						return res, fmt.Errorf("%s N=%d: %w", kind, n, err)
					}
					s.Add("converge", float64(d.Microseconds())/1000)
				}
			}
			for r := 0; r < rounds && len(c.nodes) > 2; r++ {
				if d, err := c.detect(ctx, r+1); err == nil {
					s.Add("detect", d.Seconds())
				} else {
					o.Log.Warn("kill not detected", "kind", kind, "n", n, "err", err)
					break
				}
			}
			c.stop()
			os.RemoveAll(c.dir)
			if len(s.Samples) > 0 {
				res.Subjects = append(res.Subjects, s)
				curves.add(kind, n, s)
			}
		}
	}
	res.Notes = append(res.Notes,
		"Every cluster runs in its own network namespace on 127.0.1.x, gossip encrypted on both sides (serf -encrypt with a 32-byte key).",
		fmt.Sprintf("idle: bytes sent on the namespace's lo over %s after the joins settled, per node; rss: VmRSS per node at the end of the idle window.", idle),
		"converge: a PUT on node 0 until every node's GET finds it (stellar-gossip), or `serf event` on node 0 until every agent's event handler ran (serf); polled every 20 ms, so both include up to 20 ms of polling.",
		"detect: kill -9 of the last node until node 0 lists it failed (serf: `serf members -status failed` through nsenter, a few ms per poll).",
		fmt.Sprintf("Each cluster is started once per kind and size and measured in %d rounds (an idle window and %d writes each), then %d nodes are killed one after the other (one detection each): at least 5 samples of every figure without 5 cluster starts, which at N=100 on 2 cores would take longer than the rest of the report.", o.Runs, writes, o.Runs),
		"stellar-edge runs at N=10 and 30 only (its figure is idle traffic per node, which does not depend on N the way convergence does).",
		"converge and detect against N are plotted (medians); the CDF shows every write's convergence at the largest N.")
	res.Charts = curves.charts(sizes[len(sizes)-1])
	return res, nil
}

// curves collects each kind's medians against N for the charts.
type curves map[string]map[int]harness.Subject

func (c curves) add(kind string, n int, s harness.Subject) {
	if c[kind] == nil {
		c[kind] = map[int]harness.Subject{}
	}
	c[kind][n] = s
}

func (c curves) charts(largest int) []harness.Chart {
	var out []harness.Chart
	for _, m := range []struct{ metric, title, unit string }{
		{"converge", "write convergence against cluster size (median)", "ms"},
		{"detect", "kill -9 detection against cluster size (median)", "s"},
		{"idle", "idle traffic per node against cluster size (median)", "kbit/s per node"},
	} {
		ch := plot.Chart{Title: m.title, XLabel: "members", YLabel: m.unit, Kind: plot.Line}
		cdf := plot.Chart{Title: fmt.Sprintf("write convergence, every write, N=%d", largest), XLabel: "ms", YLabel: "fraction of writes", Kind: plot.CDF}
		for _, kind := range []string{"stellar-lan", "serf", "stellar-edge"} {
			var sr plot.Series
			for _, n := range []int{3, 10, 30, 100} {
				if v := c[kind][n].Samples[m.metric]; len(v) > 0 {
					sr.Name = kind
					sr.X = append(sr.X, float64(n))
					sr.Y = append(sr.Y, harness.Summarise(v).Median)
				}
			}
			if len(sr.Y) > 0 {
				ch.Series = append(ch.Series, sr)
			}
			if v := c[kind][largest].Samples[m.metric]; m.metric == "converge" && len(v) > 0 {
				cdf.Series = append(cdf.Series, plot.Series{Name: kind, Y: v})
			}
		}
		if len(ch.Series) > 0 {
			out = append(out, harness.Chart{Name: m.metric + "-by-size", Chart: ch})
		}
		if len(cdf.Series) > 0 {
			out = append(out, harness.Chart{Name: "converge-cdf", Chart: cdf})
		}
	}
	return out
}
