package main

import "github.com/spf13/cobra"

func appsCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "apps",
		Short: "Deploy and manage applications",
	}
	return cmd
}
