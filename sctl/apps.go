package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/BurntSushi/toml"
	"github.com/spf13/cobra"

	"stellar.dev/api/appapi"
	"stellar.dev/api/errdefs"
)

func (g *globals) apps() (*appapi.Client, error) {
	c, err := g.client("appd")
	if err != nil {
		return nil, err
	}
	return appapi.New(c), nil
}

func appsCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "apps",
		Short: "Deploy and manage applications",
		Long: `Deploy and manage applications. An application is a JSON (or TOML) file in the
original Stellar's format: a name, labels and services, each with an image,
process, resources, instances, placement_preference, health, ports, update
policy and endpoints. The spec is validated before anything is created.`,
	}
	cmd.AddCommand(appsCreateCmd(g), appsUpdateCmd(g), appsListCmd(g), appsInspectCmd(g),
		appsDeleteCmd(g), appsRestartCmd(g), appsScaleCmd(g), appsLogsCmd(g))
	return cmd
}

// readSpec reads an app spec file (JSON, or TOML by extension or content;
// "-" is stdin) and validates it.
func readSpec(g *globals, path string) (appapi.App, error) {
	var data []byte
	var err error
	if path == "-" {
		data, err = io.ReadAll(io.LimitReader(os.Stdin, appapi.MaxSpecBytes+1))
	} else {
		data, err = os.ReadFile(path)
	}
	if err != nil {
		return appapi.App{}, fmt.Errorf("read app spec: %w", err)
	}
	if isTOML(path, data) {
		var m map[string]any
		if _, err := toml.Decode(string(data), &m); err != nil {
			return appapi.App{}, errdefs.New(errdefs.ErrInvalidArgument, "%s: %v", path, err)
		}
		if data, err = json.Marshal(m); err != nil {
			return appapi.App{}, fmt.Errorf("convert %s to JSON: %w", path, err)
		}
	}
	a, warns, err := appapi.Parse(data)
	if err != nil {
		return appapi.App{}, fmt.Errorf("%s: %w", path, err)
	}
	for _, w := range warns {
		fmt.Fprintf(g.err, "warning: %s\n", w)
	}
	return a, nil
}

func isTOML(path string, data []byte) bool {
	switch strings.ToLower(filepath.Ext(path)) {
	case ".toml":
		return true
	case ".json":
		return false
	}
	t := bytes.TrimSpace(data)
	return len(t) > 0 && t[0] != '{'
}

func appsCreateCmd(g *globals) *cobra.Command {
	var file string
	cmd := &cobra.Command{
		Use:     "create -f FILE",
		Short:   "Create an application from a spec file",
		Example: "  sctl apps create -f example.json",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			a, err := readSpec(g, file)
			if err != nil {
				return err
			}
			c, err := g.apps()
			if err != nil {
				return err
			}
			res, err := c.Create(cmd.Context(), a)
			if err != nil {
				return err
			}
			return g.result(res, "created %s", a.Name)
		},
	}
	cmd.Flags().StringVarP(&file, "file", "f", "", "the app spec (JSON or TOML; - for stdin)")
	_ = cmd.MarkFlagRequired("file")
	return cmd
}

func (g *globals) result(res appapi.PutResult, format string, args ...any) error {
	for _, w := range res.Warnings {
		fmt.Fprintf(g.err, "warning: %s\n", w)
	}
	if g.json {
		return g.printJSON(res)
	}
	fmt.Fprintf(g.out, format+" (version %s)\n", append(args, res.Version)...)
	return nil
}

func appsUpdateCmd(g *globals) *cobra.Command {
	var file, version string
	cmd := &cobra.Command{
		Use:   "update -f FILE",
		Short: "Replace an application's spec (rolling update)",
		Long: `Replace an application's spec. Instances are replaced in batches of the
service's update.parallel, each batch once the previous is healthy, with
update.delay between; with update.auto_revert a failing update goes back to
the previous spec. The change is made with If-Match on the version read (or
--version): a concurrent change makes it fail with a conflict.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			a, err := readSpec(g, file)
			if err != nil {
				return err
			}
			c, err := g.apps()
			if err != nil {
				return err
			}
			if version == "" {
				cur, err := c.Get(cmd.Context(), a.Name)
				if err != nil {
					return err
				}
				version = cur.Version
			}
			res, err := c.Update(cmd.Context(), a, version)
			if err != nil {
				return err
			}
			return g.result(res, "updated %s", a.Name)
		},
	}
	cmd.Flags().StringVarP(&file, "file", "f", "", "the app spec (JSON or TOML; - for stdin)")
	cmd.Flags().StringVar(&version, "version", "", "only update if the app is still at this version")
	_ = cmd.MarkFlagRequired("file")
	return cmd
}

func appsListCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:     "list",
		Aliases: []string{"ls"},
		Short:   "List applications",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := g.apps()
			if err != nil {
				return err
			}
			l, err := c.List(cmd.Context())
			if err != nil {
				return err
			}
			if g.json {
				return g.printJSON(l)
			}
			t := g.table("NAME", "SERVICES")
			for _, a := range l {
				t.row(a.Name, strconv.Itoa(len(a.Services)))
			}
			return t.flush()
		},
	}
}

func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

func appsInspectCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "inspect NAME",
		Short: "Show an application's services and instances",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := g.apps()
			if err != nil {
				return err
			}
			st, err := c.Get(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			if g.json {
				return g.printJSON(st)
			}
			printApp(g.out, st)
			return nil
		},
	}
}

func printApp(w io.Writer, st appapi.AppStatus) {
	a := st.Spec
	fmt.Fprintf(w, "Name: %s\n", a.Name)
	fmt.Fprintf(w, "Version: %s\n", st.Version)
	if len(a.Labels) > 0 {
		fmt.Fprintf(w, "Labels:\n")
		for _, l := range a.Labels {
			fmt.Fprintf(w, "  %s\n", l)
		}
	}
	if st.Reverted != "" {
		fmt.Fprintf(w, "Reverted: %s\n", st.Reverted)
	}
	fmt.Fprintf(w, "\nServices:\n")
	for _, s := range a.Services {
		fmt.Fprintf(w, "  Name: %s.%s\n", a.Name, s.Name)
		fmt.Fprintf(w, "  Image: %s\n", s.Image)
		fmt.Fprintf(w, "  Runtime: %s\n", orDefault(s.Runtime, "(node default)"))
		fmt.Fprintf(w, "  Snapshotter: %s\n", orDefault(s.Snapshotter, "(node default)"))
		if s.Global {
			fmt.Fprintf(w, "  Instances: one per eligible node\n")
		} else {
			fmt.Fprintf(w, "  Instances: %d\n", s.Count())
		}
		labels := append([]string{"stellar.app=" + a.Name, "stellar.service=" + s.Name, fmt.Sprintf("stellar.network=%v", s.NetworkEnabled())}, s.Labels...)
		sort.Strings(labels)
		fmt.Fprintf(w, "  Labels:\n")
		for _, l := range labels {
			fmt.Fprintf(w, "    %s\n", l)
		}
		var rows [][]string
		for _, in := range st.Instances {
			if in.Service != s.Name {
				continue
			}
			health := in.Health
			if in.Error != "" {
				health += " (" + in.Error + ")"
			}
			rows = append(rows, []string{in.Name(), in.Node, orDefault(in.IP, "-"), in.Status, strconv.Itoa(in.Restarts), health})
		}
		if len(rows) > 0 {
			fmt.Fprintf(w, "  Instances:\n")
			tw := newTab(w)
			fmt.Fprintln(tw, "    INSTANCE\tNODE\tIP\tSTATUS\tRESTARTS\tHEALTH")
			for _, r := range rows {
				fmt.Fprintln(tw, "    "+strings.Join(r, "\t"))
			}
			tw.Flush()
		}
		fmt.Fprintln(w)
	}
}

func appsDeleteCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:     "delete NAME",
		Aliases: []string{"rm"},
		Short:   "Delete an application: its instances stop everywhere",
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := g.apps()
			if err != nil {
				return err
			}
			if err := c.Delete(cmd.Context(), args[0], ""); err != nil {
				return err
			}
			fmt.Fprintf(g.out, "deleted %s\n", args[0])
			return nil
		},
	}
}

func appsRestartCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "restart NAME [SERVICE]",
		Short: "Restart an application's instances (rolling), or one service's",
		Args:  cobra.RangeArgs(1, 2),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := g.apps()
			if err != nil {
				return err
			}
			svc := ""
			if len(args) == 2 {
				svc = args[1]
			}
			res, err := c.Restart(cmd.Context(), args[0], svc)
			if err != nil {
				return err
			}
			return g.result(res, "restarting %s", strings.Join(args, " "))
		},
	}
}

func appsScaleCmd(g *globals) *cobra.Command {
	var version string
	cmd := &cobra.Command{
		Use:   "scale NAME SERVICE N",
		Short: "Set how many instances of a service run",
		Args:  cobra.ExactArgs(3),
		RunE: func(cmd *cobra.Command, args []string) error {
			n, err := strconv.Atoi(args[2])
			if err != nil || n < 0 || n > appapi.MaxInstances {
				return errdefs.New(errdefs.ErrInvalidArgument, "instances %q is not a number 0..%d", args[2], appapi.MaxInstances)
			}
			c, err := g.apps()
			if err != nil {
				return err
			}
			if version == "" {
				cur, err := c.Get(cmd.Context(), args[0])
				if err != nil {
					return err
				}
				version = cur.Version
			}
			res, err := c.Scale(cmd.Context(), args[0], args[1], n, version)
			if err != nil {
				return err
			}
			return g.result(res, "scaled %s/%s to %d", args[0], args[1], n)
		},
	}
	cmd.Flags().StringVar(&version, "version", "", "only scale if the app is still at this version")
	return cmd
}

func appsLogsCmd(g *globals) *cobra.Command {
	var follow bool
	var since string
	cmd := &cobra.Command{
		Use:   "logs NAME [SERVICE]",
		Short: "Print an application's container output",
		Long: `Print the stdout and stderr of an application's instances on every node,
read from each node's journal (STELLAR_APP=NAME) through the peer port and
merged (sorted by time; with -f as they come). Each line is prefixed with its
instance (<index>.<service>.<app>) and node unless --json.`,
		Args: cobra.RangeArgs(1, 2),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := g.apps()
			if err != nil {
				return err
			}
			svc := ""
			if len(args) == 2 {
				svc = args[1]
			}
			ctx := cmd.Context()
			if ctx == nil {
				ctx = context.Background()
			}
			return c.Logs(ctx, args[0], svc, follow, since, func(l appapi.LogLine) error {
				if g.json {
					return json.NewEncoder(g.out).Encode(l)
				}
				who := l.Instance + "@" + l.Node
				if l.Instance == "" {
					who = l.Node
				}
				_, err := fmt.Fprintf(g.out, "%s %s %s\n", l.Time.Local().Format(time.RFC3339), who, l.Message)
				return err
			})
		},
	}
	cmd.Flags().BoolVarP(&follow, "follow", "f", false, "keep printing new output")
	cmd.Flags().StringVar(&since, "since", "", "only output newer than this (10m, or an RFC 3339 time)")
	return cmd
}
