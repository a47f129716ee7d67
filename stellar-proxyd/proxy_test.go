package main

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
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

	"stellar.dev/api/client"
	"stellar.dev/api/proxyapi"
	"stellar.dev/daemon/daemontest"
)

const pkg = "stellar.dev/stellar-proxyd"

// node is one stellar-proxyd process beside a real stellar-gossip.
type node struct {
	d      *daemontest.Daemon
	gossip *gossipNode
	http   string
	https  string
	api    *proxyapi.Client
}

func freePort(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

func tempDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "st-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.MkdirAll(filepath.Join(dir, "run"), 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

func proxyConfig(httpAddr, httpsAddr string) string {
	return fmt.Sprintf("[proxy]\nhttp = %q\nhttps = %q\nhealth_interval = \"300ms\"\n", httpAddr, httpsAddr)
}

// startNode starts a real one-node stellar-gossip and a proxyd beside it.
func startNode(t *testing.T) *node {
	t.Helper()
	g := startGossip(t, daemontest.Build(t, "stellar.dev/stellar-gossip"), "n1", nextIP())
	n := proxyOn(t, g)
	n.gossip = g
	return n
}

var ipCounter atomic.Int32

// nextIP returns a fresh loopback address for a gossip node.
func nextIP() string {
	return fmt.Sprintf("127.0.7.%d", ipCounter.Add(1))
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting until %s", what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// backend is a real HTTP server on its own loopback address.
type backend struct {
	name string
	addr string
	srv  *http.Server
	hits atomic.Int64
	// release lets /stream send its second part.
	release chan struct{}
}

func startBackend(t *testing.T, name string, ip string) *backend {
	t.Helper()
	l, err := net.Listen("tcp", ip+":0")
	if err != nil {
		t.Fatal(err)
	}
	b := &backend{name: name, addr: l.Addr().String(), release: make(chan struct{}, 1)}
	mux := http.NewServeMux()
	mux.HandleFunc("/ws", func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Upgrade") != "websocket" {
			http.Error(w, "want upgrade", 400)
			return
		}
		c, brw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			return
		}
		defer c.Close()
		brw.WriteString("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
		brw.Flush()
		io.Copy(c, brw) // echo
	})
	stream := func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "first\n")
		w.(http.Flusher).Flush()
		select {
		case <-b.release:
		case <-r.Context().Done():
		case <-time.After(20 * time.Second):
		}
		io.WriteString(w, "second\n")
	}
	mux.HandleFunc("/stream", stream)
	mux.HandleFunc("/api/stream", stream)
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		b.hits.Add(1)
		body, err := io.ReadAll(r.Body)
		if err != nil {
			return
		}
		w.Header().Set("X-Backend", name)
		fmt.Fprintf(w, "%s host=%s path=%s xff=%s xfh=%s xfp=%s body=%d", name, r.Host, r.URL.Path,
			r.Header.Get("X-Forwarded-For"), r.Header.Get("X-Forwarded-Host"), r.Header.Get("X-Forwarded-Proto"), len(body))
	})
	b.srv = &http.Server{Handler: mux}
	go b.srv.Serve(l)
	t.Cleanup(func() { b.srv.Close() })
	return b
}

func (b *backend) port() int {
	_, p, _ := net.SplitHostPort(b.addr)
	n, _ := strconv.Atoi(p)
	return n
}

func (b *backend) ip() string {
	h, _, _ := net.SplitHostPort(b.addr)
	return h
}

// appSpec is an appd Record with one service "web" and one endpoint.
func appSpec(name, host, path string, tlsOn bool, health map[string]any) map[string]any {
	svc := map[string]any{"name": "web", "image": "x", "endpoints": []map[string]any{
		{"service": "web", "protocol": "http", "host": host, "port": 8080, "tls": tlsOn, "path": path}}}
	if health != nil {
		svc["health"] = health
	}
	return map[string]any{"spec": map[string]any{"name": name, "services": []any{svc}}, "generation": 1}
}

// putInstance publishes a backend as instance i of app's service web, with
// the endpoint port 8080 mapped to the backend's port. The gossip node is
// the instance's node (node-owned keys are written by their node only).
func putInstance(g *gossipNode, app string, i int, ip string, port int) {
	g.putJSON(fmt.Sprintf("nodes/%s/instances/%s/web/%d", g.name, app, i), map[string]any{
		"app": app, "service": "web", "index": i, "node": g.name, "ip": ip, "status": "running", "health": "healthy",
		"ports": []map[string]int{{"host": 8080, "container": port}},
	})
}

// clientTo returns an HTTP client that sends every request to addr.
func clientTo(addr string) *http.Client {
	d := &net.Dialer{Timeout: 5 * time.Second}
	return &http.Client{
		Transport: &http.Transport{
			DialContext:         func(ctx context.Context, _, _ string) (net.Conn, error) { return d.DialContext(ctx, "tcp", addr) },
			MaxIdleConnsPerHost: 64,
		},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		Timeout:       20 * time.Second,
	}
}

func get(t *testing.T, c *http.Client, url string) (int, string) {
	t.Helper()
	resp, err := c.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func waitBackends(t *testing.T, n *node, host string, want int) []proxyapi.Backend {
	t.Helper()
	var bs []proxyapi.Backend
	waitFor(t, fmt.Sprintf("%d backends for %s", want, host), func() bool {
		var err error
		bs, err = n.api.Backends(context.Background(), host)
		return err == nil && len(bs) == want
	})
	return bs
}

func TestProxy_routesByHostAndPath(t *testing.T) {
	n := startNode(t)
	a1 := startBackend(t, "a1", "127.0.0.2")
	a2 := startBackend(t, "a2", "127.0.0.3")
	api := startBackend(t, "api", "127.0.0.4")
	n.gossip.putJSON("apps/a", appSpec("a", "a.test", "", false, nil))
	n.gossip.putJSON("apps/aapi", appSpec("aapi", "A.test", "/api", false, nil))
	putInstance(n.gossip, "a", 0, a1.ip(), a1.port())
	putInstance(n.gossip, "a", 1, a2.ip(), a2.port())
	putInstance(n.gossip, "aapi", 0, api.ip(), api.port())
	waitBackends(t, n, "a.test", 3)

	c := clientTo(n.http)
	seen := map[string]int{}
	for i := 0; i < 20; i++ {
		code, body := get(t, c, "http://a.test/x")
		if code != 200 {
			t.Fatalf("GET a.test/x: %d %s", code, body)
		}
		seen[strings.Fields(body)[0]]++
	}
	// Round robin (a table swap in between may restart the rotation).
	if seen["a1"] < 7 || seen["a2"] < 7 {
		t.Errorf("round robin over a1, a2: %v", seen)
	}
	code, body := get(t, c, "http://a.test/api/v1")
	if code != 200 || !strings.HasPrefix(body, "api host=a.test path=/api/v1 xff=127.0.0.1 xfh=a.test xfp=http") {
		t.Errorf("GET a.test/api/v1: %d %q", code, body)
	}
	if code, body := get(t, c, "http://a.test/apix"); code != 200 || !strings.HasPrefix(body, "a") || strings.HasPrefix(body, "api") {
		t.Errorf("GET /apix went to %d %q, want the / route", code, body)
	}
	if code, _ := get(t, c, "http://nowhere.test/"); code != 404 {
		t.Errorf("unknown host: %d, want 404", code)
	}

	t.Run("sctl proxy backends", func(t *testing.T) {
		sctl := daemontest.Build(t, "stellar.dev/sctl")
		out, err := exec.Command(sctl, "--config", n.d.Config, "proxy", "backends").CombinedOutput()
		if err != nil {
			t.Fatalf("sctl proxy backends: %v\n%s", err, out)
		}
		lines := strings.Split(strings.TrimSpace(string(out)), "\n")
		if len(lines) != 4 || strings.Join(strings.Fields(lines[0]), " ") != "HOST PATH BACKEND HEALTH WEIGHT" {
			t.Fatalf("sctl proxy backends:\n%s", out)
		}
		want := "a.test /api " + api.addr + " healthy 100"
		if got := strings.Join(strings.Fields(lines[2]), " "); got != want && strings.Join(strings.Fields(lines[3]), " ") != want {
			t.Errorf("sctl proxy backends has no row %q:\n%s", want, out)
		}
	})

	t.Run("websocket", func(t *testing.T) {
		conn, err := net.Dial("tcp", n.http)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		conn.SetDeadline(time.Now().Add(10 * time.Second))
		io.WriteString(conn, "GET /ws HTTP/1.1\r\nHost: a.test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
		br := bufio.NewReader(conn)
		resp, err := http.ReadResponse(br, nil)
		if err != nil || resp.StatusCode != 101 {
			t.Fatalf("upgrade: %v %v", resp, err)
		}
		io.WriteString(conn, "ping")
		buf := make([]byte, 4)
		if _, err := io.ReadFull(br, buf); err != nil || string(buf) != "ping" {
			t.Fatalf("echo: %q %v", buf, err)
		}
	})

	t.Run("streaming body", func(t *testing.T) {
		pr, pw := io.Pipe()
		go func() {
			for i := 0; i < 100; i++ {
				pw.Write(make([]byte, 1000))
			}
			pw.Close()
		}()
		req, _ := http.NewRequest(http.MethodPost, "http://a.test/upload", pr)
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if !strings.Contains(string(b), "body=100000") {
			t.Errorf("chunked upload: %q", b)
		}
	})

	t.Run("streamed answer", func(t *testing.T) {
		resp, err := c.Get("http://a.test/api/stream")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		br := bufio.NewReader(resp.Body)
		line, err := br.ReadString('\n')
		if err != nil || line != "first\n" {
			t.Fatalf("first part before the backend finished: %q %v", line, err)
		}
		api.release <- struct{}{}
		if line, err = br.ReadString('\n'); err != nil || line != "second\n" {
			t.Fatalf("second part: %q %v", line, err)
		}
	})

	t.Run("a removed instance gets no traffic", func(t *testing.T) {
		n.gossip.delete("nodes/n1/instances/a/web/1")
		waitBackends(t, n, "a.test", 2)
		for i := 0; i < 6; i++ {
			if _, body := get(t, c, "http://a.test/"); !strings.HasPrefix(body, "a1 ") {
				t.Fatalf("after removing a2: %q", body)
			}
		}
	})
}

// load sends GETs from workers until stop is closed and counts outcomes.
type load struct {
	ok, failed atomic.Int64
	slowest    atomic.Int64 // ns
	mu         sync.Mutex
	errs       []string
	wg         sync.WaitGroup
	stop       chan struct{}
}

func startLoad(c *http.Client, url string, workers int) *load {
	l := &load{stop: make(chan struct{})}
	for i := 0; i < workers; i++ {
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			for {
				select {
				case <-l.stop:
					return
				default:
				}
				start := time.Now()
				resp, err := c.Get(url)
				if err == nil {
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
				}
				d := time.Since(start)
				for {
					s := l.slowest.Load()
					if int64(d) <= s || l.slowest.CompareAndSwap(s, int64(d)) {
						break
					}
				}
				if err != nil || resp.StatusCode != 200 {
					l.failed.Add(1)
					l.mu.Lock()
					if len(l.errs) < 10 {
						if err != nil {
							l.errs = append(l.errs, time.Now().Format("15:04:05.000")+" "+err.Error())
						} else {
							l.errs = append(l.errs, resp.Status)
						}
					}
					l.mu.Unlock()
					continue
				}
				l.ok.Add(1)
			}
		}()
	}
	return l
}

func (l *load) finish() {
	close(l.stop)
	l.wg.Wait()
}

func TestProxy_healthFailoverUnderLoad(t *testing.T) {
	httpd := daemontest.Build(t, "stellar.dev/testimages/httpd")
	n := startNode(t)
	n.gossip.putJSON("apps/h", appSpec("h", "h.test", "", false, map[string]any{"http": "/health", "interval": "300ms", "timeout": "1s", "retries": 2}))
	var procs []*exec.Cmd
	var addrs []string
	for i := 0; i < 3; i++ {
		addr := freePort(t)
		ip := fmt.Sprintf("127.0.0.%d", 10+i)
		_, port, _ := net.SplitHostPort(addr)
		addr = ip + ":" + port
		cmd := exec.Command(httpd, "--listen", addr, "--text", fmt.Sprintf("b%d", i))
		cmd.Stderr = os.Stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
		procs = append(procs, cmd)
		addrs = append(addrs, addr)
		p, _ := strconv.Atoi(port)
		putInstance(n.gossip, "h", i, ip, p)
	}
	waitFor(t, "three healthy backends", func() bool {
		bs, err := n.api.Backends(context.Background(), "h.test")
		if err != nil || len(bs) != 3 {
			return false
		}
		for _, b := range bs {
			if b.Health != proxyapi.HealthHealthy {
				return false
			}
			if c, err := net.Dial("tcp", b.Addr); err != nil {
				return false
			} else {
				c.Close()
			}
		}
		return true
	})
	c := clientTo(n.http)
	l := startLoad(c, "http://h.test/", 8)
	time.Sleep(time.Second)
	before := l.failed.Load()
	procs[1].Process.Kill()
	procs[1].Wait()
	killed := time.Now()
	// The passive window: a refused connection ejects at once and the
	// request is retried on another backend.
	time.Sleep(500 * time.Millisecond)
	afterWindow := l.failed.Load()
	time.Sleep(3 * time.Second)
	l.finish()
	t.Logf("ok %d failed before kill %d, in window %d, after window %d (killed at %s)", l.ok.Load(), before, afterWindow-before, l.failed.Load()-afterWindow, killed.Format(time.TimeOnly))
	if l.failed.Load() != 0 {
		t.Errorf("failed requests: %d (%v)", l.failed.Load(), l.errs)
	}
	waitFor(t, "the killed backend shows unhealthy", func() bool {
		bs, _ := n.api.Backends(context.Background(), "h.test")
		for _, b := range bs {
			if b.Addr == addrs[1] {
				return b.Health == proxyapi.HealthUnhealthy
			}
		}
		return false
	})

	t.Run("failing health check takes a backend out", func(t *testing.T) {
		resp, err := http.Post("http://"+addrs[0]+"/fail", "text/plain", nil)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		waitFor(t, "b0 unhealthy", func() bool {
			bs, _ := n.api.Backends(context.Background(), "h.test")
			for _, b := range bs {
				if b.Addr == addrs[0] {
					return b.Health == proxyapi.HealthUnhealthy
				}
			}
			return false
		})
		for i := 0; i < 10; i++ {
			code, body := get(t, c, "http://h.test/")
			if code != 200 || !strings.Contains(body, "b2") {
				t.Fatalf("with b0 failing and b1 dead: %d %q", code, body)
			}
		}
	})
}

func TestProxy_canarySplit(t *testing.T) {
	n := startNode(t)
	v1 := startBackend(t, "v1", "127.0.0.20")
	v2 := startBackend(t, "v2", "127.0.0.21")
	n.gossip.putJSON("apps/v1", appSpec("v1", "c.test", "", false, nil))
	n.gossip.putJSON("apps/v2", appSpec("v2", "c.test", "", false, nil))
	putInstance(n.gossip, "v1", 0, v1.ip(), v1.port())
	putInstance(n.gossip, "v2", 0, v2.ip(), v2.port())
	waitBackends(t, n, "c.test", 2)
	if err := n.api.SetHost(context.Background(), "c.test", proxyapi.HostSettings{Weights: map[string]int{"v1/web": 90, "v2/web": 10}}); err != nil {
		t.Fatal(err)
	}
	err := n.api.SetHost(context.Background(), "c.test", proxyapi.HostSettings{Weights: map[string]int{"v1": 90}})
	if err == nil || !strings.Contains(err.Error(), "not <app>/<service>") {
		t.Errorf("bad weight key: %v", err)
	}
	waitFor(t, "weights 90/10", func() bool {
		bs, _ := n.api.Backends(context.Background(), "c.test")
		return len(bs) == 2 && bs[0].Weight+bs[1].Weight == 100 && (bs[0].Weight == 90 || bs[1].Weight == 90)
	})
	c := clientTo(n.http)
	const total = 10000
	var wg sync.WaitGroup
	var count2, fails atomic.Int64
	for w := 0; w < 8; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < total/8; i++ {
				resp, err := c.Get("http://c.test/")
				if err != nil {
					fails.Add(1)
					continue
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.Header.Get("X-Backend") == "v2" {
					count2.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	// Binomial(10000, 0.1): sd 30; allow 6 sd.
	if fails.Load() != 0 || count2.Load() < 820 || count2.Load() > 1180 {
		t.Errorf("v2 got %d of %d (want 1000 +- 180), %d failed", count2.Load(), total, fails.Load())
	}
	t.Logf("v2 got %d of %d", count2.Load(), total)
}

func TestProxy_smugglingCorpus(t *testing.T) {
	n := startNode(t)
	b := startBackend(t, "s", "127.0.0.30")
	n.gossip.putJSON("apps/s", appSpec("s", "s.test", "", false, nil))
	putInstance(n.gossip, "s", 0, b.ip(), b.port())
	waitBackends(t, n, "s.test", 1)
	big := func(n int) string { return "X-Big: " + strings.Repeat("a", n) + "\r\n" }
	tests := []struct {
		name, raw string
		want      int
		closed    bool
	}{
		{"plain", "GET / HTTP/1.1\r\nHost: s.test\r\n\r\n", 200, false},
		{"cl te", "POST / HTTP/1.1\r\nHost: s.test\r\nContent-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: s.test\r\n\r\n", 400, true},
		{"duplicate cl", "POST / HTTP/1.1\r\nHost: s.test\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\nabc", 400, true},
		{"bad chunk size", "POST / HTTP/1.1\r\nHost: s.test\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n", 400, true},
		{"chunk size overflow", "POST / HTTP/1.1\r\nHost: s.test\r\nTransfer-Encoding: chunked\r\n\r\nfffffffffffffffff\r\nabc\r\n0\r\n\r\n", 400, true},
		{"obs-fold", "GET / HTTP/1.1\r\nHost: s.test\r\nX-A: b\r\n c\r\n\r\n", 400, true},
		{"head of 15 KiB", "GET / HTTP/1.1\r\nHost: s.test\r\n" + big(15<<10) + "\r\n", 200, false},
		{"head over 16 KiB", "GET / HTTP/1.1\r\nHost: s.test\r\n" + big(16<<10) + "\r\n", 431, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			conn, err := net.Dial("tcp", n.http)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			conn.SetDeadline(time.Now().Add(15 * time.Second))
			go io.WriteString(conn, tt.raw)
			br := bufio.NewReader(conn)
			resp, err := http.ReadResponse(br, nil)
			if err != nil {
				t.Fatalf("read answer: %v", err)
			}
			io.Copy(io.Discard, resp.Body)
			if resp.StatusCode != tt.want {
				t.Fatalf("status %d, want %d", resp.StatusCode, tt.want)
			}
			if tt.closed {
				conn.SetReadDeadline(time.Now().Add(5 * time.Second))
				if _, err := br.ReadByte(); err == nil {
					t.Fatal("connection still open after 400")
				} else if ne, ok := err.(net.Error); ok && ne.Timeout() {
					t.Fatal("connection still open after 400 (read timed out)")
				}
			}
		})
	}
}

func TestProxy_slowHeadIsCut(t *testing.T) {
	n := startNode(t)
	conn, err := net.Dial("tcp", n.http)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	start := time.Now()
	io.WriteString(conn, "GET / HTTP/1.1\r\nHost: s.test\r\nX-Slow: ")
	conn.SetReadDeadline(time.Now().Add(60 * time.Second))
	_, err = io.ReadAll(conn)
	if ne, ok := err.(net.Error); ok && ne.Timeout() {
		t.Fatalf("connection with an unfinished head still open after %s", time.Since(start))
	}
	t.Logf("connection cut %s after the partial head", time.Since(start))
	if d := time.Since(start); d < readHeaderTimeout {
		t.Errorf("cut after %s, before the header timeout %s", d, readHeaderTimeout)
	}
}

// startActivated starts proxyd with the API, HTTP and HTTPS sockets passed
// the systemd way, from files the test keeps open across restarts.
type activated struct {
	bin, dir, cfg string
	files         []*os.File
	notify        *daemontest.Notifier
	cmd           *exec.Cmd
	done          chan struct{}
	out           *strings.Builder
	mu            sync.Mutex
}

func newActivated(t *testing.T, dir, httpAddr string) *activated {
	t.Helper()
	a := &activated{bin: daemontest.Build(t, pkg), dir: dir, out: &strings.Builder{}}
	a.cfg = filepath.Join(dir, "stellar.toml")
	cfg := fmt.Sprintf("[node]\nname = \"test\"\nrun_dir = %q\nstate_dir = %q\n%s", filepath.Join(dir, "run"), filepath.Join(dir, "state"), proxyConfig(httpAddr, "127.0.0.1:0"))
	if err := os.WriteFile(a.cfg, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	ul, err := net.Listen("unix", filepath.Join(dir, "run", "proxyd.sock"))
	if err != nil {
		t.Fatal(err)
	}
	ul.(*net.UnixListener).SetUnlinkOnClose(false)
	hl, err := net.Listen("tcp", httpAddr)
	if err != nil {
		t.Fatal(err)
	}
	sl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range []interface{ File() (*os.File, error) }{ul.(*net.UnixListener), hl.(*net.TCPListener), sl.(*net.TCPListener)} {
		f, err := l.File()
		if err != nil {
			t.Fatal(err)
		}
		a.files = append(a.files, f)
	}
	ul.Close()
	hl.Close()
	sl.Close()
	t.Cleanup(func() {
		for _, f := range a.files {
			f.Close()
		}
	})
	a.notify = daemontest.NewNotifier(t, dir)
	return a
}

func (a *activated) start(t *testing.T) {
	t.Helper()
	cmd := exec.Command("/bin/sh", "-c", `LISTEN_PID=$$ exec "$0" "$@"`, a.bin, "--config", a.cfg)
	cmd.ExtraFiles = a.files
	cmd.Env = append(os.Environ(), "NOTIFY_SOCKET="+a.notify.Path, "LISTEN_FDS=3", "LISTEN_FDNAMES=api:http:https")
	var w lockedWriter
	w.b = a.out
	w.mu = &a.mu
	cmd.Stdout, cmd.Stderr = &w, &w
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	a.cmd = cmd
	a.done = make(chan struct{})
	go func() { cmd.Wait(); close(a.done) }()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-a.done
		if t.Failed() {
			a.mu.Lock()
			t.Logf("proxyd output:\n%s", a.out.String())
			a.mu.Unlock()
		}
	})
}

func (a *activated) stop(t *testing.T) {
	t.Helper()
	a.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-a.done:
	case <-time.After(30 * time.Second):
		t.Fatal("proxyd did not stop within 30s")
	}
}

type lockedWriter struct {
	mu *sync.Mutex
	b  *strings.Builder
}

func (w *lockedWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.Write(p)
}

func TestProxy_reloadsAndRestartsUnderLoad(t *testing.T) {
	dir := tempDir(t)
	g := startGossip(t, daemontest.Build(t, "stellar.dev/stellar-gossip"), "n1", nextIP())
	if err := os.Symlink(filepath.Join(g.dir, "run", "gossip.sock"), filepath.Join(dir, "run", "gossip.sock")); err != nil {
		t.Fatal(err)
	}
	httpAddr := freePort(t)
	a := newActivated(t, dir, httpAddr)
	a.start(t)
	api := proxyapi.New(client.Unix("stellar-proxyd", filepath.Join(dir, "run", "proxyd.sock")).WithTimeout(5 * time.Second))
	b1 := startBackend(t, "r1", "127.0.0.40")
	b2 := startBackend(t, "r2", "127.0.0.41")
	g.putJSON("apps/r", appSpec("r", "r.test", "", false, nil))
	putInstance(g, "r", 0, b1.ip(), b1.port())
	waitFor(t, "route r.test", func() bool {
		bs, err := api.Backends(context.Background(), "r.test")
		return err == nil && len(bs) == 1
	})
	c := clientTo(httpAddr)
	l := startLoad(c, "http://r.test/", 4)
	time.Sleep(500 * time.Millisecond)

	st, _ := api.Status(context.Background())
	gen := st.Generation
	for i := 0; i < 10; i++ {
		if i%2 == 0 {
			putInstance(g, "r", 1, b2.ip(), b2.port())
		} else {
			g.delete("nodes/n1/instances/r/web/1")
		}
		waitFor(t, "a route swap", func() bool {
			st, err := api.Status(context.Background())
			return err == nil && st.Generation > gen
		})
		st, _ := api.Status(context.Background())
		gen = st.Generation
		time.Sleep(200 * time.Millisecond)
	}
	reloadFailed, reloadSlowest := l.failed.Load(), time.Duration(l.slowest.Load())
	t.Logf("10 reloads: ok %d failed %d slowest %s", l.ok.Load(), reloadFailed, reloadSlowest)

	for i := 0; i < 3; i++ {
		t.Logf("restart %d at %s", i, time.Now().Format("15:04:05.000"))
		a.stop(t)
		t.Logf("stopped at %s", time.Now().Format("15:04:05.000"))
		a.start(t)
		waitFor(t, "proxyd back", func() bool {
			st, err := api.Status(context.Background())
			return err == nil && st.Synced
		})
		time.Sleep(500 * time.Millisecond)
	}
	l.finish()
	slowest := time.Duration(l.slowest.Load())
	t.Logf("after 3 restarts: ok %d failed %d slowest %s", l.ok.Load(), l.failed.Load(), slowest)
	if l.failed.Load() != 0 {
		t.Errorf("failed requests: %d (%v)", l.failed.Load(), l.errs)
	}
	if slowest > 2*time.Second {
		t.Errorf("slowest request took %s, want under 2s", slowest)
	}
}

func selfSigned(t *testing.T, host string) (certPEM, keyPEM string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: host}, DNSNames: []string{host},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kb, _ := x509.MarshalECPrivateKey(key)
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})), string(pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}))
}

func TestProxy_tlsFromClusterKeys(t *testing.T) {
	n := startNode(t)
	b := startBackend(t, "t", "127.0.0.50")
	n.gossip.putJSON("apps/t", appSpec("t", "t.test", "", true, nil))
	putInstance(n.gossip, "t", 0, b.ip(), b.port())
	certPEM, keyPEM := selfSigned(t, "t.test")
	n.gossip.putJSON("acme/certs/t.test", proxyapi.Certificate{Host: "t.test", CertPEM: certPEM, KeyPEM: keyPEM})
	n.gossip.putJSON("acme/challenges/tok123", proxyapi.Challenge{Token: "tok123", KeyAuth: "tok123.thumb"})
	waitBackends(t, n, "t.test", 1)
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM([]byte(certPEM))

	c := clientTo(n.http)
	var loc string
	waitFor(t, "redirect to https", func() bool {
		resp, err := c.Get("http://t.test/p?q=1")
		if err != nil {
			return false
		}
		resp.Body.Close()
		loc = resp.Header.Get("Location")
		return resp.StatusCode == http.StatusPermanentRedirect
	})
	_, port, _ := net.SplitHostPort(n.https)
	if loc != "https://t.test:"+port+"/p?q=1" {
		t.Errorf("redirect to %q", loc)
	}
	waitFor(t, "the http-01 answer on plain HTTP (not redirected)", func() bool {
		code, body := get(t, c, "http://t.test/.well-known/acme-challenge/tok123")
		return code == 200 && body == "tok123.thumb"
	})
	for _, h2 := range []bool{true, false} {
		t.Run(fmt.Sprintf("h2=%v", h2), func(t *testing.T) {
			tr := &http.Transport{
				TLSClientConfig:   &tls.Config{RootCAs: pool, ServerName: "t.test"},
				ForceAttemptHTTP2: h2,
				DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
					var d net.Dialer
					return d.DialContext(ctx, "tcp", n.https)
				},
			}
			if !h2 {
				tr.TLSNextProto = map[string]func(string, *tls.Conn) http.RoundTripper{}
			}
			hc := &http.Client{Transport: tr, Timeout: 10 * time.Second}
			resp, err := hc.Get("https://t.test/secure")
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			wantMajor := 1
			if h2 {
				wantMajor = 2
			}
			if resp.StatusCode != 200 || resp.ProtoMajor != wantMajor || !strings.Contains(string(body), "xfp=https") {
				t.Errorf("got %d %s %q", resp.StatusCode, resp.Proto, body)
			}
		})
	}
	t.Run("certificate from files after SIGHUP", func(t *testing.T) {
		crt, key := selfSigned(t, "file.test")
		dir := filepath.Join(n.d.Dir, "state", "proxyd", "certs")
		if err := os.MkdirAll(dir, 0o700); err != nil {
			t.Fatal(err)
		}
		os.WriteFile(filepath.Join(dir, "file.test.key"), []byte(key), 0o600)
		os.WriteFile(filepath.Join(dir, "file.test.crt"), []byte(crt), 0o644)
		n.d.Signal(t, syscall.SIGHUP)
		waitFor(t, "file.test served from its file", func() bool {
			c, err := servedCert(n.https, "file.test")
			return err == nil && c.Subject.CommonName == "file.test"
		})
	})

	t.Run("unknown sni", func(t *testing.T) {
		conn, err := tls.Dial("tcp", n.https, &tls.Config{ServerName: "other.test", InsecureSkipVerify: true})
		if err == nil {
			conn.Close()
			t.Fatal("handshake for a host without a certificate succeeded")
		}
	})
}

// TestProxy_servesCachedRoutesWithoutGossip restarts proxyd while
// stellar-gossip is down: the routes come from its state cache.
func TestProxy_servesCachedRoutesWithoutGossip(t *testing.T) {
	dir := tempDir(t)
	g := startGossip(t, daemontest.Build(t, "stellar.dev/stellar-gossip"), "n1", nextIP())
	if err := os.Symlink(filepath.Join(g.dir, "run", "gossip.sock"), filepath.Join(dir, "run", "gossip.sock")); err != nil {
		t.Fatal(err)
	}
	httpAddr := freePort(t)
	a := newActivated(t, dir, httpAddr)
	a.start(t)
	api := proxyapi.New(client.Unix("stellar-proxyd", filepath.Join(dir, "run", "proxyd.sock")).WithTimeout(5 * time.Second))
	b := startBackend(t, "cached", "127.0.0.70")
	g.putJSON("apps/k", appSpec("k", "k.test", "", false, nil))
	putInstance(g, "k", 0, b.ip(), b.port())
	c := clientTo(httpAddr)
	waitFor(t, "route k.test", func() bool {
		resp, err := c.Get("http://k.test/")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == 200
	})
	waitFor(t, "the state cache holds the route", func() bool {
		raw, err := os.ReadFile(filepath.Join(dir, "state", "proxyd", "state.json"))
		return err == nil && strings.Contains(string(raw), "nodes/n1/instances/k/web/0")
	})
	g.cmd.Process.Kill()
	<-g.done
	a.stop(t)
	a.start(t)
	waitFor(t, "proxyd answers its API", func() bool {
		_, err := api.Status(context.Background())
		return err == nil
	})
	st, _ := api.Status(context.Background())
	if st.Synced {
		t.Error("status says synced with stellar-gossip down")
	}
	if code, body := get(t, c, "http://k.test/"); code != 200 || !strings.HasPrefix(body, "cached ") {
		t.Errorf("with gossip down after a restart: %d %q", code, body)
	}
}
