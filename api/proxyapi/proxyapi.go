// Package proxyapi is the wire contract of stellar-proxyd's local API
// (proxyd.sock) and of the proxy's cluster keys (proxy/..., acme/...).
//
// Cluster keys written for the proxy:
//   - proxy/hosts/<host>: HostSettings (canary weights, balancing), written
//     by any node (sctl proxy weight); read by every proxyd.
//   - acme/certs/<host>: Certificate, a certificate and its key in PEM,
//     read by every proxyd to terminate TLS for host.
//   - acme/challenges/<token>: Challenge, an HTTP-01 key authorization
//     answered by whichever node the CA reaches.
package proxyapi

import "time"

// Balancing policies.
const (
	BalanceRoundRobin = "round_robin"
	BalanceLeastConn  = "least_conn"
)

// Backend health states.
const (
	HealthHealthy   = "healthy"
	HealthUnhealthy = "unhealthy"
	HealthEjected   = "ejected" // passively ejected after errors, for a while
)

// Backend is one row of GET /v1/backends: one instance behind one route.
type Backend struct {
	// Host is the route's host name.
	Host string `json:"host"`
	// Path is the route's path prefix ("/" for all).
	Path string `json:"path"`
	// App and Service name the endpoint's service.
	App     string `json:"app"`
	Service string `json:"service"`
	// Node runs the instance.
	Node string `json:"node"`
	// Addr is the backend's ip:port.
	Addr string `json:"addr"`
	// TLS is true for a route served over HTTPS.
	TLS bool `json:"tls"`
	// Health is healthy, unhealthy or ejected.
	Health string `json:"health"`
	// Weight is the canary weight of the backend's service on this route.
	Weight int `json:"weight"`
	// Active is the number of requests in flight to the backend.
	Active int64 `json:"active"`
	// LastError is the last failed check or request, if any.
	LastError string `json:"last_error,omitempty"`
}

// HostSettings is the value of the cluster key proxy/hosts/<host> and the
// body of PUT /v1/hosts/{host}.
type HostSettings struct {
	// Weights are canary weights per "<app>/<service>" sharing the host;
	// services not named get weight 0 when any weight is set. Empty: all
	// services share equally.
	Weights map[string]int `json:"weights,omitempty"`
	// Balance is round_robin (default) or least_conn.
	Balance string `json:"balance,omitempty"`
}

// Certificate is the value of the cluster key acme/certs/<host>.
type Certificate struct {
	Host string `json:"host"`
	// CertPEM is the chain, leaf first.
	CertPEM string `json:"cert_pem"`
	// KeyPEM is the private key.
	KeyPEM   string    `json:"key_pem"`
	NotAfter time.Time `json:"not_after"`
}

// Challenge is the value of the cluster key acme/challenges/<token>.
type Challenge struct {
	Token   string `json:"token"`
	KeyAuth string `json:"key_auth"`
}

// Status is the body of GET /v1/status.
type Status struct {
	// Synced is true once routes were read from stellar-gossip.
	Synced bool `json:"synced"`
	// Routes is the number of host/path routes.
	Routes int `json:"routes"`
	// Backends is the number of backends.
	Backends int `json:"backends"`
	// Generation counts route table swaps since start.
	Generation uint64 `json:"generation"`
	// LastError is the last error reading the cluster state, if any.
	LastError string `json:"last_error,omitempty"`
}
