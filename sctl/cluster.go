package main

import "github.com/spf13/cobra"

func clusterCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "cluster",
		Short: "Manage the cluster: nodes, joining, keys, certificates, backups",
	}
	return cmd
}
