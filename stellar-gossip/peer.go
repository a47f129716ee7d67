package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"time"

	"stellar.dev/api/errdefs"
	"stellar.dev/daemon/httpapi"
	"stellar.dev/stellar-gossip/pki"
)

type ctxKey struct{}

// caller returns the verified identity of a peer-port request.
func caller(r *http.Request) (pki.Identity, bool) {
	id, ok := r.Context().Value(ctxKey{}).(pki.Identity)
	return id, ok
}

// peerServer is the peer port: joins (with a token, no certificate),
// anti-entropy (node certificates), relayed calls (node and operator
// certificates, by role) and every daemon's metrics.
func (s *service) peerServer() *http.Server {
	mux := http.NewServeMux()
	mux.Handle("POST /v1/peer/join", httpapi.Handle(s.handlePeerJoin))
	mux.Handle("POST /v1/peer/digest", s.requireRole(pki.RoleNode)(httpapi.Handle(s.handlePeerDigest)))
	mux.Handle("POST /v1/peer/exchange", s.requireRole(pki.RoleNode)(httpapi.Handle(s.handlePeerExchange)))
	mux.Handle("/v1/relay/{daemon}/{path...}", s.requireRole(pki.RoleNode, pki.RoleAdmin, pki.RoleRead)(httpapi.Handle(s.handleRelay)))
	mux.Handle("GET /metrics", s.requireRole(pki.RoleNode, pki.RoleAdmin, pki.RoleRead)(http.HandlerFunc(s.handleAllMetrics)))
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		httpapi.WriteError(w, errdefs.New(errdefs.ErrNotFound, "no such peer-port endpoint: %s %s", r.Method, r.URL.Path))
	})
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ctx := r.Context()
		who := "anonymous"
		if r.TLS != nil && len(r.TLS.PeerCertificates) > 0 {
			id, err := s.sec.verify(r.TLS.PeerCertificates)
			if err != nil {
				s.log.Warn("peer port: refused certificate", "remote", r.RemoteAddr, "path", r.URL.Path, "err", err)
				httpapi.WriteError(w, errdefs.New(errdefs.ErrPermissionDenied, "certificate refused: %v", err))
				return
			}
			ctx = context.WithValue(ctx, ctxKey{}, id)
			who = id.String()
		}
		lvl := slog.LevelInfo
		if strings.HasPrefix(r.URL.Path, "/v1/peer/digest") || strings.HasPrefix(r.URL.Path, "/v1/peer/exchange") {
			lvl = slog.LevelDebug
		}
		s.log.Log(ctx, lvl, "peer port call", "caller", who, "remote", r.RemoteAddr, "method", r.Method, "path", r.URL.Path)
		mux.ServeHTTP(w, r.WithContext(ctx))
	})
	return &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 6 * time.Minute, ErrorLog: slog.NewLogLogger(s.log.Handler(), slog.LevelDebug)}
}

// requireRole refuses callers without a verified certificate of one of roles.
func (s *service) requireRole(roles ...string) func(http.Handler) http.Handler {
	return func(h http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			id, ok := caller(r)
			if !ok {
				httpapi.WriteError(w, errdefs.New(errdefs.ErrPermissionDenied, "%s needs a client certificate of the cluster CA", r.URL.Path))
				return
			}
			for _, role := range roles {
				if id.Role == role {
					h.ServeHTTP(w, r)
					return
				}
			}
			s.log.Warn("peer port: refused role", "caller", id.String(), "path", r.URL.Path)
			httpapi.WriteError(w, errdefs.New(errdefs.ErrPermissionDenied, "role %s may not call %s", id.Role, r.URL.Path))
		})
	}
}

var (
	peerHTTPOnce sync.Once
	peerHTTP     *http.Client
)

// peerClient is the HTTP client for other nodes' peer ports.
func (s *service) peerClient() *http.Client {
	peerHTTPOnce.Do(func() {
		// TCP keepalive every 3 min, not Go's 15 s: kept connections sit
		// idle between anti-entropy rounds, and a probe pair every 15 s on
		// each of them was a third of a quiet node's peer-port traffic.
		d := &net.Dialer{Timeout: 10 * time.Second, KeepAlive: peerKeepAlive}
		if h, _, err := net.SplitHostPort(s.peerAddr); err == nil {
			if ip := net.ParseIP(h); ip != nil && !ip.IsUnspecified() && s.cfg.Node.Advertise == "" {
				// Leave from the node's own address (see sourcedTransport).
				d.LocalAddr = &net.TCPAddr{IP: ip}
			}
		}
		peerHTTP = &http.Client{Transport: &http.Transport{DialContext: d.DialContext, TLSClientConfig: s.sec.clientTLS(), MaxIdleConnsPerHost: 1, IdleConnTimeout: 5 * time.Minute}, Timeout: 60 * time.Second}
	})
	return peerHTTP
}

// peerCall POSTs in as JSON to a peer's port and decodes the answer.
func (s *service) peerCall(ctx context.Context, addr, path string, in, out any) error {
	raw, err := json.Marshal(in)
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "https://"+addr+path, bytes.NewReader(raw))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := s.peerClient().Do(req)
	if err != nil {
		return fmt.Errorf("call %s on %s: %w", path, addr, err)
	}
	defer func() {
		// Read to the end (the encoder's trailing newline included): only
		// a body read to EOF lets the TLS connection be kept for the next
		// round instead of a new handshake.
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
		resp.Body.Close()
	}()
	if resp.StatusCode/100 != 2 {
		var b errdefs.Body
		_ = json.NewDecoder(resp.Body).Decode(&b)
		return fmt.Errorf("call %s on %s: %w", path, addr, errdefs.FromHTTP(resp.StatusCode, b))
	}
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		return fmt.Errorf("decode %s answer of %s: %w", path, addr, err)
	}
	return nil
}

// relayRule allows a call to a local daemon over the peer port.
type relayRule struct {
	daemon  string
	prefix  string // path prefix after /v1/relay/<daemon>
	methods string // allowed methods for admin and node callers
}

// relayAllow is the fixed allowlist of relayed calls. Read-role callers
// may only GET.
var relayAllow = []relayRule{
	{"gossip", "/v1/state", "GET PUT DELETE"},
	{"gossip", "/v1/members", "GET"},
	{"gossip", "/v1/watch", "GET"},
	{"gossip", "/v1/cluster/info", "GET"},
	{"appd", "/v1/apps", "GET POST PUT DELETE"},
	{"appd", "/v1/images", "GET POST DELETE"},
	{"appd", "/v1/nodes", "GET PUT"},
	{"appd", "/v1/status", "GET"},
	{"dnsd", "/v1/records", "GET POST PUT DELETE"},
	{"proxyd", "/v1/routes", "GET"},
	{"proxyd", "/v1/backends", "GET"},
	{"proxyd", "/v1/hosts", "GET PUT"},
	{"netd", "/v1/subnets", "GET"},
	{"netd", "/v1/ipam/allocations", "GET"},
}

func init() {
	for _, d := range []string{"gossip", "appd", "dnsd", "proxyd", "netd"} {
		relayAllow = append(relayAllow, relayRule{d, "/v1/health", "GET"}, relayRule{d, "/v1/version", "GET"})
	}
}

// handleRelay passes an allowed call to the local daemon's socket.
func (s *service) handleRelay(w http.ResponseWriter, r *http.Request) error {
	id, _ := caller(r)
	d := r.PathValue("daemon")
	path := "/" + r.PathValue("path")
	allowed := false
	for _, rule := range relayAllow {
		if rule.daemon != d || !(path == rule.prefix || strings.HasPrefix(path, rule.prefix+"/") || strings.HasPrefix(path, rule.prefix+"?")) {
			continue
		}
		if id.Role == pki.RoleRead && r.Method != http.MethodGet {
			return errdefs.New(errdefs.ErrPermissionDenied, "role read may only read: %s %s on %s is refused", r.Method, path, d)
		}
		if strings.Contains(rule.methods, r.Method) {
			allowed = true
		}
	}
	if !allowed {
		s.log.Warn("peer port: refused relay", "caller", id.String(), "daemon", d, "method", r.Method, "path", path)
		return errdefs.New(errdefs.ErrPermissionDenied, "%s %s on %s is not relayed over the peer port", r.Method, path, d)
	}
	s.log.Info("relayed call", "caller", id.String(), "daemon", d, "method", r.Method, "path", path)
	sock := s.cfg.Socket(d)
	rp := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.Out.URL = &url.URL{Scheme: "http", Host: d, Path: path, RawQuery: r.URL.RawQuery}
			pr.Out.Host = d
			pr.Out.Header.Del("X-Stellar-Caller")
			pr.Out.Header.Set("X-Stellar-Caller", id.String())
		},
		Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var dl net.Dialer
			return dl.DialContext(ctx, "unix", sock)
		}},
		FlushInterval: -1,
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			httpapi.WriteError(w, errdefs.New(errdefs.ErrUnavailable, "stellar-%s on this node: %v", d, err))
		},
	}
	rp.ServeHTTP(w, r)
	return nil
}

// daemons whose metrics the node serves.
var metricDaemons = []string{"gossip", "netd", "dnsd", "proxyd", "appd"}

// handleAllMetrics gathers every local daemon's /metrics, each series
// labelled with its daemon.
func (s *service) handleAllMetrics(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/plain; version=0.0.4")
	for _, d := range metricDaemons {
		var body []byte
		if d == "gossip" {
			var b bytes.Buffer
			s.env.Metrics.Write(&b)
			body = b.Bytes()
		} else {
			sock := s.cfg.Socket(d)
			c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
				var dl net.Dialer
				return dl.DialContext(ctx, "unix", sock)
			}}}
			resp, err := c.Get("http://" + d + "/metrics")
			if err != nil {
				fmt.Fprintf(w, "# stellar-%s: unavailable\n", d)
				continue
			}
			body, _ = io.ReadAll(io.LimitReader(resp.Body, 16<<20))
			resp.Body.Close()
		}
		fmt.Fprintf(w, "# stellar-%s\n", d)
		w.Write(relabel(body, d))
	}
}

// relabel adds daemon="d" to every sample line.
func relabel(body []byte, d string) []byte {
	var out bytes.Buffer
	for _, l := range strings.Split(string(body), "\n") {
		if l == "" || strings.HasPrefix(l, "#") {
			if l != "" {
				out.WriteString(l + "\n")
			}
			continue
		}
		name, rest, _ := strings.Cut(l, " ")
		if i := strings.IndexByte(name, '{'); i >= 0 {
			name = name[:i+1] + `daemon="` + d + `",` + name[i+1:]
		} else {
			name += `{daemon="` + d + `"}`
		}
		out.WriteString(name + " " + rest + "\n")
	}
	return out.Bytes()
}

// serveMetrics serves every daemon's metrics on [node] metrics (plain TCP,
// meant for a local scraper).
func (s *service) serveMetrics(ctx context.Context) {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /metrics", s.handleAllMetrics)
	srv := &http.Server{Addr: s.cfg.Node.Metrics, Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() { <-ctx.Done(); srv.Close() }()
	if err := srv.ListenAndServe(); err != nil && err != http.ErrServerClosed {
		s.log.Error("serve metrics", "addr", s.cfg.Node.Metrics, "err", err)
	}
}
