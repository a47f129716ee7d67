package main

import (
	"fmt"
	"strconv"

	"github.com/spf13/cobra"

	"stellar.dev/api/gossipapi"
)

func stateCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "state",
		Short: "Read the replicated cluster state",
	}
	cmd.AddCommand(&cobra.Command{
		Use:   "get KEY",
		Short: "Print one key's value (--json: with its version and revision)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := g.client("gossip")
			if err != nil {
				return err
			}
			e, err := gossipapi.New(c).Get(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			if g.json {
				return g.printJSON(e)
			}
			fmt.Fprintln(g.out, string(e.Value))
			return nil
		},
	})
	cmd.AddCommand(&cobra.Command{
		Use:   "list [PREFIX]",
		Short: "List the keys under PREFIX with their versions",
		Args:  cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			prefix := ""
			if len(args) == 1 {
				prefix = args[0]
			}
			c, err := g.client("gossip")
			if err != nil {
				return err
			}
			l, err := gossipapi.New(c).List(cmd.Context(), prefix)
			if err != nil {
				return err
			}
			if g.json {
				return g.printJSON(l)
			}
			t := g.table("KEY", "VERSION", "REV", "SIZE", "OWNER FAILED")
			for _, e := range l.Entries {
				flag := "-"
				if e.OwnerFailed {
					flag = "yes"
				}
				t.row(e.Key, e.Version, strconv.FormatUint(e.Rev, 10), strconv.Itoa(len(e.Value)), flag)
			}
			return t.flush()
		},
	})
	return cmd
}
