package lab

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
)

// Every address and route is made with `ip -n NS`, so the host's own network
// namespace is never touched.

func netnsPath(ns string) string { return filepath.Join("/run/netns", ns) }

func netnsExists(ns string) bool {
	var st syscall.Statfs_t
	if err := syscall.Statfs(netnsPath(ns), &st); err != nil {
		return false
	}
	return st.Type == 0x6e736673 // NSFS_MAGIC: a live namespace, not a stale file
}

func ipn(ctx context.Context, ns string, args ...string) error {
	_, err := run(ctx, "ip", append([]string{"-n", ns}, args...)...)
	return err
}

func addNetns(ctx context.Context, ns string) error {
	if netnsExists(ns) {
		return nil
	}
	_ = os.Remove(netnsPath(ns))
	if _, err := run(ctx, "ip", "netns", "add", ns); err != nil {
		return fmt.Errorf("add netns %s: %w", ns, err)
	}
	return ipn(ctx, ns, "link", "set", "lo", "up")
}

func delNetns(ctx context.Context, ns string) error {
	if !exists(netnsPath(ns)) {
		return nil
	}
	if _, err := run(ctx, "ip", "netns", "delete", ns); err != nil {
		return fmt.Errorf("delete netns %s: %w", ns, err)
	}
	return nil
}

// ensureSwitch makes the switch namespace with its bridge, and the client
// namespace attached to it.
func (l *Lab) ensureSwitch(ctx context.Context) error {
	if err := addNetns(ctx, l.SwitchNS()); err != nil {
		return err
	}
	if ipn(ctx, l.SwitchNS(), "link", "show", bridgeName) != nil {
		if err := ipn(ctx, l.SwitchNS(), "link", "add", bridgeName, "type", "bridge", "stp_state", "0", "forward_delay", "0"); err != nil {
			return fmt.Errorf("add lab bridge: %w", err)
		}
	}
	if err := ipn(ctx, l.SwitchNS(), "link", "set", bridgeName, "up"); err != nil {
		return err
	}
	if err := addNetns(ctx, l.ClientNS()); err != nil {
		return err
	}
	if ipn(ctx, l.SwitchNS(), "link", "show", Client) != nil {
		if err := l.plugIn(ctx, Client, l.ClientNS(), ClientAddr.As4()[3]); err != nil {
			return fmt.Errorf("wire client: %w", err)
		}
		for _, a := range []string{ClientAddr.String(), GatewayAddr.String()} {
			if err := ipn(ctx, l.ClientNS(), "addr", "add", a+"/24", "dev", "eth0"); err != nil {
				return fmt.Errorf("address client: %w", err)
			}
		}
	}
	return nil
}

// plugIn makes a veth pair: port on the switch bridge, eth0 in namespace ns.
// Both ends get fixed MAC addresses made from id, so a node that comes back
// after a power-off has the same hardware address and peers' ARP caches stay right.
func (l *Lab) plugIn(ctx context.Context, port, ns string, id byte) error {
	_ = ipn(ctx, l.SwitchNS(), "link", "del", port)
	inner := fmt.Sprintf("02:77:00:00:00:%02x", id)
	outer := fmt.Sprintf("02:77:01:00:00:%02x", id)
	if err := ipn(ctx, l.SwitchNS(), "link", "add", port, "address", outer, "type", "veth",
		"peer", "name", "eth0", "address", inner, "netns", ns); err != nil {
		return err
	}
	if err := ipn(ctx, l.SwitchNS(), "link", "set", port, "master", bridgeName, "up"); err != nil {
		return err
	}
	return ipn(ctx, ns, "link", "set", "eth0", "up")
}

// wireNode makes the node's namespace, its link to the switch and its address.
func (l *Lab) wireNode(ctx context.Context, name string, index int) error {
	ns := l.NodeNS(name)
	if err := addNetns(ctx, ns); err != nil {
		return err
	}
	if ipn(ctx, ns, "link", "show", "eth0") != nil {
		if err := l.plugIn(ctx, name, ns, NodeAddr(index).As4()[3]); err != nil {
			return fmt.Errorf("plug %s into the switch: %w", name, err)
		}
	}
	out, _ := run(ctx, "ip", "-n", ns, "-4", "-o", "addr", "show", "dev", "eth0")
	addr := NodeAddr(index).String()
	if !strings.Contains(out, " "+addr+"/") {
		if err := ipn(ctx, ns, "addr", "add", addr+"/24", "dev", "eth0"); err != nil {
			return fmt.Errorf("address %s: %w", name, err)
		}
	}
	if err := ipn(ctx, ns, "route", "replace", "default", "via", GatewayAddr.String(), "dev", "eth0"); err != nil {
		return fmt.Errorf("default route of %s: %w", name, err)
	}
	return nil
}

// labNetns lists the lab's network namespaces that exist now.
func (l *Lab) labNetns() []string {
	ents, _ := os.ReadDir("/run/netns")
	var out []string
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), l.Name+"-") {
			out = append(out, e.Name())
		}
	}
	return out
}
