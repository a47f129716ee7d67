package main

import (
	"fmt"
	"os"
	"strings"

	"github.com/spf13/cobra"
)

func imagesCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "images",
		Short: "Import, list and remove container images",
	}
	cmd.AddCommand(&cobra.Command{
		Use:     "import FILE",
		Short:   "Import an OCI or Docker image archive into this node",
		Example: "  sctl images import busybox.tar",
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			f, err := os.Open(args[0])
			if err != nil {
				return fmt.Errorf("open image archive: %w", err)
			}
			defer f.Close()
			c, err := g.apps()
			if err != nil {
				return err
			}
			imgs, err := c.ImportImage(cmd.Context(), f)
			if err != nil {
				return err
			}
			if g.json {
				return g.printJSON(imgs)
			}
			for _, im := range imgs {
				fmt.Fprintf(g.out, "imported %s (%s)\n", im.Name, im.Digest)
			}
			return nil
		},
	}, &cobra.Command{
		Use:     "list",
		Aliases: []string{"ls"},
		Short:   "List this node's images",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := g.apps()
			if err != nil {
				return err
			}
			imgs, err := c.Images(cmd.Context())
			if err != nil {
				return err
			}
			if g.json {
				return g.printJSON(imgs)
			}
			t := g.table("NAME", "DIGEST", "SIZE", "CREATED")
			for _, im := range imgs {
				d := im.Digest
				if i := strings.IndexByte(d, ':'); i >= 0 && len(d) > i+13 {
					d = d[:i+13]
				}
				t.row(im.Name, d, humanSize(im.Size), im.Created.UTC().Format("2006-01-02 15:04:05"))
			}
			return t.flush()
		},
	}, &cobra.Command{
		Use:     "remove REF",
		Aliases: []string{"rm"},
		Short:   "Remove an image from this node (refused while a container uses it)",
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := g.apps()
			if err != nil {
				return err
			}
			if err := c.RemoveImage(cmd.Context(), args[0]); err != nil {
				return err
			}
			fmt.Fprintf(g.out, "removed %s\n", args[0])
			return nil
		},
	})
	return cmd
}

func humanSize(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}
