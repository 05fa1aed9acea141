package test

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/weir-log/weir/api/hstreampb"
	"github.com/weir-log/weir/api/wire"
)

// TestKill9SubscriptionResumesFromCheckpoint runs `weir server` as a
// process, has two consumers of a subscription receive and ack while
// writers keep appending, reads the subscription's persisted offsets, kills
// the process with SIGKILL and starts it again on the same data. After the
// restart the consumers resume from the checkpoint: nothing acked up to the
// offsets read before the kill is delivered again, every record delivered
// or acknowledged by Append before the kill and not covered by the
// checkpoint comes again, and so nothing is lost. Records acked after the
// last checkpoint are delivered again (at-least-once); the test logs how
// many.
func TestKill9SubscriptionResumesFromCheckpoint(t *testing.T) {
	const (
		stream, sub = "orders", "billing"
		initial     = 2000 // records appended before the consumers attach
		batch       = 5    // records per Append
		ackChunk    = 2    // ids per ack request: batches are acked in parts
		lagging     = true // c2 acks a batch when the next one arrives
	)
	p := newProc(t)
	p.args = append(p.args, "--subscription-checkpoint-interval", "100ms")
	p.start()
	api := p.client()
	ctx := context.Background()
	_, err := api.CreateStream(ctx, &hstreampb.Stream{StreamName: stream, ShardCount: 4, ReplicationFactor: 1})
	require.NoError(t, err)
	shards := listShards(t, api, stream)
	smap, err := wire.NewShardMap(shards)
	require.NoError(t, err)
	_, err = api.CreateSubscription(ctx, &hstreampb.Subscription{SubscriptionId: sub, StreamName: stream,
		AckTimeoutSeconds: 60, MaxUnackedRecords: 1000, Offset: hstreampb.SpecialOffset_EARLIEST})
	require.NoError(t, err)
	start := subOffsets(t, api, sub)
	require.Len(t, start, len(shards))

	keys := make([]string, 16)
	for i := range keys {
		keys[i] = fmt.Sprintf("customer-%02d", i)
	}
	appended := &appendLog{recs: make(map[string]appendedRec)}
	errs := make([]error, len(keys))
	var wg sync.WaitGroup
	for k, key := range keys {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for seq := 0; seq < initial/len(keys) && errs[k] == nil; seq += batch {
				errs[k] = appended.append(api, stream, smap.Lookup(key), key, seq, batch)
			}
		}()
	}
	wg.Wait()
	for _, err := range errs {
		require.NoError(t, err)
	}
	require.Equal(t, initial, appended.len())

	// Writers keep appending, paced, until the kill.
	stop := make(chan struct{})
	var writers sync.WaitGroup
	for _, key := range keys[:4] {
		writers.Add(1)
		go func() {
			defer writers.Done()
			tick := time.NewTicker(25 * time.Millisecond)
			defer tick.Stop()
			for seq := initial / len(keys); ; seq += batch {
				select {
				case <-stop:
					return
				case <-tick.C:
				}
				if appended.append(api, stream, smap.Lookup(key), key, seq, batch) != nil {
					return // the server is gone: this batch is not acknowledged
				}
			}
		}()
	}

	before := []*subConsumer{startConsumer(t, api, sub, "c1", ackChunk, !lagging), startConsumer(t, api, sub, "c2", ackChunk, lagging)}
	ackedCount := func(cs []*subConsumer) int {
		n := 0
		for _, c := range cs {
			n += c.ackedCount()
		}
		return n
	}
	// Wait until the backlog is acked and checkpoints cover at least half
	// of it, take the persisted offsets O, and wait for more acks so the
	// kill lands while the consumers are receiving and acking past O.
	var o map[uint64]uint64
	waitFor(t, 30*time.Second, before, func() bool {
		if ackedCount(before) < initial-batch { // c2 holds one batch unacked
			return false
		}
		o = subOffsets(t, api, sub)
		return appended.covered(o) >= initial/2
	}, func() string {
		return fmt.Sprintf("the consumers did not ack %d records with a checkpoint covering half of them (acked %d, offsets %v):\n%s",
			initial-batch, ackedCount(before), o, p.log)
	})
	ackedAtO := ackedCount(before)
	waitFor(t, 15*time.Second, before, func() bool { return ackedCount(before) >= ackedAtO+200 }, func() string {
		return fmt.Sprintf("the consumers stopped acking after the offsets were read (%d acks):\n%s", ackedCount(before), p.log)
	})
	p.kill()
	killed := time.Now()
	close(stop)
	writers.Wait()
	for _, c := range before {
		c.stop()
	}
	covered := appended.covered(o) // acked, never to come again
	t.Logf("before kill -9: %d records acknowledged by Append, %d acks sent (%d when O was read); O=%v (start %v) covers %d records",
		appended.len(), ackedCount(before), ackedAtO, o, start, covered)
	require.NotZero(t, covered, "the offsets read before the kill cover no record: the test proves nothing")

	// The checkpoint as etcd holds it after the crash, read before any owner
	// runs: the owner resumes after it, and it is at least O.
	p.start()
	api = p.client()
	persisted := subOffsets(t, api, sub)
	for id, b := range o {
		require.GreaterOrEqual(t, persisted[id], b, "shard %d: the checkpoint went back across the restart", id)
	}

	// What must come again: every record known to exist (acknowledged by
	// Append, or delivered before the kill) after the checkpoint.
	gotBefore := make(map[string]*hstreampb.RecordId)
	for _, c := range before {
		for _, r := range c.records() {
			id := wire.FormatRecordID(r.id)
			require.Nil(t, gotBefore[id], "record %s delivered twice before the kill, with no timeout or consumer leaving", id)
			gotBefore[id] = r.id
			require.Equal(t, appended.payloadOf(id, r.payload), r.payload, "record %s holds another payload", id)
		}
	}
	mustAfter := make(map[string]bool)
	for id, rid := range gotBefore {
		if rid.GetBatchId() > persisted[rid.GetShardId()] {
			mustAfter[id] = true
		}
	}
	for id, r := range appended.recs {
		if r.id.GetBatchId() > persisted[r.id.GetShardId()] {
			mustAfter[id] = true
		}
	}
	neverAcked := 0
	for _, c := range before {
		for _, id := range c.unacked() {
			require.Greater(t, id.GetBatchId(), persisted[id.GetShardId()], "record %s was never acked but the checkpoint covers it", wire.FormatRecordID(id))
			neverAcked++
		}
	}
	require.NotZero(t, neverAcked, "the lagging consumer held nothing unacked at the kill")

	restarted := time.Now()
	after := []*subConsumer{startConsumer(t, api, sub, "c1", ackChunk, !lagging), startConsumer(t, api, sub, "c2", ackChunk, lagging)}
	missing := func() (lost, notAgain int) {
		gotAfter := make(map[string]bool)
		for _, c := range after {
			for _, r := range c.records() {
				gotAfter[wire.FormatRecordID(r.id)] = true
			}
		}
		for id := range appended.recs {
			if !gotAfter[id] && gotBefore[id] == nil {
				lost++
			}
		}
		for id := range mustAfter {
			if !gotAfter[id] {
				notAgain++
			}
		}
		return lost, notAgain
	}
	waitFor(t, 30*time.Second, after, func() bool {
		lost, notAgain := missing()
		return lost == 0 && notAgain == 0
	}, func() string {
		lost, notAgain := missing()
		return fmt.Sprintf("after the restart, %d records acknowledged by Append were never delivered and %d of %d records "+
			"after the checkpoint %v were not delivered again:\n%s", lost, notAgain, len(mustAfter), persisted, p.log)
	})
	t.Logf("after the restart, the consumers caught up in %s", time.Since(restarted).Round(time.Millisecond))

	// Nothing at or below O (nor below the checkpoint persisted at the
	// kill) comes again, and nothing comes twice.
	gotAfter := make(map[string]bool)
	redelivered, ackedAgain := 0, 0
	var oldestAck time.Duration
	for _, ca := range after {
		for _, r := range ca.records() {
			id := wire.FormatRecordID(r.id)
			shard, b := r.id.GetShardId(), r.id.GetBatchId()
			require.Greater(t, b, o[shard], "record %s was acked up to O=%d before the kill and delivered again", id, o[shard])
			require.Greater(t, b, persisted[shard], "record %s is below the persisted checkpoint %d and delivered again", id, persisted[shard])
			require.False(t, gotAfter[id], "record %s delivered twice after the restart", id)
			gotAfter[id] = true
			require.Equal(t, appended.payloadOf(id, r.payload), r.payload, "record %s holds another payload", id)
			if gotBefore[id] == nil {
				continue
			}
			redelivered++
			for _, c := range before {
				if at, ok := c.ackedAt(id); ok {
					ackedAgain++
					oldestAck = max(oldestAck, killed.Sub(at))
				}
			}
		}
	}
	t.Logf("after the restart: %d records delivered, %d of them delivered before the kill too: %d acked before it "+
		"(after the last checkpoint; the oldest ack %s before the kill), %d never acked; checkpoint at kill %v",
		len(gotAfter), redelivered, ackedAgain, oldestAck.Round(time.Millisecond), neverAcked, persisted)
}

// appendLog appends keyed records and remembers the acknowledged ones.
type appendLog struct {
	mu   sync.Mutex
	recs map[string]appendedRec // guarded by mu: by formatted record id
}

type appendedRec struct {
	id      *hstreampb.RecordId
	payload string
}

// keyedRecords are RAW records of key with payloads key/seq .. key/seq+n-1
// (the sequence number zero-padded, so payloads sort in sequence order).
func keyedRecords(key string, seq, n int) []*hstreampb.HStreamRecord {
	recs := make([]*hstreampb.HStreamRecord, n)
	for i := range recs {
		recs[i] = &hstreampb.HStreamRecord{
			Header:  &hstreampb.HStreamRecordHeader{Flag: hstreampb.HStreamRecordHeader_RAW, Key: key},
			Payload: fmt.Appendf(nil, "%s/%08d", key, seq+i),
		}
	}
	return recs
}

// append appends records key/seq .. key/seq+n-1 in one batch to a shard.
func (a *appendLog) append(api hstreampb.HStreamApiClient, stream string, shard uint64, key string, seq, n int) error {
	recs := keyedRecords(key, seq, n)
	br, err := wire.EncodeBatch(recs, hstreampb.CompressionType_None)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := api.Append(ctx, &hstreampb.AppendRequest{StreamName: stream, ShardId: shard, Records: br})
	if err != nil {
		return err
	}
	if len(resp.GetRecordIds()) != n {
		return fmt.Errorf("append returned %d ids for %d records", len(resp.GetRecordIds()), n)
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	for i, id := range resp.GetRecordIds() {
		a.recs[wire.FormatRecordID(id)] = appendedRec{id: id, payload: string(recs[i].GetPayload())}
	}
	return nil
}

func (a *appendLog) len() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return len(a.recs)
}

// covered counts the records at or below offsets (per shard, a batch id).
func (a *appendLog) covered(offsets map[uint64]uint64) int {
	a.mu.Lock()
	defer a.mu.Unlock()
	n := 0
	for _, r := range a.recs {
		if r.id.GetBatchId() <= offsets[r.id.GetShardId()] {
			n++
		}
	}
	return n
}

// payloadOf is the payload appended as id, or got for a record whose
// Append was not acknowledged (the server died before answering).
func (a *appendLog) payloadOf(id, got string) string {
	a.mu.Lock()
	defer a.mu.Unlock()
	if r, ok := a.recs[id]; ok {
		return r.payload
	}
	return got
}

// subOffsets returns a subscription's persisted offsets: per shard, the last
// batch id acknowledged in full.
func subOffsets(t *testing.T, api hstreampb.HStreamApiClient, sub string) map[uint64]uint64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := api.GetSubscription(ctx, &hstreampb.GetSubscriptionRequest{Id: sub})
	require.NoError(t, err)
	out := make(map[uint64]uint64, len(resp.GetOffsets()))
	for _, o := range resp.GetOffsets() {
		out[o.GetShardId()] = o.GetBatchId()
	}
	return out
}

// waitFor polls cond until it holds, failing with msg() at the deadline, or
// as soon as a consumer's fetch ends.
func waitFor(t *testing.T, within time.Duration, cs []*subConsumer, cond func() bool, msg func() string) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		for _, c := range cs {
			if err := c.failed(); err != nil {
				t.Fatalf("consumer %s: the fetch ended: %v", c.name, err)
			}
		}
		if time.Now().After(deadline) {
			t.Fatal(msg())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// subConsumer is one consumer on a StreamingFetch stream: it records what
// it receives and acks each batch, ackChunk ids per request: at once, or,
// lagging, when the next batch arrives (so it always holds one unacked).
type subConsumer struct {
	name     string
	ackChunk int
	lag      bool
	cancel   context.CancelFunc
	done     chan struct{}
	acks     atomic.Int64 // ids acked

	mu    sync.Mutex
	got   []fetched             // guarded by mu: in the order received
	acked map[string]time.Time  // guarded by mu: id → when its ack was sent
	held  []*hstreampb.RecordId // guarded by mu: received, ack not sent yet (lagging)
	err   error                 // guarded by mu: how the fetch ended
}

type fetched struct {
	id      *hstreampb.RecordId
	payload string
}

func startConsumer(t *testing.T, api hstreampb.HStreamApiClient, sub, name string, ackChunk int, lag bool) *subConsumer {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	fs, err := api.StreamingFetch(ctx)
	require.NoError(t, err)
	require.NoError(t, fs.Send(&hstreampb.StreamingFetchRequest{SubscriptionId: sub, ConsumerName: name}))
	c := &subConsumer{name: name, ackChunk: ackChunk, lag: lag, cancel: cancel, done: make(chan struct{}), acked: make(map[string]time.Time)}
	t.Cleanup(c.stop)
	go c.run(fs, sub)
	return c
}

func (c *subConsumer) run(fs hstreampb.HStreamApi_StreamingFetchClient, sub string) {
	defer close(c.done)
	end := func(err error) {
		c.mu.Lock()
		c.err = err
		c.mu.Unlock()
	}
	for {
		resp, err := fs.Recv()
		if err != nil {
			end(err)
			return
		}
		rr := resp.GetReceivedRecords()
		ids := rr.GetRecordIds()
		recs, err := wire.DecodeBatch(rr.GetRecord(), 0)
		if err != nil || len(recs) != len(ids) || len(ids) == 0 {
			end(fmt.Errorf("bad delivery: %d ids, %d records, %v", len(ids), len(recs), err))
			return
		}
		c.mu.Lock()
		for i, r := range recs {
			c.got = append(c.got, fetched{id: ids[i], payload: string(r.GetPayload())})
		}
		if c.lag {
			ids, c.held = c.held, ids
		}
		c.mu.Unlock()
		for len(ids) > 0 {
			part := ids[:min(c.ackChunk, len(ids))]
			ids = ids[len(part):]
			at := time.Now()
			if err := fs.Send(&hstreampb.StreamingFetchRequest{SubscriptionId: sub, ConsumerName: c.name, AckIds: part}); err != nil {
				break // the stream is gone; Recv says why
			}
			c.mu.Lock()
			for _, id := range part {
				c.acked[wire.FormatRecordID(id)] = at
			}
			c.mu.Unlock()
			c.acks.Add(int64(len(part)))
		}
	}
}

func (c *subConsumer) ackedCount() int { return int(c.acks.Load()) }

// ackedAt is when the consumer sent the ack of id.
func (c *subConsumer) ackedAt(id string) (time.Time, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	at, ok := c.acked[id]
	return at, ok
}

// unacked returns the ids received and never acked.
func (c *subConsumer) unacked() []*hstreampb.RecordId {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]*hstreampb.RecordId(nil), c.held...)
}

// records returns a copy of what was received so far.
func (c *subConsumer) records() []fetched {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]fetched(nil), c.got...)
}

// failed is why the fetch ended, or nil while it runs.
func (c *subConsumer) failed() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err
}

// stop cancels the fetch and waits for its receiver. Idempotent.
func (c *subConsumer) stop() {
	c.cancel()
	<-c.done
}
