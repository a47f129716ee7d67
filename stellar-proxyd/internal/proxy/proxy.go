// Package proxy serves the routing table: it picks a healthy backend for
// each request (canary weights between pools, round robin or least
// connections within one), forwards it, checks backends actively and ejects
// failing ones passively, and logs every request.
package proxy

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httputil"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"stellar.dev/api/proxyapi"
	"stellar.dev/daemon/metrics"
	"stellar.dev/stellar-proxyd/internal/guard"
	"stellar.dev/stellar-proxyd/internal/route"
)

// Config tunes the proxy.
type Config struct {
	// HTTPSPort is the port in redirects to HTTPS ("" or "443": none).
	HTTPSPort string
	// IdleConnsPerBackend bounds the kept-alive connections to one backend.
	IdleConnsPerBackend int
	// DialTimeout bounds connecting to a backend.
	DialTimeout time.Duration
	// DisableLean sends every request through httputil.ReverseProxy
	// instead of the lean path for plain requests (see fast.go).
	DisableLean bool
}

// DefaultConfig returns the defaults.
func DefaultConfig() Config {
	return Config{IdleConnsPerBackend: 256, DialTimeout: 3 * time.Second}
}

// Extras is what the proxy serves beside routes: certificates of TLS hosts
// and ACME HTTP-01 answers, swapped in with the table.
type Extras struct {
	// Certs maps a host to its certificate.
	Certs map[string]*tls.Certificate
	// Challenges maps an HTTP-01 token to its key authorization.
	Challenges map[string]string
	// ALPN maps a host to its TLS-ALPN-01 challenge certificate.
	ALPN map[string]*tls.Certificate
}

type liveTable struct {
	table  *route.Table
	hosts  map[string][]*liveRoute
	extras Extras
}

type liveRoute struct {
	r     *route.Route
	pools []*livePool
}

type livePool struct {
	p        *route.Pool
	backends []*backend
	rr       atomic.Uint64
}

// Proxy is the HTTP handler of the ingress.
type Proxy struct {
	cfg    Config
	log    *slog.Logger
	access *slog.Logger
	tr     *http.Transport
	rp     *httputil.ReverseProxy
	hc     *http.Client
	dialer *net.Dialer

	cur atomic.Pointer[liveTable]
	gen atomic.Uint64

	mu       sync.Mutex
	backends map[string]*backend // by route.Backend.Key()+host
	ctx      context.Context

	requests *metrics.CounterVec
	duration *metrics.HistogramVec
	byClass  [6]*metrics.Counter // by status class, looked up once
	latency  *metrics.Histogram
}

type ctxKey struct{}

// reqState travels with one request from ServeHTTP to RoundTrip.
type reqState struct {
	route   *liveRoute
	backend *backend
	tls     bool
}

// New returns a proxy with an empty table. reg may be nil.
func New(cfg Config, log *slog.Logger, reg *metrics.Registry) *Proxy {
	if cfg.IdleConnsPerBackend <= 0 {
		cfg.IdleConnsPerBackend = DefaultConfig().IdleConnsPerBackend
	}
	if cfg.DialTimeout <= 0 {
		cfg.DialTimeout = DefaultConfig().DialTimeout
	}
	p := &Proxy{cfg: cfg, log: log, access: log.With("log", "access"), backends: map[string]*backend{}, ctx: context.Background()}
	d := &net.Dialer{Timeout: cfg.DialTimeout, KeepAlive: 30 * time.Second}
	p.dialer = d
	p.tr = &http.Transport{
		DialContext:           d.DialContext,
		MaxIdleConns:          0,
		MaxIdleConnsPerHost:   cfg.IdleConnsPerBackend,
		IdleConnTimeout:       90 * time.Second,
		ExpectContinueTimeout: time.Second,
		DisableCompression:    true,
	}
	p.hc = &http.Client{Transport: &http.Transport{DialContext: d.DialContext, MaxIdleConnsPerHost: 2, IdleConnTimeout: 30 * time.Second, DisableCompression: true},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	p.rp = &httputil.ReverseProxy{
		Rewrite:   p.rewrite,
		Transport: roundTripper{p},
		// Known-length answers are written in one go; answers of unknown
		// length (chunked, event streams) are flushed on every write.
		FlushInterval: 0,
		ErrorHandler:  p.errorHandler,
		ErrorLog:      slog.NewLogLogger(log.Handler(), slog.LevelDebug),
		BufferPool:    bufPool{},
	}
	p.cur.Store(&liveTable{table: &route.Table{Hosts: map[string][]*route.Route{}}, hosts: map[string][]*liveRoute{}})
	if reg != nil {
		p.requests = reg.Counter("stellar_proxy_requests_total", "Requests served, by status class.", "code")
		p.duration = reg.Histogram("stellar_proxy_request_seconds", "Time to serve a request.", []float64{.001, .005, .01, .05, .1, .5, 1, 5})
		for c := 1; c <= 5; c++ {
			p.byClass[c] = p.requests.With(strconv.Itoa(c) + "xx")
		}
		p.latency = p.duration.With()
		reg.GaugeFunc("stellar_proxy_routes", "Routes in the table.", func() float64 { return float64(len(p.cur.Load().table.Routes())) })
		reg.GaugeFunc("stellar_proxy_generation", "Route table swaps since start.", func() float64 { return float64(p.gen.Load()) })
	}
	return p
}

// Start sets the context the health checks run in; call it before Update.
func (p *Proxy) Start(ctx context.Context) {
	p.mu.Lock()
	p.ctx = ctx
	p.mu.Unlock()
}

// Update swaps in a new table atomically: requests in flight finish on the
// old one. Health state of backends that stay is kept.
func (p *Proxy) Update(t *route.Table, ex Extras) {
	p.mu.Lock()
	defer p.mu.Unlock()
	lt := &liveTable{table: t, hosts: map[string][]*liveRoute{}, extras: ex}
	keep := map[string]bool{}
	for host, rs := range t.Hosts {
		for _, r := range rs {
			lr := &liveRoute{r: r}
			for _, pool := range r.Pools {
				lp := &livePool{p: pool}
				for _, bs := range pool.Backends {
					k := host + "|" + bs.Key()
					b := p.backends[k]
					if b == nil {
						b = newBackend(bs)
						ctx, cancel := context.WithCancel(p.ctx)
						b.stop = func() { cancel(); b.pool.close() }
						p.backends[k] = b
						go b.checkLoop(ctx, host, p.hc, func(addr string, healthy bool, err error) {
							if healthy {
								p.log.Info("backend healthy", "host", host, "backend", addr)
							} else {
								p.log.Warn("backend unhealthy", "host", host, "backend", addr, "err", err)
							}
						})
					}
					keep[k] = true
					lp.backends = append(lp.backends, b)
				}
				lr.pools = append(lr.pools, lp)
			}
			lt.hosts[host] = append(lt.hosts[host], lr)
		}
	}
	for k, b := range p.backends {
		if !keep[k] {
			b.stop()
			delete(p.backends, k)
		}
	}
	p.cur.Store(lt)
	p.gen.Add(1)
}

// Generation counts table swaps.
func (p *Proxy) Generation() uint64 { return p.gen.Load() }

// Table returns the table being served.
func (p *Proxy) Table() *route.Table { return p.cur.Load().table }

// Certificate returns the certificate of host, if there is one.
func (p *Proxy) Certificate(host string) *tls.Certificate {
	return p.cur.Load().extras.Certs[route.NormalizeHost(host)]
}

// ALPNCertificate returns the TLS-ALPN-01 certificate of host, if any.
func (p *Proxy) ALPNCertificate(host string) *tls.Certificate {
	return p.cur.Load().extras.ALPN[route.NormalizeHost(host)]
}

// HasChallenge reports whether the HTTP-01 answer of token is served.
func (p *Proxy) HasChallenge(token string) bool {
	_, ok := p.cur.Load().extras.Challenges[token]
	return ok
}

// TLSHosts returns the hosts of routes with TLS on.
func (p *Proxy) TLSHosts() []string {
	var out []string
	seen := map[string]bool{}
	for _, r := range p.cur.Load().table.Routes() {
		if r.TLS && !seen[r.Host] {
			seen[r.Host] = true
			out = append(out, r.Host)
		}
	}
	return out
}

// Backends lists every backend, host filtering when not empty.
func (p *Proxy) Backends(host string) []proxyapi.Backend {
	lt := p.cur.Load()
	var out []proxyapi.Backend
	for _, r := range lt.table.Routes() {
		if host != "" && r.Host != host {
			continue
		}
		var lr *liveRoute
		for _, x := range lt.hosts[r.Host] {
			if x.r == r {
				lr = x
			}
		}
		if lr == nil {
			continue
		}
		for _, lp := range lr.pools {
			for _, b := range lp.backends {
				h, lastErr := b.state()
				out = append(out, proxyapi.Backend{
					Host: r.Host, Path: r.Path, App: lp.p.App, Service: lp.p.Service, Node: b.spec.Node,
					Addr: b.spec.Addr, TLS: r.TLS, Health: h, Weight: lp.p.Weight, Active: b.active.Load(), LastError: lastErr,
				})
			}
		}
	}
	return out
}

// pick chooses a backend, skipping those in tried.
func (lr *liveRoute) pick(tried []*backend) *backend {
	now := time.Now().UnixNano()
	usable := func(b *backend) bool {
		for _, t := range tried {
			if t == b {
				return false
			}
		}
		return true
	}
	// Canary: choose a pool by weight among pools with an available backend.
	var total int
	var cands [8]*livePool
	pools := cands[:0]
	for _, lp := range lr.pools {
		if lp.p.Weight > 0 && lp.hasAvailable(now, usable) {
			pools = append(pools, lp)
			total += lp.p.Weight
		}
	}
	if len(pools) == 0 {
		// Fail over to pools without weight, then to anything at all.
		for _, lp := range lr.pools {
			if lp.hasAvailable(now, usable) {
				return lp.choose(lr.r.Balance, now, usable)
			}
		}
		for _, lp := range lr.pools {
			for _, b := range lp.backends {
				if usable(b) && now >= b.ejectEnd.Load() {
					return b
				}
			}
		}
		return nil
	}
	lp := pools[0]
	if len(pools) > 1 {
		n := rand.IntN(total)
		for _, x := range pools {
			if n < x.p.Weight {
				lp = x
				break
			}
			n -= x.p.Weight
		}
	}
	return lp.choose(lr.r.Balance, now, usable)
}

func (lp *livePool) hasAvailable(now int64, usable func(*backend) bool) bool {
	for _, b := range lp.backends {
		if b.available(now) && usable(b) {
			return true
		}
	}
	return false
}

func (lp *livePool) choose(balance string, now int64, usable func(*backend) bool) *backend {
	var buf [16]*backend
	avail := buf[:0]
	for _, b := range lp.backends {
		if b.available(now) && usable(b) {
			avail = append(avail, b)
		}
	}
	if len(avail) == 0 {
		return nil
	}
	// Round robin over the available backends, so the one after a down
	// backend does not get its share too.
	start := int(lp.rr.Add(1) % uint64(len(avail)))
	if balance != proxyapi.BalanceLeastConn {
		return avail[start]
	}
	best := avail[start]
	for i := 1; i < len(avail); i++ {
		b := avail[(start+i)%len(avail)]
		if b.active.Load() < best.active.Load() {
			best = b
		}
	}
	return best
}

// IsTLS reports whether r came over TLS (also for HTTP/1 over TLS served
// through the request guard, where r.TLS is nil).
func IsTLS(r *http.Request) bool {
	if r.TLS != nil {
		return true
	}
	return guard.FromContext(r.Context()).TLS()
}

// ServeHTTP routes one request.
func (p *Proxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	lt := p.cur.Load()
	host := route.NormalizeHost(r.Host)
	sw := &statusWriter{ResponseWriter: w}
	st := &reqState{tls: IsTLS(r)}
	defer func() {
		d := time.Since(start)
		status := sw.status
		if status == 0 {
			status = http.StatusOK
		}
		be := ""
		if st.backend != nil {
			be = st.backend.spec.Addr
		}
		if p.access.Enabled(r.Context(), slog.LevelInfo) {
			p.access.Info("request", "host", host, "method", r.Method, "path", r.URL.Path, "status", status,
				"duration", d, "backend", be, "client", r.RemoteAddr, "proto", r.Proto, "bytes", sw.bytes)
		}
		if p.requests != nil {
			if c := status / 100; c >= 1 && c <= 5 {
				p.byClass[c].Inc()
			}
			p.latency.Observe(d.Seconds())
		}
	}()
	if strings.HasPrefix(r.URL.Path, "/.well-known/acme-challenge/") && !st.tls {
		token := strings.TrimPrefix(r.URL.Path, "/.well-known/acme-challenge/")
		if ka, ok := lt.extras.Challenges[token]; ok {
			sw.Header().Set("Content-Type", "text/plain")
			io.WriteString(sw, ka)
			return
		}
	}
	var lr *liveRoute
	for _, x := range lt.hosts[host] {
		if routeMatch(x.r.Path, r.URL.Path) {
			lr = x
			break
		}
	}
	if lr == nil {
		http.Error(sw, "stellar-proxyd: no route for host "+host, http.StatusNotFound)
		return
	}
	if lr.r.TLS && !st.tls && lt.extras.Certs[host] != nil {
		target := "https://" + host
		if p.cfg.HTTPSPort != "" && p.cfg.HTTPSPort != "443" {
			target += ":" + p.cfg.HTTPSPort
		}
		http.Redirect(sw, r, target+r.URL.RequestURI(), http.StatusPermanentRedirect)
		return
	}
	st.route = lr
	st.backend = lr.pick(nil)
	if st.backend == nil {
		http.Error(sw, "stellar-proxyd: no backend for "+host+lr.r.Path, http.StatusServiceUnavailable)
		return
	}
	if p.leanOK(r) {
		p.serveLean(sw, r, st)
		return
	}
	p.rp.ServeHTTP(sw, r.WithContext(context.WithValue(r.Context(), ctxKey{}, st)))
}

func routeMatch(prefix, path string) bool {
	if prefix == "/" {
		return true
	}
	if !strings.HasPrefix(path, prefix) {
		return false
	}
	return len(path) == len(prefix) || strings.HasSuffix(prefix, "/") || path[len(prefix)] == '/'
}

func (p *Proxy) rewrite(pr *httputil.ProxyRequest) {
	st := pr.In.Context().Value(ctxKey{}).(*reqState)
	pr.Out.URL.Scheme = "http"
	pr.Out.URL.Host = st.backend.spec.Addr
	pr.Out.Host = pr.In.Host
	// This is the edge: forwarded headers from clients are not trusted.
	if ip, _, err := net.SplitHostPort(pr.In.RemoteAddr); err == nil {
		pr.Out.Header.Set("X-Forwarded-For", ip)
	}
	pr.Out.Header.Set("X-Forwarded-Host", pr.In.Host)
	proto := "http"
	if st.tls {
		proto = "https"
	}
	pr.Out.Header.Set("X-Forwarded-Proto", proto)
}

type roundTripper struct{ p *Proxy }

// RoundTrip forwards to the chosen backend; after a refused connection, or
// any transport error of an idempotent request, a request without a body is
// retried on another backend (at most twice).
func (rt roundTripper) RoundTrip(req *http.Request) (*http.Response, error) {
	st := req.Context().Value(ctxKey{}).(*reqState)
	var tried []*backend
	for {
		b := st.backend
		out := req
		if req.URL.Host != b.spec.Addr {
			r2 := *req
			u := *req.URL
			u.Host = b.spec.Addr
			r2.URL = &u
			out = &r2
		}
		b.active.Add(1)
		resp, err := rt.p.tr.RoundTrip(out)
		if err == nil {
			b.reportSuccess()
			if resp.StatusCode == http.StatusSwitchingProtocols {
				b.active.Add(-1)
			} else {
				resp.Body = &doneBody{ReadCloser: resp.Body, b: b}
			}
			return resp, nil
		}
		b.active.Add(-1)
		if req.Context().Err() != nil {
			return nil, err
		}
		refused := errors.Is(err, syscall.ECONNREFUSED) || isDial(err)
		b.reportError(err, refused)
		// Nothing was sent when the connect failed; an idempotent request
		// without a body may be sent again after any transport error (as
		// nginx's proxy_next_upstream error does).
		hasBody := req.Body != nil && req.Body != http.NoBody
		idempotent := req.Method == http.MethodGet || req.Method == http.MethodHead || req.Method == http.MethodOptions
		if len(tried) >= 2 || hasBody || !(refused || idempotent) || req.Header.Get("Upgrade") != "" {
			return nil, err
		}
		tried = append(tried, b)
		next := st.route.pick(tried)
		if next == nil {
			return nil, err
		}
		st.backend = next
	}
}

func isDial(err error) bool {
	var op *net.OpError
	return errors.As(err, &op) && op.Op == "dial"
}

// doneBody ends a request's count of in-flight requests when its body closes.
type doneBody struct {
	io.ReadCloser
	b    *backend
	once sync.Once
}

func (d *doneBody) Close() error {
	d.once.Do(func() { d.b.active.Add(-1) })
	return d.ReadCloser.Close()
}

func (p *Proxy) errorHandler(w http.ResponseWriter, r *http.Request, err error) {
	if gc := guard.FromContext(r.Context()); gc.Bad() {
		w.Header().Set("Connection", "close")
		http.Error(w, "stellar-proxyd: bad request framing", http.StatusBadRequest)
		return
	}
	if r.Context().Err() != nil {
		// The client went away; nobody reads an answer.
		w.WriteHeader(499)
		return
	}
	st, _ := r.Context().Value(ctxKey{}).(*reqState)
	be := ""
	if st != nil && st.backend != nil {
		be = st.backend.spec.Addr
	}
	p.log.Debug("backend request failed", "host", r.Host, "backend", be, "err", err)
	http.Error(w, "stellar-proxyd: backend unavailable", http.StatusBadGateway)
}

// statusWriter records the status and size; Unwrap keeps Flush and Hijack
// reachable through http.ResponseController (streaming, WebSockets).
type statusWriter struct {
	http.ResponseWriter
	status int
	bytes  int64
}

func (s *statusWriter) WriteHeader(code int) {
	if s.status == 0 && code >= 200 {
		s.status = code
	}
	if code == http.StatusSwitchingProtocols {
		s.status = code
	}
	s.ResponseWriter.WriteHeader(code)
}

func (s *statusWriter) Write(b []byte) (int, error) {
	if s.status == 0 {
		s.status = http.StatusOK
	}
	n, err := s.ResponseWriter.Write(b)
	s.bytes += int64(n)
	return n, err
}

func (s *statusWriter) Flush() {
	if f, ok := s.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

func (s *statusWriter) Unwrap() http.ResponseWriter { return s.ResponseWriter }

type bufPool struct{}

var pool = sync.Pool{New: func() any { b := make([]byte, 32*1024); return &b }}

func (bufPool) Get() []byte  { return *(pool.Get().(*[]byte)) }
func (bufPool) Put(b []byte) { pool.Put(&b) }
