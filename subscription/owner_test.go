package subscription

import (
	"context"
	"errors"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/weir-log/weir/api/hstreampb"
	"github.com/weir-log/weir/cluster"
)

func sub(id, stream string, window int32, start map[uint64]uint64) cluster.SubscriptionMeta {
	return cluster.SubscriptionMeta{ID: id, Stream: stream, AckTimeoutSeconds: 60, MaxUnackedRecords: window,
		Offset: cluster.OffsetEarliest, Start: start}
}

func attach(t *testing.T, m *Manager, subID, name string) *Consumer {
	t.Helper()
	c, err := m.Attach(context.Background(), subID, ConsumerInfo{Name: name})
	require.NoError(t, err)
	t.Cleanup(c.Close)
	return c
}

func TestShardAddedToTheStreamIsPickedUp(t *testing.T) {
	src := newFakeSource()
	first := src.addShard("s", 1)
	src.addSub(sub("g", "s", 100, map[uint64]uint64{1: 1}))
	m := newTestManager(t, src)
	c := attach(t, m, "g", "c")

	first.append(t, 1)
	assert.Equal(t, uint64(1), next(t, c).GetRecordIds()[0].GetShardId())

	// A shard that appears later starts at its first entry: everything in
	// it is newer than the subscription.
	added := src.addShard("s", 2)
	added.append(t, 2)
	added.append(t, 1)
	rr := next(t, c)
	assert.Equal(t, uint64(2), rr.GetRecordIds()[0].GetShardId())
	assert.Equal(t, uint64(1), rr.GetRecordIds()[0].GetBatchId())
	assert.Len(t, rr.GetRecordIds(), 2)
	assert.Equal(t, uint64(2), next(t, c).GetRecordIds()[0].GetBatchId())
}

func TestTrimmedPastTheCheckpointContinuesAtTheFirstRecord(t *testing.T) {
	src := newFakeSource()
	lg := src.addShard("s", 1)
	for range 10 {
		lg.append(t, 1)
	}
	src.addSub(sub("g", "s", 100, map[uint64]uint64{1: 1}))
	src.checkpoints["g"] = cluster.Checkpoint{Next: map[uint64]uint64{1: 3}}
	lg.trim(7) // retention removed 3..6 before they were delivered

	m := newTestManager(t, src)
	c := attach(t, m, "g", "c")
	assert.Equal(t, uint64(7), next(t, c).GetRecordIds()[0].GetBatchId())
	assert.Equal(t, uint64(1), m.Stats().Gaps)
}

func TestBatchLargerThanTheWindowStillGoesOut(t *testing.T) {
	src := newFakeSource()
	lg := src.addShard("s", 1)
	src.addSub(sub("g", "s", 2, map[uint64]uint64{1: 1}))
	lg.append(t, 5)
	lg.append(t, 1)
	m := newTestManager(t, src)
	c := attach(t, m, "g", "c")

	rr := next(t, c)
	require.Len(t, rr.GetRecordIds(), 5, "a batch over the window goes out alone")
	nothingMore(t, c, 50*time.Millisecond)
	c.Ack(rr.GetRecordIds())
	assert.Equal(t, uint64(2), next(t, c).GetRecordIds()[0].GetBatchId())
}

func TestCloseSavesTheAcknowledgedPrefix(t *testing.T) {
	src := newFakeSource()
	lg := src.addShard("s", 1)
	src.addSub(sub("g", "s", 100, map[uint64]uint64{1: 1}))
	for range 5 {
		lg.append(t, 2)
	}
	m, err := New(Options{Source: src, CheckpointInterval: time.Hour})
	require.NoError(t, err)
	c, err := m.Attach(context.Background(), "g", ConsumerInfo{Name: "c"})
	require.NoError(t, err)
	var got []*hstreampb.ReceivedRecord
	for range 5 {
		got = append(got, next(t, c))
	}
	c.Ack(got[0].GetRecordIds())
	c.Ack(got[1].GetRecordIds())
	c.Ack(got[3].GetRecordIds())                           // not contiguous: the prefix ends at 3
	c.Ack(got[2].GetRecordIds()[:1])                       // half a batch: still not done
	c.Ack([]*hstreampb.RecordId{{ShardId: 1, BatchId: 9}}) // never delivered

	m.Close()
	_, err = c.Next(context.Background())
	require.ErrorIs(t, err, ErrClosed)
	cp, saves := src.saved("g")
	assert.Equal(t, 1, saves, "one save, at close")
	assert.Equal(t, map[uint64]uint64{1: 3}, cp.Next)
	assert.Equal(t, uint64(1), m.Stats().IgnoredAcks)
	assert.Equal(t, uint64(7), m.Stats().AckedRecords)
}

func TestCheckpointsAreCoalesced(t *testing.T) {
	src := newFakeSource()
	lg := src.addShard("s", 1)
	src.addSub(sub("g", "s", 1000, map[uint64]uint64{1: 1}))
	m, err := New(Options{Source: src, CheckpointInterval: 200 * time.Millisecond, Tick: 5 * time.Millisecond})
	require.NoError(t, err)
	t.Cleanup(m.Close)
	c := attach(t, m, "g", "c")
	start := time.Now()
	for range 200 {
		lg.append(t, 1)
		c.Ack(next(t, c).GetRecordIds())
	}
	require.Eventually(t, func() bool {
		cp, _ := src.saved("g")
		return cp.Next[1] == 201
	}, 5*time.Second, 10*time.Millisecond)
	_, saves := src.saved("g")
	elapsed := time.Since(start)
	assert.LessOrEqual(t, saves, int(elapsed/(200*time.Millisecond))+1, "200 acks in %s made %d saves", elapsed, saves)
}

// TestRebalance joins and removes consumers at random and checks, after
// every change, that each shard has exactly one live consumer, loads differ
// by at most one, and a join moves no more shards than the newcomer gets.
func TestRebalance(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for _, shards := range []int{1, 2, 5, 6, 12} {
		o := &owner{shards: make(map[uint64]*shardState)}
		for i := range shards {
			id := uint64(i + 1)
			o.shards[id] = &shardState{id: id, inflight: map[uint64]*inflightBatch{}}
			o.shardIDs = append(o.shardIDs, id)
		}
		for step := range 60 {
			before := make(map[uint64]*Consumer)
			for id, s := range o.shards {
				before[id] = s.consumer
			}
			joining := len(o.consumers) == 0 || (len(o.consumers) < 7 && rng.IntN(2) == 0)
			if joining {
				o.consumers = append(o.consumers, &Consumer{info: ConsumerInfo{Name: "c"}})
			} else {
				i := rng.IntN(len(o.consumers))
				gone := o.consumers[i]
				o.consumers = append(o.consumers[:i], o.consumers[i+1:]...)
				for _, s := range o.shards {
					if s.consumer == gone {
						s.consumer = nil
					}
				}
			}
			o.rebalance()
			if len(o.consumers) == 0 {
				for id, s := range o.shards {
					require.Nil(t, s.consumer, "shard %d kept a consumer that left", id)
				}
				continue
			}
			load := make(map[*Consumer]int)
			moved := 0
			for id, s := range o.shards {
				require.NotNil(t, s.consumer, "shards %d step %d: shard %d unassigned", shards, step, id)
				require.Contains(t, o.consumers, s.consumer)
				load[s.consumer]++
				if before[id] != nil && before[id] != s.consumer {
					moved++
				}
			}
			lo, hi := shards, 0
			for _, c := range o.consumers {
				lo, hi = min(lo, load[c]), max(hi, load[c])
			}
			require.LessOrEqual(t, hi-lo, 1, "shards %d step %d: loads %v", shards, step, load)
			if joining {
				require.LessOrEqual(t, moved, load[o.consumers[len(o.consumers)-1]], "shards %d step %d: a join moved %d shards", shards, step, moved)
			}
		}
	}
}

// TestBookkeepingStaysBounded acks thousands of batches behind one that is
// never acked, under a long ack timeout: neither the timeout queue nor the
// shard's order may grow with them.
func TestBookkeepingStaysBounded(t *testing.T) {
	src := newFakeSource()
	lg := src.addShard("s", 1)
	src.addSub(sub("g", "s", 100, map[uint64]uint64{1: 1}))
	m := newTestManager(t, src)
	c := attach(t, m, "g", "c")
	lg.append(t, 1)
	next(t, c) // never acked
	for range 5000 {
		lg.append(t, 1)
		c.Ack(next(t, c).GetRecordIds())
	}
	o, err := m.owner(context.Background(), "g", false)
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		var timeouts, order int
		require.NoError(t, o.do(func() { timeouts, order = len(o.timeouts), len(o.shards[1].order) }))
		return timeouts <= 1024+2 && order <= 1024+2
	}, 5*time.Second, 10*time.Millisecond)
	cp := map[uint64]uint64{}
	require.NoError(t, o.do(func() { cp = o.checkpoint() }))
	assert.Equal(t, map[uint64]uint64{1: 1}, cp, "the unacked first batch holds the checkpoint")
}

// queued is how many deliveries wait in a consumer's queue.
func queued(c *Consumer) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.queue)
}

func TestAcksBeforeLeavingAreNotRedelivered(t *testing.T) {
	src := newFakeSource()
	lg := src.addShard("s", 1)
	src.addSub(sub("g", "s", 1000, map[uint64]uint64{1: 1}))
	m := newTestManager(t, src)
	a := attach(t, m, "g", "a")
	b := attach(t, m, "g", "b")
	for range 200 {
		lg.append(t, 1)
	}
	require.Eventually(t, func() bool { return queued(a)+queued(b) > 0 }, 5*time.Second, time.Millisecond)
	holder, other := a, b // the one shard goes to one of them
	if queued(b) > 0 {
		holder, other = b, a
	}
	for range 200 {
		holder.Ack(next(t, holder).GetRecordIds())
	}
	holder.Close() // the acks were handed over first: none may lose to the detach
	nothingMore(t, other, 100*time.Millisecond)
	assert.Zero(t, m.Stats().RedeliveredRecords)
}

func TestAConsumerThatDoesNotSendGetsNoSecondCopies(t *testing.T) {
	lg, m, c := oneShard(t, 5, 1) // c never calls Next
	for range 5 {
		lg.append(t, 1)
	}
	require.Eventually(t, func() bool { return queued(c) == 5 }, 5*time.Second, 5*time.Millisecond)
	time.Sleep(2500 * time.Millisecond) // two ack timeouts
	assert.Equal(t, 5, queued(c), "batches never sent are not queued again")
	assert.Zero(t, m.Stats().RedeliveredRecords)
}

func TestAFailedReadIsRetried(t *testing.T) {
	src := newFakeSource()
	one := src.addShard("s", 1)
	two := src.addShard("s", 2)
	src.addSub(sub("g", "s", 100, map[uint64]uint64{1: 1, 2: 1}))
	m := newTestManager(t, src)
	c := attach(t, m, "g", "c")
	one.failNextRead(errors.New("disk hiccup"))
	one.append(t, 1)
	two.append(t, 1)
	got := map[uint64]bool{}
	for range 2 {
		rr := next(t, c)
		got[rr.GetRecordIds()[0].GetShardId()] = true
		c.Ack(rr.GetRecordIds())
	}
	assert.Equal(t, map[uint64]bool{1: true, 2: true}, got, "the shard whose read failed is read again")
}

func TestAcksBelowWhereTheOwnerStartedAreIgnored(t *testing.T) {
	src := newFakeSource()
	lg := src.addShard("s", 1)
	for range 5 {
		lg.append(t, 1)
	}
	src.addSub(sub("g", "s", 100, map[uint64]uint64{1: 4}))
	m := newTestManager(t, src)
	c := attach(t, m, "g", "c")
	rr := next(t, c)
	require.Equal(t, uint64(4), rr.GetRecordIds()[0].GetBatchId())
	c.Ack(rr.GetRecordIds())
	c.Ack(rr.GetRecordIds())                               // again: a duplicate
	c.Ack([]*hstreampb.RecordId{{ShardId: 1, BatchId: 2}}) // before the start: never delivered
	require.Eventually(t, func() bool { st := m.Stats(); return st.DuplicateAcks == 1 && st.IgnoredAcks == 1 },
		5*time.Second, 5*time.Millisecond, "%+v", m.Stats())
}

func TestAMovedShardWaitsForItsPreviousConsumer(t *testing.T) {
	src := newFakeSource()
	one := src.addShard("s", 1)
	two := src.addShard("s", 2)
	src.addSub(sub("g", "s", 100, map[uint64]uint64{1: 1, 2: 1}))
	m := newTestManager(t, src)
	a := attach(t, m, "g", "a")
	one.append(t, 1)
	two.append(t, 1)
	held := []*hstreampb.ReceivedRecord{next(t, a), next(t, a)} // sent to a, not acked

	b := attach(t, m, "g", "b") // takes one of the shards
	one.append(t, 1)
	two.append(t, 1)
	// a gets the new entry of the shard it kept; b gets nothing until a
	// acks what it holds of the shard b took.
	rr := next(t, a)
	moved := uint64(3) - rr.GetRecordIds()[0].GetShardId()
	nothingMore(t, b, 200*time.Millisecond)
	for _, h := range held {
		if h.GetRecordIds()[0].GetShardId() == moved {
			a.Ack(h.GetRecordIds())
		}
	}
	got := next(t, b)
	assert.Equal(t, moved, got.GetRecordIds()[0].GetShardId())
	assert.Equal(t, uint64(2), got.GetRecordIds()[0].GetBatchId())
}

func TestASubscriptionDeletedAndCreatedAgainElsewhereEndsItsConsumers(t *testing.T) {
	src := newFakeSource()
	src.addShard("s", 1)
	m0 := sub("g", "s", 100, map[uint64]uint64{1: 1})
	m0.CreatedAt = time.Now()
	src.addSub(m0)
	m := newTestManager(t, src)
	c := attach(t, m, "g", "c")

	again := m0
	again.CreatedAt = m0.CreatedAt.Add(time.Second)
	src.addSub(again) // as another node's delete and create would leave it
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err := c.Next(ctx)
	require.ErrorIs(t, err, ErrDeleted)

	// The next consumer gets a fresh owner for the new subscription.
	d := attach(t, m, "g", "c")
	nothingMore(t, d, 50*time.Millisecond)
}

func TestADueBatchWhoseReadFailsIsNotLost(t *testing.T) {
	lg, _, c := oneShard(t, 10, 1)
	lg.append(t, 1)
	first := next(t, c) // not acked: due again after a second
	lg.failNextRead(errors.New("disk hiccup"))
	again := next(t, c)
	assert.Equal(t, first.GetRecordIds()[0].GetBatchId(), again.GetRecordIds()[0].GetBatchId())
	c.Ack(again.GetRecordIds())
}

func TestTheAckTimeoutCountsFromWhenTheBatchWasSent(t *testing.T) {
	lg, _, c := oneShard(t, 10, 1)
	lg.append(t, 1)
	time.Sleep(1800 * time.Millisecond) // queued, not taken, past one timeout
	next(t, c)
	nothingMore(t, c, 700*time.Millisecond) // within a timeout of being sent
	next(t, c)                              // then it is due again
}

func TestAMovedShardsQueuedBatchesWaitForThePreviousConsumer(t *testing.T) {
	src := newFakeSource()
	src.addShard("s", 1)
	two := src.addShard("s", 2)
	src.addSub(sub("g", "s", 100, map[uint64]uint64{1: 1, 2: 1}))
	m := newTestManager(t, src)
	a := attach(t, m, "g", "a")
	two.append(t, 1)
	two.append(t, 1)
	held := next(t, a) // 2-1 sent to a; 2-2 stays in a's queue
	require.Eventually(t, func() bool { return queued(a) == 1 }, 5*time.Second, 5*time.Millisecond)

	b := attach(t, m, "g", "b") // shard 2 moves to b, taking 2-2 along
	nothingMore(t, b, 200*time.Millisecond)
	a.Ack(held.GetRecordIds())
	got := next(t, b)
	assert.Equal(t, uint64(2), got.GetRecordIds()[0].GetShardId())
	assert.Equal(t, uint64(2), got.GetRecordIds()[0].GetBatchId())
}

func TestAnEntryThatDoesNotDecodeIsSkippedAsAGap(t *testing.T) {
	src := newFakeSource()
	lg := src.addShard("s", 1)
	for range 3 {
		lg.append(t, 1)
	}
	lg.corrupt = 2
	src.addSub(sub("g", "s", 100, map[uint64]uint64{1: 1}))
	m := newTestManager(t, src)
	c := attach(t, m, "g", "c")
	assert.Equal(t, uint64(1), next(t, c).GetRecordIds()[0].GetBatchId())
	assert.Equal(t, uint64(3), next(t, c).GetRecordIds()[0].GetBatchId())
	assert.Equal(t, uint64(1), m.Stats().Gaps)
}

// oneShard starts a subscription with the given window and ack timeout
// (seconds) on a one-shard stream, with one consumer attached.
func oneShard(t *testing.T, window, ackTimeout int32) (*fakeLog, *Manager, *Consumer) {
	t.Helper()
	src := newFakeSource()
	lg := src.addShard("s", 1)
	m0 := sub("g", "s", window, map[uint64]uint64{1: 1})
	m0.AckTimeoutSeconds = ackTimeout
	src.addSub(m0)
	m := newTestManager(t, src)
	return lg, m, attach(t, m, "g", "c")
}

// An owner whose claim lapsed (its node's lease expired during a pause or a
// partition) claims the subscription again at its next save, and its
// checkpoints go on: otherwise the next owner would redeliver everything
// acknowledged since.
func TestAnOwnerWhoseClaimLapsedClaimsItAgain(t *testing.T) {
	src, lg, _, c := savingOwner(t)
	lg.append(t, 1)
	c.Ack(next(t, c).GetRecordIds())
	require.Eventually(t, func() bool { cp, _ := src.saved("g"); return cp.Next[1] == 2 }, 5*time.Second, 5*time.Millisecond)

	src.loseClaim("g", "lapsed")
	lg.append(t, 1)
	c.Ack(next(t, c).GetRecordIds())
	require.Eventually(t, func() bool { cp, _ := src.saved("g"); return cp.Next[1] == 3 }, 5*time.Second, 5*time.Millisecond,
		"the checkpoint is saved again once the owner has claimed the subscription again")
	lg.append(t, 1)
	require.Len(t, next(t, c).GetRecordIds(), 1, "the consumer goes on")
}

// An owner that finds another node holding its subscription ends its
// consumers with ErrNotOwner, so they attach where the subscription is
// owned now, and a consumer attaching here is told the same.
func TestAnOwnerThatLostTheSubscriptionEndsItsConsumers(t *testing.T) {
	src, lg, m, c := savingOwner(t)
	lg.append(t, 1)

	src.loseClaim("g", "other")
	c.Ack(next(t, c).GetRecordIds()) // moves the checkpoint: the next save finds out
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err := c.Next(ctx)
	require.ErrorIs(t, err, cluster.ErrNotOwner)
	cp, _ := src.saved("g")
	assert.NotEqual(t, uint64(2), cp.Next[1], "no checkpoint saved over the other node's")

	_, err = m.Attach(context.Background(), "g", ConsumerInfo{Name: "d"})
	require.ErrorIs(t, err, cluster.ErrNotOwner)
}

// savingOwner starts an owner of subscription g on a one-shard stream that
// saves its checkpoint every 20 ms, with one consumer attached.
func savingOwner(t *testing.T) (*fakeSource, *fakeLog, *Manager, *Consumer) {
	t.Helper()
	src := newFakeSource()
	lg := src.addShard("s", 1)
	src.addSub(sub("g", "s", 100, map[uint64]uint64{1: 1}))
	m, err := New(Options{Source: src, CheckpointInterval: 20 * time.Millisecond, Tick: 5 * time.Millisecond})
	require.NoError(t, err)
	t.Cleanup(m.Close)
	c := attach(t, m, "g", "c")
	return src, lg, m, c
}
