package main

import (
	"cmp"
	"context"
	"fmt"
	"io"
	"math"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/weir-log/weir/api/hstreampb"
	"github.com/weir-log/weir/client"
)

func newSubCmd(g *clientFlags) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "sub",
		Short: "Create, list, show and delete subscriptions (consumer groups over a stream)",
	}
	cmd.AddCommand(newSubCreateCmd(g), newSubListCmd(g), newSubGetCmd(g), newSubDeleteCmd(g), newSubConsumersCmd(g))
	return cmd
}

func newSubCreateCmd(g *clientFlags) *cobra.Command {
	var (
		stream, offset string
		ackTimeout     time.Duration
		maxUnacked     int
	)
	cmd := &cobra.Command{
		Use:   "create SUB --stream STREAM",
		Short: "Create a subscription to a stream",
		Long: `Create subscription SUB to --stream.

The consumers of a subscription share its stream: each record is delivered
to one of them, and again (to any) if it is not acked within --ack-timeout.
At most --max-unacked delivered records may await their ack; then delivery
pauses. --offset earliest starts at every shard's first record, latest
(the default) at records appended after the subscription is created.`,
		Args: exactlyOne("SUB"),
		RunE: func(cmd *cobra.Command, args []string) error {
			opts, err := subscriptionOpts(ackTimeout, maxUnacked, offset)
			if err != nil {
				return err
			}
			if stream == "" {
				return fmt.Errorf(`--stream "": want the stream to subscribe to`)
			}
			return g.run(cmd.Context(), func(ctx context.Context, c *client.Client) error {
				s, err := c.CreateSubscription(ctx, args[0], stream, opts...)
				if err != nil {
					return err
				}
				return printSubscriptions(cmd.OutOrStdout(), []*hstreampb.Subscription{s})
			})
		},
	}
	f := cmd.Flags()
	f.StringVar(&stream, "stream", "", "the stream to subscribe to (required)")
	f.DurationVar(&ackTimeout, "ack-timeout", client.DefaultAckTimeout, "redeliver a record not acked within this (whole seconds)")
	f.IntVar(&maxUnacked, "max-unacked", client.DefaultMaxUnackedRecords, "pause delivery while this many records await their ack")
	f.StringVar(&offset, "offset", "latest", "where to start in every shard: earliest or latest")
	_ = cmd.MarkFlagRequired("stream")
	return cmd
}

// subscriptionOpts checks the flags of `sub create` and turns them into
// client options.
func subscriptionOpts(ackTimeout time.Duration, maxUnacked int, offset string) ([]client.SubscriptionOpt, error) {
	if ackTimeout < time.Second || ackTimeout%time.Second != 0 || ackTimeout/time.Second > math.MaxInt32 {
		return nil, fmt.Errorf("--ack-timeout %s: want a whole number of seconds, from 1s to %ds", ackTimeout, math.MaxInt32)
	}
	if maxUnacked < 1 || maxUnacked > math.MaxInt32 {
		return nil, fmt.Errorf("--max-unacked %d: want 1 to %d", maxUnacked, math.MaxInt32)
	}
	var off hstreampb.SpecialOffset
	switch strings.ToLower(offset) {
	case "earliest":
		off = hstreampb.SpecialOffset_EARLIEST
	case "latest":
		off = hstreampb.SpecialOffset_LATEST
	default:
		return nil, fmt.Errorf("--offset %q: want earliest or latest", offset)
	}
	return []client.SubscriptionOpt{
		client.WithAckTimeout(ackTimeout),
		client.WithMaxUnackedRecords(maxUnacked),
		client.WithSubscriptionOffset(off),
	}, nil
}

func newSubListCmd(g *clientFlags) *cobra.Command {
	var prefix string
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List subscriptions",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return g.run(cmd.Context(), func(ctx context.Context, c *client.Client) error {
				subs, err := c.ListSubscriptions(ctx, prefix)
				if err != nil {
					return err
				}
				return printSubscriptions(cmd.OutOrStdout(), subs)
			})
		},
	}
	cmd.Flags().StringVar(&prefix, "prefix", "", "list only subscriptions whose id starts with this")
	return cmd
}

func newSubGetCmd(g *clientFlags) *cobra.Command {
	return &cobra.Command{
		Use:   "get SUB",
		Short: "Show a subscription and its committed offset in each shard",
		Args:  exactlyOne("SUB"),
		RunE: func(cmd *cobra.Command, args []string) error {
			return g.run(cmd.Context(), func(ctx context.Context, c *client.Client) error {
				s, offsets, err := c.GetSubscription(ctx, args[0])
				if err != nil {
					return err
				}
				w := cmd.OutOrStdout()
				if err := printSubscriptions(w, []*hstreampb.Subscription{s}); err != nil {
					return err
				}
				fmt.Fprintln(w)
				return printSubscriptionOffsets(w, offsets)
			})
		},
	}
}

func newSubDeleteCmd(g *clientFlags) *cobra.Command {
	var force bool
	cmd := &cobra.Command{
		Use:   "delete SUB",
		Short: "Delete a subscription",
		Args:  exactlyOne("SUB"),
		RunE: func(cmd *cobra.Command, args []string) error {
			return g.run(cmd.Context(), func(ctx context.Context, c *client.Client) error {
				return c.DeleteSubscription(ctx, args[0], force)
			})
		},
	}
	cmd.Flags().BoolVar(&force, "force", false, "delete even if consumers are attached")
	return cmd
}

func newSubConsumersCmd(g *clientFlags) *cobra.Command {
	return &cobra.Command{
		Use:   "consumers SUB",
		Short: "List the consumers attached to a subscription",
		Args:  exactlyOne("SUB"),
		RunE: func(cmd *cobra.Command, args []string) error {
			return g.run(cmd.Context(), func(ctx context.Context, c *client.Client) error {
				consumers, err := c.ListConsumers(ctx, args[0])
				if err != nil {
					return err
				}
				tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "NAME\tURI\tUSER-AGENT")
				for _, cs := range consumers {
					fmt.Fprintf(tw, "%s\t%s\t%s\n", cs.GetName(), orDash(cs.GetUri()), orDash(cs.GetUserAgent()))
				}
				return tw.Flush()
			})
		},
	}
}

// printSubscriptions writes one aligned row per subscription, under a
// header.
func printSubscriptions(w io.Writer, subs []*hstreampb.Subscription) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tSTREAM\tACK-TIMEOUT\tMAX-UNACKED\tOFFSET\tCREATED")
	for _, s := range subs {
		created := "-"
		if ct := s.GetCreationTime(); ct != nil {
			created = ct.AsTime().Local().Format(time.RFC3339)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\t%s\n", s.GetSubscriptionId(), s.GetStreamName(),
			time.Duration(s.GetAckTimeoutSeconds())*time.Second, s.GetMaxUnackedRecords(),
			strings.ToLower(s.GetOffset().String()), created)
	}
	return tw.Flush()
}

// printSubscriptionOffsets writes a subscription's committed offset per
// shard, by shard id.
func printSubscriptionOffsets(w io.Writer, offsets []*hstreampb.SubscriptionOffset) error {
	offsets = slices.Clone(offsets)
	slices.SortFunc(offsets, func(a, b *hstreampb.SubscriptionOffset) int { return cmp.Compare(a.GetShardId(), b.GetShardId()) })
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "SHARD\tBATCH")
	for _, o := range offsets {
		fmt.Fprintf(tw, "%d\t%d\n", o.GetShardId(), o.GetBatchId())
	}
	return tw.Flush()
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
