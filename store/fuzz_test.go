package store

import (
	"testing"

	pb "go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"
)

// FuzzEntryTermIndex checks the hand-rolled reader of an entry's term and
// index against proto.Unmarshal, and that it never panics.
func FuzzEntryTermIndex(f *testing.F) {
	for _, e := range []*pb.Entry{
		{},
		{Index: new(uint64(7)), Term: new(uint64(3))},
		{Index: new(uint64(1 << 40)), Term: new(uint64(1<<64 - 1)), Type: pb.EntryConfChangeV2.Enum(), Data: []byte("payload")},
	} {
		b, err := proto.Marshal(e)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		term, index, err := entryTermIndex(b)
		var e pb.Entry
		if perr := proto.Unmarshal(b, &e); perr != nil {
			return // malformed: entryTermIndex may or may not notice
		}
		if err != nil {
			t.Fatalf("entryTermIndex: %v, but proto.Unmarshal accepts %x", err, b)
		}
		if term != e.GetTerm() || index != e.GetIndex() {
			t.Fatalf("term %d index %d, proto says %d %d", term, index, e.GetTerm(), e.GetIndex())
		}
	})
}

// FuzzKeys checks that keys decode to what they encode and sort by shard,
// then index.
func FuzzKeys(f *testing.F) {
	f.Add(uint64(0), uint64(0), uint64(0), uint64(1))
	f.Add(uint64(1<<64-1), uint64(1<<64-1), uint64(1<<64-1), uint64(0))
	f.Fuzz(func(t *testing.T, s1, i1, s2, i2 uint64) {
		k1, k2 := entryKey(s1, i1), entryKey(s2, i2)
		if s, i, ok := decodeEntryKey(k1); !ok || s != s1 || i != i1 {
			t.Fatalf("decode(%x) = %d %d %v", k1, s, i, ok)
		}
		want := s1 < s2 || (s1 == s2 && i1 < i2)
		if got := string(k1) < string(k2); got != want {
			t.Fatalf("order of (%d,%d) < (%d,%d) is %v", s1, i1, s2, i2, got)
		}
		for _, k := range [][]byte{k1, shardKey(s1, kindHardState), shardKey(s1, kindTruncated), shardKey(s1, kindConfState)} {
			if string(k) < string(shardStart(s1)) || string(k) >= string(shardEnd(s1)) {
				t.Fatalf("key %x outside shard %d bounds", k, s1)
			}
		}
		ts := truncState{i1, i2}
		if got, err := decodeTruncState(ts.encode()); err != nil || got != ts {
			t.Fatalf("truncated state %v round-trips to %v, %v", ts, got, err)
		}
	})
}
