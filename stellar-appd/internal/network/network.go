// Package network attaches an instance to the node's container network:
// a network namespace pinned under /run/netns, the CNI network netd wrote
// (bridge + stellar-cni-ipam + portmap + loopback) run through libcni, and a
// resolv.conf that points at the cluster DNS address.
package network

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/containernetworking/cni/libcni"
	types100 "github.com/containernetworking/cni/pkg/types/100"

	"stellar.dev/api/appapi"
	"stellar.dev/api/errdefs"
)

// ConfName and NetworkName are what stellar-netd writes.
const (
	ConfName    = "10-stellar.conflist"
	NetworkName = "stellar"
	ifName      = "eth0"
	netnsDir    = "/run/netns"
)

// Config says where CNI lives and what containers resolve with.
type Config struct {
	// ConfDir holds the conflist netd writes.
	ConfDir string
	// BinDirs are searched for CNI plugins.
	BinDirs []string
	// CacheDir is libcni's result cache.
	CacheDir string
	// ResolvDir holds the per-container resolv.conf files.
	ResolvDir string
	// DNS is the cluster DNS address.
	DNS string
	// Domain is the cluster zone ("stellar").
	Domain string
}

// Network sets up and tears down instances' networking.
type Network struct {
	cfg Config
	cni *libcni.CNIConfig
}

// New returns a Network; it does no I/O.
func New(cfg Config) *Network {
	return &Network{cfg: cfg, cni: libcni.NewCNIConfigWithCacheDir(cfg.BinDirs, cfg.CacheDir, nil)}
}

// Attachment is what Setup made.
type Attachment struct {
	NetNS      string
	IP         string
	ResolvConf string
}

func nsName(id string) string { return "stellar-" + id }

// NetNSPath is where an instance's network namespace is pinned.
func NetNSPath(id string) string { return filepath.Join(netnsDir, nsName(id)) }

func (n *Network) conf() (*libcni.NetworkConfigList, error) {
	p := filepath.Join(n.cfg.ConfDir, ConfName)
	l, err := libcni.ConfListFromFile(p)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) || strings.Contains(err.Error(), "no such file") {
			return nil, errdefs.New(errdefs.ErrUnavailable, "no CNI network yet: stellar-netd has not written %s", p)
		}
		return nil, fmt.Errorf("read CNI network %s: %w", p, err)
	}
	return l, nil
}

func (n *Network) runtimeConf(id, app string, ports []appapi.Port) *libcni.RuntimeConf {
	rt := &libcni.RuntimeConf{ContainerID: id, NetNS: NetNSPath(id), IfName: ifName,
		Args: [][2]string{{"IgnoreUnknown", "1"}, {"K8S_POD_NAME", id}}}
	if len(ports) > 0 {
		var pm []map[string]any
		for _, p := range ports {
			pm = append(pm, map[string]any{"hostPort": p.Host, "containerPort": p.Container, "protocol": p.Protocol})
		}
		rt.CapabilityArgs = map[string]any{"portMappings": pm}
	}
	return rt
}

// Setup creates the namespace, runs CNI ADD and writes resolv.conf. It is
// idempotent: an existing namespace is reused.
func (n *Network) Setup(ctx context.Context, id, app string, ports []appapi.Port) (Attachment, error) {
	list, err := n.conf()
	if err != nil {
		return Attachment{}, err
	}
	path := NetNSPath(id)
	if _, err := os.Stat(path); err != nil {
		if out, err := exec.CommandContext(ctx, "ip", "netns", "add", nsName(id)).CombinedOutput(); err != nil {
			return Attachment{}, fmt.Errorf("make network namespace for %s: %w: %s", id, err, strings.TrimSpace(string(out)))
		}
	}
	res, err := n.cni.AddNetworkList(ctx, list, n.runtimeConf(id, app, ports))
	if err != nil {
		_ = n.Teardown(context.WithoutCancel(ctx), id, app, ports)
		return Attachment{}, fmt.Errorf("attach %s to the CNI network: %w", id, err)
	}
	r, err := types100.NewResultFromResult(res)
	if err != nil || len(r.IPs) == 0 {
		_ = n.Teardown(context.WithoutCancel(ctx), id, app, ports)
		return Attachment{}, fmt.Errorf("attach %s: CNI gave no IP (%v)", id, err)
	}
	resolv, err := n.writeResolv(id, app)
	if err != nil {
		return Attachment{}, err
	}
	return Attachment{NetNS: path, IP: r.IPs[0].Address.IP.String(), ResolvConf: resolv}, nil
}

func (n *Network) writeResolv(id, app string) (string, error) {
	if err := os.MkdirAll(n.cfg.ResolvDir, 0o755); err != nil {
		return "", fmt.Errorf("make resolv.conf dir: %w", err)
	}
	p := filepath.Join(n.cfg.ResolvDir, id+".conf")
	body := fmt.Sprintf("# written by stellar-appd\nnameserver %s\nsearch %s.%s %s\noptions ndots:2\n", n.cfg.DNS, app, n.cfg.Domain, n.cfg.Domain)
	if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
		return "", fmt.Errorf("write resolv.conf of %s: %w", id, err)
	}
	return p, nil
}

// Teardown runs CNI DEL (releasing the IP) and removes the namespace and
// resolv.conf. Missing pieces are not errors.
func (n *Network) Teardown(ctx context.Context, id, app string, ports []appapi.Port) error {
	var errs []error
	if list, err := n.conf(); err == nil {
		rt := n.runtimeConf(id, app, ports)
		if _, err := os.Stat(rt.NetNS); err != nil {
			rt.NetNS = ""
		}
		if err := n.cni.DelNetworkList(ctx, list, rt); err != nil {
			errs = append(errs, fmt.Errorf("detach %s from the CNI network: %w", id, err))
		}
	} else {
		errs = append(errs, err)
	}
	if _, err := os.Stat(NetNSPath(id)); err == nil {
		if out, err := exec.CommandContext(ctx, "ip", "netns", "delete", nsName(id)).CombinedOutput(); err != nil {
			errs = append(errs, fmt.Errorf("delete network namespace of %s: %w: %s", id, err, strings.TrimSpace(string(out))))
		}
	}
	_ = os.Remove(filepath.Join(n.cfg.ResolvDir, id+".conf"))
	return errors.Join(errs...)
}
