package main

import (
	"stellar.dev/daemon"
	"stellar.dev/daemon/config"
	"stellar.dev/daemon/listen"
)

func spec() daemon.Spec {
	return daemon.Spec{
		Name:    "proxyd",
		Summary: "HTTP(S) ingress proxy of a Stellar node",
		Description: `stellar-proxyd routes HTTP and HTTPS requests by host name (and path prefix)
to the instances of the cluster's endpoints, wherever they run, with round
robin or least-connections balancing, canary weights, active health checks,
passive ejection, automatic HTTPS by ACME and zero-downtime route swaps.
Routes come from the cluster state through stellar-gossip; the last state
seen is kept on disk, so routes are served while stellar-gossip is away.`,
		Files: map[string]string{
			"/var/lib/stellar/proxyd/certs/":     "Certificates from files: <host>.crt (chain, PEM) and <host>.key, used before ACME ones.",
			"/var/lib/stellar/proxyd/state.json": "The last cluster state the routes were built from, served at start until stellar-gossip answers.",
		},
		Sockets: func(cfg config.Config) []listen.Spec {
			return []listen.Spec{{Name: "http", Network: "tcp", Addr: cfg.Proxy.HTTP}, {Name: "https", Network: "tcp", Addr: cfg.Proxy.HTTPS}}
		},
		New: func(env *daemon.Env) (daemon.Service, error) { return newService(env), nil },
	}
}
