package main

import (
	"fmt"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"stellar.dev/api/dnsapi"
)

func nameserverCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:     "nameserver",
		Aliases: []string{"ns", "dns"},
		Short:   "Manage the cluster's custom DNS records",
		Long: `The cluster zone (default "stellar.") answers <service>.<app>.stellar for
every running, healthy instance. Custom records (A, AAAA, CNAME, TXT, SRV,
MX) are added beside them, cluster-wide: a record created on one node
answers on every node within a second or two. A custom record outside the
zone (e.g. mail.example.com) overrides that name and type for every
container of the cluster.`,
	}
	cmd.AddCommand(nsCreateCmd(g), nsListCmd(g), nsDeleteCmd(g))
	return cmd
}

func (g *globals) dnsd() (*dnsapi.Client, error) {
	c, err := g.client("dnsd")
	if err != nil {
		return nil, err
	}
	return dnsapi.New(c), nil
}

func nsCreateCmd(g *globals) *cobra.Command {
	var typ string
	var ttl time.Duration
	cmd := &cobra.Command{
		Use:   "create NAME VALUE",
		Short: "Create a custom record",
		Long: `Create a custom record. VALUE is the record's data in zone-file form:
  A      10.0.0.5
  AAAA   fd00::5
  CNAME  web.example.stellar
  TXT    any text (quote it for the shell)
  SRV    "priority weight port target", e.g. "10 5 8080 web.example.stellar"
  MX     "preference host", e.g. "10 mail.example.com"`,
		Example: `  sctl nameserver create db.example.stellar 10.0.0.5
  sctl nameserver create www.example.stellar web.example.stellar --type CNAME --ttl 30s
  sctl nameserver create _sip._udp.example.stellar "10 5 5060 sip.example.com" --type SRV`,
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			if ttl < 0 || ttl%time.Second != 0 || ttl > dnsapi.MaxTTL*time.Second {
				return fmt.Errorf("--ttl %s: must be whole seconds from 1s to 24h (0: the zone's TTL)", ttl)
			}
			rec, err := dnsapi.Normalize(dnsapi.Record{Name: args[0], Type: typ, Value: args[1], TTL: uint32(ttl / time.Second)})
			if err != nil {
				return err
			}
			d, err := g.dnsd()
			if err != nil {
				return err
			}
			out, err := d.Create(cmd.Context(), rec)
			if err != nil {
				return err
			}
			if g.json {
				return g.printJSON(out)
			}
			t := g.table("NAME", "TYPE", "VALUE", "OPTIONS")
			t.row(out.Name, out.Type, out.Value, options(out))
			return t.flush()
		},
	}
	cmd.Flags().StringVarP(&typ, "type", "t", dnsapi.TypeA, "record type: "+strings.Join(dnsapi.Types, ", "))
	cmd.Flags().DurationVar(&ttl, "ttl", 0, "time to live, whole seconds (default: the zone's TTL, [dns] ttl)")
	return cmd
}

func nsListCmd(g *globals) *cobra.Command {
	var source string
	cmd := &cobra.Command{
		Use:     "list",
		Aliases: []string{"ls"},
		Short:   "List the zone's records: those of running instances and the custom ones",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			d, err := g.dnsd()
			if err != nil {
				return err
			}
			recs, err := d.Records(cmd.Context(), source)
			if err != nil {
				return err
			}
			if g.json {
				return g.printJSON(dnsapi.RecordList{Records: recs})
			}
			t := g.table("NAME", "TYPE", "VALUE", "OPTIONS")
			for _, r := range recs {
				t.row(r.Name, r.Type, r.Value, options(r))
			}
			return t.flush()
		},
	}
	cmd.Flags().StringVar(&source, "source", "", `only "custom" records or only "service" records (default both)`)
	return cmd
}

// options is the OPTIONS column: where the record comes from and its TTL.
func options(r dnsapi.Record) string {
	var o []string
	switch r.Source {
	case dnsapi.SourceService:
		o = append(o, "node="+r.Node)
	case dnsapi.SourceCustom:
		o = append(o, "custom")
		if r.TTL != 0 {
			o = append(o, "ttl="+(time.Duration(r.TTL)*time.Second).String())
		}
	}
	if len(o) == 0 {
		return "-"
	}
	return strings.Join(o, " ")
}

func nsDeleteCmd(g *globals) *cobra.Command {
	var typ string
	cmd := &cobra.Command{
		Use:     "delete NAME",
		Aliases: []string{"rm"},
		Short:   "Delete the custom records of a name (of one type with --type)",
		Example: `  sctl nameserver delete db.example.stellar
  sctl nameserver delete www.example.stellar --type CNAME`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			name := dnsapi.NormalizeName(args[0])
			if err := dnsapi.ValidateName(name); err != nil {
				return fmt.Errorf("record name: %w", err)
			}
			typ = strings.ToUpper(typ)
			if typ != "" && !contains(dnsapi.Types, typ) {
				return fmt.Errorf("--type %q is not one of %s", typ, strings.Join(dnsapi.Types, ", "))
			}
			d, err := g.dnsd()
			if err != nil {
				return err
			}
			deleted, err := d.Delete(cmd.Context(), name, typ)
			if err != nil {
				return err
			}
			if g.json {
				return g.printJSON(dnsapi.DeleteResult{Deleted: deleted})
			}
			for _, r := range deleted {
				fmt.Fprintf(g.out, "deleted %s %s %s\n", r.Name, r.Type, r.Value)
			}
			return nil
		},
	}
	cmd.Flags().StringVarP(&typ, "type", "t", "", "delete only records of this type (default: every type)")
	return cmd
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
