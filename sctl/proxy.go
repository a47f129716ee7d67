package main

import (
	"fmt"
	"sort"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	"stellar.dev/api/proxyapi"
)

func proxyCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "proxy",
		Short: "Inspect the ingress proxy",
	}
	cmd.AddCommand(proxyBackendsCmd(g), proxyStatusCmd(g), proxyWeightCmd(g))
	return cmd
}

func (g *globals) proxyClient() (*proxyapi.Client, error) {
	c, err := g.client("proxyd")
	if err != nil {
		return nil, err
	}
	return proxyapi.New(c), nil
}

func proxyBackendsCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "backends [HOST]",
		Short: "List the proxy's backends with their health and canary weight",
		Example: `  sctl proxy backends
  sctl proxy backends example.com`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			pc, err := g.proxyClient()
			if err != nil {
				return err
			}
			host := ""
			if len(args) == 1 {
				host = args[0]
			}
			bs, err := pc.Backends(cmd.Context(), host)
			if err != nil {
				return err
			}
			if g.json {
				return g.printJSON(bs)
			}
			t := g.table("HOST", "PATH", "BACKEND", "HEALTH", "WEIGHT")
			for _, b := range bs {
				t.row(b.Host, b.Path, b.Addr, b.Health, strconv.Itoa(b.Weight))
			}
			return t.flush()
		},
	}
}

func proxyStatusCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "status",
		Short: "Show whether the proxy has read the cluster state, and its routes",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			pc, err := g.proxyClient()
			if err != nil {
				return err
			}
			st, err := pc.Status(cmd.Context())
			if err != nil {
				return err
			}
			if g.json {
				return g.printJSON(st)
			}
			t := g.table("SYNCED", "ROUTES", "BACKENDS", "GENERATION", "ERROR")
			t.row(strconv.FormatBool(st.Synced), strconv.Itoa(st.Routes), strconv.Itoa(st.Backends), strconv.FormatUint(st.Generation, 10), st.LastError)
			return t.flush()
		},
	}
}

func proxyWeightCmd(g *globals) *cobra.Command {
	var balance string
	var show bool
	cmd := &cobra.Command{
		Use:   "weight HOST [APP/SERVICE=WEIGHT ...]",
		Short: "Set the canary weights (and balancing) of the services sharing a host",
		Long: `Set the canary weights of the services that share HOST, cluster-wide.
Services not named get no traffic while any weight is set; no weights means
every service gets an equal share. --balance picks round_robin or least_conn.`,
		Example: `  sctl proxy weight example.com web/v1=90 web-canary/v1=10
  sctl proxy weight example.com            # equal shares again
  sctl proxy weight example.com --show`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			pc, err := g.proxyClient()
			if err != nil {
				return err
			}
			host := args[0]
			if show {
				hs, err := pc.Host(cmd.Context(), host)
				if err != nil {
					return err
				}
				if g.json {
					return g.printJSON(hs)
				}
				return printHostSettings(g, hs)
			}
			hs := proxyapi.HostSettings{Balance: balance}
			for _, a := range args[1:] {
				k, v, ok := strings.Cut(a, "=")
				if !ok {
					return fmt.Errorf("weight %q: want APP/SERVICE=WEIGHT", a)
				}
				w, err := strconv.Atoi(v)
				if err != nil || w < 0 {
					return fmt.Errorf("weight %q: %q is not a whole number >= 0", a, v)
				}
				if hs.Weights == nil {
					hs.Weights = map[string]int{}
				}
				hs.Weights[k] = w
			}
			if err := pc.SetHost(cmd.Context(), host, hs); err != nil {
				return err
			}
			if g.json {
				return g.printJSON(hs)
			}
			return printHostSettings(g, hs)
		},
	}
	cmd.Flags().StringVar(&balance, "balance", "", "round_robin (default) or least_conn")
	cmd.Flags().BoolVar(&show, "show", false, "print the host's settings instead of setting them")
	return cmd
}

func printHostSettings(g *globals, hs proxyapi.HostSettings) error {
	t := g.table("SERVICE", "WEIGHT", "BALANCE")
	bal := hs.Balance
	if bal == "" {
		bal = proxyapi.BalanceRoundRobin
	}
	keys := make([]string, 0, len(hs.Weights))
	for k := range hs.Weights {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	if len(keys) == 0 {
		t.row("(all equal)", "-", bal)
	}
	for _, k := range keys {
		t.row(k, strconv.Itoa(hs.Weights[k]), bal)
	}
	return t.flush()
}
