package subscription

import (
	"context"
	"fmt"
	"maps"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/proto"

	"github.com/weir-log/weir/api/hstreampb"
	"github.com/weir-log/weir/api/wire"
	"github.com/weir-log/weir/cluster"
)

// fakeLog is an in-memory shard log.
type fakeLog struct {
	mu      sync.Mutex
	entries []cluster.Entry // increasing indexes
	first   uint64
	grown   chan struct{}
	fail    error  // the next Read fails with it
	corrupt uint64 // Read stops at this index with a CorruptEntryError
}

func newFakeLog() *fakeLog { return &fakeLog{first: 1, grown: make(chan struct{})} }

// append adds a batch of n records (keys and payloads "p<i>") at the next
// index and returns the index.
func (l *fakeLog) append(t *testing.T, n int) uint64 {
	t.Helper()
	recs := make([]*hstreampb.HStreamRecord, n)
	for i := range recs {
		recs[i] = &hstreampb.HStreamRecord{Header: &hstreampb.HStreamRecordHeader{Key: "k"}, Payload: fmt.Appendf(nil, "p%d", i)}
	}
	b, err := wire.EncodeBatch(recs, hstreampb.CompressionType_None)
	require.NoError(t, err)
	raw, err := proto.Marshal(b)
	require.NoError(t, err)
	l.mu.Lock()
	defer l.mu.Unlock()
	idx := uint64(1)
	if len(l.entries) > 0 {
		idx = l.entries[len(l.entries)-1].Index + 1
	}
	l.entries = append(l.entries, cluster.Entry{Index: idx, AppendTime: time.Now(), Batch: raw})
	close(l.grown)
	l.grown = make(chan struct{})
	return idx
}

// failNextRead makes the next Read fail.
func (l *fakeLog) failNextRead(err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.fail = err
}

// trim drops every entry below first.
func (l *fakeLog) trim(first uint64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for len(l.entries) > 0 && l.entries[0].Index < first {
		l.entries = l.entries[1:]
	}
	l.first = first
}

func (l *fakeLog) Read(from uint64, maxEntries, _ int) ([]cluster.Entry, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if err := l.fail; err != nil {
		l.fail = nil
		return nil, err
	}
	var out []cluster.Entry
	for _, e := range l.entries {
		if e.Index >= from && len(out) < maxEntries {
			if e.Index == l.corrupt {
				return out, &cluster.CorruptEntryError{Index: e.Index, Err: cluster.ErrCorruptEntry}
			}
			out = append(out, e)
		}
	}
	return out, nil
}

func (l *fakeLog) Committed() (uint64, <-chan struct{}) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.entries) == 0 {
		return l.first - 1, l.grown
	}
	return l.entries[len(l.entries)-1].Index, l.grown
}

func (l *fakeLog) Removed() bool { return false }

func (l *fakeLog) First() uint64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.first
}

// fakeSource is an in-memory node: one stream's shards, subscriptions and
// checkpoints.
type fakeSource struct {
	mu          sync.Mutex
	subs        map[string]cluster.SubscriptionMeta
	shards      map[string][]uint64 // stream → shard ids
	logs        map[uint64]*fakeLog
	checkpoints map[string]cluster.Checkpoint
	saves       int
	lost        map[string]string // subscription → "lapsed" (no holder) or "other" (another node holds it)
	claims      int
}

func newFakeSource() *fakeSource {
	return &fakeSource{
		subs:        make(map[string]cluster.SubscriptionMeta),
		shards:      make(map[string][]uint64),
		logs:        make(map[uint64]*fakeLog),
		checkpoints: make(map[string]cluster.Checkpoint),
		lost:        make(map[string]string),
	}
}

func (f *fakeSource) addShard(stream string, id uint64) *fakeLog {
	f.mu.Lock()
	defer f.mu.Unlock()
	l := newFakeLog()
	f.logs[id] = l
	f.shards[stream] = append(f.shards[stream], id)
	return l
}

func (f *fakeSource) addSub(m cluster.SubscriptionMeta) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.subs[m.ID] = m
}

func (f *fakeSource) saved(id string) (cluster.Checkpoint, int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.checkpoints[id], f.saves
}

func (f *fakeSource) Subscription(id string) (cluster.SubscriptionMeta, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	m, ok := f.subs[id]
	if !ok {
		return m, fmt.Errorf("%w: %q", cluster.ErrSubscriptionNotFound, id)
	}
	return m, nil
}

func (f *fakeSource) StreamShards(stream string) ([]cluster.ShardMeta, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	ids, ok := f.shards[stream]
	if !ok {
		return nil, fmt.Errorf("%w: %q", cluster.ErrStreamNotFound, stream)
	}
	out := make([]cluster.ShardMeta, len(ids))
	for i, id := range ids {
		out[i] = cluster.ShardMeta{ID: id, Stream: stream}
	}
	return out, nil
}

func (f *fakeSource) Shard(id uint64) (Log, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	l, ok := f.logs[id]
	if !ok {
		return nil, fmt.Errorf("%w: %d", cluster.ErrShardNotFound, id)
	}
	return l, nil
}

// ClaimSubscription succeeds unless another node holds the subscription.
func (f *fakeSource) ClaimSubscription(_ context.Context, id string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.claims++
	if f.lost[id] == "other" {
		return fmt.Errorf("%w: %q", cluster.ErrNotOwner, id)
	}
	delete(f.lost, id)
	return nil
}

func (f *fakeSource) ReleaseSubscription(context.Context, string) error { return nil }

// loseClaim takes this node's claim of a subscription away: how is
// "lapsed" (the node's lease expired) or "other" (another node claimed it).
func (f *fakeSource) loseClaim(id, how string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.lost[id] = how
}

func (f *fakeSource) Checkpoint(_ context.Context, id string) (cluster.Checkpoint, bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	cp, ok := f.checkpoints[id]
	return cp, ok, nil
}

func (f *fakeSource) SaveCheckpoint(_ context.Context, id string, cp cluster.Checkpoint) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.lost[id] != "" {
		return fmt.Errorf("%w: this node no longer holds %q", cluster.ErrNotOwner, id)
	}
	f.checkpoints[id] = cluster.Checkpoint{Next: maps.Clone(cp.Next), SavedAt: cp.SavedAt}
	f.saves++
	return nil
}

func (f *fakeSource) DeleteSubscription(_ context.Context, id string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.subs, id)
	delete(f.checkpoints, id)
	return nil
}

func (f *fakeSource) DeleteStream(_ context.Context, name string, _ bool) ([]string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.shards, name)
	var gone []string
	for id, m := range f.subs {
		if m.Stream == name {
			gone = append(gone, id)
			delete(f.subs, id)
		}
	}
	return gone, nil
}

// newTestManager builds a manager over src with fast ticks.
func newTestManager(t *testing.T, src Source) *Manager {
	t.Helper()
	m, err := New(Options{Source: src, CheckpointInterval: 20 * time.Millisecond, Tick: 5 * time.Millisecond})
	require.NoError(t, err)
	t.Cleanup(m.Close)
	return m
}

// next takes the next delivery within a deadline.
func next(t *testing.T, c *Consumer) *hstreampb.ReceivedRecord {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	rr, err := c.Next(ctx)
	require.NoError(t, err)
	return rr
}

// nothingMore checks that no delivery comes within d.
func nothingMore(t *testing.T, c *Consumer, d time.Duration) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	rr, err := c.Next(ctx)
	require.ErrorIs(t, err, context.DeadlineExceeded, "unexpected delivery %v", rr)
}
