package api_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"

	"github.com/weir-log/weir/api/hstreampb"
	"github.com/weir-log/weir/api/wire"
	"github.com/weir-log/weir/conf"
	"github.com/weir-log/weir/internal/nodetest"
)

// readShardAll reads a shard from EARLIEST through LATEST.
func readShardAll(t *testing.T, api hstreampb.HStreamApiClient, stream string, shard uint64) []gotRecord {
	t.Helper()
	rs, err := api.ReadShardStream(ctxT(t), &hstreampb.ReadShardStreamRequest{
		StreamName: stream, ShardId: shard, From: earliestShard(), Until: latestShard()})
	require.NoError(t, err)
	return recvAll(t, rs.Recv)
}

func idsOf(recs []gotRecord) []string {
	out := make([]string, len(recs))
	for i, r := range recs {
		out[i] = wire.FormatRecordID(r.id)
	}
	return out
}

func formatIDs(ids []*hstreampb.RecordId) []string {
	out := make([]string, len(ids))
	for i, id := range ids {
		out[i] = wire.FormatRecordID(id)
	}
	return out
}

func TestTrimAndTail(t *testing.T) {
	node := nodetest.Start(t)
	api := node.API
	shards := createStream(t, api, "trims", 2)
	a, b := shards[0].GetShardId(), shards[1].GetShardId()
	other := createStream(t, api, "elsewhere", 1)[0].GetShardId()

	tail := func(shard uint64) *hstreampb.RecordId {
		t.Helper()
		resp, err := api.GetTailRecordId(ctxT(t), &hstreampb.GetTailRecordIdRequest{StreamName: "trims", ShardId: shard})
		require.NoError(t, err)
		return resp.GetTailRecordId()
	}
	require.True(t, proto.Equal(&hstreampb.RecordId{ShardId: a}, tail(a)), "an empty shard's tail is {shard, 0, 0}")

	idsA := appendN(t, api, "trims", a, "a", 5)
	var idsB []*hstreampb.RecordId
	for range 3 {
		idsB = append(idsB, appendBatch(t, api, "trims", b, hstreampb.CompressionType_Gzip,
			rec("x", []byte("1")), rec("y", []byte("2")), rec("z", []byte("3")))...)
	}
	require.True(t, proto.Equal(idsA[4], tail(a)))
	require.True(t, proto.Equal(idsB[8], tail(b)), "tail is {shard, last batch, batchSize-1}")

	t.Run("TrimShards", func(t *testing.T) {
		resp, err := api.TrimShards(ctxT(t), &hstreampb.TrimShardsRequest{StreamName: "trims", RecordIds: []string{
			wire.FormatRecordID(idsA[3]), wire.FormatRecordID(idsA[2]), wire.FormatRecordID(&hstreampb.RecordId{ShardId: b}),
		}})
		require.NoError(t, err)
		require.Equal(t, map[uint64]string{a: wire.FormatRecordID(idsA[2])}, resp.GetTrimPoints(),
			"the minimum per shard; batchId 0 ignored")
		require.Equal(t, formatIDs(idsA[2:]), idsOf(readShardAll(t, api, "trims", a)), "trimmed before the id's batch")
		require.Equal(t, formatIDs(idsB), idsOf(readShardAll(t, api, "trims", b)), "shard b untouched")

		// An id in the middle of a batch keeps that whole batch.
		resp, err = api.TrimShards(ctxT(t), &hstreampb.TrimShardsRequest{StreamName: "trims", RecordIds: []string{wire.FormatRecordID(idsB[4])}})
		require.NoError(t, err)
		require.Equal(t, map[uint64]string{b: wire.FormatRecordID(idsB[4])}, resp.GetTrimPoints())
		require.Equal(t, formatIDs(idsB[3:]), idsOf(readShardAll(t, api, "trims", b)))

		_, err = api.TrimShards(ctxT(t), &hstreampb.TrimShardsRequest{StreamName: "trims", RecordIds: []string{
			wire.FormatRecordID(&hstreampb.RecordId{ShardId: other, BatchId: 1})}})
		requireStatus(t, err, codes.NotFound, hstreampb.ErrorCode_StreamShardNotExists, `"trims"`)
		beyond := &hstreampb.RecordId{ShardId: a, BatchId: idsA[4].GetBatchId() + 10}
		_, err = api.TrimShards(ctxT(t), &hstreampb.TrimShardsRequest{StreamName: "trims", RecordIds: []string{wire.FormatRecordID(beyond)}})
		requireStatus(t, err, codes.InvalidArgument, hstreampb.ErrorCode_StreamInvalidRecordId, wire.FormatRecordID(beyond))
		_, err = api.TrimShards(ctxT(t), &hstreampb.TrimShardsRequest{StreamName: "trims", RecordIds: []string{
			wire.FormatRecordID(idsA[4]), "nonsense"}})
		requireStatus(t, err, codes.InvalidArgument, hstreampb.ErrorCode_StreamInvalidRecordId, `"nonsense"`)
		require.Equal(t, formatIDs(idsA[2:]), idsOf(readShardAll(t, api, "trims", a)), "a refused request trims nothing")
	})

	t.Run("TrimShard", func(t *testing.T) {
		trimShard := func(off *hstreampb.ShardOffset) error {
			_, err := api.TrimShard(ctxT(t), &hstreampb.TrimShardRequest{StreamName: "trims", ShardId: a, TrimPoint: off})
			return err
		}
		require.NoError(t, trimShard(earliestShard()))
		require.Equal(t, formatIDs(idsA[2:]), idsOf(readShardAll(t, api, "trims", a)), "EARLIEST trims nothing")
		require.NoError(t, trimShard(recordOffset(idsA[3])))
		require.Equal(t, formatIDs(idsA[4:]), idsOf(readShardAll(t, api, "trims", a)), "a record id trims through its batch")
		requireStatus(t, trimShard(recordOffset(idsB[8])), codes.InvalidArgument, hstreampb.ErrorCode_ShardReaderConflictOffset)

		// A timestamp trims what was appended before it.
		later := appendN(t, api, "trims", a, "later", 3)
		recs := readShardAll(t, api, "trims", a)
		require.Len(t, recs, 4)
		cut := recs[2].publish
		require.NoError(t, trimShard(&hstreampb.ShardOffset{Offset: &hstreampb.ShardOffset_TimestampOffset{
			TimestampOffset: &hstreampb.TimestampOffset{TimestampInMs: cut.UnixMilli()}}}))
		kept := readShardAll(t, api, "trims", a)
		require.Contains(t, idsOf(kept), wire.FormatRecordID(later[1]))
		for _, r := range recs {
			if r.publish.Before(cut) {
				require.NotContains(t, idsOf(kept), wire.FormatRecordID(r.id))
			}
		}
		for _, r := range kept {
			require.False(t, r.publish.Before(cut))
		}

		require.NoError(t, trimShard(latestShard()))
		require.Empty(t, readShardAll(t, api, "trims", a), "LATEST trims everything")
		next := appendN(t, api, "trims", a, "next", 1)
		require.Equal(t, formatIDs(next), idsOf(readShardAll(t, api, "trims", a)))
	})

	t.Run("TrimStream", func(t *testing.T) {
		_, err := api.TrimStream(ctxT(t), &hstreampb.TrimStreamRequest{StreamName: "trims",
			TrimPoint: &hstreampb.StreamOffset{Offset: &hstreampb.StreamOffset_SpecialOffset{SpecialOffset: hstreampb.SpecialOffset_EARLIEST}}})
		require.NoError(t, err)
		require.NotEmpty(t, readShardAll(t, api, "trims", b))
		_, err = api.TrimStream(ctxT(t), &hstreampb.TrimStreamRequest{StreamName: "trims", TrimPoint: latest()})
		require.NoError(t, err)
		require.Empty(t, readShardAll(t, api, "trims", a))
		require.Empty(t, readShardAll(t, api, "trims", b))
		_, err = api.TrimStream(ctxT(t), &hstreampb.TrimStreamRequest{StreamName: "nope", TrimPoint: latest()})
		requireStatus(t, err, codes.NotFound, hstreampb.ErrorCode_StreamNotFound, `"nope"`)
	})
}

// TestRetention: records older than the stream's backlog duration are
// trimmed by the retention loop; younger ones stay.
func TestRetention(t *testing.T) {
	node := nodetest.Start(t, func(c *conf.Config) { c.Store.RetentionCheckInterval = 200 * time.Millisecond })
	api := node.API
	_, err := api.CreateStream(ctxT(t), &hstreampb.Stream{StreamName: "fleeting", ShardCount: 1, BacklogDuration: 2})
	require.NoError(t, err)
	shard := listShards(t, api, "fleeting")[0].GetShardId()

	old := appendN(t, api, "fleeting", shard, "old", 3)
	oldAt := readShardAll(t, api, "fleeting", shard)[0].publish
	// Space the two generations of records; this waits for time to pass,
	// it does not wait for a result.
	<-time.After(1200 * time.Millisecond)
	young := appendN(t, api, "fleeting", shard, "young", 2)

	var got []string
	require.Eventually(t, func() bool {
		got = idsOf(readShardAll(t, api, "fleeting", shard))
		return len(got) == len(young)
	}, 6*time.Second, 50*time.Millisecond, "old records are never trimmed")
	require.GreaterOrEqual(t, time.Since(oldAt), 2*time.Second, "records were trimmed before their backlog duration")
	require.Equal(t, formatIDs(young), got, "records appended after are kept")
	for _, id := range old {
		require.NotContains(t, got, wire.FormatRecordID(id))
	}
}

func listShards(t *testing.T, api hstreampb.HStreamApiClient, stream string) []*hstreampb.Shard {
	t.Helper()
	resp, err := api.ListShards(ctxT(t), &hstreampb.ListShardsRequest{StreamName: stream})
	require.NoError(t, err)
	return resp.GetShards()
}
