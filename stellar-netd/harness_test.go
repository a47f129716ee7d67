package main

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
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"stellar.dev/api/client"
	"stellar.dev/api/gossipapi"
	"stellar.dev/api/netapi"
	"stellar.dev/daemon/daemontest"
)

// needRoot skips a test that changes networking when not root.
func needRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("stellar-netd integration test needs root (network namespaces, netlink): SKIPPED — run as root to test the real data path")
	}
	for _, tool := range []string{"ip", "nft", "unshare"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s is missing (make deps installs it): %v", tool, err)
		}
	}
}

// fakeGossip is a stand-in of stellar-gossip's local API (members, state,
// subnet tag) shared by several test nodes, one socket each.
type fakeGossip struct {
	mu      sync.Mutex
	members map[string]*gossipapi.Member
	state   map[string]gossipapi.Entry
	rev     uint64
}

func newFakeGossip() *fakeGossip {
	return &fakeGossip{members: map[string]*gossipapi.Member{}, state: map[string]gossipapi.Entry{}}
}

func (f *fakeGossip) setMember(name, addr, status string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	m, ok := f.members[name]
	if !ok {
		m = &gossipapi.Member{Name: name, Port: 7946}
		f.members[name] = m
	}
	m.Addr, m.Status = addr, status
}

// serve answers for node self on the Unix socket path.
func (f *fakeGossip) serve(t *testing.T, self, path string) {
	t.Helper()
	os.MkdirAll(filepath.Dir(path), 0o755)
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	js := func(w http.ResponseWriter, v any) {
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(v)
	}
	mux.HandleFunc("GET /v1/members", func(w http.ResponseWriter, r *http.Request) {
		f.mu.Lock()
		out := []gossipapi.Member{}
		for _, m := range f.members {
			out = append(out, *m)
		}
		f.mu.Unlock()
		sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
		js(w, out)
	})
	mux.HandleFunc("GET /v1/state", func(w http.ResponseWriter, r *http.Request) {
		p := r.URL.Query().Get("prefix")
		f.mu.Lock()
		l := gossipapi.List{Rev: f.rev, Entries: []gossipapi.Entry{}}
		for k, e := range f.state {
			if strings.HasPrefix(k, p) {
				l.Entries = append(l.Entries, e)
			}
		}
		f.mu.Unlock()
		js(w, l)
	})
	mux.HandleFunc("PUT /v1/state/{key...}", func(w http.ResponseWriter, r *http.Request) {
		var raw json.RawMessage
		json.NewDecoder(r.Body).Decode(&raw)
		f.mu.Lock()
		f.rev++
		k := r.PathValue("key")
		f.state[k] = gossipapi.Entry{Key: k, Value: raw, Version: fmt.Sprint(f.rev), Rev: f.rev, Owner: self}
		res := gossipapi.PutResult{Key: k, Version: fmt.Sprint(f.rev), Rev: f.rev}
		f.mu.Unlock()
		js(w, res)
	})
	mux.HandleFunc("PUT /v1/tags/subnet", func(w http.ResponseWriter, r *http.Request) {
		var st gossipapi.SubnetTag
		json.NewDecoder(r.Body).Decode(&st)
		f.mu.Lock()
		if m, ok := f.members[self]; ok {
			m.Subnet = st.Subnet
		}
		f.mu.Unlock()
		js(w, struct{}{})
	})
	mux.HandleFunc("GET /v1/watch", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/x-ndjson")
		w.WriteHeader(http.StatusOK)
		w.(http.Flusher).Flush()
		<-r.Context().Done()
	})
	srv := &http.Server{Handler: mux}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
}

// netns makes a network namespace for the test and deletes it afterwards.
func netns(t *testing.T, suffix string) string {
	t.Helper()
	name := fmt.Sprintf("stn-%d-%s", os.Getpid(), suffix)
	exec.Command("ip", "netns", "del", name).Run()
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add %s: %v: %s", name, err, out)
	}
	t.Cleanup(func() { exec.Command("ip", "netns", "del", name).Run() })
	inNS(t, name, "ip", "link", "set", "lo", "up")
	return name
}

func inNS(t *testing.T, ns string, args ...string) string {
	t.Helper()
	out, err := exec.Command("ip", append([]string{"netns", "exec", ns}, args...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("in %s: %s: %v: %s", ns, strings.Join(args, " "), err, out)
	}
	return string(out)
}

func tryNS(ns string, args ...string) (string, error) {
	out, err := exec.Command("ip", append([]string{"netns", "exec", ns}, args...)...).CombinedOutput()
	return string(out), err
}

var (
	buildOnce sync.Once
	binIPAM   string
	binCNIRun string
	buildErr  error
	binDir    string
)

// binaries builds stellar-netd, stellar-cni-ipam and cnirun once.
func binaries(t *testing.T) (netd, pluginDir, cnirun string) {
	t.Helper()
	netd = daemontest.Build(t, "stellar.dev/stellar-netd")
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "stellar-netd-test-bin-")
		if err != nil {
			buildErr = err
			return
		}
		binDir = dir
		binIPAM = filepath.Join(dir, "plugins", "stellar-cni-ipam")
		binCNIRun = filepath.Join(dir, "cnirun")
		for pkg, out := range map[string]string{"stellar.dev/stellar-cni-ipam": binIPAM, "stellar.dev/stellar-netd/internal/cnirun": binCNIRun} {
			if o, err := exec.Command("go", "build", "-o", out, pkg).CombinedOutput(); err != nil {
				buildErr = fmt.Errorf("build %s: %v: %s", pkg, err, o)
				return
			}
		}
		for _, p := range []string{"bridge", "portmap", "loopback", "host-local"} {
			if err := os.Symlink(filepath.Join("/usr/lib/cni", p), filepath.Join(dir, "plugins", p)); err != nil {
				buildErr = err
				return
			}
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	if _, err := os.Stat("/usr/lib/cni/bridge"); err != nil {
		t.Fatalf("Debian's CNI plugins are missing (make deps installs containernetworking-plugins): %v", err)
	}
	return netd, filepath.Dir(binIPAM), binCNIRun
}

// testNode is one netd in its own network namespace.
type testNode struct {
	name, ns, dir string
	cfgPath       string
	bin           string
	cmd           *exec.Cmd
	logs          *bytes.Buffer
	logMu         *sync.Mutex
	done          chan struct{}
	c             *netapi.Client
}

type syncWriter struct {
	mu *sync.Mutex
	b  *bytes.Buffer
}

func (w syncWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.Write(p)
}

func newNode(t *testing.T, bin, name, ns, extra string) *testNode {
	t.Helper()
	dir := t.TempDir()
	n := &testNode{name: name, ns: ns, dir: dir, bin: bin, logs: &bytes.Buffer{}, logMu: &sync.Mutex{}}
	n.cfgPath = filepath.Join(dir, "stellar.toml")
	cfg := fmt.Sprintf("[node]\nname = %q\nrun_dir = %q\nstate_dir = %q\nlog_level = \"debug\"\n[network]\ncni_conf_dir = %q\n%s\n",
		name, filepath.Join(dir, "run"), filepath.Join(dir, "state"), filepath.Join(dir, "cni"), extra)
	if err := os.WriteFile(n.cfgPath, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	os.MkdirAll(filepath.Join(dir, "run"), 0o755)
	n.c = netapi.New(client.Unix("stellar-netd", n.socket()).WithTimeout(10 * time.Second))
	t.Cleanup(func() {
		n.stop()
		if t.Failed() {
			t.Logf("logs of node %s:\n%s", name, n.output())
		}
	})
	return n
}

func (n *testNode) socket() string       { return filepath.Join(n.dir, "run", "netd.sock") }
func (n *testNode) gossipSocket() string { return filepath.Join(n.dir, "run", "gossip.sock") }
func (n *testNode) conflist() string     { return filepath.Join(n.dir, "cni", CNIConfName) }

func (n *testNode) output() string {
	n.logMu.Lock()
	defer n.logMu.Unlock()
	return n.logs.String()
}

func (n *testNode) start(t *testing.T) {
	t.Helper()
	cmd := exec.Command("ip", "netns", "exec", n.ns, n.bin, "--config", n.cfgPath)
	w := syncWriter{n.logMu, n.logs}
	cmd.Stdout, cmd.Stderr = w, w
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	n.cmd = cmd
	n.done = make(chan struct{})
	go func() { cmd.Wait(); close(n.done) }()
}

func (n *testNode) stop() {
	if n.cmd == nil {
		return
	}
	select {
	case <-n.done:
	default:
		n.cmd.Process.Signal(os.Interrupt)
		select {
		case <-n.done:
		case <-time.After(20 * time.Second):
			n.cmd.Process.Kill()
			<-n.done
		}
	}
	n.cmd = nil
}

func (n *testNode) kill9() {
	n.cmd.Process.Kill()
	<-n.done
	n.cmd = nil
}

// waitReady polls until the node's claim is final and its host
// networking is set up.
func (n *testNode) waitReady(t *testing.T) netapi.Status {
	t.Helper()
	var st netapi.Status
	waitFor(t, 60*time.Second, "node "+n.name+" claims a subnet and sets up its host networking", func() bool {
		var err error
		st, err = n.c.Status(context.Background())
		return err == nil && st.ClaimStatus == netapi.StatusClaimed && st.HostReady
	})
	return st
}

// waitFor polls cond every 100ms until it holds or the timeout passes.
func waitFor(t *testing.T, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting until %s", within, what)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func allocReq(cid string) netapi.AllocateRequest {
	return netapi.AllocateRequest{ContainerID: cid, IfName: "eth0"}
}
