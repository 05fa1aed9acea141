package api_test

import (
	"fmt"
	"net"
	"strconv"
	"testing"

	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/emptypb"

	"github.com/weir-log/weir/api/hstreampb"
	"github.com/weir-log/weir/internal/nodetest"
)

// TestStreamsAndCluster covers the metadata RPCs on one node: stream
// listings, shard ranges, lookups, DescribeCluster and the RPCs weir does
// not offer.
func TestStreamsAndCluster(t *testing.T) {
	node := nodetest.Start(t)
	api := node.API

	t.Run("ListStreams", func(t *testing.T) {
		resp, err := api.ListStreams(ctxT(t), &hstreampb.ListStreamsRequest{})
		require.NoError(t, err)
		require.Empty(t, resp.GetStreams(), "a fresh node has no streams")

		created, err := api.CreateStream(ctxT(t), &hstreampb.Stream{StreamName: "list-b", ShardCount: 2, BacklogDuration: 60})
		require.NoError(t, err)
		require.Equal(t, "list-b", created.GetStreamName())
		require.Equal(t, uint32(1), created.GetReplicationFactor(), "rf 0 takes the default")
		require.Equal(t, uint32(60), created.GetBacklogDuration())
		require.Equal(t, uint32(2), created.GetShardCount())
		require.NotZero(t, created.GetCreationTime().AsTime().Unix())
		createStream(t, api, "list-a", 1)
		createStream(t, api, "other", 1)

		resp, err = api.ListStreams(ctxT(t), &hstreampb.ListStreamsRequest{})
		require.NoError(t, err)
		require.Equal(t, []string{"list-a", "list-b", "other"}, streamNames(resp))
		require.True(t, proto.Equal(created, resp.GetStreams()[1]), "listing %v, created %v", resp.GetStreams()[1], created)

		resp, err = api.ListStreamsWithPrefix(ctxT(t), &hstreampb.ListStreamsWithPrefixRequest{Prefix: "list-"})
		require.NoError(t, err)
		require.Equal(t, []string{"list-a", "list-b"}, streamNames(resp))

		got, err := api.GetStream(ctxT(t), &hstreampb.GetStreamRequest{Name: "list-b"})
		require.NoError(t, err)
		require.True(t, proto.Equal(created, got.GetStream()))

		_, err = api.DeleteStream(ctxT(t), &hstreampb.DeleteStreamRequest{StreamName: "list-a"})
		require.NoError(t, err)
		resp, err = api.ListStreams(ctxT(t), &hstreampb.ListStreamsRequest{})
		require.NoError(t, err)
		require.Equal(t, []string{"list-b", "other"}, streamNames(resp), "a deleted stream is gone at once")
	})

	t.Run("ListShards ranges", func(t *testing.T) {
		// HStreamDB's devideKeySpace: cnt = (2^128-1) div n; shard i is
		// [i*cnt, i*cnt+cnt-1], the last ends at 2^128-1.
		want := map[uint32][][2]string{
			1: {{"0", "340282366920938463463374607431768211455"}},
			2: {{"0", "170141183460469231731687303715884105726"},
				{"170141183460469231731687303715884105727", "340282366920938463463374607431768211455"}},
			3: {{"0", "113427455640312821154458202477256070484"},
				{"113427455640312821154458202477256070485", "226854911280625642308916404954512140969"},
				{"226854911280625642308916404954512140970", "340282366920938463463374607431768211455"}},
			4: {{"0", "85070591730234615865843651857942052862"},
				{"85070591730234615865843651857942052863", "170141183460469231731687303715884105725"},
				{"170141183460469231731687303715884105726", "255211775190703847597530955573826158588"},
				{"255211775190703847597530955573826158589", "340282366920938463463374607431768211455"}},
		}
		ids := make(map[uint64]bool)
		for n := uint32(1); n <= 4; n++ {
			name := fmt.Sprintf("ranges-%d", n)
			shards := createStream(t, api, name, n)
			for i, s := range shards {
				require.Equal(t, name, s.GetStreamName())
				require.Equal(t, want[n][i][0], s.GetStartHashRangeKey(), "start of shard %d of %d", i, n)
				require.Equal(t, want[n][i][1], s.GetEndHashRangeKey(), "end of shard %d of %d", i, n)
				require.True(t, s.GetIsActive())
				require.Equal(t, uint64(n), s.GetEpoch(), "epoch starts at shardCount")
				require.False(t, ids[s.GetShardId()], "shard id %d used twice", s.GetShardId())
				ids[s.GetShardId()] = true
			}
		}
	})

	t.Run("DescribeCluster", func(t *testing.T) {
		resp, err := api.DescribeCluster(ctxT(t), &emptypb.Empty{})
		require.NoError(t, err)
		require.Equal(t, "0.1.0", resp.GetProtocolVersion())
		host, portText, err := net.SplitHostPort(node.Addr)
		require.NoError(t, err)
		port, err := strconv.ParseUint(portText, 10, 32)
		require.NoError(t, err)
		require.Len(t, resp.GetServerNodes(), 1)
		sn := resp.GetServerNodes()[0]
		require.Equal(t, uint32(node.Cfg.NodeID), sn.GetId())
		require.Equal(t, host, sn.GetHost())
		require.Equal(t, uint32(port), sn.GetPort())
		require.NotNil(t, sn.GetVersion())
		require.Len(t, resp.GetServerNodesStatus(), 1)
		require.Equal(t, hstreampb.NodeState_Running, resp.GetServerNodesStatus()[0].GetState())
		require.True(t, proto.Equal(sn, resp.GetServerNodesStatus()[0].GetNode()))
		require.Less(t, resp.GetClusterUpTime(), uint64(600))
	})

	t.Run("lookups", func(t *testing.T) {
		shards := createStream(t, api, "lookups", 2)
		id := shards[1].GetShardId()
		self := func(sn *hstreampb.ServerNode) {
			t.Helper()
			require.Equal(t, node.Addr, net.JoinHostPort(sn.GetHost(), strconv.Itoa(int(sn.GetPort()))))
		}
		ls, err := api.LookupShard(ctxT(t), &hstreampb.LookupShardRequest{ShardId: id})
		require.NoError(t, err)
		require.Equal(t, id, ls.GetShardId())
		self(ls.GetServerNode())
		sn, err := api.LookupResource(ctxT(t), &hstreampb.LookupResourceRequest{ResType: hstreampb.ResourceType_ResShard, ResId: strconv.FormatUint(id, 10)})
		require.NoError(t, err)
		self(sn)
		_, err = api.LookupResource(ctxT(t), &hstreampb.LookupResourceRequest{ResType: hstreampb.ResourceType_ResShard, ResId: "999999"})
		requireStatus(t, err, codes.NotFound, hstreampb.ErrorCode_StreamShardNotExists, "999999")
		sn, err = api.LookupKey(ctxT(t), &hstreampb.LookupKeyRequest{PartitionKey: "device-1"})
		require.NoError(t, err)
		self(sn)
		lr, err := api.LookupShardReader(ctxT(t), &hstreampb.LookupShardReaderRequest{ReaderId: "read_stream_reader_not_created"})
		require.NoError(t, err)
		require.Equal(t, "read_stream_reader_not_created", lr.GetReaderId())
		self(lr.GetServerNode())
		lsub, err := api.LookupSubscription(ctxT(t), &hstreampb.LookupSubscriptionRequest{SubscriptionId: "sub"})
		require.NoError(t, err)
		self(lsub.GetServerNode())
	})

	t.Run("Unimplemented", func(t *testing.T) {
		_, err := api.ExecuteQuery(ctxT(t), &hstreampb.CommandQuery{StmtText: "SELECT * FROM s EMIT CHANGES;"})
		requireStatus(t, err, codes.Unimplemented, hstreampb.ErrorCode_InternalError, "weir does not offer SQL queries", "ExecuteQuery")
		_, err = api.CreateConnector(ctxT(t), &hstreampb.CreateConnectorRequest{Name: "c"})
		requireStatus(t, err, codes.Unimplemented, hstreampb.ErrorCode_InternalError, "weir", "CreateConnector")
		_, err = api.GetStats(ctxT(t), &hstreampb.GetStatsRequest{})
		requireStatus(t, err, codes.Unimplemented, hstreampb.ErrorCode_InternalError, "weir", "GetStats")
		byKey, err := api.ReadStreamByKey(ctxT(t))
		require.NoError(t, err)
		_, err = byKey.Recv()
		requireStatus(t, err, codes.Unimplemented, hstreampb.ErrorCode_InternalError, "weir does not offer", "ReadStreamByKey")
	})
}

func streamNames(resp *hstreampb.ListStreamsResponse) []string {
	var names []string
	for _, s := range resp.GetStreams() {
		names = append(names, s.GetStreamName())
	}
	return names
}

// TestRestart checks that streams, shards, data and shard readers'
// positions survive a clean restart.
func TestRestart(t *testing.T) {
	node := nodetest.Start(t)
	shards := createStream(t, node.API, "durable", 3)
	id := shards[0].GetShardId()
	ids := appendN(t, node.API, "durable", id, "before", 10)
	_, err := node.API.CreateShardReader(ctxT(t), &hstreampb.CreateShardReaderRequest{
		StreamName: "durable", ShardId: id, ShardOffset: earliestShard(), ReaderId: "resumer", Timeout: 50})
	require.NoError(t, err)
	resp, err := node.API.ReadShard(ctxT(t), &hstreampb.ReadShardRequest{ReaderId: "resumer", MaxRecords: 4})
	require.NoError(t, err)
	require.Len(t, resp.GetReceivedRecords(), 4, "maxRecords counts batches")
	var first []gotRecord
	for _, rr := range resp.GetReceivedRecords() {
		first = append(first, unpack(t, rr)...)
	}
	for i := range first {
		require.True(t, proto.Equal(ids[i], first[i].id))
	}
	streams, err := node.API.ListStreams(ctxT(t), &hstreampb.ListStreamsRequest{})
	require.NoError(t, err)

	node.Restart(t)
	api := node.API

	after, err := api.ListStreams(ctxT(t), &hstreampb.ListStreamsRequest{})
	require.NoError(t, err)
	require.Len(t, after.GetStreams(), 1)
	require.True(t, proto.Equal(streams, after), "streams before %v, after %v", streams, after)
	again, err := api.ListShards(ctxT(t), &hstreampb.ListShardsRequest{StreamName: "durable"})
	require.NoError(t, err)
	require.Len(t, again.GetShards(), len(shards))
	for i := range shards {
		require.True(t, proto.Equal(shards[i], again.GetShards()[i]))
	}
	tail, err := api.GetTailRecordId(ctxT(t), &hstreampb.GetTailRecordIdRequest{StreamName: "durable", ShardId: id})
	require.NoError(t, err)
	require.True(t, proto.Equal(ids[9], tail.GetTailRecordId()))

	readers, err := api.ListShardReaders(ctxT(t), &hstreampb.ListShardReadersRequest{})
	require.NoError(t, err)
	require.Equal(t, []string{"resumer"}, readers.GetReaderId())
	more := appendN(t, api, "durable", id, "after", 2)
	rest := readShard(t, api, "resumer", 10-len(first)+2)
	var want []*hstreampb.RecordId
	want = append(want, ids[len(first):]...)
	want = append(want, more...)
	require.Len(t, rest, len(want))
	for i := range want {
		require.True(t, proto.Equal(want[i], rest[i].id), "record %d: want %v, got %v", i, want[i], rest[i].id)
	}
}
