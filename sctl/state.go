package main

import "github.com/spf13/cobra"

func stateCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "state",
		Short: "Read the replicated cluster state",
	}
	return cmd
}
