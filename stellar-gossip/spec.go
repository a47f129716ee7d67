package main

import (
	"stellar.dev/daemon"
	"stellar.dev/daemon/config"
	"stellar.dev/daemon/listen"
)

func spec() daemon.Spec {
	return daemon.Spec{
		Name:    "gossip",
		Summary: "membership, replicated cluster state and the peer port of a Stellar node",
		Description: `stellar-gossip keeps this node in the cluster: it runs serf membership (gossip on
[gossip] bind, always encrypted), replicates the cluster state and serves the
peer port ([gossip] peer_api, mutual TLS) that other nodes and remote sctl use.
Every other daemon learns about the cluster only through its socket.

The first start creates a cluster of one: a gossip key and a cluster CA. Other
nodes join it with "sctl cluster join TOKEN" (a token from "sctl cluster token"
on any member). Stopping the daemon never leaves the cluster; "sctl cluster
leave" does.`,
		Files: map[string]string{
			"/var/lib/stellar/gossip/state.db":      "The replicated cluster state (bbolt), served from disk after a restart.",
			"/var/lib/stellar/gossip/serf.snapshot": "serf's snapshot: the members to rejoin after a restart.",
			"/var/lib/stellar/gossip/keyring.json":  "The gossip encryption keys (0600), primary first.",
			"/var/lib/stellar/gossip/ca.crt":        "The cluster CA certificate; ca.key is its key (0600).",
			"/var/lib/stellar/gossip/node.crt":      "This node's certificate for the peer port; node.key is its key (0600).",
			"/var/lib/stellar/gossip/tokens.json":   "Join tokens this node issued (hashed secrets, expiry, uses, revocations).",
		},
		Sockets: func(cfg config.Config) []listen.Spec {
			return []listen.Spec{{Name: "peer", Network: "tcp", Addr: cfg.Gossip.PeerAPI}}
		},
		New: func(env *daemon.Env) (daemon.Service, error) { return newService(env), nil },
	}
}
