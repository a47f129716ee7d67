package main

import (
	"fmt"
	"io"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"stellar.dev/api/appapi"
)

func nodeCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "node",
		Short: "Drain, cordon and uncordon nodes",
		Long: `Change whether placement may put instances on a node. Both cordon and drain
make the node ineligible, so its instances are placed elsewhere; each old copy
stops once its new copy runs healthy on the new node (a cordoned node keeps
a copy that has nowhere to go; a drained one stops it after the handover
timeout). uncordon makes the node eligible again.`,
	}
	for _, c := range []struct{ use, short, state string }{
		{"drain NODE", "Move every instance off a node", appapi.Drained},
		{"cordon NODE", "Place no instances on a node", appapi.Cordoned},
		{"uncordon NODE", "Let placement use a node again", appapi.Schedulable},
	} {
		cmd.AddCommand(&cobra.Command{
			Use:   c.use,
			Short: c.short,
			Args:  cobra.ExactArgs(1),
			RunE: func(cmd *cobra.Command, args []string) error {
				cl, err := g.apps()
				if err != nil {
					return err
				}
				if err := cl.SetSchedule(cmd.Context(), args[0], c.state); err != nil {
					return err
				}
				verb := map[string]string{appapi.Drained: "drained", appapi.Cordoned: "cordoned", appapi.Schedulable: "uncordoned"}[c.state]
				fmt.Fprintf(g.out, "%s %s\n", verb, args[0])
				return nil
			},
		})
	}
	return cmd
}

// newTab is the aligned writer of nested tables (apps inspect).
func newTab(w io.Writer) *tabwriter.Writer { return tabwriter.NewWriter(w, 4, 1, 3, ' ', 0) }
