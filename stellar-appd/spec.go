package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"stellar.dev/api/client"
	"stellar.dev/api/gossipapi"
	"stellar.dev/api/netapi"
	"stellar.dev/daemon"
	"stellar.dev/daemon/config"
	"stellar.dev/daemon/listen"
	"stellar.dev/stellar-appd/internal/containers"
	"stellar.dev/stellar-appd/internal/network"
)

func spec() daemon.Spec {
	return daemon.Spec{
		Name:    "appd",
		Summary: "applications of a Stellar node, on containerd",
		Description: `stellar-appd runs this node's share of the cluster's applications on containerd:
placement with no master, restarts, health checks, rolling updates and logs.
It reads the app specs (apps/<name>) and the members from stellar-gossip,
computes placement v1 (the same answer on every node), runs what lands on
this node in containerd's [apps] namespace, and publishes each instance
under nodes/<node>/instances/. It starts with containerd and stellar-gossip
absent and keeps trying; GET /v1/status says what it waits for.`,
		Files: map[string]string{
			"/var/lib/stellar/appd/logs": "container output when the host has no journal",
		},
		Sockets: func(cfg config.Config) []listen.Spec {
			return nil
		},
		New: func(env *daemon.Env) (daemon.Service, error) { return newService(env), nil },
	}
}

// service is stellar-appd's work: the reconcile loop and the API.
type service struct {
	env  *daemon.Env
	node string
	st   store
	g    *gossipapi.Client
	rt   *containers.Runtime
	rec  *reconciler
	kick chan struct{}
	// peers reaches other nodes' appd through gossip; imagesChanged asks
	// for the image list to be published again.
	peers         *peers
	imagesChanged chan struct{}
}

func newService(env *daemon.Env) *service {
	cfg := env.Config
	exe, err := os.Executable()
	if err != nil {
		exe = ""
	}
	st := gossipapi.New(client.Unix("stellar-gossip", cfg.Socket("gossip")).WithTimeout(10 * time.Second))
	p := &peers{node: cfg.Node.Name, st: st, raw: client.Unix("stellar-gossip", cfg.Socket("gossip")).WithTimeout(10 * time.Minute)}
	s := &service{env: env, node: cfg.Node.Name, st: st, g: st, kick: make(chan struct{}, 1), peers: p, imagesChanged: make(chan struct{}, 1)}
	s.rt = containers.New(containers.Config{
		Address: cfg.Apps.Containerd, Namespace: cfg.Apps.Namespace,
		Snapshotter: cfg.Apps.Snapshotter, Runtime: cfg.Apps.Runtime, LogBinary: exe,
		Fetch: s.fetchImage,
	})
	rt := s.rt
	s.rec = newReconciler(reconcilerConfig{
		Node: cfg.Node.Name, RescheduleAfter: cfg.Apps.RescheduleAfter,
		ClockFile: filepath.Join(cfg.StateDirOf("appd"), "members-clock.json"),
		LogDir:    s.logDir(), MemoryMiB: memTotalMiB(),
		JournalSocket: os.Getenv(journalSocketEnv),
	}, st, rt, newProber(rt, instanceAddr), env.Log)
	s.rec.images = newFetcher(fetcherConfig{}, rt, s.rec.Kick, env.Log)
	s.rec.net = network.New(network.Config{
		ConfDir: cfg.Network.CNIConfDir, BinDirs: cfg.Network.CNIBinDirs,
		CacheDir:  filepath.Join(cfg.StateDirOf("appd"), "cni"),
		ResolvDir: filepath.Join(cfg.StateDirOf("appd"), "resolv"),
		DNS:       cfg.Network.DNSAddress, Domain: cfg.DNS.Domain,
	})
	nc := netapi.New(client.Unix("stellar-netd", cfg.Socket("netd")).WithTimeout(10 * time.Second))
	s.rec.gc = func(ctx context.Context, live []string) (int, error) {
		res, err := nc.GC(ctx, netapi.GCRequest{Containers: live})
		return len(res.Released), err
	}
	return s
}

// journalSocketEnv names another journald socket for the log driver than
// /run/systemd/journal/socket (a journald listening elsewhere, or a test
// that listens itself).
const journalSocketEnv = "STELLAR_JOURNAL_SOCKET"

// instanceAddr is where health checks reach an instance: its bridge IP, or
// loopback for host-network instances.
func instanceAddr(c containers.Container) string {
	if ip := c.Labels[containers.LabelIP]; ip != "" {
		return ip
	}
	return "127.0.0.1"
}

func (s *service) logDir() string { return filepath.Join(s.env.Config.StateDirOf("appd"), "logs") }

// Run serves the API at once and reconciles in the background.
func (s *service) Run(ctx context.Context, ready func()) error {
	if err := os.MkdirAll(s.logDir(), 0o750); err != nil {
		s.env.Log.Warn("make log directory", "dir", s.logDir(), "err", err)
	}
	s.routes()
	ready()
	defer s.rt.Close()
	go s.watch(ctx)
	go s.publishImages(ctx, s.imagesChanged)
	go s.setPlacementTag(ctx)
	s.rec.Run(ctx, s.kick, time.Second)
	return nil
}

// Health fails only when the reconcile loop is stuck: containerd or
// gossip being absent is waiting, reported by /v1/status, not a fault of
// appd (a failing health check would have systemd restart it for nothing).
func (s *service) Health(ctx context.Context) error {
	last := s.rec.LastPass()
	if !last.IsZero() && time.Since(last) > 5*time.Minute {
		return fmt.Errorf("reconcile loop stuck since %s", last.Format(time.RFC3339))
	}
	return nil
}

// fetchImage asks the peers (but those in skip) for an image this node
// lacks.
func (s *service) fetchImage(ctx context.Context, ref string, skip []string) (containers.Fetched, error) {
	f, err := s.peers.FetchImage(ctx, ref, skip)
	if err != nil {
		s.env.Log.Info("image not fetched from peers", "image", ref, "err", err)
		return f, err
	}
	s.env.Log.Info("fetching image from a peer", "image", ref, "peer", f.From, "digest", f.Digest)
	f.Body = closeHook{f.Body, s.imagesDirty}
	return f, nil
}

// closeHook calls after once the body is closed (the import is done).
type closeHook struct {
	io.ReadCloser
	after func()
}

func (c closeHook) Close() error {
	err := c.ReadCloser.Close()
	c.after()
	return err
}

// imagesDirty asks for the image list to be published again.
func (s *service) imagesDirty() {
	select {
	case s.imagesChanged <- struct{}{}:
	default:
	}
}

// trigger asks for a reconcile pass soon.
func (s *service) trigger() {
	select {
	case s.kick <- struct{}{}:
	default:
	}
}

// watch kicks the reconcile loop on every change of the cluster state and
// of the members, so a change is acted on at once rather than on the timer.
func (s *service) watch(ctx context.Context) {
	for ctx.Err() == nil {
		err := s.g.Watch(ctx, "", 0, true, func(gossipapi.Event) error {
			s.trigger()
			return nil
		})
		if ctx.Err() != nil {
			return
		}
		s.env.Log.Debug("watch cluster state", "err", err)
		select {
		case <-ctx.Done():
		case <-time.After(2 * time.Second):
		}
	}
}

// memTotalMiB reads MemTotal from /proc/meminfo (0 when unknown: no check).
func memTotalMiB() int64 {
	b, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		return 0
	}
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) >= 2 && f[0] == "MemTotal:" {
			kb, err := strconv.ParseInt(f[1], 10, 64)
			if err != nil {
				return 0
			}
			return kb / 1024
		}
	}
	return 0
}
