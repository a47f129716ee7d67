package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"stellar.dev/api/client"
	"stellar.dev/daemon/config"
)

// globals are the flags every command shares.
type globals struct {
	configPath string
	addr       string
	cert       string
	key        string
	ca         string
	json       bool
	timeout    time.Duration

	out io.Writer
	err io.Writer
}

func run(ctx context.Context, args []string) error {
	g := &globals{out: os.Stdout, err: os.Stderr}
	root := rootCmd(g)
	root.SetArgs(args)
	root.SetOut(g.out)
	root.SetErr(g.err)
	return root.ExecuteContext(ctx)
}

func rootCmd(g *globals) *cobra.Command {
	root := &cobra.Command{
		Use:   "sctl",
		Short: "Drive a Stellar cluster",
		Long: `sctl is the command-line tool of a Stellar cluster.

On a node it talks to that node's daemons over their Unix sockets in
[node] run_dir (/run/stellar): stellar-gossip (cluster, state), stellar-appd
(apps, images, node), stellar-dnsd (nameserver), stellar-proxyd (proxy) and
stellar-netd (network). With --addr it talks to any node's peer port instead,
over mutual TLS with an operator certificate (sctl cluster cert create).

Every listing prints an aligned table; --json prints the API's JSON instead,
for scripts.`,
		Example: `  sctl cluster nodes
  sctl apps create -f example.json
  sctl apps inspect example
  sctl nameserver list
  sctl --addr 10.0.1.33:7947 --cert op.crt --key op.key --ca ca.crt apps list`,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	pf := root.PersistentFlags()
	pf.StringVar(&g.configPath, "config", "", "configuration file (default $STELLAR_CONFIG or "+config.DefaultPath+")")
	pf.StringVar(&g.addr, "addr", os.Getenv("STELLAR_ADDR"), "a remote node's peer port, host:port (default: this node's sockets; $STELLAR_ADDR)")
	pf.StringVar(&g.cert, "cert", envOr("STELLAR_CERT", defaultCred("operator.crt")), "operator certificate for --addr ($STELLAR_CERT)")
	pf.StringVar(&g.key, "key", envOr("STELLAR_KEY", defaultCred("operator.key")), "operator key for --addr ($STELLAR_KEY)")
	pf.StringVar(&g.ca, "ca", envOr("STELLAR_CA", defaultCred("ca.crt")), "cluster CA certificate for --addr ($STELLAR_CA)")
	pf.BoolVar(&g.json, "json", false, "print JSON instead of tables")
	pf.DurationVar(&g.timeout, "timeout", 30*time.Second, "give up on a request after this long")
	root.AddCommand(
		clusterCmd(g),
		stateCmd(g),
		appsCmd(g),
		imagesCmd(g),
		nodeCmd(g),
		nameserverCmd(g),
		proxyCmd(g),
		networkCmd(g),
		versionCmd(g),
	)
	refuseUnknownSubcommands(root)
	return root
}

// refuseUnknownSubcommands makes every command group below the root (sctl
// state, sctl cluster keys, ...) fail on a word it does not know: cobra
// checks that only at the root, and a group without Run prints its help
// and exits 0, so `sctl state put` looked like success to a script.
func refuseUnknownSubcommands(c *cobra.Command) {
	for _, sub := range c.Commands() {
		if sub.HasSubCommands() && !sub.Runnable() {
			sub.Args = cobra.ArbitraryArgs
			if sub.SuggestionsMinimumDistance <= 0 {
				sub.SuggestionsMinimumDistance = 2 // cobra's default at the root
			}
			sub.RunE = func(cmd *cobra.Command, args []string) error {
				if len(args) == 0 {
					return cmd.Help()
				}
				msg := fmt.Sprintf("unknown command %q for %q", args[0], cmd.CommandPath())
				if s := cmd.SuggestionsFor(args[0]); len(s) > 0 {
					msg += fmt.Sprintf(" (did you mean %q?)", s[0])
				}
				return fmt.Errorf("%s; run '%s --help' for its commands", msg, cmd.CommandPath())
			}
		}
		refuseUnknownSubcommands(sub)
	}
}

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}

func defaultCred(name string) string {
	home, err := os.UserHomeDir()
	if err != nil {
		return ""
	}
	return filepath.Join(home, ".config", "stellar", name)
}

// loadConfig reads the node's configuration (for socket paths).
func (g *globals) loadConfig() (config.Config, error) {
	explicit := g.configPath != "" || os.Getenv(config.EnvPath) != ""
	return config.Load(config.Path(g.configPath), explicit)
}

// client returns a client of the daemon with the short name ("gossip",
// "appd", ...): its local socket, or relayed by --addr's node.
func (g *globals) client(daemon string) (*client.Client, error) {
	service := "stellar-" + daemon
	if g.addr != "" {
		tc, err := g.tlsConfig()
		if err != nil {
			return nil, err
		}
		return client.Remote(service, g.addr, tc).WithTimeout(g.timeout), nil
	}
	cfg, err := g.loadConfig()
	if err != nil {
		return nil, err
	}
	return client.Unix(service, cfg.Socket(daemon)).WithTimeout(g.timeout), nil
}

// call sends one request to a daemon's API (the local socket, or the peer
// port with --addr) and decodes the answer into out (nil: ignore it).
func (g *globals) call(ctx context.Context, daemon, method, path string, body, out any) error {
	c, err := g.client(daemon)
	if err != nil {
		return err
	}
	return c.Do(ctx, method, path, body, out)
}

// tlsConfig loads the operator certificate for --addr.
func (g *globals) tlsConfig() (*tls.Config, error) {
	cert, err := tls.LoadX509KeyPair(g.cert, g.key)
	if err != nil {
		return nil, fmt.Errorf("load operator certificate (--cert %s, --key %s): %w", g.cert, g.key, err)
	}
	caPEM, err := os.ReadFile(g.ca)
	if err != nil {
		return nil, fmt.Errorf("read cluster CA (--ca): %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		return nil, fmt.Errorf("read cluster CA %s: no certificate in it", g.ca)
	}
	return &tls.Config{Certificates: []tls.Certificate{cert}, RootCAs: pool, MinVersion: tls.VersionTLS13, ServerName: "stellar-peer"}, nil
}

// printJSON writes v indented.
func (g *globals) printJSON(v any) error {
	enc := json.NewEncoder(g.out)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// table writes aligned columns like the original Stellar's sctl.
type table struct {
	tw *tabwriter.Writer
}

func (g *globals) table(header ...string) *table {
	t := &table{tw: tabwriter.NewWriter(g.out, 20, 1, 3, ' ', 0)}
	t.row(header...)
	return t
}

func (t *table) row(cols ...string) {
	fmt.Fprintln(t.tw, strings.Join(cols, "\t"))
}

func (t *table) flush() error { return t.tw.Flush() }
