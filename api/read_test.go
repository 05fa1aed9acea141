package api_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/weir-log/weir/api/hstreampb"
	"github.com/weir-log/weir/api/wire"
	"github.com/weir-log/weir/conf"
	"github.com/weir-log/weir/internal/nodetest"
)

func TestReads(t *testing.T) {
	node := nodetest.Start(t)
	api := node.API

	t.Run("ReadSingleShardStream", func(t *testing.T) {
		createStream(t, api, "two-shards", 2)
		rs, err := api.ReadSingleShardStream(ctxT(t), &hstreampb.ReadSingleShardStreamRequest{StreamName: "two-shards", Until: latestShard()})
		require.NoError(t, err)
		_, err = rs.Recv()
		requireStatus(t, err, codes.InvalidArgument, hstreampb.ErrorCode_ShardReaderTooManyShards, `"two-shards"`, "2 shards")

		shard := createStream(t, api, "one-shard", 1)[0].GetShardId()
		ids := appendN(t, api, "one-shard", shard, "r", 5)
		// From the second record's batch through the fourth's, inclusive.
		rs, err = api.ReadSingleShardStream(ctxT(t), &hstreampb.ReadSingleShardStreamRequest{
			StreamName: "one-shard", From: recordOffset(ids[1]), Until: recordOffset(ids[3])})
		require.NoError(t, err)
		var got []gotRecord
		for {
			resp, err := rs.Recv()
			if errors.Is(err, io.EOF) {
				break
			}
			require.NoError(t, err)
			for _, rr := range resp.GetReceivedRecords() {
				got = append(got, unpack(t, rr)...)
			}
		}
		require.Equal(t, formatIDs(ids[1:4]), idsOf(got))
	})

	t.Run("ReadStream ends at until on an empty stream", func(t *testing.T) {
		createStream(t, api, "empty", 3)
		require.Empty(t, readStream(t, api, &hstreampb.ReadStreamRequest{StreamName: "empty", Until: latest()}))
	})

	t.Run("ReadStream follows until the budget is spent", func(t *testing.T) {
		shards := createStream(t, api, "followed", 2)
		sent := appendN(t, api, "followed", shards[0].GetShardId(), "before", 2)
		rs, err := api.ReadStream(ctxT(t), &hstreampb.ReadStreamRequest{StreamName: "followed", MaxReadBatches: 5})
		require.NoError(t, err)
		var got []*hstreampb.ReceivedRecord
		done := make(chan error, 1)
		go func() {
			for {
				resp, err := rs.Recv()
				if err != nil {
					done <- err
					return
				}
				got = append(got, resp.GetReceivedRecords()...)
			}
		}()
		// Most of these arrive while the read is following the shards.
		for i := range 6 {
			sent = append(sent, appendN(t, api, "followed", shards[i%2].GetShardId(), "after", 1)...)
		}
		select {
		case err := <-done:
			require.ErrorIs(t, err, io.EOF, "the stream ends with OK once 5 batches are sent")
		case <-time.After(20 * time.Second):
			t.Fatal("ReadStream did not end after its budget of 5 batches")
		}
		require.Len(t, got, 5)
		last := make(map[uint64]uint64)
		for _, rr := range got {
			for _, g := range unpack(t, rr) {
				require.Contains(t, formatIDs(sent), wire.FormatRecordID(g.id))
				require.Greater(t, g.id.GetBatchId(), last[g.id.GetShardId()], "each shard in order, once")
				last[g.id.GetShardId()] = g.id.GetBatchId()
			}
		}
	})

	t.Run("ReadStream follows until cancelled", func(t *testing.T) {
		shard := createStream(t, api, "tailed", 1)[0].GetShardId()
		ctx, cancel := context.WithCancel(ctxT(t))
		rs, err := api.ReadStream(ctx, &hstreampb.ReadStreamRequest{StreamName: "tailed"})
		require.NoError(t, err)
		ids := appendN(t, api, "tailed", shard, "t", 3)
		var got []gotRecord
		for len(got) < 3 {
			resp, err := rs.Recv()
			require.NoError(t, err)
			for _, rr := range resp.GetReceivedRecords() {
				got = append(got, unpack(t, rr)...)
			}
		}
		require.Equal(t, formatIDs(ids), idsOf(got))
		cancel()
		_, err = rs.Recv()
		require.Equal(t, codes.Canceled, status.Code(err))
	})

	t.Run("ReadStream ends when the stream is deleted", func(t *testing.T) {
		shard := createStream(t, api, "doomed", 1)[0].GetShardId()
		rs, err := api.ReadStream(ctxT(t), &hstreampb.ReadStreamRequest{StreamName: "doomed"})
		require.NoError(t, err)
		appendN(t, api, "doomed", shard, "d", 1)
		resp, err := rs.Recv()
		require.NoError(t, err)
		require.Len(t, resp.GetReceivedRecords(), 1)
		_, err = api.DeleteStream(ctxT(t), &hstreampb.DeleteStreamRequest{StreamName: "doomed"})
		require.NoError(t, err)
		_, err = rs.Recv()
		requireStatus(t, err, codes.NotFound, hstreampb.ErrorCode_StreamShardNotExists, "deleted")
	})

	t.Run("ReadShard waits for data up to the reader's timeout", func(t *testing.T) {
		shard := createStream(t, api, "waited", 1)[0].GetShardId()
		appendN(t, api, "waited", shard, "old", 2)
		for _, r := range []struct {
			id      string
			timeout uint32
		}{{"patient", 20_000}, {"hasty", 50}} {
			_, err := api.CreateShardReader(ctxT(t), &hstreampb.CreateShardReaderRequest{
				StreamName: "waited", ShardId: shard, ShardOffset: latestShard(), ReaderId: r.id, Timeout: r.timeout})
			require.NoError(t, err)
		}
		resp, err := api.ReadShard(ctxT(t), &hstreampb.ReadShardRequest{ReaderId: "hasty"})
		require.NoError(t, err)
		require.Empty(t, resp.GetReceivedRecords(), "nothing after LATEST within 50 ms")

		type result struct {
			resp *hstreampb.ReadShardResponse
			err  error
		}
		res := make(chan result, 1)
		go func() {
			resp, err := api.ReadShard(ctxT(t), &hstreampb.ReadShardRequest{ReaderId: "patient", MaxRecords: 10})
			res <- result{resp, err}
		}()
		// The append lands while the read waits (or, on a slow machine,
		// just before it starts); either way the read returns it.
		id := appendN(t, api, "waited", shard, "new", 1)[0]
		var r result
		select {
		case r = <-res:
		case <-time.After(15 * time.Second):
			t.Fatal("ReadShard did not return after a record arrived")
		}
		require.NoError(t, r.err)
		require.Len(t, r.resp.GetReceivedRecords(), 1)
		require.Equal(t, []string{wire.FormatRecordID(id)}, idsOf(unpack(t, r.resp.GetReceivedRecords()[0])))

		// Both readers' positions moved past what they saw.
		resp, err = api.ReadShard(ctxT(t), &hstreampb.ReadShardRequest{ReaderId: "hasty", MaxRecords: 10})
		require.NoError(t, err)
		require.Len(t, resp.GetReceivedRecords(), 1, "hasty reads the new record once")
		resp, err = api.ReadShard(ctxT(t), &hstreampb.ReadShardRequest{ReaderId: "hasty", MaxRecords: 10})
		require.NoError(t, err)
		require.Empty(t, resp.GetReceivedRecords())

		list, err := api.ListShardReaders(ctxT(t), &hstreampb.ListShardReadersRequest{})
		require.NoError(t, err)
		require.Subset(t, list.GetReaderId(), []string{"hasty", "patient"})
		_, err = api.DeleteShardReader(ctxT(t), &hstreampb.DeleteShardReaderRequest{ReaderId: "hasty"})
		require.NoError(t, err)
		list, err = api.ListShardReaders(ctxT(t), &hstreampb.ListShardReadersRequest{})
		require.NoError(t, err)
		require.NotContains(t, list.GetReaderId(), "hasty")
	})
}

// A read that follows the log ends with Unavailable when the node shuts
// down, rather than holding the shutdown for its whole grace period.
func TestFollowingReadEndsAtShutdown(t *testing.T) {
	n := nodetest.Start(t)
	shards := createStream(t, n.API, "follow-shutdown", 1)
	appendN(t, n.API, "follow-shutdown", shards[0].ShardId, "r", 3)
	rs, err := n.API.ReadStream(ctxT(t), &hstreampb.ReadStreamRequest{
		ReaderId: "follower", StreamName: "follow-shutdown",
		From: &hstreampb.StreamOffset{Offset: &hstreampb.StreamOffset_SpecialOffset{SpecialOffset: hstreampb.SpecialOffset_EARLIEST}},
	})
	require.NoError(t, err)
	first, err := rs.Recv()
	require.NoError(t, err)
	require.NotEmpty(t, first.ReceivedRecords)

	start := time.Now()
	n.Server.Close()
	require.Less(t, time.Since(start), 4*time.Second, "shutdown waited for the following read")
	_, err = rs.Recv()
	code, _, _ := statusOf(t, err)
	require.Equal(t, codes.Unavailable, code, "the following read should end with Unavailable, got %v", err)
}

// A response never grows past the read budget plus one batch: a ~1 MiB batch
// followed by a ~4 MiB one (the configured maximum) used to be sent in one
// response larger than the server's send limit, failing every retry.
func TestLargeBatchesAreReadOnePerResponse(t *testing.T) {
	n := nodetest.Start(t, func(c *conf.Config) { c.Store.MaxBatchSize = 4 * conf.MiB })
	shards := createStream(t, n.API, "big", 1)
	payload := func(size int) []byte { return bytes.Repeat([]byte{'p'}, size) }
	appendBatch(t, n.API, "big", shards[0].ShardId, hstreampb.CompressionType_None, rec("a", payload(1000_000)))
	many := make([]*hstreampb.HStreamRecord, 400)
	for i := range many {
		many[i] = rec("b", payload(10_000))
	}
	appendBatch(t, n.API, "big", shards[0].ShardId, hstreampb.CompressionType_None, many...)

	got := readStream(t, n.API, &hstreampb.ReadStreamRequest{ReaderId: "big-reader", StreamName: "big", Until: latest()})
	require.Equal(t, 401, len(got))

	_, err := n.API.CreateShardReader(ctxT(t), &hstreampb.CreateShardReaderRequest{StreamName: "big", ShardId: shards[0].ShardId,
		ReaderId: "big-shard-reader", ShardOffset: earliestShard()})
	require.NoError(t, err)
	first, err := n.API.ReadShard(ctxT(t), &hstreampb.ReadShardRequest{ReaderId: "big-shard-reader", MaxRecords: 10})
	require.NoError(t, err)
	require.Equal(t, 1, len(first.ReceivedRecords), "the second batch would overflow the response")
	second, err := n.API.ReadShard(ctxT(t), &hstreampb.ReadShardRequest{ReaderId: "big-shard-reader", MaxRecords: 10})
	require.NoError(t, err)
	require.Equal(t, 1, len(second.ReceivedRecords))
	require.EqualValues(t, 400, second.ReceivedRecords[0].GetRecord().GetBatchSize())
}
