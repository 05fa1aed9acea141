package client_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/weir-log/weir/api/hstreampb"
	"github.com/weir-log/weir/client"
	"github.com/weir-log/weir/internal/nodetest"
)

// Against a real node: the server list, lookups, and a synchronous Append
// that outlasts a restart.

func TestClusterCallsAgainstANode(t *testing.T) {
	n := nodetest.Start(t)
	c, err := client.Dial(t.Context(), "hstream://"+n.Addr)
	require.NoError(t, err)
	defer c.Close()
	require.Equal(t, []string{n.Addr}, c.Nodes())

	desc, err := c.DescribeCluster(t.Context())
	require.NoError(t, err)
	require.Len(t, desc.GetServerNodesStatus(), 1)
	require.Equal(t, hstreampb.NodeState_Running, desc.GetServerNodesStatus()[0].GetState())

	_, err = c.CreateStream(t.Context(), "s", client.ShardCount(2))
	require.NoError(t, err)
	shards, err := c.ListShards(t.Context(), "s")
	require.NoError(t, err)
	addr, err := c.LookupShard(t.Context(), shards[1].GetShardId())
	require.NoError(t, err)
	require.Equal(t, n.Addr, addr)
	_, err = c.CreateSubscription(t.Context(), "sub", "s")
	require.NoError(t, err)
	addr, err = c.LookupSubscription(t.Context(), "sub")
	require.NoError(t, err)
	require.Equal(t, n.Addr, addr)
}

func TestAppendRetriesAcrossARestart(t *testing.T) {
	n := nodetest.Start(t)
	c, err := client.Dial(t.Context(), n.Addr, client.WithMaxAttempts(100), client.WithRetryBackoff(20*time.Millisecond, 200*time.Millisecond))
	require.NoError(t, err)
	defer c.Close()
	_, err = c.CreateStream(t.Context(), "s", client.ShardCount(2))
	require.NoError(t, err)
	_, err = c.Append(t.Context(), "s", []client.Record{{Key: "a", Payload: []byte("before")}})
	require.NoError(t, err)

	n.Close()
	done := make(chan error, 1)
	go func() {
		_, err := c.Append(t.Context(), "s", []client.Record{{Key: "a", Payload: []byte("during")}, {Key: "b", Payload: []byte("during")}})
		done <- err
	}()
	select {
	case err := <-done:
		t.Fatalf("Append returned while the node was down: %v", err)
	case <-time.After(500 * time.Millisecond):
	}
	n.Reopen(t)
	select {
	case err := <-done:
		require.NoError(t, err)
	case <-time.After(30 * time.Second):
		t.Fatal("Append did not finish after the node came back")
	}
	var payloads []string
	for _, r := range n.Records(t, "s") {
		payloads = append(payloads, string(r.GetPayload()))
	}
	require.ElementsMatch(t, []string{"before", "during", "during"}, payloads)
}
