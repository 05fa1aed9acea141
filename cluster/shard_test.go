package cluster_test

import (
	"bytes"
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/weir-log/weir/cluster"
	"github.com/weir-log/weir/conf"
	"github.com/weir-log/weir/internal/nodetest"
)

func TestAppendRead(t *testing.T) {
	n := nodetest.Start(t)
	node := n.Server.Node()
	_, metas := createStream(t, node, "s", 1, 0)
	sh := shardOf(t, node, metas[0].ID)

	assert.Empty(t, readAll(t, sh), "a new shard has no data entries")
	var got []appended
	for i := range 20 {
		data := []byte(fmt.Sprintf("batch-%02d-%s", i, bytes.Repeat([]byte{byte('a' + i)}, i)))
		_, grown := sh.Committed()
		idx, at, err := sh.Append(t.Context(), data)
		require.NoError(t, err)
		select {
		case <-grown:
		default:
			t.Fatalf("Committed's channel is still open after the append at %d", idx)
		}
		// Readable as soon as Append returns.
		ents, err := sh.Read(idx, 10, 1<<20)
		require.NoError(t, err)
		require.Len(t, ents, 1, "append %d at index %d", i, idx)
		assert.Equal(t, cluster.Entry{Index: idx, AppendTime: at, Batch: data}, ents[0])
		assert.GreaterOrEqual(t, committed(sh), idx)
		if i > 0 {
			// One appender on a quiet shard: nothing else enters the log.
			assert.Equal(t, got[i-1].index+1, idx)
			assert.False(t, at.Before(got[i-1].at), "append time went back at index %d", idx)
		}
		got = append(got, appended{idx, at, data})
	}
	// Raft's own entries (the bootstrap and the election) are skipped.
	first := sh.First()
	assert.Greater(t, got[0].index, first)
	ents, err := sh.Read(first, 1, 1<<20)
	require.NoError(t, err)
	require.Len(t, ents, 1)
	assert.Equal(t, got[0].index, ents[0].Index)
	assert.Equal(t, got[19].index, committed(sh))

	all := readAll(t, sh)
	require.Len(t, all, 20)
	for i, e := range all {
		assert.Equal(t, cluster.Entry{Index: got[i].index, AppendTime: got[i].at, Batch: got[i].data}, e)
	}
	last, ok, err := sh.LastData()
	require.NoError(t, err)
	require.True(t, ok)
	assert.Equal(t, all[19], last)

	i0 := got[0].index
	for _, tc := range []struct {
		name       string
		from       uint64
		maxEntries int
		maxBytes   int
		want       []uint64
	}{
		{"maxEntries", i0, 3, 1 << 20, []uint64{i0, i0 + 1, i0 + 2}},
		{"maxBytes below one entry still gives one", i0, 100, 1, []uint64{i0}},
		{"maxBytes exactly two entries", i0, 100, len(got[0].data) + len(got[1].data), []uint64{i0, i0 + 1}},
		{"maxBytes one short of three entries", i0, 100, len(got[0].data) + len(got[1].data) + len(got[2].data) - 1, []uint64{i0, i0 + 1}},
		{"maxBytes exactly three entries", i0, 100, len(got[0].data) + len(got[1].data) + len(got[2].data), []uint64{i0, i0 + 1, i0 + 2}},
		{"from the middle", got[18].index, 100, 1 << 20, []uint64{got[18].index, got[19].index}},
		{"below First starts at First", 0, 2, 1 << 20, []uint64{i0, i0 + 1}},
		{"maxEntries 0", i0, 0, 1 << 20, nil},
		{"past the tail", got[19].index + 1, 100, 1 << 20, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ents, err := sh.Read(tc.from, tc.maxEntries, tc.maxBytes)
			require.NoError(t, err)
			if tc.want == nil {
				assert.Empty(t, ents)
				return
			}
			assert.Equal(t, tc.want, indexes(ents))
		})
	}
}

func TestConcurrentAppendsOrdered(t *testing.T) {
	n := nodetest.Start(t)
	node := n.Server.Node()
	_, metas := createStream(t, node, "s", 2, 0)
	shards := []*cluster.Shard{shardOf(t, node, metas[0].ID), shardOf(t, node, metas[1].ID)}

	const appenders, each = 8, 25
	results := make([][]appended, appenders)
	var wg sync.WaitGroup
	for g := range appenders {
		sh := shards[g%2]
		wg.Go(func() {
			for i := range each {
				data := []byte(fmt.Sprintf("g%d-%d", g, i))
				idx, at, err := sh.Append(context.Background(), data)
				if err != nil {
					t.Errorf("appender %d: %v", g, err)
					return
				}
				results[g] = append(results[g], appended{idx, at, data})
			}
		})
	}
	wg.Wait()
	require.False(t, t.Failed())

	for s, sh := range shards {
		byIndex := make(map[uint64]appended)
		for g := s; g < appenders; g += 2 {
			for i, a := range results[g] {
				_, dup := byIndex[a.index]
				require.False(t, dup, "index %d handed out twice", a.index)
				byIndex[a.index] = a
				if i > 0 {
					assert.Greater(t, a.index, results[g][i-1].index, "one appender's indexes increase")
				}
			}
		}
		all := readAll(t, sh)
		require.Len(t, all, appenders/2*each)
		for i, e := range all {
			a, ok := byIndex[e.Index]
			require.True(t, ok, "index %d holds no acknowledged append", e.Index)
			assert.Equal(t, a.data, e.Batch, "index %d", e.Index)
			assert.Equal(t, a.at, e.AppendTime, "index %d", e.Index)
			if i > 0 {
				assert.False(t, e.AppendTime.Before(all[i-1].AppendTime), "append time went back at index %d", e.Index)
			}
		}
	}
}

// waitPastMs returns once the clock has moved at least 2 ms past at, so the
// next append is stamped strictly later than at+1ms.
func waitPastMs(at time.Time) {
	time.Sleep(20 * time.Millisecond) // make the gap; correctness does not depend on it
	for time.Now().UnixMilli() <= at.UnixMilli()+1 {
		time.Sleep(time.Millisecond)
	}
}

func TestIndexAtTime(t *testing.T) {
	n := nodetest.Start(t)
	node := n.Server.Node()
	_, metas := createStream(t, node, "s", 1, 0)
	sh := shardOf(t, node, metas[0].ID)

	// No data yet: every time is past the end.
	for _, at := range []time.Time{time.Unix(0, 0), time.Now(), time.Now().Add(time.Hour)} {
		idx, err := sh.IndexAtTime(at)
		require.NoError(t, err)
		assert.Equal(t, committed(sh)+1, idx)
	}

	var bursts [3][]appended
	for b := range bursts {
		if b > 0 {
			waitPastMs(bursts[b-1][len(bursts[b-1])-1].at)
		}
		bursts[b] = appendSeq(t, sh, fmt.Sprint("burst", b), 5)
	}
	for b := 1; b < 3; b++ {
		prevLast, first := bursts[b-1][4], bursts[b][0]
		require.Greater(t, first.at.UnixMilli(), prevLast.at.UnixMilli()+1, "burst %d does not start after a gap", b)
		// Any time inside the gap finds the burst's first entry.
		for _, at := range []time.Time{
			prevLast.at.Add(time.Millisecond),
			prevLast.at.Add(first.at.Sub(prevLast.at) / 2),
			first.at,
		} {
			idx, err := sh.IndexAtTime(at)
			require.NoError(t, err)
			assert.Equal(t, first.index, idx, "burst %d, time %s", b, at.Format(time.StampMilli))
		}
	}
	for _, at := range []time.Time{time.Unix(0, 0), bursts[0][0].at.Add(-time.Millisecond), bursts[0][0].at} {
		idx, err := sh.IndexAtTime(at)
		require.NoError(t, err)
		assert.Equal(t, bursts[0][0].index, idx, "time %s", at)
	}
	for _, at := range []time.Time{bursts[2][4].at.Add(time.Millisecond), time.Now().Add(time.Hour)} {
		idx, err := sh.IndexAtTime(at)
		require.NoError(t, err)
		assert.Equal(t, committed(sh)+1, idx, "time %s", at)
	}

	// Every entry's own time: the first entry stamped with that millisecond.
	all := readAll(t, sh)
	require.Len(t, all, 15)
	for _, e := range all {
		want := e.Index
		for _, o := range all {
			if o.AppendTime.Equal(e.AppendTime) {
				want = o.Index
				break
			}
		}
		idx, err := sh.IndexAtTime(e.AppendTime)
		require.NoError(t, err)
		assert.Equal(t, want, idx, "time of index %d", e.Index)
	}
}

func TestTrim(t *testing.T) {
	n := nodetest.Start(t)
	node := n.Server.Node()
	_, metas := createStream(t, node, "s", 1, 0)
	sh := shardOf(t, node, metas[0].ID)
	ctx := t.Context()
	got := appendSeq(t, sh, "t", 10)
	lastBefore, ok, err := sh.LastData()
	require.NoError(t, err)
	require.True(t, ok)

	require.NoError(t, sh.Trim(ctx, got[3].index))
	assert.Equal(t, got[4].index, sh.First())
	ents := readAll(t, sh)
	require.Len(t, ents, 6)
	assert.Equal(t, got[4].index, ents[0].Index)
	assert.Equal(t, got[4].data, ents[0].Batch)
	ents, err = sh.Read(got[1].index, 2, 1<<20)
	require.NoError(t, err)
	assert.Equal(t, []uint64{got[4].index, got[5].index}, indexes(ents), "a read below First starts at First")
	last, ok, err := sh.LastData()
	require.NoError(t, err)
	require.True(t, ok)
	assert.Equal(t, lastBefore, last)
	idx, err := sh.IndexAtTime(time.Unix(0, 0))
	require.NoError(t, err)
	assert.Equal(t, got[4].index, idx)

	// Below First: nothing happens.
	require.NoError(t, sh.Trim(ctx, got[1].index))
	require.NoError(t, sh.Trim(ctx, 0))
	assert.Equal(t, got[4].index, sh.First())
	assert.Len(t, readAll(t, sh), 6)

	// Past the tail: capped at Committed. The trim is an entry of the
	// log itself (so every replica applies it), at c+1.
	c := committed(sh)
	require.NoError(t, sh.Trim(ctx, c+1000))
	assert.Equal(t, c+1, sh.First())
	assert.Empty(t, readAll(t, sh))
	assert.Equal(t, c+1, committed(sh))

	// The shard still takes appends after its whole log was trimmed.
	more := appendSeq(t, sh, "after", 2)
	assert.Equal(t, c+2, more[0].index)
	ents = readAll(t, sh)
	require.Len(t, ents, 2)
	assert.Equal(t, more[1].data, ents[1].Batch)

	// A fully trimmed log survives a restart and still takes appends, with
	// append times that do not go back.
	c = committed(sh)
	require.NoError(t, sh.Trim(ctx, c))
	n.Restart(t)
	sh = shardOf(t, n.Server.Node(), metas[0].ID)
	assert.Equal(t, c+1, sh.First())
	assert.Empty(t, readAll(t, sh))
	idx, at, err := sh.Append(t.Context(), []byte("after restart"))
	require.NoError(t, err)
	assert.Greater(t, idx, c)
	assert.False(t, at.Before(more[1].at), "append time went back after a full trim and a restart")
	ents = readAll(t, sh)
	require.Len(t, ents, 1)
	assert.Equal(t, idx, ents[0].Index)

	ctxDone, cancel := context.WithCancel(ctx)
	cancel()
	assert.ErrorIs(t, sh.Trim(ctxDone, idx), context.Canceled)
	assert.Equal(t, c+1, sh.First())
}

func TestRetention(t *testing.T) {
	n := nodetest.Start(t, func(c *conf.Config) { c.Store.RetentionCheckInterval = 100 * time.Millisecond })
	node := n.Server.Node()
	_, metas := createStream(t, node, "short", 1, 1)
	_, keepMetas := createStream(t, node, "forever", 1, 0)
	sh := shardOf(t, node, metas[0].ID)
	keep := shardOf(t, node, keepMetas[0].ID)

	old := appendSeq(t, sh, "old", 3)
	keptOld := appendSeq(t, keep, "old", 3)
	time.Sleep(500 * time.Millisecond) // age the old entries by half the backlog
	fresh := appendSeq(t, sh, "fresh", 1)[0]

	// The old entries go once they are older than a second; the fresh one,
	// half a second younger, is still there at that moment.
	var (
		ents     []cluster.Entry
		readErr  error
		oldSince time.Duration
	)
	require.Eventually(t, func() bool {
		first := sh.First()
		ents, readErr = sh.Read(0, 100, 1<<20)
		oldSince = time.Since(old[2].at) // measured after the trim was seen
		return readErr != nil || first > old[2].index
	}, 5*time.Second, 10*time.Millisecond)
	require.NoError(t, readErr)
	assert.GreaterOrEqual(t, oldSince, time.Second, "trimmed before the backlog ran out")
	require.NotEmpty(t, ents, "the fresh entry was trimmed with the old ones")
	assert.Equal(t, cluster.Entry{Index: fresh.index, AppendTime: fresh.at, Batch: fresh.data}, ents[0])

	// A stream without a backlog duration keeps everything.
	ents = readAll(t, keep)
	require.Len(t, ents, 3)
	assert.Equal(t, keptOld[0].index, ents[0].Index)
	assert.Equal(t, keptOld[0].data, ents[0].Batch)
}

func TestGroupCommit(t *testing.T) {
	n := nodetest.Start(t)
	node := n.Server.Node()
	_, metas := createStream(t, node, "s", 4, 0)
	shards := make([]*cluster.Shard, len(metas))
	for i, m := range metas {
		shards[i] = shardOf(t, node, m.ID)
	}

	const appenders, each = 32, 50
	batch := bytes.Repeat([]byte{'r'}, 100)
	before := n.Server.Store().Stats()
	var wg sync.WaitGroup
	var failed sync.Once
	for g := range appenders {
		sh := shards[g%len(shards)]
		wg.Go(func() {
			for range each {
				if _, _, err := sh.Append(context.Background(), batch); err != nil {
					failed.Do(func() { t.Errorf("append: %v", err) })
					return
				}
			}
		})
	}
	wg.Wait()
	require.False(t, t.Failed())
	syncs := n.Server.Store().Stats().Syncs - before.Syncs

	total := 0
	for _, sh := range shards {
		total += len(readAll(t, sh))
	}
	assert.Equal(t, appenders*each, total)
	t.Logf("%d appends, %d syncs", appenders*each, syncs)
	assert.Less(t, syncs, uint64(appenders*each/2), "appends are not sharing syncs")
	assert.Positive(t, syncs)
}

// Reads and time lookups racing a trim must start at the new First, never
// fail: retention trims in the background while readers sit at the head of
// the log.
func TestReadDuringTrim(t *testing.T) {
	n := nodetest.Start(t)
	node := n.Server.Node()
	_, metas := createStream(t, node, "s", 1, 0)
	sh := shardOf(t, node, metas[0].ID)
	got := appendSeq(t, sh, "r", 150)
	byIndex := make(map[uint64][]byte)
	for _, a := range got {
		byIndex[a.index] = a.data
	}

	stop := make(chan struct{})
	var wg sync.WaitGroup
	var readErrs, timeErrs, lastErrs []error
	wg.Go(func() {
		for {
			select {
			case <-stop:
				return
			default:
			}
			ents, err := sh.Read(0, 1, 1<<20)
			if err != nil {
				readErrs = append(readErrs, err)
				continue
			}
			for _, e := range ents {
				if !bytes.Equal(byIndex[e.Index], e.Batch) {
					readErrs = append(readErrs, fmt.Errorf("index %d holds %q", e.Index, e.Batch))
				}
			}
		}
	})
	wg.Go(func() {
		for {
			select {
			case <-stop:
				return
			default:
			}
			if _, err := sh.IndexAtTime(got[149].at); err != nil {
				timeErrs = append(timeErrs, err)
			}
		}
	})
	wg.Go(func() {
		for {
			select {
			case <-stop:
				return
			default:
			}
			if _, _, err := sh.LastData(); err != nil {
				lastErrs = append(lastErrs, err)
			}
		}
	})
	for _, a := range got[:149] {
		require.NoError(t, sh.Trim(t.Context(), a.index))
	}
	close(stop)
	wg.Wait()
	assert.Zero(t, len(readErrs), "Read failed %d times while the log was trimmed; first: %v", len(readErrs), first(readErrs))
	assert.Zero(t, len(timeErrs), "IndexAtTime failed %d times while the log was trimmed; first: %v", len(timeErrs), first(timeErrs))
	assert.Zero(t, len(lastErrs), "LastData failed %d times while the log was trimmed; first: %v", len(lastErrs), first(lastErrs))
	ents := readAll(t, sh)
	require.Len(t, ents, 1)
	assert.Equal(t, got[149].index, ents[0].Index)
}

func first(errs []error) error {
	if len(errs) == 0 {
		return nil
	}
	return errs[0]
}
