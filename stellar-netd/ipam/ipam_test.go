package ipam

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"stellar.dev/api/errdefs"
)

func newLoaded(t *testing.T, block string) *Allocator {
	t.Helper()
	a := New(t.TempDir(), netip.MustParsePrefix(block))
	a.Sync = false
	if err := a.Load(); err != nil {
		t.Fatal(err)
	}
	return a
}

func TestAllocator_firstIPAfterGateway(t *testing.T) {
	a := newLoaded(t, "172.16.4.0/22")
	e, err := a.Allocate("c1", "eth0", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if e.IP.String() != "172.16.4.2" {
		t.Fatalf("first IP = %s, want 172.16.4.2", e.IP)
	}
	if a.Gateway().String() != "172.16.4.1" {
		t.Fatalf("gateway = %s", a.Gateway())
	}
}

func TestAllocator_exhaustedSubnet(t *testing.T) {
	a := newLoaded(t, "10.0.0.0/29") // 8 addresses: 5 usable
	seen := map[netip.Addr]bool{}
	for i := range Capacity(a.Block()) {
		e, err := a.Allocate(fmt.Sprint("c", i), "eth0", time.Now())
		if err != nil {
			t.Fatalf("allocate %d: %v", i, err)
		}
		if seen[e.IP] || e.IP == a.Gateway() || e.IP.String() == "10.0.0.0" || e.IP.String() == "10.0.0.7" {
			t.Fatalf("bad or duplicate IP %s", e.IP)
		}
		seen[e.IP] = true
	}
	_, err := a.Allocate("one-more", "eth0", time.Now())
	if !errors.Is(err, errdefs.ErrResourceExhausted) {
		t.Fatalf("allocate in a full subnet: %v, want resource exhausted", err)
	}
}

func TestAllocator_reuseAfterRelease(t *testing.T) {
	a := newLoaded(t, "10.0.0.0/29")
	for i := range 5 {
		if _, err := a.Allocate(fmt.Sprint("c", i), "eth0", time.Now()); err != nil {
			t.Fatal(err)
		}
	}
	rel, err := a.Release("c2", "eth0")
	if err != nil || len(rel) != 1 {
		t.Fatalf("release: %v %v", rel, err)
	}
	e, err := a.Allocate("new", "eth0", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if e.IP != rel[0].IP {
		t.Fatalf("got %s, want the freed %s", e.IP, rel[0].IP)
	}
}

func TestAllocator_idempotentAllocateAndRelease(t *testing.T) {
	a := newLoaded(t, "172.16.0.0/22")
	e1, _ := a.Allocate("c1", "eth0", time.Now())
	e2, _ := a.Allocate("c1", "eth0", time.Now())
	if e1.IP != e2.IP {
		t.Fatalf("repeated allocate: %s then %s", e1.IP, e2.IP)
	}
	e3, _ := a.Allocate("c1", "eth1", time.Now())
	if e3.IP == e1.IP {
		t.Fatal("second interface got the same IP")
	}
	if rel, err := a.Release("unknown", "eth0"); err != nil || len(rel) != 0 {
		t.Fatalf("release unknown: %v %v", rel, err)
	}
	if rel, err := a.Release("c1", ""); err != nil || len(rel) != 2 {
		t.Fatalf("release all of c1: %v %v", rel, err)
	}
	if rel, err := a.Release("c1", "eth0"); err != nil || len(rel) != 0 {
		t.Fatalf("release twice: %v %v", rel, err)
	}
}

func TestAllocator_releaseOneInterfaceKeepsTheOthers(t *testing.T) {
	a := newLoaded(t, "172.16.0.0/22")
	e0, _ := a.Allocate("c1", "eth0", time.Now())
	e1, _ := a.Allocate("c1", "eth1", time.Now())
	if rel, err := a.Release("c1", "eth1"); err != nil || len(rel) != 1 || rel[0].IP != e1.IP {
		t.Fatalf("release eth1: %v %v", rel, err)
	}
	if got, ok := a.Get("c1", "eth0"); !ok || got.IP != e0.IP {
		t.Fatalf("eth0 after releasing eth1: %v %v, want %s", got, ok, e0.IP)
	}
	if _, err := os.Stat(filepath.Join(a.dir, e0.IP.String())); err != nil {
		t.Fatalf("eth0's file: %v", err)
	}
	if _, err := os.Stat(filepath.Join(a.dir, e1.IP.String())); !os.IsNotExist(err) {
		t.Fatalf("eth1's file is still there: %v", err)
	}
}

// TestAllocator_leftoverTempFileIsNoAllocation: a kill -9 while an
// allocation was being written leaves the temporary file, half written;
// the next allocation overwrites it, and only complete files are named
// after an IP.
func TestAllocator_leftoverTempFileIsNoAllocation(t *testing.T) {
	dir := t.TempDir()
	block := netip.MustParsePrefix("172.16.0.0/22")
	if err := os.WriteFile(filepath.Join(dir, ".tmp-alloc"), []byte("v1\nhalf-writ"), 0o600); err != nil {
		t.Fatal(err)
	}
	a := New(dir, block)
	a.loaded = true // as if Load had not run yet: the file is still there
	for i := range 3 {
		e, err := a.Allocate(fmt.Sprint("c", i), "eth0", time.Now())
		if err != nil {
			t.Fatal(err)
		}
		data, err := os.ReadFile(filepath.Join(dir, e.IP.String()))
		if err != nil {
			t.Fatal(err)
		}
		got, err := ParseEntry(data)
		if err != nil || got.ContainerID != fmt.Sprint("c", i) || got.IfName != "eth0" {
			t.Fatalf("file of %s: %+v %v (%q)", e.IP, got, err, data)
		}
	}
	des, _ := os.ReadDir(dir)
	for _, de := range des {
		if strings.HasPrefix(de.Name(), ".tmp-") {
			t.Fatalf("temporary file %s is left", de.Name())
		}
	}
}

func TestAllocator_survivesReload(t *testing.T) {
	dir := t.TempDir()
	block := netip.MustParsePrefix("172.16.0.0/22")
	a := New(dir, block)
	if err := a.Load(); err != nil {
		t.Fatal(err)
	}
	e, _ := a.Allocate("c1", "eth0", time.Now())
	// A half-written temporary file and a garbage file from a crash.
	os.WriteFile(filepath.Join(dir, ".tmp-123"), []byte("v1\n"), 0o600)
	os.WriteFile(filepath.Join(dir, "172.16.0.9"), []byte("garbage"), 0o600)
	b := New(dir, block)
	if err := b.Load(); err != nil {
		t.Fatal(err)
	}
	got, ok := b.Get("c1", "eth0")
	if !ok || got.IP != e.IP {
		t.Fatalf("after reload: %v %v, want %s", got, ok, e.IP)
	}
	if _, err := os.Stat(filepath.Join(dir, ".tmp-123")); !os.IsNotExist(err) {
		t.Fatal("temporary file was not removed")
	}
	for range 10 {
		n, err := b.Allocate(fmt.Sprint(time.Now().UnixNano()), "eth0", time.Now())
		if err != nil {
			t.Fatal(err)
		}
		if n.IP.String() == "172.16.0.9" || n.IP == e.IP {
			t.Fatalf("handed out a taken IP %s", n.IP)
		}
	}
}

func TestAllocator_gcKeepsLive(t *testing.T) {
	a := newLoaded(t, "172.16.0.0/22")
	for _, c := range []string{"a", "b", "c"} {
		a.Allocate(c, "eth0", time.Now())
	}
	rel, kept, err := a.GC(func(e Entry) bool { return e.ContainerID == "b" })
	if err != nil || kept != 1 || len(rel) != 2 {
		t.Fatalf("gc: released %v kept %d err %v", rel, kept, err)
	}
	if _, ok := a.Get("b", "eth0"); !ok {
		t.Fatal("live container lost its IP")
	}
}

func TestAllocator_parallelNoDuplicates(t *testing.T) {
	a := newLoaded(t, "172.16.0.0/22")
	var wg sync.WaitGroup
	ips := make([]netip.Addr, 300)
	for i := range ips {
		wg.Add(1)
		go func() {
			defer wg.Done()
			e, err := a.Allocate(fmt.Sprint("c", i), "eth0", time.Now())
			if err != nil {
				t.Error(err)
			}
			ips[i] = e.IP
		}()
	}
	wg.Wait()
	seen := map[netip.Addr]bool{}
	for _, ip := range ips {
		if seen[ip] {
			t.Fatalf("duplicate %s", ip)
		}
		seen[ip] = true
	}
}

func TestValidateID(t *testing.T) {
	for _, tc := range []struct {
		cid, ifname string
		ok          bool
	}{
		{"abc", "eth0", true},
		{"", "eth0", false},
		{"a b", "eth0", false},
		{"abc", "", false},
		{"abc", "eth0/x", false},
		{"abc", "averyveryverylongname", false},
	} {
		t.Run(tc.cid+"_"+tc.ifname, func(t *testing.T) {
			err := ValidateID(tc.cid, tc.ifname)
			if (err == nil) != tc.ok {
				t.Fatalf("ValidateID(%q,%q) = %v", tc.cid, tc.ifname, err)
			}
		})
	}
}

func FuzzParseEntry(f *testing.F) {
	f.Add([]byte("v1\nabc\neth0\n123\n"))
	f.Add([]byte("garbage"))
	f.Fuzz(func(t *testing.T, data []byte) {
		e, err := ParseEntry(data)
		if err == nil {
			if ValidateID(e.ContainerID, e.IfName) != nil {
				t.Fatalf("accepted invalid entry %+v", e)
			}
		}
	})
}

// BenchmarkAllocator_addDel is netd's share of a CNI ADD+DEL pair on disk:
// one allocation and its release.
func BenchmarkAllocator_addDel(b *testing.B) {
	a := New(b.TempDir(), netip.MustParsePrefix("172.16.0.0/22"))
	if err := a.Load(); err != nil {
		b.Fatal(err)
	}
	now := time.Now()
	for i := 0; b.Loop(); i++ {
		cid := fmt.Sprint("c", i)
		if _, err := a.Allocate(cid, "eth0", now); err != nil {
			b.Fatal(err)
		}
		if _, err := a.Release(cid, "eth0"); err != nil {
			b.Fatal(err)
		}
	}
}
