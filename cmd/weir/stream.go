package main

import (
	"context"
	"fmt"
	"io"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/weir-log/weir/api/hstreampb"
	"github.com/weir-log/weir/client"
)

func newStreamCmd(g *clientFlags) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "stream",
		Short: "Create, list, show and delete streams",
	}
	cmd.AddCommand(newStreamCreateCmd(g), newStreamListCmd(g), newStreamGetCmd(g), newStreamDeleteCmd(g))
	return cmd
}

func newStreamCreateCmd(g *clientFlags) *cobra.Command {
	var (
		shards, rf int
		backlog    time.Duration
	)
	cmd := &cobra.Command{
		Use:   "create NAME",
		Short: "Create a stream",
		Args:  exactlyOne("NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if shards < 1 {
				return fmt.Errorf("--shards %d: want at least 1", shards)
			}
			if rf < 1 {
				return fmt.Errorf("--replication-factor %d: want at least 1", rf)
			}
			if backlog < 0 || backlog%time.Second != 0 {
				return fmt.Errorf("--backlog %s: want a whole number of seconds, 0 or more (0 keeps records forever)", backlog)
			}
			return g.run(cmd.Context(), func(ctx context.Context, c *client.Client) error {
				s, err := c.CreateStream(ctx, args[0],
					client.ShardCount(shards), client.ReplicationFactor(rf), client.BacklogDuration(backlog))
				if err != nil {
					return err
				}
				return printStreams(cmd.OutOrStdout(), []*hstreampb.Stream{s})
			})
		},
	}
	cmd.Flags().IntVar(&shards, "shards", client.DefaultShardCount, "number of shards")
	cmd.Flags().IntVar(&rf, "replication-factor", client.DefaultReplicationFactor, "replicas per shard")
	cmd.Flags().DurationVar(&backlog, "backlog", client.DefaultBacklogDuration, "how long records are kept (0 = forever)")
	return cmd
}

func newStreamListCmd(g *clientFlags) *cobra.Command {
	var prefix string
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List streams",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return g.run(cmd.Context(), func(ctx context.Context, c *client.Client) error {
				streams, err := c.ListStreams(ctx, prefix)
				if err != nil {
					return err
				}
				return printStreams(cmd.OutOrStdout(), streams)
			})
		},
	}
	cmd.Flags().StringVar(&prefix, "prefix", "", "list only streams whose name starts with this")
	return cmd
}

func newStreamGetCmd(g *clientFlags) *cobra.Command {
	return &cobra.Command{
		Use:   "get NAME",
		Short: "Show one stream",
		Args:  exactlyOne("NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			return g.run(cmd.Context(), func(ctx context.Context, c *client.Client) error {
				s, err := c.GetStream(ctx, args[0])
				if err != nil {
					return err
				}
				return printStreams(cmd.OutOrStdout(), []*hstreampb.Stream{s})
			})
		},
	}
}

func newStreamDeleteCmd(g *clientFlags) *cobra.Command {
	var force, ignoreMissing bool
	cmd := &cobra.Command{
		Use:   "delete NAME",
		Short: "Delete a stream",
		Args:  exactlyOne("NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			return g.run(cmd.Context(), func(ctx context.Context, c *client.Client) error {
				return c.DeleteStream(ctx, args[0], force, ignoreMissing)
			})
		},
	}
	cmd.Flags().BoolVar(&force, "force", false, "delete even if the stream has subscriptions")
	cmd.Flags().BoolVar(&ignoreMissing, "ignore-missing", false, "succeed if the stream does not exist")
	return cmd
}

// printStreams writes one aligned row per stream, under a header.
func printStreams(w io.Writer, streams []*hstreampb.Stream) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tSHARDS\tREPLICATION\tBACKLOG\tCREATED")
	for _, s := range streams {
		backlog := "forever"
		if b := s.GetBacklogDuration(); b > 0 {
			backlog = (time.Duration(b) * time.Second).String()
		}
		created := "-"
		if ct := s.GetCreationTime(); ct != nil {
			created = ct.AsTime().Local().Format(time.RFC3339)
		}
		fmt.Fprintf(tw, "%s\t%d\t%d\t%s\t%s\n", s.GetStreamName(), s.GetShardCount(), s.GetReplicationFactor(), backlog, created)
	}
	return tw.Flush()
}
