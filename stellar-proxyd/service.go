package main

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"stellar.dev/api/client"
	"stellar.dev/api/errdefs"
	"stellar.dev/api/gossipapi"
	"stellar.dev/api/proxyapi"
	"stellar.dev/daemon"
	"stellar.dev/daemon/atomicfile"
	"stellar.dev/daemon/config"
	"stellar.dev/daemon/httpapi"
	"stellar.dev/stellar-proxyd/internal/acme"
	"stellar.dev/stellar-proxyd/internal/guard"
	h1loop "stellar.dev/stellar-proxyd/internal/h1"
	"stellar.dev/stellar-proxyd/internal/proxy"
	"stellar.dev/stellar-proxyd/internal/route"
)

// Server limits.
const (
	readHeaderTimeout = 10 * time.Second
	idleTimeout       = 120 * time.Second
	// maxHeaderBytes makes net/http refuse heads over 16 KiB with 431: it
	// adds 4096 bytes of slop to the limit.
	maxHeaderBytes = 16<<10 - 4096
	handshakeLimit = 10 * time.Second
	drainTimeout   = 8 * time.Second
)

// service is stellar-proxyd: the proxy, its listeners and the sync of
// routes from the cluster state.
type service struct {
	env    *daemon.Env
	log    *slog.Logger
	proxy  *proxy.Proxy
	gossip *gossipapi.Client

	mu       sync.Mutex
	cfg      config.Config
	entries  map[string]gossipapi.Entry
	synced   bool
	lastErr  string
	rebuildC chan struct{}
	acme     *acme.Manager // nil without [proxy] acme_directory
	// loop serves the plain listener with the h1 loop (lean requests in
	// the connection's goroutine, the rest handed to net/http);
	// STELLAR_PROXYD_LEAN=handler (lean path inside net/http's server) or
	// =off (everything through ReverseProxy) turn it off.
	loop bool
}

func newService(env *daemon.Env) *service {
	pc := proxy.DefaultConfig()
	// An escape hatch (and the benchmark's baseline): every request through
	// httputil.ReverseProxy.
	lean := os.Getenv("STELLAR_PROXYD_LEAN")
	pc.DisableLean = lean == "off"
	if _, port, err := net.SplitHostPort(env.Config.Proxy.HTTPS); err == nil {
		pc.HTTPSPort = port
	}
	s := &service{
		loop:     lean != "off" && lean != "handler",
		env:      env,
		log:      env.Log,
		proxy:    proxy.New(pc, env.Log, env.Metrics),
		gossip:   gossipapi.New(client.Unix("stellar-gossip", env.Config.Socket("gossip"))),
		cfg:      env.Config,
		entries:  map[string]gossipapi.Entry{},
		rebuildC: make(chan struct{}, 1),
	}
	if d := env.Config.Proxy.ACMEDirectory; d != "" {
		s.acme = acme.New(acme.Config{Directory: d, Email: env.Config.Proxy.ACMEEmail, Node: env.Config.Node.Name}, s.gossip, acme.Sources{
			Hosts:       s.proxy.TLSHosts,
			Certificate: s.proxy.Certificate,
			Serving: func(host, token string) bool {
				if token == "" {
					return s.proxy.ALPNCertificate(host) != nil
				}
				return s.proxy.HasChallenge(token)
			},
		}, env.Log)
	}
	env.Mux.Handle("GET /v1/backends", httpapi.Handle(s.handleBackends))
	env.Mux.Handle("GET /v1/status", httpapi.Handle(s.handleStatus))
	env.Mux.Handle("GET /v1/hosts/{host}", httpapi.Handle(s.handleGetHost))
	env.Mux.Handle("PUT /v1/hosts/{host}", httpapi.Handle(s.handlePutHost))
	return s
}

func (s *service) Run(ctx context.Context, ready func()) error {
	s.proxy.Start(ctx)
	s.loadCache()
	s.rebuild()

	h1 := s.newServer()
	h1.ConnContext = guard.WithConn
	h2 := s.newServer() // TLS connections that chose h2
	h2.HTTP2 = &http.HTTP2Config{MaxConcurrentStreams: 250}
	tlsConf := &tls.Config{
		MinVersion:     tls.VersionTLS12,
		NextProtos:     []string{"h2", "http/1.1", acmeALPN},
		GetCertificate: s.certificate,
	}
	h2.TLSConfig = tlsConf
	tlsH1 := &chanListener{c: make(chan net.Conn), done: make(chan struct{})}
	tlsH2 := &chanListener{c: make(chan net.Conn), done: make(chan struct{})}

	var wg sync.WaitGroup
	serve := func(name string, srv *http.Server, l net.Listener) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := srv.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) && ctx.Err() == nil {
				s.log.Error("serve", "listener", name, "err", err)
			}
		}()
	}
	var loop *h1loop.Server
	if s.loop {
		lc := h1loop.DefaultConfig()
		lc.ReadHeaderTimeout, lc.IdleTimeout = readHeaderTimeout, idleTimeout
		handed := h1loop.NewListener(&net.TCPAddr{})
		loop = h1loop.New(lc, s.proxy, func(c net.Conn) { handed.Push(guard.New(c, false)) }, s.log)
		serve("http (handed over)", h1, handed)
		for _, l := range s.env.Sockets.Listeners("http") {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if err := loop.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) && ctx.Err() == nil {
					s.log.Error("serve", "listener", "http "+l.Addr().String(), "err", err)
				}
			}()
		}
	} else {
		for _, l := range s.env.Sockets.Listeners("http") {
			serve("http "+l.Addr().String(), h1, guard.Listener{Listener: l})
		}
	}
	serve("https/1.1", h1, tlsH1)
	serve("https/2", h2, tlsH2)
	for _, l := range s.env.Sockets.Listeners("https") {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s.acceptTLS(ctx, l, tlsConf, tlsH1, tlsH2, loop)
		}()
	}
	go s.syncLoop(ctx)
	go s.rebuildLoop(ctx)
	if s.acme != nil {
		go s.acme.Run(ctx)
	}
	ready()
	<-ctx.Done()

	// Drain: stop accepting (systemd keeps its copy of the sockets), let
	// requests in flight finish, close idle connections.
	for _, l := range s.env.Sockets.Listeners("https") {
		l.Close()
	}
	dctx, cancel := context.WithTimeout(context.Background(), drainTimeout)
	defer cancel()
	var sw sync.WaitGroup
	if loop != nil {
		sw.Add(1)
		go func() {
			defer sw.Done()
			if err := loop.Shutdown(dctx); err != nil {
				s.log.Warn("drain requests", "err", err)
			}
		}()
	}
	for _, srv := range []*http.Server{h1, h2} {
		sw.Add(1)
		go func() {
			defer sw.Done()
			if err := srv.Shutdown(dctx); err != nil {
				s.log.Warn("drain requests", "err", err)
				srv.Close()
			}
		}()
	}
	sw.Wait()
	wg.Wait()
	return nil
}

func (s *service) newServer() *http.Server {
	return &http.Server{
		Handler:           s.proxy,
		ReadHeaderTimeout: readHeaderTimeout,
		IdleTimeout:       idleTimeout,
		MaxHeaderBytes:    maxHeaderBytes,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelDebug),
	}
}

// acceptTLS does TLS handshakes off the accept loop and hands h2
// connections to the HTTP/2 server, HTTP/1 ones (guarded) to the other.
func (s *service) acceptTLS(ctx context.Context, l net.Listener, conf *tls.Config, h1, h2 *chanListener, loop *h1loop.Server) {
	for {
		c, err := l.Accept()
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return
			}
			s.log.Warn("accept tls", "err", err)
			time.Sleep(50 * time.Millisecond)
			continue
		}
		go func() {
			tc := tls.Server(c, conf)
			_ = tc.SetDeadline(time.Now().Add(handshakeLimit))
			if err := tc.HandshakeContext(ctx); err != nil {
				s.log.Debug("tls handshake", "remote", c.RemoteAddr().String(), "err", err)
				c.Close()
				return
			}
			_ = tc.SetDeadline(time.Time{})
			switch tc.ConnectionState().NegotiatedProtocol {
			case acmeALPN:
				tc.Close() // the handshake was the TLS-ALPN-01 answer
			case "h2":
				h2.push(tc)
			default:
				if loop != nil {
					loop.ServeTLS(tc, func(c net.Conn) { h1.push(guard.New(c, true)) })
				} else {
					h1.push(guard.New(tc, true))
				}
			}
		}()
	}
}

// acmeALPN is the protocol of TLS-ALPN-01 validations (RFC 8737).
const acmeALPN = "acme-tls/1"

func (s *service) certificate(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
	for _, p := range hello.SupportedProtos {
		if p == acmeALPN {
			if c := s.proxy.ALPNCertificate(hello.ServerName); c != nil {
				return c, nil
			}
			return nil, fmt.Errorf("no tls-alpn-01 challenge for %q", hello.ServerName)
		}
	}
	if c := s.proxy.Certificate(hello.ServerName); c != nil {
		return c, nil
	}
	return nil, fmt.Errorf("no certificate for %q", hello.ServerName)
}

// Health is unhealthy only when nothing can be served: the listeners are
// ours from the start, and a node without gossip keeps its last routes.
func (s *service) Health(ctx context.Context) error { return nil }

// Reload applies a new configuration: the health interval and
// certificate files take effect at once; listen addresses need a restart.
func (s *service) Reload(ctx context.Context, cfg config.Config) error {
	s.mu.Lock()
	old := s.cfg
	s.cfg = cfg
	s.mu.Unlock()
	if cfg.Proxy.HTTP != old.Proxy.HTTP || cfg.Proxy.HTTPS != old.Proxy.HTTPS {
		s.log.Warn("listen addresses changed: restart stellar-proxyd to apply them")
	}
	s.rebuild()
	return nil
}

// relevant reports whether the proxy reads key.
func relevant(key string) bool {
	if strings.HasPrefix(key, route.NodesPrefix) {
		_, _, _, _, ok := route.InstanceKey(key)
		return ok
	}
	return strings.HasPrefix(key, route.AppsPrefix) || strings.HasPrefix(key, route.HostsPrefix) ||
		strings.HasPrefix(key, route.CertsPrefix) || strings.HasPrefix(key, route.ChallengePrefix) ||
		strings.HasPrefix(key, route.ALPNPrefix)
}

// syncLoop lists and watches the cluster state through stellar-gossip,
// retrying while it is away; the current routes stay in place meanwhile.
func (s *service) syncLoop(ctx context.Context) {
	backoff := 200 * time.Millisecond
	for ctx.Err() == nil {
		err := s.syncOnce(ctx)
		if ctx.Err() != nil {
			return
		}
		s.mu.Lock()
		s.lastErr = err.Error()
		s.mu.Unlock()
		if errors.Is(err, errdefs.ErrUnavailable) {
			s.log.Debug("read cluster state", "err", err)
		} else {
			s.log.Warn("read cluster state", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, 5*time.Second)
	}
}

func (s *service) syncOnce(ctx context.Context) error {
	list, err := s.gossip.List(ctx, "")
	if err != nil {
		return err
	}
	fresh := map[string]gossipapi.Entry{}
	for _, e := range list.Entries {
		if relevant(e.Key) {
			fresh[e.Key] = e
		}
	}
	s.mu.Lock()
	s.entries = fresh
	s.synced = true
	s.lastErr = ""
	s.mu.Unlock()
	s.kick()
	s.log.Info("cluster state read", "keys", len(fresh), "rev", list.Rev)
	err = s.gossip.Watch(ctx, "", list.Rev+1, false, func(ev gossipapi.Event) error {
		if ev.Entry == nil || !relevant(ev.Entry.Key) {
			return nil
		}
		s.mu.Lock()
		switch ev.Type {
		case gossipapi.EventPut:
			s.entries[ev.Entry.Key] = *ev.Entry
		case gossipapi.EventDelete:
			delete(s.entries, ev.Entry.Key)
		case gossipapi.EventFlag:
			if e, ok := s.entries[ev.Entry.Key]; ok {
				e.OwnerFailed = ev.Entry.OwnerFailed
				s.entries[ev.Entry.Key] = e
			}
		}
		s.mu.Unlock()
		s.kick()
		return nil
	})
	if err == nil {
		err = errors.New("watch ended")
	}
	return fmt.Errorf("watch cluster state: %w", err)
}

func (s *service) kick() {
	select {
	case s.rebuildC <- struct{}{}:
	default:
	}
}

// rebuildLoop coalesces bursts of changes into one table swap.
func (s *service) rebuildLoop(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-s.rebuildC:
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(20 * time.Millisecond):
		}
		s.rebuild()
		s.saveCache()
	}
}

// rebuild computes the table and extras from the entries and swaps them in.
func (s *service) rebuild() {
	s.mu.Lock()
	entries := make([]gossipapi.Entry, 0, len(s.entries))
	for _, e := range s.entries {
		entries = append(entries, e)
	}
	cfg := s.cfg
	s.mu.Unlock()
	t, errs := route.Build(entries, route.DefaultDefaults(cfg.Proxy.HealthInterval))
	for _, err := range errs {
		s.log.Warn("skip route", "err", err)
	}
	ex := proxy.Extras{Certs: map[string]*tls.Certificate{}, Challenges: map[string]string{}, ALPN: map[string]*tls.Certificate{}}
	for _, e := range entries {
		switch {
		case strings.HasPrefix(e.Key, route.CertsPrefix):
			var c proxyapi.Certificate
			if err := json.Unmarshal(e.Value, &c); err != nil {
				s.log.Warn("skip certificate", "key", e.Key, "err", err)
				continue
			}
			kp, err := tls.X509KeyPair([]byte(c.CertPEM), []byte(c.KeyPEM))
			if err != nil {
				s.log.Warn("skip certificate", "key", e.Key, "err", err)
				continue
			}
			ex.Certs[route.NormalizeHost(strings.TrimPrefix(e.Key, route.CertsPrefix))] = &kp
		case strings.HasPrefix(e.Key, route.ALPNPrefix):
			var c proxyapi.Certificate
			if err := json.Unmarshal(e.Value, &c); err != nil {
				continue
			}
			kp, err := tls.X509KeyPair([]byte(c.CertPEM), []byte(c.KeyPEM))
			if err != nil {
				s.log.Warn("skip tls-alpn-01 certificate", "key", e.Key, "err", err)
				continue
			}
			ex.ALPN[route.NormalizeHost(strings.TrimPrefix(e.Key, route.ALPNPrefix))] = &kp
		case strings.HasPrefix(e.Key, route.ChallengePrefix):
			var c proxyapi.Challenge
			if err := json.Unmarshal(e.Value, &c); err != nil {
				continue
			}
			ex.Challenges[strings.TrimPrefix(e.Key, route.ChallengePrefix)] = c.KeyAuth
		}
	}
	s.loadCertFiles(cfg, ex.Certs)
	s.proxy.Update(t, ex)
	if s.acme != nil {
		s.acme.Kick()
	}
	s.log.Debug("routes swapped", "routes", len(t.Routes()), "generation", s.proxy.Generation())
}

// loadCertFiles adds <state>/certs/<host>.crt + .key, which win over ACME.
func (s *service) loadCertFiles(cfg config.Config, certs map[string]*tls.Certificate) {
	dir := filepath.Join(cfg.StateDirOf("proxyd"), "certs")
	files, err := filepath.Glob(filepath.Join(dir, "*.crt"))
	if err != nil {
		return
	}
	for _, crt := range files {
		host := route.NormalizeHost(strings.TrimSuffix(filepath.Base(crt), ".crt"))
		kp, err := tls.LoadX509KeyPair(crt, strings.TrimSuffix(crt, ".crt")+".key")
		if err != nil {
			s.log.Warn("skip certificate file", "file", crt, "err", err)
			continue
		}
		certs[host] = &kp
	}
}

func (s *service) cachePath() string {
	return filepath.Join(s.env.Config.StateDirOf("proxyd"), "state.json")
}

// loadCache reads the last state seen, so routes are served before (or
// without) stellar-gossip.
func (s *service) loadCache() {
	raw, err := os.ReadFile(s.cachePath())
	if err != nil {
		if !errors.Is(err, os.ErrNotExist) {
			s.log.Warn("read route cache", "err", err)
		}
		return
	}
	var es []gossipapi.Entry
	if err := json.Unmarshal(raw, &es); err != nil {
		s.log.Warn("read route cache: ignoring it", "file", s.cachePath(), "err", err)
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, e := range es {
		if relevant(e.Key) {
			s.entries[e.Key] = e
		}
	}
	s.log.Info("routes loaded from cache", "keys", len(s.entries))
}

func (s *service) saveCache() {
	s.mu.Lock()
	if !s.synced {
		s.mu.Unlock()
		return
	}
	es := make([]gossipapi.Entry, 0, len(s.entries))
	for _, e := range s.entries {
		es = append(es, e)
	}
	s.mu.Unlock()
	raw, err := json.Marshal(es)
	if err != nil {
		return
	}
	p := s.cachePath()
	if err := os.MkdirAll(filepath.Dir(p), 0o750); err != nil {
		s.log.Warn("write route cache", "err", err)
		return
	}
	if err := atomicfile.Write(p, raw, 0o600); err != nil {
		s.log.Warn("write route cache", "err", err)
	}
}

func (s *service) handleBackends(w http.ResponseWriter, r *http.Request) error {
	host := route.NormalizeHost(r.URL.Query().Get("host"))
	bs := s.proxy.Backends(host)
	if bs == nil {
		bs = []proxyapi.Backend{}
	}
	httpapi.WriteJSON(w, http.StatusOK, bs)
	return nil
}

func (s *service) handleStatus(w http.ResponseWriter, r *http.Request) error {
	s.mu.Lock()
	st := proxyapi.Status{Synced: s.synced, LastError: s.lastErr}
	s.mu.Unlock()
	st.Routes = len(s.proxy.Table().Routes())
	st.Backends = len(s.proxy.Backends(""))
	st.Generation = s.proxy.Generation()
	httpapi.WriteJSON(w, http.StatusOK, st)
	return nil
}

func hostParam(r *http.Request) (string, error) {
	host := route.NormalizeHost(r.PathValue("host"))
	if err := route.ValidHost(host); err != nil {
		return "", errdefs.New(errdefs.ErrInvalidArgument, "%v", err)
	}
	return host, nil
}

func (s *service) handleGetHost(w http.ResponseWriter, r *http.Request) error {
	host, err := hostParam(r)
	if err != nil {
		return err
	}
	e, err := s.gossip.Get(r.Context(), route.HostsPrefix+host)
	if errors.Is(err, errdefs.ErrNotFound) {
		httpapi.WriteJSON(w, http.StatusOK, proxyapi.HostSettings{})
		return nil
	}
	if err != nil {
		return err
	}
	var hs proxyapi.HostSettings
	if err := json.Unmarshal(e.Value, &hs); err != nil {
		return fmt.Errorf("read %s: %w", e.Key, err)
	}
	httpapi.WriteJSON(w, http.StatusOK, hs)
	return nil
}

func (s *service) handlePutHost(w http.ResponseWriter, r *http.Request) error {
	host, err := hostParam(r)
	if err != nil {
		return err
	}
	var hs proxyapi.HostSettings
	if err := httpapi.DecodeJSON(r, &hs); err != nil {
		return err
	}
	if err := route.ValidateSettings(hs); err != nil {
		return errdefs.New(errdefs.ErrInvalidArgument, "settings of %s: %v", host, err)
	}
	if _, err := s.gossip.Put(r.Context(), route.HostsPrefix+host, hs, ""); err != nil {
		return err
	}
	s.log.Info("host settings written", "host", host, "weights", fmt.Sprint(hs.Weights), "balance", hs.Balance)
	httpapi.WriteJSON(w, http.StatusOK, hs)
	return nil
}

// chanListener is a net.Listener fed by the TLS accept loop.
type chanListener struct {
	c    chan net.Conn
	done chan struct{}
	once sync.Once
}

func (l *chanListener) push(c net.Conn) {
	select {
	case l.c <- c:
	case <-l.done:
		c.Close()
	}
}

func (l *chanListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.c:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *chanListener) Close() error {
	l.once.Do(func() { close(l.done) })
	return nil
}

func (l *chanListener) Addr() net.Addr { return &net.TCPAddr{} }
