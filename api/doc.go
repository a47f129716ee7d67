// Package api holds what every Stellar binary agrees on over the wire: the
// build version, the API version carried by every message, and the health
// and version documents every daemon serves. Wire types of each daemon live
// in their own sub-package (gossipapi, netapi, dnsapi, proxyapi, appapi);
// error kinds in errdefs; the Unix-socket HTTP client in client.
//
// This module imports only the standard library: the CNI plugin links it
// and runs once per container.
package api

import "runtime"

// Version is the release of this build, set at link time with
// -ldflags "-X stellar.dev/api.Version=...".
var Version = "dev"

// Commit is the source revision of this build, set at link time.
var Commit = ""

// WireVersion is the version of the messages on every local socket and on
// the peer port. A receiver refuses a message of a version it does not speak
// with ErrUnsupportedVersion instead of misreading it. Bump it when a message
// changes incompatibly.
const WireVersion = 1

// WireHeader is the HTTP header that carries WireVersion on every request
// and every response.
const WireHeader = "Stellar-Wire-Version"

// Health is the body of GET /v1/health.
type Health struct {
	// Status is "ok" or "unhealthy".
	Status string `json:"status"`
	// Error says why the daemon is unhealthy; empty when Status is "ok".
	Error string `json:"error,omitempty"`
}

// VersionInfo is the body of GET /v1/version.
type VersionInfo struct {
	// Daemon is the binary's name, e.g. "stellar-dnsd".
	Daemon string `json:"daemon"`
	// Version is the release (api.Version).
	Version string `json:"version"`
	// Commit is the source revision, if known.
	Commit string `json:"commit,omitempty"`
	// Wire is the wire version the daemon speaks (api.WireVersion).
	Wire int `json:"wire"`
	// Go is the Go release the binary was built with.
	Go string `json:"go"`
}

// CurrentVersion returns the VersionInfo of this binary.
func CurrentVersion(daemon string) VersionInfo {
	return VersionInfo{Daemon: daemon, Version: Version, Commit: Commit, Wire: WireVersion, Go: runtime.Version()}
}
