package store

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.etcd.io/raft/v3"
	pb "go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"
)

func openDB(t testing.TB, dir string, opts Options) *DB {
	t.Helper()
	db, err := Open(dir, opts)
	require.NoError(t, err)
	t.Cleanup(func() { _ = db.Close() })
	return db
}

func mustLog(t testing.TB, db *DB, shard uint64) *Log {
	t.Helper()
	l, err := db.Log(shard)
	require.NoError(t, err)
	return l
}

// shardEnt is an entry whose data names its shard, index and term.
func shardEnt(shard, index, term uint64) *pb.Entry {
	return &pb.Entry{Index: new(index), Term: new(term), Data: fmt.Appendf(nil, "s%d-i%d-t%d", shard, index, term)}
}

func shardEnts(shard, lo, hi, term uint64) []*pb.Entry {
	var es []*pb.Entry
	for i := lo; i <= hi; i++ {
		es = append(es, shardEnt(shard, i, term))
	}
	return es
}

func hardState(term, vote, commit uint64) *pb.HardState {
	return &pb.HardState{Term: new(term), Vote: new(vote), Commit: new(commit)}
}

func commit(t testing.TB, db *DB, sync bool, fn func(b *Batch)) {
	t.Helper()
	b := db.NewBatch()
	fn(b)
	require.NoError(t, b.Commit(sync))
}

// checkLog asserts a log holds exactly shardEnts(shard, first, last, term).
func checkLog(t *testing.T, l *Log, first, last, term uint64) {
	t.Helper()
	assertIndexes(t, l, first, last)
	got, err := l.Entries(first, last+1, math.MaxUint64)
	require.NoError(t, err)
	assertEntries(t, shardEnts(l.shard, first, last, term), got, "shard %d", l.shard)
}

func counterValue(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	require.NoError(t, err)
	for _, mf := range mfs {
		if mf.GetName() == name {
			return mf.GetMetric()[0].GetCounter().GetValue()
		}
	}
	t.Fatalf("metric %s not registered", name)
	return 0
}

func TestGroupCommitOneSync(t *testing.T) {
	reg := prometheus.NewRegistry()
	db := openDB(t, t.TempDir(), Options{Metrics: reg})
	before := db.Stats()

	b := db.NewBatch()
	require.True(t, b.Empty())
	for shard := uint64(1); shard <= 3; shard++ {
		require.NoError(t, b.Append(shard, shardEnts(shard, 1, 5, 1)))
		b.SetHardState(shard, hardState(1, 1, 5))
	}
	require.False(t, b.Empty())
	require.NoError(t, b.Commit(true))

	after := db.Stats()
	assert.Equal(t, uint64(1), after.Syncs-before.Syncs, "syncs")
	assert.Equal(t, uint64(1), after.Commits-before.Commits, "commits")
	assert.Greater(t, after.BytesWritten, before.BytesWritten+3*5*10)
	for shard := uint64(1); shard <= 3; shard++ {
		l := mustLog(t, db, shard)
		checkLog(t, l, 1, 5, 1)
		hs, _, err := l.InitialState()
		require.NoError(t, err)
		assert.Equal(t, uint64(5), hs.GetCommit())
	}
	assert.Equal(t, float64(after.Syncs), counterValue(t, reg, "weir_store_syncs_total"))
	assert.Equal(t, float64(after.Commits), counterValue(t, reg, "weir_store_commits_total"))
	assert.Equal(t, float64(after.BytesWritten), counterValue(t, reg, "weir_store_bytes_written_total"))

	// The batch is empty and reusable; unsynced and empty commits count no sync.
	require.True(t, b.Empty())
	require.NoError(t, b.Append(1, shardEnts(1, 6, 6, 1)))
	require.NoError(t, b.Commit(false))
	require.NoError(t, b.Commit(true))
	s := db.Stats()
	assert.Equal(t, after.Syncs, s.Syncs)
	assert.Equal(t, after.Commits+1, s.Commits)
	checkLog(t, mustLog(t, db, 1), 1, 6, 1)
}

func TestCommitPublishesOnlyAfterWrite(t *testing.T) {
	db := openDB(t, "db", Options{FS: vfs.NewMem()})
	l := mustLog(t, db, 1)
	b := db.NewBatch()
	require.NoError(t, b.Append(1, shardEnts(1, 1, 3, 1)))
	b.SetHardState(1, hardState(1, 0, 3))
	assertIndexes(t, l, 1, 0)
	hs, _, err := l.InitialState()
	require.NoError(t, err)
	assert.True(t, raft.IsEmptyHardState(hs))
	require.NoError(t, b.Commit(true))
	checkLog(t, l, 1, 3, 1)

	// A failed commit (closed DB) publishes nothing either.
	require.NoError(t, b.Append(1, shardEnts(1, 4, 4, 1)))
	require.NoError(t, db.Close())
	assert.ErrorIs(t, b.Commit(true), ErrClosed)
}

func TestBatchErrors(t *testing.T) {
	db := openDB(t, "db", Options{FS: vfs.NewMem()})
	commit(t, db, true, func(b *Batch) { require.NoError(t, b.Append(1, shardEnts(1, 1, 3, 1))) })
	b := db.NewBatch()
	assert.Error(t, b.Append(1, shardEnts(1, 5, 6, 1)), "gap after the last index")
	assert.Error(t, b.Append(1, []*pb.Entry{shardEnt(1, 4, 1), shardEnt(1, 6, 1)}), "not consecutive")
	require.NoError(t, b.Commit(true))
	checkLog(t, mustLog(t, db, 1), 1, 3, 1)
}

func TestReopen(t *testing.T) {
	dir := t.TempDir()
	db, err := Open(dir, Options{})
	require.NoError(t, err)
	voters := &pb.ConfState{Voters: []uint64{1, 2, 3}, Learners: []uint64{4}}
	commit(t, db, true, func(b *Batch) {
		for shard := uint64(1); shard <= 2; shard++ {
			require.NoError(t, b.Append(shard, shardEnts(shard, 1, 20, 2)))
			b.SetHardState(shard, hardState(2, 1, 18))
			b.SetConfState(shard, voters)
		}
	})
	require.NoError(t, mustLog(t, db, 1).Compact(7))
	require.NoError(t, db.Close())
	require.NoError(t, db.Close(), "Close is idempotent")

	db = openDB(t, dir, Options{})
	shards, err := db.Shards()
	require.NoError(t, err)
	assert.Equal(t, []uint64{1, 2}, shards)
	for shard, first := range map[uint64]uint64{1: 8, 2: 1} {
		l := mustLog(t, db, shard)
		checkLog(t, l, first, 20, 2)
		hs, cs, err := l.InitialState()
		require.NoError(t, err)
		assert.True(t, proto.Equal(hardState(2, 1, 18), hs), "%v", hs)
		assert.Equal(t, voters.GetVoters(), cs.GetVoters())
		assert.Equal(t, voters.GetLearners(), cs.GetLearners())
		term, err := l.Term(first - 1)
		require.NoError(t, err)
		assert.Equal(t, uint64(map[uint64]uint64{1: 2, 2: 0}[shard]), term)
		snap, err := l.Snapshot()
		require.NoError(t, err)
		assert.Equal(t, first-1, snap.GetMetadata().GetIndex())
	}
}

func TestClosed(t *testing.T) {
	db := openDB(t, "db", Options{FS: vfs.NewMem()})
	l := mustLog(t, db, 1)
	commit(t, db, true, func(b *Batch) { require.NoError(t, b.Append(1, shardEnts(1, 1, 3, 1))) })
	require.NoError(t, db.Close())
	_, err := db.Log(1)
	assert.ErrorIs(t, err, ErrClosed)
	_, err = db.Shards()
	assert.ErrorIs(t, err, ErrClosed)
	assert.ErrorIs(t, db.DeleteShard(1), ErrClosed)
	_, err = l.Entries(1, 2, math.MaxUint64)
	assert.ErrorIs(t, err, ErrClosed)
	_, err = l.Term(2)
	assert.ErrorIs(t, err, ErrClosed)
	_, err = l.LastIndex()
	assert.ErrorIs(t, err, ErrClosed)
	assert.ErrorIs(t, l.Compact(2), ErrClosed)
	assert.ErrorIs(t, l.Scan(1, 3, func(*pb.Entry) bool { return true }), ErrClosed)
	b := db.NewBatch()
	assert.ErrorIs(t, b.Append(1, shardEnts(1, 4, 4, 1)), ErrClosed)
	b.SetHardState(1, hardState(1, 1, 1))
	assert.ErrorIs(t, b.Commit(true), ErrClosed)
}

// TestCrashKeepsSyncedWrites drops everything not synced, as a power cut
// would, and checks that exactly the synced rounds survive.
func TestCrashKeepsSyncedWrites(t *testing.T) {
	fs := vfs.NewCrashableMem()
	db, err := Open("db", Options{FS: fs})
	require.NoError(t, err)
	for r := uint64(0); r < 3; r++ {
		commit(t, db, true, func(b *Batch) {
			for shard := uint64(1); shard <= 2; shard++ {
				require.NoError(t, b.Append(shard, shardEnts(shard, r*10+1, r*10+10, 1)))
				b.SetHardState(shard, hardState(1, 1, r*10+10))
			}
		})
	}
	commit(t, db, false, func(b *Batch) {
		for shard := uint64(1); shard <= 2; shard++ {
			require.NoError(t, b.Append(shard, shardEnts(shard, 31, 40, 1)))
			b.SetHardState(shard, hardState(1, 1, 40))
		}
	})
	checkLog(t, mustLog(t, db, 1), 1, 40, 1) // visible before the crash

	crashed := fs.CrashClone(vfs.CrashCloneCfg{}) // only synced data
	require.NoError(t, db.Close())

	db = openDB(t, "db", Options{FS: crashed})
	for shard := uint64(1); shard <= 2; shard++ {
		l := mustLog(t, db, shard)
		checkLog(t, l, 1, 30, 1)
		hs, _, err := l.InitialState()
		require.NoError(t, err)
		assert.Equal(t, uint64(30), hs.GetCommit())
	}
}

// TestCrashBatchAtomic keeps a random part of the unsynced data (4 KiB
// blocks of the WAL, 90% of them, holes zeroed): each round survives whole or not at all,
// and only after every round before it. The rounds (about 80 KiB) stay below
// pebble's first memtable flush, which would rotate and sync the WAL.
func TestCrashBatchAtomic(t *testing.T) {
	const synced, rounds, per = 1, 7, 100
	for seed := range uint64(12) {
		fs := vfs.NewCrashableMem()
		db, err := Open("db", Options{FS: fs})
		require.NoError(t, err)
		for r := range uint64(rounds) {
			commit(t, db, r < synced, func(b *Batch) {
				for shard := uint64(1); shard <= 3; shard++ {
					require.NoError(t, b.Append(shard, shardEnts(shard, r*per+1, r*per+per, 1)))
					b.SetHardState(shard, hardState(1, 1, r*per+per))
				}
			})
		}
		// pebble writes unsynced batches to the WAL file once its 32 KiB
		// block fills: wait for them, so that the crash has something to tear.
		total := db.Stats().BytesWritten
		require.Eventually(t, func() bool { return walBytes(t, fs, "db")+32<<10 >= total }, 10*time.Second, time.Millisecond)

		rng := rand.New(rand.NewPCG(seed, seed))
		crashed := fs.CrashClone(vfs.CrashCloneCfg{UnsyncedDataPercent: 90, RNG: rng})
		require.NoError(t, db.Close())

		db, err = Open("db", Options{FS: crashed})
		require.NoError(t, err, "seed %d", seed)
		n, err := mustLog(t, db, 1).LastIndex()
		require.NoError(t, err)
		t.Logf("seed %d: %d of %d entries survive", seed, n, rounds*per)
		assert.GreaterOrEqual(t, n, uint64(synced*per), "seed %d: synced rounds lost", seed)
		assert.Zero(t, n%per, "seed %d: partial round", seed)
		for shard := uint64(1); shard <= 3; shard++ {
			l := mustLog(t, db, shard)
			checkLog(t, l, 1, n, 1)
			hs, _, err := l.InitialState()
			require.NoError(t, err)
			assert.Equal(t, n, hs.GetCommit(), "seed %d shard %d", seed, shard)
		}
		require.NoError(t, db.Close())
	}
}

// walBytes is the size of the WAL files in dir.
func walBytes(t *testing.T, fs vfs.FS, dir string) uint64 {
	names, err := fs.List(dir)
	require.NoError(t, err)
	var n uint64
	for _, name := range names {
		if strings.HasSuffix(name, ".log") {
			fi, err := fs.Stat(fs.PathJoin(dir, name))
			require.NoError(t, err)
			n += uint64(fi.Size())
		}
	}
	return n
}

func TestDeleteShard(t *testing.T) {
	fs := vfs.NewMem()
	db, err := Open("db", Options{FS: fs})
	require.NoError(t, err)
	ids := []uint64{0, 7, 8, math.MaxUint64}
	commit(t, db, true, func(b *Batch) {
		for _, shard := range ids {
			require.NoError(t, b.Append(shard, shardEnts(shard, 1, 5, 1)))
			b.SetHardState(shard, hardState(1, 1, 5))
		}
		b.SetHardState(9, hardState(1, 0, 0)) // state only, no entries
	})
	shards, err := db.Shards()
	require.NoError(t, err)
	assert.Equal(t, []uint64{0, 7, 8, 9, math.MaxUint64}, shards)

	old := mustLog(t, db, 7)
	stale := db.NewBatch()
	require.NoError(t, stale.Append(8, shardEnts(8, 6, 6, 1)))
	require.NoError(t, db.DeleteShard(7))
	require.NoError(t, db.DeleteShard(8))
	require.NoError(t, db.DeleteShard(math.MaxUint64))
	require.NoError(t, db.DeleteShard(1234), "deleting an unknown shard is fine")
	assert.ErrorIs(t, stale.Commit(true), ErrShardDeleted)
	_, err = old.Entries(1, 2, math.MaxUint64)
	assert.ErrorIs(t, err, ErrShardDeleted)
	_, err = old.LastIndex()
	assert.ErrorIs(t, err, ErrShardDeleted)

	check := func(db *DB) {
		shards, err := db.Shards()
		require.NoError(t, err)
		assert.Equal(t, []uint64{0, 9}, shards)
		checkLog(t, mustLog(t, db, 0), 1, 5, 1)
		for _, shard := range []uint64{7, 8, math.MaxUint64} {
			l := mustLog(t, db, shard)
			assertIndexes(t, l, 1, 0)
			hs, _, err := l.InitialState()
			require.NoError(t, err)
			assert.True(t, raft.IsEmptyHardState(hs))
		}
	}
	check(db)
	require.NoError(t, db.Close())
	db = openDB(t, "db", Options{FS: fs})
	check(db)

	// A deleted shard starts over.
	commit(t, db, true, func(b *Batch) { require.NoError(t, b.Append(7, shardEnts(7, 1, 2, 3))) })
	checkLog(t, mustLog(t, db, 7), 1, 2, 3)
}

func TestLogBeyondRaftContract(t *testing.T) {
	db := openDB(t, "db", Options{FS: vfs.NewMem()})
	l := mustLog(t, db, 1)
	commit(t, db, true, func(b *Batch) { require.NoError(t, b.Append(1, shardEnts(1, 1, 10, 1))) })

	// raft.MemoryStorage panics here; Log answers.
	_, err := l.Entries(5, 12, math.MaxUint64)
	assert.Equal(t, raft.ErrUnavailable, err)
	assert.ErrorIs(t, l.Compact(11), raft.ErrUnavailable)

	var seen []uint64
	require.NoError(t, l.Scan(3, math.MaxUint64, func(e *pb.Entry) bool {
		seen = append(seen, e.GetIndex())
		return true
	}))
	assert.Equal(t, []uint64{3, 4, 5, 6, 7, 8, 9, 10}, seen)
	seen = nil
	require.NoError(t, l.Scan(3, 9, func(e *pb.Entry) bool {
		seen = append(seen, e.GetIndex())
		return e.GetIndex() < 5
	}))
	assert.Equal(t, []uint64{3, 4, 5}, seen)
	require.NoError(t, l.Scan(11, 20, func(*pb.Entry) bool { t.Fatal("called past the end"); return false }))

	require.NoError(t, l.Compact(4))
	assert.Equal(t, raft.ErrCompacted, l.Scan(4, 6, func(*pb.Entry) bool { return true }))
}

func TestCorruption(t *testing.T) {
	fs := vfs.NewMem()
	db, err := Open("db", Options{FS: fs})
	require.NoError(t, err)
	commit(t, db, true, func(b *Batch) {
		require.NoError(t, b.Append(1, shardEnts(1, 1, 5, 1)))
		require.NoError(t, b.Append(2, shardEnts(2, 1, 5, 1)))
	})
	require.NoError(t, db.pdb.Set(entryKey(1, 3), []byte{0xff, 0xff}, pebble.Sync))
	require.NoError(t, db.pdb.Delete(entryKey(2, 1), pebble.Sync))
	// Reopen, so the reads below go to disk rather than the tail cache,
	// which holds the entries as they were written.
	require.NoError(t, db.Close())
	db = openDB(t, "db", Options{FS: fs})

	l := mustLog(t, db, 1)
	_, err = l.Entries(1, 6, math.MaxUint64)
	assert.ErrorIs(t, err, ErrCorrupt)
	assert.Contains(t, err.Error(), "shard 1")
	assert.Contains(t, err.Error(), fmt.Sprintf("%x", entryKey(1, 3)))
	_, err = l.Term(3)
	assert.ErrorIs(t, err, ErrCorrupt)

	require.NoError(t, db.Close())
	db = openDB(t, "db", Options{FS: fs})
	_, err = db.Log(2) // its first entry is gone
	assert.ErrorIs(t, err, ErrCorrupt)
	require.NoError(t, db.pdb.Set(shardKey(3, kindTruncated), []byte{1, 2, 3}, pebble.Sync))
	_, err = db.Log(3)
	assert.ErrorIs(t, err, ErrCorrupt)
}

// TestConcurrentReaders runs readers of committed entries against a writer
// that appends, rewrites its uncommitted tail and compacts, for -race and
// for the rule that readers never see a hole.
func TestConcurrentReaders(t *testing.T) {
	db := openDB(t, "db", Options{FS: vfs.NewMem()})
	l := mustLog(t, db, 1)
	done := make(chan struct{})
	var wg sync.WaitGroup
	readErr := make(chan error, 4)
	check := func(e *pb.Entry, want uint64) error {
		if !proto.Equal(e, shardEnt(1, e.GetIndex(), e.GetTerm())) || e.GetIndex() != want {
			return fmt.Errorf("entry %v, want index %d", e, want)
		}
		return nil
	}
	for r := range 4 {
		wg.Go(func() {
			for {
				select {
				case <-done:
					return
				default:
				}
				first, _ := l.FirstIndex()
				last, _ := l.LastIndex()
				if last < first {
					continue
				}
				if r%2 == 0 {
					es, err := l.Entries(first, last+1, 4096)
					if errors.Is(err, raft.ErrCompacted) || errors.Is(err, raft.ErrUnavailable) {
						continue // the log moved since FirstIndex/LastIndex
					}
					if err == nil && len(es) == 0 {
						err = errors.New("no entries")
					}
					for i, e := range es {
						if err == nil {
							err = check(e, first+uint64(i))
						}
					}
					if err != nil {
						readErr <- err
						return
					}
					continue
				}
				next := first
				err := l.Scan(first, math.MaxUint64, func(e *pb.Entry) bool {
					if cerr := check(e, next); cerr != nil {
						readErr <- cerr
						return false
					}
					next++
					return true
				})
				if err != nil && !errors.Is(err, raft.ErrCompacted) {
					readErr <- err
					return
				}
			}
		})
	}

	last, term := uint64(0), uint64(1)
	for round := range uint64(300) {
		commit(t, db, round%3 == 0, func(b *Batch) {
			require.NoError(t, b.Append(1, shardEnts(1, last+1, last+10, term)))
			last += 10
			if round%7 == 0 { // a new leader rewrites and shortens the tail
				term++
				require.NoError(t, b.Append(1, shardEnts(1, last-5, last-3, term)))
				last -= 3
			}
		})
		if round%25 == 0 && last > 20 {
			require.NoError(t, l.Compact(last-20))
		}
	}
	close(done)
	wg.Wait()
	close(readErr)
	for err := range readErr {
		t.Error(err)
	}
	assertIndexes(t, l, mustFirst(t, l), last)
}

func mustFirst(t *testing.T, l *Log) uint64 {
	f, err := l.FirstIndex()
	require.NoError(t, err)
	return f
}

// TestCloseWhileBusy closes the DB under running commits and reads: each
// stops with ErrClosed, none touches a closed pebble.
func TestCloseWhileBusy(t *testing.T) {
	db := openDB(t, "db", Options{FS: vfs.NewMem()})
	l := mustLog(t, db, 1)
	commit(t, db, true, func(b *Batch) { require.NoError(t, b.Append(1, shardEnts(1, 1, 50, 1))) })
	ops := []func(i uint64) error{
		func(i uint64) error { _, err := l.Term(1 + i%49); return err },
		func(uint64) error { _, err := l.Entries(1, 51, math.MaxUint64); return err },
		func(uint64) error { return l.Scan(1, 51, func(*pb.Entry) bool { return true }) },
		func(i uint64) error {
			b := db.NewBatch()
			b.SetHardState(2, hardState(1, 1, 0))
			return b.Commit(i%2 == 0)
		},
	}
	var wg sync.WaitGroup
	started := make(chan struct{}, len(ops))
	for _, op := range ops {
		wg.Go(func() {
			for i := uint64(0); ; i++ {
				if i == 10 {
					started <- struct{}{}
				}
				if err := op(i); err != nil {
					assert.ErrorIs(t, err, ErrClosed)
					return
				}
			}
		})
	}
	for range ops {
		<-started
	}
	require.NoError(t, db.Close())
	wg.Wait()
}
