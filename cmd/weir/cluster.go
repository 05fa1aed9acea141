package main

import (
	"context"
	"fmt"
	"net"
	"strconv"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/weir-log/weir/client"
)

func newClusterCmd(g *clientFlags) *cobra.Command {
	return &cobra.Command{
		Use:   "cluster",
		Short: "List the cluster's nodes with their addresses and states",
		Long: "List every node the cluster knows with its state: Starting (opening its shards),\n" +
			"Running, Unavailable (its lease expired) or Dead (unavailable for longer than\n" +
			"cluster.dead-after, its replicas re-placed on other nodes).",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return g.run(cmd.Context(), func(ctx context.Context, c *client.Client) error {
				resp, err := c.DescribeCluster(ctx)
				if err != nil {
					return err
				}
				tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "ID\tADDRESS\tSTATE\tVERSION")
				for _, st := range resp.GetServerNodesStatus() {
					n := st.GetNode()
					addr := net.JoinHostPort(n.GetHost(), strconv.FormatUint(uint64(n.GetPort()), 10))
					fmt.Fprintf(tw, "%d\t%s\t%s\t%s\n", n.GetId(), addr, st.GetState(), n.GetVersion().GetVersion())
				}
				return tw.Flush()
			})
		},
	}
}
