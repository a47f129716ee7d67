package proxy

import (
	"errors"
	"testing"
	"time"

	"stellar.dev/api/proxyapi"
	"stellar.dev/stellar-proxyd/internal/route"
)

func testRoute(balance string, pools ...[]string) (*liveRoute, map[string]*backend) {
	lr := &liveRoute{r: &route.Route{Host: "h", Path: "/", Balance: balance}}
	all := map[string]*backend{}
	for i, addrs := range pools {
		lp := &livePool{p: &route.Pool{App: "a", Service: string(rune('a' + i)), Weight: 100}}
		for _, a := range addrs {
			b := newBackend(route.Backend{Addr: a})
			all[a] = b
			lp.backends = append(lp.backends, b)
		}
		lr.pools = append(lr.pools, lp)
	}
	return lr, all
}

func TestPick_roundRobinSkipsUnavailable(t *testing.T) {
	lr, bs := testRoute(proxyapi.BalanceRoundRobin, []string{"x", "y", "z"})
	bs["y"].healthy.Store(false)
	seen := map[string]int{}
	for i := 0; i < 100; i++ {
		seen[lr.pick(nil).spec.Addr]++
	}
	if seen["y"] != 0 || seen["x"] != 50 || seen["z"] != 50 {
		t.Errorf("picks %v", seen)
	}
}

func TestPick_leastConnections(t *testing.T) {
	lr, bs := testRoute(proxyapi.BalanceLeastConn, []string{"x", "y", "z"})
	bs["x"].active.Store(5)
	bs["z"].active.Store(2)
	for i := 0; i < 10; i++ {
		if got := lr.pick(nil).spec.Addr; got != "y" {
			t.Fatalf("picked %s, want y (no requests in flight)", got)
		}
	}
}

func TestPick_weights(t *testing.T) {
	lr, _ := testRoute(proxyapi.BalanceRoundRobin, []string{"v1"}, []string{"v2"})
	lr.pools[0].p.Weight, lr.pools[1].p.Weight = 90, 10
	n2 := 0
	for i := 0; i < 10000; i++ {
		if lr.pick(nil).spec.Addr == "v2" {
			n2++
		}
	}
	if n2 < 820 || n2 > 1180 {
		t.Errorf("v2 picked %d of 10000, want about 1000", n2)
	}
	lr.pools[1].p.Weight = 0
	for i := 0; i < 100; i++ {
		if lr.pick(nil).spec.Addr != "v1" {
			t.Fatal("weight 0 got traffic while v1 is up")
		}
	}
}

func TestPick_failover(t *testing.T) {
	lr, bs := testRoute(proxyapi.BalanceRoundRobin, []string{"v1"}, []string{"v2"})
	lr.pools[1].p.Weight = 0
	bs["v1"].reportError(errors.New("refused"), true)
	if got := lr.pick(nil); got == nil || got.spec.Addr != "v2" {
		t.Fatalf("with v1 ejected picked %v, want the weight-0 pool", got)
	}
	if h, _ := bs["v1"].state(); h != proxyapi.HealthEjected {
		t.Errorf("v1 is %s, want ejected", h)
	}
	// Everything unhealthy: still try what is not ejected.
	bs["v2"].healthy.Store(false)
	if got := lr.pick(nil); got == nil || got.spec.Addr != "v2" {
		t.Fatalf("all unhealthy: picked %v, want v2 (not ejected)", got)
	}
	if got := lr.pick([]*backend{bs["v2"]}); got != nil {
		t.Fatalf("with v2 tried and v1 ejected picked %v", got.spec.Addr)
	}
}

func TestBackend_ejectionGrowsAndEnds(t *testing.T) {
	b := newBackend(route.Backend{Addr: "x"})
	for i := 0; i < ejectAfter-1; i++ {
		b.reportError(errors.New("reset"), false)
	}
	if !b.available(time.Now().UnixNano()) {
		t.Fatal("ejected before the threshold")
	}
	b.reportError(errors.New("reset"), false)
	first := time.Duration(b.ejectEnd.Load() - time.Now().UnixNano())
	if b.available(time.Now().UnixNano()) || first > ejectFor {
		t.Fatalf("not ejected for about %s: %s", ejectFor, first)
	}
	b.reportError(errors.New("refused"), true)
	second := time.Duration(b.ejectEnd.Load() - time.Now().UnixNano())
	if second <= ejectFor {
		t.Errorf("second ejection %s is not longer than %s", second, ejectFor)
	}
	b.reportSuccess()
	if !b.available(time.Now().UnixNano()) {
		t.Error("still ejected after a success")
	}
}
