package main

import (
	"context"

	"stellar.dev/daemon"
	"stellar.dev/daemon/config"
	"stellar.dev/daemon/listen"
)

func spec() daemon.Spec {
	return daemon.Spec{
		Name:    "dnsd",
		Summary: "cluster DNS of a Stellar node",
		Description: `stellar-dnsd answers the cluster zone ([dns] domain) from the replicated state
and forwards every other name to the upstream servers.`,
		Sockets: func(cfg config.Config) []listen.Spec {
			return dnsSockets(cfg)
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

func dnsSockets(cfg config.Config) []listen.Spec {
	var out []listen.Spec
	for _, a := range cfg.DNS.Listen {
		out = append(out, listen.Spec{Name: "dns", Network: "udp", Addr: a}, listen.Spec{Name: "dns", Network: "tcp", Addr: a})
	}
	return out
}
