package main

import "github.com/spf13/cobra"

func nameserverCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "nameserver",
		Short: "Manage the cluster's custom DNS records",
	}
	return cmd
}
