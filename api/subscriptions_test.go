package api_test

import (
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"

	"github.com/weir-log/weir/api/hstreampb"
	"github.com/weir-log/weir/api/wire"
	"github.com/weir-log/weir/conf"
	"github.com/weir-log/weir/internal/nodetest"
)

var (
	earliest = hstreampb.SpecialOffset_EARLIEST
	latestSO = hstreampb.SpecialOffset_LATEST
)

// appendKeyed appends, for each of keys, n records with payloads
// "<key>/<seq>" to the key's shard, each key in order (one goroutine per
// key), batches of up to batch records. It returns every id.
func appendKeyed(t *testing.T, api hstreampb.HStreamApiClient, stream string, shards []*hstreampb.Shard, keys []string, n, batch int) map[string]bool {
	t.Helper()
	ids := make([][]*hstreampb.RecordId, len(keys))
	parallel(len(keys), func(k int) {
		key := keys[k]
		shard := shardFor(t, shards, key)
		for seq := 0; seq < n; seq += batch {
			var recs []*hstreampb.HStreamRecord
			for i := seq; i < min(seq+batch, n); i++ {
				recs = append(recs, rec(key, keyedPayload(key, i)))
			}
			ids[k] = append(ids[k], appendBatch(t, api, stream, shard, hstreampb.CompressionType_None, recs...)...)
		}
	})
	all := make(map[string]bool)
	for _, ks := range ids {
		for _, id := range ks {
			all[wire.FormatRecordID(id)] = true
		}
	}
	require.Len(t, all, len(keys)*n)
	return all
}

func keysN(n int) []string {
	keys := make([]string, n)
	for i := range keys {
		keys[i] = fmt.Sprintf("device-%d", i)
	}
	return keys
}

func TestThreeConsumersShareSixShards(t *testing.T) {
	n := nodetest.Start(t)
	shards := createStream(t, n.API, "sensors", 6)
	createSub(t, n.API, "group", "sensors", 60, 10000, earliest)

	fs := []*fetcher{
		startFetch(t, n.API, "group", "c1"),
		startFetch(t, n.API, "group", "c2"),
		startFetch(t, n.API, "group", "c3"),
	}
	waitConsumers(t, n.API, "group", 3)
	want := appendKeyed(t, n.API, "sensors", shards, keysN(24), 40, 3)
	waitAll(t, want, 30*time.Second, fs...)

	owner := make(map[uint64]string) // shard → the consumer that got it
	for _, f := range fs {
		requireKeyOrder(t, f)
		mine := make(map[uint64]bool)
		for _, r := range f.records() {
			mine[r.id.GetShardId()] = true
			if prev, ok := owner[r.id.GetShardId()]; ok {
				require.Equal(t, prev, f.name, "shard %d went to two consumers", r.id.GetShardId())
			}
			owner[r.id.GetShardId()] = f.name
		}
		assert.Len(t, mine, 2, "consumer %s got shards %v; six shards over three consumers is two each", f.name, mine)
	}
	require.Len(t, owner, 6)

	// Everything was acked: the checkpoint reaches the end of every shard.
	require.Eventually(t, func() bool {
		resp, err := n.API.GetSubscription(ctxT(t), &hstreampb.GetSubscriptionRequest{Id: "group"})
		require.NoError(t, err)
		require.Len(t, resp.GetOffsets(), 6)
		for _, o := range resp.GetOffsets() {
			tail, err := n.API.GetTailRecordId(ctxT(t), &hstreampb.GetTailRecordIdRequest{StreamName: "sensors", ShardId: o.GetShardId()})
			require.NoError(t, err)
			if o.GetBatchId() < tail.GetTailRecordId().GetBatchId() {
				return false
			}
		}
		return true
	}, 10*time.Second, 50*time.Millisecond)
}

func TestConsumerJoiningAndLeavingRebalances(t *testing.T) {
	n := nodetest.Start(t)
	shards := createStream(t, n.API, "s", 4)
	createSub(t, n.API, "g", "s", 60, 10000, earliest)
	a := startFetch(t, n.API, "g", "a")
	waitConsumers(t, n.API, "g", 1)
	first := appendKeyed(t, n.API, "s", shards, keysN(8), 5, 1)
	waitAll(t, first, 10*time.Second, a)

	b := startFetch(t, n.API, "g", "b")
	waitConsumers(t, n.API, "g", 2)
	second := appendKeyed(t, n.API, "s", shards, []string{"x1", "x2", "x3", "x4", "x5", "x6", "x7", "x8"}, 5, 1)
	waitAll(t, second, 10*time.Second, a, b)
	require.NotEmpty(t, b.records(), "the second consumer got no shard")

	a.stop()
	waitConsumers(t, n.API, "g", 1)
	third := appendKeyed(t, n.API, "s", shards, []string{"y1", "y2", "y3", "y4", "y5", "y6", "y7", "y8"}, 5, 1)
	waitAll(t, third, 10*time.Second, b)
	requireKeyOrder(t, a)
	requireKeyOrder(t, b)
}

func TestUnackedRecordsOfALeavingConsumerGoToTheOthers(t *testing.T) {
	const ackTimeout = 2 // seconds
	n := nodetest.Start(t)
	shards := createStream(t, n.API, "s", 2)
	createSub(t, n.API, "g", "s", ackTimeout, 10000, earliest)

	silent := startFetch(t, n.API, "g", "silent", noAck())
	waitConsumers(t, n.API, "g", 1)
	good := startFetch(t, n.API, "g", "good")
	waitConsumers(t, n.API, "g", 2)
	want := appendKeyed(t, n.API, "s", shards, keysN(10), 10, 4)
	waitAll(t, want, 10*time.Second, silent, good)
	require.NotEmpty(t, silent.records(), "the silent consumer got no shard")

	left := time.Now()
	silent.stop()
	waitAll(t, want, time.Duration(ackTimeout)*time.Second+5*time.Second, good)
	t.Logf("the silent consumer's records reached the other %s after it left", time.Since(left).Round(time.Millisecond))
	requireKeyOrder(t, good)
}

func TestAckTimeoutRedeliversOnlyTheUnackedRecords(t *testing.T) {
	n := nodetest.Start(t)
	shards := createStream(t, n.API, "s", 1)
	createSub(t, n.API, "g", "s", 1, 10000, earliest)
	f := startFetch(t, n.API, "g", "c", noAck())
	ids := appendBatch(t, n.API, "s", shards[0].GetShardId(), hstreampb.CompressionType_Gzip,
		rec("k", []byte("r0")), rec("k", []byte("r1")), rec("k", []byte("r2")), rec("k", []byte("r3")))

	require.Eventually(t, func() bool { return len(f.records()) == 4 }, 10*time.Second, 10*time.Millisecond)
	f.sendAck("g", []*hstreampb.RecordId{ids[0], ids[2]})

	// After the ack timeout the batch comes again, holding r1 and r3 only,
	// with their own ids; then again, until they are acked.
	require.Eventually(t, func() bool { return len(f.records()) >= 6 }, 5*time.Second, 10*time.Millisecond)
	again := f.records()[4:6]
	assert.Equal(t, "r1", string(again[0].payload))
	assert.Equal(t, "r3", string(again[1].payload))
	assert.Equal(t, wire.FormatRecordID(ids[1]), wire.FormatRecordID(again[0].id))
	assert.Equal(t, wire.FormatRecordID(ids[3]), wire.FormatRecordID(again[1].id))

	f.sendAck("g", []*hstreampb.RecordId{ids[1], ids[3]})
	require.Eventually(t, func() bool {
		resp, err := n.API.GetSubscription(ctxT(t), &hstreampb.GetSubscriptionRequest{Id: "g"})
		require.NoError(t, err)
		return resp.GetOffsets()[0].GetBatchId() >= ids[0].GetBatchId()
	}, 10*time.Second, 50*time.Millisecond, "the checkpoint passes the batch once all of it is acked")
	count := len(f.records())
	time.Sleep(1500 * time.Millisecond) // past another ack timeout: nothing more comes
	assert.Len(t, f.records(), count)
	assert.NotZero(t, n.Server.Subscriptions().Stats().RedeliveredRecords)
}

func TestMaxUnackedRecordsBoundsWhatConsumersHold(t *testing.T) {
	n := nodetest.Start(t)
	shards := createStream(t, n.API, "s", 4)
	createSub(t, n.API, "g", "s", 60, 100, earliest)
	want := appendKeyed(t, n.API, "s", shards, keysN(16), 50, 5) // 800 records

	held, maxHeld := new(atomic.Int64), new(atomic.Int64)
	fs := []*fetcher{
		startFetch(t, n.API, "g", "c1", countHeld(held, maxHeld), ackEvery(20*time.Millisecond)),
		startFetch(t, n.API, "g", "c2", countHeld(held, maxHeld), ackEvery(20*time.Millisecond)),
		startFetch(t, n.API, "g", "c3", countHeld(held, maxHeld), ackEvery(20*time.Millisecond)),
	}
	waitAll(t, want, 30*time.Second, fs...)
	t.Logf("the consumers held at most %d unacked records together", maxHeld.Load())
	assert.LessOrEqual(t, maxHeld.Load(), int64(100))
	assert.GreaterOrEqual(t, maxHeld.Load(), int64(20), "the window never filled; the test proves nothing")
}

func TestWindowStopsAConsumerThatDoesNotAck(t *testing.T) {
	n := nodetest.Start(t)
	shards := createStream(t, n.API, "s", 1)
	createSub(t, n.API, "g", "s", 60, 10, earliest)
	appendKeyed(t, n.API, "s", shards, []string{"k"}, 50, 1)
	f := startFetch(t, n.API, "g", "c", noAck())
	require.Eventually(t, func() bool { return len(f.records()) == 10 }, 10*time.Second, 10*time.Millisecond)
	time.Sleep(300 * time.Millisecond)
	require.Len(t, f.records(), 10, "more than maxUnackedRecords were delivered")

	recs := f.records()
	f.ackRecords("g", recs[:5])
	require.Eventually(t, func() bool { return len(f.records()) == 15 }, 10*time.Second, 10*time.Millisecond)
	time.Sleep(300 * time.Millisecond)
	require.Len(t, f.records(), 15)
}

func TestLatestSubscriptionSkipsEarlierRecords(t *testing.T) {
	n := nodetest.Start(t)
	shards := createStream(t, n.API, "s", 3)
	before := appendKeyed(t, n.API, "s", shards, keysN(6), 5, 1)
	createSub(t, n.API, "g", "s", 60, 1000, latestSO)
	after := appendKeyed(t, n.API, "s", shards, []string{"a", "b", "c", "d", "e", "f"}, 5, 2)

	f := startFetch(t, n.API, "g", "c")
	waitAll(t, after, 10*time.Second, f)
	time.Sleep(200 * time.Millisecond)
	for _, r := range f.records() {
		require.False(t, before[wire.FormatRecordID(r.id)], "record %s was appended before the LATEST subscription", wire.FormatRecordID(r.id))
	}
	assert.Len(t, f.records(), len(after))
}

func TestSubscriptionResumesFromCheckpointAfterRestart(t *testing.T) {
	n := nodetest.Start(t, func(c *conf.Config) { c.Subscription.CheckpointInterval = 50 * time.Millisecond })
	shards := createStream(t, n.API, "s", 2)
	createSub(t, n.API, "g", "s", 60, 1000, earliest)
	first := appendKeyed(t, n.API, "s", shards, keysN(4), 10, 2)
	f := startFetch(t, n.API, "g", "c")
	waitAll(t, first, 10*time.Second, f)
	// The acks must have reached the owner before the restart: cancelling
	// the stream may drop ones still in flight, which are then rightly
	// delivered again.
	next := make(map[uint64]uint64)
	for s := range first {
		id, err := wire.ParseRecordID(s)
		require.NoError(t, err)
		next[id.GetShardId()] = max(next[id.GetShardId()], id.GetBatchId()+1)
	}
	require.Eventually(t, func() bool {
		cp, ok, err := n.Server.Node().Checkpoint(t.Context(), "g")
		if err != nil || !ok {
			return false
		}
		for shard, want := range next {
			if cp.Next[shard] < want {
				return false
			}
		}
		return true
	}, 10*time.Second, 20*time.Millisecond, "the acks never reached a checkpoint")
	f.stop()

	n.Restart(t)
	second := appendKeyed(t, n.API, "s", shards, []string{"p", "q", "r"}, 10, 2)
	g := startFetch(t, n.API, "g", "c")
	waitAll(t, second, 10*time.Second, g)
	time.Sleep(200 * time.Millisecond)
	for _, r := range g.records() {
		require.False(t, first[wire.FormatRecordID(r.id)], "record %s was acked before the restart but delivered again", wire.FormatRecordID(r.id))
	}
}

func TestSubscriptionAdmin(t *testing.T) {
	n := nodetest.Start(t)
	createStream(t, n.API, "s", 2)
	createStream(t, n.API, "other", 1)
	api := n.API

	createSub(t, api, "sub-a", "s", 30, 500, earliest)
	createSub(t, api, "sub-b", "s", 30, 500, latestSO)
	createSub(t, api, "x", "other", 30, 500, latestSO)

	got, err := api.GetSubscription(ctxT(t), &hstreampb.GetSubscriptionRequest{Id: "sub-a"})
	require.NoError(t, err)
	sub := got.GetSubscription()
	assert.Equal(t, "s", sub.GetStreamName())
	assert.Equal(t, int32(30), sub.GetAckTimeoutSeconds())
	assert.Equal(t, int32(500), sub.GetMaxUnackedRecords())
	assert.Equal(t, earliest, sub.GetOffset())
	assert.NotZero(t, sub.GetCreationTime().AsTime().Unix())
	assert.Len(t, got.GetOffsets(), 2)

	list, err := api.ListSubscriptions(ctxT(t), &hstreampb.ListSubscriptionsRequest{})
	require.NoError(t, err)
	require.Len(t, list.GetSubscription(), 3)
	assert.Equal(t, "sub-a", list.GetSubscription()[0].GetSubscriptionId())
	pre, err := api.ListSubscriptionsWithPrefix(ctxT(t), &hstreampb.ListSubscriptionsWithPrefixRequest{Prefix: "sub-"})
	require.NoError(t, err)
	assert.Len(t, pre.GetSubscription(), 2)

	ex, err := api.CheckSubscriptionExist(ctxT(t), &hstreampb.CheckSubscriptionExistRequest{SubscriptionId: "sub-b"})
	require.NoError(t, err)
	assert.True(t, ex.GetExists())
	ex, err = api.CheckSubscriptionExist(ctxT(t), &hstreampb.CheckSubscriptionExistRequest{SubscriptionId: "nope"})
	require.NoError(t, err)
	assert.False(t, ex.GetExists())

	look, err := api.LookupSubscription(ctxT(t), &hstreampb.LookupSubscriptionRequest{SubscriptionId: "sub-a"})
	require.NoError(t, err)
	assert.Equal(t, "sub-a", look.GetSubscriptionId())

	// A stream with subscriptions is deleted only with force, which takes
	// its subscriptions along.
	_, err = api.DeleteStream(ctxT(t), &hstreampb.DeleteStreamRequest{StreamName: "s"})
	requireStatus(t, err, codes.FailedPrecondition, hstreampb.ErrorCode_StreamFoundSubscription, `stream "s"`, "sub-a", "force")
	f := startFetch(t, api, "sub-a", "c")
	waitConsumers(t, api, "sub-a", 1)
	_, err = api.DeleteStream(ctxT(t), &hstreampb.DeleteStreamRequest{StreamName: "s", Force: true})
	require.NoError(t, err)
	requireStatus(t, f.ended(t), codes.NotFound, hstreampb.ErrorCode_SubscriptionNotFound, "sub-a", "deleted")
	list, err = api.ListSubscriptions(ctxT(t), &hstreampb.ListSubscriptionsRequest{})
	require.NoError(t, err)
	require.Len(t, list.GetSubscription(), 1)
	assert.Equal(t, "x", list.GetSubscription()[0].GetSubscriptionId())

	_, err = api.DeleteSubscription(ctxT(t), &hstreampb.DeleteSubscriptionRequest{SubscriptionId: "x"})
	require.NoError(t, err)
	_, err = api.DeleteSubscription(ctxT(t), &hstreampb.DeleteSubscriptionRequest{SubscriptionId: "x"})
	requireStatus(t, err, codes.NotFound, hstreampb.ErrorCode_SubscriptionNotFound, `"x"`)
}

func TestSubscriptionBadInput(t *testing.T) {
	n := nodetest.Start(t)
	api := n.API
	shards := createStream(t, api, "s", 2)
	create := func(s *hstreampb.Subscription) error {
		_, err := api.CreateSubscription(ctxT(t), s)
		return err
	}
	sub := func(mut func(*hstreampb.Subscription)) *hstreampb.Subscription {
		s := &hstreampb.Subscription{SubscriptionId: "g", StreamName: "s", AckTimeoutSeconds: 10, MaxUnackedRecords: 100}
		mut(s)
		return s
	}

	t.Run("create", func(t *testing.T) {
		for _, tc := range []struct {
			name string
			mut  func(*hstreampb.Subscription)
			code codes.Code
			ec   hstreampb.ErrorCode
			frag []string
		}{
			{"stream missing", func(s *hstreampb.Subscription) { s.StreamName = "nope" }, codes.NotFound, hstreampb.ErrorCode_SubscriptionCreationOnNonExistentStream, []string{`stream "nope" not found`}},
			{"bad id", func(s *hstreampb.Subscription) { s.SubscriptionId = "1abc" }, codes.InvalidArgument, hstreampb.ErrorCode_SubscriptionInvalidObjectIdentifier, []string{`"1abc"`, "letter"}},
			{"empty id", func(s *hstreampb.Subscription) { s.SubscriptionId = "" }, codes.InvalidArgument, hstreampb.ErrorCode_SubscriptionInvalidObjectIdentifier, []string{"empty"}},
			{"offset", func(s *hstreampb.Subscription) { s.Offset = 7 }, codes.InvalidArgument, hstreampb.ErrorCode_SubscriptionInvalidOffset, []string{"offset 7"}},
			{"zero ack timeout", func(s *hstreampb.Subscription) { s.AckTimeoutSeconds = 0 }, codes.InvalidArgument, hstreampb.ErrorCode_InternalError, []string{"ackTimeoutSeconds", "got 0"}},
			{"negative ack timeout", func(s *hstreampb.Subscription) { s.AckTimeoutSeconds = -5 }, codes.InvalidArgument, hstreampb.ErrorCode_InternalError, []string{"ackTimeoutSeconds", "got -5"}},
			{"huge ack timeout", func(s *hstreampb.Subscription) { s.AckTimeoutSeconds = 100000 }, codes.InvalidArgument, hstreampb.ErrorCode_InternalError, []string{"ackTimeoutSeconds", "36000"}},
			{"zero window", func(s *hstreampb.Subscription) { s.MaxUnackedRecords = 0 }, codes.InvalidArgument, hstreampb.ErrorCode_InternalError, []string{"maxUnackedRecords", "got 0"}},
			{"negative window", func(s *hstreampb.Subscription) { s.MaxUnackedRecords = -1 }, codes.InvalidArgument, hstreampb.ErrorCode_InternalError, []string{"maxUnackedRecords", "got -1"}},
		} {
			t.Run(tc.name, func(t *testing.T) {
				requireStatus(t, create(sub(tc.mut)), tc.code, tc.ec, tc.frag...)
			})
		}
		require.NoError(t, create(sub(func(*hstreampb.Subscription) {})))
		requireStatus(t, create(sub(func(*hstreampb.Subscription) {})), codes.AlreadyExists, hstreampb.ErrorCode_SubscriptionExists, `"g"`)
	})

	t.Run("fetch", func(t *testing.T) {
		unknown := startFetch(t, api, "nope", "c")
		requireStatus(t, unknown.ended(t), codes.NotFound, hstreampb.ErrorCode_SubscriptionNotFound, `subscription "nope" not found`)
		nameless := startFetch(t, api, "g", "")
		requireStatus(t, nameless.ended(t), codes.InvalidArgument, hstreampb.ErrorCode_InternalError, "consumerName")

		a := startFetch(t, api, "g", "dup")
		waitConsumers(t, api, "g", 1)
		b := startFetch(t, api, "g", "dup")
		requireStatus(t, b.ended(t), codes.AlreadyExists, hstreampb.ErrorCode_InternalError, `consumer "dup"`)

		// Acks of records never delivered are ignored and counted; the
		// fetch goes on.
		before := n.Server.Subscriptions().Stats().IgnoredAcks
		a.sendAck("g", []*hstreampb.RecordId{
			{ShardId: shards[0].GetShardId(), BatchId: 1 << 40},
			{ShardId: 999999, BatchId: 1},
		})
		require.Eventually(t, func() bool { return n.Server.Subscriptions().Stats().IgnoredAcks == before+2 }, 5*time.Second, 10*time.Millisecond)
		want := appendKeyed(t, api, "s", shards, []string{"k"}, 3, 1)
		waitAll(t, want, 10*time.Second, a)

		// Deleting with a consumer attached needs force; force ends the
		// consumer's fetch.
		_, err := api.DeleteSubscription(ctxT(t), &hstreampb.DeleteSubscriptionRequest{SubscriptionId: "g"})
		requireStatus(t, err, codes.FailedPrecondition, hstreampb.ErrorCode_SubscriptionFoundActiveConsumers, `"g"`, "dup", "force")
		_, err = api.DeleteSubscription(ctxT(t), &hstreampb.DeleteSubscriptionRequest{SubscriptionId: "g", Force: true})
		require.NoError(t, err)
		requireStatus(t, a.ended(t), codes.NotFound, hstreampb.ErrorCode_SubscriptionNotFound, `"g"`, "deleted")
		_, err = api.GetSubscription(ctxT(t), &hstreampb.GetSubscriptionRequest{Id: "g"})
		requireStatus(t, err, codes.NotFound, hstreampb.ErrorCode_SubscriptionNotFound, `"g"`)
	})

	t.Run("other RPCs on an unknown subscription", func(t *testing.T) {
		_, err := api.ListConsumers(ctxT(t), &hstreampb.ListConsumersRequest{SubscriptionId: "nope"})
		requireStatus(t, err, codes.NotFound, hstreampb.ErrorCode_SubscriptionNotFound, `"nope"`)
		_, err = api.DeleteSubscription(ctxT(t), &hstreampb.DeleteSubscriptionRequest{SubscriptionId: "nope"})
		requireStatus(t, err, codes.NotFound, hstreampb.ErrorCode_SubscriptionNotFound, `"nope"`)
	})
}
