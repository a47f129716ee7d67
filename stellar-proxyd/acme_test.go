package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"stellar.dev/api/client"
	"stellar.dev/api/proxyapi"
	"stellar.dev/daemon/daemontest"
	"stellar.dev/stellar-proxyd/internal/acme"
)

const pebbleVersion = "v2.10.1"

var (
	pebbleOnce sync.Once
	pebbleBin  string
	pebbleErr  error
)

// buildPebble installs pebble and pebble-challtestsrv from their Go module
// (never added to the project's go.mod) into a temp dir, once.
func buildPebble(t *testing.T) (bin, modDir string) {
	t.Helper()
	pebbleOnce.Do(func() {
		dir, err := os.MkdirTemp("", "pebble-")
		if err != nil {
			pebbleErr = err
			return
		}
		cmd := exec.Command("go", "install",
			"github.com/letsencrypt/pebble/v2/cmd/pebble@"+pebbleVersion,
			"github.com/letsencrypt/pebble/v2/cmd/pebble-challtestsrv@"+pebbleVersion)
		cmd.Env = append(os.Environ(), "GOBIN="+dir, "GOFLAGS=-mod=mod", "GOWORK=off", "CGO_ENABLED=0")
		cmd.Dir = dir
		if out, err := cmd.CombinedOutput(); err != nil {
			pebbleErr = fmt.Errorf("go install pebble: %v\n%s", err, out)
			return
		}
		pebbleBin = dir
	})
	if pebbleErr != nil {
		t.Skipf("pebble cannot be built (offline module cache?): SKIPPED: %v", pebbleErr)
	}
	out, err := exec.Command("go", "env", "GOMODCACHE").Output()
	if err != nil {
		t.Fatal(err)
	}
	return pebbleBin, filepath.Join(strings.TrimSpace(string(out)), "github.com/letsencrypt/pebble/v2@"+pebbleVersion)
}

type pebble struct {
	dir    string // the ACME directory URL
	rootCA string // file of the CA that signs pebble's own HTTPS
}

// startPebble runs pebble (validating on httpPort/tlsPort at the address
// challtestsrv gives every name: ip) with certificates valid for validity.
func startPebble(t *testing.T, ip string, httpPort, tlsPort string, validity time.Duration) *pebble {
	t.Helper()
	bin, mod := buildPebble(t)
	tmp := tempDir(t)
	dnsAddr := freePort(t)
	mgmt := freePort(t)
	run := func(name string, env []string, args ...string) {
		cmd := exec.Command(filepath.Join(bin, name), args...)
		cmd.Dir = mod
		cmd.Env = append(os.Environ(), env...)
		out := &strings.Builder{}
		var mu sync.Mutex
		cmd.Stdout, cmd.Stderr = &lockedWriter{mu: &mu, b: out}, &lockedWriter{mu: &mu, b: out}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			cmd.Process.Kill()
			cmd.Wait()
			if t.Failed() {
				mu.Lock()
				t.Logf("%s output:\n%s", name, out.String())
				mu.Unlock()
			}
		})
	}
	run("pebble-challtestsrv", nil, "-dnsserver", dnsAddr, "-http01", "", "-https01", "", "-tlsalpn01", "", "-doh", "",
		"-management", mgmt, "-defaultIPv4", ip, "-defaultIPv6", "")
	listen := freePort(t)
	cfg := map[string]any{"pebble": map[string]any{
		"listenAddress": listen, "managementListenAddress": freePort(t),
		"certificate": filepath.Join(mod, "test/certs/localhost/cert.pem"), "privateKey": filepath.Join(mod, "test/certs/localhost/key.pem"),
		"httpPort": mustAtoi(httpPort), "tlsPort": mustAtoi(tlsPort), "ocspResponderURL": "", "externalAccountBindingRequired": false,
		"retryAfter": map[string]int{"authz": 1, "order": 1}, "keyAlgorithm": "ecdsa",
		"profiles": map[string]any{"default": map[string]any{"description": "test", "validityPeriod": int(validity.Seconds())}},
	}}
	raw, _ := json.Marshal(cfg)
	cfgPath := filepath.Join(tmp, "pebble.json")
	if err := os.WriteFile(cfgPath, raw, 0o644); err != nil {
		t.Fatal(err)
	}
	run("pebble", []string{"PEBBLE_VA_NOSLEEP=1", "PEBBLE_WFE_NONCEREJECT=0", "PEBBLE_AUTHZREUSE=0"}, "-config", cfgPath, "-dnsserver", dnsAddr)
	p := &pebble{dir: "https://" + listen + "/dir", rootCA: filepath.Join(mod, "test/certs/pebble.minica.pem")}
	pem, err := os.ReadFile(p.rootCA)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pem)
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}, Timeout: 5 * time.Second}
	waitFor(t, "pebble serves its directory", func() bool {
		resp, err := hc.Get(p.dir)
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == 200
	})
	return p
}

func mustAtoi(s string) int {
	var n int
	fmt.Sscan(s, &n)
	return n
}

// namedProxy starts proxyd as node g.name (the same [node] name as its
// stellar-gossip, as on a real node) with extra [proxy] keys.
func namedProxy(t *testing.T, g *gossipNode, httpAddr, httpsAddr, extra string, env ...string) (*node, func() string) {
	t.Helper()
	dir := tempDir(t)
	cfg := fmt.Sprintf("[node]\nname = %q\nrun_dir = %q\nstate_dir = %q\nlog_level = \"debug\"\n%s%s\n",
		g.name, filepath.Join(g.dir, "run"), filepath.Join(dir, "state"), proxyConfig(httpAddr, httpsAddr), extra)
	cfgPath := filepath.Join(dir, "stellar.toml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(daemontest.Build(t, pkg), "--config", cfgPath)
	cmd.Env = append(os.Environ(), env...)
	out := &strings.Builder{}
	var mu sync.Mutex
	cmd.Stdout, cmd.Stderr = &lockedWriter{mu: &mu, b: out}, &lockedWriter{mu: &mu, b: out}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	output := func() string { mu.Lock(); defer mu.Unlock(); return out.String() }
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-done
		if t.Failed() {
			o := output()
			var keep []string
			for _, l := range strings.Split(o, "\n") {
				if !strings.Contains(l, "log=access") {
					keep = append(keep, l)
				}
			}
			t.Logf("proxyd %s output:\n%s", g.name, strings.Join(keep, "\n"))
		}
	})
	n := &node{http: httpAddr, https: httpsAddr, gossip: g}
	n.api = proxyapi.New(client.Unix("stellar-proxyd", filepath.Join(g.dir, "run", "proxyd.sock")).WithTimeout(5 * time.Second))
	waitFor(t, "proxyd on "+g.name+" reads the state", func() bool {
		st, err := n.api.Status(context.Background())
		return err == nil && st.Synced
	})
	return n, output
}

// servedCert returns the leaf certificate a proxy presents for host.
func servedCert(addr, host string) (*x509.Certificate, error) {
	d := &net.Dialer{Timeout: 5 * time.Second}
	c, err := tls.DialWithDialer(d, "tcp", addr, &tls.Config{ServerName: host, InsecureSkipVerify: true})
	if err != nil {
		return nil, err
	}
	defer c.Close()
	return c.ConnectionState().PeerCertificates[0], nil
}

func joinedPair(t *testing.T, a, b string) (*gossipNode, *gossipNode) {
	t.Helper()
	bin := daemontest.Build(t, "stellar.dev/stellar-gossip")
	g1 := startGossip(t, bin, "q1", a)
	g2 := startGossip(t, bin, "q2", b)
	joinCluster(t, g1, g2)
	for _, g := range []*gossipNode{g1, g2} {
		waitFor(t, g.name+" sees two alive members", func() bool {
			ms, err := g.g.Members(context.Background())
			alive := 0
			for _, m := range ms {
				if m.Status == "alive" {
					alive++
				}
			}
			return err == nil && alive == 2
		})
	}
	return g1, g2
}

// TestACME_pebbleTwoNodes: one order per host across the cluster (placed
// by the rendezvous owner), validated by the CA at the other node, both
// nodes terminating TLS with the same certificate, renewed before expiry.
func TestACME_pebbleTwoNodes(t *testing.T) {
	const host = "secure.test"
	g1, g2 := joinedPair(t, "127.0.8.1", "127.0.8.2")
	owner := acme.Owner(host, []string{"q1", "q2"})
	validator := map[string]*gossipNode{"q1": g2, "q2": g1}[owner] // the CA reaches the other node
	_, httpPort, _ := net.SplitHostPort(freePort(t))
	_, httpsPort, _ := net.SplitHostPort(freePort(t))
	peb := startPebble(t, validator.ip, httpPort, httpsPort, 30*time.Second)
	extra := fmt.Sprintf("acme_directory = %q\nacme_email = \"ops@secure.test\"\n", peb.dir)
	env := "SSL_CERT_FILE=" + peb.rootCA
	outputs := map[string]func() string{}
	nodes := map[string]*node{}
	for _, g := range []*gossipNode{g1, g2} {
		n, out := namedProxy(t, g, g.ip+":"+httpPort, g.ip+":"+httpsPort, extra, env)
		nodes[g.name], outputs[g.name] = n, out
	}
	b := startBackend(t, "sec", "127.0.8.20")
	g1.putJSON("apps/sec", appSpec("sec", host, "", true, nil))
	putInstance(g1, "sec", 0, b.ip(), b.port())

	var first *x509.Certificate
	waitFor(t, "both nodes serve a pebble certificate for "+host, func() bool {
		var serials []string
		for _, n := range nodes {
			c, err := servedCert(n.https, host)
			if err != nil || !strings.Contains(c.Issuer.CommonName, "Pebble") {
				return false
			}
			first = c
			serials = append(serials, c.SerialNumber.String())
		}
		return serials[0] == serials[1]
	})
	t.Logf("issued serial %s, not after %s, owner %s, validated at %s", first.SerialNumber, first.NotAfter.Format(time.TimeOnly), owner, validator.name)
	for name, out := range outputs {
		n := strings.Count(out(), `msg="acme order placed"`)
		if name == owner && n != 1 || name != owner && n != 0 {
			t.Errorf("node %s placed %d orders (owner %s)", name, n, owner)
		}
	}

	// HTTPS through the node that did not order, and the redirect.
	other := nodes[validator.name]
	tr := &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}, ForceAttemptHTTP2: true,
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "tcp", other.https)
		}}
	resp, err := (&http.Client{Transport: tr, Timeout: 10 * time.Second}).Get("https://" + host + "/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 || resp.ProtoMajor != 2 {
		t.Errorf("https via %s: %d %s", validator.name, resp.StatusCode, resp.Proto)
	}
	if code, _ := get(t, clientTo(other.http), "http://"+host+"/"); code != http.StatusPermanentRedirect {
		t.Errorf("http for a TLS host: %d, want 308", code)
	}

	waitFor(t, "the certificate is renewed before it expires", func() bool {
		c, err := servedCert(other.https, host)
		return err == nil && c.SerialNumber.Cmp(first.SerialNumber) != 0 && time.Now().Before(first.NotAfter)
	})
}

// TestACME_tlsALPN01 makes HTTP-01 fail (the CA validates on a port with
// no listener), so the next attempt answers TLS-ALPN-01.
func TestACME_tlsALPN01(t *testing.T) {
	const host = "alpn.test"
	bin := daemontest.Build(t, "stellar.dev/stellar-gossip")
	g := startGossip(t, bin, "a1", "127.0.8.5")
	_, httpsPort, _ := net.SplitHostPort(freePort(t))
	_, deadPort, _ := net.SplitHostPort(freePort(t))
	peb := startPebble(t, g.ip, deadPort, httpsPort, 24*time.Hour)
	extra := fmt.Sprintf("acme_directory = %q\n", peb.dir)
	n, out := namedProxy(t, g, g.ip+":"+freePortOn(t, g.ip), g.ip+":"+httpsPort, extra, "SSL_CERT_FILE="+peb.rootCA)
	b := startBackend(t, "alpn", "127.0.8.21")
	g.putJSON("apps/alpn", appSpec("alpn", host, "", true, nil))
	putInstance(g, "alpn", 0, b.ip(), b.port())
	waitFor(t, "a pebble certificate for "+host, func() bool {
		c, err := servedCert(n.https, host)
		return err == nil && strings.Contains(c.Issuer.CommonName, "Pebble")
	})
	if !strings.Contains(out(), `challenge=tls-alpn-01`) {
		t.Error("no tls-alpn-01 order in the log")
	}
}

func freePortOn(t *testing.T, ip string) string {
	t.Helper()
	l, err := net.Listen("tcp", ip+":0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	_, p, _ := net.SplitHostPort(l.Addr().String())
	return p
}

// joinCluster joins g2 to g1's cluster with a join token. A join that
// fails is tried again with a new token (a node that just started may not
// take a join yet).
func joinCluster(t *testing.T, g1, g2 *gossipNode) {
	t.Helper()
	var last error
	waitFor(t, g2.name+" joins "+g1.name, func() bool {
		var tok struct {
			Token string `json:"token"`
		}
		if last = g1.raw.Do(context.Background(), http.MethodPost, "/v1/cluster/tokens", map[string]any{"ttl": "1h", "uses": 1}, &tok); last != nil {
			return false
		}
		if last = g2.raw.Do(context.Background(), http.MethodPost, "/v1/cluster/join", map[string]any{"token": tok.Token}, nil); last != nil {
			t.Logf("join %s: %v (trying again)", g2.name, last)
			time.Sleep(500 * time.Millisecond)
			return false
		}
		return true
	})
}
