package client_test

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/weir-log/weir/api/hstreampb"
	"github.com/weir-log/weir/api/wire"
	"github.com/weir-log/weir/client"
	"github.com/weir-log/weir/internal/nodetest"
)

// waitLimit bounds every wait of these tests.
const waitLimit = 30 * time.Second

// startNode starts a real node and a client connected to it.
func startNode(t *testing.T, opts ...client.Option) (*nodetest.Node, *client.Client) {
	t.Helper()
	n := nodetest.Start(t)
	c, err := client.Dial(t.Context(), n.Addr, opts...)
	require.NoError(t, err)
	t.Cleanup(func() { c.Close() })
	return n, c
}

// newProducer creates stream with the given shard count and a producer
// for it, closed when the test ends.
func newProducer(t *testing.T, c *client.Client, stream string, shards int, opts ...client.ProducerOpt) *client.BufferedProducer {
	t.Helper()
	_, err := c.CreateStream(t.Context(), stream, client.ShardCount(shards))
	require.NoError(t, err)
	p, err := c.NewBufferedProducer(t.Context(), stream, opts...)
	require.NoError(t, err)
	t.Cleanup(func() { p.Close() })
	return p
}

// record returns a record of key whose payload names key and seq, padded
// to size bytes in all (key included).
func record(key string, seq, size int) client.Record {
	payload := fmt.Appendf(nil, "%s/%d/", key, seq)
	for len(key)+len(payload) < size {
		payload = append(payload, '.')
	}
	return client.Record{Key: key, Payload: payload}
}

// parsePayload undoes record: the key and sequence number in a payload.
func parsePayload(t *testing.T, payload []byte) (string, int) {
	t.Helper()
	parts := strings.SplitN(string(payload), "/", 3)
	require.Len(t, parts, 3, "payload %q", payload)
	seq, err := strconv.Atoi(parts[1])
	require.NoError(t, err, "payload %q", payload)
	return parts[0], seq
}

func mustAppend(t *testing.T, p *client.BufferedProducer, r client.Record) *client.AppendResult {
	t.Helper()
	res, err := p.Append(t.Context(), r)
	require.NoError(t, err)
	return res
}

// waitIDs waits for every result and requires each to be an id.
func waitIDs(t *testing.T, results []*client.AppendResult) []*hstreampb.RecordId {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), waitLimit)
	defer cancel()
	ids := make([]*hstreampb.RecordId, len(results))
	for i, r := range results {
		id, err := r.Wait(ctx)
		require.NoError(t, err, "result %d", i)
		require.NotNil(t, id, "result %d", i)
		ids[i] = id
	}
	return ids
}

// batchSizes groups ids into the server's batches and returns the batch
// sizes in (shard, batch id) order.
func batchSizes(ids []*hstreampb.RecordId) []int {
	type batch struct{ shard, id uint64 }
	count := make(map[batch]int)
	for _, id := range ids {
		count[batch{id.GetShardId(), id.GetBatchId()}]++
	}
	keys := make([]batch, 0, len(count))
	for b := range count {
		keys = append(keys, b)
	}
	slices.SortFunc(keys, func(a, b batch) int { return cmp.Or(cmp.Compare(a.shard, b.shard), cmp.Compare(a.id, b.id)) })
	sizes := make([]int, len(keys))
	for i, b := range keys {
		sizes[i] = count[b]
	}
	return sizes
}

func requireNotDone(t *testing.T, results []*client.AppendResult, why string) {
	t.Helper()
	for i, r := range results {
		select {
		case <-r.Done():
			t.Fatalf("result %d resolved %s", i, why)
		default:
		}
	}
}

func TestBufferedProducerCutsAtRecordCountLimit(t *testing.T) {
	_, c := startNode(t)
	p := newProducer(t, c, "count", 1, client.BatchRecordCountLimit(10), client.BatchAgeLimit(time.Hour))

	var rs []*client.AppendResult
	for i := range 35 {
		rs = append(rs, mustAppend(t, p, record("k", i, 100)))
	}
	require.Equal(t, []int{10, 10, 10}, batchSizes(waitIDs(t, rs[:30])))
	requireNotDone(t, rs[30:], "before its batch reached a limit or was flushed")

	require.NoError(t, p.Flush(t.Context()))
	for i, r := range rs {
		select {
		case <-r.Done():
		default:
			t.Fatalf("result %d not resolved when Flush returned", i)
		}
	}
	require.Equal(t, []int{10, 10, 10, 5}, batchSizes(waitIDs(t, rs)))
}

func TestBufferedProducerCutsAtBytesLimit(t *testing.T) {
	_, c := startNode(t)
	p := newProducer(t, c, "bytes", 1, client.BatchBytesLimit(1000), client.BatchRecordCountLimit(1000), client.BatchAgeLimit(time.Hour))

	var rs []*client.AppendResult
	for i := range 30 { // 100 bytes each (key included): batches of 10
		rs = append(rs, mustAppend(t, p, record("k", i, 100)))
	}
	require.Equal(t, []int{10, 10, 10}, batchSizes(waitIDs(t, rs)))

	// 50 bytes, then 990: the second would take the batch past 1000, so
	// the first goes alone; the second waits, under the limit, for Flush.
	small := mustAppend(t, p, record("k", 30, 50))
	big := mustAppend(t, p, record("k", 31, 990))
	waitIDs(t, []*client.AppendResult{small})
	requireNotDone(t, []*client.AppendResult{big}, "below the bytes limit without a Flush")
	require.NoError(t, p.Flush(t.Context()))
	rs = append(rs, small, big)
	require.Equal(t, []int{10, 10, 10, 1, 1}, batchSizes(waitIDs(t, rs)))

	// A record as large as the limit travels alone at once.
	huge := mustAppend(t, p, record("k", 32, 1500))
	rs = append(rs, huge)
	require.Equal(t, []int{10, 10, 10, 1, 1, 1}, batchSizes(waitIDs(t, rs)))
}

func TestBufferedProducerCutsAtAgeLimit(t *testing.T) {
	_, c := startNode(t)
	const age = 100 * time.Millisecond
	p := newProducer(t, c, "age", 1, client.BatchAgeLimit(age), client.BatchRecordCountLimit(1000))

	var rs []*client.AppendResult
	start := time.Now()
	for i := range 5 {
		rs = append(rs, mustAppend(t, p, record("k", i, 100)))
	}
	ids := waitIDs(t, rs) // no Flush: only the age limit can cut the batch
	require.GreaterOrEqual(t, time.Since(start), age, "the batch was cut before its age limit")
	require.Equal(t, []int{5}, batchSizes(ids))

	// The timer starts again with the next record into the empty buffer.
	for i := range 3 {
		rs = append(rs, mustAppend(t, p, record("k", 5+i, 100)))
	}
	require.Equal(t, []int{5, 3}, batchSizes(waitIDs(t, rs)))
}

// appendGate holds every Append RPC while it is closed.
type appendGate struct {
	mu   sync.Mutex
	hold chan struct{} // nil when open
	held atomic.Int32  // Append RPCs that waited at the gate
}

func (g *appendGate) close() {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.hold = make(chan struct{})
}

func (g *appendGate) open() {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.hold != nil {
		close(g.hold)
		g.hold = nil
	}
}

func (g *appendGate) interceptor(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
	if strings.HasSuffix(method, "/Append") {
		g.mu.Lock()
		hold := g.hold
		g.mu.Unlock()
		if hold != nil {
			g.held.Add(1)
			select {
			case <-hold:
			case <-ctx.Done():
				return ctx.Err()
			}
		}
	}
	return invoker(ctx, method, req, reply, cc, opts...)
}

func TestBufferedProducerFlowControl(t *testing.T) {
	gate := &appendGate{}
	_, c := startNode(t, client.WithGRPCDialOptions(grpc.WithUnaryInterceptor(gate.interceptor)))
	opts := []client.ProducerOpt{
		client.FlowControlBytesLimit(1000), client.BatchRecordCountLimit(5), client.BatchAgeLimit(time.Hour),
	}
	p := newProducer(t, c, "flow", 1, opts...)
	pNB, err := c.NewBufferedProducer(t.Context(), "flow", append(opts, client.FlowControlNonBlocking())...)
	require.NoError(t, err)
	t.Cleanup(func() { pNB.Close() })

	gate.close()
	t.Cleanup(gate.open) // before the producers close, should the test fail
	var rs []*client.AppendResult
	for i := range 10 { // 1000 bytes: the limit; two batches, the first held at the gate
		rs = append(rs, mustAppend(t, p, record("k", i, 100)))
		mustAppend(t, pNB, record("nb", i, 100))
	}
	require.Eventually(t, func() bool { return gate.held.Load() == 2 }, waitLimit, 5*time.Millisecond,
		"each producer's first batch should reach the gate")

	// Non-blocking: an error at once.
	_, err = pNB.Append(t.Context(), record("nb", 10, 100))
	require.ErrorIs(t, err, client.ErrBufferFull)
	require.ErrorContains(t, err, "FlowControlBytesLimit(1000)")

	// Blocking: a deadline ends the wait.
	ctx, cancel := context.WithTimeout(t.Context(), 50*time.Millisecond)
	_, err = p.Append(ctx, record("k", 10, 100))
	cancel()
	require.ErrorIs(t, err, context.DeadlineExceeded)

	// Blocking: Append does not return while the gate holds the batches.
	var blocked atomic.Bool
	blocked.Store(true)
	var late *client.AppendResult
	var lateErr error
	returned := make(chan struct{})
	go func() {
		defer close(returned)
		late, lateErr = p.Append(t.Context(), record("k", 10, 100))
		blocked.Store(false)
	}()
	require.Never(t, func() bool { return !blocked.Load() }, 300*time.Millisecond, 5*time.Millisecond,
		"Append returned with the flow-control limit reached")
	requireNotDone(t, rs, "while the gate is closed")

	// As the first batch completes, its bytes are released and Append returns.
	gate.open()
	select {
	case <-returned:
	case <-time.After(waitLimit):
		t.Fatal("Append still blocked after the gate opened")
	}
	require.NoError(t, lateErr)
	require.NoError(t, p.Flush(t.Context()))
	ids := waitIDs(t, append(rs, late))
	require.Equal(t, []int{5, 5, 1}, batchSizes(ids))

	// The non-blocking producer takes records again once its batches are done.
	require.NoError(t, pNB.Flush(t.Context()))
	_, err = pNB.Append(t.Context(), record("nb", 10, 100))
	require.NoError(t, err)
}

func TestBufferedProducerManyKeysGzipKeepsKeyOrder(t *testing.T) {
	const keys, perKey = 1000, 100
	n, c := startNode(t)
	p := newProducer(t, c, "many", 4, client.Compression(hstreampb.CompressionType_Gzip))

	rs := make([]*client.AppendResult, 0, keys*perKey)
	for seq := range perKey {
		for k := range keys {
			rs = append(rs, mustAppend(t, p, record(fmt.Sprint("key-", k), seq, 100)))
		}
	}
	require.NoError(t, p.Flush(t.Context()))
	ids := waitIDs(t, rs)

	// Ids: unique, and increasing per key.
	seen := make(map[string]bool, len(ids))
	last := make(map[string]*hstreampb.RecordId, keys)
	for i, id := range ids {
		s := wire.FormatRecordID(id)
		require.False(t, seen[s], "id %s twice", s)
		seen[s] = true
		key := fmt.Sprint("key-", i%keys)
		if prev := last[key]; prev != nil {
			require.Equal(t, prev.GetShardId(), id.GetShardId(), "key %s changed shard", key)
			require.True(t, prev.GetBatchId() < id.GetBatchId() ||
				(prev.GetBatchId() == id.GetBatchId() && prev.GetBatchIndex() < id.GetBatchIndex()),
				"key %s: id %s after %s", key, s, wire.FormatRecordID(prev))
		}
		last[key] = id
	}

	// The log: every record once, each key's records in order.
	next := make(map[string]int, keys)
	stored := n.Records(t, "many")
	require.Len(t, stored, keys*perKey)
	for _, r := range stored {
		key, seq := parsePayload(t, r.GetPayload())
		require.Equal(t, key, r.GetHeader().GetKey())
		require.Equal(t, next[key], seq, "key %s out of order", key)
		next[key]++
	}
	for k := range keys {
		require.Equal(t, perKey, next[fmt.Sprint("key-", k)])
	}
}

func TestBufferedProducerRidesOutServerRestart(t *testing.T) {
	n, c := startNode(t,
		client.WithMaxAttempts(400),
		client.WithRetryBackoff(10*time.Millisecond, 100*time.Millisecond),
		client.WithGRPCDialOptions(grpc.WithConnectParams(grpc.ConnectParams{
			Backoff:           backoff.Config{BaseDelay: 20 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: 200 * time.Millisecond},
			MinConnectTimeout: time.Second,
		})))
	p := newProducer(t, c, "restart", 2, client.BatchRecordCountLimit(20), client.BatchAgeLimit(5*time.Millisecond))

	type appended struct {
		rec client.Record
		res *client.AppendResult
	}
	var (
		mu    sync.Mutex
		out   []appended
		count atomic.Int64
		stop  atomic.Bool
	)
	appenderDone := make(chan error, 1)
	go func() {
		for i := 0; !stop.Load() && i < 1_000_000; i++ {
			r := record(fmt.Sprint("key-", i%10), i, 100)
			res, err := p.Append(context.Background(), r)
			if err != nil {
				appenderDone <- err
				return
			}
			mu.Lock()
			out = append(out, appended{r, res})
			mu.Unlock()
			count.Add(1)
			if i%10 == 9 {
				time.Sleep(2 * time.Millisecond) // pace: about 5,000 records/s
			}
		}
		appenderDone <- nil
	}()
	resolved := func(i int) bool {
		mu.Lock()
		defer mu.Unlock()
		if i >= len(out) {
			return false
		}
		select {
		case <-out[i].res.Done():
			return true
		default:
			return false
		}
	}
	appendedSince := func(from int64, atLeast int64) {
		t.Helper()
		require.Eventually(t, func() bool { return count.Load() >= from+atLeast }, waitLimit, 5*time.Millisecond)
	}

	require.Eventually(t, func() bool { return resolved(199) }, waitLimit, 5*time.Millisecond)
	n.Close()
	appendedSince(count.Load(), 300) // appending goes on while the node is down
	mu.Lock()
	latest := len(out) - 1
	mu.Unlock()
	require.False(t, resolved(latest), "a record appended while the node is down resolved")
	n.Reopen(t)
	appendedSince(count.Load(), 300)
	stop.Store(true)
	require.NoError(t, <-appenderDone)
	ctx, cancel := context.WithTimeout(t.Context(), waitLimit)
	defer cancel()
	require.NoError(t, p.Flush(ctx))

	// Every future resolved to an id: the retries outlasted the gap.
	written := make(map[string]string, len(out))
	for i, a := range out {
		id, err := a.res.Wait(ctx)
		require.NoError(t, err, "record %d", i)
		written[wire.FormatRecordID(id)] = string(a.rec.Payload)
	}

	// Every id a future reported is stored with its record; a key's records
	// are in order, but for whole batches a retry stored twice.
	stored := make(map[string]string)
	firstSeen := make(map[int]bool)
	lastSeq := make(map[string]int)
	err := c.ReadStream(ctx, "restart", client.Earliest(), client.Latest(), 0, func(r client.ReceivedRecord) error {
		stored[wire.FormatRecordID(r.ID)] = string(r.Payload)
		key, seq := parsePayload(t, r.Payload)
		if firstSeen[seq] {
			return nil // a duplicate from a retry
		}
		firstSeen[seq] = true
		if prev, ok := lastSeq[key]; ok && seq <= prev {
			return fmt.Errorf("key %s: record %d stored after record %d", key, seq, prev)
		}
		lastSeq[key] = seq
		return nil
	})
	require.NoError(t, err)
	for id, payload := range written {
		require.Equal(t, payload, stored[id], "record id %s", id)
	}
	require.Len(t, firstSeen, len(out), "every record stored")
	t.Logf("%d records appended, %d stored (%d duplicates from retries)", len(out), len(stored), len(stored)-len(firstSeen))
}

func TestBufferedProducerRejectsBadSettings(t *testing.T) {
	_, c := startNode(t)
	_, err := c.CreateStream(t.Context(), "bad")
	require.NoError(t, err)
	for _, tc := range []struct {
		opt  client.ProducerOpt
		want string
	}{
		{client.BatchRecordCountLimit(0), "BatchRecordCountLimit(0): want at least 1"},
		{client.BatchRecordCountLimit(-3), "BatchRecordCountLimit(-3)"},
		{client.BatchBytesLimit(0), "BatchBytesLimit(0): want at least 1"},
		{client.BatchBytesLimit(-1), "BatchBytesLimit(-1)"},
		{client.BatchAgeLimit(0), "BatchAgeLimit(0s): want more than 0"},
		{client.BatchAgeLimit(-time.Second), "BatchAgeLimit(-1s)"},
		{client.FlowControlBytesLimit(0), "FlowControlBytesLimit(0): want at least 1"},
		{client.FlowControlBytesLimit(-10), "FlowControlBytesLimit(-10)"},
		{client.Compression(hstreampb.CompressionType(42)), "Compression(42): unknown compression type"},
	} {
		p, err := c.NewBufferedProducer(t.Context(), "bad", tc.opt)
		require.ErrorIs(t, err, client.ErrInvalidArgument, tc.want)
		require.ErrorContains(t, err, tc.want)
		require.Nil(t, p)
	}
	// Every problem at once.
	_, err = c.NewBufferedProducer(t.Context(), "bad", client.BatchRecordCountLimit(0), client.BatchAgeLimit(0))
	require.ErrorContains(t, err, "BatchRecordCountLimit(0)")
	require.ErrorContains(t, err, "BatchAgeLimit(0s)")

	// A record larger than the flow-control limit can never fit.
	p, err := c.NewBufferedProducer(t.Context(), "bad", client.FlowControlBytesLimit(100))
	require.NoError(t, err)
	defer p.Close()
	_, err = p.Append(t.Context(), record("k", 0, 101))
	require.ErrorIs(t, err, client.ErrInvalidArgument)
	require.ErrorContains(t, err, "FlowControlBytesLimit(100)")

	// Protobuf refuses keys and attributes that are not UTF-8; Append
	// turns such a record away instead of failing its batch.
	_, err = p.Append(t.Context(), client.Record{Key: "\xff", Payload: []byte("x")})
	require.ErrorIs(t, err, client.ErrInvalidArgument)
	require.ErrorContains(t, err, "not valid UTF-8")
	_, err = p.Append(t.Context(), client.Record{Key: "k", Attributes: map[string]string{"a": "\xfe"}})
	require.ErrorIs(t, err, client.ErrInvalidArgument)

	// A stream that does not exist.
	_, err = c.NewBufferedProducer(t.Context(), "no-such-stream")
	require.Equal(t, codes.NotFound, status.Code(err), "%v", err)
}

func TestBufferedProducerCloseDrains(t *testing.T) {
	_, c := startNode(t)
	p := newProducer(t, c, "close", 2, client.BatchAgeLimit(time.Hour), client.BatchRecordCountLimit(1000))
	var rs []*client.AppendResult
	for i := range 50 {
		rs = append(rs, mustAppend(t, p, record(fmt.Sprint("key-", i%5), i, 100)))
	}
	requireNotDone(t, rs, "before Close")
	require.NoError(t, p.Close())
	for i, r := range rs {
		select {
		case <-r.Done():
		default:
			t.Fatalf("result %d not resolved when Close returned", i)
		}
	}
	waitIDs(t, rs)
	_, err := p.Append(t.Context(), record("k", 0, 100))
	require.ErrorIs(t, err, client.ErrProducerClosed)
	require.NoError(t, p.Close(), "Close is idempotent")
	require.NoError(t, p.Flush(t.Context()), "Flush after Close has nothing to do")
}

func TestBufferedProducerCloseGivesUpWhenNodeIsDown(t *testing.T) {
	n, c := startNode(t, client.WithMaxAttempts(2), client.WithRetryBackoff(time.Second, time.Second))
	p := newProducer(t, c, "down", 1, client.BatchRecordCountLimit(10), client.BatchAgeLimit(time.Hour))
	n.Close()
	var rs []*client.AppendResult
	for i := range 50 { // five batches
		rs = append(rs, mustAppend(t, p, record("k", i, 100)))
	}
	// The first batch waits 0.5 to 1 s between its two attempts: Close
	// begins before it fails, and the other four are not tried.
	require.NoError(t, p.Close())
	for i, r := range rs {
		_, err := r.Wait(t.Context())
		require.Equal(t, codes.Unavailable, status.Code(err), "record %d: %v", i, err)
		if i >= 10 {
			require.ErrorContains(t, err, "not sent: closing", "record %d", i)
		}
	}
}

func TestBufferedProducerStreamRecreated(t *testing.T) {
	_, c := startNode(t)
	p := newProducer(t, c, "again", 1, client.BatchAgeLimit(time.Hour))
	first := mustAppend(t, p, record("k", 0, 100))
	require.NoError(t, p.Flush(t.Context()))
	firstID := waitIDs(t, []*client.AppendResult{first})[0]

	require.NoError(t, c.DeleteStream(t.Context(), "again", true, false))
	_, err := c.CreateStream(t.Context(), "again")
	require.NoError(t, err)

	// The batch for the old shard fails with NotFound ...
	lost := mustAppend(t, p, record("k", 1, 100))
	require.NoError(t, p.Flush(t.Context()))
	_, err = lost.Wait(t.Context())
	require.Equal(t, codes.NotFound, status.Code(err), "%v", err)

	// ... and the next Append routes by the new shards.
	again := mustAppend(t, p, record("k", 2, 100))
	require.NoError(t, p.Flush(t.Context()))
	id := waitIDs(t, []*client.AppendResult{again})[0]
	if id.GetShardId() == firstID.GetShardId() {
		t.Logf("the recreated stream reuses shard id %d", id.GetShardId())
	}
	var got []string
	require.NoError(t, c.ReadStream(t.Context(), "again", client.Earliest(), client.Latest(), 0, func(r client.ReceivedRecord) error {
		got = append(got, string(r.Payload))
		return nil
	}))
	require.Equal(t, []string{string(record("k", 2, 100).Payload)}, got)
}

// An outage before Close is not held against the batches Close sends: the
// node is back, so they go out.
func TestBufferedProducerCloseSendsAfterAnEarlierOutage(t *testing.T) {
	n, c := startNode(t, client.WithMaxAttempts(1))
	p := newProducer(t, c, "s", 1, client.BatchAgeLimit(time.Hour), client.BatchRecordCountLimit(1000))
	n.Close()
	r1 := mustAppend(t, p, record("k", 0, 100))
	require.NoError(t, p.Flush(t.Context()))
	_, err := r1.Wait(t.Context())
	require.Equal(t, codes.Unavailable, status.Code(err), "%v", err)

	n.Reopen(t)
	require.Eventually(t, func() bool {
		_, err := c.Append(t.Context(), "s", []client.Record{record("k", 99, 100)})
		return err == nil
	}, 10*time.Second, 50*time.Millisecond)
	r2 := mustAppend(t, p, record("k", 1, 100))
	require.NoError(t, p.Close())
	_, err = r2.Wait(t.Context())
	require.NoError(t, err, "the record appended after the outage is sent by Close")
}

// A node that accepts an Append and never answers does not hang Close: the
// attempt timeout makes it an unavailable node, and the batch fails once
// its attempts run out.
func TestBufferedProducerCloseEndsOnASilentNode(t *testing.T) {
	gate := &appendGate{}
	_, c := startNode(t, client.WithGRPCDialOptions(grpc.WithUnaryInterceptor(gate.interceptor)),
		client.WithAttemptTimeout(200*time.Millisecond), client.WithMaxAttempts(3))
	p := newProducer(t, c, "s", 1, client.BatchAgeLimit(time.Hour))
	gate.close()
	defer gate.open()
	res := mustAppend(t, p, record("k", 0, 100))
	closed := make(chan struct{})
	go func() {
		defer close(closed)
		assert.NoError(t, p.Close())
	}()
	select {
	case <-closed:
	case <-time.After(20 * time.Second):
		t.Fatal("Close still blocked on a node that does not answer")
	}
	_, err := res.Wait(t.Context())
	require.Equal(t, codes.Unavailable, status.Code(err), "%v", err)
	require.ErrorContains(t, err, "WithAttemptTimeout")
	require.Equal(t, int32(3), gate.held.Load(), "every attempt reached the silent node")
}

// When the bytes flow control waits for sit in batches still being filled,
// those batches are cut and sent, rather than held until their age limit.
func TestBufferedProducerFlowControlCutsFillingBatches(t *testing.T) {
	_, c := startNode(t)
	p := newProducer(t, c, "s", 2, client.BatchAgeLimit(time.Hour), client.BatchRecordCountLimit(1000),
		client.FlowControlBytesLimit(1000))
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	var results []*client.AppendResult
	for i := range 50 {
		res, err := p.Append(ctx, record(fmt.Sprint("k", i%7), i, 100))
		require.NoError(t, err, "record %d: Append waited for bytes held by filling batches", i)
		results = append(results, res)
	}
	require.NoError(t, p.Flush(ctx))
	for _, res := range results {
		_, err := res.Wait(ctx)
		require.NoError(t, err)
	}
}
