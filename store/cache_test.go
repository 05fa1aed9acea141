package store

import (
	"testing"

	"github.com/stretchr/testify/require"
	pb "go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"
)

func cents(lo, hi, term uint64, size int) []cachedEntry {
	var out []cachedEntry
	for i := lo; i <= hi; i++ {
		out = append(out, cachedEntry{e: &pb.Entry{Index: proto.Uint64(i), Term: proto.Uint64(term)}, size: size})
	}
	return out
}

func indexes(ents []*pb.Entry) []uint64 {
	var out []uint64
	for _, e := range ents {
		out = append(out, e.GetIndex())
	}
	return out
}

func TestTailCache(t *testing.T) {
	var c tailCache
	_, ok := c.get(1, 2, 100)
	require.False(t, ok, "empty cache serves nothing")

	c.add(cents(1, 10, 1, 10))
	got, ok := c.get(3, 6, 1000)
	require.True(t, ok)
	require.Equal(t, []uint64{3, 4, 5}, indexes(got))
	got, ok = c.get(3, 6, 15)
	require.True(t, ok)
	require.Equal(t, []uint64{3}, indexes(got), "maxSize limits, but at least one entry")
	_, ok = c.get(5, 12, 1000)
	require.False(t, ok, "a range past the cached tail goes to the store")

	// A conflicting suffix replaces entries from its first index on.
	c.add(cents(8, 9, 2, 10))
	got, _ = c.get(7, 10, 1000)
	require.Equal(t, []uint64{7, 8, 9}, indexes(got))
	require.EqualValues(t, 2, got[1].GetTerm())
	require.Equal(t, 90, c.bytes)
	_, ok = c.get(10, 11, 1000)
	require.False(t, ok, "entry 10 was replaced away")

	// Compaction drops the prefix; a gap resets.
	c.dropThrough(4)
	_, ok = c.get(4, 5, 1000)
	require.False(t, ok)
	got, _ = c.get(5, 10, 1000)
	require.Equal(t, []uint64{5, 6, 7, 8, 9}, indexes(got))
	c.add(cents(20, 21, 2, 10))
	_, ok = c.get(9, 10, 1000)
	require.False(t, ok, "a non-contiguous add starts over")
	got, _ = c.get(20, 22, 1000)
	require.Equal(t, []uint64{20, 21}, indexes(got))

	// Bounds: entries, then bytes, oldest first; one large entry stays.
	c.reset()
	c.add(cents(1, cacheMaxEntries+10, 1, 1))
	require.Len(t, c.ents, cacheMaxEntries)
	require.EqualValues(t, 11, c.first())
	c.add(cents(cacheMaxEntries+11, cacheMaxEntries+11, 1, 2*cacheMaxBytes))
	require.Len(t, c.ents, 1)
	require.Equal(t, 2*cacheMaxBytes, c.bytes)
}
