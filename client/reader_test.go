package client_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/weir-log/weir/api/hstreampb"
	"github.com/weir-log/weir/client"
	"github.com/weir-log/weir/internal/nodetest"
)

// The stream reader and the shard readers against a real node: from and
// until offsets, by record id and by time.
func TestReadersWithOffsets(t *testing.T) {
	n := nodetest.Start(t)
	c, err := client.Dial(t.Context(), "hstream://"+n.Addr)
	require.NoError(t, err)
	defer c.Close()
	_, err = c.CreateStream(t.Context(), "s", client.ShardCount(1))
	require.NoError(t, err)

	appendPayloads := func(payloads ...string) []*hstreampb.RecordId {
		recs := make([]client.Record, len(payloads))
		for i, p := range payloads {
			recs[i] = client.Record{Key: "k", Payload: []byte(p)}
		}
		ids, err := c.Append(t.Context(), "s", recs)
		require.NoError(t, err)
		return ids
	}
	before := appendPayloads("a1", "a2")
	time.Sleep(20 * time.Millisecond) // apart from the first batch's append time
	between := time.Now()
	time.Sleep(20 * time.Millisecond)
	after := appendPayloads("b1", "b2", "b3")

	var got []string
	collect := func(r client.ReceivedRecord) error {
		got = append(got, string(r.Payload))
		return nil
	}

	// Stream reader: from a time to the tail.
	require.NoError(t, c.ReadStream(t.Context(), "s", client.AtTime(between), client.Latest(), 0, collect))
	require.Equal(t, []string{"b1", "b2", "b3"}, got)
	// From the start until a time.
	got = nil
	require.NoError(t, c.ReadStream(t.Context(), "s", client.Earliest(), client.AtTime(between), 0, collect))
	require.Equal(t, []string{"a1", "a2"}, got)

	// Shard stream: from a record id (inside its batch) to the tail.
	shard := after[0].GetShardId()
	got = nil
	require.NoError(t, c.ReadShardStream(t.Context(), "s", shard, client.ShardAtRecord(after[1]), client.ShardLatest(), 0, collect))
	require.Equal(t, []string{"b2", "b3"}, got)
	got = nil
	require.NoError(t, c.ReadShardStream(t.Context(), "s", shard, client.ShardEarliest(), client.ShardAtRecord(before[1]), 0, collect))
	require.Equal(t, []string{"a1", "a2"}, got)

	// A shard reader from a time: ReadShard returns what follows.
	require.NoError(t, c.CreateShardReader(t.Context(), "s", "r1", shard, client.ShardAtTime(between), 100))
	readers, err := c.ListShardReaders(t.Context())
	require.NoError(t, err)
	require.Contains(t, readers, "r1")
	recs, err := c.ReadShard(t.Context(), "r1", 10)
	require.NoError(t, err)
	got = nil
	for _, r := range recs {
		got = append(got, string(r.Payload))
	}
	require.Equal(t, []string{"b1", "b2", "b3"}, got)
	recs, err = c.ReadShard(t.Context(), "r1", 10)
	require.NoError(t, err)
	require.Empty(t, recs, "nothing more within the reader's timeout")
	require.NoError(t, c.DeleteShardReader(t.Context(), "r1"))
	_, err = c.ReadShard(t.Context(), "r1", 10)
	require.Error(t, err, "a deleted reader is gone")
}
