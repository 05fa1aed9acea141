package client_test

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/weir-log/weir/api/hstreampb"
	"github.com/weir-log/weir/api/wire"
	"github.com/weir-log/weir/client"
	"github.com/weir-log/weir/internal/nodetest"
	"google.golang.org/grpc"
)

// Consumers against a real node: reconnecting across a restart, and acks
// sent in batches.

// deliveries counts the deliveries of each record id.
type deliveries struct {
	mu    sync.Mutex
	count map[string]int
	total int
}

func (d *deliveries) add(id *hstreampb.RecordId) int {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.count == nil {
		d.count = make(map[string]int)
	}
	d.count[wire.FormatRecordID(id)]++
	d.total++
	return d.total
}

// missing returns how many of ids were never delivered.
func (d *deliveries) missing(ids []*hstreampb.RecordId) int {
	d.mu.Lock()
	defer d.mu.Unlock()
	n := 0
	for _, id := range ids {
		if d.count[wire.FormatRecordID(id)] == 0 {
			n++
		}
	}
	return n
}

// redelivered returns how many deliveries were of a record delivered
// before.
func (d *deliveries) redelivered() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.total - len(d.count)
}

// appendN appends n records to stream in requests of 100, keys spread over
// the shards, and returns their ids.
func appendN(t *testing.T, c *client.Client, stream string, from, n int) []*hstreampb.RecordId {
	t.Helper()
	var ids []*hstreampb.RecordId
	for start := from; start < from+n; start += 100 {
		var recs []client.Record
		for i := start; i < min(start+100, from+n); i++ {
			recs = append(recs, client.Record{Key: fmt.Sprintf("k%d", i%16), Payload: fmt.Appendf(nil, "r%d", i)})
		}
		got, err := c.Append(t.Context(), stream, recs)
		require.NoError(t, err)
		ids = append(ids, got...)
	}
	return ids
}

func TestConsumerResumesAfterNodeRestart(t *testing.T) {
	n := nodetest.Start(t)
	var logs nodetest.SyncBuffer
	// Reconnects must outlast the node's restart: up to 300 attempts, at
	// most 200 ms apart.
	c, err := client.Dial(t.Context(), n.Addr,
		client.WithMaxAttempts(300),
		client.WithRetryBackoff(20*time.Millisecond, 200*time.Millisecond),
		client.WithLogger(slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelInfo}))))
	require.NoError(t, err)
	defer c.Close()
	_, err = c.CreateStream(t.Context(), "s", client.ShardCount(2))
	require.NoError(t, err)
	_, err = c.CreateSubscription(t.Context(), "sub", "s", client.WithSubscriptionOffset(hstreampb.SpecialOffset_EARLIEST))
	require.NoError(t, err)
	want := appendN(t, c, "s", 0, 400)

	// The 100th delivery holds the handler until the node is down, so the
	// stream breaks while a batch is in hand and acks are pending.
	const holdAt = 100
	var got deliveries
	hold := make(chan struct{})
	con, err := c.StartConsumer(t.Context(), "sub", "c1", func(ctx context.Context, m *client.Message) error {
		if got.add(m.Record.ID) == holdAt {
			select {
			case <-hold:
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		m.Ack()
		return nil
	})
	require.NoError(t, err)
	defer con.Stop()

	require.Eventually(t, func() bool {
		got.mu.Lock()
		defer got.mu.Unlock()
		return got.total >= holdAt
	}, 10*time.Second, 5*time.Millisecond, "consumption under way")
	n.Close()
	close(hold)
	n.Reopen(t)
	want = append(want, appendN(t, c, "s", 400, 400)...)

	require.Eventually(t, func() bool { return got.missing(want) == 0 }, 15*time.Second, 10*time.Millisecond,
		"every record delivered after the restart")
	select {
	case <-con.Done():
		t.Fatalf("the consumer ended: %v", con.Err())
	default:
	}
	reconnects := strings.Count(logs.String(), `msg="consumer reconnecting"`)
	t.Logf("%d records, %d deliveries, %d redelivered, %d reconnect attempts", len(want), got.total, got.redelivered(), reconnects)
	require.Positive(t, reconnects, "the consumer reconnected")
	require.NoError(t, con.Stop())
}

// ackCounter counts the StreamingFetch requests that carry acks, and the
// acks, as the client sends them.
type ackCounter struct {
	requests, ids atomic.Int64
	largest       atomic.Int64 // the most ids one request carried
}

func (a *ackCounter) interceptor(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string, streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
	cs, err := streamer(ctx, desc, cc, method, opts...)
	if err != nil || !strings.HasSuffix(method, "/StreamingFetch") {
		return cs, err
	}
	return &ackCountingStream{ClientStream: cs, counter: a}, nil
}

type ackCountingStream struct {
	grpc.ClientStream
	counter *ackCounter
}

func (s *ackCountingStream) SendMsg(m any) error {
	err := s.ClientStream.SendMsg(m)
	if req, ok := m.(*hstreampb.StreamingFetchRequest); ok && err == nil && len(req.GetAckIds()) > 0 {
		s.counter.requests.Add(1)
		s.counter.ids.Add(int64(len(req.GetAckIds())))
		for n := int64(len(req.GetAckIds())); ; {
			old := s.counter.largest.Load()
			if n <= old || s.counter.largest.CompareAndSwap(old, n) {
				break
			}
		}
	}
	return err
}

func TestConsumerBatchesAcks(t *testing.T) {
	n := nodetest.Start(t)
	var acks ackCounter
	c, err := client.Dial(t.Context(), n.Addr, client.WithGRPCDialOptions(grpc.WithStreamInterceptor(acks.interceptor)))
	require.NoError(t, err)
	defer c.Close()
	_, err = c.CreateStream(t.Context(), "s", client.ShardCount(2))
	require.NoError(t, err)
	_, err = c.CreateSubscription(t.Context(), "sub", "s", client.WithSubscriptionOffset(hstreampb.SpecialOffset_EARLIEST))
	require.NoError(t, err)
	const records, bufferSize = 2000, 100
	ids := appendN(t, c, "s", 0, records)

	var got deliveries
	// The age limit is long enough that a pause in delivery on a loaded
	// machine does not send a partial request, short enough not to matter.
	con, err := c.StartConsumer(t.Context(), "sub", "c1", func(_ context.Context, m *client.Message) error {
		got.add(m.Record.ID)
		m.Ack()
		return nil
	}, client.WithAckBufferSize(bufferSize), client.WithAckAgeLimit(time.Second))
	require.NoError(t, err)
	defer con.Stop()
	require.Eventually(t, func() bool { return acks.ids.Load() == records }, 15*time.Second, 5*time.Millisecond,
		"every record acked")
	require.NoError(t, con.Stop())

	reqs := acks.requests.Load()
	t.Logf("%d records acked in %d requests", records, reqs)
	require.LessOrEqual(t, acks.largest.Load(), int64(bufferSize), "no request carries more than the buffer size")
	require.LessOrEqual(t, reqs, int64(records/bufferSize+3), "acks go in batches of the buffer size")
	require.Equal(t, 0, got.missing(ids))
	require.Zero(t, got.redelivered(), "nothing delivered twice")

	// The server took every ack: each shard's checkpoint reaches its last
	// batch (it is saved every second).
	last := map[uint64]uint64{}
	for _, id := range ids {
		last[id.GetShardId()] = max(last[id.GetShardId()], id.GetBatchId())
	}
	require.Eventually(t, func() bool {
		_, offsets, err := c.GetSubscription(t.Context(), "sub")
		if err != nil || len(offsets) != len(last) {
			return false
		}
		for _, o := range offsets {
			if o.GetBatchId() != last[o.GetShardId()] {
				return false
			}
		}
		return true
	}, 10*time.Second, 50*time.Millisecond, "the checkpoint covers every record")
}
