package main

import (
	"context"

	"stellar.dev/daemon"
	"stellar.dev/daemon/config"
	"stellar.dev/daemon/listen"
)

func spec() daemon.Spec {
	return daemon.Spec{
		Name:    "proxyd",
		Summary: "HTTP(S) ingress proxy of a Stellar node",
		Description: `stellar-proxyd routes HTTP and HTTPS requests by host name to the instances of
the cluster's endpoints, with health checks and automatic HTTPS.`,
		Sockets: func(cfg config.Config) []listen.Spec {
			return []listen.Spec{{Name: "http", Network: "tcp", Addr: cfg.Proxy.HTTP}, {Name: "https", Network: "tcp", Addr: cfg.Proxy.HTTPS}}
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
