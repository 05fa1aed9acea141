package api_test

import (
	"fmt"
	"net"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/types/known/emptypb"

	"github.com/weir-log/weir/api/hstreampb"
	"github.com/weir-log/weir/conf"
	"github.com/weir-log/weir/internal/nodetest"
)

// requireNode checks that sn is the node with id that listens on addr.
func requireNode(t *testing.T, sn *hstreampb.ServerNode, id uint32, addr string) {
	t.Helper()
	require.NotNil(t, sn)
	host, port, err := net.SplitHostPort(addr)
	require.NoError(t, err)
	require.Equal(t, id, sn.GetId())
	require.Equal(t, host, sn.GetHost())
	require.Equal(t, port, strconv.FormatUint(uint64(sn.GetPort()), 10))
}

// A standalone node serves everything, so every lookup answers with it, and
// DescribeCluster lists it alone, Running.
func TestLookupStandalone(t *testing.T) {
	node := nodetest.Start(t)
	api := node.API
	ctx := ctxT(t)
	shards := createStream(t, api, "orders", 3)
	_, err := api.CreateShardReader(ctx, &hstreampb.CreateShardReaderRequest{StreamName: "orders", ShardId: shards[1].GetShardId(), ReaderId: "r1"})
	require.NoError(t, err)
	createSub(t, api, "sub", "orders", 10, 100, hstreampb.SpecialOffset_EARLIEST)

	for _, sh := range shards {
		resp, err := api.LookupShard(ctx, &hstreampb.LookupShardRequest{ShardId: sh.GetShardId()})
		require.NoError(t, err)
		require.Equal(t, sh.GetShardId(), resp.GetShardId())
		requireNode(t, resp.GetServerNode(), 1, node.Addr)

		sn, err := api.LookupResource(ctx, &hstreampb.LookupResourceRequest{ResType: hstreampb.ResourceType_ResShard, ResId: strconv.FormatUint(sh.GetShardId(), 10)})
		require.NoError(t, err)
		requireNode(t, sn, 1, node.Addr)
	}
	for _, reader := range []string{"r1", "not-created-yet"} {
		resp, err := api.LookupShardReader(ctx, &hstreampb.LookupShardReaderRequest{ReaderId: reader})
		require.NoError(t, err)
		require.Equal(t, reader, resp.GetReaderId())
		requireNode(t, resp.GetServerNode(), 1, node.Addr)
	}
	sub, err := api.LookupSubscription(ctx, &hstreampb.LookupSubscriptionRequest{SubscriptionId: "sub"})
	require.NoError(t, err)
	require.Equal(t, "sub", sub.GetSubscriptionId())
	requireNode(t, sub.GetServerNode(), 1, node.Addr)
	sn, err := api.LookupResource(ctx, &hstreampb.LookupResourceRequest{ResType: hstreampb.ResourceType_ResSubscription, ResId: "sub"})
	require.NoError(t, err)
	requireNode(t, sn, 1, node.Addr)
	for i := range 20 {
		sn, err := api.LookupKey(ctx, &hstreampb.LookupKeyRequest{PartitionKey: fmt.Sprintf("key-%d", i)})
		require.NoError(t, err)
		requireNode(t, sn, 1, node.Addr)
	}
	for _, kind := range []hstreampb.ResourceType{hstreampb.ResourceType_ResStream, hstreampb.ResourceType_ResConnector, hstreampb.ResourceType_ResShardReader} {
		sn, err := api.LookupResource(ctx, &hstreampb.LookupResourceRequest{ResType: kind, ResId: "orders"})
		require.NoError(t, err, kind.String())
		requireNode(t, sn, 1, node.Addr)
	}

	dc, err := api.DescribeCluster(ctx, &emptypb.Empty{})
	require.NoError(t, err)
	require.Equal(t, "0.1.0", dc.GetProtocolVersion())
	require.Len(t, dc.GetServerNodes(), 1)
	requireNode(t, dc.GetServerNodes()[0], 1, node.Addr)
	require.Len(t, dc.GetServerNodesStatus(), 1)
	requireNode(t, dc.GetServerNodesStatus()[0].GetNode(), 1, node.Addr)
	require.Equal(t, hstreampb.NodeState_Running, dc.GetServerNodesStatus()[0].GetState())
}

// Two nodes on one etcd (the first one's embedded etcd): both describe the
// same cluster, every lookup answers the same node from either of them, a
// shard's lookup answers the node that hosts it, and a node that stops is
// listed Unavailable and no longer answered.
func TestLookupTwoNodes(t *testing.T) {
	n1 := nodetest.Start(t, func(c *conf.Config) { c.Etcd.LeaseTTL = 2 * time.Second })
	n2 := nodetest.Start(t, func(c *conf.Config) {
		c.NodeID = 2
		c.Etcd.Endpoints = []string{n1.Cfg.Etcd.Embedded.ClientListen}
		c.Etcd.LeaseTTL = 2 * time.Second
	})
	ctx := ctxT(t)
	addrs := map[uint32]string{1: n1.Addr, 2: n2.Addr}
	nodes := map[uint32]*nodetest.Node{1: n1, 2: n2}

	// Each node learns of the other through its membership watch.
	for _, n := range nodes {
		require.EventuallyWithT(t, func(c *assert.CollectT) {
			dc, err := n.API.DescribeCluster(ctx, &emptypb.Empty{})
			if !assert.NoError(c, err) || !assert.Len(c, dc.GetServerNodesStatus(), 2) {
				return
			}
			for i, st := range dc.GetServerNodesStatus() {
				assert.Equal(c, uint32(i+1), st.GetNode().GetId())
				assert.Equal(c, hstreampb.NodeState_Running, st.GetState())
			}
			assert.Len(c, dc.GetServerNodes(), 2)
		}, 10*time.Second, 50*time.Millisecond)
	}

	shards := createStream(t, n1.API, "orders", 8)
	hosts := map[uint32]int{}
	for _, sh := range shards {
		id := sh.GetShardId()
		var leader uint32
		for nid, n := range nodes {
			resp, err := n.API.LookupShard(ctx, &hstreampb.LookupShardRequest{ShardId: id})
			require.NoError(t, err, "LookupShard %d on node %d", id, nid)
			if leader == 0 {
				leader = resp.GetServerNode().GetId()
			}
			requireNode(t, resp.GetServerNode(), leader, addrs[leader])
		}
		_, err := nodes[leader].Server.Node().LocalShard(id)
		require.NoError(t, err, "shard %d is looked up on node %d, which does not host it", id, leader)
		hosts[leader]++
	}
	require.Len(t, hosts, 2, "8 shards of RF 1 all placed on one node of two: %v", hosts)

	// Keys spread over both nodes, and both nodes agree on each.
	picked := map[uint32]int{}
	for i := range 64 {
		key := fmt.Sprintf("key-%d", i)
		sn1, err := n1.API.LookupKey(ctx, &hstreampb.LookupKeyRequest{PartitionKey: key})
		require.NoError(t, err)
		sn2, err := n2.API.LookupKey(ctx, &hstreampb.LookupKeyRequest{PartitionKey: key})
		require.NoError(t, err)
		require.Equal(t, sn1.GetId(), sn2.GetId(), "nodes disagree on key %q", key)
		requireNode(t, sn1, sn1.GetId(), addrs[sn1.GetId()])
		picked[sn1.GetId()]++
	}
	require.Len(t, picked, 2, "64 keys all on one node of two: %v", picked)

	// Node 2 stops: node 1 lists it Unavailable once its lease expires, and
	// answers only itself.
	n2.Close()
	require.EventuallyWithT(t, func(c *assert.CollectT) {
		dc, err := n1.API.DescribeCluster(ctx, &emptypb.Empty{})
		if !assert.NoError(c, err) || !assert.Len(c, dc.GetServerNodesStatus(), 2) || !assert.Len(c, dc.GetServerNodes(), 1) {
			return
		}
		assert.Equal(c, uint32(1), dc.GetServerNodes()[0].GetId())
		assert.Equal(c, hstreampb.NodeState_Running, dc.GetServerNodesStatus()[0].GetState())
		assert.Equal(c, hstreampb.NodeState_Unavailable, dc.GetServerNodesStatus()[1].GetState())
	}, 15*time.Second, 100*time.Millisecond)
	for i := range 16 {
		sn, err := n1.API.LookupKey(ctx, &hstreampb.LookupKeyRequest{PartitionKey: fmt.Sprintf("key-%d", i)})
		require.NoError(t, err)
		requireNode(t, sn, 1, n1.Addr)
	}
}
