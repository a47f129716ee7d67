// Package route turns the cluster state (app specs, instances, proxy host
// settings) into the proxy's routing table: host and path prefix to pools
// of backends. It is pure: no I/O, so every node computes the same table
// from the same state.
package route

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sort"
	"strconv"
	"strings"
	"time"

	"stellar.dev/api/gossipapi"
	"stellar.dev/api/proxyapi"
)

// Key prefixes read by the proxy.
const (
	AppsPrefix      = "apps/"
	NodesPrefix     = "nodes/"
	HostsPrefix     = "proxy/hosts/"
	CertsPrefix     = "acme/certs/"
	ChallengePrefix = "acme/challenges/"
	ALPNPrefix      = "acme/alpn/"
)

// Check kinds.
const (
	CheckHTTP = "http"
	CheckTCP  = "tcp"
)

// Defaults fill what an endpoint does not say.
type Defaults struct {
	// Interval of active health checks ([proxy] health_interval).
	Interval time.Duration
	// Timeout of one check.
	Timeout time.Duration
	// Fall is how many failed checks in a row make a backend unhealthy.
	Fall int
	// Rise is how many passed checks in a row make it healthy again.
	Rise int
}

// DefaultDefaults returns the defaults with the given check interval.
func DefaultDefaults(interval time.Duration) Defaults {
	return Defaults{Interval: interval, Timeout: 2 * time.Second, Fall: 3, Rise: 2}
}

// Check is an active health check of a backend.
type Check struct {
	// Kind is http or tcp.
	Kind string
	// Path is the HTTP path (Kind http).
	Path string
	// Port overrides the backend's port for the check (0: the backend's).
	Port     int
	Interval time.Duration
	Timeout  time.Duration
	Fall     int
	Rise     int
}

// Backend is one instance behind a pool.
type Backend struct {
	// Addr is ip:port.
	Addr  string
	Node  string
	Index int
	Check Check
}

// Key identifies a backend's health state across table swaps.
func (b Backend) Key() string {
	return fmt.Sprintf("%s|%s|%s|%d|%s|%s|%d|%d", b.Addr, b.Check.Kind, b.Check.Path, b.Check.Port, b.Check.Interval, b.Check.Timeout, b.Check.Fall, b.Check.Rise)
}

// Pool is the backends of one app service on a route.
type Pool struct {
	App, Service string
	// Weight is the canary weight (0: no traffic while another pool has weight).
	Weight   int
	Backends []Backend
}

// Name is "<app>/<service>".
func (p *Pool) Name() string { return p.App + "/" + p.Service }

// Route is one host and path prefix.
type Route struct {
	Host string
	// Path is the prefix, "/" for everything.
	Path    string
	TLS     bool
	Balance string
	Pools   []*Pool
}

// Table is the whole routing table.
type Table struct {
	// Hosts maps a lowercase host name to its routes, longest path first.
	Hosts map[string][]*Route
}

// Lookup returns the route for host and path, or nil.
func (t *Table) Lookup(host, path string) *Route {
	for _, r := range t.Hosts[host] {
		if prefixMatch(r.Path, path) {
			return r
		}
	}
	return nil
}

// prefixMatch matches whole path segments: /api matches /api and /api/x, not /apix.
func prefixMatch(prefix, path string) bool {
	if prefix == "/" {
		return true
	}
	if !strings.HasPrefix(path, prefix) {
		return false
	}
	return len(path) == len(prefix) || strings.HasSuffix(prefix, "/") || path[len(prefix)] == '/'
}

// Routes returns every route sorted by host and path.
func (t *Table) Routes() []*Route {
	var out []*Route
	for _, rs := range t.Hosts {
		out = append(out, rs...)
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Host != out[j].Host {
			return out[i].Host < out[j].Host
		}
		return out[i].Path < out[j].Path
	})
	return out
}

// app is the part of an app spec (apps/<name>) the proxy reads. The full
// spec is appd's (api/appapi); unknown fields are ignored on purpose.
type app struct {
	Name     string    `json:"name"`
	Services []service `json:"services"`
}

type service struct {
	Name      string     `json:"name"`
	Health    *health    `json:"health"`
	Endpoints []endpoint `json:"endpoints"`
}

type endpoint struct {
	Service  string  `json:"service"`
	Protocol string  `json:"protocol"`
	Host     string  `json:"host"`
	Port     int     `json:"port"`
	TLS      bool    `json:"tls"`
	Path     string  `json:"path"`
	Health   *health `json:"health"`
}

type health struct {
	HTTP     string   `json:"http"`
	TCP      bool     `json:"tcp"`
	Port     int      `json:"port"`
	Interval duration `json:"interval"`
	Timeout  duration `json:"timeout"`
	Retries  int      `json:"retries"`
	Rise     int      `json:"rise"`
	Exec     []string `json:"exec"`
}

// duration reads "5s" or a number of seconds.
type duration time.Duration

func (d *duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err == nil {
		if s == "" {
			*d = 0
			return nil
		}
		v, err := time.ParseDuration(s)
		if err != nil {
			return fmt.Errorf("duration %q: %w", s, err)
		}
		*d = duration(v)
		return nil
	}
	var n float64
	if err := json.Unmarshal(b, &n); err != nil {
		return fmt.Errorf("duration %s is neither a string nor a number of seconds", b)
	}
	*d = duration(n * float64(time.Second))
	return nil
}

// decodeApp reads apps/<name>: appd's Record ({"spec": App, ...}), or a
// bare App spec.
func decodeApp(raw []byte) (app, error) {
	var rec struct {
		Spec *app `json:"spec"`
	}
	if err := json.Unmarshal(raw, &rec); err != nil {
		return app{}, err
	}
	if rec.Spec != nil {
		return *rec.Spec, nil
	}
	var a app
	err := json.Unmarshal(raw, &a)
	return a, err
}

// instance is the part of nodes/<node>/instances/<app>/<service>/<index>
// the proxy reads (appd's appapi.Instance): instances that are not running
// or are unhealthy get no traffic.
type instance struct {
	IP     string `json:"ip"`
	Health string `json:"health"`
	Status string `json:"status"`
	Ports  []struct {
		Host      int `json:"host"`
		Container int `json:"container"`
	} `json:"ports"`
}

// InstanceKey splits nodes/<node>/instances/<app>/<service>/<index>.
func InstanceKey(key string) (node, app, svc string, index int, ok bool) {
	parts := strings.Split(key, "/")
	if len(parts) != 6 || parts[0] != "nodes" || parts[2] != "instances" {
		return "", "", "", 0, false
	}
	i, err := strconv.Atoi(parts[5])
	if err != nil || i < 0 || parts[1] == "" || parts[3] == "" || parts[4] == "" {
		return "", "", "", 0, false
	}
	return parts[1], parts[3], parts[4], i, true
}

// NormalizeHost lowercases h and drops a port and a trailing dot.
func NormalizeHost(h string) string {
	if host, _, err := net.SplitHostPort(h); err == nil {
		h = host
	}
	h = strings.TrimSuffix(strings.ToLower(h), ".")
	return h
}

// ValidHost reports whether h is a host name a route may have.
func ValidHost(h string) error {
	if h == "" {
		return errors.New("host is empty")
	}
	if len(h) > 253 {
		return fmt.Errorf("host %.20q... is longer than 253 bytes", h)
	}
	for _, label := range strings.Split(h, ".") {
		if label == "" || len(label) > 63 {
			return fmt.Errorf("host %q has an empty or too long label", h)
		}
		for i := 0; i < len(label); i++ {
			c := label[i]
			ok := c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '_' || (c == '*' && len(label) == 1 && i == 0)
			if !ok {
				return fmt.Errorf("host %q has the character %q", h, c)
			}
		}
	}
	return nil
}

// Build computes the table from the entries under apps/, nodes/ and
// proxy/hosts/. Entries it cannot read are skipped and reported in errs;
// keys of failed nodes are not used.
func Build(entries []gossipapi.Entry, d Defaults) (t *Table, errs []error) {
	apps := map[string]app{}
	settings := map[string]proxyapi.HostSettings{}
	type inst struct {
		node  string
		index int
		v     instance
	}
	insts := map[string][]inst{} // app/service -> instances
	for _, e := range entries {
		switch {
		case strings.HasPrefix(e.Key, AppsPrefix):
			a, err := decodeApp(e.Value)
			if err != nil {
				errs = append(errs, fmt.Errorf("read %s: %w", e.Key, err))
				continue
			}
			name := strings.TrimPrefix(e.Key, AppsPrefix)
			if a.Name == "" {
				a.Name = name
			}
			apps[name] = a
		case strings.HasPrefix(e.Key, HostsPrefix):
			var s proxyapi.HostSettings
			if err := json.Unmarshal(e.Value, &s); err != nil {
				errs = append(errs, fmt.Errorf("read %s: %w", e.Key, err))
				continue
			}
			settings[NormalizeHost(strings.TrimPrefix(e.Key, HostsPrefix))] = s
		case strings.HasPrefix(e.Key, NodesPrefix):
			node, a, s, idx, ok := InstanceKey(e.Key)
			if !ok || e.OwnerFailed {
				continue
			}
			var v instance
			if err := json.Unmarshal(e.Value, &v); err != nil {
				errs = append(errs, fmt.Errorf("read %s: %w", e.Key, err))
				continue
			}
			insts[a+"/"+s] = append(insts[a+"/"+s], inst{node: node, index: idx, v: v})
		}
	}
	t = &Table{Hosts: map[string][]*Route{}}
	routes := map[string]*Route{} // host + "\x00" + path
	names := make([]string, 0, len(apps))
	for n := range apps {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, name := range names {
		a := apps[name]
		for _, svc := range a.Services {
			for _, ep := range svc.Endpoints {
				if ep.Protocol != "" && !strings.EqualFold(ep.Protocol, "http") && !strings.EqualFold(ep.Protocol, "https") {
					continue // tcp/udp endpoints are not the proxy's
				}
				if ep.Host == "" {
					continue
				}
				host := NormalizeHost(ep.Host)
				if err := ValidHost(host); err != nil {
					errs = append(errs, fmt.Errorf("app %s service %s endpoint: %w", name, svc.Name, err))
					continue
				}
				if ep.Port < 1 || ep.Port > 65535 {
					errs = append(errs, fmt.Errorf("app %s service %s endpoint %s: port %d is out of range", name, svc.Name, host, ep.Port))
					continue
				}
				path := ep.Path
				if path == "" {
					path = "/"
				}
				if !strings.HasPrefix(path, "/") || strings.ContainsAny(path, " ?#\x00") {
					errs = append(errs, fmt.Errorf("app %s endpoint %s: path %q must start with / and have no spaces, ? or #", name, host, path))
					continue
				}
				target := ep.Service
				if target == "" {
					target = svc.Name
				}
				hc := ep.Health
				if hc == nil {
					hc = svc.Health
				}
				check := makeCheck(hc, d)
				rk := host + "\x00" + path
				r := routes[rk]
				if r == nil {
					r = &Route{Host: host, Path: path, Balance: proxyapi.BalanceRoundRobin}
					routes[rk] = r
					t.Hosts[host] = append(t.Hosts[host], r)
				}
				r.TLS = r.TLS || ep.TLS
				pool := &Pool{App: name, Service: target}
				for _, in := range insts[name+"/"+target] {
					if strings.EqualFold(in.v.Health, "unhealthy") || (in.v.Status != "" && in.v.Status != "running") {
						continue
					}
					ip, err := netip.ParseAddr(in.v.IP)
					if err != nil {
						continue // not started yet, or no network
					}
					port := ep.Port
					for _, p := range in.v.Ports {
						if p.Host == ep.Port && p.Container > 0 {
							port = p.Container
						}
					}
					pool.Backends = append(pool.Backends, Backend{
						Addr: netip.AddrPortFrom(ip, uint16(port)).String(), Node: in.node, Index: in.index, Check: check,
					})
				}
				sort.Slice(pool.Backends, func(i, j int) bool {
					if pool.Backends[i].Node != pool.Backends[j].Node {
						return pool.Backends[i].Node < pool.Backends[j].Node
					}
					return pool.Backends[i].Index < pool.Backends[j].Index
				})
				r.Pools = append(r.Pools, pool)
			}
		}
	}
	for host, rs := range t.Hosts {
		s := settings[host]
		for _, r := range rs {
			if s.Balance == proxyapi.BalanceLeastConn {
				r.Balance = proxyapi.BalanceLeastConn
			}
			for _, p := range r.Pools {
				switch w, ok := s.Weights[p.Name()]; {
				case ok:
					p.Weight = max(w, 0)
				case len(s.Weights) > 0:
					p.Weight = 0
				default:
					p.Weight = 100
				}
			}
		}
		sort.SliceStable(rs, func(i, j int) bool { return len(rs[i].Path) > len(rs[j].Path) })
	}
	return t, errs
}

func makeCheck(h *health, d Defaults) Check {
	c := Check{Kind: CheckTCP, Interval: d.Interval, Timeout: d.Timeout, Fall: d.Fall, Rise: d.Rise}
	if h == nil {
		return c
	}
	if h.HTTP != "" {
		c.Kind = CheckHTTP
		c.Path = h.HTTP
		if !strings.HasPrefix(c.Path, "/") {
			c.Path = "/" + c.Path
		}
	}
	if h.Port > 0 && h.Port < 65536 {
		c.Port = h.Port
	}
	if h.Interval > 0 {
		c.Interval = max(time.Duration(h.Interval), 100*time.Millisecond)
	}
	if h.Timeout > 0 {
		c.Timeout = time.Duration(h.Timeout)
	}
	if c.Timeout > c.Interval {
		c.Timeout = c.Interval
	}
	if h.Retries > 0 {
		c.Fall = min(h.Retries, 100)
	}
	if h.Rise > 0 {
		c.Rise = min(h.Rise, 100)
	}
	return c
}

// ValidateSettings checks settings written through the API.
func ValidateSettings(s proxyapi.HostSettings) error {
	if s.Balance != "" && s.Balance != proxyapi.BalanceRoundRobin && s.Balance != proxyapi.BalanceLeastConn {
		return fmt.Errorf("balance %q is not %s or %s", s.Balance, proxyapi.BalanceRoundRobin, proxyapi.BalanceLeastConn)
	}
	for k, w := range s.Weights {
		a, svc, ok := strings.Cut(k, "/")
		if !ok || a == "" || svc == "" || strings.Contains(svc, "/") {
			return fmt.Errorf("weight key %q is not <app>/<service>", k)
		}
		if w < 0 || w > 1000000 {
			return fmt.Errorf("weight of %s is %d: want 0 to 1000000", k, w)
		}
	}
	return nil
}
