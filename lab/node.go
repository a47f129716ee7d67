package lab

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// UpOptions says what Up makes.
type UpOptions struct {
	// Nodes is how many nodes the lab has (node1..nodeN); default 3.
	Nodes int
	// Deb is Stellar's .deb to install in every node; empty means the newest
	// dist/stellar_*_amd64.deb when NoStellar is false (none found: a warning).
	Deb string
	// NoStellar boots plain nodes: no .deb, no cluster.
	NoStellar bool
	// ExtraPackages are Debian packages added to the node rootfs.
	ExtraPackages []string
	// BootTimeout bounds each node's boot; default 2 minutes.
	BootTimeout time.Duration
}

// Up makes the lab: the switch, the client and nodes node1..nodeN, booted and
// (unless NoStellar) running Stellar as one cluster. Running nodes are left
// alone, missing ones are made, so Up is idempotent.
func (l *Lab) Up(ctx context.Context, opts UpOptions) error {
	if opts.Nodes == 0 {
		opts.Nodes = 3
	}
	if opts.Nodes < 1 || opts.Nodes > MaxNodes {
		return fmt.Errorf("node count %d: want 1..%d", opts.Nodes, MaxNodes)
	}
	if opts.BootTimeout == 0 {
		opts.BootTimeout = 2 * time.Minute
	}
	var deb *debInfo
	if !opts.NoStellar {
		path := opts.Deb
		if path == "" {
			path = newestDeb()
		}
		if path == "" {
			l.Log.Warn("no Stellar .deb given and none in dist/: booting plain nodes (build one with make, or pass --deb)")
		} else {
			d, err := readDeb(ctx, path)
			if err != nil {
				return err
			}
			deb = d
		}
	}
	unlock, err := l.lock()
	if err != nil {
		return err
	}
	defer unlock()

	rootfs, err := l.EnsureRootfs(ctx, opts.ExtraPackages)
	if err != nil {
		return err
	}
	if deb != nil {
		// Nodes have no network: whatever the .deb needs must be in the rootfs.
		if missing := missingPackages(rootfs, deb.depends); len(missing) > 0 {
			l.Log.Info("the .deb needs packages the rootfs lacks", "packages", strings.Join(missing, ","))
			if rootfs, err = l.EnsureRootfs(ctx, append(slices.Clone(opts.ExtraPackages), missing...)); err != nil {
				return err
			}
		}
		// Keep our own copy: dist/ may be rebuilt while we install.
		snap := filepath.Join(l.StateDir, filepath.Base(deb.path))
		if err := copyFile(deb.path, snap); err != nil {
			return fmt.Errorf("copy .deb: %w", err)
		}
		deb.path = snap
	}
	if err := l.ensureSwitch(ctx); err != nil {
		return fmt.Errorf("make lab switch: %w", err)
	}
	var booted []string
	for i := 1; i <= opts.Nodes; i++ {
		name := NodeName(i)
		if s, err := l.readNodeState(name); err == nil && l.running(s) {
			continue
		}
		if err := l.bootNode(ctx, name, i, rootfs, opts.BootTimeout); err != nil {
			return fmt.Errorf("boot node %s: %w", name, err)
		}
		booted = append(booted, name)
	}
	if err := l.applyFaults(ctx); err != nil {
		return fmt.Errorf("re-apply faults: %w", err)
	}
	if len(booted) > 0 {
		l.Log.Info("nodes booted", "nodes", strings.Join(booted, ","))
	}
	if deb != nil {
		if err := l.installStellar(ctx, opts.Nodes, deb); err != nil {
			return err
		}
	}
	return nil
}

func (l *Lab) running(s *nodeState) bool {
	return alive(s.NspawnPID, s.NspawnStart) && alive(s.InitPID, s.InitStart)
}

// bootNode cleans up whatever a dead node left, then wires, mounts and boots it.
func (l *Lab) bootNode(ctx context.Context, name string, index int, rootfs string, timeout time.Duration) error {
	if err := l.stopNode(ctx, name); err != nil {
		return err
	}
	disk := l.nodeDisk(name)
	// A node keeps the rootfs its disk was made over: an upper dir only
	// makes sense on the lower dir it started with.
	if b, err := os.ReadFile(filepath.Join(disk, "rootfs")); err == nil {
		old := strings.TrimSpace(string(b))
		if old != rootfs && exists(filepath.Join(old, ".stellar-lab-packages")) {
			l.Log.Warn("node keeps the rootfs its disk was made on; run down to start afresh", "node", name, "rootfs", old)
			rootfs = old
		}
	}
	for _, d := range []string{"upper", "work", "containerd"} {
		if err := os.MkdirAll(filepath.Join(disk, d), 0o755); err != nil {
			return err
		}
	}
	if err := os.WriteFile(filepath.Join(disk, "rootfs"), []byte(rootfs+"\n"), 0o644); err != nil {
		return err
	}
	machineID, err := os.ReadFile(filepath.Join(disk, "machine-id"))
	if err != nil {
		b := make([]byte, 16)
		_, _ = rand.Read(b)
		machineID = []byte(hex.EncodeToString(b) + "\n")
		if err := os.WriteFile(filepath.Join(disk, "machine-id"), machineID, 0o644); err != nil {
			return err
		}
	}
	if err := l.wireNode(ctx, name, index); err != nil {
		return err
	}
	root := l.nodeRoot(name)
	if err := os.MkdirAll(root, 0o755); err != nil {
		return err
	}
	opts := fmt.Sprintf("lowerdir=%s,upperdir=%s,workdir=%s", rootfs, filepath.Join(disk, "upper"), filepath.Join(disk, "work"))
	if err := syscall.Mount("overlay", root, "overlay", 0, opts); err != nil {
		return fmt.Errorf("mount overlay root: %w", err)
	}
	var hosts strings.Builder
	hosts.WriteString("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n")
	fmt.Fprintf(&hosts, "%s\tclient\n", ClientAddr)
	for i := 1; i <= 9 || i <= index; i++ {
		fmt.Fprintf(&hosts, "%s\t%s\n", NodeAddr(i), NodeName(i))
	}
	if err := writeFiles(root, map[string]string{
		"etc/hostname":   name + "\n",
		"etc/machine-id": string(machineID),
		"etc/hosts":      hosts.String(),
	}); err != nil {
		return err
	}

	console, err := os.OpenFile(filepath.Join(l.nodeRunDir(name), "console.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer console.Close()
	cmd := exec.Command("systemd-nspawn",
		"--directory="+root,
		"--boot",
		"--register=no",
		"--keep-unit",
		"--machine="+l.machine(name),
		"--hostname="+name,
		"--capability=all",
		"--console=read-only",
		"--link-journal=no",
		"--resolv-conf=off",
		"--timezone=off",
		"--network-namespace-path="+netnsPath(l.NodeNS(name)),
		"--bind="+filepath.Join(disk, "containerd")+":/var/lib/containerd",
	)
	cmd.Env = nspawnEnv()
	cmd.Stdout, cmd.Stderr = console, console
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start systemd-nspawn: %w", err)
	}
	go cmd.Wait() // reap it if it dies while this process lives
	nsp, err := readProc(cmd.Process.Pid)
	if err != nil {
		return fmt.Errorf("systemd-nspawn exited at once: see %s", console.Name())
	}
	s := &nodeState{Name: name, Index: index, Addr: NodeAddr(index).String(), Rootfs: rootfs,
		NspawnPID: nsp.pid, NspawnStart: nsp.start}
	if err := l.writeNodeState(s); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	for s.InitPID == 0 {
		for _, p := range allProcs() {
			if p.ppid == nsp.pid && p.comm == "systemd" {
				s.InitPID, s.InitStart = p.pid, p.start
			}
		}
		if s.InitPID != 0 {
			break
		}
		if !alive(nsp.pid, nsp.start) {
			return fmt.Errorf("systemd-nspawn exited: %s", tail(console.Name(), 20))
		}
		if err := sleepCtx(ctx, 50*time.Millisecond); err != nil {
			return fmt.Errorf("wait for the node's systemd: %w", err)
		}
	}
	if err := l.writeNodeState(s); err != nil {
		return err
	}
	l.Log.Info("node starting", "node", name, "addr", s.Addr, "init_pid", s.InitPID)
	for {
		out, _ := l.Output(ctx, name, "systemctl", "is-system-running", "--wait")
		state := strings.TrimSpace(out)
		switch state {
		case "running":
			return nil
		case "degraded":
			failed, _ := l.Output(ctx, name, "systemctl", "--failed", "--no-legend", "--plain")
			l.Log.Warn("node is degraded", "node", name, "failed", strings.TrimSpace(failed))
			return nil
		}
		if !l.running(s) {
			return fmt.Errorf("node died while booting: %s", tail(console.Name(), 20))
		}
		if err := sleepCtx(ctx, 200*time.Millisecond); err != nil {
			return fmt.Errorf("wait for boot (last state %q): %w", state, err)
		}
	}
}

// stopNode kills a node's whole process tree at once (a power cut), unmounts
// its root and deletes its network namespace. Its disk stays.
func (l *Lab) stopNode(ctx context.Context, name string) error {
	procs := allProcs()
	var pids []int
	if s, err := l.readNodeState(name); err == nil {
		if alive(s.NspawnPID, s.NspawnStart) {
			pids = append(pids, descendants(s.NspawnPID, procs)...)
		}
		if alive(s.InitPID, s.InitStart) {
			pids = append(pids, descendants(s.InitPID, procs)...)
		}
	}
	// Whatever else runs in the node's network namespace (exec'd commands,
	// fault helpers) or is an nspawn of this node's root goes too.
	pids = append(pids, procsInNetns(l.NodeNS(name), procs)...)
	root := l.nodeRoot(name)
	for _, p := range procs {
		if p.comm == "systemd-nspawn" {
			if cl, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", p.pid)); err == nil &&
				strings.Contains(string(cl), "--directory="+root+"\x00") {
				pids = append(pids, descendants(p.pid, procs)...)
			}
		}
	}
	slices.Sort(pids)
	pids = slices.Compact(pids)
	if len(pids) > 0 {
		if !killAll(pids, 10*time.Second) {
			return fmt.Errorf("kill processes of %s: some survive", name)
		}
	}
	removeNspawnLock(root)
	if err := unmountUnder(root); err != nil {
		return err
	}
	if err := delNetns(ctx, l.NodeNS(name)); err != nil {
		return err
	}
	_ = os.Remove(l.nodeStateFile(name))
	_ = os.RemoveAll(filepath.Join("/run/systemd/nspawn/propagate", l.machine(name)))
	return nil
}

// PowerOff cuts a node's power: its whole process tree dies at once, its
// mounts and namespace go. Up boots it again with its disk as it was.
func (l *Lab) PowerOff(ctx context.Context, name string) error {
	if _, err := NodeIndex(name); err != nil {
		return err
	}
	unlock, err := l.lock()
	if err != nil {
		return err
	}
	defer unlock()
	if err := l.stopNode(ctx, name); err != nil {
		return fmt.Errorf("power off %s: %w", name, err)
	}
	return nil
}

// DownOptions says what Down keeps.
type DownOptions struct {
	// KeepDisks keeps the nodes' disks (overlay upper dirs and containerd
	// state) under DataDir, so the next Up boots the same nodes again.
	KeepDisks bool
}

// Down removes every namespace, mount, veth and process the lab made. It is
// idempotent: with nothing up it does nothing.
func (l *Lab) Down(ctx context.Context, opts DownOptions) error {
	unlock, err := l.lock()
	if err != nil {
		return err
	}
	defer unlock()
	names := map[string]bool{}
	nodes, _ := l.knownNodes()
	for _, s := range nodes {
		names[s.Name] = true
	}
	for _, ns := range l.labNetns() {
		if n, ok := strings.CutPrefix(ns, l.Name+"-"); ok {
			if _, err := NodeIndex(n); err == nil {
				names[n] = true
			}
		}
	}
	for _, n := range l.diskNodes() {
		names[n] = true
	}
	var errs []error
	for name := range names {
		if err := l.stopNode(ctx, name); err != nil {
			errs = append(errs, fmt.Errorf("stop %s: %w", name, err))
		}
	}
	for _, ns := range []string{l.ClientNS(), l.SwitchNS()} {
		if pids := procsInNetns(ns, allProcs()); len(pids) > 0 {
			killAll(pids, 5*time.Second)
		}
		if err := delNetns(ctx, ns); err != nil {
			errs = append(errs, err)
		}
	}
	if err := unmountUnder(l.StateDir); err != nil {
		errs = append(errs, err)
	}
	if len(errs) > 0 {
		return errors.Join(errs...)
	}
	if err := os.RemoveAll(l.StateDir); err != nil {
		return fmt.Errorf("remove state dir: %w", err)
	}
	if !opts.KeepDisks {
		if err := os.RemoveAll(filepath.Join(l.DataDir, "nodes")); err != nil {
			return fmt.Errorf("remove node disks: %w", err)
		}
		_ = os.Remove(l.DataDir) // only if empty
	}
	return nil
}

// unmountUnder unmounts every mount at or below dir, deepest first.
func unmountUnder(dir string) error {
	mounts, err := mountsUnder(dir)
	if err != nil {
		return err
	}
	for _, m := range mounts {
		if err := syscall.Unmount(m, 0); err != nil && !errors.Is(err, syscall.EINVAL) {
			if err := syscall.Unmount(m, syscall.MNT_DETACH); err != nil && !errors.Is(err, syscall.EINVAL) {
				return fmt.Errorf("unmount %s: %w", m, err)
			}
		}
	}
	return nil
}

// mountsUnder lists mount points at or below dir in this mount namespace, deepest first.
func mountsUnder(dir string) ([]string, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		fs := strings.Fields(sc.Text())
		if len(fs) < 5 {
			continue
		}
		mp := unescapeMount(fs[4])
		if mp == dir || strings.HasPrefix(mp, dir+"/") {
			out = append(out, mp)
		}
	}
	slices.SortFunc(out, func(a, b string) int { return len(b) - len(a) })
	return out, sc.Err()
}

func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// NodeStatus is one node as Status sees it.
type NodeStatus struct {
	Name    string
	Addr    string
	Running bool   // the node's nspawn and systemd are alive
	System  string // `systemctl is-system-running`
	Stellar string // `systemctl is-active stellar.target`, "" when not installed
}

// Status reports every node the lab knows (running, or with a disk).
func (l *Lab) Status(ctx context.Context) ([]NodeStatus, error) {
	names := map[string]bool{}
	for _, n := range l.diskNodes() {
		names[n] = true
	}
	nodes, err := l.knownNodes()
	if err != nil {
		return nil, err
	}
	for _, s := range nodes {
		names[s.Name] = true
	}
	var out []NodeStatus
	for name := range names {
		idx, _ := NodeIndex(name)
		st := NodeStatus{Name: name, Addr: NodeAddr(idx).String(), System: "off"}
		if s, err := l.readNodeState(name); err == nil && l.running(s) {
			st.Running = true
			cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			sys, _ := l.Output(cctx, name, "systemctl", "is-system-running")
			st.System = strings.TrimSpace(sys)
			if _, err := l.Output(cctx, name, "systemctl", "cat", "stellar.target"); err == nil {
				a, _ := l.Output(cctx, name, "systemctl", "is-active", "stellar.target")
				st.Stellar = strings.TrimSpace(a)
			}
			cancel()
		}
		out = append(out, st)
	}
	slices.SortFunc(out, func(a, b NodeStatus) int {
		ia, _ := NodeIndex(a.Name)
		ib, _ := NodeIndex(b.Name)
		return ia - ib
	})
	return out, nil
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

func tail(path string, n int) string {
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) || err != nil {
		return ""
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// machine is the nspawn machine name of a node: its name in the default lab,
// prefixed by the lab's name in others (nspawn keeps per-machine files in /run).
func (l *Lab) machine(node string) string {
	if l.Name == DefaultName {
		return node
	}
	return l.Name + "-" + node
}

func copyFile(src, dst string) error {
	b, err := os.ReadFile(src)
	if err != nil {
		return err
	}
	return os.WriteFile(dst, b, 0o644)
}

// removeNspawnLock removes the image lock file nspawn keeps for dir under
// /run/systemd/nspawn/locks; a killed nspawn cannot remove it itself.
func removeNspawnLock(dir string) {
	var st syscall.Stat_t
	if err := syscall.Stat(dir, &st); err != nil {
		return
	}
	_ = os.Remove(fmt.Sprintf("/run/systemd/nspawn/locks/inode-%d:%d", st.Dev, st.Ino))
}
