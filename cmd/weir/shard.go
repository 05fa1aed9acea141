package main

import (
	"context"
	"fmt"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/weir-log/weir/client"
)

func newShardCmd(g *clientFlags) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "shard",
		Short: "Inspect the shards of a stream",
	}
	cmd.AddCommand(&cobra.Command{
		Use:   "list STREAM",
		Short: "List a stream's shards with their inclusive hash ranges",
		Args:  exactlyOne("STREAM"),
		RunE: func(cmd *cobra.Command, args []string) error {
			return g.run(cmd.Context(), func(ctx context.Context, c *client.Client) error {
				shards, err := c.ListShards(ctx, args[0])
				if err != nil {
					return err
				}
				tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "ID\tSTART\tEND")
				for _, s := range shards {
					fmt.Fprintf(tw, "%d\t%s\t%s\n", s.GetShardId(), s.GetStartHashRangeKey(), s.GetEndHashRangeKey())
				}
				return tw.Flush()
			})
		},
	})
	return cmd
}
