// Package config loads, validates and prints /etc/stellar/stellar.toml, the
// one configuration file of every Stellar daemon.
package config

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/BurntSushi/toml"
)

// DefaultPath is where the configuration file lives.
const DefaultPath = "/etc/stellar/stellar.toml"

// EnvPath names the environment variable that overrides DefaultPath.
const EnvPath = "STELLAR_CONFIG"

// Config is the whole file: one section per daemon plus [node].
type Config struct {
	Node    Node    `toml:"node"`
	Gossip  Gossip  `toml:"gossip"`
	Network Network `toml:"network"`
	DNS     DNS     `toml:"dns"`
	Proxy   Proxy   `toml:"proxy"`
	Apps    Apps    `toml:"apps"`
}

// Node is the [node] section: this host's identity and paths.
type Node struct {
	// Name is the node's identity in the cluster (default: the hostname).
	Name string `toml:"name"`
	// Labels are "key=value" pairs used by placement.
	Labels []string `toml:"labels"`
	// Advertise is the address other nodes reach this one at
	// (default "": the first global address of the default-route interface).
	Advertise string `toml:"advertise"`
	// RunDir holds the daemons' Unix sockets (<run_dir>/<daemon>.sock).
	RunDir string `toml:"run_dir"`
	// StateDir holds each daemon's state (<state_dir>/<daemon>/).
	StateDir string `toml:"state_dir"`
	// Metrics is a TCP address serving every daemon's /metrics ("" = off).
	Metrics string `toml:"metrics"`
	// LogLevel is debug, info, warn or error.
	LogLevel string `toml:"log_level"`
}

// Gossip is the [gossip] section, read by stellar-gossip.
type Gossip struct {
	// Bind is serf's address (tcp and udp).
	Bind string `toml:"bind"`
	// PeerAPI is the address of the peer port (mutual TLS).
	PeerAPI string `toml:"peer_api"`
	// Peers are serf addresses (host or host:port) to join at start.
	Peers []string `toml:"peers"`
	// Profile is "lan" (serf's defaults) or "edge" (slow links).
	Profile string `toml:"profile"`
	// AntiEntropy is how often the state is compared with one random peer
	// (0: the profile's default, 30s for lan, 2m for edge).
	AntiEntropy time.Duration `toml:"anti_entropy"`
	// ReconnectTimeout is how long a failed node is retried before it is
	// reaped; tombstones are kept at least as long.
	ReconnectTimeout time.Duration `toml:"reconnect_timeout"`
	// UserEvents pushes each change at once as a serf user event; without
	// them the state converges by anti-entropy alone.
	UserEvents bool `toml:"user_events"`
}

// Network is the [network] section, read by stellar-netd.
type Network struct {
	// Subnet is the cluster range cut into per-node blocks.
	Subnet string `toml:"subnet"`
	// NodePrefix is the prefix length of each node's block.
	NodePrefix int `toml:"node_prefix"`
	// Bridge is the name of the node's container bridge.
	Bridge string `toml:"bridge"`
	// DNSAddress is the link-local address cluster DNS answers on.
	DNSAddress string `toml:"dns_address"`
	// CNIConfDir is where netd writes the CNI network configuration.
	CNIConfDir string `toml:"cni_conf_dir"`
	// CNIBinDirs are searched for CNI plugins.
	CNIBinDirs []string `toml:"cni_bin_dirs"`
}

// DNS is the [dns] section, read by stellar-dnsd.
type DNS struct {
	// Domain is the cluster zone.
	Domain string `toml:"domain"`
	// Listen are the addresses (udp and tcp) DNS answers on.
	Listen []string `toml:"listen"`
	// Upstream are the servers for everything outside the zone
	// (empty: the nameservers of UpstreamResolvConf).
	Upstream []string `toml:"upstream"`
	// UpstreamResolvConf is read for upstream servers when Upstream is empty.
	UpstreamResolvConf string `toml:"upstream_resolv_conf"`
	// TTL of the zone's records.
	TTL time.Duration `toml:"ttl"`
}

// Proxy is the [proxy] section, read by stellar-proxyd.
type Proxy struct {
	// HTTP is the plain HTTP listen address.
	HTTP string `toml:"http"`
	// HTTPS is the TLS listen address.
	HTTPS string `toml:"https"`
	// ACMEDirectory is the ACME directory URL ("" = no ACME).
	ACMEDirectory string `toml:"acme_directory"`
	// ACMEEmail is the ACME account's contact.
	ACMEEmail string `toml:"acme_email"`
	// HealthInterval is the default interval of active health checks.
	HealthInterval time.Duration `toml:"health_interval"`
}

// Apps is the [apps] section, read by stellar-appd.
type Apps struct {
	// Containerd is containerd's socket.
	Containerd string `toml:"containerd"`
	// Namespace is the containerd namespace of Stellar's containers.
	Namespace string `toml:"namespace"`
	// Snapshotter is the default snapshotter.
	Snapshotter string `toml:"snapshotter"`
	// Runtime is the default runtime.
	Runtime string `toml:"runtime"`
	// RescheduleAfter is how long a node must be failed before its
	// instances are placed elsewhere.
	RescheduleAfter time.Duration `toml:"reschedule_after"`
}

// DefaultConfig returns the configuration of a single node with no file.
// Node.Name is left empty: Load fills in the hostname.
func DefaultConfig() Config {
	return Config{
		Node: Node{RunDir: "/run/stellar", StateDir: "/var/lib/stellar", LogLevel: "info", Labels: []string{}},
		Gossip: Gossip{
			Bind: "0.0.0.0:7946", PeerAPI: "0.0.0.0:7947", Peers: []string{}, Profile: "lan",
			ReconnectTimeout: 24 * time.Hour, UserEvents: true,
		},
		Network: Network{
			Subnet: "172.16.0.0/12", NodePrefix: 22, Bridge: "stellar0", DNSAddress: "169.254.53.53",
			CNIConfDir: "/etc/cni/net.d", CNIBinDirs: []string{"/usr/lib/cni", "/opt/cni/bin"},
		},
		DNS: DNS{
			Domain: "stellar", Listen: []string{"169.254.53.53:53"}, Upstream: []string{},
			UpstreamResolvConf: "/etc/resolv.conf", TTL: 5 * time.Second,
		},
		Proxy: Proxy{HTTP: ":80", HTTPS: ":443", HealthInterval: 5 * time.Second},
		Apps: Apps{
			Containerd: "/run/containerd/containerd.sock", Namespace: "stellar", Snapshotter: "overlayfs",
			Runtime: "io.containerd.runc.v2", RescheduleAfter: 60 * time.Second,
		},
	}
}

// Path returns the configuration file to read: flag (if set), else
// $STELLAR_CONFIG, else DefaultPath.
func Path(flag string) string {
	if flag != "" {
		return flag
	}
	if p := os.Getenv(EnvPath); p != "" {
		return p
	}
	return DefaultPath
}

// Error is a problem in the configuration file, with where it is.
type Error struct {
	File string
	Line int // 0 when unknown
	Key  string
	Msg  string
}

func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString(e.File)
	if e.Line > 0 {
		fmt.Fprintf(&b, ":%d", e.Line)
	}
	if e.Key != "" {
		fmt.Fprintf(&b, ": key %s", e.Key)
	}
	b.WriteString(": ")
	b.WriteString(e.Msg)
	return b.String()
}

// Load reads the file at path over the defaults. A missing file at the
// default path gives the defaults; a missing file named explicitly is an
// error. Unknown keys and bad values are errors naming file, line and key.
func Load(path string, explicit bool) (Config, error) {
	cfg := DefaultConfig()
	data, err := os.ReadFile(path)
	switch {
	case errors.Is(err, os.ErrNotExist) && !explicit:
		data = nil
	case err != nil:
		return Config{}, fmt.Errorf("read config: %w", err)
	}
	if err := Parse(path, data, &cfg); err != nil {
		return Config{}, err
	}
	if cfg.Node.Name == "" {
		h, err := os.Hostname()
		if err != nil {
			return Config{}, fmt.Errorf("read hostname for node.name: %w", err)
		}
		cfg.Node.Name = strings.ToLower(strings.SplitN(h, ".", 2)[0])
	}
	if err := cfg.Validate(); err != nil {
		var ce *Error
		if errors.As(err, &ce) {
			ce.File = path
			ce.Line = findLine(data, ce.Key)
		}
		return Config{}, err
	}
	return cfg, nil
}

// Parse decodes data over cfg. name is the file name used in errors.
func Parse(name string, data []byte, cfg *Config) error {
	md, err := toml.NewDecoder(bytes.NewReader(data)).Decode(cfg)
	if err != nil {
		var pe toml.ParseError
		if errors.As(err, &pe) {
			return &Error{File: name, Line: pe.Position.Line, Key: pe.LastKey, Msg: parseMsg(pe)}
		}
		if m := decodeErrRe.FindStringSubmatch(err.Error()); m != nil {
			line, _ := strconv.Atoi(m[1])
			return &Error{File: name, Line: line, Key: m[2], Msg: m[3]}
		}
		return &Error{File: name, Msg: err.Error()}
	}
	if und := md.Undecoded(); len(und) > 0 {
		k := und[0].String()
		return &Error{File: name, Line: findLine(data, k), Key: k, Msg: "unknown key"}
	}
	return nil
}

func parseMsg(pe toml.ParseError) string {
	msg := pe.Message
	if msg == "" {
		msg = pe.Error()
	}
	return msg
}

// findLine returns the 1-based line at which the dotted key is set, or 0.
func findLine(data []byte, key string) int {
	if key == "" {
		return 0
	}
	table, leaf := "", key
	if i := strings.LastIndex(key, "."); i >= 0 {
		table, leaf = key[:i], key[i+1:]
	}
	cur := ""
	for i, line := range strings.Split(string(data), "\n") {
		l := strings.TrimSpace(line)
		if strings.HasPrefix(l, "[") && strings.HasSuffix(l, "]") {
			cur = strings.Trim(l, "[] ")
			if cur == key {
				return i + 1
			}
			continue
		}
		if k, _, ok := strings.Cut(l, "="); ok && strings.Trim(strings.TrimSpace(k), `"`) == leaf && cur == table {
			return i + 1
		}
	}
	return 0
}

// decodeErrRe reads the position out of toml's type errors, which are not
// ParseErrors.
var decodeErrRe = regexp.MustCompile(`^toml: line (\d+) \(last key "([^"]*)"\): (.*)$`)

var (
	nameRe  = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`)
	labelRe = regexp.MustCompile(`^[A-Za-z0-9]([A-Za-z0-9._/-]{0,61}[A-Za-z0-9])?=[A-Za-z0-9._/-]{0,63}$`)
	ifRe    = regexp.MustCompile(`^[A-Za-z0-9_.-]{1,15}$`)
)

// Validate checks every field and returns the first problem as an *Error
// naming the key.
func (c Config) Validate() error {
	bad := func(key, format string, args ...any) error {
		return &Error{Key: key, Msg: fmt.Sprintf(format, args...)}
	}
	if c.Node.Name != "" && !nameRe.MatchString(c.Node.Name) {
		return bad("node.name", "%q is not a valid node name (lowercase letters, digits and '-', at most 63)", c.Node.Name)
	}
	for _, l := range c.Node.Labels {
		if !labelRe.MatchString(l) {
			return bad("node.labels", "%q is not a label of the form key=value", l)
		}
	}
	if c.Node.Advertise != "" {
		if _, err := netip.ParseAddr(c.Node.Advertise); err != nil {
			return bad("node.advertise", "%q is not an IP address", c.Node.Advertise)
		}
	}
	if !strings.HasPrefix(c.Node.RunDir, "/") {
		return bad("node.run_dir", "%q is not an absolute path", c.Node.RunDir)
	}
	if !strings.HasPrefix(c.Node.StateDir, "/") {
		return bad("node.state_dir", "%q is not an absolute path", c.Node.StateDir)
	}
	if c.Node.Metrics != "" {
		if err := hostPort(c.Node.Metrics); err != nil {
			return bad("node.metrics", "%v", err)
		}
	}
	switch c.Node.LogLevel {
	case "debug", "info", "warn", "error":
	default:
		return bad("node.log_level", "%q is not one of debug, info, warn, error", c.Node.LogLevel)
	}
	if err := hostPort(c.Gossip.Bind); err != nil {
		return bad("gossip.bind", "%v", err)
	}
	if err := hostPort(c.Gossip.PeerAPI); err != nil {
		return bad("gossip.peer_api", "%v", err)
	}
	for _, p := range c.Gossip.Peers {
		if p == "" || strings.ContainsAny(p, " /") {
			return bad("gossip.peers", "%q is not host or host:port", p)
		}
	}
	if c.Gossip.Profile != "lan" && c.Gossip.Profile != "edge" {
		return bad("gossip.profile", "%q is not lan or edge", c.Gossip.Profile)
	}
	if c.Gossip.AntiEntropy != 0 && (c.Gossip.AntiEntropy < 100*time.Millisecond || c.Gossip.AntiEntropy > time.Hour) {
		return bad("gossip.anti_entropy", "%s must be 0 (the profile's default) or between 100ms and 1h", c.Gossip.AntiEntropy)
	}
	if c.Gossip.ReconnectTimeout < 10*time.Second {
		return bad("gossip.reconnect_timeout", "%s is shorter than 10s", c.Gossip.ReconnectTimeout)
	}
	pfx, err := netip.ParsePrefix(c.Network.Subnet)
	if err != nil || !pfx.Addr().Is4() || pfx.Masked() != pfx {
		return bad("network.subnet", "%q is not an IPv4 network in CIDR form (e.g. 172.16.0.0/12)", c.Network.Subnet)
	}
	if c.Network.NodePrefix < pfx.Bits() || c.Network.NodePrefix > 29 {
		return bad("network.node_prefix", "%d must be between the subnet's /%d and /29", c.Network.NodePrefix, pfx.Bits())
	}
	if !ifRe.MatchString(c.Network.Bridge) {
		return bad("network.bridge", "%q is not an interface name (1-15 of letters, digits, '_', '-', '.')", c.Network.Bridge)
	}
	if a, err := netip.ParseAddr(c.Network.DNSAddress); err != nil || !a.Is4() {
		return bad("network.dns_address", "%q is not an IPv4 address", c.Network.DNSAddress)
	}
	if !strings.HasPrefix(c.Network.CNIConfDir, "/") {
		return bad("network.cni_conf_dir", "%q is not an absolute path", c.Network.CNIConfDir)
	}
	if len(c.Network.CNIBinDirs) == 0 {
		return bad("network.cni_bin_dirs", "at least one directory is needed")
	}
	d := strings.TrimSuffix(c.DNS.Domain, ".")
	for _, part := range strings.Split(d, ".") {
		if !nameRe.MatchString(part) {
			return bad("dns.domain", "%q is not a domain name", c.DNS.Domain)
		}
	}
	if len(c.DNS.Listen) == 0 {
		return bad("dns.listen", "at least one address is needed")
	}
	for _, l := range c.DNS.Listen {
		if err := hostPort(l); err != nil {
			return bad("dns.listen", "%v", err)
		}
	}
	for _, u := range c.DNS.Upstream {
		h := u
		if hh, _, err := net.SplitHostPort(u); err == nil {
			h = hh
		}
		if _, err := netip.ParseAddr(h); err != nil {
			return bad("dns.upstream", "%q is not an IP address or ip:port", u)
		}
	}
	if c.DNS.TTL <= 0 || c.DNS.TTL > 24*time.Hour {
		return bad("dns.ttl", "%s must be between 1s and 24h", c.DNS.TTL)
	}
	if err := hostPort(c.Proxy.HTTP); err != nil {
		return bad("proxy.http", "%v", err)
	}
	if err := hostPort(c.Proxy.HTTPS); err != nil {
		return bad("proxy.https", "%v", err)
	}
	if c.Proxy.ACMEDirectory != "" && !strings.HasPrefix(c.Proxy.ACMEDirectory, "https://") && !strings.HasPrefix(c.Proxy.ACMEDirectory, "http://") {
		return bad("proxy.acme_directory", "%q is not an http(s) URL", c.Proxy.ACMEDirectory)
	}
	if c.Proxy.HealthInterval < 100*time.Millisecond {
		return bad("proxy.health_interval", "%s is shorter than 100ms", c.Proxy.HealthInterval)
	}
	if !strings.HasPrefix(c.Apps.Containerd, "/") {
		return bad("apps.containerd", "%q is not an absolute socket path", c.Apps.Containerd)
	}
	if !nameRe.MatchString(c.Apps.Namespace) {
		return bad("apps.namespace", "%q is not a valid containerd namespace", c.Apps.Namespace)
	}
	if c.Apps.Snapshotter == "" {
		return bad("apps.snapshotter", "must not be empty")
	}
	if c.Apps.Runtime == "" {
		return bad("apps.runtime", "must not be empty")
	}
	if c.Apps.RescheduleAfter < time.Second {
		return bad("apps.reschedule_after", "%s is shorter than 1s", c.Apps.RescheduleAfter)
	}
	return nil
}

func hostPort(s string) error {
	_, p, err := net.SplitHostPort(s)
	if err != nil {
		return fmt.Errorf("%q is not host:port", s)
	}
	n, err := strconv.Atoi(p)
	if err != nil || n < 0 || n > 65535 {
		return fmt.Errorf("%q has a bad port", s)
	}
	return nil
}

// Socket returns the path of the named daemon's socket ("gossip" ->
// <run_dir>/gossip.sock).
func (c Config) Socket(daemon string) string {
	return strings.TrimSuffix(c.Node.RunDir, "/") + "/" + daemon + ".sock"
}

// StateDirOf returns the named daemon's state directory.
func (c Config) StateDirOf(daemon string) string {
	return strings.TrimSuffix(c.Node.StateDir, "/") + "/" + daemon
}

// LabelMap returns the node's labels as a map.
func (c Config) LabelMap() map[string]string {
	m := make(map[string]string, len(c.Node.Labels))
	for _, l := range c.Node.Labels {
		k, v, _ := strings.Cut(l, "=")
		m[k] = v
	}
	return m
}

// TOML returns the configuration as a TOML document.
func (c Config) TOML() string {
	var b bytes.Buffer
	enc := toml.NewEncoder(&b)
	enc.Indent = ""
	if err := enc.Encode(c); err != nil {
		return "# encode config: " + err.Error() + "\n"
	}
	return b.String()
}
