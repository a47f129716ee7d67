package main

import (
	"crypto/tls"
	"fmt"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"regexp"
	"sync"
	"time"

	"stellar.dev/api/errdefs"
	"stellar.dev/api/gossipapi"
	"stellar.dev/daemon/httpapi"
	"stellar.dev/stellar-gossip/pki"
)

// Outbound relay: a local daemon calls another node's daemon through this
// node's gossip, which dials the member's peer port with its own node
// certificate. The receiving node applies its relay allowlist; bodies are
// streamed both ways (image archives, followed logs).

var daemonName = regexp.MustCompile(`^(gossip|appd|dnsd|proxyd|netd)$`)

// peerTransports holds one transport per target node: each pins the
// server certificate's node name to the member that was asked for.
var peerTransports sync.Map // node name -> *http.Transport

func (s *service) outboundRoutes(mux *http.ServeMux) {
	mux.Handle("/v1/peers/{node}/relay/{daemon}/{path...}", s.guard(s.handleOutbound))
	mux.Handle("PUT /v1/tags/placement", s.guard(s.handlePlacementTag))
}

// transportTo returns the transport for calls to node.
func (s *service) transportTo(node string) *http.Transport {
	if t, ok := peerTransports.Load(node); ok {
		return t.(*http.Transport)
	}
	base := s.sec.clientTLS()
	cfg := &tls.Config{
		MinVersion:           base.MinVersion,
		InsecureSkipVerify:   true, // verified below: a node certificate of the cluster CA named node
		GetClientCertificate: base.GetClientCertificate,
		VerifyConnection: func(cs tls.ConnectionState) error {
			id, err := s.sec.verify(cs.PeerCertificates)
			if err != nil {
				return fmt.Errorf("peer port server: %w", err)
			}
			if id.Role != pki.RoleNode || id.Name != node {
				return fmt.Errorf("peer port server is %s, not node %s", id.String(), node)
			}
			return nil
		},
	}
	d := &net.Dialer{Timeout: 10 * time.Second}
	if h, _, err := net.SplitHostPort(s.peerAddr); err == nil {
		if ip := net.ParseIP(h); ip != nil && !ip.IsUnspecified() && s.cfg.Node.Advertise == "" {
			d.LocalAddr = &net.TCPAddr{IP: ip}
		}
	}
	t := &http.Transport{DialContext: d.DialContext, TLSClientConfig: cfg, MaxIdleConnsPerHost: 2,
		IdleConnTimeout: 60 * time.Second, TLSHandshakeTimeout: 10 * time.Second, ResponseHeaderTimeout: 5 * time.Minute}
	got, _ := peerTransports.LoadOrStore(node, t)
	return got.(*http.Transport)
}

// handleOutbound forwards a local daemon's call to a member's peer port.
func (s *service) handleOutbound(w http.ResponseWriter, r *http.Request) error {
	node := r.PathValue("node")
	d := r.PathValue("daemon")
	path := "/" + r.PathValue("path")
	if !daemonName.MatchString(d) {
		return errdefs.New(errdefs.ErrInvalidArgument, "daemon %q is not one of gossip, appd, dnsd, proxyd, netd", d)
	}
	var target *gossipapi.Member
	for _, m := range s.members() {
		if m.Name == node {
			m := m
			target = &m
		}
	}
	switch {
	case target == nil:
		return errdefs.New(errdefs.ErrNotFound, "node %q is not a member of the cluster", node)
	case target.Status != gossipapi.StatusAlive && target.Status != gossipapi.StatusSuspect:
		return errdefs.New(errdefs.ErrUnavailable, "node %s is %s", node, target.Status)
	case target.PeerAPI == "":
		return errdefs.New(errdefs.ErrUnavailable, "node %s publishes no peer port", node)
	}
	s.log.Debug("outbound relay", "node", node, "daemon", d, "method", r.Method, "path", path)
	rp := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.Out.URL = &url.URL{Scheme: "https", Host: target.PeerAPI, Path: "/v1/relay/" + d + path, RawQuery: r.URL.RawQuery}
			pr.Out.Host = target.PeerAPI
			pr.Out.Header.Del("X-Stellar-Caller")
		},
		Transport:     s.transportTo(node),
		FlushInterval: -1,
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			if r.Context().Err() != nil {
				return
			}
			httpapi.WriteError(w, errdefs.New(errdefs.ErrUnavailable, "call %s on node %s: %v", path, node, err))
		},
	}
	rp.ServeHTTP(w, r)
	return nil
}

// PlacementTag is the body of PUT /v1/tags/placement.
type PlacementTag struct {
	// Placement is the placement algorithm version this node computes
	// ("1"), at most 8 characters of [a-z0-9.]; empty removes the tag.
	Placement string `json:"placement"`
}

var placementValue = regexp.MustCompile(`^[a-z0-9.]{0,8}$`)

// tagPlacement carries the placement version appd computes.
const tagPlacement = "pl"

func (s *service) handlePlacementTag(w http.ResponseWriter, r *http.Request) error {
	var t PlacementTag
	if err := httpapi.DecodeJSON(r, &t); err != nil {
		return err
	}
	if !placementValue.MatchString(t.Placement) {
		return errdefs.New(errdefs.ErrInvalidArgument, "placement %q: want at most 8 characters of a-z, 0-9 and '.'", t.Placement)
	}
	if err := s.setTag(tagPlacement, t.Placement); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}
