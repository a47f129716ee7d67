// Package proxy measures stellar-proxyd's HTTP reverse proxying against
// nginx and caddy (Debian packages) in front of the same backend, with the
// backend hit directly as the limit: wrk requests/s and p99 latency.
package proxy

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"stellar.dev/bench/harness"
)

// Benchmark is the proxy benchmark.
var Benchmark = harness.Benchmark{
	Name:  "proxy",
	Title: "HTTP proxy: wrk requests/s and p99, stellar-proxyd vs nginx vs caddy",
	Run:   run,
}

const (
	host        = "bench.test"
	connections = 64
	wrkCPU      = "0"
	serverCPU   = "1"
)

func run(ctx context.Context, o harness.Options) (harness.Result, error) {
	dur, runs := 10*time.Second, o.Runs
	if o.Short {
		dur, runs = 2*time.Second, 1
	}
	if runs < 1 {
		runs = 1
	}
	res := harness.Result{
		Goal: "at least 2x caddy's and 60% of nginx's requests/s, p99 under 5 ms",
		Metrics: []harness.Metric{
			{Name: "rps", Unit: "req/s", HigherIsBetter: true},
			{Name: "p99", Unit: "ms"},
			{Name: "cpu", Unit: "µs/req"},
		},
		Notes: []string{
			fmt.Sprintf("wrk -t1 -c%d for %s per run pinned to CPU %s; the proxy under test and the backend (Stellar's tiny Go test server) share CPU %s; the subjects alternate run by run.", connections, dur, wrkCPU, serverCPU),
			"Plain HTTP/1.1 on loopback, keep-alive to the backend in every proxy (nginx: keepalive 256, worker_processes 1; caddy: reverse_proxy defaults); access logs off in all three (stellar-proxyd: log_level warn).",
			"stellar-proxyd serves its route from its state cache (no stellar-gossip needed for the data path).",
			"stellar-proxyd: its own HTTP/1 connection loop on the plain listener (the default). stellar-proxyd, lean path in net/http: the same binary with STELLAR_PROXYD_LEAN=handler (the lean path inside net/http's server, as before the loop).",
			"stellar-proxyd, ReverseProxy path: the same binary with STELLAR_PROXYD_LEAN=off (every request through httputil.ReverseProxy, as before the lean path).",
			"cpu: user+system CPU time of the subject's processes (nginx: master and worker; not the backend's) per request served; for \"backend directly\" the backend's own.",
		},
	}
	measure := wrk
	if _, err := exec.LookPath("wrk"); err != nil {
		if !o.Short {
			return res, errors.New("wrk is missing (make bench-deps installs it)")
		}
		measure = goLoad
		res.Notes = append(res.Notes, "wrk is missing (make bench-deps): figures come from a Go load loop with the same connection count instead.")
	}
	work := o.WorkDir
	backendBin := filepath.Join(work, "httpd")
	if err := goBuild(backendBin, "stellar.dev/testimages/httpd"); err != nil {
		return res, err
	}
	proxyBin := filepath.Join(o.BinDir, "stellar-proxyd")
	if _, err := os.Stat(proxyBin); err != nil {
		proxyBin = filepath.Join(work, "stellar-proxyd")
		if err := goBuild(proxyBin, "stellar.dev/stellar-proxyd"); err != nil {
			return res, err
		}
	}
	backendAddr, err := freeAddr()
	if err != nil {
		return res, err
	}
	stopBackend, err := start(ctx, harness.Pinned(serverCPU, backendBin, "--listen", backendAddr, "--text", "bench", "--quiet"), backendAddr)
	if err != nil {
		return res, fmt.Errorf("start backend: %w", err)
	}
	defer stopBackend()

	type subject struct {
		s     harness.Subject
		start func() (addr string, stop func(), err error)
	}
	subjects := []*subject{
		{s: harness.Subject{Name: "stellar-proxyd", Kind: harness.KindStellar, Version: version(proxyBin)},
			start: func() (string, func(), error) { return startStellar(ctx, work, proxyBin, backendAddr, "") }},
		// The same binary with its own HTTP/1 loop off: the lean path
		// inside net/http's server, as before the loop existed.
		{s: harness.Subject{Name: "stellar-proxyd, lean path in net/http", Kind: harness.KindPeer, Version: "STELLAR_PROXYD_LEAN=handler"},
			start: func() (string, func(), error) { return startStellar(ctx, work, proxyBin, backendAddr, "handler") }},
		// The same binary with its lean path off: every request through
		// httputil.ReverseProxy, as before the lean path existed.
		{s: harness.Subject{Name: "stellar-proxyd, ReverseProxy path", Kind: harness.KindPeer, Version: "STELLAR_PROXYD_LEAN=off"},
			start: func() (string, func(), error) { return startStellar(ctx, work, proxyBin, backendAddr, "off") }},
	}
	if _, err := exec.LookPath("nginx"); err == nil {
		subjects = append(subjects, &subject{s: harness.Subject{Name: "nginx", Kind: harness.KindPeer, Version: harness.PackageVersion("nginx-light")},
			start: func() (string, func(), error) { return startNginx(ctx, work, backendAddr) }})
	} else {
		res.Notes = append(res.Notes, "nginx is not installed: not measured")
	}
	if _, err := exec.LookPath("caddy"); err == nil {
		subjects = append(subjects, &subject{s: harness.Subject{Name: "caddy", Kind: harness.KindPeer, Version: harness.PackageVersion("caddy")},
			start: func() (string, func(), error) { return startCaddy(ctx, work, backendAddr) }})
	} else {
		res.Notes = append(res.Notes, "caddy is not installed: not measured")
	}
	subjects = append(subjects, &subject{s: harness.Subject{Name: "backend directly", Kind: harness.KindLimit, Version: "testimages/httpd"},
		start: func() (string, func(), error) { return backendAddr, func() {}, nil }})

	// Start every subject, then alternate them run by run, so a change in
	// the machine's load falls on all of them alike.
	addrs := make([]string, len(subjects))
	for i, sub := range subjects {
		addr, stop, err := sub.start()
		if err != nil {
			return res, fmt.Errorf("start %s: %w", sub.s.Name, err)
		}
		defer stop()
		addrs[i] = addr
		// Every subject must answer with the backend's own body: a proxy
		// that answers by itself (caddy gives an empty 200 to a host no
		// site matches) would be measured doing nothing.
		if err := checkProxied(ctx, addr); err != nil {
			return res, fmt.Errorf("check %s: %w", sub.s.Name, err)
		}
		// Warm up the connection pools.
		if _, _, err := measure(ctx, addr, time.Second); err != nil {
			return res, fmt.Errorf("warm up %s: %w", sub.s.Name, err)
		}
	}
	for run := 0; run < runs; run++ {
		for i, sub := range subjects {
			cpu0, cpuErr := cpuTime(pidOf(addrs[i]))
			rps, p99, err := measure(ctx, addrs[i], dur)
			if err != nil {
				return res, fmt.Errorf("measure %s: %w", sub.s.Name, err)
			}
			cpu1, cpuErr1 := cpuTime(pidOf(addrs[i]))
			sub.s.Add("rps", rps)
			sub.s.Add("p99", p99)
			// CPU time per request of the subject's own processes: on a
			// shared machine this moves far less with the load than req/s.
			cpu := -1.0
			if cpuErr == nil && cpuErr1 == nil && rps > 0 {
				cpu = float64(cpu1-cpu0) / float64(time.Microsecond) / (rps * dur.Seconds())
				sub.s.Add("cpu", cpu)
			}
			o.Log.Info("proxy bench", "subject", sub.s.Name, "rps", rps, "p99_ms", p99, "cpu_us_per_req", cpu)
		}
	}
	for _, sub := range subjects {
		res.Subjects = append(res.Subjects, sub.s)
	}
	return res, nil
}

func goBuild(out, pkg string) error {
	cmd := exec.Command("go", "build", "-o", out, pkg)
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("build %s: %v\n%s", pkg, err, b)
	}
	return nil
}

func version(bin string) string {
	out, err := exec.Command(bin, "version").Output()
	if err != nil {
		return "unknown"
	}
	return strings.TrimSpace(string(out))
}

func freeAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}

// start runs cmd and waits until addr answers HTTP.
func start(ctx context.Context, cmd *exec.Cmd, addr string) (func(), error) {
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	setPid(addr, cmd.Process.Pid)
	stop := func() {
		cmd.Process.Signal(os.Interrupt)
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			<-done
		}
	}
	hc := &http.Client{Timeout: time.Second}
	deadline := time.Now().Add(30 * time.Second)
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/", nil)
		req.Host = host
		resp, err := hc.Do(req)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return stop, nil
			}
		}
		select {
		case <-done:
			return nil, fmt.Errorf("%s exited: %s", cmd.Path, out.String())
		default:
		}
		if time.Now().After(deadline) {
			stop()
			return nil, fmt.Errorf("%s does not answer 200 at %s: %v (status %v)\n%s", cmd.Path, addr, err, statusOf(resp), out.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

var (
	pidMu sync.Mutex
	pids  = map[string]int{} // listen address -> process started for it
)

func setPid(addr string, pid int) {
	pidMu.Lock()
	pids[addr] = pid
	pidMu.Unlock()
}

func pidOf(addr string) int {
	pidMu.Lock()
	defer pidMu.Unlock()
	return pids[addr]
}

// clockTick is USER_HZ, 100 on every Linux architecture Go supports.
const clockTick = 100

// cpuTime returns the user+system CPU time of pid and its descendants.
func cpuTime(pid int) (time.Duration, error) {
	if pid == 0 {
		return 0, errors.New("no process")
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// Fields after the command name (which may hold spaces) in parentheses.
	i := strings.LastIndexByte(string(b), ')')
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return 0, fmt.Errorf("short /proc/%d/stat", pid)
	}
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	total := time.Duration(ut+st) * time.Second / clockTick
	tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/children", pid))
	for _, t := range tasks {
		c, _ := os.ReadFile(t)
		for _, s := range strings.Fields(string(c)) {
			if child, err := strconv.Atoi(s); err == nil {
				if d, err := cpuTime(child); err == nil {
					total += d
				}
			}
		}
	}
	return total, nil
}

func statusOf(r *http.Response) string {
	if r == nil {
		return "none"
	}
	return r.Status
}

// startStellar runs stellar-proxyd with one route to the backend, from its
// state cache.
// lean is the value of STELLAR_PROXYD_LEAN ("" for the default: the h1
// loop).
func startStellar(ctx context.Context, work, bin, backend, lean string) (string, func(), error) {
	dir := filepath.Join(work, "proxyd")
	if lean != "" {
		dir += "-" + lean
	}
	for _, d := range []string{"run", "state/proxyd"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			return "", nil, err
		}
	}
	ip, port, _ := net.SplitHostPort(backend)
	app := map[string]any{"spec": map[string]any{"name": "bench", "services": []any{map[string]any{"name": "web",
		"endpoints": []any{map[string]any{"service": "web", "protocol": "http", "host": host, "port": mustInt(port)}}}}}}
	inst := map[string]any{"ip": ip, "status": "running", "health": "healthy"}
	av, _ := json.Marshal(app)
	iv, _ := json.Marshal(inst)
	cache, _ := json.Marshal([]map[string]any{
		{"key": "apps/bench", "value": json.RawMessage(av), "version": "1"},
		{"key": "nodes/bench/instances/bench/web/0", "value": json.RawMessage(iv), "version": "1"},
	})
	if err := os.WriteFile(filepath.Join(dir, "state/proxyd/state.json"), cache, 0o600); err != nil {
		return "", nil, err
	}
	addr, err := freeAddr()
	if err != nil {
		return "", nil, err
	}
	https, err := freeAddr()
	if err != nil {
		return "", nil, err
	}
	cfg := fmt.Sprintf("[node]\nname = \"bench\"\nrun_dir = %q\nstate_dir = %q\nlog_level = \"warn\"\n[proxy]\nhttp = %q\nhttps = %q\n",
		filepath.Join(dir, "run"), filepath.Join(dir, "state"), addr, https)
	cfgPath := filepath.Join(dir, "stellar.toml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o644); err != nil {
		return "", nil, err
	}
	cmd := harness.Pinned(serverCPU, bin, "--config", cfgPath)
	if lean != "" {
		cmd.Env = append(os.Environ(), "STELLAR_PROXYD_LEAN="+lean)
	}
	stop, err := start(ctx, cmd, addr)
	return addr, stop, err
}

// checkProxied sends one request as wrk does and checks that the answer is
// the backend's: status 200 and a body ending in the backend's text line.
func checkProxied(ctx context.Context, addr string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/", nil)
	if err != nil {
		return err
	}
	req.Host = host
	resp, err := (&http.Client{Timeout: 10 * time.Second}).Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK || !strings.HasSuffix(string(body), "\nbench\n") {
		return fmt.Errorf("answer is not the backend's: %s %q", resp.Status, body)
	}
	return nil
}

func mustInt(s string) int {
	n, _ := strconv.Atoi(s)
	return n
}

func startNginx(ctx context.Context, work, backend string) (string, func(), error) {
	dir := filepath.Join(work, "nginx")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", nil, err
	}
	addr, err := freeAddr()
	if err != nil {
		return "", nil, err
	}
	conf := fmt.Sprintf(`worker_processes 1;
daemon off;
pid %[1]s/nginx.pid;
error_log %[1]s/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path %[1]s/body;
  proxy_temp_path %[1]s/proxy;
  fastcgi_temp_path %[1]s/fastcgi;
  uwsgi_temp_path %[1]s/uwsgi;
  scgi_temp_path %[1]s/scgi;
  upstream backend { server %[2]s; keepalive 256; }
  server {
    listen %[3]s;
    server_name %[4]s;
    location / {
      proxy_pass http://backend;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host $host;
      proxy_set_header X-Forwarded-For $remote_addr;
    }
  }
}
`, dir, backend, addr, host)
	path := filepath.Join(dir, "nginx.conf")
	if err := os.WriteFile(path, []byte(conf), 0o644); err != nil {
		return "", nil, err
	}
	stop, err := start(ctx, harness.Pinned(serverCPU, "nginx", "-c", path, "-p", dir, "-e", filepath.Join(dir, "error.log")), addr)
	return addr, stop, err
}

func startCaddy(ctx context.Context, work, backend string) (string, func(), error) {
	dir := filepath.Join(work, "caddy")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", nil, err
	}
	addr, err := freeAddr()
	if err != nil {
		return "", nil, err
	}
	// The site is the port alone, so it matches any Host: with an address
	// here caddy answers wrk's "Host: bench.test" with an empty 200 of its
	// own and never reaches the backend.
	_, port, _ := net.SplitHostPort(addr)
	conf := fmt.Sprintf("{\n\tadmin off\n\tauto_https off\n\tstorage file_system %s\n}\nhttp://:%s {\n\tbind 127.0.0.1\n\treverse_proxy %s\n}\n", dir, port, backend)
	path := filepath.Join(dir, "Caddyfile")
	if err := os.WriteFile(path, []byte(conf), 0o644); err != nil {
		return "", nil, err
	}
	cmd := harness.Pinned(serverCPU, "caddy", "run", "--config", path, "--adapter", "caddyfile")
	cmd.Env = append(os.Environ(), "HOME="+dir, "XDG_DATA_HOME="+dir, "XDG_CONFIG_HOME="+dir)
	stop, err := start(ctx, cmd, addr)
	return addr, stop, err
}

var (
	rpsRE = regexp.MustCompile(`Requests/sec:\s+([0-9.]+)`)
	p99RE = regexp.MustCompile(`(?m)^\s+99%\s+([0-9.]+)(us|ms|s)\s*$`)
)

// wrk runs wrk against addr and returns requests/s and p99 in ms.
func wrk(ctx context.Context, addr string, d time.Duration) (rps, p99 float64, err error) {
	cmd := harness.Pinned(wrkCPU, "wrk", "-t1", fmt.Sprintf("-c%d", connections), fmt.Sprintf("-d%ds", int(d.Seconds())),
		"--latency", "-H", "Host: "+host, "http://"+addr+"/")
	out, err := cmd.CombinedOutput()
	if err != nil {
		return 0, 0, fmt.Errorf("wrk: %v\n%s", err, out)
	}
	return parseWrk(string(out))
}

func parseWrk(out string) (rps, p99 float64, err error) {
	m := rpsRE.FindStringSubmatch(out)
	if m == nil {
		return 0, 0, fmt.Errorf("no Requests/sec in wrk output:\n%s", out)
	}
	rps, _ = strconv.ParseFloat(m[1], 64)
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		if pm := p99RE.FindStringSubmatch(sc.Text()); pm != nil {
			v, _ := strconv.ParseFloat(pm[1], 64)
			switch pm[2] {
			case "us":
				v /= 1000
			case "s":
				v *= 1000
			}
			p99 = v
		}
	}
	if strings.Contains(out, "Non-2xx or 3xx responses") {
		return rps, p99, fmt.Errorf("wrk saw error responses:\n%s", out)
	}
	return rps, p99, nil
}

// goLoad is the stand-in for wrk in short mode when wrk is missing: the
// same number of keep-alive connections, GETs for d.
func goLoad(ctx context.Context, addr string, d time.Duration) (rps, p99 float64, err error) {
	tr := &http.Transport{MaxIdleConnsPerHost: connections, MaxConnsPerHost: connections}
	defer tr.CloseIdleConnections()
	hc := &http.Client{Transport: tr, Timeout: 10 * time.Second}
	var mu sync.Mutex
	var lat []time.Duration
	var firstErr error
	end := time.Now().Add(d)
	var wg sync.WaitGroup
	for i := 0; i < connections; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var mine []time.Duration
			for time.Now().Before(end) && ctx.Err() == nil {
				req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/", nil)
				req.Host = host
				t0 := time.Now()
				resp, err := hc.Do(req)
				if err == nil {
					_, err = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					if resp.StatusCode != 200 {
						err = fmt.Errorf("status %s", resp.Status)
					}
				}
				if err != nil {
					mu.Lock()
					if firstErr == nil {
						firstErr = err
					}
					mu.Unlock()
					return
				}
				mine = append(mine, time.Since(t0))
			}
			mu.Lock()
			lat = append(lat, mine...)
			mu.Unlock()
		}()
	}
	wg.Wait()
	if firstErr != nil {
		return 0, 0, firstErr
	}
	if len(lat) == 0 {
		return 0, 0, errors.New("no request finished")
	}
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	p := lat[len(lat)*99/100]
	return float64(len(lat)) / d.Seconds(), float64(p) / float64(time.Millisecond), nil
}
