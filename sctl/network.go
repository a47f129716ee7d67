package main

import "github.com/spf13/cobra"

func networkCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "network",
		Short: "Inspect subnets, routes and container IPs",
	}
	return cmd
}
