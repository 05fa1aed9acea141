package cluster

import (
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// A shard the catalog places here and that is not open yet (a stream
// being created lists its shards before their groups open) is not a fault
// for noLeaderWait; past it, Ready names it. A shard that opens, or leaves
// the catalog, is forgotten: its grace starts afresh if it is missing
// again.
func TestReadyGivesUnopenedShardsAGrace(t *testing.T) {
	n := &Node{
		opts: Options{Self: NodeInfo{ID: 1}},
		cat:  newCatalog(nil, "/t/"),
		eng:  newEngine(1, nil, slog.New(slog.NewTextHandler(io.Discard, nil)), time.Millisecond, 0, 1<<20, 16),
		stop: make(chan struct{}),
	}
	n.eng.started.Store(true)
	n.cat.shards[7] = ShardMeta{ID: 7, Stream: "s", Replicas: []uint64{1}}
	n.cat.shards[8] = ShardMeta{ID: 8, Stream: "elsewhere", Replicas: []uint64{2}} // not placed here

	t0 := time.Now()
	require.NoError(t, n.ready(t0))
	require.NoError(t, n.ready(t0.Add(noLeaderWait-time.Millisecond)))
	err := n.ready(t0.Add(noLeaderWait + time.Second))
	require.ErrorContains(t, err, `shard 7 of stream "s" has not been open for`)
	require.NotContains(t, err.Error(), "shard 8")

	// Opened (here: gone from the catalog) and missing again later: a new
	// grace.
	n.cat.mu.Lock()
	delete(n.cat.shards, 7)
	n.cat.mu.Unlock()
	require.NoError(t, n.ready(t0.Add(noLeaderWait+2*time.Second)))
	n.cat.mu.Lock()
	n.cat.shards[7] = ShardMeta{ID: 7, Stream: "s", Replicas: []uint64{1}}
	n.cat.mu.Unlock()
	t1 := t0.Add(10 * time.Second)
	require.NoError(t, n.ready(t1))
	require.NoError(t, n.ready(t1.Add(noLeaderWait/2)))
	require.Error(t, n.ready(t1.Add(noLeaderWait)))
}
