package main

import (
	"encoding/json"
	"fmt"
	"net"
	"strings"
	"time"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	types100 "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/cni/pkg/version"
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

// The parts of stellar-netd's wire types (stellar.dev/api/netapi) that the
// plugin sends and reads. They are declared here because package netapi
// links net/http through its client; TestWire_matchesNetapi keeps their
// JSON in step with netapi's.
type (
	allocateRequest struct {
		ContainerID string `json:"container_id"`
		IfName      string `json:"if_name"`
		Netns       string `json:"netns,omitempty"`
	}
	releaseRequest struct {
		ContainerID string `json:"container_id"`
		IfName      string `json:"if_name,omitempty"`
	}
	checkRequest struct {
		ContainerID string `json:"container_id"`
		IfName      string `json:"if_name"`
		Address     string `json:"address,omitempty"`
	}
	attachment struct {
		ContainerID string `json:"container_id"`
		IfName      string `json:"if_name"`
	}
	gcRequest struct {
		Containers  []string     `json:"containers"`
		Attachments []attachment `json:"attachments,omitempty"`
	}
	allocation struct {
		Address string `json:"address"`
		Gateway string `json:"gateway"`
		DNS     string `json:"dns,omitempty"`
	}
	netdStatus struct {
		ClaimStatus string `json:"claim_status"`
		Reason      string `json:"reason,omitempty"`
	}
)

// statusClaimed is netapi.StatusClaimed.
const statusClaimed = "claimed"

func netd(c *NetConf) netdClient {
	return netdClient{socket: c.IPAM.Socket, timeout: callTimeout}
}

// cniError turns a netd error into a CNI error with a code that tells the
// runtime what to do.
func cniError(what string, err error) error {
	code := uint(types.ErrInternal)
	switch codeOf(err) {
	case codeUnavailable:
		code = types.ErrTryAgainLater
	case codeInvalidArgument:
		code = types.ErrInvalidEnvironmentVariables
	case codeNotFound, codeConflict:
		code = types.ErrInvalidNetworkConfig
	}
	return types.NewError(code, what, err.Error())
}

// resultOf builds the IPAM result of an allocation.
func resultOf(a allocation) (*types100.Result, error) {
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
	var a allocation
	req := allocateRequest{ContainerID: args.ContainerID, IfName: args.IfName, Netns: args.Netns}
	if err := netd(c).call("POST", "/v1/ipam/allocate", req, &a); err != nil {
		return cniError("allocate an IP from stellar-netd", fmt.Errorf("allocate ip for %s/%s: %w", req.ContainerID, req.IfName, err))
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
	req := releaseRequest{ContainerID: args.ContainerID, IfName: args.IfName}
	if err := netd(c).call("POST", "/v1/ipam/release", req, nil); err != nil {
		return cniError("release the IP in stellar-netd", fmt.Errorf("release ip of %s/%s: %w", req.ContainerID, req.IfName, err))
	}
	return nil
}

func cmdCheck(args *skel.CmdArgs) error {
	c, err := parseConf(args.StdinData)
	if err != nil {
		return err
	}
	req := checkRequest{ContainerID: args.ContainerID, IfName: args.IfName}
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
	if err := netd(c).call("POST", "/v1/ipam/check", req, nil); err != nil {
		return cniError("check the IP in stellar-netd", fmt.Errorf("check ip of %s/%s: %w", req.ContainerID, req.IfName, err))
	}
	return nil
}

func cmdGC(args *skel.CmdArgs) error {
	c, err := parseConf(args.StdinData)
	if err != nil {
		return err
	}
	req := gcRequest{Containers: []string{}}
	for _, a := range c.ValidAttachments {
		req.Attachments = append(req.Attachments, attachment{ContainerID: a.ContainerID, IfName: a.IfName})
	}
	if err := netd(c).call("POST", "/v1/ipam/gc", req, nil); err != nil {
		return cniError("collect unused IPs in stellar-netd", fmt.Errorf("collect unused ips: %w", err))
	}
	return nil
}

func cmdStatus(args *skel.CmdArgs) error {
	c, err := parseConf(args.StdinData)
	if err != nil {
		return err
	}
	var st netdStatus
	if err := netd(c).call("GET", "/v1/status", nil, &st); err != nil {
		return types.NewError(types.ErrPluginNotAvailable, "stellar-netd is not available", fmt.Sprintf("read network status: %v", err))
	}
	if st.ClaimStatus != statusClaimed {
		return types.NewError(types.ErrPluginNotAvailable, "this node has no subnet yet", fmt.Sprint(st.Reason))
	}
	return nil
}
