package store

import (
	"fmt"
	"math"
	"strings"
	"testing"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.etcd.io/raft/v3"
	pb "go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"
)

// storageImpl is a raft.Storage with the writes raft's Ready loop performs.
// The suite below runs over raft.MemoryStorage (the reference) and over Log,
// and checks both against its expectations and against each other.
type storageImpl interface {
	raft.Storage
	append(t testing.TB, ents ...*pb.Entry)
	setHardState(t testing.TB, hs *pb.HardState)
	setConfState(t testing.TB, cs *pb.ConfState) // takes effect in the next compact's snapshot
	compact(t testing.TB, index uint64)          // no-op at or below the truncated index
	applySnapshot(t testing.TB, snap *pb.Snapshot) error
}

// memImpl adapts raft.MemoryStorage. MemoryStorage keeps the ConfState in
// its snapshot, so compact takes a snapshot with the last set ConfState.
type memImpl struct {
	*raft.MemoryStorage
	cs *pb.ConfState
}

func newMemImpl(testing.TB) storageImpl {
	return &memImpl{MemoryStorage: raft.NewMemoryStorage(), cs: &pb.ConfState{}}
}

func (m *memImpl) append(t testing.TB, ents ...*pb.Entry) {
	require.NoError(t, m.Append(ents))
}

func (m *memImpl) setHardState(t testing.TB, hs *pb.HardState) {
	require.NoError(t, m.SetHardState(proto.CloneOf(hs)))
}

func (m *memImpl) setConfState(_ testing.TB, cs *pb.ConfState) { m.cs = proto.CloneOf(cs) }

func (m *memImpl) compact(t testing.TB, index uint64) {
	first, err := m.FirstIndex()
	require.NoError(t, err)
	if index < first {
		return
	}
	_, err = m.CreateSnapshot(index, m.cs, nil)
	require.NoError(t, err)
	require.NoError(t, m.Compact(index))
}

func (m *memImpl) applySnapshot(_ testing.TB, snap *pb.Snapshot) error {
	return m.ApplySnapshot(snap)
}

// logImpl adapts a pebble Log; with reopen set it closes and reopens the DB
// after every write, so every check also runs against the state loaded from
// disk.
type logImpl struct {
	*Log
	fs     vfs.FS
	db     *DB
	reopen bool
}

const suiteShard = 42

func newLogImpl(reopen bool) func(testing.TB) storageImpl {
	return func(t testing.TB) storageImpl {
		l := &logImpl{fs: vfs.NewMem(), reopen: reopen}
		l.open(t)
		t.Cleanup(func() { require.NoError(t, l.db.Close()) })
		return l
	}
}

func (l *logImpl) open(t testing.TB) {
	db, err := Open("db", Options{FS: l.fs})
	require.NoError(t, err)
	l.db = db
	l.Log, err = db.Log(suiteShard)
	require.NoError(t, err)
}

func (l *logImpl) write(t testing.TB, fn func(b *Batch) error) error {
	b := l.db.NewBatch()
	if err := fn(b); err != nil {
		return err
	}
	require.NoError(t, b.Commit(true))
	l.written(t)
	return nil
}

func (l *logImpl) written(t testing.TB) {
	if l.reopen {
		require.NoError(t, l.db.Close())
		l.open(t)
	}
}

func (l *logImpl) append(t testing.TB, ents ...*pb.Entry) {
	require.NoError(t, l.write(t, func(b *Batch) error { return b.Append(suiteShard, ents) }))
}

func (l *logImpl) setHardState(t testing.TB, hs *pb.HardState) {
	require.NoError(t, l.write(t, func(b *Batch) error { b.SetHardState(suiteShard, hs); return nil }))
}

func (l *logImpl) setConfState(t testing.TB, cs *pb.ConfState) {
	require.NoError(t, l.write(t, func(b *Batch) error { b.SetConfState(suiteShard, cs); return nil }))
}

func (l *logImpl) compact(t testing.TB, index uint64) {
	require.NoError(t, l.Compact(index))
	l.written(t)
}

func (l *logImpl) applySnapshot(t testing.TB, snap *pb.Snapshot) error {
	return l.write(t, func(b *Batch) error { return b.ApplySnapshot(suiteShard, snap) })
}

// ent builds an entry whose size varies with its index, so maxSize cuts at
// different places along the log.
func ent(index, term uint64) *pb.Entry {
	data := fmt.Sprintf("i%d-t%d-%s", index, term, strings.Repeat("x", int(index%7)*9))
	return &pb.Entry{Index: new(index), Term: new(term), Type: pb.EntryNormal.Enum(), Data: []byte(data)}
}

func ents(lo, hi uint64, term func(i uint64) uint64) []*pb.Entry {
	var es []*pb.Entry
	for i := lo; i <= hi; i++ {
		es = append(es, ent(i, term(i)))
	}
	return es
}

// terms1to10 gives entries 1..10 the terms 1 1 1 2 2 3 3 3 3 4.
func terms1to10(i uint64) uint64 { return []uint64{0, 1, 1, 1, 2, 2, 3, 3, 3, 3, 4}[i] }

func constTerm(t uint64) func(uint64) uint64 { return func(uint64) uint64 { return t } }

func esize(es ...*pb.Entry) uint64 {
	var n uint64
	for _, e := range es {
		n += uint64(proto.Size(e))
	}
	return n
}

// harness applies every write to the storage under test and to a reference
// MemoryStorage, and compares the six raft.Storage methods on demand.
type harness struct {
	s   storageImpl
	ref storageImpl
}

func (h *harness) append(t *testing.T, es ...*pb.Entry) {
	h.s.append(t, es...)
	h.ref.append(t, es...)
}

func (h *harness) setHardState(t *testing.T, hs *pb.HardState) {
	h.s.setHardState(t, hs)
	h.ref.setHardState(t, hs)
}

func (h *harness) compact(t *testing.T, i uint64, cs *pb.ConfState) {
	h.s.setConfState(t, cs)
	h.ref.setConfState(t, cs)
	h.s.compact(t, i)
	h.ref.compact(t, i)
}

func (h *harness) applySnapshot(t *testing.T, snap *pb.Snapshot) error {
	err := h.s.applySnapshot(t, snap)
	require.Equal(t, h.ref.applySnapshot(t, snap), err)
	return err
}

// agree compares every method over every index and range around the log.
func (h *harness) agree(t *testing.T) {
	t.Helper()
	first, err := h.ref.FirstIndex()
	require.NoError(t, err)
	last, err := h.ref.LastIndex()
	require.NoError(t, err)
	assertIndexes(t, h.s, first, last)

	for i := uint64(0); i <= last+2; i++ {
		want, wantErr := h.ref.Term(i)
		got, gotErr := h.s.Term(i)
		assert.Equal(t, wantErr, gotErr, "Term(%d) error", i)
		assert.Equal(t, want, got, "Term(%d)", i)
	}
	maxSizes := []uint64{0, 1, 20, 40, 60, 80, 100, 150, 200, 400, math.MaxUint64}
	for lo := first - 1; lo <= last+1; lo++ {
		for hi := lo; hi <= last+1; hi++ {
			for _, ms := range maxSizes {
				want, wantErr := h.ref.Entries(lo, hi, ms)
				got, gotErr := h.s.Entries(lo, hi, ms)
				if !assert.Equal(t, wantErr, gotErr, "Entries(%d, %d, %d) error", lo, hi, ms) {
					continue
				}
				assertEntries(t, want, got, "Entries(%d, %d, %d)", lo, hi, ms)
			}
		}
	}

	wantHS, _, err := h.ref.InitialState()
	require.NoError(t, err)
	gotHS, gotCS, err := h.s.InitialState()
	require.NoError(t, err)
	require.NotNil(t, gotCS)
	if raft.IsEmptyHardState(wantHS) {
		assert.True(t, raft.IsEmptyHardState(gotHS), "hard state %v", gotHS)
	} else {
		assert.True(t, proto.Equal(wantHS, gotHS), "hard state %v, want %v", gotHS, wantHS)
	}
	wantSnap, err := h.ref.Snapshot()
	require.NoError(t, err)
	gotSnap, err := h.s.Snapshot()
	require.NoError(t, err)
	assert.Equal(t, wantSnap.GetMetadata().GetIndex(), gotSnap.GetMetadata().GetIndex(), "snapshot index")
	assert.Equal(t, wantSnap.GetMetadata().GetTerm(), gotSnap.GetMetadata().GetTerm(), "snapshot term")
	if wantSnap.GetMetadata().GetIndex() > 0 {
		assert.True(t, proto.Equal(pb.EnsureConfState(wantSnap.GetMetadata().GetConfState()), gotSnap.GetMetadata().GetConfState()),
			"snapshot conf state %v, want %v", gotSnap.GetMetadata().GetConfState(), wantSnap.GetMetadata().GetConfState())
	}
}

func assertIndexes(t *testing.T, s raft.Storage, first, last uint64) {
	t.Helper()
	f, err := s.FirstIndex()
	require.NoError(t, err)
	l, err := s.LastIndex()
	require.NoError(t, err)
	assert.Equal(t, first, f, "FirstIndex")
	assert.Equal(t, last, l, "LastIndex")
}

func assertEntries(t *testing.T, want, got []*pb.Entry, format string, args ...any) {
	t.Helper()
	msg := fmt.Sprintf(format, args...)
	if !assert.Len(t, got, len(want), msg) {
		return
	}
	for i := range want {
		assert.True(t, proto.Equal(want[i], got[i]), "%s: entry %d is %v, want %v", msg, i, got[i], want[i])
	}
}

func TestStorage(t *testing.T) {
	impls := []struct {
		name string
		new  func(testing.TB) storageImpl
	}{
		{"memory", newMemImpl},
		{"pebble", newLogImpl(false)},
		{"pebble-reopen", newLogImpl(true)},
	}
	for _, impl := range impls {
		t.Run(impl.name, func(t *testing.T) { runStorageSuite(t, impl.new) })
	}
}

func runStorageSuite(t *testing.T, newImpl func(testing.TB) storageImpl) {
	setup := func(t *testing.T) *harness {
		return &harness{s: newImpl(t), ref: newMemImpl(t)}
	}
	voters := &pb.ConfState{Voters: []uint64{1, 2, 3}}

	t.Run("empty", func(t *testing.T) {
		h := setup(t)
		assertIndexes(t, h.s, 1, 0)
		term, err := h.s.Term(0)
		assert.NoError(t, err)
		assert.Zero(t, term)
		_, err = h.s.Term(1)
		assert.Equal(t, raft.ErrUnavailable, err)
		_, err = h.s.Entries(1, 1, math.MaxUint64)
		assert.Equal(t, raft.ErrUnavailable, err)
		_, err = h.s.Entries(0, 1, math.MaxUint64)
		assert.Equal(t, raft.ErrCompacted, err)
		hs, cs, err := h.s.InitialState()
		require.NoError(t, err)
		assert.True(t, raft.IsEmptyHardState(hs))
		assert.Empty(t, cs.GetVoters())
		h.agree(t)
	})

	t.Run("ranges and maxSize", func(t *testing.T) {
		h := setup(t)
		all := ents(1, 10, terms1to10)
		h.append(t, all...)
		assertIndexes(t, h.s, 1, 10)

		got, err := h.s.Entries(3, 7, math.MaxUint64)
		require.NoError(t, err)
		assertEntries(t, all[2:6], got, "[3, 7)")
		got, err = h.s.Entries(1, 11, math.MaxUint64)
		require.NoError(t, err)
		assertEntries(t, all, got, "[1, 11)")
		got, err = h.s.Entries(4, 4, math.MaxUint64)
		require.NoError(t, err)
		assert.Empty(t, got)

		// maxSize: at least one entry, then as many as fit.
		got, err = h.s.Entries(3, 7, 0)
		require.NoError(t, err)
		assertEntries(t, all[2:3], got, "maxSize 0")
		two := esize(all[2], all[3])
		got, err = h.s.Entries(3, 7, two)
		require.NoError(t, err)
		assertEntries(t, all[2:4], got, "maxSize = two entries")
		got, err = h.s.Entries(3, 7, two-1)
		require.NoError(t, err)
		assertEntries(t, all[2:3], got, "maxSize = two entries - 1")

		// The caller owns the slice: appending to it leaves the log alone.
		got, err = h.s.Entries(3, 5, math.MaxUint64)
		require.NoError(t, err)
		_ = append(got, ent(99, 99))
		got, err = h.s.Entries(3, 6, math.MaxUint64)
		require.NoError(t, err)
		assertEntries(t, all[2:5], got, "after appending to a returned slice")

		for i, want := range []uint64{0, 1, 1, 1, 2, 2, 3, 3, 3, 3, 4} {
			term, err := h.s.Term(uint64(i))
			require.NoError(t, err)
			assert.Equal(t, want, term, "Term(%d)", i)
		}
		_, err = h.s.Term(11)
		assert.Equal(t, raft.ErrUnavailable, err)
		_, err = h.s.Entries(0, 5, math.MaxUint64)
		assert.Equal(t, raft.ErrCompacted, err)
		h.agree(t)
	})

	t.Run("conflicting suffix", func(t *testing.T) {
		h := setup(t)
		h.append(t, ents(1, 10, terms1to10)...)
		// A new leader at term 5 overwrites from 6: 7..10 are gone.
		h.append(t, ents(6, 7, constTerm(5))...)
		assertIndexes(t, h.s, 1, 7)
		for i, want := range map[uint64]uint64{5: 2, 6: 5, 7: 5} {
			term, err := h.s.Term(i)
			require.NoError(t, err)
			assert.Equal(t, want, term, "Term(%d)", i)
		}
		_, err := h.s.Term(8)
		assert.Equal(t, raft.ErrUnavailable, err)
		got, err := h.s.Entries(5, 8, math.MaxUint64)
		require.NoError(t, err)
		assertEntries(t, []*pb.Entry{ent(5, 2), ent(6, 5), ent(7, 5)}, got, "[5, 8)")
		h.agree(t)

		// Overwrite a middle stretch with a longer one, then extend.
		h.append(t, ents(3, 9, constTerm(6))...)
		assertIndexes(t, h.s, 1, 9)
		h.append(t, ents(10, 12, constTerm(6))...)
		h.agree(t)
		// Replace everything.
		h.append(t, ents(1, 2, constTerm(7))...)
		assertIndexes(t, h.s, 1, 2)
		h.agree(t)
	})

	t.Run("compaction", func(t *testing.T) {
		h := setup(t)
		all := ents(1, 10, terms1to10)
		h.append(t, all...)
		h.setHardState(t, &pb.HardState{Term: new(uint64(4)), Vote: new(uint64(1)), Commit: new(uint64(10))})
		h.compact(t, 4, voters)
		assertIndexes(t, h.s, 5, 10)
		term, err := h.s.Term(4)
		require.NoError(t, err)
		assert.Equal(t, uint64(2), term, "term at the truncation point")
		_, err = h.s.Term(3)
		assert.Equal(t, raft.ErrCompacted, err)
		_, err = h.s.Entries(4, 6, math.MaxUint64)
		assert.Equal(t, raft.ErrCompacted, err)
		got, err := h.s.Entries(5, 11, math.MaxUint64)
		require.NoError(t, err)
		assertEntries(t, all[4:], got, "[5, 11)")
		snap, err := h.s.Snapshot()
		require.NoError(t, err)
		assert.Equal(t, uint64(4), snap.GetMetadata().GetIndex())
		assert.Equal(t, uint64(2), snap.GetMetadata().GetTerm())
		assert.Equal(t, []uint64{1, 2, 3}, snap.GetMetadata().GetConfState().GetVoters())
		h.agree(t)

		h.compact(t, 2, voters) // below the truncation: no-op
		h.compact(t, 4, voters) // at it: no-op
		assertIndexes(t, h.s, 5, 10)

		// An append overlapping the compacted prefix keeps only the rest.
		h.append(t, ents(3, 11, constTerm(4))...)
		assertIndexes(t, h.s, 5, 11)
		h.agree(t)

		// Compact everything: no entries, the last term survives.
		h.compact(t, 11, voters)
		assertIndexes(t, h.s, 12, 11)
		term, err = h.s.Term(11)
		require.NoError(t, err)
		assert.Equal(t, uint64(4), term)
		_, err = h.s.Entries(12, 12, math.MaxUint64)
		assert.Equal(t, raft.ErrUnavailable, err)
		h.agree(t)

		h.append(t, ents(12, 14, constTerm(5))...)
		assertIndexes(t, h.s, 12, 14)
		h.agree(t)
	})

	t.Run("hard state", func(t *testing.T) {
		h := setup(t)
		h.append(t, ents(1, 3, constTerm(1))...)
		hs := &pb.HardState{Term: new(uint64(1)), Vote: new(uint64(2)), Commit: new(uint64(3))}
		h.setHardState(t, hs)
		got, _, err := h.s.InitialState()
		require.NoError(t, err)
		assert.True(t, proto.Equal(hs, got), "%v", got)
		h.agree(t)
	})

	t.Run("snapshot", func(t *testing.T) {
		h := setup(t)
		h.append(t, ents(1, 5, constTerm(1))...)
		snap := &pb.Snapshot{Metadata: &pb.SnapshotMetadata{Index: new(uint64(20)), Term: new(uint64(7)), ConfState: voters}}
		require.NoError(t, h.applySnapshot(t, snap))
		assertIndexes(t, h.s, 21, 20)
		term, err := h.s.Term(20)
		require.NoError(t, err)
		assert.Equal(t, uint64(7), term)
		_, err = h.s.Term(19)
		assert.Equal(t, raft.ErrCompacted, err)
		_, cs, err := h.s.InitialState()
		require.NoError(t, err)
		assert.Equal(t, []uint64{1, 2, 3}, cs.GetVoters())
		h.agree(t)

		h.append(t, ents(21, 23, constTerm(7))...)
		h.agree(t)
		old := &pb.Snapshot{Metadata: &pb.SnapshotMetadata{Index: new(uint64(15)), Term: new(uint64(6))}}
		assert.Equal(t, raft.ErrSnapOutOfDate, h.applySnapshot(t, old))
		h.agree(t)
	})
}
