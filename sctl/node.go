package main

import "github.com/spf13/cobra"

func nodeCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "node",
		Short: "Drain, cordon and uncordon nodes",
	}
	return cmd
}
