package main

import (
	"context"

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
Every other daemon learns about the cluster only through its socket.`,
		Sockets: func(cfg config.Config) []listen.Spec {
			return []listen.Spec{{Name: "peer", Network: "tcp", Addr: cfg.Gossip.PeerAPI}}
		},
		New: func(env *daemon.Env) (daemon.Service, error) { return &service{env: env}, nil },
	}
}

// service is the daemon's work; for now it only serves the common API.
type service struct {
	env *daemon.Env
}

func (s *service) Run(ctx context.Context, ready func()) error {
	ready()
	<-ctx.Done()
	return nil
}
