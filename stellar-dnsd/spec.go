package main

import (
	"stellar.dev/daemon"
	"stellar.dev/daemon/config"
	"stellar.dev/daemon/listen"
)

func spec() daemon.Spec {
	return daemon.Spec{
		Name:    "dnsd",
		Summary: "cluster DNS of a Stellar node",
		Description: `stellar-dnsd answers the cluster zone ([dns] domain, default "stellar.") from
the replicated state and forwards every other name to the upstream servers.

<service>.<app>.<domain> has an A (or AAAA) record per running, healthy
instance on an alive node, <n>.<service>.<app>.<domain> names instance n,
both carry TXT "node=<node>; updated=<time>", and each endpoint of an
instance is an SRV record _<endpoint>._<proto>.<service>.<app>.<domain>.
Custom records (A, AAAA, CNAME, TXT, SRV, MX) are cluster keys under
dns/records/, managed with sctl nameserver create|list|delete.

Until the first sync with stellar-gossip after a start the zone answers
SERVFAIL, never a cacheable NXDOMAIN. Names outside the zone go to
[dns] upstream, or to the nameservers of [dns] upstream_resolv_conf (never
Stellar's own addresses), with failover; SERVFAIL when none answers.
UDP and TCP, EDNS0 (1232 bytes), TC=1 when an answer does not fit.`,
		Sockets: dnsSockets,
		New:     newService,
	}
}

// dnsSockets are the DNS sockets, role "dns": UDP and TCP on every
// [dns] listen address. Under systemd they come from stellar-dnsd.socket.
func dnsSockets(cfg config.Config) []listen.Spec {
	var out []listen.Spec
	for _, a := range cfg.DNS.Listen {
		out = append(out, listen.Spec{Name: "dns", Network: "udp", Addr: a}, listen.Spec{Name: "dns", Network: "tcp", Addr: a})
	}
	return out
}
