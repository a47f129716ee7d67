package main

import "github.com/spf13/cobra"

func imagesCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "images",
		Short: "Import, list and remove container images",
	}
	return cmd
}
