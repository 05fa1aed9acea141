package client

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/weir-log/weir/api/hstreampb"
	"github.com/weir-log/weir/api/wire"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// deliveredBatch builds the ReceivedRecord of one batch of a shard.
func deliveredBatch(t *testing.T, shard, batchID uint64, payloads ...string) *hstreampb.ReceivedRecord {
	t.Helper()
	recs := make([]*hstreampb.HStreamRecord, len(payloads))
	rr := &hstreampb.ReceivedRecord{}
	for i, p := range payloads {
		recs[i] = &hstreampb.HStreamRecord{
			Header:  &hstreampb.HStreamRecordHeader{Flag: hstreampb.HStreamRecordHeader_RAW, Key: "k"},
			Payload: []byte(p),
		}
		rr.RecordIds = append(rr.RecordIds, &hstreampb.RecordId{ShardId: shard, BatchId: batchID, BatchIndex: uint32(i)})
	}
	b, err := wire.EncodeBatch(recs, hstreampb.CompressionType_Gzip)
	require.NoError(t, err)
	b.PublishTime = timestamppb.Now()
	rr.Record = b
	return rr
}

// payloads returns n payloads "p0", "p1", ….
func payloads(n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("p%d", i)
	}
	return out
}

// idsText returns n record ids of one batch as text.
func idsText(shard, batchID uint64, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = wire.FormatRecordID(&hstreampb.RecordId{ShardId: shard, BatchId: batchID, BatchIndex: uint32(i)})
	}
	return out
}

// startConsume runs Consume in the background; the returned function
// waits for its result.
func startConsume(t *testing.T, ctx context.Context, c *Client, sub string, handler func(context.Context, *Message) error, opts ...ConsumerOpt) func() error {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- c.Consume(ctx, sub, "c1", handler, opts...) }()
	return func() error {
		t.Helper()
		select {
		case err := <-done:
			return err
		case <-time.After(30 * time.Second):
			t.Fatal("Consume did not return within 30s")
			return nil
		}
	}
}

func TestConsumeOptionErrors(t *testing.T) {
	fs, c := startFake(t)
	nop := func(context.Context, *Message) error { return nil }
	for _, tc := range []struct {
		sub, consumer string
		handler       func(context.Context, *Message) error
		opt           ConsumerOpt
		want          string
	}{
		{"", "c", nop, nil, "Consume: empty subscription id"},
		{"s", "", nop, nil, `Consume "s": empty consumer name`},
		{"s", "c", nil, nil, `Consume "s": nil handler`},
		{"s", "c", nop, WithAckBufferSize(0), "WithAckBufferSize(0): want at least 1"},
		{"s", "c", nop, WithAckAgeLimit(0), "WithAckAgeLimit(0s): want more than 0"},
		{"s", "c", nop, WithAckAgeLimit(-time.Second), "WithAckAgeLimit(-1s): want more than 0"},
	} {
		var opts []ConsumerOpt
		if tc.opt != nil {
			opts = append(opts, tc.opt)
		}
		err := c.Consume(t.Context(), tc.sub, tc.consumer, tc.handler, opts...)
		require.ErrorIs(t, err, ErrInvalidArgument, tc.want)
		require.ErrorContains(t, err, tc.want)
	}
	require.Empty(t, fs.fetchRequests(), "no stream opened for rejected input")
}

func TestConsumeRegistersDeliversAndEndsWithServer(t *testing.T) {
	fs, c := startFake(t)
	_, err := c.CreateSubscription(t.Context(), "sub", "s")
	require.NoError(t, err)
	fs.mu.Lock()
	fs.deliveries["sub"] = []*hstreampb.ReceivedRecord{
		deliveredBatch(t, 1, 1, "a0", "a1", "a2"),
		nil, // a response without a batch is skipped
		deliveredBatch(t, 2, 4, "b0"),
	}
	fs.fetchEnd = true
	fs.mu.Unlock()

	var got []string
	err = c.Consume(t.Context(), "sub", "consumer-1", func(_ context.Context, m *Message) error {
		got = append(got, wire.FormatRecordID(m.Record.ID)+" "+string(m.Record.Payload))
		require.Equal(t, "k", m.Record.Key)
		require.False(t, m.Record.PublishTime.IsZero())
		return nil
	})
	require.NoError(t, err, "the server ending the stream is a normal end")
	require.Equal(t, []string{"1-1-0 a0", "1-1-1 a1", "1-1-2 a2", "2-4-0 b0"}, got)

	reqs := fs.fetchRequests()
	require.NotEmpty(t, reqs)
	require.Equal(t, "sub", reqs[0].req.GetSubscriptionId())
	require.Equal(t, "consumer-1", reqs[0].req.GetConsumerName())
	require.Empty(t, reqs[0].req.GetAckIds(), "the first request registers, without acks")
}

func TestConsumeAcksBatchedBySize(t *testing.T) {
	fs, c := startFakeSubscription(t, deliveredBatch(t, 1, 5, payloads(7)...))

	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	wait := startConsume(t, ctx, c, "sub", func(_ context.Context, m *Message) error {
		m.Ack()
		return nil
	}, WithAckBufferSize(3), WithAckAgeLimit(time.Hour))

	// Six acks go out as two requests of three; the seventh waits (its age
	// limit is an hour) until Consume stops.
	require.Eventually(t, func() bool { return len(fs.ackedIDs()) == 6 }, 10*time.Second, 5*time.Millisecond)
	reqs := fs.fetchRequests()
	require.Len(t, reqs, 3)
	for _, r := range reqs[1:] {
		require.Len(t, r.req.GetAckIds(), 3)
		require.Equal(t, "sub", r.req.GetSubscriptionId(), "every request names the subscription")
		require.Equal(t, "c1", r.req.GetConsumerName(), "and the consumer")
	}

	cancel()
	require.ErrorIs(t, wait(), context.Canceled)
	reqs = fs.fetchRequests()
	require.Len(t, reqs, 4)
	require.Len(t, reqs[3].req.GetAckIds(), 1, "the last ack is flushed on cancel")
	require.Equal(t, idsText(1, 5, 7), fs.ackedIDs(), "acks in order, each once")
}

func TestConsumeAcksBatchedByAge(t *testing.T) {
	fs, c := startFakeSubscription(t, deliveredBatch(t, 1, 5, "x", "y"))

	const ageLimit = 150 * time.Millisecond
	var (
		mu       sync.Mutex
		firstAck time.Time
	)
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	wait := startConsume(t, ctx, c, "sub", func(_ context.Context, m *Message) error {
		mu.Lock()
		if firstAck.IsZero() {
			firstAck = time.Now()
		}
		mu.Unlock()
		m.Ack()
		return nil
	}, WithAckBufferSize(100), WithAckAgeLimit(ageLimit))

	require.Eventually(t, func() bool { return len(fs.ackedIDs()) == 2 }, 10*time.Second, 5*time.Millisecond)
	reqs := fs.fetchRequests()
	require.Len(t, reqs, 2, "both acks in one request")
	mu.Lock()
	waited := reqs[1].at.Sub(firstAck)
	mu.Unlock()
	require.GreaterOrEqual(t, waited, ageLimit, "sent once the oldest ack reached the age limit, not before")

	cancel()
	require.ErrorIs(t, wait(), context.Canceled)
	require.Len(t, fs.fetchRequests(), 2, "nothing left to flush")
}

func TestMessageAckIsIdempotent(t *testing.T) {
	fs, c := startFakeSubscription(t, deliveredBatch(t, 1, 5, payloads(5)...))

	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	var msgs []*Message
	err := c.Consume(ctx, "sub", "c1", func(_ context.Context, m *Message) error {
		msgs = append(msgs, m)
		var wg sync.WaitGroup
		for range 4 { // from other goroutines, at once
			wg.Go(m.Ack)
		}
		wg.Wait()
		m.Ack()
		if len(msgs) == 5 {
			cancel()
		}
		return nil
	}, WithAckBufferSize(1))
	require.ErrorIs(t, err, context.Canceled)
	require.Equal(t, idsText(1, 5, 5), fs.ackedIDs(), "each record acked once")

	msgs[0].Ack() // after Consume returned: dropped
	msgs[0].acks.mu.Lock()
	require.Empty(t, msgs[0].acks.pending)
	msgs[0].acks.mu.Unlock()
	(&Message{}).Ack() // a Message not from Consume: nothing to do
}

func TestConsumeHandlerErrorFlushesAcks(t *testing.T) {
	fs, c := startFakeSubscription(t, deliveredBatch(t, 1, 5, payloads(5)...))

	boom := errors.New("boom")
	calls := 0
	err := c.Consume(t.Context(), "sub", "c1", func(_ context.Context, m *Message) error {
		calls++
		m.Ack()
		if calls == 3 {
			return boom
		}
		return nil
	}, WithAckAgeLimit(time.Hour))
	require.ErrorIs(t, err, boom)
	require.ErrorContains(t, err, `Consume "sub": handler: boom`)
	require.Equal(t, 3, calls, "no record after the failing one")
	require.Equal(t, idsText(1, 5, 3), fs.ackedIDs(), "acks flushed before returning")
	fs.mu.Lock()
	require.Equal(t, 1, fs.fetchHalfClosed, "the stream was half-closed after the acks")
	fs.mu.Unlock()
}

func TestConsumeCancelFlushesAcks(t *testing.T) {
	fs, c := startFakeSubscription(t,
		deliveredBatch(t, 1, 5, "a", "b"),
		deliveredBatch(t, 1, 6, "c", "d"),
	)

	for _, returnCtxErr := range []bool{false, true} {
		t.Run(fmt.Sprintf("handler returns ctx error %v", returnCtxErr), func(t *testing.T) {
			fs.mu.Lock()
			fs.fetchLog, fs.fetchHalfClosed = nil, 0
			fs.mu.Unlock()
			ctx, cancel := context.WithCancel(t.Context())
			defer cancel()
			calls := 0
			err := c.Consume(ctx, "sub", "c1", func(ctx context.Context, m *Message) error {
				calls++
				m.Ack()
				if calls == 3 {
					cancel()
					if returnCtxErr {
						return fmt.Errorf("stopping: %w", ctx.Err())
					}
				}
				return nil
			}, WithAckAgeLimit(time.Hour))
			require.ErrorIs(t, err, context.Canceled)
			require.NotContains(t, err.Error(), "handler", "a handler seeing the cancellation is no handler failure")
			require.Equal(t, 3, calls, "nothing delivered after the cancellation")
			require.Equal(t, []string{"1-5-0", "1-5-1", "1-6-0"}, fs.ackedIDs())
			fs.mu.Lock()
			require.Equal(t, 1, fs.fetchHalfClosed)
			fs.mu.Unlock()
		})
	}

	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	err := c.Consume(ctx, "sub", "c1", func(context.Context, *Message) error { return nil })
	require.ErrorIs(t, err, context.Canceled, "a done ctx opens no stream")
}

func TestConsumeStreamErrors(t *testing.T) {
	fs, c := startFake(t)
	nop := func(context.Context, *Message) error { return nil }

	err := c.Consume(t.Context(), "missing", "c1", nop)
	require.Equal(t, codes.NotFound, status.Code(err), "status errors come back as they are: %v", err)
	code, ok := ErrorCode(err)
	require.True(t, ok)
	require.Equal(t, hstreampb.ErrorCode_SubscriptionNotFound, code)

	_, err = c.CreateSubscription(t.Context(), "sub", "s")
	require.NoError(t, err)
	fs.mu.Lock()
	fs.deliveries["sub"] = []*hstreampb.ReceivedRecord{deliveredBatch(t, 1, 1, "a")}
	fs.fetchErr = status.Error(codes.Unavailable, "node going away")
	fs.mu.Unlock()
	// With one attempt, Consume does not reconnect (consumer_reconnect_test.go
	// covers reconnects).
	once, err := Dial(t.Context(), c.Addr(), WithMaxAttempts(1))
	require.NoError(t, err)
	defer once.Close()
	delivered := 0
	err = once.Consume(t.Context(), "sub", "c1", func(context.Context, *Message) error { delivered++; return nil })
	require.Equal(t, codes.Unavailable, status.Code(err))
	require.Equal(t, 1, delivered, "records before the failure are delivered")

	contaminated := deliveredBatch(t, 1, 1, "a", "b")
	contaminated.RecordIds = contaminated.RecordIds[:1]
	corrupt := deliveredBatch(t, 1, 2, "a")
	corrupt.Record.Payload = []byte("not gzip")
	for _, tc := range []struct {
		name  string
		batch *hstreampb.ReceivedRecord
		want  error
	}{
		{"ids and batchSize differ", contaminated, ErrDataContaminated},
		{"payload does not decode", corrupt, ErrBadResponse},
		{"ids without a batch", &hstreampb.ReceivedRecord{RecordIds: contaminated.RecordIds}, ErrBadResponse},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fs.mu.Lock()
			fs.deliveries["sub"] = []*hstreampb.ReceivedRecord{tc.batch}
			fs.fetchErr = nil
			fs.mu.Unlock()
			err := c.Consume(t.Context(), "sub", "c1", nop)
			require.ErrorIs(t, err, tc.want)
			require.ErrorContains(t, err, `Consume "sub"`)
		})
	}
}

// startFakeSubscription starts the fake server with subscription "sub" on
// stream "s", which delivers batches to the first consumer that fetches.
func startFakeSubscription(t *testing.T, batches ...*hstreampb.ReceivedRecord) (*fakeServer, *Client) {
	t.Helper()
	fs, c := startFake(t)
	_, err := c.CreateSubscription(t.Context(), "sub", "s")
	require.NoError(t, err)
	fs.mu.Lock()
	fs.deliveries["sub"] = batches
	fs.mu.Unlock()
	return fs, c
}
