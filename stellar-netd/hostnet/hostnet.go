// Package hostnet changes the node's networking for netd, through netlink:
// the container bridge, IP forwarding, the cluster DNS address on lo, the
// static routes to peers (marked with netd's own route protocol number)
// and netd's nftables table (masquerade, and no connection tracking of
// container to container traffic between nodes).
package hostnet

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"sort"
	"strings"
	"sync"
	"syscall"

	"github.com/vishvananda/netlink"
)

// RouteProtocol marks the routes netd makes ("proto 83" in ip route):
// netd never touches a route without it.
const RouteProtocol netlink.RouteProtocol = 83

// NftTable is the nftables table (family ip) netd owns.
const NftTable = "stellar"

// EnsureBridge makes the bridge exist, be up and hold gw (the gateway with
// the block's prefix length). Other IPv4 addresses of the bridge inside
// clusterRange (a previous block) are removed.
func EnsureBridge(name string, gw netip.Prefix, clusterRange netip.Prefix) error {
	link, err := netlink.LinkByName(name)
	var nf netlink.LinkNotFoundError
	if errors.As(err, &nf) {
		la := netlink.NewLinkAttrs()
		la.Name = name
		if err := netlink.LinkAdd(&netlink.Bridge{LinkAttrs: la}); err != nil && !errors.Is(err, syscall.EEXIST) {
			return fmt.Errorf("create bridge %s: %w", name, err)
		}
		link, err = netlink.LinkByName(name)
	}
	if err != nil {
		return fmt.Errorf("find bridge %s: %w", name, err)
	}
	if link.Type() != "bridge" {
		return fmt.Errorf("interface %s exists and is a %s, not a bridge: rename it or set [network] bridge", name, link.Type())
	}
	addrs, err := netlink.AddrList(link, netlink.FAMILY_V4)
	if err != nil {
		return fmt.Errorf("list addresses of %s: %w", name, err)
	}
	have := false
	for _, a := range addrs {
		p, ok := prefixOf(a.IPNet)
		if !ok {
			continue
		}
		if p == gw {
			have = true
			continue
		}
		if clusterRange.Contains(p.Addr()) {
			if err := netlink.AddrDel(link, &a); err != nil {
				return fmt.Errorf("remove old address %s from %s: %w", p, name, err)
			}
		}
	}
	if !have {
		if err := netlink.AddrAdd(link, &netlink.Addr{IPNet: ipnet(gw)}); err != nil && !errors.Is(err, syscall.EEXIST) {
			return fmt.Errorf("add %s to %s: %w", gw, name, err)
		}
	}
	if link.Attrs().Flags&net.FlagUp == 0 {
		if err := netlink.LinkSetUp(link); err != nil {
			return fmt.Errorf("bring %s up: %w", name, err)
		}
	}
	return nil
}

// EnableForwarding switches IPv4 forwarding on.
func EnableForwarding() error {
	const p = "/proc/sys/net/ipv4/ip_forward"
	b, err := os.ReadFile(p)
	if err == nil && strings.TrimSpace(string(b)) == "1" {
		return nil
	}
	if err := os.WriteFile(p, []byte("1\n"), 0o644); err != nil {
		return fmt.Errorf("enable ip forwarding: %w", err)
	}
	return nil
}

// EnsureDNSAddress puts addr as a /32 on lo.
func EnsureDNSAddress(addr netip.Addr) error {
	lo, err := netlink.LinkByName("lo")
	if err != nil {
		return fmt.Errorf("find lo: %w", err)
	}
	a := &netlink.Addr{IPNet: ipnet(netip.PrefixFrom(addr, 32))}
	if err := netlink.AddrAdd(lo, a); err != nil && !errors.Is(err, syscall.EEXIST) {
		return fmt.Errorf("add dns address %s to lo: %w", addr, err)
	}
	return nil
}

// RemoveDNSAddress takes addr off lo (cleanup only).
func RemoveDNSAddress(addr netip.Addr) error {
	lo, err := netlink.LinkByName("lo")
	if err != nil {
		return fmt.Errorf("find lo: %w", err)
	}
	err = netlink.AddrDel(lo, &netlink.Addr{IPNet: ipnet(netip.PrefixFrom(addr, 32))})
	if err != nil && !errors.Is(err, syscall.EADDRNOTAVAIL) && !errors.Is(err, syscall.ENOENT) {
		return fmt.Errorf("remove dns address %s from lo: %w", addr, err)
	}
	return nil
}

// TableRules is the nftables script that replaces netd's table. It
//
//   - masquerades traffic from the node's block to anywhere outside the
//     cluster range (container to container traffic keeps its source IP),
//     and traffic to another node's gateway address (the first IP of its
//     block), which is an address of that node like its own;
//   - exempts container to container traffic between this node's block and
//     the rest of the cluster range from connection tracking (notrack at raw
//     priority): it is only forwarded, and conntrack on every packet is a
//     cost on the data path. Traffic inside the node's own block stays
//     tracked (a hostPort reached through the node's address from a
//     container on the same bridge needs its DNAT undone on a reply that is
//     bridged), and so does traffic to or from a gateway address, so
//     portmap's DNAT on a node's own addresses keeps working for every
//     client: a client on another node reaches them masqueraded.
func TableRules(block, clusterRange netip.Prefix, bridge string) string {
	gw := block.Addr().Next()
	return fmt.Sprintf(`table ip %[1]s
delete table ip %[1]s
table ip %[1]s {
	chain prerouting {
		type filter hook prerouting priority raw; policy accept;
		ip saddr %[2]s ip daddr %[3]s ip daddr != %[2]s ip daddr & %[5]s != %[6]s notrack
		ip saddr %[3]s ip saddr != %[2]s ip daddr %[2]s ip daddr != %[7]s notrack
	}
	chain postrouting {
		type nat hook postrouting priority srcnat; policy accept;
		ip saddr %[2]s ip daddr != %[3]s oifname != %[4]q masquerade
		ip saddr %[2]s ip daddr %[3]s ip daddr & %[5]s == %[6]s oifname != %[4]q masquerade
	}
}
`, NftTable, block, clusterRange, bridge, hostMask(block.Bits()), gatewayHost, gw)
}

// hostMask is the IPv4 mask of the host part of a /bits block (0.0.3.255
// for /22).
func hostMask(bits int) netip.Addr {
	m := ^uint32(0) >> bits
	return netip.AddrFrom4([4]byte{byte(m >> 24), byte(m >> 16), byte(m >> 8), byte(m)})
}

// gatewayHost is the host part of every block's gateway, its first IP.
var gatewayHost = netip.AddrFrom4([4]byte{0, 0, 0, 1})

// Table keeps netd's nftables table in place. The zero value is ready.
// Ensure loads the rules only when the table in the kernel is not what it
// loaded last (missing, edited by hand, or other rules wanted), so a node
// at rest makes no ruleset transaction at each check, only a listing.
type Table struct {
	mu     sync.Mutex
	script string // last script loaded
	listed string // the table as nft listed it right after
}

// Ensure makes netd's table hold TableRules(block, clusterRange, bridge).
// It reports whether it had to load them.
func (t *Table) Ensure(ctx context.Context, block, clusterRange netip.Prefix, bridge string) (loaded bool, err error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	script := TableRules(block, clusterRange, bridge)
	if script == t.script {
		if cur, err := listTable(ctx); err == nil && cur == t.listed {
			return false, nil
		}
	}
	t.script, t.listed = "", ""
	if err := nft(ctx, script); err != nil {
		return false, err
	}
	listed, err := listTable(ctx)
	if err != nil {
		return true, err
	}
	t.script, t.listed = script, listed
	return true, nil
}

// listTable is nft's listing of netd's table.
func listTable(ctx context.Context) (string, error) {
	var out, errb bytes.Buffer
	cmd := exec.CommandContext(ctx, "nft", "list", "table", "ip", NftTable)
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("list nftables table %s: %w: %s", NftTable, err, strings.TrimSpace(errb.String()))
	}
	return out.String(), nil
}

// RemoveTable deletes netd's table (cleanup only).
func RemoveTable(ctx context.Context) error {
	return nft(ctx, fmt.Sprintf("table ip %[1]s\ndelete table ip %[1]s\n", NftTable))
}

func nft(ctx context.Context, script string) error {
	cmd := exec.CommandContext(ctx, "nft", "-f", "-")
	cmd.Stdin = strings.NewReader(script)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("load nftables table %s: %w: %s", NftTable, err, strings.TrimSpace(out.String()))
	}
	return nil
}

// Route is one wanted static route.
type Route struct {
	Dst netip.Prefix
	Via netip.Addr
	// Node is the peer, for the result.
	Node string
}

// RouteResult says what became of a wanted route.
type RouteResult struct {
	Route
	// Err is nil when the route is in place; Unroutable is true when the
	// kernel refused it because the gateway is not on a shared link.
	Err        error
	Unroutable bool
}

// SyncRoutes makes netd's routes (main table, RouteProtocol) exactly want:
// adds or moves the wanted ones and deletes the others. A destination held
// by a route netd did not make is left alone and reported.
func SyncRoutes(want []Route) ([]RouteResult, error) {
	all, err := netlink.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Table: syscall.RT_TABLE_MAIN}, netlink.RT_FILTER_TABLE)
	if err != nil {
		return nil, fmt.Errorf("list routes: %w", err)
	}
	ours := map[netip.Prefix]netlink.Route{}
	foreign := map[netip.Prefix]netlink.Route{}
	for _, r := range all {
		p, ok := prefixOf(r.Dst)
		if !ok {
			continue
		}
		if r.Protocol == RouteProtocol {
			ours[p] = r
		} else {
			foreign[p] = r
		}
	}
	wanted := map[netip.Prefix]bool{}
	var res []RouteResult
	for _, w := range want {
		wanted[w.Dst] = true
		rr := RouteResult{Route: w}
		if f, ok := foreign[w.Dst]; ok {
			rr.Err = fmt.Errorf("a route to %s not made by stellar-netd is in the way (protocol %s)", w.Dst, f.Protocol)
			res = append(res, rr)
			continue
		}
		if r, ok := ours[w.Dst]; ok && r.Gw != nil && r.Gw.Equal(net.IP(w.Via.AsSlice())) {
			res = append(res, rr)
			continue
		}
		nr := &netlink.Route{Dst: ipnet(w.Dst), Gw: net.IP(w.Via.AsSlice()), Protocol: RouteProtocol, Table: syscall.RT_TABLE_MAIN}
		if err := netlink.RouteReplace(nr); err != nil {
			rr.Err = fmt.Errorf("add route %s via %s: %w", w.Dst, w.Via, err)
			rr.Unroutable = errors.Is(err, syscall.ENETUNREACH)
			if rr.Unroutable {
				rr.Err = fmt.Errorf("%s is not on a shared link (network unreachable): nodes need one L2 segment", w.Via)
				// A stale route of ours to the old address must go.
				if r, ok := ours[w.Dst]; ok {
					_ = netlink.RouteDel(&r)
				}
			}
		}
		res = append(res, rr)
	}
	var errs []error
	for p, r := range ours {
		if wanted[p] {
			continue
		}
		if err := netlink.RouteDel(&r); err != nil && !errors.Is(err, syscall.ESRCH) {
			errs = append(errs, fmt.Errorf("delete route %s: %w", p, err))
		}
	}
	sort.Slice(res, func(i, j int) bool { return res[i].Dst.Addr().Less(res[j].Dst.Addr()) })
	return res, errors.Join(errs...)
}

// HostRoutes returns the destinations of the host's IPv4 routes (main
// table) that netd did not make, leaving out default routes and routes on
// the bridge: blocks overlapping them must not be claimed.
func HostRoutes(bridge string) ([]netip.Prefix, error) {
	all, err := netlink.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Table: syscall.RT_TABLE_MAIN}, netlink.RT_FILTER_TABLE)
	if err != nil {
		return nil, fmt.Errorf("list routes: %w", err)
	}
	br := -1
	if l, err := netlink.LinkByName(bridge); err == nil {
		br = l.Attrs().Index
	}
	var out []netip.Prefix
	for _, r := range all {
		if r.Protocol == RouteProtocol || r.LinkIndex == br {
			continue
		}
		p, ok := prefixOf(r.Dst)
		if !ok || p.Bits() == 0 {
			continue
		}
		out = append(out, p)
	}
	return out, nil
}

// Cleanup removes everything netd made: its routes, the bridge, the
// masquerade table and the DNS address. Missing pieces are not errors.
func Cleanup(ctx context.Context, bridge string, dns netip.Addr) error {
	var errs []error
	if _, err := SyncRoutes(nil); err != nil {
		errs = append(errs, err)
	}
	if l, err := netlink.LinkByName(bridge); err == nil {
		if l.Type() == "bridge" {
			if err := netlink.LinkDel(l); err != nil {
				errs = append(errs, fmt.Errorf("delete bridge %s: %w", bridge, err))
			}
		}
	}
	if _, err := exec.LookPath("nft"); err == nil {
		// Deleting a missing table fails; the script's "table" line makes it exist first.
		if err := RemoveTable(ctx); err != nil {
			errs = append(errs, err)
		}
	}
	if dns.IsValid() {
		if err := RemoveDNSAddress(dns); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func prefixOf(n *net.IPNet) (netip.Prefix, bool) {
	if n == nil {
		return netip.Prefix{}, false
	}
	a, ok := netip.AddrFromSlice(n.IP)
	if !ok {
		return netip.Prefix{}, false
	}
	ones, _ := n.Mask.Size()
	return netip.PrefixFrom(a.Unmap(), ones), true
}

func ipnet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: net.IP(p.Addr().AsSlice()), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}
