package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/types"
	types100 "github.com/containernetworking/cni/pkg/types/100"

	"stellar.dev/api/gossipapi"
	"stellar.dev/api/netapi"
)

// oneNode starts a netd in its own namespace that has met the cluster (a
// fake gossip with one more member), so its claim is final at once.
func oneNode(t *testing.T, suffix string) *testNode {
	t.Helper()
	bin, _, _ := binaries(t)
	ns := netns(t, suffix)
	g := newFakeGossip()
	g.setMember("solo", "10.78.0.1", gossipapi.StatusAlive)
	g.setMember("ghost", "", gossipapi.StatusAlive)
	n := newNode(t, bin, "solo", ns, "")
	g.serve(t, "solo", n.gossipSocket())
	n.start(t)
	n.waitReady(t)
	return n
}

// withVersion writes a copy of the node's conflist at another cniVersion.
func withVersion(t *testing.T, n *testNode, v string) string {
	t.Helper()
	data, err := os.ReadFile(n.conflist())
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	json.Unmarshal(data, &m)
	m["cniVersion"] = v
	out, _ := json.Marshal(m)
	p := filepath.Join(n.dir, "net-"+v+".conflist")
	os.WriteFile(p, out, 0o644)
	return p
}

func TestCNI_bridgeConformance(t *testing.T) {
	needRoot(t)
	n := oneNode(t, "conf")
	for _, v := range []string{"0.3.1", "0.4.0", "1.0.0"} {
		t.Run(v, func(t *testing.T) {
			conf := withVersion(t, n, v)
			ctr := "c" + strings.ReplaceAll(v, ".", "")
			ns := netns(t, ctr)
			res := cniRun(t, n, conf, "add", ctr, "/run/netns/"+ns, "eth0")
			if !strings.Contains(res, `"cniVersion":"`+v+`"`) {
				t.Fatalf("ADD result is not version %s: %s", v, res)
			}
			if out := inNS(t, ns, "ip", "-4", "addr", "show", "eth0"); !strings.Contains(out, "172.16.0.") {
				t.Fatalf("container eth0: %s", out)
			}
			if out := inNS(t, ns, "ip", "route"); !strings.Contains(out, "default via 172.16.0.1") {
				t.Fatalf("container routes: %s", out)
			}
			if v != "0.3.1" {
				cniRun(t, n, conf, "check", ctr, "/run/netns/"+ns, "eth0")
			}
			cniRun(t, n, conf, "del", ctr, "/run/netns/"+ns, "eth0")
			cniRun(t, n, conf, "del", ctr, "/run/netns/"+ns, "eth0") // DEL twice
			cniRun(t, n, conf, "del", "never-added-"+ctr, "/run/netns/"+ns, "eth0")
			if l, _ := n.c.Allocations(context.Background()); len(l) != 0 {
				t.Fatalf("leaked after DEL: %v", l)
			}
		})
	}
}

// TestCNI_ipamAloneEveryVersion drives stellar-cni-ipam with libcni as the
// only plugin of the list, for every spec version up to 1.1.0.
func TestCNI_ipamAloneEveryVersion(t *testing.T) {
	needRoot(t)
	n := oneNode(t, "ipam")
	_, plugins, _ := binaries(t)
	ns := netns(t, "ipamctr")
	cni := libcni.NewCNIConfigWithCacheDir([]string{plugins}, t.TempDir(), nil)
	ctx := context.Background()
	for _, v := range []string{"0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"} {
		t.Run(v, func(t *testing.T) {
			list, err := libcni.ConfListFromBytes([]byte(fmt.Sprintf(`{"cniVersion":%q,"name":"ipam-only-%s","plugins":[{"type":"stellar-cni-ipam","ipam":{"type":"stellar-cni-ipam","socket":%q}}]}`, v, v, n.socket())))
			if err != nil {
				t.Fatal(err)
			}
			rt := &libcni.RuntimeConf{ContainerID: "v" + v, NetNS: "/run/netns/" + ns, IfName: "eth0"}
			r1, err := cni.AddNetworkList(ctx, list, rt)
			if err != nil {
				t.Fatalf("ADD: %v", err)
			}
			r2, err := cni.AddNetworkList(ctx, list, rt)
			if err != nil {
				t.Fatalf("repeated ADD: %v", err)
			}
			c1, _ := types100.NewResultFromResult(r1)
			c2, _ := types100.NewResultFromResult(r2)
			if c1 == nil || len(c1.IPs) != 1 || c1.IPs[0].Address.String() != c2.IPs[0].Address.String() {
				t.Fatalf("repeated ADD gave %v then %v", r1, r2)
			}
			if r1.Version() != v {
				t.Fatalf("result version %s, want %s", r1.Version(), v)
			}
			if v >= "0.4.0" {
				if err := cni.CheckNetworkList(ctx, list, rt); err != nil {
					t.Fatalf("CHECK: %v", err)
				}
			}
			if v == "1.1.0" {
				// An allocation nobody has an attachment for is collected.
				if _, err := n.c.Allocate(ctx, netapi.AllocateRequest{ContainerID: "leaked", IfName: "eth0"}); err != nil {
					t.Fatal(err)
				}
				if err := cni.GCNetworkList(ctx, list, &libcni.GCArgs{ValidAttachments: []types.GCAttachment{{ContainerID: rt.ContainerID, IfName: "eth0"}}}); err != nil {
					t.Fatalf("GC: %v", err)
				}
				l, _ := n.c.Allocations(ctx)
				if len(l) != 1 || l[0].ContainerID != rt.ContainerID {
					t.Fatalf("after GC: %v, want only %s", l, rt.ContainerID)
				}
			}
			if err := cni.DelNetworkList(ctx, list, rt); err != nil {
				t.Fatalf("DEL: %v", err)
			}
			if err := cni.DelNetworkList(ctx, list, rt); err != nil {
				t.Fatalf("DEL twice: %v", err)
			}
		})
	}
	if l, _ := n.c.Allocations(ctx); len(l) != 0 {
		t.Fatalf("leaked: %v", l)
	}
}

// pluginExec runs stellar-cni-ipam once as its own process.
func pluginExec(plugins, cmd, cid, netnsPath, conf string) ([]byte, error) {
	c := exec.Command(filepath.Join(plugins, "stellar-cni-ipam"))
	c.Env = []string{"CNI_COMMAND=" + cmd, "CNI_CONTAINERID=" + cid, "CNI_NETNS=" + netnsPath, "CNI_IFNAME=eth0", "CNI_PATH=" + plugins}
	c.Stdin = strings.NewReader(conf)
	var out bytes.Buffer
	c.Stdout = &out
	c.Stderr = &out
	err := c.Run()
	return out.Bytes(), err
}

func TestIPAM_200ParallelPluginProcesses(t *testing.T) {
	needRoot(t)
	n := oneNode(t, "par")
	_, plugins, _ := binaries(t)
	ns := netns(t, "parctr")
	conf := fmt.Sprintf(`{"cniVersion":"1.0.0","name":"stellar","type":"stellar-cni-ipam","ipam":{"type":"stellar-cni-ipam","socket":%q}}`, n.socket())
	const N = 200
	ips := make([]string, N)
	errs := make([]error, N)
	var wg sync.WaitGroup
	for i := range N {
		wg.Add(1)
		go func() {
			defer wg.Done()
			out, err := pluginExec(plugins, "ADD", fmt.Sprint("par-", i), "/run/netns/"+ns, conf)
			if err != nil {
				errs[i] = fmt.Errorf("%v: %s", err, out)
				return
			}
			var r types100.Result
			if err := json.Unmarshal(out, &r); err != nil || len(r.IPs) != 1 {
				errs[i] = fmt.Errorf("result %s: %v", out, err)
				return
			}
			ips[i] = r.IPs[0].Address.String()
		}()
	}
	wg.Wait()
	seen := map[string]int{}
	for i := range N {
		if errs[i] != nil {
			t.Fatalf("ADD %d: %v", i, errs[i])
		}
		if j, dup := seen[ips[i]]; dup {
			t.Fatalf("duplicate IP %s for %d and %d", ips[i], i, j)
		}
		seen[ips[i]] = i
	}
	if l, _ := n.c.Allocations(context.Background()); len(l) != N {
		t.Fatalf("netd lists %d allocations, want %d", len(l), N)
	}
	for i := range N {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if out, err := pluginExec(plugins, "DEL", fmt.Sprint("par-", i), "/run/netns/"+ns, conf); err != nil {
				errs[i] = fmt.Errorf("%v: %s", err, out)
			}
		}()
	}
	wg.Wait()
	for i := range N {
		if errs[i] != nil {
			t.Fatalf("DEL %d: %v", i, errs[i])
		}
	}
	if l, _ := n.c.Allocations(context.Background()); len(l) != 0 {
		t.Fatalf("leaked %d IPs after 200 DELs", len(l))
	}
}

// TestIPAM_kill9DuringLoop kills netd with SIGKILL at random moments of a
// 1000-call ADD/DEL loop (longer if netd was killed fewer than 10 times by
// then) and restarts it: no IP is ever held twice, and what netd lists
// afterwards is exactly what the loop holds.
func TestIPAM_kill9DuringLoop(t *testing.T) {
	needRoot(t)
	n := oneNode(t, "kill")
	ctx := context.Background()
	const calls, window, minKills = 1000, 20, 10
	holds := map[string]string{} // container -> IP, as the loop knows it
	var order []string
	retry := func(what string, fn func() error) {
		deadline := time.Now().Add(60 * time.Second)
		for {
			err := fn()
			if err == nil {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: %v", what, err)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	stop := make(chan struct{})
	var killed atomic.Int32
	var killerDone sync.WaitGroup
	killerDone.Add(1)
	go func() {
		defer killerDone.Done()
		for {
			select {
			case <-stop:
				return
			case <-time.After(time.Duration(50+rand.IntN(300)) * time.Millisecond):
			}
			n.kill9()
			n.start(t)
			killed.Add(1)
		}
	}()
	loopDeadline := time.Now().Add(5 * time.Minute)
	for i := 0; i < calls || (killed.Load() < minKills && time.Now().Before(loopDeadline)); i++ {
		if i%2 == 0 || len(order) < window {
			cid := fmt.Sprint("k-", i)
			var a netapi.Allocation
			retry("allocate "+cid, func() (err error) {
				a, err = n.c.Allocate(ctx, netapi.AllocateRequest{ContainerID: cid, IfName: "eth0"})
				return err
			})
			for c, ip := range holds {
				if ip == a.Address {
					t.Fatalf("call %d: %s got %s, which %s holds", i, cid, a.Address, c)
				}
			}
			holds[cid] = a.Address
			order = append(order, cid)
		} else {
			cid := order[0]
			order = order[1:]
			retry("release "+cid, func() error {
				_, err := n.c.Release(ctx, netapi.ReleaseRequest{ContainerID: cid, IfName: "eth0"})
				return err
			})
			delete(holds, cid)
		}
	}
	close(stop)
	killerDone.Wait()
	if killed.Load() < minKills {
		t.Fatalf("netd was killed only %d times during the loop", killed.Load())
	}
	t.Logf("netd killed %d times during the loop", killed.Load())
	var l []netapi.Allocation
	retry("list", func() (err error) { l, err = n.c.Allocations(ctx); return err })
	got := map[string]string{}
	ipSeen := map[string]bool{}
	for _, a := range l {
		if ipSeen[a.Address] {
			t.Fatalf("duplicate IP %s after restart", a.Address)
		}
		ipSeen[a.Address] = true
		got[a.ContainerID] = a.Address
	}
	if len(got) != len(holds) {
		t.Fatalf("netd holds %d allocations, the loop %d", len(got), len(holds))
	}
	for c, ip := range holds {
		if got[c] != ip {
			t.Fatalf("%s: netd says %q, the loop got %q", c, got[c], ip)
		}
	}
}
