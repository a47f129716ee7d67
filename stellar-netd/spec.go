package main

import (
	"context"

	"stellar.dev/daemon"
	"stellar.dev/daemon/config"
	"stellar.dev/daemon/listen"
)

func spec() daemon.Spec {
	return daemon.Spec{
		Name:    "netd",
		Summary: "subnet, bridge, routes and IP allocations of a Stellar node",
		Description: `stellar-netd claims this node's container subnet from [network] subnet, creates
the bridge, keeps one static route per alive peer and allocates container IPs
for the stellar-cni-ipam CNI plugin.`,
		Sockets: func(cfg config.Config) []listen.Spec {
			return nil
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
