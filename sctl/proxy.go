package main

import "github.com/spf13/cobra"

func proxyCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "proxy",
		Short: "Inspect the ingress proxy",
	}
	return cmd
}
