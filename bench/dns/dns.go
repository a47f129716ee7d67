// Package dns benchmarks stellar-dnsd beside the DNS servers an operator
// would pick instead: dnsperf's QPS and latency on a 1000-record zone,
// against CoreDNS (built from its Go module, file plugin) and dnsmasq
// (Debian), every server pinned to the same core, with a bare UDP echo
// server as the limit of the load generator.
package dns

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"

	"stellar.dev/bench/harness"
	"stellar.dev/bench/plot"
)

// Benchmark is the DNS benchmark.
var Benchmark = harness.Benchmark{
	Name:  "dns",
	Title: "Cluster DNS: dnsperf QPS and latency, 1000-record zone, server pinned to one core",
	Run:   run,
}

// CoreDNSVersion is the CoreDNS release measured.
const CoreDNSVersion = "v1.12.1"

const (
	port       = "5300"
	serverCPU  = "1" // every server
	loadCPU    = "0" // dnsperf and dnsload
	dnsdIP     = "127.0.54.1"
	corednsIP  = "127.0.54.2"
	dnsmasqIP  = "127.0.54.3"
	echoIP     = "127.0.54.4"
	zoneDomain = "stellar"
)

// subject is one server measured.
type subject struct {
	s    harness.Subject
	addr string // ip
	cmd  *exec.Cmd
	skip string    // why it is not measured
	cdf  []float64 // dnsload latency quantiles (ms), every run
}

func run(ctx context.Context, o harness.Options) (harness.Result, error) {
	records, perfSecs, loadSecs := 1000, 10, 5
	if o.Short {
		records, perfSecs, loadSecs = 200, 2, 1
	}
	res := harness.Result{
		Goal: "QPS at least 2x CoreDNS and 70% of dnsmasq; p99 under 1 ms (measured on our machines with the server on one core: CoreDNS 1.12.1 41.6k, dnsmasq 2.90 122k, a Go UDP echo 141k QPS, the limit of one dnsperf thread)",
		Metrics: []harness.Metric{
			{Name: "qps", Unit: "queries/s", HigherIsBetter: true},
			{Name: "avg", Unit: "ms (dnsperf mean at 100 outstanding)"},
			{Name: "p99", Unit: "ms (10 outstanding)"},
			{Name: "p50", Unit: "ms (10 outstanding)"},
		},
	}
	res.Notes = append(res.Notes,
		fmt.Sprintf("Zone: %d names <svc>.bench.%s. A, each queried in random order; every server answers them authoritatively from memory. stellar-dnsd gets them as instances from a real stellar-gossip.", records, zoneDomain),
		fmt.Sprintf("Servers pinned to CPU %s, the load generators to CPU %s (taskset); dnsperf -c 1 -T 1 -q 100 for %d s (one thread: its own limit shows as the UDP echo's figure); p50/p99 from dnsload with 10 queries outstanding for %d s (dnsperf 2.10 reports only the mean).", serverCPU, loadCPU, perfSecs, loadSecs),
		"dnsperf "+harness.PackageVersion("dnsperf")+".")
	if runtime.NumCPU() < 2 {
		res.Notes = append(res.Notes, "One CPU only: servers and load generators share it; figures are not comparable with the goal.")
	}
	if _, err := exec.LookPath("dnsperf"); err != nil {
		if !o.Short {
			return res, errors.New("dnsperf is missing: make bench-deps installs it")
		}
		res.Notes = append(res.Notes, "dnsperf is missing (make bench-deps): QPS comes from dnsload with 100 outstanding instead.")
	}
	work := o.WorkDir
	tools, err := buildTools(ctx, work)
	if err != nil {
		return res, err
	}
	names := make([]string, records)
	ips := make([]string, records)
	for i := range names {
		names[i] = fmt.Sprintf("s%d.bench.%s", i, zoneDomain)
		ips[i] = fmt.Sprintf("10.%d.%d.%d", 1+i/65536, (i/256)%256, i%256)
	}
	qfile := filepath.Join(work, "queries.txt")
	var qb strings.Builder
	for _, i := range rand.New(rand.NewSource(1)).Perm(records) {
		fmt.Fprintf(&qb, "%s A\n", names[i])
	}
	if err := os.WriteFile(qfile, []byte(qb.String()), 0o644); err != nil {
		return res, err
	}

	var subs []*subject
	defer func() {
		for _, s := range subs {
			stop(s.cmd)
		}
	}()
	// stellar-dnsd, fed by a real stellar-gossip.
	dnsd, gossip, err := startStellar(ctx, o, work, names, ips)
	defer stop(gossip)
	sd := &subject{s: harness.Subject{Name: "stellar-dnsd", Kind: harness.KindStellar, Version: binVersion(filepath.Join(o.BinDir, "stellar-dnsd"))}, addr: dnsdIP, cmd: dnsd}
	subs = append(subs, sd)
	if err != nil {
		return res, fmt.Errorf("start stellar-dnsd: %w", err)
	}
	// CoreDNS with the file plugin.
	cd := &subject{s: harness.Subject{Name: "CoreDNS (file plugin)", Kind: harness.KindPeer, Version: CoreDNSVersion}, addr: corednsIP}
	subs = append(subs, cd)
	if bin, err := coreDNS(ctx, o); err != nil {
		cd.skip = err.Error()
	} else if cd.cmd, err = startCoreDNS(work, bin, names, ips); err != nil {
		cd.skip = err.Error()
	}
	// dnsmasq from Debian.
	dm := &subject{s: harness.Subject{Name: "dnsmasq (Debian)", Kind: harness.KindPeer, Version: harness.PackageVersion("dnsmasq-base")}, addr: dnsmasqIP}
	subs = append(subs, dm)
	if dm.cmd, err = startDnsmasq(work, names, ips); err != nil {
		dm.skip = err.Error()
	}
	// The limit: a UDP echo.
	ec := &subject{s: harness.Subject{Name: "UDP echo (Go, no DNS work)", Kind: harness.KindLimit}, addr: echoIP}
	subs = append(subs, ec)
	ec.cmd = harness.Pinned(serverCPU, tools.echo, "-l", echoIP+":"+port)
	if err := ec.cmd.Start(); err != nil {
		ec.skip = err.Error()
	}

	probeName := names[records-1]
	for _, s := range subs {
		if s.skip != "" {
			continue
		}
		name := probeName
		if s == ec {
			name = "" // the echo answers anything
		}
		if err := waitAnswer(ctx, s.addr+":"+port, name, 60*time.Second); err != nil {
			if s == sd {
				return res, fmt.Errorf("stellar-dnsd does not answer %s: %w", name, err)
			}
			s.skip = err.Error()
		}
	}
	lat := plot.Chart{Title: "DNS latency, 10 queries outstanding (dnsload, runs pooled)", XLabel: "ms", YLabel: "fraction of queries", Kind: plot.CDF, LogX: true}
	for r := 0; r < o.Runs; r++ {
		for _, s := range subs {
			if s.skip != "" {
				continue
			}
			o.Log.Info("dns benchmark", "subject", s.s.Name, "run", r+1)
			qps, avg, err := dnsperf(ctx, tools, s.addr, qfile, perfSecs)
			if err != nil {
				return res, fmt.Errorf("%s: %w", s.s.Name, err)
			}
			s.s.Add("qps", qps)
			if avg > 0 {
				s.s.Add("avg", avg)
			}
			p50, p99, cdf, err := dnsload(ctx, tools, s.addr, qfile, loadSecs, 10)
			if err != nil {
				return res, fmt.Errorf("%s: %w", s.s.Name, err)
			}
			s.s.Add("p50", p50)
			s.s.Add("p99", p99)
			s.cdf = append(s.cdf, cdf...)
		}
	}
	for _, s := range subs {
		if s.skip != "" {
			res.Notes = append(res.Notes, fmt.Sprintf("%s not measured: %s", s.s.Name, s.skip))
			continue
		}
		res.Subjects = append(res.Subjects, s.s)
		if len(s.cdf) > 0 {
			lat.Series = append(lat.Series, plot.Series{Name: s.s.Name, Y: s.cdf})
		}
	}
	if len(lat.Series) > 0 {
		res.Charts = append(res.Charts, harness.Chart{Name: "latency-cdf", Chart: lat})
	}
	return res, nil
}

// tools are the helper binaries built for the run.
type tools struct{ echo, load string }

func buildTools(ctx context.Context, work string) (tools, error) {
	t := tools{echo: filepath.Join(work, "udpecho"), load: filepath.Join(work, "dnsload")}
	// By import path: under make's GOFLAGS=-trimpath this file's own path
	// is not a directory; the workspace resolves the packages from the
	// repository or any folder in it.
	cmd := exec.CommandContext(ctx, "go", "build", "-o", work+"/", "stellar.dev/bench/dns/udpecho", "stellar.dev/bench/dns/dnsload")
	if _, file, _, ok := runtime.Caller(0); ok && filepath.IsAbs(file) {
		cmd.Dir = filepath.Dir(file)
	}
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		return t, fmt.Errorf("build udpecho and dnsload: %w\n%s", err, out)
	}
	return t, nil
}

// startStellar starts stellar-gossip, publishes one instance per name, and
// starts stellar-dnsd pinned to the server CPU.
func startStellar(ctx context.Context, o harness.Options, work string, names, ips []string) (dnsd, gossip *exec.Cmd, err error) {
	dir := filepath.Join(work, "stellar")
	run := filepath.Join(dir, "run")
	if err := os.MkdirAll(run, 0o755); err != nil {
		return nil, nil, err
	}
	cfg := filepath.Join(dir, "stellar.toml")
	conf := fmt.Sprintf(`[node]
name = "bench"
run_dir = %q
state_dir = %q
log_level = "warn"
[gossip]
bind = "%s:7946"
peer_api = "%s:7947"
[dns]
domain = %q
listen = ["%s:%s"]
upstream = ["127.0.0.1:9"]
`, run, filepath.Join(dir, "state"), dnsdIP, dnsdIP, zoneDomain, dnsdIP, port)
	if err := os.WriteFile(cfg, []byte(conf), 0o644); err != nil {
		return nil, nil, err
	}
	gossip = exec.Command(filepath.Join(o.BinDir, "stellar-gossip"), "--config", cfg)
	gossip.Stderr = &tail{}
	if err := gossip.Start(); err != nil {
		return nil, nil, fmt.Errorf("start stellar-gossip (make build): %w", err)
	}
	hc := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", filepath.Join(run, "gossip.sock"))
	}}, Timeout: 10 * time.Second}
	deadline := time.Now().Add(60 * time.Second)
	for {
		resp, err := hc.Get("http://gossip/v1/members")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				break
			}
		}
		if time.Now().After(deadline) {
			return nil, gossip, fmt.Errorf("stellar-gossip did not serve: %v %s", err, gossip.Stderr)
		}
		time.Sleep(100 * time.Millisecond)
	}
	for i, n := range names {
		svc := strings.SplitN(n, ".", 2)[0]
		doc, _ := json.Marshal(map[string]any{"app": "bench", "service": svc, "index": 0, "node": "bench", "ip": ips[i], "status": "running", "health": "healthy", "updated": time.Now().UTC()})
		key := fmt.Sprintf("nodes/bench/instances/bench/%s/0", svc)
		var lastErr error
		for try := 0; try < 50; try++ {
			req, _ := http.NewRequestWithContext(ctx, http.MethodPut, "http://gossip/v1/state/"+key, bytes.NewReader(doc))
			req.Header.Set("Content-Type", "application/json")
			resp, err := hc.Do(req)
			if err == nil {
				resp.Body.Close()
				if resp.StatusCode/100 == 2 {
					lastErr = nil
					break
				}
				err = fmt.Errorf("status %s", resp.Status)
			}
			lastErr = err
			time.Sleep(100 * time.Millisecond) // gossip may still be starting
		}
		if lastErr != nil {
			return nil, gossip, fmt.Errorf("publish %s: %w", key, lastErr)
		}
	}
	dnsd = harness.Pinned(serverCPU, filepath.Join(o.BinDir, "stellar-dnsd"), "--config", cfg)
	dnsd.Stderr = &tail{}
	if err := dnsd.Start(); err != nil {
		return nil, gossip, fmt.Errorf("start stellar-dnsd (make build): %w", err)
	}
	return dnsd, gossip, nil
}

// coreDNS returns the CoreDNS binary: $STELLAR_BENCH_COREDNS, or one built
// once from its Go module into the user's cache dir (never into the
// project's go.mod). In short mode a missing build is skipped, not made.
func coreDNS(ctx context.Context, o harness.Options) (string, error) {
	if p := os.Getenv("STELLAR_BENCH_COREDNS"); p != "" {
		return p, nil
	}
	cache, err := os.UserCacheDir()
	if err != nil {
		cache = os.TempDir()
	}
	dir := filepath.Join(cache, "stellar-bench", "coredns-"+CoreDNSVersion)
	bin := filepath.Join(dir, "coredns")
	if _, err := os.Stat(bin); err == nil {
		return bin, nil
	}
	if o.Short {
		return "", fmt.Errorf("not built yet (the full run builds CoreDNS %s into %s, or set STELLAR_BENCH_COREDNS)", CoreDNSVersion, dir)
	}
	o.Log.Info("building CoreDNS from its Go module (once)", "version", CoreDNSVersion, "into", dir)
	cmd := exec.CommandContext(ctx, "go", "install", "github.com/coredns/coredns@"+CoreDNSVersion)
	cmd.Dir = os.TempDir()
	cmd.Env = append(os.Environ(), "GOBIN="+dir, "GOFLAGS=-mod=mod", "GOWORK=off", "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("build CoreDNS %s: %w\n%s", CoreDNSVersion, err, out)
	}
	return bin, nil
}

func startCoreDNS(work, bin string, names, ips []string) (*exec.Cmd, error) {
	dir := filepath.Join(work, "coredns")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	var z strings.Builder
	fmt.Fprintf(&z, "$ORIGIN %s.\n@ 5 IN SOA ns.%s. hostmaster.%s. 1 60 30 86400 5\n@ 5 IN NS ns.%s.\nns 5 IN A 127.0.0.1\n", zoneDomain, zoneDomain, zoneDomain, zoneDomain)
	for i, n := range names {
		fmt.Fprintf(&z, "%s. 5 IN A %s\n", n, ips[i])
	}
	zf := filepath.Join(dir, "db."+zoneDomain)
	if err := os.WriteFile(zf, []byte(z.String()), 0o644); err != nil {
		return nil, err
	}
	corefile := filepath.Join(dir, "Corefile")
	if err := os.WriteFile(corefile, []byte(fmt.Sprintf("%s.:%s {\n  bind %s\n  file %s\n}\n", zoneDomain, port, corednsIP, zf)), 0o644); err != nil {
		return nil, err
	}
	cmd := harness.Pinned(serverCPU, bin, "-conf", corefile, "-quiet")
	cmd.Dir = dir
	cmd.Stderr = &tail{}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start CoreDNS: %w", err)
	}
	return cmd, nil
}

func startDnsmasq(work string, names, ips []string) (*exec.Cmd, error) {
	bin, err := exec.LookPath("dnsmasq")
	if err != nil {
		return nil, errors.New("dnsmasq is missing (make bench-deps installs dnsmasq-base)")
	}
	dir := filepath.Join(work, "dnsmasq")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	var c strings.Builder
	for i, n := range names {
		fmt.Fprintf(&c, "host-record=%s,%s\n", n, ips[i])
	}
	conf := filepath.Join(dir, "dnsmasq.conf")
	if err := os.WriteFile(conf, []byte(c.String()), 0o644); err != nil {
		return nil, err
	}
	cmd := harness.Pinned(serverCPU, bin, "--keep-in-foreground", "--conf-file="+conf, "--no-resolv", "--no-hosts", "--no-poll",
		"--listen-address="+dnsmasqIP, "--bind-interfaces", "--port="+port, "--local=/"+zoneDomain+"/", "--local-ttl=5", "--pid-file=", "--user=root")
	cmd.Stderr = &tail{}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start dnsmasq: %w", err)
	}
	return cmd, nil
}

func stop(cmd *exec.Cmd) {
	if cmd == nil || cmd.Process == nil {
		return
	}
	_ = cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		_ = cmd.Process.Kill()
		<-done
	}
}

// waitAnswer waits until addr answers name (any answer when name is "")
// with NOERROR and at least one record.
func waitAnswer(ctx context.Context, addr, name string, within time.Duration) error {
	q := name
	if q == "" {
		q = "probe." + zoneDomain
	}
	deadline := time.Now().Add(within)
	var last error
	for time.Now().Before(deadline) {
		if err := ctx.Err(); err != nil {
			return err
		}
		last = probe(addr, q, name == "")
		if last == nil {
			return nil
		}
		time.Sleep(100 * time.Millisecond)
	}
	return last
}

func probe(addr, name string, anyAnswer bool) error {
	c, err := net.Dial("udp", addr)
	if err != nil {
		return err
	}
	defer c.Close()
	b := make([]byte, 12, 64)
	binary.BigEndian.PutUint16(b, 7)
	binary.BigEndian.PutUint16(b[2:], 0x0100)
	binary.BigEndian.PutUint16(b[4:], 1)
	for _, l := range strings.Split(name, ".") {
		b = append(b, byte(len(l)))
		b = append(b, l...)
	}
	b = append(b, 0, 0, 1, 0, 1)
	if _, err := c.Write(b); err != nil {
		return err
	}
	_ = c.SetReadDeadline(time.Now().Add(time.Second))
	buf := make([]byte, 1500)
	n, err := c.Read(buf)
	if err != nil {
		return err
	}
	if anyAnswer {
		return nil
	}
	if n < 12 || buf[3]&0xf != 0 || binary.BigEndian.Uint16(buf[6:]) == 0 {
		return fmt.Errorf("no answer for %s yet (rcode %d)", name, buf[3]&0xf)
	}
	return nil
}

var (
	qpsRe = regexp.MustCompile(`Queries per second:\s+([0-9.]+)`)
	avgRe = regexp.MustCompile(`Average Latency \(s\):\s+([0-9.]+)`)
)

// dnsperf runs dnsperf against ip and returns QPS and mean latency (ms).
// Without dnsperf, dnsload with 100 outstanding gives the QPS.
func dnsperf(ctx context.Context, t tools, ip, qfile string, secs int) (qps, avgMs float64, err error) {
	if _, err := exec.LookPath("dnsperf"); err != nil {
		out, err := harness.Pinned(loadCPU, t.load, "-s", ip+":"+port, "-d", qfile, "-l", fmt.Sprintf("%ds", secs), "-q", "100").Output()
		if err != nil {
			return 0, 0, fmt.Errorf("dnsload: %w", err)
		}
		kv := parseKV(string(out))
		return kv["qps"], 0, nil
	}
	cmd := harness.Pinned(loadCPU, "dnsperf", "-s", ip, "-p", port, "-d", qfile, "-l", strconv.Itoa(secs), "-c", "1", "-T", "1", "-q", "100", "-t", "2")
	out, err := cmd.CombinedOutput()
	if err != nil {
		return 0, 0, fmt.Errorf("dnsperf: %w\n%s", err, out)
	}
	m := qpsRe.FindSubmatch(out)
	if m == nil {
		return 0, 0, fmt.Errorf("dnsperf printed no QPS:\n%s", out)
	}
	qps, _ = strconv.ParseFloat(string(m[1]), 64)
	if a := avgRe.FindSubmatch(out); a != nil {
		s, _ := strconv.ParseFloat(string(a[1]), 64)
		avgMs = s * 1000
	}
	return qps, avgMs, nil
}

// dnsload returns p50 and p99 latency (ms) with n queries outstanding.
// cdf holds 200 evenly spaced quantiles of the latency (ms).
func dnsload(ctx context.Context, t tools, ip, qfile string, secs, n int) (p50, p99 float64, cdf []float64, err error) {
	out, err := harness.Pinned(loadCPU, t.load, "-s", ip+":"+port, "-d", qfile, "-l", fmt.Sprintf("%ds", secs), "-q", strconv.Itoa(n)).Output()
	if err != nil {
		return 0, 0, nil, fmt.Errorf("dnsload: %w", err)
	}
	kv := parseKV(string(out))
	for _, l := range strings.Split(string(out), "\n") {
		if v, ok := strings.CutPrefix(l, "cdf_ms="); ok {
			for _, f := range strings.Split(v, ",") {
				if x, err := strconv.ParseFloat(f, 64); err == nil {
					cdf = append(cdf, x)
				}
			}
		}
	}
	return kv["p50_ms"], kv["p99_ms"], cdf, nil
}

func parseKV(s string) map[string]float64 {
	out := map[string]float64{}
	for _, f := range strings.Fields(s) {
		if k, v, ok := strings.Cut(f, "="); ok {
			x, _ := strconv.ParseFloat(v, 64)
			out[k] = x
		}
	}
	return out
}

// binVersion asks a Stellar binary for its version.
func binVersion(bin string) string {
	out, err := exec.Command(bin, "version").Output()
	if err != nil {
		return "unknown"
	}
	return strings.TrimSpace(string(out))
}

// tail keeps the last bytes a process wrote, for error messages.
type tail struct{ b []byte }

func (t *tail) Write(p []byte) (int, error) {
	t.b = append(t.b, p...)
	if len(t.b) > 4096 {
		t.b = t.b[len(t.b)-4096:]
	}
	return len(p), nil
}

func (t *tail) String() string { return string(t.b) }
