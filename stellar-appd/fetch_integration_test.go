package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"stellar.dev/api/appapi"
	"stellar.dev/api/errdefs"
	"stellar.dev/stellar-appd/internal/containers"
	"stellar.dev/testimages"
)

// fakePeers hands out the busybox archive as peers would, each with the
// digest it publishes, and records who was asked.
type fakePeers struct {
	archive []byte
	gate    chan struct{} // nil: no wait
	mu      sync.Mutex
	peers   []containers.Fetched // Body unused: each call gets a fresh reader
	asked   [][]string           // skip lists of each call
}

func (p *fakePeers) fetch(ctx context.Context, ref string, skip []string) (containers.Fetched, error) {
	p.mu.Lock()
	p.asked = append(p.asked, append([]string(nil), skip...))
	p.mu.Unlock()
	if ref != testimages.BusyboxRef {
		return containers.Fetched{}, errdefs.New(errdefs.ErrNotFound, "no peer has image %s", ref)
	}
	for _, pe := range p.peers {
		if contains(skip, pe.From) {
			continue
		}
		var body io.Reader = bytes.NewReader(p.archive)
		if p.gate != nil {
			body = &gatedReader{r: body, gate: p.gate, ctx: ctx}
		}
		pe.Body = io.NopCloser(body)
		return pe, nil
	}
	return containers.Fetched{}, errdefs.New(errdefs.ErrNotFound, "no other peer has image %s", ref)
}

func (p *fakePeers) calls() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.asked)
}

func contains(l []string, s string) bool {
	for _, x := range l {
		if x == s {
			return true
		}
	}
	return false
}

// gatedReader gives nothing until the gate opens: a transfer that takes
// as long as the test wants.
type gatedReader struct {
	r    io.Reader
	gate chan struct{}
	ctx  context.Context
}

func (g *gatedReader) Read(b []byte) (int, error) {
	select {
	case <-g.gate:
	case <-g.ctx.Done():
		return 0, g.ctx.Err()
	}
	return g.r.Read(b)
}

// containerdOnly starts a containerd of the test's own (root, state and
// socket under a temp dir) and returns the busybox archive and its
// digest as containerd records it.
func containerdOnly(t *testing.T) (*harness, []byte, string) {
	if os.Geteuid() != 0 {
		t.Skip("image fetch with real containerd needs root: SKIPPED (run as root, as CI does)")
	}
	for _, bin := range []string{"containerd", "containerd-shim-runc-v2", "runc", "ctr"} {
		if _, err := exec.LookPath(bin); err != nil {
			t.Skipf("%s is not installed (make deps): SKIPPED", bin)
		}
	}
	h := &harness{t: t, ns: fmt.Sprintf("stellar-it-%d-%d", os.Getpid(), harnesses.Add(1))}
	h.startContainerd()
	var buf bytes.Buffer
	if err := testimages.WriteBusybox(context.Background(), &buf, ""); err != nil {
		t.Fatalf("build busybox image: %v", err)
	}
	src := containers.New(containers.Config{Address: h.ctdSock, Namespace: h.ns + "-src", Snapshotter: "overlayfs"})
	defer src.Close()
	imgs, err := src.Import(context.Background(), bytes.NewReader(buf.Bytes()))
	if err != nil || len(imgs) == 0 {
		t.Fatalf("import busybox to read its digest: %v %+v", err, imgs)
	}
	return h, buf.Bytes(), imgs[0].Digest
}

// TestFetch_digestChecked: with real containerd, a copy whose digest is
// not the one its peer publishes is never named as the image; the next
// peer is asked; only copies that are all bad fail, as worth another try
// (not "not found": no decline).
func TestFetch_digestChecked(t *testing.T) {
	h, archive, digest := containerdOnly(t)
	ctx := context.Background()
	const wrong = "sha256:0000000000000000000000000000000000000000000000000000000000000000"
	for _, tc := range []struct {
		name      string
		peers     []containers.Fetched
		wantErr   error
		wantCalls int
	}{
		{"badPeerThenGood", []containers.Fetched{{From: "bad", Digest: wrong}, {From: "good", Digest: digest}}, nil, 2},
		{"onlyBadCopies", []containers.Fetched{{From: "bad1", Digest: wrong}, {From: "bad2", Digest: wrong}}, errdefs.ErrUnavailable, 3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ns := h.ns + "-" + strings.ToLower(tc.name)
			p := &fakePeers{archive: archive, peers: tc.peers}
			rt := containers.New(containers.Config{Address: h.ctdSock, Namespace: ns, Snapshotter: "overlayfs", Fetch: p.fetch})
			defer rt.Close()
			err := rt.PrepareImage(ctx, testimages.BusyboxRef)
			if tc.wantErr == nil && err != nil {
				t.Fatalf("fetch: %v", err)
			}
			if tc.wantErr != nil && !errors.Is(err, tc.wantErr) {
				t.Fatalf("fetch error %v, want %v", err, tc.wantErr)
			}
			if p.calls() != tc.wantCalls {
				t.Fatalf("peers asked %d times (%v), want %d", p.calls(), p.asked, tc.wantCalls)
			}
			out, lerr := exec.Command("ctr", "--address", h.ctdSock, "-n", ns, "images", "ls").CombinedOutput()
			if lerr != nil {
				t.Fatalf("ctr images ls: %v: %s", lerr, out)
			}
			has := strings.Contains(string(out), testimages.BusyboxRef)
			if has != (tc.wantErr == nil) {
				t.Fatalf("image present = %v after the fetch:\n%s", has, out)
			}
			if has && !strings.Contains(string(out), digest) {
				t.Fatalf("image is not the published digest %s:\n%s", digest, out)
			}
		})
	}
}

// TestFetch_passNeverWaits: with real containerd, a reconcile pass whose
// instances need an image that is still in transfer returns at once,
// publishing them "fetching", with one transfer for both; when the
// transfer ends the instances run.
func TestFetch_passNeverWaits(t *testing.T) {
	h, archive, digest := containerdOnly(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	p := &fakePeers{archive: archive, gate: make(chan struct{}), peers: []containers.Fetched{{From: "peer", Digest: digest}}}
	rt := containers.New(containers.Config{Address: h.ctdSock, Namespace: h.ns, Snapshotter: "overlayfs", Runtime: "io.containerd.runc.v2", Fetch: p.fetch})
	defer rt.Close()
	st := newFakeStore("a")
	putApp(t, st, `{"name":"f","services":[{"name":"s","image":"stellar.test/busybox:latest","network":false,"instances":2,
		"process":{"args":["sh","-c","trap 'exit 0' TERM; while :; do sleep 1; done"]}}]}`)
	r := newTestReconciler("a", st, rt)
	r.cfg.StopGrace = 5 * time.Second
	r.images = newFetcher(fetcherConfig{}, rt, r.Kick, quietLog())
	for i := 0; i < 3; i++ {
		passed := make(chan error, 1)
		go func() { passed <- r.Pass(ctx) }()
		select {
		case err := <-passed:
			if err != nil {
				t.Fatal(err)
			}
		case <-time.After(2 * time.Minute):
			t.Fatal("the pass waits for the image transfer")
		}
	}
	for i := 0; i < 2; i++ {
		if in := published(t, st, appapi.InstanceKey("a", "f", "s", i)); in.Status != appapi.StatusFetching {
			t.Fatalf("instance %d: %+v, want status fetching", i, in)
		}
	}
	if n := p.calls(); n != 1 {
		t.Fatalf("%d transfers for one image, want 1", n)
	}
	close(p.gate)
	eventually(t, 2*time.Minute, "both instances running", func() error {
		if err := r.Pass(ctx); err != nil {
			return err
		}
		for i := 0; i < 2; i++ {
			in := published(t, st, appapi.InstanceKey("a", "f", "s", i))
			if in.Status != appapi.StatusRunning || in.PID == 0 {
				return fmt.Errorf("instance %d: %+v", i, in)
			}
		}
		return nil
	})
	if err := st.Delete(ctx, appapi.AppKey("f"), ""); err != nil {
		t.Fatal(err)
	}
	eventually(t, 2*time.Minute, "no container left", func() error {
		if err := r.Pass(ctx); err != nil {
			return err
		}
		if cs, err := rt.List(ctx); err != nil || len(cs) > 0 {
			return fmt.Errorf("containers %+v, %v", cs, err)
		}
		return nil
	})
}
