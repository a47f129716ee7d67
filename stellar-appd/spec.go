package main

import (
	"context"

	"stellar.dev/daemon"
	"stellar.dev/daemon/config"
	"stellar.dev/daemon/listen"
)

func spec() daemon.Spec {
	return daemon.Spec{
		Name:    "appd",
		Summary: "applications of a Stellar node, on containerd",
		Description: `stellar-appd runs this node's share of the cluster's applications on containerd:
placement with no master, restarts, health checks, rolling updates and logs.`,
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
