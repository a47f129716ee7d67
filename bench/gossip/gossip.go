// Package gossip measures stellar-gossip beside Debian's serf agent: time
// for a write (a user event for serf) to reach every node, time for a
// kill -9 to be detected, idle traffic and RSS per node, for N nodes on
// loopback inside a network namespace the benchmark makes.
package gossip

import (
	"bufio"
	"bytes"
	"context"
	crand "crypto/rand"
	"encoding/base64"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"stellar.dev/api/client"
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
	name   string
	ip     string
	dir    string
	cmd    *exec.Cmd
	api    *client.Client // stellar-gossip's socket
	stream *http.Client   // the same, with no timeout, for watches
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
		nd.api = client.Unix("stellar-gossip", filepath.Join(nd.dir, "run", "gossip.sock")).WithTimeout(60 * time.Second)
		nd.stream = unixClient(filepath.Join(nd.dir, "run", "gossip.sock"))
		nd.stream.Timeout = 0
		c.nodes = append(c.nodes, nd)
	}
	// Deadlines grow with N: starting 100 daemons on a loaded 2-core
	// machine takes minutes, and a slow start is not what is measured.
	startWithin := 30*time.Second + time.Duration(n)*time.Second
	for _, nd := range c.nodes {
		if err := pollEvery(ctx, startWithin, 200*time.Millisecond, func() bool { return nd.api.Do(ctx, "GET", "/v1/health", nil, nil) == nil }); err != nil {
			return c, fmt.Errorf("%s did not start", nd.name)
		}
	}
	var tok struct {
		Token string `json:"token"`
	}
	if err := c.nodes[0].api.Do(ctx, "POST", "/v1/cluster/tokens", map[string]any{"ttl": "1h"}, &tok); err != nil {
		return c, err
	}
	// Nodes 1 and 2 join through node 0; the rest through nodes 0, 1 and
	// 2 in turn (each checks the tokens it issued), so no single seed
	// admits all N.
	toks := []string{tok.Token}
	for i, nd := range c.nodes[1:] {
		seed := toks[(i+1)%len(toks)]
		if i+1 < 3 {
			seed = toks[0]
		}
		// A join is retried: on a loaded machine one can time out.
		var jerr error
		for try := 0; try < 5; try++ {
			if jerr = nd.api.Do(ctx, "POST", "/v1/cluster/join", map[string]string{"token": seed}, nil); jerr == nil {
				break
			}
			time.Sleep(time.Second)
		}
		if jerr == nil && i+1 < 3 {
			var t2 struct {
				Token string `json:"token"`
			}
			if err := nd.api.Do(ctx, "POST", "/v1/cluster/tokens", map[string]any{"ttl": "1h"}, &t2); err == nil {
				toks = append(toks, t2.Token)
			}
		}
		if jerr != nil {
			return c, fmt.Errorf("%s join: %w", nd.name, jerr)
		}
	}
	if err := c.allAlive(ctx, n); err != nil {
		return c, err
	}
	// Idle means converged: every node's facts and labels replicated to
	// every other. Until then pulls and anti-entropy rounds run, and at
	// N=100 on 2 cores that tail outlasts the settle time.
	err = pollEvery(ctx, allAliveWithin(n), 2*time.Second, func() bool { return c.sameDigest(c.nodes[0], n) })
	if err != nil {
		err = fmt.Errorf("state did not converge: %w", err)
	}
	return c, err
}

// sameDigest reports whether nd lists n members that all publish one
// state digest (tag dg, published once a node's state is quiet).
func (c *cluster) sameDigest(nd *node, n int) bool {
	var ms []struct {
		Tags map[string]string `json:"tags"`
	}
	if err := nd.api.Do(context.Background(), "GET", "/v1/members", nil, &ms); err != nil || len(ms) != n {
		return false
	}
	for _, m := range ms {
		if m.Tags["dg"] == "" || m.Tags["dg"] != ms[0].Tags["dg"] {
			return false
		}
	}
	return true
}

// allAlive waits until every node lists n alive members; the deadline
// grows with n, and the nodes are asked every second, not every 20 ms, so
// the wait itself does not load the machine.
func (c *cluster) allAlive(ctx context.Context, n int) error {
	pending := append([]*node(nil), c.nodes...)
	return pollEvery(ctx, allAliveWithin(n), time.Second, func() bool {
		var left []*node
		for _, nd := range pending {
			if c.count(nd, "alive") != n {
				left = append(left, nd)
			}
		}
		pending = left
		return len(pending) == 0
	})
}

// allAliveWithin is how long n members may take to see each other: 2 min
// plus 2 s per member, and 4 s per member past 30 (at N=100 on two cores
// every process gets a fiftieth of a core, and late probe acks make
// members flap until the joins settle).
func allAliveWithin(n int) time.Duration {
	return 2*time.Minute + time.Duration(n)*2*time.Second + time.Duration(max(n-30, 0))*4*time.Second
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
	crand.Read(key)
	for i := 0; i < n; i++ {
		nd := &node{name: fmt.Sprintf("s%02d", i), ip: fmt.Sprintf("127.0.1.%d", i+1), dir: filepath.Join(dir, strconv.Itoa(i))}
		os.MkdirAll(nd.dir, 0o755)
		// The handler stamps the moment it ran (ns since the epoch): the
		// arrival time is then exact, not rounded up to a poll.
		handler := fmt.Sprintf("user:bench=read p; date +%%s%%N > %s/seen-$SERF_SELF_NAME-$p", dir)
		args := []string{"--net=" + c.ns(), "--", "serf", "agent", "-node", nd.name, "-bind", nd.ip + ":7946", "-rpc-addr", nd.ip + ":7373",
			"-encrypt", base64.StdEncoding.EncodeToString(key), "-event-handler", handler, "-log-level", "warn"}
		// Join through up to three seeds, as stellar-gossip's token join
		// hands out several members.
		for j := 0; j < min(i, 3); j++ {
			args = append(args, "-join", c.nodes[j].ip+":7946")
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
	err = c.allAlive(ctx, n)
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
	if err := nd.api.Do(context.Background(), "GET", "/v1/members", nil, &ms); err != nil {
		return -1
	}
	k := 0
	for _, m := range ms {
		// serf members lists a suspect member as alive: so does this
		// count, or a loaded machine's late probe acks would keep a
		// large stellar cluster from ever looking formed.
		if m.Status == st || (st == "alive" && m.Status == "suspect") {
			k++
		}
	}
	return k
}

// converge writes once on node 0 and returns when every node has it.
// stellar-gossip's nodes are watched (GET /v1/watch, opened before the
// write), as serf agents run their event handler: both sides are told,
// neither is polled, so the measuring adds no load that grows with N.
func (c *cluster) converge(ctx context.Context, i int) (time.Duration, error) {
	if c.kind == "serf" {
		return c.convergeSerf(ctx, i)
	}
	key := fmt.Sprintf("bench/k%d", i)
	wctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	var bodies []io.ReadCloser
	defer func() {
		for _, b := range bodies {
			b.Close()
		}
	}()
	for _, nd := range c.nodes {
		req, _ := http.NewRequestWithContext(wctx, "GET", "http://gossip/v1/watch?prefix="+key, nil)
		resp, err := nd.stream.Do(req)
		if err != nil {
			return 0, fmt.Errorf("watch %s on %s: %w", key, nd.name, err)
		}
		if resp.StatusCode != http.StatusOK {
			resp.Body.Close()
			return 0, fmt.Errorf("watch %s on %s: %s", key, nd.name, resp.Status)
		}
		bodies = append(bodies, resp.Body)
	}
	start := time.Now()
	if err := c.nodes[0].api.Do(ctx, "PUT", "/v1/state/"+key, map[string]int{"i": i}, nil); err != nil {
		return 0, err
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var last time.Duration
	var ferr error
	for k, b := range bodies {
		wg.Add(1)
		go func(name string, b io.Reader) {
			defer wg.Done()
			sc := bufio.NewScanner(b)
			sc.Buffer(make([]byte, 64<<10), 4<<20)
			seen := false
			for sc.Scan() {
				if bytes.Contains(sc.Bytes(), []byte(`"`+key+`"`)) {
					seen = true
					break
				}
			}
			d := time.Since(start)
			mu.Lock()
			defer mu.Unlock()
			if !seen {
				ferr = fmt.Errorf("%s never saw write %d", name, i)
			}
			if d > last {
				last = d
			}
		}(c.nodes[k].name, b)
	}
	wg.Wait()
	return last, ferr
}

// convergeSerf sends a user event from node 0 and returns when the last
// agent's event handler ran, by the time the handler stamped.
func (c *cluster) convergeSerf(ctx context.Context, i int) (time.Duration, error) {
	start := time.Now()
	if err := exec.Command("nsenter", "--net="+c.ns(), "--", "serf", "event", "-coalesce=false", "-rpc-addr", c.nodes[0].ip+":7373", "bench", strconv.Itoa(i)).Run(); err != nil {
		return 0, fmt.Errorf("serf event: %w", err)
	}
	var last time.Duration
	for _, nd := range c.nodes {
		var at int64
		// Files are polled one node after the other: the stamps, not the
		// polls, give the times.
		err := poll(ctx, 60*time.Second, func() bool {
			b, err := os.ReadFile(filepath.Join(c.dir, fmt.Sprintf("seen-%s-%d", nd.name, i)))
			if err != nil {
				return false
			}
			// Empty until the handler's date has written it.
			at, err = strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
			return err == nil && at > 0
		})
		if err != nil {
			return 0, fmt.Errorf("%s never saw event %d", nd.name, i)
		}
		if d := time.Unix(0, at).Sub(start); d > last {
			last = d
		}
	}
	return last, nil
}

// detect kills the last node and returns when node 0 sees it failed
// (the killed-th failed member); the node leaves c.nodes.
func (c *cluster) detect(ctx context.Context, killed int) (time.Duration, error) {
	victim := c.nodes[len(c.nodes)-1]
	start := time.Now()
	victim.cmd.Process.Signal(syscall.SIGKILL)
	victim.cmd.Wait()
	c.nodes = c.nodes[:len(c.nodes)-1]
	// The victim itself, by name: on a loaded machine another member can
	// flap to failed for a moment and must not count as the detection.
	err := poll(ctx, 120*time.Second, func() bool { return c.status(c.nodes[0], victim.name) == "failed" })
	return time.Since(start), err
}

// status returns the status nd lists for the member named name ("" if
// not listed or on error).
func (c *cluster) status(nd *node, name string) string {
	if c.kind == "serf" {
		out, err := exec.Command("nsenter", "--net="+c.ns(), "--", "serf", "members", "-rpc-addr", nd.ip+":7373", "-name", "^"+name+"$").Output()
		if err != nil {
			return ""
		}
		f := strings.Fields(string(out))
		if len(f) < 3 {
			return ""
		}
		return f[2]
	}
	var ms []struct {
		Name   string `json:"name"`
		Status string `json:"status"`
	}
	if err := nd.api.Do(context.Background(), "GET", "/v1/members", nil, &ms); err != nil {
		return ""
	}
	for _, m := range ms {
		if m.Name == name {
			return m.Status
		}
	}
	return ""
}

func poll(ctx context.Context, within time.Duration, f func() bool) error {
	return pollEvery(ctx, within, 20*time.Millisecond, f)
}

// sleep waits for d, or returns ctx's error.
func sleep(ctx context.Context, d time.Duration) error {
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(d):
		return nil
	}
}

// cpuSeconds is the CPU time of every node so far.
func (c *cluster) cpuSeconds() float64 {
	var t float64
	for _, nd := range c.nodes {
		t += harness.CPUSeconds(pidOf(nd))
	}
	return t
}

func pollEvery(ctx context.Context, within, every time.Duration, f func() bool) error {
	deadline := time.Now().Add(within)
	for !f() {
		if time.Now().After(deadline) {
			return fmt.Errorf("not within %s", within)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(every):
		}
	}
	return nil
}

// pidOf returns the pid of the measured program (nsenter execs it, so it
// is nsenter's own pid).
func pidOf(nd *node) int { return nd.cmd.Process.Pid }

// start starts a cluster of kind ("serf", "stellar-lan", "stellar-edge")
// with n nodes; a cluster that did not form is stopped.
func start(ctx context.Context, o harness.Options, n int, kind string) (*cluster, error) {
	var c *cluster
	var err error
	if kind == "serf" {
		c, err = startSerf(ctx, o, n)
	} else {
		c, err = startStellar(ctx, o, n, strings.TrimPrefix(kind, "stellar-"))
	}
	if err != nil && c != nil {
		c.stop()
	}
	return c, err
}

// pausedWrite waits a random pause of up to 1 s (5 lan intervals, 1 edge
// interval), then times write i (ms). A write made the moment the last one
// arrived starts at the same point of every node's gossip interval each
// time, and its time is then set by the tickers' phases (fixed for the
// cluster's life), not by the spread: the pause makes each write start
// anywhere.
func (c *cluster) pausedWrite(ctx context.Context, i int) (float64, error) {
	if err := sleep(ctx, time.Duration(rand.Int64N(int64(time.Second)))); err != nil {
		return 0, err
	}
	d, err := c.converge(ctx, i)
	if err != nil {
		return 0, err
	}
	return float64(d.Microseconds()) / 1000, nil
}

// pairedConverge measures convergence at size n in fresh pairs of
// clusters, a stellar-lan one and a serf one side by side, with writes
// interleaved: each node's gossip ticker has a phase fixed for the
// process's life, so one cluster of each kind lets a lucky or unlucky set
// of phases decide the ratio; several pairs, measured under the same
// machine load, do not. It returns each kind's samples (ms) and a note for
// each write that did not reach every node.
func pairedConverge(ctx context.Context, o harness.Options, n, pairs, writes int, settle time.Duration) (map[string][]float64, []string, error) {
	out := map[string][]float64{}
	var notes []string
	for p := 0; p < pairs; p++ {
		var pair []*cluster
		var err error
		// serf first: it fails at once when it is not installed.
		for _, kind := range []string{"serf", "stellar-lan"} {
			var c *cluster
			if c, err = start(ctx, o, n, kind); err != nil {
				err = fmt.Errorf("%s pair %d did not form: %w", kind, p, err)
				break
			}
			pair = append(pair, c)
		}
		if err == nil {
			err = sleep(ctx, settle)
		}
		samples := map[string][]float64{}
		for i := 0; i < writes && err == nil; i++ {
			// Alternate which kind writes first.
			for k := range pair {
				c := pair[(i+k)%len(pair)]
				ms, werr := c.pausedWrite(ctx, i)
				if ctx.Err() != nil {
					err = ctx.Err()
					break
				}
				if werr != nil {
					o.Log.Warn("write not converged", "kind", c.kind, "n", n, "pair", p, "err", werr)
					notes = append(notes, fmt.Sprintf("%s N=%d pair %d: a write did not reach every node: %v.", c.kind, n, p, werr))
					continue
				}
				samples[c.kind] = append(samples[c.kind], ms)
			}
		}
		for _, c := range pair {
			c.stop()
			os.RemoveAll(c.dir)
			if v := samples[c.kind]; len(v) > 0 {
				st := harness.Summarise(v)
				o.Log.Info("gossip pair", "kind", c.kind, "n", n, "pair", p, "writes", st.N, "median_ms", st.Median)
				out[c.kind] = append(out[c.kind], v...)
			}
		}
		if err != nil {
			return out, notes, err
		}
	}
	return out, notes, nil
}

func run(ctx context.Context, o harness.Options) (harness.Result, error) {
	sizes := []int{3, 10, 30, 100}
	idle, settle := 30*time.Second, 30*time.Second
	writes := 20 // per round
	// Convergence up to pairedUpTo nodes comes from pairs of fresh
	// clusters (pairedConverge), pairWrites writes per kind in each; past
	// it, two large clusters side by side would overload the machine, and
	// the one cluster per kind is written to instead.
	pairs, pairWrites, pairedUpTo := 3, 34, 30
	if o.Short {
		sizes, idle, settle, writes = []int{3}, 2*time.Second, 2*time.Second, 1
		pairs, pairWrites = 1, 1
	}
	if v := os.Getenv("STELLAR_BENCH_GOSSIP_SIZES"); v != "" {
		// A subset for a quick look, e.g. "3" or "3,30".
		sizes = nil
		for _, f := range strings.Split(v, ",") {
			n, err := strconv.Atoi(strings.TrimSpace(f))
			if err != nil || n < 3 || n > 250 {
				return harness.Result{}, fmt.Errorf("STELLAR_BENCH_GOSSIP_SIZES: %q is not a size from 3 to 250", f)
			}
			sizes = append(sizes, n)
		}
	}
	res := harness.Result{
		Goal: "lan: write convergence within 1.2x of serf's user events, idle traffic no more than serf's, under 20 MiB RSS per node; edge: under 1 kbit/s idle per node",
		Metrics: []harness.Metric{
			{Name: "converge", Unit: "ms"},
			{Name: "detect", Unit: "s"},
			{Name: "idle", Unit: "kbit/s per node"},
			{Name: "cpu", Unit: "ms/s per node"},
			{Name: "rss", Unit: "MiB per node"},
		},
		// The goals are about convergence and idle traffic, against serf
		// at the same N (stellar-lan is the first Stellar row of a size).
		Ratios: []string{"converge", "idle"},
	}
	version := harness.PackageVersion("serf")
	curves := curves{}
	// stopped is why the run ended early (ctx done): the sizes measured
	// before it are still reported.
	var stopped error
sizes:
	for _, n := range sizes {
		rounds := o.Runs
		kinds := []string{"stellar-lan", "serf", "stellar-edge"}
		if o.Short {
			kinds = kinds[:2]
		}
		if n >= 100 {
			kinds = kinds[:2] // time: the edge profile's figure is its idle traffic, measured at 10 and 30
		}
		if v := os.Getenv("STELLAR_BENCH_GOSSIP_KINDS"); v != "" {
			// A subset for a quick look, e.g. "stellar-lan".
			var keep []string
			for _, k := range kinds {
				if slices.Contains(strings.Split(v, ","), k) {
					keep = append(keep, k)
				}
			}
			kinds = keep
		}
		var paired map[string][]float64
		if n <= pairedUpTo && slices.Contains(kinds, "stellar-lan") && slices.Contains(kinds, "serf") {
			o.Log.Info("gossip bench", "kinds", "stellar-lan,serf", "n", n, "pairs", pairs)
			var notes []string
			var err error
			paired, notes, err = pairedConverge(ctx, o, n, pairs, pairWrites, settle)
			res.Notes = append(res.Notes, notes...)
			if ctx.Err() != nil {
				stopped = ctx.Err()
				break sizes
			}
			if err != nil {
				// The pairs measured before the failure still count.
				o.Log.Warn("cluster pair", "n", n, "err", err)
				res.Notes = append(res.Notes, fmt.Sprintf("N=%d: %v.", n, err))
			}
		}
		for _, kind := range kinds {
			if ctx.Err() != nil {
				stopped = ctx.Err()
				break sizes
			}
			// Rows are compared within their cluster size only.
			s := harness.Subject{Name: fmt.Sprintf("%s N=%d", kind, n), Kind: harness.KindStellar, Version: "this tree", Group: fmt.Sprintf("N=%d", n)}
			if kind == "serf" {
				s.Name, s.Kind, s.Version = fmt.Sprintf("serf agent (Debian) N=%d", n), harness.KindPeer, version
			}
			o.Log.Info("gossip bench", "kind", kind, "n", n, "rounds", rounds)
			c, err := start(ctx, o, n, kind)
			if err != nil {
				// A cluster that does not form on a loaded machine is
				// reported, and the others are still measured.
				o.Log.Warn("cluster not measured", "kind", kind, "n", n, "err", err)
				res.Notes = append(res.Notes, fmt.Sprintf("%s N=%d was not measured: it did not form (%v).", kind, n, err))
				continue
			}
			// Let the joins settle: idle means the steady state, not the
			// tail of N joins (tag updates, first facts, first syncs). The
			// edge profile gossips once a second, so its tail is 3x longer.
			wait := settle + time.Duration(max(n-30, 0))*time.Second/2
			if kind == "stellar-edge" {
				wait = 3 * settle
			}
			if err := sleep(ctx, wait); err != nil {
				c.stop()
				stopped = err
				break sizes
			}
			// First the idle windows, back to back: nothing is written
			// before the last, so each sees the steady state and none
			// waits for the tail of writes (digest tags, anti-entropy).
			for r := 0; r < rounds; r++ {
				b0, _ := c.loBytes()
				cpu0 := c.cpuSeconds()
				if err := sleep(ctx, idle); err != nil {
					c.stop()
					stopped = err
					break sizes
				}
				b1, _ := c.loBytes()
				s.Add("idle", float64(b1-b0)*8/1000/idle.Seconds()/float64(n))
				s.Add("cpu", (c.cpuSeconds()-cpu0)*1000/idle.Seconds()/float64(n))
				var rss float64
				for _, nd := range c.nodes {
					rss += harness.StatusMiB(pidOf(nd), "VmRSS:")
				}
				s.Add("rss", rss/float64(n))
			}
			// Then the writes, one after the other: convergence is a
			// spread over random gossip targets, so it takes many samples
			// for a stable median.
			w := writes
			if kind == "stellar-edge" {
				w = min(writes, 5) // each takes seconds; its figure is idle traffic
			}
			if v, ok := paired[kind]; ok {
				for _, ms := range v {
					s.Add("converge", ms)
				}
				w = 0
			}
			for r := 0; r < rounds; r++ {
				var round []float64
				for i := 0; i < w; i++ {
					ms, err := c.pausedWrite(ctx, r*100+i)
					if ctx.Err() != nil {
						break
					}
					if err != nil {
						o.Log.Warn("write not converged", "kind", kind, "n", n, "err", err)
						res.Notes = append(res.Notes, fmt.Sprintf("%s N=%d: a write did not reach every node: %v.", kind, n, err))
						continue
					}
					s.Add("converge", ms)
					round = append(round, ms)
				}
				if st := harness.Summarise(round); st.N > 0 {
					o.Log.Info("gossip writes", "subject", s.Name, "round", r, "median_ms", st.Median, "min_ms", st.Min, "max_ms", st.Max)
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
				for _, m := range []string{"converge", "detect", "idle", "cpu", "rss"} {
					if v := s.Samples[m]; len(v) > 0 {
						o.Log.Info("gossip figure", "subject", s.Name, "metric", m, "median", harness.Summarise(v).Median)
					}
				}
				res.Subjects = append(res.Subjects, s)
				curves.add(kind, n, s)
			}
		}
	}
	res.Notes = append(res.Notes,
		"Stellar/subject divides the stellar-lan row of the same N by the subject's (medians).",
		"Every cluster runs in its own network namespace on 127.0.1.x, gossip encrypted on both sides (serf -encrypt with a 32-byte key).",
		fmt.Sprintf("idle: bytes sent on the namespace's lo over a %s window, per node; cpu: user+system CPU time of every node over the same window, per node and second of wall time; rss: VmRSS per node at the end of the window. The first window starts %s (edge: 3x that; +0.5 s per node past 30) after every node listed every other alive; the windows follow each other, before any write.", idle, settle),
		"converge: after a random pause of up to 1 s (so that writes start at any point of the gossip interval, not just after the last write arrived), a PUT on node 0 until every node's watch (GET /v1/watch, opened before the write) delivered it (stellar-gossip), or `serf event` on node 0 until the last agent's event handler ran, by the time the handler stamped (`date +%s%N`; the time includes starting the `serf event` client and each agent forking its handler).",
		fmt.Sprintf("converge up to N=%d: %d pairs of fresh clusters per size, a stellar-lan and a serf one side by side (each in its own namespace), %d writes per kind in each pair, the kinds' writes interleaved. Each node gossips on its own ticker, its phase fixed for the process's life, so one cluster per kind lets a lucky or unlucky set of phases decide the ratio; pairs side by side also share the machine's load. Past N=%d, and for stellar-edge, the writes go to the one measured cluster (two 100-node clusters would overload 2 cores).", pairedUpTo, pairs, pairWrites, pairedUpTo),
		"detect: kill -9 of the last node until node 0 lists it failed (serf: `serf members -status failed` through nsenter, a few ms per poll).",
		fmt.Sprintf("The measured cluster is started once per kind and size: %d idle windows, then (past N=%d, and edge) %d rounds of %d writes (edge: %d) one after the other, then %d nodes killed one after the other (one detection each; N=3 has one, as two nodes are left): at least 5 samples of every figure without 5 cluster starts, which at N=100 on 2 cores would take longer than the rest of the report. A write spreads to 3 random members per gossip interval, so one write's time varies by whole intervals: the median of many writes is stable, that of a few is not.", o.Runs, pairedUpTo, o.Runs, writes, min(writes, 5), o.Runs),
		"stellar-edge does not run at N=100 (its figure is idle traffic per node).",
		"Start deadlines grow with N (health: 30 s + 1 s per node; all alive everywhere: 2 min + 2 s per node, + 4 s per node past 30; a suspect member counts as alive, as `serf members` lists it); both join through three seeds (stellar-gossip: tokens of nodes 0, 1 and 2 in turn; serf: -join of up to three earlier agents). detect waits for the killed node itself to be listed failed. A stellar-gossip cluster also waits until every member publishes the same state digest (tag dg): its nodes' facts and labels have replicated everywhere.",
		"converge and detect against N are plotted (medians); the CDF shows every write's convergence at the largest N.")
	res.Charts = curves.charts(sizes[len(sizes)-1])
	return res, stopped
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
