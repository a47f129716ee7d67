// Package listen gives a daemon its listening sockets: taken from systemd
// socket activation when the daemon was started by a .socket unit, bound by
// the daemon itself otherwise. Both ways give the same Set, so the daemon
// has one code path.
package listen

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"syscall"

	"github.com/coreos/go-systemd/v22/activation"
	"golang.org/x/sys/unix"
)

// Spec names one socket a daemon needs.
type Spec struct {
	// Name is the role, matching the .socket unit's FileDescriptorName
	// ("api", "peer", "dns", "http", "https").
	Name string
	// Network is "unix", "tcp" or "udp".
	Network string
	// Addr is the socket path or host:port to bind when not activated.
	Addr string
}

// Set holds a daemon's sockets by role.
type Set struct {
	streams   map[string][]net.Listener
	packets   map[string][]net.PacketConn
	activated map[string]bool
}

// Listeners returns the stream sockets of a role.
func (s *Set) Listeners(name string) []net.Listener { return s.streams[name] }

// PacketConns returns the datagram sockets of a role.
func (s *Set) PacketConns(name string) []net.PacketConn { return s.packets[name] }

// Activated reports whether the role's sockets came from systemd.
func (s *Set) Activated(name string) bool { return s.activated[name] }

// Close closes every socket. Unix socket files the daemon bound itself are
// removed; systemd's are left for systemd.
func (s *Set) Close() {
	for _, ls := range s.streams {
		for _, l := range ls {
			l.Close()
		}
	}
	for _, ps := range s.packets {
		for _, p := range ps {
			p.Close()
		}
	}
}

// activationFiles is go-systemd's FilesWithNames; a variable for tests.
var activationFiles = activation.FilesWithNames

// Open returns the sockets for specs. It reads systemd's LISTEN_FDS once
// (and clears it, so children do not inherit it); a role systemd passed is
// used as passed, every other role is bound from its Spec.
func Open(ctx context.Context, specs []Spec, log *slog.Logger) (*Set, error) {
	s := &Set{streams: map[string][]net.Listener{}, packets: map[string][]net.PacketConn{}, activated: map[string]bool{}}
	for name, files := range activationFiles() {
		for _, f := range files {
			if err := s.adopt(name, f); err != nil {
				s.Close()
				return nil, err
			}
		}
		s.activated[name] = true
		log.Debug("socket from systemd", "role", name, "count", len(files))
	}
	for _, sp := range specs {
		if s.activated[sp.Name] {
			continue
		}
		if err := s.bind(ctx, sp); err != nil {
			s.Close()
			return nil, err
		}
		log.Debug("socket bound", "role", sp.Name, "network", sp.Network, "addr", sp.Addr)
	}
	return s, nil
}

// adopt sorts one inherited file by its socket type: go-systemd's
// ListenersWithNames would drop datagram sockets.
func (s *Set) adopt(name string, f *os.File) error {
	defer f.Close()
	typ, err := unix.GetsockoptInt(int(f.Fd()), unix.SOL_SOCKET, unix.SO_TYPE)
	if err != nil {
		return fmt.Errorf("inspect socket %q from systemd: %w", name, err)
	}
	switch typ {
	case unix.SOCK_STREAM:
		l, err := net.FileListener(f)
		if err != nil {
			return fmt.Errorf("use stream socket %q from systemd: %w", name, err)
		}
		if ul, ok := l.(*net.UnixListener); ok {
			ul.SetUnlinkOnClose(false)
		}
		s.streams[name] = append(s.streams[name], l)
	case unix.SOCK_DGRAM:
		p, err := net.FilePacketConn(f)
		if err != nil {
			return fmt.Errorf("use datagram socket %q from systemd: %w", name, err)
		}
		s.packets[name] = append(s.packets[name], p)
	default:
		return fmt.Errorf("socket %q from systemd has unsupported type %d", name, typ)
	}
	return nil
}

func (s *Set) bind(ctx context.Context, sp Spec) error {
	switch sp.Network {
	case "unix":
		l, err := ListenUnix(sp.Addr)
		if err != nil {
			return err
		}
		s.streams[sp.Name] = append(s.streams[sp.Name], l)
	case "tcp", "tcp4", "tcp6":
		l, err := freeBind.Listen(ctx, sp.Network, sp.Addr)
		if err != nil {
			return fmt.Errorf("listen on %s %s for %s: %w", sp.Network, sp.Addr, sp.Name, err)
		}
		s.streams[sp.Name] = append(s.streams[sp.Name], l)
	case "udp", "udp4", "udp6":
		p, err := freeBind.ListenPacket(ctx, sp.Network, sp.Addr)
		if err != nil {
			return fmt.Errorf("listen on %s %s for %s: %w", sp.Network, sp.Addr, sp.Name, err)
		}
		s.packets[sp.Name] = append(s.packets[sp.Name], p)
	default:
		return fmt.Errorf("socket %s: unknown network %q", sp.Name, sp.Network)
	}
	return nil
}

// freeBind binds addresses that are not (yet) on an interface, as the
// .socket units do with FreeBind=yes (the DNS address is added by netd).
var freeBind = net.ListenConfig{Control: func(network, address string, c syscall.RawConn) error {
	var serr error
	err := c.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.SOL_IP, unix.IP_FREEBIND, 1)
		if serr == nil {
			serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEADDR, 1)
		}
	})
	if err != nil {
		return err
	}
	return serr
}}

// Group is the group that may use the daemons' Unix sockets.
const Group = "stellar"

// ListenUnix binds a Unix socket file at path with mode 0660 and group
// "stellar" when that group exists. A stale socket file left by a killed
// daemon is replaced; a live one is an error.
func ListenUnix(path string) (net.Listener, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, fmt.Errorf("make socket dir: %w", err)
	}
	if fi, err := os.Lstat(path); err == nil {
		if fi.Mode()&os.ModeSocket == 0 {
			return nil, fmt.Errorf("listen on %s: exists and is not a socket", path)
		}
		if c, err := net.Dial("unix", path); err == nil {
			c.Close()
			return nil, fmt.Errorf("listen on %s: another process is serving it", path)
		}
		if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("remove stale socket %s: %w", path, err)
		}
	}
	old := unix.Umask(0o117)
	l, err := net.Listen("unix", path)
	unix.Umask(old)
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", path, err)
	}
	if err := os.Chmod(path, 0o660); err != nil {
		l.Close()
		return nil, fmt.Errorf("chmod %s: %w", path, err)
	}
	if g, err := user.LookupGroup(Group); err == nil {
		if gid, err := strconv.Atoi(g.Gid); err == nil {
			_ = os.Chown(path, -1, gid)
		}
	}
	return l, nil
}
