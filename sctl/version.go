package main

import (
	"fmt"
	"net/http"

	"github.com/spf13/cobra"

	"stellar.dev/api"
)

func versionCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the version of sctl and of this node's daemons",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			out := []api.VersionInfo{api.CurrentVersion("sctl")}
			for _, d := range []string{"gossip", "netd", "dnsd", "proxyd", "appd"} {
				c, err := g.client(d)
				if err != nil {
					return err
				}
				var v api.VersionInfo
				if err := c.Do(cmd.Context(), http.MethodGet, "/v1/version", nil, &v); err != nil {
					v = api.VersionInfo{Daemon: "stellar-" + d, Version: "not running"}
				}
				out = append(out, v)
			}
			if g.json {
				return g.printJSON(out)
			}
			t := g.table("NAME", "VERSION", "WIRE")
			for _, v := range out {
				wire := "-"
				if v.Wire > 0 {
					wire = fmt.Sprint(v.Wire)
				}
				t.row(v.Daemon, v.Version, wire)
			}
			return t.flush()
		},
	}
}
