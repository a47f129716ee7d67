// Package containers runs Stellar's instances on containerd: image import
// and pull, container and task lifecycle, labels that mark Stellar's
// containers, and the OCI spec built from an app service.
package containers

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/containerd/containerd"
	"github.com/containerd/containerd/cio"
	"github.com/containerd/containerd/containers"
	cerrdefs "github.com/containerd/containerd/errdefs"
	"github.com/containerd/containerd/images"
	"github.com/containerd/containerd/images/archive"
	"github.com/containerd/containerd/namespaces"
	"github.com/containerd/containerd/oci"
	"github.com/containerd/platforms"
	"github.com/opencontainers/runtime-spec/specs-go"

	"stellar.dev/api/appapi"
	"stellar.dev/api/errdefs"
)

// Labels set on every Stellar container.
const (
	LabelApp      = "stellar.app"
	LabelService  = "stellar.service"
	LabelIndex    = "stellar.index"
	LabelSpec     = "stellar.spec"     // hash of the service spec it runs
	LabelRestarts = "stellar.restarts" // restarts so far
	LabelNetwork  = "stellar.network"  // "cni" when attached through CNI
	LabelIP       = "stellar.ip"       // the instance's IP on the node's bridge
)

// Task states reported by Status.
const (
	StateRunning = "running"
	StateStopped = "stopped" // exited, or no task
	StateCreated = "created"
	StatePaused  = "paused"
	StateUnknown = "unknown"
)

// Config says where containerd is and how logs leave the containers.
type Config struct {
	// Address is containerd's socket.
	Address string
	// Namespace is the containerd namespace of Stellar's containers.
	Namespace string
	// Snapshotter and Runtime are the defaults of a service.
	Snapshotter string
	Runtime     string
	// LogBinary is the program containerd's shim starts as the binary log
	// driver of each task (stellar-appd itself); LogArgs are passed to it.
	// Empty: output is discarded.
	LogBinary string
	// Fetch, when set, is asked for an OCI archive of an image that is not
	// on this node before it is pulled from a registry (peers of the
	// cluster: edge sites have no registry). It returns ErrNotFound when
	// no peer has the image, another error when one has it but could not
	// give it (worth another try).
	// Peers in skip gave a bad copy already and are not asked again.
	Fetch func(ctx context.Context, ref string, skip []string) (Fetched, error)
}

// Fetched is an image archive streamed from a peer.
type Fetched struct {
	// Body is the OCI archive; the import closes it.
	Body io.ReadCloser
	// Digest is the image's digest as the peer publishes it (the target
	// of its image record); the imported image must have it. Empty: the
	// peer said nothing, and only containerd's check of every blob against
	// its manifest applies.
	Digest string
	// From names the peer, for messages.
	From string
}

// ErrDigestMismatch is the error of a fetched image whose digest is not
// the one its peer publishes.
var ErrDigestMismatch = errors.New("digest mismatch")

// Runtime is a connection to containerd.
type Runtime struct {
	cfg Config

	mu     sync.Mutex
	client *containerd.Client
}

// New returns a runtime; it connects on first use.
func New(cfg Config) *Runtime { return &Runtime{cfg: cfg} }

// Namespace returns the containerd namespace.
func (r *Runtime) Namespace() string { return r.cfg.Namespace }

func (r *Runtime) conn(ctx context.Context) (*containerd.Client, context.Context, error) {
	ctx = namespaces.WithNamespace(ctx, r.cfg.Namespace)
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.client != nil {
		return r.client, ctx, nil
	}
	if _, err := os.Stat(r.cfg.Address); err != nil {
		return nil, ctx, errdefs.New(errdefs.ErrUnavailable, "containerd is not running at %s", r.cfg.Address)
	}
	c, err := containerd.New(r.cfg.Address, containerd.WithTimeout(5*time.Second))
	if err != nil {
		return nil, ctx, errdefs.New(errdefs.ErrUnavailable, "connect to containerd at %s: %v", r.cfg.Address, err)
	}
	r.client = c
	return c, ctx, nil
}

// Ping checks that containerd answers.
func (r *Runtime) Ping(ctx context.Context) error {
	c, ctx, err := r.conn(ctx)
	if err != nil {
		return err
	}
	if _, err := c.Version(ctx); err != nil {
		return errdefs.New(errdefs.ErrUnavailable, "containerd at %s: %v", r.cfg.Address, err)
	}
	return nil
}

// Close drops the connection.
func (r *Runtime) Close() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.client == nil {
		return nil
	}
	err := r.client.Close()
	r.client = nil
	return err
}

// Container is one of Stellar's containers with its task's state.
type Container struct {
	ID       string
	Labels   map[string]string
	Image    string
	State    string
	PID      uint32
	ExitCode uint32
	ExitedAt time.Time
}

// Restarts reads the restart counter label.
func (c Container) Restarts() int {
	n, _ := strconv.Atoi(c.Labels[LabelRestarts])
	return n
}

// Index reads the instance index label.
func (c Container) Index() int {
	n, err := strconv.Atoi(c.Labels[LabelIndex])
	if err != nil {
		return -1
	}
	return n
}

// List returns Stellar's containers (those labelled with an app).
func (r *Runtime) List(ctx context.Context) ([]Container, error) {
	c, ctx, err := r.conn(ctx)
	if err != nil {
		return nil, err
	}
	cs, err := c.Containers(ctx, "labels."+strconv.Quote(LabelApp))
	if err != nil {
		return nil, r.wrap("list containers", err)
	}
	out := make([]Container, 0, len(cs))
	for _, ct := range cs {
		info, err := ct.Info(ctx, containerd.WithoutRefreshedMetadata)
		if err != nil {
			if cerrdefs.IsNotFound(err) {
				continue
			}
			return nil, r.wrap("read container "+ct.ID(), err)
		}
		out = append(out, r.status(ctx, ct, info))
	}
	return out, nil
}

func (r *Runtime) status(ctx context.Context, ct containerd.Container, info containers.Container) Container {
	res := Container{ID: ct.ID(), Labels: info.Labels, Image: info.Image, State: StateStopped}
	task, err := ct.Task(ctx, nil)
	if err != nil {
		return res
	}
	st, err := task.Status(ctx)
	if err != nil {
		res.State = StateUnknown
		return res
	}
	res.PID = task.Pid()
	switch st.Status {
	case containerd.Running:
		res.State = StateRunning
	case containerd.Created:
		res.State = StateCreated
	case containerd.Paused, containerd.Pausing:
		res.State = StatePaused
	case containerd.Stopped:
		res.State = StateStopped
		res.ExitCode, res.ExitedAt = st.ExitStatus, st.ExitTime
	default:
		res.State = StateUnknown
	}
	return res
}

// Get returns one container.
func (r *Runtime) Get(ctx context.Context, id string) (Container, error) {
	c, ctx, err := r.conn(ctx)
	if err != nil {
		return Container{}, err
	}
	ct, err := c.LoadContainer(ctx, id)
	if err != nil {
		return Container{}, r.wrap("load container "+id, err)
	}
	info, err := ct.Info(ctx, containerd.WithoutRefreshedMetadata)
	if err != nil {
		return Container{}, r.wrap("read container "+id, err)
	}
	return r.status(ctx, ct, info), nil
}

// Spec is what Create needs to make an instance's container.
type Spec struct {
	ID       string
	Hostname string
	Service  appapi.Service
	Labels   map[string]string
	// NetNS is the path of the network namespace to join; empty with
	// HostNetwork false means a fresh, empty one.
	NetNS       string
	HostNetwork bool
	// ResolvConf and Hosts are bind-mounted when set.
	ResolvConf string
	Hosts      string
	// LogArgs are passed to the log binary.
	LogArgs map[string]string
}

// EnsureImage returns the image, pulling it when it is missing locally.
func (r *Runtime) EnsureImage(ctx context.Context, ref string) (containerd.Image, error) {
	c, ctx, err := r.conn(ctx)
	if err != nil {
		return nil, err
	}
	img, err := c.GetImage(ctx, ref)
	if err == nil {
		return img, nil
	}
	if !cerrdefs.IsNotFound(err) {
		return nil, r.wrap("find image "+ref, err)
	}
	var fetchErr error
	if r.cfg.Fetch != nil {
		if img, fetchErr = r.fetch(ctx, c, ref); fetchErr == nil {
			return img, nil
		}
		if !errors.Is(fetchErr, errdefs.ErrNotFound) {
			// A peer has it but did not give a good copy: the cluster's
			// copy is the one to run (no pull), and worth another try,
			// not a reason to decline.
			return nil, errdefs.New(errdefs.ErrUnavailable, "image %s is not on this node and a peer has it but did not give it: %v", ref, fetchErr)
		}
	}
	img, err = c.Pull(ctx, ref, containerd.WithPullUnpack)
	if err != nil {
		if fetchErr != nil {
			return nil, errdefs.New(errdefs.ErrNotFound, "image %s is not on this node, no peer has it (%v) and it cannot be pulled: %v", ref, fetchErr, err)
		}
		return nil, errdefs.New(errdefs.ErrNotFound, "image %s is not on this node and cannot be pulled: %v", ref, err)
	}
	return img, nil
}

// fetch imports ref from a peer, asking the next peer when one gives a bad
// copy (a broken transfer or another digest). The error is ErrNotFound
// only when no peer has the image at all.
func (r *Runtime) fetch(ctx context.Context, c *containerd.Client, ref string) (containerd.Image, error) {
	var skip []string
	var bad []error
	for {
		f, err := r.cfg.Fetch(ctx, ref, skip)
		if err != nil {
			if len(bad) > 0 && errors.Is(err, errdefs.ErrNotFound) {
				return nil, errdefs.New(errdefs.ErrUnavailable, "no peer gave a good copy of %s: %v", ref, errors.Join(bad...))
			}
			return nil, err
		}
		img, err := r.fetchFrom(ctx, c, ref, f)
		if err == nil {
			return img, nil
		}
		if ctx.Err() != nil {
			return nil, err
		}
		bad = append(bad, err)
		if f.From == "" || slices.Contains(skip, f.From) {
			return nil, errdefs.New(errdefs.ErrUnavailable, "fetch %s: %v", ref, errors.Join(bad...))
		}
		skip = append(skip, f.From)
	}
}

// fetchFrom imports ref from the archive a peer streams and checks that
// the image's digest is the one the peer publishes; a copy that is not is
// deleted at once. Names the archive holds besides ref are not kept.
//
// containerd names the image as it imports it (the name annotation of the
// archive's index), so between the import and the check the name exists:
// nothing runs it meanwhile, since the fetch is what the reconciler waits
// for before it creates a container.
func (r *Runtime) fetchFrom(ctx context.Context, c *containerd.Client, ref string, f Fetched) (containerd.Image, error) {
	defer f.Body.Close()
	is := c.ImageService()
	before := map[string]bool{}
	if list, err := is.List(ctx); err == nil {
		for _, im := range list {
			before[im.Name] = true
		}
	}
	imgs, err := c.Import(ctx, f.Body, containerd.WithAllPlatforms(false))
	if err != nil {
		return nil, fmt.Errorf("import %s from %s: %w", ref, f.From, err)
	}
	var got *images.Image
	for i := range imgs {
		switch {
		case imgs[i].Name == ref:
			got = &imgs[i]
		case !before[imgs[i].Name]:
			_ = is.Delete(ctx, imgs[i].Name) // not asked for
		}
	}
	if got == nil {
		return nil, fmt.Errorf("the archive %s gave for %s does not hold it: %w", f.From, ref, ErrDigestMismatch)
	}
	if f.Digest != "" && got.Target.Digest.String() != f.Digest {
		if err := is.Delete(context.WithoutCancel(ctx), ref, images.SynchronousDelete()); err != nil {
			return nil, fmt.Errorf("delete the bad copy of %s from %s (digest %s, published %s): %w", ref, f.From, got.Target.Digest, f.Digest, err)
		}
		return nil, fmt.Errorf("image %s from %s has digest %s, the peer publishes %s: %w", ref, f.From, got.Target.Digest, f.Digest, ErrDigestMismatch)
	}
	img := containerd.NewImage(c, *got)
	if ok, _ := img.IsUnpacked(ctx, r.cfg.Snapshotter); !ok {
		if err := img.Unpack(ctx, r.cfg.Snapshotter); err != nil {
			return nil, r.wrap("unpack "+ref, err)
		}
	}
	return img, nil
}

// Export writes an OCI archive of ref (this platform's manifest, with its
// name annotations, so Import on another node gives it the same name).
func (r *Runtime) Export(ctx context.Context, ref string, w io.Writer) error {
	c, ctx, err := r.conn(ctx)
	if err != nil {
		return err
	}
	if err := c.Export(ctx, w, archive.WithImage(c.ImageService(), ref), archive.WithPlatform(platforms.Default())); err != nil {
		return r.wrap("export image "+ref, err)
	}
	return nil
}

// HasImage reports whether ref is present locally.
func (r *Runtime) HasImage(ctx context.Context, ref string) (bool, error) {
	c, ctx, err := r.conn(ctx)
	if err != nil {
		return false, err
	}
	_, err = c.GetImage(ctx, ref)
	if cerrdefs.IsNotFound(err) {
		return false, nil
	}
	return err == nil, r.wrap("find image "+ref, err)
}

// Create makes the container (it does not start it).
func (r *Runtime) Create(ctx context.Context, s Spec) error {
	c, nctx, err := r.conn(ctx)
	if err != nil {
		return err
	}
	img, err := r.EnsureImage(ctx, s.Service.Image)
	if err != nil {
		return err
	}
	snap := s.Service.Snapshotter
	if snap == "" {
		snap = r.cfg.Snapshotter
	}
	if ok, _ := img.IsUnpacked(nctx, snap); !ok {
		if err := img.Unpack(nctx, snap); err != nil {
			return r.wrap("unpack image "+s.Service.Image, err)
		}
	}
	rt := s.Service.Runtime
	if rt == "" {
		rt = r.cfg.Runtime
	}
	opts, err := specOpts(img, s)
	if err != nil {
		return err
	}
	_, err = c.NewContainer(nctx, s.ID,
		containerd.WithImage(img),
		containerd.WithSnapshotter(snap),
		containerd.WithNewSnapshot(s.ID, img),
		containerd.WithRuntime(rt, nil),
		containerd.WithContainerLabels(s.Labels),
		containerd.WithNewSpec(opts...),
	)
	if err != nil {
		if cerrdefs.IsAlreadyExists(err) {
			return errdefs.New(errdefs.ErrAlreadyExists, "container %s exists", s.ID)
		}
		return r.wrap("create container "+s.ID, err)
	}
	return nil
}

func specOpts(img containerd.Image, s Spec) ([]oci.SpecOpts, error) {
	svc := s.Service
	opts := []oci.SpecOpts{oci.WithImageConfig(img), oci.WithHostname(s.Hostname)}
	if len(svc.Process.Args) > 0 {
		opts = append(opts, oci.WithProcessArgs(svc.Process.Args...))
	}
	if len(svc.Process.Env) > 0 {
		opts = append(opts, oci.WithEnv(svc.Process.Env))
	}
	if svc.Process.Cwd != "" {
		opts = append(opts, oci.WithProcessCwd(svc.Process.Cwd))
	}
	if svc.Process.UID != 0 || svc.Process.GID != 0 {
		opts = append(opts, oci.WithUIDGID(uint32(svc.Process.UID), uint32(svc.Process.GID)))
	}
	if svc.Resources.CPU > 0 {
		const period = 100000
		opts = append(opts, oci.WithCPUCFS(int64(svc.Resources.CPU*period), period))
	}
	if svc.Resources.Memory > 0 {
		opts = append(opts, oci.WithMemoryLimit(uint64(svc.Resources.Memory)<<20))
	}
	var mounts []specs.Mount
	for _, m := range svc.Mounts {
		typ, opt := m.Type, m.Options
		if typ == "bind" || typ == "rbind" {
			if _, err := os.Stat(m.Source); err != nil {
				return nil, errdefs.New(errdefs.ErrNotFound, "mount source %s of service %s: %v", m.Source, svc.Name, err)
			}
			typ = "bind"
			if len(opt) == 0 {
				opt = []string{"rbind"}
			}
		}
		mounts = append(mounts, specs.Mount{Type: typ, Source: m.Source, Destination: m.Destination, Options: opt})
	}
	if s.ResolvConf != "" {
		mounts = append(mounts, specs.Mount{Type: "bind", Source: s.ResolvConf, Destination: "/etc/resolv.conf", Options: []string{"rbind", "ro"}})
	}
	if s.Hosts != "" {
		mounts = append(mounts, specs.Mount{Type: "bind", Source: s.Hosts, Destination: "/etc/hosts", Options: []string{"rbind", "ro"}})
	}
	if len(mounts) > 0 {
		opts = append(opts, oci.WithMounts(mounts))
	}
	switch {
	case s.HostNetwork:
		opts = append(opts, oci.WithHostNamespace(specs.NetworkNamespace))
		if s.ResolvConf == "" {
			opts = append(opts, oci.WithHostResolvconf)
		}
		if s.Hosts == "" {
			opts = append(opts, oci.WithHostHostsFile)
		}
	case s.NetNS != "":
		opts = append(opts, oci.WithLinuxNamespace(specs.LinuxNamespace{Type: specs.NetworkNamespace, Path: s.NetNS}))
	}
	return opts, nil
}

// Start starts the container's task, replacing an exited one.
func (r *Runtime) Start(ctx context.Context, id string, logArgs map[string]string) (uint32, error) {
	c, ctx, err := r.conn(ctx)
	if err != nil {
		return 0, err
	}
	ct, err := c.LoadContainer(ctx, id)
	if err != nil {
		return 0, r.wrap("load container "+id, err)
	}
	if old, err := ct.Task(ctx, nil); err == nil {
		if _, err := old.Delete(ctx, containerd.WithProcessKill); err != nil && !cerrdefs.IsNotFound(err) {
			return 0, r.wrap("delete old task of "+id, err)
		}
	}
	creator := cio.NullIO
	if r.cfg.LogBinary != "" {
		creator = cio.BinaryIO(r.cfg.LogBinary, logArgs)
	}
	task, err := ct.NewTask(ctx, creator)
	if err != nil {
		return 0, r.wrap("create task of "+id, err)
	}
	if err := task.Start(ctx); err != nil {
		_, _ = task.Delete(ctx, containerd.WithProcessKill)
		return 0, r.wrap("start task of "+id, err)
	}
	return task.Pid(), nil
}

// SetLabel sets one label of a container.
func (r *Runtime) SetLabel(ctx context.Context, id, key, value string) error {
	c, ctx, err := r.conn(ctx)
	if err != nil {
		return err
	}
	ct, err := c.LoadContainer(ctx, id)
	if err != nil {
		return r.wrap("load container "+id, err)
	}
	if _, err := ct.SetLabels(ctx, map[string]string{key: value}); err != nil {
		return r.wrap("label container "+id, err)
	}
	return nil
}

// Stop ends the container's task: SIGTERM, then SIGKILL after grace.
func (r *Runtime) Stop(ctx context.Context, id string, grace time.Duration) error {
	c, ctx, err := r.conn(ctx)
	if err != nil {
		return err
	}
	ct, err := c.LoadContainer(ctx, id)
	if err != nil {
		if cerrdefs.IsNotFound(err) {
			return nil
		}
		return r.wrap("load container "+id, err)
	}
	task, err := ct.Task(ctx, nil)
	if err != nil {
		if cerrdefs.IsNotFound(err) {
			return nil
		}
		return r.wrap("load task of "+id, err)
	}
	st, err := task.Status(ctx)
	if err == nil && st.Status != containerd.Stopped {
		exitc, err := task.Wait(ctx)
		if err != nil {
			return r.wrap("wait for task of "+id, err)
		}
		_ = task.Kill(ctx, syscall.SIGTERM)
		select {
		case <-exitc:
		case <-time.After(grace):
			_ = task.Kill(ctx, syscall.SIGKILL, containerd.WithKillAll)
			select {
			case <-exitc:
			case <-time.After(30 * time.Second):
				return errdefs.New(errdefs.ErrUnavailable, "task of %s did not die after SIGKILL", id)
			}
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	if _, err := task.Delete(ctx, containerd.WithProcessKill); err != nil && !cerrdefs.IsNotFound(err) {
		return r.wrap("delete task of "+id, err)
	}
	return nil
}

// Remove stops and deletes the container with its snapshot.
func (r *Runtime) Remove(ctx context.Context, id string, grace time.Duration) error {
	if err := r.Stop(ctx, id, grace); err != nil {
		return err
	}
	c, ctx, err := r.conn(ctx)
	if err != nil {
		return err
	}
	ct, err := c.LoadContainer(ctx, id)
	if err != nil {
		if cerrdefs.IsNotFound(err) {
			return nil
		}
		return r.wrap("load container "+id, err)
	}
	if err := ct.Delete(ctx, containerd.WithSnapshotCleanup); err != nil && !cerrdefs.IsNotFound(err) {
		return r.wrap("delete container "+id, err)
	}
	return nil
}

// Exec runs args in the container and returns its exit code.
func (r *Runtime) Exec(ctx context.Context, id, execID string, args []string) (uint32, error) {
	c, nctx, err := r.conn(ctx)
	if err != nil {
		return 0, err
	}
	ct, err := c.LoadContainer(nctx, id)
	if err != nil {
		return 0, r.wrap("load container "+id, err)
	}
	task, err := ct.Task(nctx, nil)
	if err != nil {
		return 0, r.wrap("load task of "+id, err)
	}
	spec, err := ct.Spec(nctx)
	if err != nil {
		return 0, r.wrap("read spec of "+id, err)
	}
	pspec := *spec.Process
	pspec.Args = args
	pspec.Terminal = false
	p, err := task.Exec(nctx, execID, &pspec, cio.NullIO)
	if err != nil {
		return 0, r.wrap("exec in "+id, err)
	}
	defer p.Delete(context.WithoutCancel(nctx), containerd.WithProcessKill)
	exitc, err := p.Wait(nctx)
	if err != nil {
		return 0, r.wrap("wait for exec in "+id, err)
	}
	if err := p.Start(nctx); err != nil {
		return 0, r.wrap("start exec in "+id, err)
	}
	select {
	case st := <-exitc:
		return st.ExitCode(), st.Error()
	case <-ctx.Done():
		_ = p.Kill(nctx, syscall.SIGKILL)
		return 0, ctx.Err()
	}
}

// Import reads an OCI or Docker archive into the image store and unpacks it.
func (r *Runtime) Import(ctx context.Context, archive io.Reader) ([]appapi.Image, error) {
	c, ctx, err := r.conn(ctx)
	if err != nil {
		return nil, err
	}
	imgs, err := c.Import(ctx, archive, containerd.WithAllPlatforms(false))
	if err != nil {
		return nil, errdefs.New(errdefs.ErrInvalidArgument, "import image archive: %v", err)
	}
	var out []appapi.Image
	for _, im := range imgs {
		img := containerd.NewImage(c, im)
		if ok, _ := img.IsUnpacked(ctx, r.cfg.Snapshotter); !ok {
			if err := img.Unpack(ctx, r.cfg.Snapshotter); err != nil {
				return nil, r.wrap("unpack "+im.Name, err)
			}
		}
		out = append(out, toImage(ctx, c, im))
	}
	return out, nil
}

func toImage(ctx context.Context, c *containerd.Client, im images.Image) appapi.Image {
	size, _ := im.Size(ctx, c.ContentStore(), nil)
	return appapi.Image{Name: im.Name, Digest: im.Target.Digest.String(), Size: size, Created: im.CreatedAt}
}

// Images lists the images of the namespace.
func (r *Runtime) Images(ctx context.Context) ([]appapi.Image, error) {
	c, ctx, err := r.conn(ctx)
	if err != nil {
		return nil, err
	}
	ims, err := c.ImageService().List(ctx)
	if err != nil {
		return nil, r.wrap("list images", err)
	}
	out := make([]appapi.Image, 0, len(ims))
	for _, im := range ims {
		out = append(out, toImage(ctx, c, im))
	}
	return out, nil
}

// RemoveImage deletes an image; it refuses while a container uses it.
func (r *Runtime) RemoveImage(ctx context.Context, ref string) error {
	c, ctx, err := r.conn(ctx)
	if err != nil {
		return err
	}
	cs, err := c.Containers(ctx, "image=="+ref)
	if err == nil && len(cs) > 0 {
		return errdefs.New(errdefs.ErrConflict, "image %s is used by container %s", ref, cs[0].ID())
	}
	if err := c.ImageService().Delete(ctx, ref, images.SynchronousDelete()); err != nil {
		return r.wrap("remove image "+ref, err)
	}
	return nil
}

// wrap turns containerd errors into errdefs kinds.
func (r *Runtime) wrap(what string, err error) error {
	if err == nil {
		return nil
	}
	switch {
	case cerrdefs.IsNotFound(err):
		return errdefs.New(errdefs.ErrNotFound, "%s: %v", what, err)
	case cerrdefs.IsAlreadyExists(err):
		return errdefs.New(errdefs.ErrAlreadyExists, "%s: %v", what, err)
	case cerrdefs.IsInvalidArgument(err):
		return errdefs.New(errdefs.ErrInvalidArgument, "%s: %v", what, err)
	case cerrdefs.IsUnavailable(err), errors.Is(err, context.DeadlineExceeded):
		r.mu.Lock()
		if r.client != nil {
			_ = r.client.Close()
			r.client = nil
		}
		r.mu.Unlock()
		return errdefs.New(errdefs.ErrUnavailable, "%s: %v", what, err)
	}
	return fmt.Errorf("%s: %w", what, err)
}

// PrepareImage makes sure ref is present (pulling it if needed).
func (r *Runtime) PrepareImage(ctx context.Context, ref string) error {
	_, err := r.EnsureImage(ctx, ref)
	return err
}
