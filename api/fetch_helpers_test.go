package api_test

import (
	"context"
	"errors"
	"io"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/weir-log/weir/api/hstreampb"
	"github.com/weir-log/weir/api/wire"
)

// createSub creates a subscription.
func createSub(t *testing.T, api hstreampb.HStreamApiClient, id, stream string, ackTimeout, window int32, offset hstreampb.SpecialOffset) {
	t.Helper()
	_, err := api.CreateSubscription(ctxT(t), &hstreampb.Subscription{
		SubscriptionId: id, StreamName: stream, AckTimeoutSeconds: ackTimeout, MaxUnackedRecords: window, Offset: offset,
	})
	require.NoError(t, err)
}

// fetcher is one consumer on a StreamingFetch stream. It records every
// record it receives, in order, and acks per its policy.
type fetcher struct {
	t      *testing.T
	name   string
	stream hstreampb.HStreamApi_StreamingFetchClient
	cancel context.CancelFunc
	done   chan struct{}
	// ack decides, per received batch, whether to ack it at once.
	ack func(recs []gotRecord) bool
	// held counts records received and not yet acked, over every fetcher
	// sharing it; maxHeld is its high-water mark.
	held, maxHeld *atomic.Int64

	ackPeriod time.Duration // see ackEvery
	sendMu    sync.Mutex

	mu      sync.Mutex
	got     []gotRecord // guarded by mu
	recvErr error       // guarded by mu: how the stream ended
}

type fetchOpt func(*fetcher)

func noAck() fetchOpt { return func(f *fetcher) { f.ack = func([]gotRecord) bool { return false } } }

func countHeld(held, maxHeld *atomic.Int64) fetchOpt {
	return func(f *fetcher) { f.held, f.maxHeld = held, maxHeld }
}

// ackEvery holds what arrives and acks it all every d, as consumers that
// ack in batches do.
func ackEvery(d time.Duration) fetchOpt {
	return func(f *fetcher) {
		f.ack = func([]gotRecord) bool { return false }
		f.ackPeriod = d
	}
}

// startFetch attaches a consumer and starts receiving. By default it acks
// every batch as soon as it arrives.
func startFetch(t *testing.T, api hstreampb.HStreamApiClient, sub, name string, opts ...fetchOpt) *fetcher {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	stream, err := api.StreamingFetch(ctx)
	require.NoError(t, err)
	f := &fetcher{t: t, name: name, stream: stream, cancel: cancel, done: make(chan struct{}),
		ack: func([]gotRecord) bool { return true }, held: new(atomic.Int64), maxHeld: new(atomic.Int64)}
	for _, o := range opts {
		o(f)
	}
	require.NoError(t, stream.Send(&hstreampb.StreamingFetchRequest{SubscriptionId: sub, ConsumerName: name}))
	t.Cleanup(f.stop)
	go f.recv(sub)
	if f.ackPeriod > 0 {
		go f.ackLoop(ctx, sub)
	}
	return f
}

// ackLoop acks everything received so far, every ackPeriod.
func (f *fetcher) ackLoop(ctx context.Context, sub string) {
	acked := 0
	tick := time.NewTicker(f.ackPeriod)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		recs := f.records()
		if len(recs) > acked {
			f.ackRecords(sub, recs[acked:])
			acked = len(recs)
		}
	}
}

func (f *fetcher) recv(sub string) {
	defer close(f.done)
	for {
		resp, err := f.stream.Recv()
		if err != nil {
			f.mu.Lock()
			f.recvErr = err
			f.mu.Unlock()
			return
		}
		recs := unpackFetched(f.t, resp.GetReceivedRecords())
		if recs == nil {
			return
		}
		if h := f.held.Add(int64(len(recs))); h > f.maxHeld.Load() {
			for m := f.maxHeld.Load(); h > m && !f.maxHeld.CompareAndSwap(m, h); m = f.maxHeld.Load() {
			}
		}
		f.mu.Lock()
		f.got = append(f.got, recs...)
		f.mu.Unlock()
		if f.ack(recs) {
			f.ackRecords(sub, recs)
		}
	}
}

// ackRecords sends one ack request for recs.
func (f *fetcher) ackRecords(sub string, recs []gotRecord) {
	ids := make([]*hstreampb.RecordId, len(recs))
	for i, r := range recs {
		ids[i] = r.id
	}
	f.held.Add(-int64(len(recs)))
	f.sendAck(sub, ids)
}

func (f *fetcher) sendAck(sub string, ids []*hstreampb.RecordId) {
	f.sendMu.Lock()
	defer f.sendMu.Unlock()
	_ = f.stream.Send(&hstreampb.StreamingFetchRequest{SubscriptionId: sub, ConsumerName: f.name, AckIds: ids})
}

// stop disconnects the consumer (cancels its stream) and waits.
func (f *fetcher) stop() {
	f.cancel()
	<-f.done
}

// records returns a copy of what was received so far.
func (f *fetcher) records() []gotRecord {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]gotRecord(nil), f.got...)
}

// ended waits for the stream to end and returns its error (nil for a clean
// end).
func (f *fetcher) ended(t *testing.T) error {
	t.Helper()
	select {
	case <-f.done:
	case <-time.After(10 * time.Second):
		t.Fatalf("consumer %s: the fetch did not end", f.name)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if errors.Is(f.recvErr, io.EOF) {
		return nil
	}
	return f.recvErr
}

// unpackFetched checks one delivered batch: one id per record, ids of one
// batch, and decodes it. Unlike unpack, batch indexes need not start at 0 (a
// redelivery carries only the unacked records of a batch).
func unpackFetched(t *testing.T, rr *hstreampb.ReceivedRecord) []gotRecord {
	b := rr.GetRecord()
	ids := rr.GetRecordIds()
	if b == nil || b.GetPublishTime() == nil || len(ids) != int(b.GetBatchSize()) || len(ids) == 0 {
		t.Errorf("bad delivery: batchSize %d, %d ids, publishTime %v", b.GetBatchSize(), len(ids), b.GetPublishTime())
		return nil
	}
	recs, err := wire.DecodeBatch(b, 0)
	if err != nil || len(recs) != len(ids) {
		t.Errorf("bad delivery: %d ids, %d records, %v", len(ids), len(recs), err)
		return nil
	}
	out := make([]gotRecord, len(recs))
	for i, r := range recs {
		if ids[i].GetBatchId() != ids[0].GetBatchId() || (i > 0 && ids[i].GetBatchIndex() <= ids[i-1].GetBatchIndex()) {
			t.Errorf("bad delivery: ids %v", ids)
			return nil
		}
		out[i] = gotRecord{id: ids[i], key: r.GetHeader().GetKey(), payload: r.GetPayload(), publish: b.GetPublishTime().AsTime()}
	}
	return out
}

// waitAll waits until the fetchers together have received every id in want.
func waitAll(t *testing.T, want map[string]bool, within time.Duration, fs ...*fetcher) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		got := make(map[string]bool)
		for _, f := range fs {
			for _, r := range f.records() {
				got[wire.FormatRecordID(r.id)] = true
			}
		}
		missing := 0
		for id := range want {
			if !got[id] {
				missing++
			}
		}
		if missing == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d records not delivered within %s", missing, len(want), within)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// keyedPayload is "<key>/<seq>"; seqOf parses the seq back.
func keyedPayload(key string, seq int) []byte { return []byte(key + "/" + strconv.Itoa(seq)) }

func seqOf(t *testing.T, r gotRecord) int {
	t.Helper()
	_, s, ok := strings.Cut(string(r.payload), "/")
	require.True(t, ok, "payload %q", r.payload)
	n, err := strconv.Atoi(s)
	require.NoError(t, err)
	return n
}

// requireKeyOrder checks that, within one consumer, the records of each key
// arrive in append order: ignoring repeats of records already received
// (redeliveries), each key's sequence numbers increase.
func requireKeyOrder(t *testing.T, f *fetcher) {
	t.Helper()
	seen := make(map[string]bool)
	last := make(map[string]int)
	for _, r := range f.records() {
		id := wire.FormatRecordID(r.id)
		if seen[id] {
			continue
		}
		seen[id] = true
		seq := seqOf(t, r)
		if prev, ok := last[r.key]; ok {
			require.Greater(t, seq, prev, "consumer %s: key %q out of order", f.name, r.key)
		}
		last[r.key] = seq
	}
}

// waitConsumers waits until a subscription lists n consumers.
func waitConsumers(t *testing.T, api hstreampb.HStreamApiClient, sub string, n int) {
	t.Helper()
	require.Eventually(t, func() bool {
		resp, err := api.ListConsumers(ctxT(t), &hstreampb.ListConsumersRequest{SubscriptionId: sub})
		return err == nil && len(resp.GetConsumers()) == n
	}, 10*time.Second, 10*time.Millisecond, "subscription %q never had %d consumers", sub, n)
}
