package cluster

import (
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/proto"

	"github.com/weir-log/weir/api/hstreampb"
	"github.com/weir-log/weir/api/wire"
	"github.com/weir-log/weir/store"
)

// A stream deleted and created again under the same name while the old
// stream's groups are still closing keeps live series: closing the old
// groups (the last one drops the name's series) does not take the new
// stream's with them, and the new stream's appends are exported. The
// series go when the new stream's last group closes.
func TestRecreatedStreamKeepsItsSeries(t *testing.T) {
	db, err := store.Open(t.TempDir(), store.Options{})
	require.NoError(t, err)
	defer db.Close()
	e := newEngine(1, db, slog.New(slog.NewTextHandler(io.Discard, nil)), 10*time.Millisecond, 0, 1<<20, 16)
	reg := prometheus.NewRegistry()
	require.NoError(t, e.met.register(reg))
	e.start()
	defer e.stop()
	add := func(id uint64) *Shard {
		var s *Shard
		require.NoError(t, e.do(func() error {
			var err error
			s, err = e.addShard(ShardMeta{ID: id, Stream: "s", Replicas: []uint64{1}})
			return err
		}))
		return s
	}
	remove := func(id uint64) { require.NoError(t, e.do(func() error { return e.removeShard(id) })) }
	batch := func(n int) []byte {
		recs := make([]*hstreampb.HStreamRecord, n)
		for i := range recs {
			recs[i] = &hstreampb.HStreamRecord{Payload: []byte("p")}
		}
		b, err := wire.EncodeBatch(recs, hstreampb.CompressionType_None)
		require.NoError(t, err)
		data, err := proto.Marshal(b)
		require.NoError(t, err)
		return data
	}

	old1, _ := add(1), add(2)
	_, _, err = old1.Append(t.Context(), batch(5))
	require.NoError(t, err)
	require.Equal(t, 5.0, streamCounter(t, reg, "weir_stream_append_records_total", "s"))

	// "s" is deleted (shards 1 and 2) and created again (shard 3): the new
	// group opens before the old ones close.
	recreated := add(3)
	remove(1)
	remove(2)
	_, _, err = recreated.Append(t.Context(), batch(3))
	require.NoError(t, err)
	require.Equal(t, 8.0, streamCounter(t, reg, "weir_stream_append_records_total", "s"),
		"the recreated stream's appends are not exported")
	_, _, err = recreated.Append(t.Context(), batch(4))
	require.NoError(t, err)
	require.Equal(t, 12.0, streamCounter(t, reg, "weir_stream_append_records_total", "s"))
	require.Positive(t, streamCounter(t, reg, "weir_stream_append_bytes_total", "s"))

	// Deleted again, then created again once the old groups are gone: the
	// series start afresh.
	remove(3)
	require.Equal(t, -1.0, streamCounter(t, reg, "weir_stream_append_records_total", "s"), "series kept after the last group closed")
	again := add(4)
	_, _, err = again.Append(t.Context(), batch(2))
	require.NoError(t, err)
	require.Equal(t, 2.0, streamCounter(t, reg, "weir_stream_append_records_total", "s"))
}

// streamCounter is a per-stream counter's value in reg, -1 if it has no
// series for the stream.
func streamCounter(t *testing.T, reg *prometheus.Registry, name, stream string) float64 {
	t.Helper()
	fams, err := reg.Gather()
	require.NoError(t, err)
	for _, f := range fams {
		if f.GetName() != name {
			continue
		}
		for _, m := range f.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "stream" && l.GetValue() == stream {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	return -1
}
