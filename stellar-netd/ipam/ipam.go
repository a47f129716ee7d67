// Package ipam allocates container IPs from one node's block, crash-safely:
// each allocation is a file named after its IP, made complete in a
// temporary file and moved to its name with renameat2(RENAME_NOREPLACE)
// (link(2) where the file system refuses it), which fails if the IP is
// taken.
// A kill -9 at any point leaves either no file or a whole one, so an IP is
// never handed out twice.
//
// Allocations are not fsynced by default: they only need to outlive the
// process, not the kernel. A power loss or kernel crash also kills every
// container that held an IP, so an allocation it forgets can never be
// handed out twice; one it keeps belongs to a dead container, and GC
// against the live containers frees it.
package ipam

import (
	"bufio"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"stellar.dev/api/errdefs"
)

// Entry is one allocation.
type Entry struct {
	IP          netip.Addr
	ContainerID string
	IfName      string
	Created     time.Time
}

type key struct{ cid, ifname string }

// Allocator hands out the IPs of one block. Its methods are safe for
// concurrent use; the directory must belong to one process at a time.
type Allocator struct {
	dir     string
	block   netip.Prefix
	gateway netip.Addr

	mu     sync.Mutex
	byIP   map[netip.Addr]Entry
	byKey  map[key]netip.Addr
	last   netip.Addr
	loaded bool
	// noRename is set once the file system has refused
	// renameat2(RENAME_NOREPLACE): allocations are linked from then on.
	noRename bool
	// Sync makes every allocation durable across a power loss (fsync of
	// the directory before answering). Off by default: see the package
	// documentation for why uniqueness does not need it.
	Sync bool
}

// New returns an allocator for block keeping its files in dir. It does no
// I/O: Load reads the directory.
func New(dir string, block netip.Prefix) *Allocator {
	return &Allocator{dir: dir, block: block.Masked(), gateway: block.Masked().Addr().Next(),
		byIP: map[netip.Addr]Entry{}, byKey: map[key]netip.Addr{}}
}

// Block returns the allocator's block.
func (a *Allocator) Block() netip.Prefix { return a.block }

// Gateway returns the block's first IP, the bridge's address.
func (a *Allocator) Gateway() netip.Addr { return a.gateway }

// Capacity is how many container IPs the block holds (network, gateway
// and broadcast excluded).
func Capacity(block netip.Prefix) int {
	n := 1 << (32 - block.Bits())
	if n < 4 {
		return 0
	}
	return n - 3
}

// Load reads the allocations in the directory, creating it if needed, and
// removes half-written temporary files. Files of IPs outside the block are
// kept (and reported by Foreign) so that nothing stored is lost.
func (a *Allocator) Load() error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if err := os.MkdirAll(a.dir, 0o700); err != nil {
		return fmt.Errorf("create ipam dir: %w", err)
	}
	des, err := os.ReadDir(a.dir)
	if err != nil {
		return fmt.Errorf("read ipam dir: %w", err)
	}
	a.byIP = map[netip.Addr]Entry{}
	a.byKey = map[key]netip.Addr{}
	for _, de := range des {
		name := de.Name()
		if strings.HasPrefix(name, ".tmp-") {
			_ = os.Remove(filepath.Join(a.dir, name))
			continue
		}
		ip, err := netip.ParseAddr(name)
		if err != nil || !a.block.Contains(ip) {
			continue
		}
		e, err := readEntry(filepath.Join(a.dir, name))
		if err != nil {
			// A file we cannot read still marks the IP taken.
			e = Entry{ContainerID: "?" + name, IfName: "?"}
		}
		e.IP = ip
		a.byIP[ip] = e
		a.byKey[key{e.ContainerID, e.IfName}] = ip
	}
	a.loaded = true
	return nil
}

// Foreign returns the IPs on disk that are outside the block.
func (a *Allocator) Foreign() []string {
	des, _ := os.ReadDir(a.dir)
	var out []string
	for _, de := range des {
		if ip, err := netip.ParseAddr(de.Name()); err == nil && !a.block.Contains(ip) {
			out = append(out, de.Name())
		}
	}
	return out
}

// ParseEntry parses an allocation file's contents:
// "v1\n<container id>\n<ifname>\n<unix nanos>\n".
func ParseEntry(data []byte) (Entry, error) {
	sc := bufio.NewScanner(strings.NewReader(string(data)))
	var lines []string
	for sc.Scan() {
		lines = append(lines, sc.Text())
	}
	if len(lines) != 4 || lines[0] != "v1" {
		return Entry{}, fmt.Errorf("allocation file: want 4 lines starting with v1, have %d", len(lines))
	}
	if err := ValidateID(lines[1], lines[2]); err != nil {
		return Entry{}, fmt.Errorf("allocation file: %w", err)
	}
	ns, err := strconv.ParseInt(lines[3], 10, 64)
	if err != nil {
		return Entry{}, fmt.Errorf("allocation file: bad time %q", lines[3])
	}
	return Entry{ContainerID: lines[1], IfName: lines[2], Created: time.Unix(0, ns).UTC()}, nil
}

func readEntry(path string) (Entry, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return Entry{}, err
	}
	return ParseEntry(data)
}

// ValidateID checks a container ID and interface name.
func ValidateID(cid, ifname string) error {
	if cid == "" {
		return errdefs.New(errdefs.ErrInvalidArgument, "container_id is empty")
	}
	if len(cid) > 256 {
		return errdefs.New(errdefs.ErrInvalidArgument, "container_id is longer than 256 characters")
	}
	for _, r := range cid {
		if r <= ' ' || r == 0x7f {
			return errdefs.New(errdefs.ErrInvalidArgument, "container_id %q has a space or control character", cid)
		}
	}
	if ifname == "" {
		return errdefs.New(errdefs.ErrInvalidArgument, "if_name is empty")
	}
	if len(ifname) > 15 || strings.ContainsAny(ifname, "/ \t\n:") || ifname == "." || ifname == ".." {
		return errdefs.New(errdefs.ErrInvalidArgument, "if_name %q is not an interface name (1-15 characters, no '/', ':' or spaces)", ifname)
	}
	return nil
}

// Allocate returns the IP of (cid, ifname), allocating one if it has none.
// With Sync set the allocation is fsynced before Allocate returns, outside
// the lock, so concurrent allocations share their directory fsyncs.
func (a *Allocator) Allocate(cid, ifname string, now time.Time) (Entry, error) {
	if err := ValidateID(cid, ifname); err != nil {
		return Entry{}, err
	}
	e, fresh, err := a.allocate(cid, ifname, now)
	if err != nil || !fresh {
		return e, err
	}
	if err := a.syncDir(); err != nil {
		a.mu.Lock()
		defer a.mu.Unlock()
		_ = a.removeLocked(e.IP)
		delete(a.byIP, e.IP)
		delete(a.byKey, key{cid, ifname})
		return Entry{}, err
	}
	return e, nil
}

// allocate picks and records an IP; fresh is false for an existing one.
func (a *Allocator) allocate(cid, ifname string, now time.Time) (Entry, bool, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if !a.loaded {
		return Entry{}, false, errdefs.New(errdefs.ErrUnavailable, "ip allocations are not loaded yet")
	}
	if ip, ok := a.byKey[key{cid, ifname}]; ok {
		return a.byIP[ip], false, nil
	}
	capa := Capacity(a.block)
	if len(a.byIP) >= capa {
		return Entry{}, false, errdefs.New(errdefs.ErrResourceExhausted, "subnet %s is full: all %d container IPs are allocated", a.block, capa)
	}
	e := Entry{ContainerID: cid, IfName: ifname, Created: now.UTC()}
	tmp, err := a.writeTemp(e)
	if err != nil {
		return Entry{}, false, err
	}
	published := false
	defer func() {
		if !published {
			os.Remove(tmp)
		}
	}()
	start := a.last
	if !start.IsValid() || !a.block.Contains(start) {
		start = a.gateway
	}
	ip := start
	for range capa + 3 {
		ip = a.next(ip)
		if _, taken := a.byIP[ip]; taken {
			continue
		}
		err := a.publish(tmp, filepath.Join(a.dir, ip.String()))
		if errors.Is(err, os.ErrExist) {
			// On disk but not in memory: someone else's; skip it.
			continue
		}
		if err != nil {
			return Entry{}, false, fmt.Errorf("record allocation of %s: %w", ip, err)
		}
		published = !a.noRename
		e.IP = ip
		a.byIP[ip] = e
		a.byKey[key{cid, ifname}] = ip
		a.last = ip
		return e, true, nil
	}
	return Entry{}, false, errdefs.New(errdefs.ErrResourceExhausted, "subnet %s is full: no free container IP", a.block)
}

// publish gives the complete temporary file tmp the allocation's name,
// failing (with an error matching os.ErrExist) when the name is taken:
// renameat2(RENAME_NOREPLACE) moves it in one step; where the file system
// lacks it, link(2), and the caller removes tmp.
func (a *Allocator) publish(tmp, name string) error {
	if !a.noRename {
		err := unix.Renameat2(unix.AT_FDCWD, tmp, unix.AT_FDCWD, name, unix.RENAME_NOREPLACE)
		if err == nil {
			return nil
		}
		if !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOSYS) {
			return &os.LinkError{Op: "rename", Old: tmp, New: name, Err: err}
		}
		a.noRename = true
	}
	return os.Link(tmp, name)
}

// next returns the IP after ip in the block's usable range, wrapping.
func (a *Allocator) next(ip netip.Addr) netip.Addr {
	first := a.gateway.Next()
	n := ip.Next()
	if !a.block.Contains(n) || !a.block.Contains(n.Next()) { // past the end or the broadcast
		return first
	}
	if n.Compare(first) < 0 {
		return first
	}
	return n
}

// writeTemp writes e's contents to the temporary file .tmp-alloc (the
// allocator holds a.mu, so one name is enough; one left by a kill -9 is
// overwritten here and removed by Load).
func (a *Allocator) writeTemp(e Entry) (string, error) {
	// No fsync of the contents: after a power loss a name whose contents
	// were lost still marks its IP as taken (Load), so no IP is handed out
	// twice; GC frees it since no container has its owner's ID.
	tmp := filepath.Join(a.dir, ".tmp-alloc")
	data := fmt.Appendf(nil, "v1\n%s\n%s\n%d\n", e.ContainerID, e.IfName, e.Created.UnixNano())
	fd, err := unix.Open(tmp, unix.O_WRONLY|unix.O_CREAT|unix.O_TRUNC|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return "", fmt.Errorf("write allocation: open %s: %w", tmp, err)
	}
	for b := data; len(b) > 0 && err == nil; {
		var n int
		n, err = unix.Write(fd, b)
		if err == unix.EINTR {
			err = nil
			continue
		}
		b = b[n:]
	}
	if cerr := unix.Close(fd); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(tmp)
		return "", fmt.Errorf("write allocation: %s: %w", tmp, err)
	}
	return tmp, nil
}

func (a *Allocator) syncDir() error {
	if !a.Sync {
		return nil
	}
	d, err := os.Open(a.dir)
	if err != nil {
		return fmt.Errorf("sync ipam dir: %w", err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("sync ipam dir: %w", err)
	}
	return nil
}

// Get returns the allocation of (cid, ifname).
func (a *Allocator) Get(cid, ifname string) (Entry, bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	ip, ok := a.byKey[key{cid, ifname}]
	if !ok {
		return Entry{}, false
	}
	return a.byIP[ip], true
}

// Release frees the IPs of container cid (only interface ifname unless it
// is empty) and returns what it freed. Nothing known is not an error.
func (a *Allocator) Release(cid, ifname string) ([]Entry, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	var out []Entry
	keys := a.byKey
	if ifname != "" {
		// One interface (every CNI DEL): no scan of every allocation.
		ip, ok := a.byKey[key{cid, ifname}]
		if !ok {
			return nil, nil
		}
		keys = map[key]netip.Addr{{cid, ifname}: ip}
	}
	for k, ip := range keys {
		if k.cid != cid || (ifname != "" && k.ifname != ifname) {
			continue
		}
		if err := a.removeLocked(ip); err != nil {
			return out, err
		}
		out = append(out, a.byIP[ip])
		delete(a.byIP, ip)
		delete(a.byKey, k)
	}
	// Releases are not fsynced: one lost to a power cut comes back as an
	// allocation of a container that no longer exists, which GC frees; it
	// can never give an IP to two containers.
	sortEntries(out)
	return out, nil
}

func (a *Allocator) removeLocked(ip netip.Addr) error {
	if err := os.Remove(filepath.Join(a.dir, ip.String())); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("remove allocation of %s: %w", ip, err)
	}
	return nil
}

// GC frees every allocation for which keep returns false.
func (a *Allocator) GC(keep func(Entry) bool) (released []Entry, kept int, err error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	for ip, e := range a.byIP {
		if keep(e) {
			kept++
			continue
		}
		if err := a.removeLocked(ip); err != nil {
			return released, kept, err
		}
		released = append(released, e)
		delete(a.byIP, ip)
		delete(a.byKey, key{e.ContainerID, e.IfName})
	}
	if len(released) > 0 {
		err = a.syncDir()
	}
	sortEntries(released)
	return released, kept, err
}

// List returns every allocation, by IP.
func (a *Allocator) List() []Entry {
	a.mu.Lock()
	defer a.mu.Unlock()
	out := make([]Entry, 0, len(a.byIP))
	for _, e := range a.byIP {
		out = append(out, e)
	}
	sortEntries(out)
	return out
}

// Len is the number of allocations.
func (a *Allocator) Len() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return len(a.byIP)
}

func sortEntries(es []Entry) {
	sort.Slice(es, func(i, j int) bool { return es[i].IP.Less(es[j].IP) })
}
