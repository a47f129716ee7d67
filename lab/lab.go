// Package lab runs a Stellar cluster on one machine: every node is a
// systemd-nspawn container booted with systemd, in its own network namespace,
// wired to a lab switch, so end-to-end tests can install the .deb, use real
// systemctl, journalctl, containerd and routes, and inject faults.
//
// All lab addresses (10.77.0.0/24) live only inside namespaces the lab made:
// the host's own network namespace is never given an address or a route.
package lab

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
)

// Default locations.
const (
	DefaultStateDir = "/run/stellar-lab"
	DefaultDataDir  = "/var/lib/stellar-lab"
	DefaultCacheDir = "/var/cache/stellar-lab"
)

// Network layout of the lab.
const (
	// DefaultName names the default lab: its namespaces are
	// stellar-lab-switch, stellar-lab-client and stellar-lab-nodeN.
	DefaultName = "stellar-lab"
	// Client is the name Exec accepts for the client namespace.
	Client = "client"
	// MaxNodes is the largest node count (node N has 10.77.0.(10+N)).
	MaxNodes = 80

	bridgeName = "br0"
)

var (
	// LabPrefix is the lab's subnet, shared by the switch, nodes and client.
	LabPrefix = netip.MustParsePrefix("10.77.0.0/24")
	// ClientAddr is the client namespace's address.
	ClientAddr = netip.MustParseAddr("10.77.0.100")
	// GatewayAddr is the nodes' default gateway; it is a second address of the
	// client namespace, which does not forward, so nothing leaves the lab.
	GatewayAddr = netip.MustParseAddr("10.77.0.1")
)

// NodeName returns the name of node i (1-based).
func NodeName(i int) string { return "node" + strconv.Itoa(i) }

// NodeAddr returns the lab address of node i (1-based): 10.77.0.(10+i).
func NodeAddr(i int) netip.Addr {
	return netip.AddrFrom4([4]byte{10, 77, 0, byte(10 + i)})
}

// NodeIndex parses "nodeN" and returns N.
func NodeIndex(name string) (int, error) {
	n, err := strconv.Atoi(strings.TrimPrefix(name, "node"))
	if !strings.HasPrefix(name, "node") || err != nil || n < 1 || n > MaxNodes {
		return 0, fmt.Errorf("node name %q: want node1..node%d", name, MaxNodes)
	}
	return n, nil
}

// SwitchNS is the network namespace holding the lab bridge.
func (l *Lab) SwitchNS() string { return l.Name + "-switch" }

// ClientNS is the network namespace that plays the outside world.
func (l *Lab) ClientNS() string { return l.Name + "-client" }

// NodeNS is the network namespace of a node.
func (l *Lab) NodeNS(node string) string { return l.Name + "-" + node }

// Lab is one lab on this machine. Its state lives in files under StateDir, so
// commands run by different processes agree.
type Lab struct {
	Name     string // prefix of the lab's namespace names; two labs with different names can run side by side
	StateDir string // node pids, faults, overlay mount points (tmpfs-like, gone on reboot)
	DataDir  string // per-node disks: overlay upper dirs, /var/lib/containerd
	CacheDir string // debootstrap'd root file systems, keyed by package list
	Log      *slog.Logger
}

// New returns a Lab with the default directories.
func New(log *slog.Logger) *Lab {
	if log == nil {
		log = slog.Default()
	}
	return &Lab{Name: DefaultName, StateDir: DefaultStateDir, DataDir: DefaultDataDir, CacheDir: DefaultCacheDir, Log: log}
}

// NewNamed returns a Lab named name (namespaces name-switch, name-client,
// name-nodeN; state in /run/NAME, disks in /var/lib/NAME) that shares the
// rootfs cache. Tests use it so they never touch a developer's running lab.
func NewNamed(name string, log *slog.Logger) *Lab {
	l := New(log)
	l.Name = name
	l.StateDir = filepath.Join("/run", name)
	l.DataDir = filepath.Join("/var/lib", name)
	return l
}

// nodeState is what the lab remembers about a running node.
type nodeState struct {
	Name        string `json:"name"`
	Index       int    `json:"index"`
	Addr        string `json:"addr"`
	Rootfs      string `json:"rootfs"`
	NspawnPID   int    `json:"nspawn_pid"`
	NspawnStart uint64 `json:"nspawn_start"`
	InitPID     int    `json:"init_pid"`
	InitStart   uint64 `json:"init_start"`
}

func (l *Lab) nodesDir() string                 { return filepath.Join(l.StateDir, "nodes") }
func (l *Lab) nodeStateFile(name string) string { return filepath.Join(l.nodesDir(), name+".json") }
func (l *Lab) nodeRunDir(name string) string    { return filepath.Join(l.StateDir, name) }
func (l *Lab) nodeRoot(name string) string      { return filepath.Join(l.nodeRunDir(name), "root") }
func (l *Lab) nodeDisk(name string) string      { return filepath.Join(l.DataDir, "nodes", name) }

func (l *Lab) readNodeState(name string) (*nodeState, error) {
	b, err := os.ReadFile(l.nodeStateFile(name))
	if err != nil {
		return nil, err
	}
	var s nodeState
	if err := json.Unmarshal(b, &s); err != nil {
		return nil, fmt.Errorf("read state of %s: %w", name, err)
	}
	return &s, nil
}

func (l *Lab) writeNodeState(s *nodeState) error {
	if err := os.MkdirAll(l.nodesDir(), 0o755); err != nil {
		return err
	}
	return writeJSON(l.nodeStateFile(s.Name), s)
}

// knownNodes lists the nodes the lab has state for, sorted by index.
func (l *Lab) knownNodes() ([]*nodeState, error) {
	ents, err := os.ReadDir(l.nodesDir())
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var out []*nodeState
	for _, e := range ents {
		name, ok := strings.CutSuffix(e.Name(), ".json")
		if !ok {
			continue
		}
		s, err := l.readNodeState(name)
		if err != nil {
			continue
		}
		out = append(out, s)
	}
	slices.SortFunc(out, func(a, b *nodeState) int { return a.Index - b.Index })
	return out, nil
}

// diskNodes lists nodes that have a disk under DataDir (made by an earlier up).
func (l *Lab) diskNodes() []string {
	ents, _ := os.ReadDir(filepath.Join(l.DataDir, "nodes"))
	var out []string
	for _, e := range ents {
		if _, err := NodeIndex(e.Name()); err == nil && e.IsDir() {
			out = append(out, e.Name())
		}
	}
	return out
}

// lock takes the lab's exclusive lock for changes; the returned func releases it.
func (l *Lab) lock() (func(), error) {
	if err := os.MkdirAll(l.StateDir, 0o755); err != nil {
		return nil, fmt.Errorf("make state dir: %w", err)
	}
	f, err := os.OpenFile(filepath.Join(l.StateDir, "lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, fmt.Errorf("open lock: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		l.Log.Info("waiting for another stellar-lab command to finish (it holds the lab lock)", "lock", f.Name())
		if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
			f.Close()
			return nil, fmt.Errorf("lock %s: %w", f.Name(), err)
		}
	}
	return func() { f.Close() }, nil
}

func writeJSON(path string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, append(b, '\n'), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}
