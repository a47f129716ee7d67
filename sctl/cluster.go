package main

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"stellar.dev/api/gossipapi"
)

func clusterCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "cluster",
		Short: "Manage the cluster: nodes, joining, keys, certificates, backups",
	}
	cmd.AddCommand(
		clusterNodesCmd(g),
		clusterInfoCmd(g),
		clusterLeaveCmd(g),
		clusterRemoveCmd(g),
		clusterTokenCmd(g),
		clusterTokensCmd(g),
		clusterJoinCmd(g),
		clusterKeysCmd(g),
		clusterCertCmd(g),
		clusterBackupCmd(g),
		clusterRestoreCmd(g),
	)
	return cmd
}

func clusterNodesCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "nodes",
		Short: "List the cluster's nodes as this node sees them",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := g.client("gossip")
			if err != nil {
				return err
			}
			ms, err := gossipapi.New(c).Members(cmd.Context())
			if err != nil {
				return err
			}
			if g.json {
				return g.printJSON(ms)
			}
			t := g.table("NAME", "ADDR", "OS", "UPTIME", "CPUS", "MEMORY (USED)", "LABELS", "STATUS")
			for _, m := range ms {
				osName, up, cpus, mem := "-", "-", "-", "-"
				if f := m.Facts; f != nil {
					osName = "Linux (" + f.Kernel + ")"
					if !f.Started.IsZero() {
						up = humanDuration(time.Since(f.Started))
					}
					cpus = strconv.Itoa(f.CPUs)
					mem = humanBytes(f.MemoryUsed) + " / " + humanBytes(f.MemoryTotal)
				}
				addr := m.PeerAPI
				if addr == "" {
					addr = m.Addr
				}
				t.row(m.Name, addr, osName, up, cpus, mem, labelString(m.Labels), m.Status)
			}
			return t.flush()
		},
	}
}

func labelString(l map[string]string) string {
	if len(l) == 0 {
		return "-"
	}
	ks := make([]string, 0, len(l))
	for k, v := range l {
		ks = append(ks, k+"="+v)
	}
	sort.Strings(ks)
	return strings.Join(ks, ",")
}

// humanDuration prints "7 seconds", "2 minutes", "3 hours", "5 days".
func humanDuration(d time.Duration) string {
	unit := func(n int, u string) string {
		if n == 1 {
			return "1 " + u
		}
		return strconv.Itoa(n) + " " + u + "s"
	}
	switch {
	case d < time.Minute:
		return unit(int(d.Seconds()), "second")
	case d < time.Hour:
		return unit(int(d.Minutes()), "minute")
	case d < 48*time.Hour:
		return unit(int(d.Hours()), "hour")
	}
	return unit(int(d.Hours()/24), "day")
}

// humanBytes prints "952 MB", "2.1 GB".
func humanBytes(b uint64) string {
	switch {
	case b >= 1e9:
		return fmt.Sprintf("%.1f GB", float64(b)/1e9)
	case b >= 1e6:
		return fmt.Sprintf("%d MB", b/1e6)
	case b >= 1e3:
		return fmt.Sprintf("%d kB", b/1e3)
	}
	return fmt.Sprintf("%d B", b)
}

func clusterInfoCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "info",
		Short: "Show this node: name, addresses, key counts, state revision, peers",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var in struct {
				Node       string            `json:"node"`
				Version    string            `json:"version"`
				Serf       string            `json:"serf_addr"`
				PeerAPI    string            `json:"peer_api"`
				Profile    string            `json:"profile"`
				Keys       int               `json:"keys"`
				Rev        uint64            `json:"rev"`
				Seq        uint64            `json:"seq"`
				GossipKeys int               `json:"gossip_keys"`
				CAHash     string            `json:"ca_hash"`
				Members    map[string]int    `json:"members"`
				Peers      []string          `json:"peers"`
				Tags       map[string]string `json:"tags"`
			}
			if err := g.call(cmd.Context(), "gossip", http.MethodGet, "/v1/cluster/info", nil, &in); err != nil {
				return err
			}
			if g.json {
				return g.printJSON(in)
			}
			var ms []string
			for _, st := range []string{"alive", "suspect", "failed", "left"} {
				if n := in.Members[st]; n > 0 {
					ms = append(ms, fmt.Sprintf("%d %s", n, st))
				}
			}
			fmt.Fprintf(g.out, "Node:           %s (stellar %s)\n", in.Node, in.Version)
			fmt.Fprintf(g.out, "Gossip:         %s (profile %s, %d key(s) in the keyring)\n", in.Serf, in.Profile, in.GossipKeys)
			fmt.Fprintf(g.out, "Peer port:      %s\n", in.PeerAPI)
			fmt.Fprintf(g.out, "CA hash:        %s\n", in.CAHash)
			fmt.Fprintf(g.out, "State:          %d keys, revision %d, own sequence %d\n", in.Keys, in.Rev, in.Seq)
			fmt.Fprintf(g.out, "Members:        %s\n", strings.Join(ms, ", "))
			fmt.Fprintf(g.out, "Peers:\n")
			for _, p := range in.Peers {
				fmt.Fprintf(g.out, "  %s\n", p)
			}
			return nil
		},
	}
}

func clusterLeaveCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "leave",
		Short: "Make this node leave the cluster for good (stopping the daemon does not)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := g.call(cmd.Context(), "gossip", http.MethodPost, "/v1/cluster/leave", nil, nil); err != nil {
				return err
			}
			fmt.Fprintln(g.out, "left the cluster")
			return nil
		},
	}
}

func clusterRemoveCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "remove NODE",
		Short: "Remove a dead node for good: its keys and subnet are freed",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var res struct {
				Removed string `json:"removed"`
				Dropped int    `json:"keys_dropped"`
			}
			if err := g.call(cmd.Context(), "gossip", http.MethodPost, "/v1/cluster/remove/"+args[0], nil, &res); err != nil {
				return err
			}
			fmt.Fprintf(g.out, "removed %s (%d keys dropped)\n", res.Removed, res.Dropped)
			return nil
		},
	}
}

func clusterTokenCmd(g *globals) *cobra.Command {
	var ttl string
	var uses int
	cmd := &cobra.Command{
		Use:   "token",
		Short: "Print a join token for new nodes (sctl cluster join TOKEN on them)",
		Long: `Print an expiring bootstrap token: a secret, this node's peer-port address and the
hash of the cluster CA. It never carries the gossip key: a joining node proves it
holds the secret over the peer port and receives the keys there.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var res struct {
				Token   string    `json:"token"`
				ID      string    `json:"id"`
				Expires time.Time `json:"expires"`
				Uses    int       `json:"uses"`
			}
			if err := g.call(cmd.Context(), "gossip", http.MethodPost, "/v1/cluster/tokens", map[string]any{"ttl": ttl, "uses": uses}, &res); err != nil {
				return err
			}
			if g.json {
				return g.printJSON(res)
			}
			fmt.Fprintln(g.out, res.Token)
			return nil
		},
	}
	cmd.Flags().StringVar(&ttl, "ttl", "24h", "how long the token is valid")
	cmd.Flags().IntVar(&uses, "uses", 0, "how many nodes may join with it (0: any number)")
	return cmd
}

func clusterTokensCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "tokens",
		Short: "List the join tokens this node issued",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var ts []struct {
				ID      string    `json:"id"`
				Created time.Time `json:"created"`
				Expires time.Time `json:"expires"`
				Uses    int       `json:"uses"`
				Used    int       `json:"used"`
				Status  string    `json:"status"`
			}
			if err := g.call(cmd.Context(), "gossip", http.MethodGet, "/v1/cluster/tokens", nil, &ts); err != nil {
				return err
			}
			if g.json {
				return g.printJSON(ts)
			}
			t := g.table("ID", "CREATED", "EXPIRES", "USED", "STATUS")
			for _, x := range ts {
				uses := strconv.Itoa(x.Used) + "/" + strconv.Itoa(x.Uses)
				if x.Uses == 0 {
					uses = strconv.Itoa(x.Used) + "/any"
				}
				t.row(x.ID, x.Created.Local().Format(time.DateTime), x.Expires.Local().Format(time.DateTime), uses, x.Status)
			}
			return t.flush()
		},
	}
	cmd.AddCommand(&cobra.Command{
		Use:   "revoke ID",
		Short: "Revoke a join token",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := g.call(cmd.Context(), "gossip", http.MethodDelete, "/v1/cluster/tokens/"+args[0], nil, nil); err != nil {
				return err
			}
			fmt.Fprintf(g.out, "revoked %s\n", args[0])
			return nil
		},
	})
	return cmd
}

func clusterJoinCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "join TOKEN",
		Short: "Join this node to the cluster a token names",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var res struct {
				Joined int    `json:"joined"`
				Via    string `json:"via"`
			}
			if err := g.call(cmd.Context(), "gossip", http.MethodPost, "/v1/cluster/join", map[string]string{"token": args[0]}, &res); err != nil {
				return err
			}
			fmt.Fprintf(g.out, "joined the cluster via %s (%d members contacted)\n", res.Via, res.Joined)
			return nil
		},
	}
}

// keysResult is the per-node answer of the keyring calls.
type keysResult struct {
	Op       string            `json:"op"`
	Key      string            `json:"key,omitempty"`
	NumNodes int               `json:"num_nodes"`
	NumResp  int               `json:"num_resp"`
	NumErr   int               `json:"num_err"`
	Messages map[string]string `json:"messages,omitempty"`
	Keys     map[string]int    `json:"keys,omitempty"`
	Primary  map[string]int    `json:"primary,omitempty"`
}

func clusterKeysCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "keys",
		Short: "Rotate the gossip encryption keys with no downtime",
		Long: `Rotate the gossip keys: install a new key everywhere, use it as the primary,
then remove the old one. Every step reports each node's result.`,
	}
	show := func(g *globals, r keysResult) error {
		if g.json {
			return g.printJSON(r)
		}
		fmt.Fprintf(g.out, "%s: %d of %d nodes answered, %d failed\n", r.Op, r.NumResp, r.NumNodes, r.NumErr)
		names := make([]string, 0, len(r.Messages))
		for n := range r.Messages {
			names = append(names, n)
		}
		sort.Strings(names)
		for _, n := range names {
			fmt.Fprintf(g.out, "  %s: %s\n", n, r.Messages[n])
		}
		if r.Op == "install" && r.Key != "" {
			fmt.Fprintf(g.out, "key: %s\n", r.Key)
		}
		if len(r.Keys) > 0 {
			t := g.table("KEY", "NODES", "PRIMARY ON")
			for k, n := range r.Keys {
				t.row(k, strconv.Itoa(n), strconv.Itoa(r.Primary[k]))
			}
			if err := t.flush(); err != nil {
				return err
			}
		}
		if r.NumErr > 0 || r.NumResp < r.NumNodes {
			return fmt.Errorf("%s did not reach every node: run it again once they are back", r.Op)
		}
		return nil
	}
	cmd.AddCommand(&cobra.Command{
		Use:   "list",
		Short: "List the keys and how many nodes hold each",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var r keysResult
			if err := g.call(cmd.Context(), "gossip", http.MethodGet, "/v1/cluster/keys", nil, &r); err != nil {
				return err
			}
			return show(g, r)
		},
	})
	for _, op := range []struct{ name, short string }{
		{"install", "Install a key on every node (a new random key when none is given)"},
		{"use", "Make KEY the primary key on every node"},
		{"remove", "Remove KEY from every node"},
	} {
		use := op.name + " KEY"
		args := cobra.ExactArgs(1)
		if op.name == "install" {
			use, args = "install [KEY]", cobra.MaximumNArgs(1)
		}
		cmd.AddCommand(&cobra.Command{
			Use:   use,
			Short: op.short,
			Args:  args,
			RunE: func(cmd *cobra.Command, a []string) error {
				key := ""
				if len(a) == 1 {
					key = a[0]
				}
				var r keysResult
				if err := g.call(cmd.Context(), "gossip", http.MethodPost, "/v1/cluster/keys/"+op.name, map[string]string{"key": key}, &r); err != nil {
					return err
				}
				return show(g, r)
			},
		})
	}
	return cmd
}

func clusterCertCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "cert",
		Short: "Operator certificates for sctl --addr",
	}
	var name, role, ttl, out string
	create := &cobra.Command{
		Use:   "create",
		Short: "Create an operator certificate (role admin or read) signed by the cluster CA",
		Long: `Create an operator certificate and key signed by the cluster CA, and write
operator.crt, operator.key (0600) and ca.crt into --out (default ~/.config/stellar,
where sctl --addr looks for them). Role admin may change things; role read may only read.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var res struct {
				Cert    string    `json:"cert"`
				Key     string    `json:"key"`
				CA      string    `json:"ca"`
				Expires time.Time `json:"expires"`
			}
			if err := g.call(cmd.Context(), "gossip", http.MethodPost, "/v1/cluster/certs", map[string]string{"name": name, "role": role, "ttl": ttl}, &res); err != nil {
				return err
			}
			if out == "" {
				out = filepath.Dir(defaultCred("x"))
			}
			if err := os.MkdirAll(out, 0o700); err != nil {
				return fmt.Errorf("create %s: %w", out, err)
			}
			for _, f := range []struct {
				name, data string
				mode       os.FileMode
			}{{"operator.crt", res.Cert, 0o644}, {"operator.key", res.Key, 0o600}, {"ca.crt", res.CA, 0o644}} {
				if err := os.WriteFile(filepath.Join(out, f.name), []byte(f.data), f.mode); err != nil {
					return fmt.Errorf("write %s: %w", f.name, err)
				}
			}
			fmt.Fprintf(g.out, "wrote %s/operator.crt, operator.key and ca.crt (%s %s, expires %s)\n", out, role, name, res.Expires.Local().Format(time.DateTime))
			return nil
		},
	}
	create.Flags().StringVar(&name, "name", "", "who the certificate names (required)")
	create.Flags().StringVar(&role, "role", "read", "admin or read")
	create.Flags().StringVar(&ttl, "ttl", "2160h", "how long it is valid")
	create.Flags().StringVar(&out, "out", "", "directory to write into (default ~/.config/stellar)")
	_ = create.MarkFlagRequired("name")
	cmd.AddCommand(create)
	return cmd
}

func clusterBackupCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "backup",
		Short: "Write every cluster key as JSON to stdout (sctl cluster backup > FILE)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var raw json.RawMessage
			if err := g.call(cmd.Context(), "gossip", http.MethodGet, "/v1/cluster/backup", nil, &raw); err != nil {
				return err
			}
			_, err := g.out.Write(append(raw, '\n'))
			return err
		},
	}
}

func clusterRestoreCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "restore FILE",
		Short: "Write every cluster key of a backup back (as new writes, so they win)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			raw, err := os.ReadFile(args[0])
			if err != nil {
				return fmt.Errorf("read backup: %w", err)
			}
			if !json.Valid(raw) {
				return fmt.Errorf("read backup %s: not JSON", args[0])
			}
			var res struct {
				Restored int `json:"restored"`
			}
			if err := g.call(cmd.Context(), "gossip", http.MethodPost, "/v1/cluster/restore", json.RawMessage(raw), &res); err != nil {
				return err
			}
			fmt.Fprintf(g.out, "restored %d keys\n", res.Restored)
			return nil
		},
	}
}
