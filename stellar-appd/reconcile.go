package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"time"

	"stellar.dev/api/appapi"
	"stellar.dev/api/errdefs"
	"stellar.dev/stellar-appd/internal/containers"
	"stellar.dev/stellar-appd/internal/logdriver"
	"stellar.dev/stellar-appd/internal/network"
	"stellar.dev/stellar-appd/internal/placement"
)

// runtime is what the reconciler needs of containerd (containers.Runtime
// has it).
type runtime interface {
	List(ctx context.Context) ([]containers.Container, error)
	Create(ctx context.Context, s containers.Spec) error
	Start(ctx context.Context, id string, logArgs map[string]string) (uint32, error)
	Stop(ctx context.Context, id string, grace time.Duration) error
	Remove(ctx context.Context, id string, grace time.Duration) error
	SetLabel(ctx context.Context, id, key, value string) error
	PrepareImage(ctx context.Context, ref string) error
}

// networker attaches instances to the node's container network
// (network.Network has it).
type networker interface {
	Setup(ctx context.Context, id, app string, ports []appapi.Port) (network.Attachment, error)
	Teardown(ctx context.Context, id, app string, ports []appapi.Port) error
}

// ipGC frees the IPs of containers that no longer exist (netd's GC).
type ipGC func(ctx context.Context, live []string) (released int, err error)

// gcEvery is how often leaked IPs are collected.
const gcEvery = 5 * time.Minute

// prober runs an instance's health check once.
type prober func(ctx context.Context, c containers.Container, h *appapi.Health) error

// reconcilerConfig tunes the loop.
type reconcilerConfig struct {
	// Node is this node's name.
	Node string
	// RescheduleAfter damps churn (see memberClock).
	RescheduleAfter time.Duration
	// ClockFile keeps the member clock across restarts ("": in memory).
	ClockFile string
	// BackoffMin and BackoffMax bound the restart backoff.
	BackoffMin, BackoffMax time.Duration
	// StopGrace is the time between SIGTERM and SIGKILL.
	StopGrace time.Duration
	// LogDir is where the log driver writes without a journal.
	LogDir string
	// JournalSocket is the journald socket the log driver sends to (""
	// for the default, /run/systemd/journal/socket).
	JournalSocket string
	// MemoryMiB is the memory instances may reserve on this node (their
	// resources.memory summed); 0: no check.
	MemoryMiB int64
	// HandoverTimeout bounds how long an instance placed elsewhere keeps
	// running here while its new copy is not yet healthy.
	HandoverTimeout time.Duration
}

// instState is what the reconciler remembers of one local instance.
type instState struct {
	failures      int
	nextStart     time.Time
	lastStart     time.Time
	health        string
	healthFails   int
	nextProbe     time.Time
	probing       bool
	lastErr       string
	updatedAt     time.Time // when it was replaced by an update
	handover      time.Time // when it was first seen placed elsewhere
	exitAt        time.Time // when its exit was noticed
	everHealthy   bool      // passed a check since its last start
	updatePending time.Time // when an update of it was first due
	fetching      bool      // waiting for its image (fetched in the background)
}

// reconciler drives this node's containers towards the cluster's apps.
type reconciler struct {
	cfg    reconcilerConfig
	st     store
	rt     runtime
	probe  prober
	net    networker // nil: network: true instances get an empty namespace
	gc     ipGC      // nil: no IP garbage collection
	images *fetcher  // nil: images are got in the pass (tests of the loop)
	lastGC time.Time
	log    *slog.Logger

	clock *memberClock

	kick    chan struct{} // asks Run for a pass
	results []probeResult // finished health checks, under mu

	mu        sync.Mutex
	insts     map[string]*instState      // by container id
	published map[string]appapi.Instance // key -> what we last wrote
	lastBatch map[string]time.Time       // "<app>/<service>" -> last update start
	waiting   []string                   // what the loop waits for
	lastPass  time.Time
	local     map[string]containers.Container
}

func newReconciler(cfg reconcilerConfig, st store, rt runtime, probe prober, log *slog.Logger) *reconciler {
	if cfg.BackoffMin == 0 {
		cfg.BackoffMin = time.Second
	}
	if cfg.BackoffMax == 0 {
		cfg.BackoffMax = 5 * time.Minute
	}
	if cfg.StopGrace == 0 {
		cfg.StopGrace = 10 * time.Second
	}
	if cfg.HandoverTimeout == 0 {
		cfg.HandoverTimeout = 5 * time.Minute
	}
	return &reconciler{cfg: cfg, st: st, rt: rt, probe: probe, log: log, clock: newMemberClock(), kick: make(chan struct{}, 1),
		insts: map[string]*instState{}, published: map[string]appapi.Instance{}, lastBatch: map[string]time.Time{}}
}

// containerID is "<app>.<service>.<index>".
func containerID(app, service string, index int) string {
	return fmt.Sprintf("%s.%s.%d", app, service, index)
}

// specHash identifies what an instance runs: the service spec and its
// restart generation.
func specHash(appName string, s *appapi.Service, restartGen int) string {
	b, _ := json.Marshal(struct {
		App     string
		Service *appapi.Service
		Restart int
	}{appName, s, restartGen})
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:6])
}

// want is one instance this node should run.
type want struct {
	app       *app
	svc       *appapi.Service
	index     int
	hash      string
	elsewhere bool // placed on another node: kept until its new copy is healthy
}

// Waiting says what the loop waits for (nil when all is well).
func (r *reconciler) Waiting() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.waiting...)
}

func (r *reconciler) setWaiting(w []string) {
	r.mu.Lock()
	r.waiting = w
	r.lastPass = time.Now()
	r.mu.Unlock()
}

// LastPass is when the loop last finished a pass.
func (r *reconciler) LastPass() time.Time {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.lastPass
}

// Local returns the containers seen in the last pass.
func (r *reconciler) Local() map[string]containers.Container {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.local
}

// Kick asks for a pass soon.
func (r *reconciler) Kick() {
	select {
	case r.kick <- struct{}{}:
	default:
	}
}

// Run reconciles on every kick and every interval until ctx ends.
func (r *reconciler) Run(ctx context.Context, kick <-chan struct{}, interval time.Duration) {
	if r.cfg.ClockFile != "" {
		clock, err := loadMemberClock(r.cfg.ClockFile)
		if err != nil {
			r.log.Warn("member clock starts over", "err", err)
		}
		r.clock = clock
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		if err := r.Pass(ctx); err != nil && ctx.Err() == nil {
			r.log.Debug("reconcile pass", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-kick:
		case <-r.kick:
		}
	}
}

// Pass is one reconcile: read desired and actual, act, publish.
func (r *reconciler) Pass(ctx context.Context) error {
	now := time.Now()
	r.applyProbes(now)
	var waiting []string
	actual, err := r.rt.List(ctx)
	if err != nil {
		r.setWaiting([]string{"containerd: " + describe(err)})
		return err
	}
	local := make(map[string]containers.Container, len(actual))
	for _, c := range actual {
		local[c.ID] = c
	}
	r.mu.Lock()
	r.local = local
	r.mu.Unlock()

	v, err := loadView(ctx, r.st)
	if err != nil {
		// Without the cluster state nothing is stopped or moved: keep what
		// runs, and restart what crashed.
		waiting = append(waiting, "stellar-gossip: "+describe(err))
		for _, c := range actual {
			r.keepRunning(ctx, c, nil, now)
		}
		r.setWaiting(waiting)
		return err
	}

	wants := r.desired(ctx, v, now)
	var launches []launch
	reserved := r.reservedMemory(v)
	for id, w := range wants {
		c, ok := local[id]
		if !ok {
			if w.elsewhere {
				continue
			}
			if l, ok := r.admit(ctx, w, now, &reserved); ok {
				launches = append(launches, l)
			}
			continue
		}
		if c.Labels[containers.LabelSpec] != w.hash && !w.elsewhere {
			st := r.state(id)
			if r.mayUpdate(v, w, c, now) {
				// Never stop the old copy for an image that cannot be had.
				if err := r.imageReady(ctx, w.svc.Image, now); err != nil {
					if st.updatePending.IsZero() {
						st.updatePending = now
					}
					st.lastErr = "update: " + err.Error()
					if !errors.Is(err, errFetching) {
						r.log.Warn("update blocked", "container", id, "err", err)
					}
				} else {
					r.log.Info("updating instance", "app", w.app.Spec.Name, "service", w.svc.Name, "index", w.index)
					if err := r.remove(ctx, c, w.svc.Ports); err != nil {
						r.log.Warn("remove instance for update", "container", id, "err", err)
						continue
					}
					st.nextStart = time.Time{}
					st.updatedAt, st.updatePending = now, time.Time{}
					r.create(ctx, v, w, now)
					continue
				}
			}
			r.keepRunning(ctx, c, &w, now)
			r.checkRevert(ctx, v, w, c, now)
			continue
		}
		r.keepRunning(ctx, c, &w, now)
		r.checkRevert(ctx, v, w, c, now)
	}
	r.launchAll(ctx, launches, now)
	for id, c := range local {
		if _, ok := wants[id]; ok {
			continue
		}
		r.log.Info("removing instance", "container", id, "app", c.Labels[containers.LabelApp])
		if err := r.remove(ctx, c, nil); err != nil {
			r.log.Warn("remove instance", "container", id, "err", err)
			continue
		}
		r.mu.Lock()
		delete(r.insts, id)
		r.mu.Unlock()
	}
	// Publish what runs now, after this pass's changes.
	if after, err := r.rt.List(ctx); err == nil {
		local = make(map[string]containers.Container, len(after))
		for _, c := range after {
			local[c.ID] = c
		}
		r.mu.Lock()
		r.local = local
		r.mu.Unlock()
	}
	// Between passes no CNI ADD is in flight, so every IP netd holds for
	// a container that is not in containerd has leaked.
	if r.gc != nil && now.Sub(r.lastGC) >= gcEvery {
		live := make([]string, 0, len(local))
		for id := range local {
			live = append(live, id)
		}
		if n, err := r.gc(ctx, live); err != nil {
			r.log.Debug("collect leaked ips", "err", err)
		} else {
			r.lastGC = now
			if n > 0 {
				r.log.Info("released leaked ips", "count", n)
			}
		}
	}
	if err := r.publish(ctx, v, wants); err != nil {
		waiting = append(waiting, "publish instances: "+describe(err))
	}
	r.setWaiting(waiting)
	return nil
}

// errFetching says an image is being fetched in the background.
var errFetching = errors.New("image is being fetched")

// imageReady returns nil when ref is on this node; otherwise errFetching
// while it is fetched in the background, or the last fetch's error.
func (r *reconciler) imageReady(ctx context.Context, ref string, now time.Time) error {
	if r.images == nil {
		return r.rt.PrepareImage(ctx, ref)
	}
	ok, err := r.images.Image(ctx, ref, now)
	switch {
	case ok:
		return nil
	case err != nil:
		return err
	}
	return fmt.Errorf("%s: %w", ref, errFetching)
}

// remove deletes a container with its snapshot, then its network
// attachment (its IP goes back to netd).
func (r *reconciler) remove(ctx context.Context, c containers.Container, ports []appapi.Port) error {
	if err := r.rt.Remove(ctx, c.ID, r.cfg.StopGrace); err != nil {
		return err
	}
	if c.Labels[containers.LabelNetwork] == "cni" && r.net != nil {
		if err := r.net.Teardown(ctx, c.ID, c.Labels[containers.LabelApp], ports); err != nil {
			r.log.Warn("detach instance", "container", c.ID, "err", err)
		}
	}
	return nil
}

// desired computes the instances this node runs, by container id.
func (r *reconciler) desired(ctx context.Context, v *view, now time.Time) map[string]want {
	// Declines count only for the spec they were made for.
	hashes := map[string]string{}
	for name := range v.apps {
		a := v.apps[name]
		for i := range a.Spec.Services {
			s := &a.Spec.Services[i]
			hashes[name+"/"+s.Name] = specHash(name, s, a.Restarts[s.Name])
		}
	}
	for node, d := range v.declined {
		for k, h := range d {
			if hashes[k] == h {
				continue
			}
			delete(d, k)
			if node == r.cfg.Node {
				// The spec changed (or the app is gone): try again.
				app, svc, _ := strings.Cut(k, "/")
				if err := r.st.Delete(ctx, appapi.DeclineKey(node, app, svc), ""); err != nil && !errors.Is(err, errdefs.ErrNotFound) {
					r.log.Warn("withdraw decline", "app", app, "service", svc, "err", err)
				}
			}
		}
	}
	nodes := r.clock.nodes(v, r.cfg.Node, now, r.cfg.RescheduleAfter)
	if err := r.clock.save(); err != nil {
		r.log.Warn("keep member clock", "err", err)
	}
	wants := map[string]want{}
	for name := range v.apps {
		a := v.apps[name]
		for i := range a.Spec.Services {
			s := &a.Spec.Services[i]
			h := hashes[name+"/"+s.Name]
			placed := placement.Place(name, s, nodes)
			if len(placed) == 0 {
				// Every node declined: keep trying everywhere rather than
				// running nothing (an image may still be imported).
				placed = placement.Place(name, s, withoutDeclines(nodes))
			}
			if len(placed) == 0 {
				// Nowhere to go (this node cordoned, say, and no other
				// eligible): keep the copies that run here. A drained
				// node stops them after the handover timeout.
				for id, c := range r.Local() {
					if c.Labels[containers.LabelApp] != name || c.Labels[containers.LabelService] != s.Name {
						continue
					}
					idx := c.Index()
					if idx < 0 || (!s.Global && idx >= s.Count()) {
						continue
					}
					if v.schedule[r.cfg.Node] == appapi.Drained && r.handedOver(v, "", name, s.Name, idx, h, id, now) {
						continue
					}
					wants[id] = want{app: &a, svc: s, index: idx, hash: h, elsewhere: true}
				}
				continue
			}
			for idx, node := range placed {
				id := containerID(name, s.Name, idx)
				if node == r.cfg.Node {
					wants[id] = want{app: &a, svc: s, index: idx, hash: h}
					r.clearHandover(id)
					continue
				}
				// Placed elsewhere: keep a local copy until the new one
				// is published running and healthy there.
				if _, here := r.Local()[id]; !here {
					continue
				}
				if r.handedOver(v, node, name, s.Name, idx, h, id, now) {
					continue
				}
				wants[id] = want{app: &a, svc: s, index: idx, hash: h, elsewhere: true}
			}
		}
	}
	return wants
}

func (r *reconciler) clearHandover(id string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if st := r.insts[id]; st != nil {
		st.handover = time.Time{}
	}
}

// handedOver reports whether the instance may stop here: its new node runs
// it healthy, or the handover has waited too long.
func (r *reconciler) handedOver(v *view, node, app, svc string, idx int, hash, id string, now time.Time) bool {
	if in, ok := v.instances[appapi.InstanceKey(node, app, svc, idx)]; ok && !v.failed[node] &&
		in.Status == appapi.StatusRunning && in.Health != appapi.HealthUnhealthy && in.SpecHash == hash {
		return true
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	st := r.insts[id]
	if st == nil {
		st = &instState{health: appapi.HealthUnknown}
		r.insts[id] = st
	}
	if st.handover.IsZero() {
		st.handover = now
	}
	return now.Sub(st.handover) > r.cfg.HandoverTimeout
}

func (r *reconciler) state(id string) *instState {
	r.mu.Lock()
	defer r.mu.Unlock()
	st := r.insts[id]
	if st == nil {
		st = &instState{health: appapi.HealthUnknown}
		r.insts[id] = st
	}
	return st
}

// createParallel bounds how many instances one pass creates at once
// (namespace, CNI ADD, container, task: mostly waiting on other
// processes, so a few at a time finish sooner than one by one).
const createParallel = 4

// launch is an instance admitted for creation in this pass.
type launch struct {
	w  want
	st *instState
}

// create makes and starts an instance, or declines it when this node
// cannot run it.
func (r *reconciler) create(ctx context.Context, v *view, w want, now time.Time) {
	reserved := r.reservedMemory(v)
	if l, ok := r.admit(ctx, w, now, &reserved); ok {
		r.launch(ctx, l, now)
	}
}

// admit decides, in the pass's goroutine, whether an instance is created
// now: not while it backs off, not beyond this node's memory (reserved
// counts what exists and what this pass admitted already), not before its
// image is here (fetched in the background).
func (r *reconciler) admit(ctx context.Context, w want, now time.Time, reserved *int64) (launch, bool) {
	id := containerID(w.app.Spec.Name, w.svc.Name, w.index)
	st := r.state(id)
	if now.Before(st.nextStart) {
		return launch{}, false
	}
	if need := w.svc.Resources.Memory; need > 0 && r.cfg.MemoryMiB > 0 {
		if used := *reserved; used+need > r.cfg.MemoryMiB {
			reason := fmt.Sprintf("no capacity: instance asks %d MiB, %d of %d MiB are reserved", need, used, r.cfg.MemoryMiB)
			st.lastErr = reason
			r.fail(st, now)
			r.decline(ctx, w, reason)
			return launch{}, false
		}
		*reserved += need
	}
	if r.images != nil {
		// The image comes first, in the background: the pass never waits
		// for a transfer. Declined only when no peer has it at all.
		if err := r.imageReady(ctx, w.svc.Image, now); err != nil {
			switch {
			case errors.Is(err, errFetching):
				st.fetching, st.lastErr = true, ""
			case errors.Is(err, errdefs.ErrNotFound):
				st.fetching, st.lastErr = false, err.Error()
				r.fail(st, now)
				r.decline(ctx, w, err.Error())
			default:
				st.fetching, st.lastErr = true, err.Error()
			}
			if w.svc.Resources.Memory > 0 {
				*reserved -= w.svc.Resources.Memory
			}
			return launch{}, false
		}
		st.fetching = false
	}
	return launch{w: w, st: st}, true
}

// launchAll creates the admitted instances, createParallel at a time.
// Each touches only its own instState.
func (r *reconciler) launchAll(ctx context.Context, ls []launch, now time.Time) {
	if len(ls) == 1 {
		r.launch(ctx, ls[0], now)
		return
	}
	sem := make(chan struct{}, createParallel)
	var wg sync.WaitGroup
	for _, l := range ls {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			r.launch(ctx, l, now)
		}()
	}
	wg.Wait()
}

// launch attaches the instance to the network, makes its container and
// starts it.
func (r *reconciler) launch(ctx context.Context, l launch, now time.Time) {
	w, st := l.w, l.st
	id := containerID(w.app.Spec.Name, w.svc.Name, w.index)
	name := appapi.InstanceName(w.app.Spec.Name, w.svc.Name, w.index)
	labels := appapi.LabelMap(w.svc.Labels)
	labels[containers.LabelApp] = w.app.Spec.Name
	labels[containers.LabelService] = w.svc.Name
	labels[containers.LabelIndex] = strconv.Itoa(w.index)
	labels[containers.LabelSpec] = w.hash
	labels[containers.LabelRestarts] = "0"
	svc := *w.svc
	svc.Process.Env = append([]string{"STELLAR_APP=" + w.app.Spec.Name, "STELLAR_SERVICE=" + w.svc.Name, "STELLAR_INSTANCE=" + name, "STELLAR_NODE=" + r.cfg.Node}, w.svc.Process.Env...)
	spec := containers.Spec{ID: id, Hostname: name, Service: svc, Labels: labels, HostNetwork: !w.svc.NetworkEnabled()}
	attached := false
	t0 := time.Now()
	if w.svc.NetworkEnabled() && r.net != nil {
		att, err := r.net.Setup(ctx, id, w.app.Spec.Name, w.svc.Ports)
		if err != nil {
			r.fail(st, now)
			st.lastErr = err.Error()
			r.log.Warn("attach instance to the network", "container", id, "err", err)
			return
		}
		attached = true
		spec.NetNS, spec.ResolvConf = att.NetNS, att.ResolvConf
		labels[containers.LabelNetwork], labels[containers.LabelIP] = "cni", att.IP
	}
	t1 := time.Now()
	err := r.rt.Create(ctx, spec)
	if errors.Is(err, errdefs.ErrAlreadyExists) {
		err = nil
	}
	if err != nil && attached {
		if terr := r.net.Teardown(ctx, id, w.app.Spec.Name, w.svc.Ports); terr != nil {
			r.log.Warn("detach instance", "container", id, "err", terr)
		}
	}
	if err != nil {
		r.fail(st, now)
		st.lastErr = err.Error()
		if errors.Is(err, errdefs.ErrNotFound) {
			r.decline(ctx, w, err.Error())
		} else {
			r.log.Warn("create instance", "container", id, "err", err)
		}
		return
	}
	t2 := time.Now()
	if r.start(ctx, id, w, st, now) {
		r.log.Info("started instance", "container", id, "network", t1.Sub(t0).Round(time.Millisecond),
			"create", t2.Sub(t1).Round(time.Millisecond), "start", time.Since(t2).Round(time.Millisecond))
	}
}

// reservedMemory sums resources.memory of the instances that exist here.
func (r *reconciler) reservedMemory(v *view) int64 {
	var sum int64
	for _, c := range r.Local() {
		a, ok := v.apps[c.Labels[containers.LabelApp]]
		if !ok {
			continue
		}
		if s := a.Spec.Service(c.Labels[containers.LabelService]); s != nil {
			sum += s.Resources.Memory
		}
	}
	return sum
}

func (r *reconciler) decline(ctx context.Context, w want, reason string) {
	r.log.Warn("declining service", "app", w.app.Spec.Name, "service", w.svc.Name, "reason", reason)
	d := appapi.Decline{Reason: reason, SpecHash: w.hash, Updated: time.Now().UTC()}
	if _, err := r.st.Put(ctx, appapi.DeclineKey(r.cfg.Node, w.app.Spec.Name, w.svc.Name), d, ""); err != nil {
		r.log.Warn("write decline", "err", err)
	}
}

// start starts a created instance's task; false when it did not start.
func (r *reconciler) start(ctx context.Context, id string, w want, st *instState, now time.Time) bool {
	args := logdriver.Args(w.app.Spec.Name, w.svc.Name, appapi.InstanceName(w.app.Spec.Name, w.svc.Name, w.index), r.cfg.LogDir, r.cfg.JournalSocket)
	if _, err := r.rt.Start(ctx, id, args); err != nil {
		r.fail(st, now)
		st.lastErr = err.Error()
		r.log.Warn("start instance", "container", id, "err", err, "retry_in", st.nextStart.Sub(now).Round(time.Millisecond))
		return false
	}
	st.lastStart = now
	st.lastErr = ""
	st.everHealthy = false
	st.health = appapi.HealthUnknown
	st.healthFails = 0
	st.nextProbe = now
	return true
}

// fail records a failure and schedules the next try with exponential backoff.
func (r *reconciler) fail(st *instState, now time.Time) {
	st.failures++
	d := r.cfg.BackoffMin << min(st.failures-1, 20)
	if d > r.cfg.BackoffMax || d <= 0 {
		d = r.cfg.BackoffMax
	}
	st.nextStart = now.Add(d)
}

// keepRunning restarts a stopped task (with backoff) and one unhealthy
// past its retries; it also schedules health probes. w is nil when the
// cluster state cannot be read.
func (r *reconciler) keepRunning(ctx context.Context, c containers.Container, w *want, now time.Time) {
	st := r.state(c.ID)
	switch c.State {
	case containers.StateRunning:
		st.exitAt = time.Time{}
		if st.lastStart.IsZero() {
			st.lastStart = now // adopted after a restart of appd
		}
		if w == nil || w.svc.Health == nil {
			st.health = appapi.HealthHealthy
			return
		}
		h := w.svc.Health
		r.mu.Lock()
		fails, probing := st.healthFails, st.probing
		r.mu.Unlock()
		if fails >= h.Retries {
			r.log.Warn("instance unhealthy, restarting", "container", c.ID, "failed_checks", fails)
			if err := r.rt.Stop(ctx, c.ID, r.cfg.StopGrace); err != nil {
				r.log.Warn("stop unhealthy instance", "container", c.ID, "err", err)
				return
			}
			r.fail(st, now)
			r.restart(ctx, c, w, st, now)
			return
		}
		if !probing && !now.Before(st.nextProbe) {
			r.mu.Lock()
			st.probing = true
			st.nextProbe = now.Add(h.Interval.D())
			r.mu.Unlock()
			go r.runProbe(ctx, c, h, st)
		}
	case containers.StateStopped, containers.StateCreated:
		if st.exitAt.IsZero() {
			if !st.lastStart.IsZero() && now.Sub(st.lastStart) > time.Minute {
				st.failures = 0
			}
			st.exitAt = now
			r.fail(st, now)
			r.log.Info("instance exited", "container", c.ID, "exit_code", c.ExitCode, "restart_in", st.nextStart.Sub(now).Round(time.Millisecond))
		}
		if now.Before(st.nextStart) {
			return
		}
		r.restart(ctx, c, w, st, now)
	}
}

// restart starts the container's task again and counts it. A container on
// the CNI network whose pinned namespace is gone (/run/netns is a tmpfs: a
// reboot empties it) is attached again first; w is nil when the cluster
// state cannot be read.
func (r *reconciler) restart(ctx context.Context, c containers.Container, w *want, st *instState, now time.Time) {
	if err := r.reattach(ctx, c, w); err != nil {
		// As a failed start: the next pass sees it stopped and backs off.
		st.lastErr = err.Error()
		st.exitAt = time.Time{}
		r.log.Warn("restart instance", "container", c.ID, "err", err)
		return
	}
	n := c.Restarts() + 1
	if err := r.rt.SetLabel(ctx, c.ID, containers.LabelRestarts, strconv.Itoa(n)); err != nil {
		r.log.Warn("count restart", "container", c.ID, "err", err)
	}
	app, svc := c.Labels[containers.LabelApp], c.Labels[containers.LabelService]
	args := logdriver.Args(app, svc, appapi.InstanceName(app, svc, c.Index()), r.cfg.LogDir, r.cfg.JournalSocket)
	if _, err := r.rt.Start(ctx, c.ID, args); err != nil {
		st.lastErr = err.Error()
		r.log.Warn("restart instance", "container", c.ID, "err", err)
	} else {
		r.log.Info("restarted instance", "container", c.ID, "restarts", n)
		st.lastErr = ""
	}
	st.exitAt = time.Time{}
	st.lastStart = now
	r.mu.Lock()
	st.everHealthy = false
	st.health = appapi.HealthUnknown
	st.healthFails = 0
	st.nextProbe = now
	r.mu.Unlock()
}

// reattach sets the network of a stopped CNI container up again when its
// pinned namespace is missing: CNI DEL first (its old IP goes back to netd,
// so nothing leaks), then a new namespace at the same path (the one its OCI
// spec names), CNI ADD through netd's conflist and its resolv.conf, and the
// IP label (what publish reads) set to the new address. The container is
// kept, not made anew, so it comes back from local state alone: its ports
// come from the spec when the cluster state is readable (w != nil).
func (r *reconciler) reattach(ctx context.Context, c containers.Container, w *want) error {
	if c.Labels[containers.LabelNetwork] != "cni" || r.net == nil {
		return nil
	}
	if _, err := os.Stat(network.NetNSPath(c.ID)); err == nil || !errors.Is(err, os.ErrNotExist) {
		return nil
	}
	app := c.Labels[containers.LabelApp]
	var ports []appapi.Port
	if w != nil {
		ports = w.svc.Ports
	} else {
		r.log.Warn("reattach instance without the cluster state: host ports are mapped again on its next update", "container", c.ID)
	}
	if err := r.net.Teardown(ctx, c.ID, app, ports); err != nil {
		r.log.Warn("release the old network of instance", "container", c.ID, "err", err)
	}
	att, err := r.net.Setup(ctx, c.ID, app, ports)
	if err != nil {
		return fmt.Errorf("attach %s to the network again: %w", c.ID, err)
	}
	if err := r.rt.SetLabel(ctx, c.ID, containers.LabelIP, att.IP); err != nil {
		return fmt.Errorf("record the new ip of %s: %w", c.ID, err)
	}
	r.log.Info("attached instance to the network again", "container", c.ID, "old_ip", c.Labels[containers.LabelIP], "ip", att.IP)
	return nil
}

func (r *reconciler) runProbe(ctx context.Context, c containers.Container, h *appapi.Health, st *instState) {
	pctx, cancel := context.WithTimeout(ctx, h.Timeout.D())
	err := r.probe(pctx, c, h)
	cancel()
	r.mu.Lock()
	defer r.mu.Unlock()
	st.probing = false
	r.results = append(r.results, probeResult{st: st, err: err, retries: h.Retries})
	select {
	case r.kick <- struct{}{}:
	default:
	}
}

// probeResult is a finished health check, applied by the next pass (the
// loop's goroutine owns instState; probes only hand results over).
type probeResult struct {
	st      *instState
	err     error
	retries int
}

// applyProbes records the health checks that finished since the last pass.
func (r *reconciler) applyProbes(now time.Time) {
	r.mu.Lock()
	res := r.results
	r.results = nil
	r.mu.Unlock()
	for _, p := range res {
		st := p.st
		if p.err != nil {
			st.lastErr = "health: " + p.err.Error()
			if !st.everHealthy && now.Sub(st.lastStart) < startGrace {
				continue // still starting: not yet a failure
			}
			st.healthFails++
			if st.health != appapi.HealthHealthy || st.healthFails >= p.retries {
				st.health = appapi.HealthUnhealthy
			}
			continue
		}
		st.healthFails = 0
		st.health = appapi.HealthHealthy
		st.everHealthy = true
		if strings.HasPrefix(st.lastErr, "health: ") {
			st.lastErr = ""
		}
	}
}

// mayUpdate gates a rolling update: at most update.parallel instances of
// the service, cluster-wide, may be down or unhealthy, and batches are
// update.delay apart.
func (r *reconciler) mayUpdate(v *view, w want, c containers.Container, now time.Time) bool {
	key := w.app.Spec.Name + "/" + w.svc.Name
	// Replacing a copy that is down already costs nothing.
	if st := r.state(c.ID); c.State != containers.StateRunning || st.health == appapi.HealthUnhealthy {
		return true
	}
	r.mu.Lock()
	last := r.lastBatch[key]
	r.mu.Unlock()
	if !last.IsZero() && now.Sub(last) < w.svc.Update.Delay.D() {
		return false
	}
	notReady := 0
	for _, in := range v.instances {
		if in.App != w.app.Spec.Name || in.Service != w.svc.Name || in.Node == r.cfg.Node {
			continue
		}
		if !w.svc.Global && in.Index >= w.svc.Count() {
			continue
		}
		if in.Status != appapi.StatusRunning || in.Health != appapi.HealthHealthy {
			notReady++
		}
	}
	// This node's copies: down, unhealthy, or updated and not yet proven.
	prefix := w.app.Spec.Name + "." + w.svc.Name + "."
	local := r.Local()
	r.mu.Lock()
	for id, st := range r.insts {
		if !strings.HasPrefix(id, prefix) || id == c.ID {
			continue
		}
		lc, ok := local[id]
		if !ok && st.updatedAt.IsZero() {
			continue
		}
		if !ok || lc.State != containers.StateRunning || st.health != appapi.HealthHealthy || !st.updatedAt.IsZero() {
			notReady++
		}
	}
	r.mu.Unlock()
	if notReady >= w.svc.Update.Parallel {
		return false
	}
	r.mu.Lock()
	r.lastBatch[key] = now
	r.mu.Unlock()
	return true
}

// startGrace is how long failed health checks of a starting instance (one
// that has not passed a check since it started) are not counted.
const startGrace = 30 * time.Second

// minStable is how long an updated instance with no health check must
// run before the update moves on.
const minStable = 5 * time.Second

// revertDeadline is how long an updated instance has to turn healthy.
func revertDeadline(s *appapi.Service) time.Duration {
	d := 30 * time.Second
	if h := s.Health; h != nil {
		if hd := time.Duration(h.Retries+2)*h.Interval.D() + h.Timeout.D(); hd > d {
			d = hd
		}
	}
	return d
}

// checkRevert puts the previous spec back when an update does not take:
// the updated instance does not turn healthy in time, or the update could
// not be applied (image missing) in time; only with update.auto_revert.
func (r *reconciler) checkRevert(ctx context.Context, v *view, w want, c containers.Container, now time.Time) {
	st := r.state(c.ID)
	var since time.Time
	var why string
	switch {
	case c.Labels[containers.LabelSpec] != w.hash && !st.updatePending.IsZero():
		since, why = st.updatePending, "could not be applied"
	case !st.updatedAt.IsZero():
		// Proven: healthy, or (with no check) running for minStable.
		if st.health == appapi.HealthHealthy && c.State == containers.StateRunning &&
			(w.svc.Health != nil || now.Sub(st.lastStart) >= minStable) {
			st.updatedAt = time.Time{}
			return
		}
		since, why = st.updatedAt, "did not turn healthy"
	default:
		return
	}
	if now.Sub(since) < revertDeadline(w.svc) {
		return
	}
	st.updatedAt, st.updatePending = time.Time{}, time.Time{}
	if !w.svc.Update.AutoRevert || w.app.Previous == nil {
		r.log.Warn("update of instance "+why, "container", c.ID)
		return
	}
	rec := w.app.Record
	rec.Spec, rec.Previous = *w.app.Previous, nil
	rec.Generation++
	rec.Reverted = fmt.Sprintf("the update of instance %s %s within %s: reverted", appapi.InstanceName(w.app.Spec.Name, w.svc.Name, w.index), why, revertDeadline(w.svc))
	if st.lastErr != "" {
		rec.Reverted += " (" + st.lastErr + ")"
	}
	rec.Updated = now.UTC()
	if _, err := r.st.Put(ctx, appapi.AppKey(w.app.Spec.Name), rec, w.app.Version); err != nil {
		r.log.Warn("revert update", "app", w.app.Spec.Name, "err", err)
		return
	}
	r.log.Warn("reverted update", "app", w.app.Spec.Name, "reason", rec.Reverted)
}

// publish writes this node's instances and removes stale keys.
func (r *reconciler) publish(ctx context.Context, v *view, wants map[string]want) error {
	local := r.Local()
	var errs []error
	mine := map[string]bool{}
	type put struct {
		key string
		in  appapi.Instance
	}
	var puts []put
	for id, w := range wants {
		c, ok := local[id]
		st := r.state(id)
		in := appapi.Instance{App: w.app.Spec.Name, Service: w.svc.Name, Index: w.index, Node: r.cfg.Node,
			Image: w.svc.Image, Ports: w.svc.Ports, SpecHash: w.hash, Health: st.health, Error: st.lastErr}
		switch {
		case !ok && st.fetching:
			in.Status = appapi.StatusFetching
		case !ok:
			if st.lastErr == "" {
				continue
			}
			in.Status = appapi.StatusFailed
		case c.State == containers.StateRunning:
			in.Status = appapi.StatusRunning
			in.ContainerID, in.PID, in.Restarts = c.ID, c.PID, c.Restarts()
			in.Started = st.lastStart.UTC().Truncate(time.Second)
			if w.svc.Health == nil {
				in.Health = appapi.HealthHealthy
			}
		default:
			in.Status = appapi.StatusRestarting
			in.ContainerID, in.Restarts = c.ID, c.Restarts()
			in.Health = appapi.HealthUnhealthy
		}
		if c.Labels[containers.LabelSpec] != "" {
			in.SpecHash = c.Labels[containers.LabelSpec]
		}
		if !w.svc.NetworkEnabled() {
			in.IP = hostIP()
		} else if ok {
			in.IP = c.Labels[containers.LabelIP]
		}
		key := appapi.InstanceKey(r.cfg.Node, in.App, in.Service, in.Index)
		mine[key] = true
		r.mu.Lock()
		old, had := r.published[key]
		r.mu.Unlock()
		in.Updated = old.Updated
		if had && reflect.DeepEqual(old, in) {
			if _, inStore := v.instances[key]; inStore {
				continue
			}
		}
		in.Updated = time.Now().UTC()
		puts = append(puts, put{key, in})
	}
	// Written a few at a time: after a pass that started many instances,
	// each write is a round trip to gossip.
	var emu sync.Mutex
	sem := make(chan struct{}, createParallel)
	var wg sync.WaitGroup
	for _, p := range puts {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			if _, err := r.st.Put(ctx, p.key, p.in, ""); err != nil {
				emu.Lock()
				errs = append(errs, err)
				emu.Unlock()
				return
			}
			r.mu.Lock()
			r.published[p.key] = p.in
			r.mu.Unlock()
		}()
	}
	wg.Wait()
	prefix := appapi.NodesPrefix + r.cfg.Node + "/instances/"
	for key := range v.instances {
		if strings.HasPrefix(key, prefix) && !mine[key] {
			if err := r.st.Delete(ctx, key, ""); err != nil && !errors.Is(err, errdefs.ErrNotFound) {
				errs = append(errs, err)
				continue
			}
			r.mu.Lock()
			delete(r.published, key)
			r.mu.Unlock()
		}
	}
	return errors.Join(errs...)
}

// hostIP is the address of a host-network instance as seen from this
// node: such instances share the node's addresses.
func hostIP() string { return "127.0.0.1" }

func withoutDeclines(nodes []placement.Node) []placement.Node {
	out := make([]placement.Node, len(nodes))
	for i, n := range nodes {
		n.Declined = nil
		out[i] = n
	}
	return out
}
