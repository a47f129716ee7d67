package main

import (
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"stellar.dev/api/netapi"
)

func networkCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "network",
		Short: "Inspect subnets, routes and container IPs",
	}
	netd := func() (*netapi.Client, error) {
		c, err := g.client("netd")
		if err != nil {
			return nil, err
		}
		return netapi.New(c), nil
	}
	cmd.AddCommand(&cobra.Command{
		Use:   "subnets",
		Short: "List every node's subnet, its address and whether this node routes it",
		Long: `List every node's container subnet as this node sees it.

STATUS is claimed (this node's), provisional (this node's, before it has met
the cluster), routed (a peer with a static route), unroutable (the kernel
refused the route: the peer is not on a shared link; REASON says more),
conflict (overlaps another claim that wins), down (not alive) or pending.`,
		Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			n, err := netd()
			if err != nil {
				return err
			}
			ss, err := n.Subnets(c.Context())
			if err != nil {
				return err
			}
			if g.json {
				return g.printJSON(ss)
			}
			t := g.table("NODE", "SUBNET", "ADDRESS", "STATUS", "REASON")
			for _, s := range ss {
				name := s.Node
				if s.Self {
					name += " (self)"
				}
				t.row(name, netDash(s.Subnet), netDash(s.Address), s.Status, s.Reason)
			}
			return t.flush()
		},
	})
	cmd.AddCommand(&cobra.Command{
		Use:   "routes",
		Short: "List the static routes to peers' subnets that netd keeps",
		Args:  cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			n, err := netd()
			if err != nil {
				return err
			}
			rs, err := n.Routes(c.Context())
			if err != nil {
				return err
			}
			if g.json {
				return g.printJSON(rs)
			}
			t := g.table("DESTINATION", "VIA", "NODE", "STATUS", "REASON")
			for _, r := range rs {
				t.row(r.Destination, r.Via, r.Node, r.Status, r.Reason)
			}
			return t.flush()
		},
	})
	cmd.AddCommand(&cobra.Command{
		Use:   "ips",
		Short: "List the container IPs allocated on this node",
		Args:  cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			n, err := netd()
			if err != nil {
				return err
			}
			as, err := n.Allocations(c.Context())
			if err != nil {
				return err
			}
			if g.json {
				return g.printJSON(as)
			}
			t := g.table("ADDRESS", "CONTAINER", "INTERFACE", "ALLOCATED")
			for _, a := range as {
				t.row(a.Address, a.ContainerID, a.IfName, netAgo(a.Created))
			}
			return t.flush()
		},
	})
	return cmd
}

func netDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// netAgo prints how long ago t was, in the coarsest unit that fits.
func netAgo(t time.Time) string {
	d := time.Since(t)
	switch {
	case d < time.Minute:
		return fmt.Sprintf("%d seconds ago", int(d.Seconds()))
	case d < time.Hour:
		return fmt.Sprintf("%d minutes ago", int(d.Minutes()))
	case d < 48*time.Hour:
		return fmt.Sprintf("%d hours ago", int(d.Hours()))
	}
	return fmt.Sprintf("%d days ago", int(d.Hours()/24))
}
