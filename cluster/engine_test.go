package cluster

import (
	"errors"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/weir-log/weir/store"
)

// After a store write fails the engine refuses work, and it still stops:
// adding a shard is refused (it used to leave a Ready nobody consumed, so
// the loop spun and stop waited forever).
func TestFailedEngineRefusesShardsAndStops(t *testing.T) {
	db, err := store.Open(t.TempDir(), store.Options{})
	require.NoError(t, err)
	defer db.Close()
	e := newEngine(1, db, slog.New(slog.NewTextHandler(io.Discard, nil)), 10*time.Millisecond, 0, 1<<20, 16)
	e.start()
	require.NoError(t, e.do(func() error { _, err := e.addShard(ShardMeta{ID: 1, Replicas: []uint64{1}}); return err }))

	broken := errors.New("disk on fire")
	require.NoError(t, e.do(func() error { e.fail(broken); return nil }))
	err = e.do(func() error { _, err := e.addShard(ShardMeta{ID: 2, Replicas: []uint64{1}}); return err })
	require.ErrorIs(t, err, broken)

	s, ok := e.shard(1)
	require.True(t, ok)
	_, _, err = s.Append(t.Context(), []byte("x"))
	require.ErrorIs(t, err, broken)

	stopped := make(chan struct{})
	go func() { e.stop(); close(stopped) }()
	select {
	case <-stopped:
	case <-time.After(5 * time.Second):
		t.Fatal("a failed engine did not stop")
	}
}
