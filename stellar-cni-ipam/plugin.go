package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"strings"
	"time"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	types100 "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/cni/pkg/version"

	"stellar.dev/api/client"
	"stellar.dev/api/errdefs"
	"stellar.dev/api/netapi"
)

// DefaultSocket is netd's socket when the configuration names none.
const DefaultSocket = "/run/stellar/netd.sock"

// callTimeout bounds every call to netd: a plugin must fail fast when
// netd is down, never hang the container's start.
const callTimeout = 5 * time.Second

// IPAMConf is the "ipam" section of the network configuration.
type IPAMConf struct {
	Type string `json:"type"`
	// Socket is netd's API socket (default /run/stellar/netd.sock).
	Socket string `json:"socket,omitempty"`
}

// NetConf is the part of the network configuration the plugin reads.
type NetConf struct {
	types.PluginConf
	IPAM IPAMConf `json:"ipam"`
}

// parseConf decodes and checks the plugin's stdin.
func parseConf(data []byte) (*NetConf, error) {
	var c NetConf
	if err := json.Unmarshal(data, &c); err != nil {
		return nil, types.NewError(types.ErrDecodingFailure, "decode network configuration", err.Error())
	}
	if c.IPAM.Socket == "" {
		c.IPAM.Socket = DefaultSocket
	}
	if !strings.HasPrefix(c.IPAM.Socket, "/") {
		return nil, types.NewError(types.ErrInvalidNetworkConfig, "ipam.socket must be an absolute path", c.IPAM.Socket)
	}
	return &c, nil
}

func netd(c *NetConf) *netapi.Client {
	return netapi.New(client.Unix("stellar-netd", c.IPAM.Socket).WithTimeout(callTimeout))
}

func callCtx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), callTimeout)
}

// cniError turns a netd error into a CNI error with a code that tells the
// runtime what to do.
func cniError(what string, err error) error {
	code := uint(types.ErrInternal)
	switch {
	case errors.Is(err, errdefs.ErrUnavailable):
		code = types.ErrTryAgainLater
	case errors.Is(err, errdefs.ErrInvalidArgument):
		code = types.ErrInvalidEnvironmentVariables
	case errors.Is(err, errdefs.ErrNotFound), errors.Is(err, errdefs.ErrConflict):
		code = types.ErrInvalidNetworkConfig
	}
	return types.NewError(code, what, err.Error())
}

// resultOf builds the IPAM result of an allocation.
func resultOf(a netapi.Allocation) (*types100.Result, error) {
	ip, ipn, err := net.ParseCIDR(a.Address)
	if err != nil {
		return nil, types.NewError(types.ErrInternal, "stellar-netd answered a bad address", a.Address)
	}
	gw := net.ParseIP(a.Gateway)
	if gw == nil {
		return nil, types.NewError(types.ErrInternal, "stellar-netd answered a bad gateway", a.Gateway)
	}
	r := &types100.Result{
		CNIVersion: types100.ImplementedSpecVersion,
		IPs:        []*types100.IPConfig{{Address: net.IPNet{IP: ip, Mask: ipn.Mask}, Gateway: gw}},
		Routes:     []*types.Route{{Dst: net.IPNet{IP: net.IPv4zero, Mask: net.CIDRMask(0, 32)}, GW: gw}},
	}
	if a.DNS != "" {
		r.DNS = types.DNS{Nameservers: []string{a.DNS}}
	}
	return r, nil
}

func cmdAdd(args *skel.CmdArgs) error {
	c, err := parseConf(args.StdinData)
	if err != nil {
		return err
	}
	ctx, cancel := callCtx()
	defer cancel()
	a, err := netd(c).Allocate(ctx, netapi.AllocateRequest{ContainerID: args.ContainerID, IfName: args.IfName, Netns: args.Netns})
	if err != nil {
		return cniError("allocate an IP from stellar-netd", err)
	}
	r, err := resultOf(a)
	if err != nil {
		return err
	}
	return types.PrintResult(r, c.CNIVersion)
}

func cmdDel(args *skel.CmdArgs) error {
	c, err := parseConf(args.StdinData)
	if err != nil {
		return err
	}
	ctx, cancel := callCtx()
	defer cancel()
	if _, err := netd(c).Release(ctx, netapi.ReleaseRequest{ContainerID: args.ContainerID, IfName: args.IfName}); err != nil {
		return cniError("release the IP in stellar-netd", err)
	}
	return nil
}

func cmdCheck(args *skel.CmdArgs) error {
	c, err := parseConf(args.StdinData)
	if err != nil {
		return err
	}
	req := netapi.CheckRequest{ContainerID: args.ContainerID, IfName: args.IfName}
	if c.RawPrevResult != nil {
		if err := version.ParsePrevResult(&c.PluginConf); err != nil {
			return types.NewError(types.ErrDecodingFailure, "decode prevResult", err.Error())
		}
		prev, err := types100.NewResultFromResult(c.PrevResult)
		if err != nil {
			return types.NewError(types.ErrDecodingFailure, "convert prevResult", err.Error())
		}
		for _, ipc := range prev.IPs {
			if ipc.Address.IP.To4() != nil {
				req.Address = ipc.Address.IP.String()
				break
			}
		}
	}
	ctx, cancel := callCtx()
	defer cancel()
	if _, err := netd(c).Check(ctx, req); err != nil {
		return cniError("check the IP in stellar-netd", err)
	}
	return nil
}

func cmdGC(args *skel.CmdArgs) error {
	c, err := parseConf(args.StdinData)
	if err != nil {
		return err
	}
	req := netapi.GCRequest{Containers: []string{}}
	for _, a := range c.ValidAttachments {
		req.Attachments = append(req.Attachments, netapi.Attachment{ContainerID: a.ContainerID, IfName: a.IfName})
	}
	ctx, cancel := callCtx()
	defer cancel()
	if _, err := netd(c).GC(ctx, req); err != nil {
		return cniError("collect unused IPs in stellar-netd", err)
	}
	return nil
}

func cmdStatus(args *skel.CmdArgs) error {
	c, err := parseConf(args.StdinData)
	if err != nil {
		return err
	}
	ctx, cancel := callCtx()
	defer cancel()
	st, err := netd(c).Status(ctx)
	if err != nil {
		return types.NewError(types.ErrPluginNotAvailable, "stellar-netd is not available", err.Error())
	}
	if st.ClaimStatus != netapi.StatusClaimed {
		return types.NewError(types.ErrPluginNotAvailable, "this node has no subnet yet", fmt.Sprint(st.Reason))
	}
	return nil
}
