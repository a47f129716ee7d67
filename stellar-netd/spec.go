package main

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"

	"stellar.dev/daemon"
	"stellar.dev/daemon/config"
	"stellar.dev/stellar-netd/hostnet"
)

func spec() daemon.Spec {
	return daemon.Spec{
		Name:    "netd",
		Summary: "subnet, bridge, routes and IP allocations of a Stellar node",
		Description: `stellar-netd claims this node's container subnet from [network] subnet, creates
the bridge, keeps one static route per alive peer and allocates container IPs
for the stellar-cni-ipam CNI plugin.

The claim is provisional until the node has met the cluster (or stayed alone
for 30 s); it is kept across restarts in the state directory and published in
the node's gossip tags and under nodes/<node>/subnet. Routes carry protocol 83
("ip route show proto 83"); netd never touches other routes. Masquerading of
traffic leaving the cluster range is the nftables table "ip stellar".`,
		Files: map[string]string{
			"/var/lib/stellar/netd/claim.json":   "This node's subnet claim.",
			"/var/lib/stellar/netd/ipam/":        "One file per allocated container IP.",
			"/etc/cni/net.d/10-stellar.conflist": "The CNI network configuration netd writes for appd.",
		},
		New: func(env *daemon.Env) (daemon.Service, error) { return newService(env), nil },
		Commands: []daemon.Command{{
			Name:    "cleanup",
			Summary: "Remove everything netd made on this host: its routes, the bridge, the nftables table, the DNS address and the CNI configuration (used by the package's purge). The state directory is left alone.",
			Run:     cleanup,
		}},
	}
}

func cleanup(ctx context.Context, cfg config.Config, log *slog.Logger, args []string) error {
	if len(args) > 0 {
		return fmt.Errorf("cleanup takes no arguments, got %q", args[0])
	}
	dns, _ := netip.ParseAddr(cfg.Network.DNSAddress)
	err := hostnet.Cleanup(ctx, cfg.Network.Bridge, dns)
	if rerr := removeCNIConf(cfg); rerr != nil {
		err = rerr
	}
	if err != nil {
		return fmt.Errorf("clean up host networking: %w", err)
	}
	log.Info("removed stellar-netd's bridge, routes, nftables table, dns address and cni configuration", "bridge", cfg.Network.Bridge)
	return nil
}
