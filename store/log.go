package store

import (
	"errors"
	"fmt"
	"sync"

	"github.com/cockroachdb/pebble/v2"
	"go.etcd.io/raft/v3"
	pb "go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"
)

// Log is the raft log and state of one shard: it implements raft.Storage
// over pebble. It is safe for concurrent use: the shard's raft loop calls it
// while API goroutines read committed entries.
//
// Writes do not go through Log (except Compact): the raft loop writes a
// shard's Ready with a Batch, and the Log's in-memory state moves only once
// that Batch has committed.
//
// Readers never see memory and disk disagree on an existing entry: a write
// that removes or rewrites stored entries (a conflicting append, a snapshot,
// a compaction) holds mu for writing across its pebble commit; a write that
// only adds entries past the last one commits first and publishes the new
// last index after, so a reader bounded by the old one never looks at them.
type Log struct {
	db    *DB
	shard uint64

	mu sync.RWMutex
	// Guarded by mu. Stored entries are exactly [first, last]; first-1 is the
	// truncated index (0 for a log never compacted), whose term truncTerm is
	// kept for raft's log matching. lastTerm caches the last entry's term (or
	// truncTerm when there are no entries), the hottest Term() call.
	first, last         uint64
	truncTerm, lastTerm uint64
	hs                  *pb.HardState // never nil; never mutated, replaced
	cs                  *pb.ConfState // never nil; never mutated, replaced
	deleted             bool          // DeleteShard dropped the shard
	cache               tailCache     // the newest entries, for Entries
}

var _ raft.Storage = (*Log)(nil)

// Shard is the shard id of the log.
func (l *Log) Shard() uint64 { return l.shard }

// rlock takes mu for reading and checks the log is usable.
func (l *Log) rlock() error {
	if l.db.closed.Load() {
		return ErrClosed
	}
	l.mu.RLock()
	if l.deleted {
		l.mu.RUnlock()
		return ErrShardDeleted
	}
	return nil
}

// InitialState implements raft.Storage: the stored HardState and ConfState,
// empty (never nil) when nothing is stored. The caller owns the copies.
func (l *Log) InitialState() (*pb.HardState, *pb.ConfState, error) {
	if err := l.rlock(); err != nil {
		return nil, nil, err
	}
	defer l.mu.RUnlock()
	return proto.CloneOf(l.hs), proto.CloneOf(l.cs), nil
}

// FirstIndex implements raft.Storage.
func (l *Log) FirstIndex() (uint64, error) {
	if err := l.rlock(); err != nil {
		return 0, err
	}
	defer l.mu.RUnlock()
	return l.first, nil
}

// LastIndex implements raft.Storage.
func (l *Log) LastIndex() (uint64, error) {
	if err := l.rlock(); err != nil {
		return 0, err
	}
	defer l.mu.RUnlock()
	return l.last, nil
}

// Snapshot implements raft.Storage. The log is the data, so a snapshot is
// metadata only: the truncated index and term with the current ConfState. A
// follower that installs it receives the entries after it by replication.
func (l *Log) Snapshot() (*pb.Snapshot, error) {
	if err := l.rlock(); err != nil {
		return nil, err
	}
	defer l.mu.RUnlock()
	return &pb.Snapshot{Metadata: &pb.SnapshotMetadata{
		Index:     new(l.first - 1),
		Term:      new(l.truncTerm),
		ConfState: proto.CloneOf(l.cs),
	}}, nil
}

// Term implements raft.Storage: the term of entry i, for i in
// [FirstIndex()-1, LastIndex()]; raft.ErrCompacted below, raft.ErrUnavailable
// above. The last entry's and the truncated entry's terms come from memory,
// others from pebble (usually the memtable).
func (l *Log) Term(i uint64) (uint64, error) {
	if err := l.rlock(); err != nil {
		return 0, err
	}
	term, ok, err := l.termInMemory(i)
	l.mu.RUnlock()
	if ok || err != nil {
		return term, err
	}
	// A pebble read: admitted as a reader, so that Close waits for it.
	if err := l.db.acquireReader(); err != nil {
		return 0, err
	}
	defer l.db.releaseReader()
	if err := l.rlock(); err != nil {
		return 0, err
	}
	defer l.mu.RUnlock()
	return l.termLocked(i)
}

// termInMemory answers Term from memory when it can (ok), or with its
// errors. REQUIRES: l.mu held.
func (l *Log) termInMemory(i uint64) (term uint64, ok bool, err error) {
	switch {
	case i == l.last:
		return l.lastTerm, true, nil
	case i == l.first-1:
		return l.truncTerm, true, nil
	case i < l.first-1:
		return 0, false, raft.ErrCompacted
	case i > l.last:
		return 0, false, raft.ErrUnavailable
	}
	return 0, false, nil
}

// termLocked is Term. REQUIRES: l.mu held, and db.mu or a reader admission.
func (l *Log) termLocked(i uint64) (uint64, error) {
	if term, ok, err := l.termInMemory(i); ok || err != nil {
		return term, err
	}
	key := entryKey(l.shard, i)
	v, closer, err := l.db.pdb.Get(key)
	if errors.Is(err, pebble.ErrNotFound) {
		return 0, corruptError(l.shard, key, "entry %d missing in [%d, %d]", i, l.first, l.last)
	}
	if err != nil {
		return 0, fmt.Errorf("store: shard %d term %d: %w", l.shard, i, err)
	}
	defer closer.Close()
	term, idx, err := entryTermIndex(v)
	if err != nil || idx != i {
		return 0, corruptError(l.shard, key, "bad entry (index %d, err %v)", idx, err)
	}
	return term, nil
}

// Entries implements raft.Storage: entries [lo, hi), at most maxSize bytes of
// them (proto size, as raft counts) but at least one. raft.ErrCompacted if
// lo < FirstIndex(), raft.ErrUnavailable if hi > LastIndex()+1 or the log
// holds no entries. The caller owns the slice and the entries.
func (l *Log) Entries(lo, hi, maxSize uint64) ([]*pb.Entry, error) {
	if ents, ok, err := l.cachedEntries(lo, hi, maxSize); ok || err != nil {
		return ents, err
	}
	var ents []*pb.Entry
	var size uint64
	err := l.read(lo, hi, true, func(e *pb.Entry, n int) bool {
		size += uint64(n)
		if len(ents) > 0 && size > maxSize {
			return false
		}
		ents = append(ents, e)
		return true
	})
	if err != nil {
		return nil, err
	}
	if ents == nil {
		ents = []*pb.Entry{}
	}
	return ents, nil
}

// Scan calls fn with each stored entry in [lo, hi), in order, until fn
// returns false. hi is capped at LastIndex()+1, so hi = math.MaxUint64 scans
// to the end; raft.ErrCompacted if lo < FirstIndex(). It reads through one
// pebble iterator without holding the log's lock: fn may take its time (but
// Close waits for it), and sees the log as it was when Scan began. fn owns
// each entry.
func (l *Log) Scan(lo, hi uint64, fn func(e *pb.Entry) bool) error {
	return l.read(lo, hi, false, func(e *pb.Entry, _ int) bool { return fn(e) })
}

// read iterates entries [lo, hi) through a pebble iterator opened under mu
// (so it matches the bounds checked), then reads without the lock. strict
// selects Entries' errors for hi past the end; otherwise hi is capped.
func (l *Log) read(lo, hi uint64, strict bool, fn func(e *pb.Entry, size int) bool) error {
	if err := l.db.acquireReader(); err != nil {
		return err
	}
	defer l.db.releaseReader()
	it, lo, hi, err := l.openIter(lo, hi, strict)
	if it == nil || err != nil {
		return err
	}
	defer it.Close()

	next := lo
	for valid := it.First(); valid && next < hi; valid = it.Next() {
		key := it.Key()
		if _, idx, ok := decodeEntryKey(key); !ok || idx != next {
			return corruptError(l.shard, key, "want entry %d", next)
		}
		v, err := it.ValueAndErr()
		if err != nil {
			return fmt.Errorf("store: shard %d entry %d: %w", l.shard, next, err)
		}
		e := &pb.Entry{}
		if err := proto.Unmarshal(v, e); err != nil || e.GetIndex() != next {
			return corruptError(l.shard, key, "bad entry (index %d, err %v)", e.GetIndex(), err)
		}
		if !fn(e, len(v)) {
			return nil
		}
		next++
	}
	if err := it.Error(); err != nil {
		return fmt.Errorf("store: shard %d entries: %w", l.shard, err)
	}
	if next < hi {
		return corruptError(l.shard, entryKey(l.shard, next), "entry %d missing, log ends at %d", next, hi-1)
	}
	return nil
}

// openIter checks [lo, hi) against the log's bounds and opens an iterator
// over it, returning the (capped) bounds; a nil iterator and nil error mean
// an empty range.
func (l *Log) openIter(lo, hi uint64, strict bool) (*pebble.Iterator, uint64, uint64, error) {
	if err := l.rlock(); err != nil {
		return nil, 0, 0, err
	}
	defer l.mu.RUnlock()
	if lo < l.first {
		return nil, 0, 0, raft.ErrCompacted
	}
	if strict {
		// raft.MemoryStorage panics past the end; raft never asks.
		if hi > l.last+1 || l.last < l.first {
			return nil, 0, 0, raft.ErrUnavailable
		}
		if lo > hi {
			return nil, 0, 0, fmt.Errorf("store: shard %d: invalid range [%d, %d)", l.shard, lo, hi)
		}
	}
	hi = min(hi, l.last+1)
	if lo >= hi {
		return nil, lo, hi, nil
	}
	it, err := l.db.pdb.NewIter(&pebble.IterOptions{
		LowerBound: entryKey(l.shard, lo),
		UpperBound: entryKey(l.shard, hi),
	})
	if err != nil {
		return nil, 0, 0, fmt.Errorf("store: shard %d entries: %w", l.shard, err)
	}
	return it, lo, hi, nil
}

// Compact drops the entries <= index with one synced pebble range delete and
// records the truncated state {index, Term(index)}, which Snapshot reports
// from then on. Compacting at or below the current truncated index is a
// no-op; index past LastIndex() is an error (raft.ErrUnavailable). The caller
// compacts only applied entries.
//
// Readers wait for Compact's fsync: it holds the log's lock across its write
// so that they never find a hole where memory promised an entry.
func (l *Log) Compact(index uint64) error {
	db := l.db
	db.mu.RLock()
	defer db.mu.RUnlock()
	if db.closed.Load() {
		return ErrClosed
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	switch {
	case l.deleted:
		return ErrShardDeleted
	case index < l.first:
		return nil
	case index > l.last:
		return fmt.Errorf("store: shard %d: compact %d past last index %d: %w", l.shard, index, l.last, raft.ErrUnavailable)
	}
	term, err := l.termLocked(index)
	if err != nil {
		return err
	}
	b := db.pdb.NewBatch()
	defer b.Close()
	// From index 0, not l.first: also drops any stray key below first.
	if err := b.DeleteRange(entryKey(l.shard, 0), entryKey(l.shard, index+1), nil); err != nil {
		return fmt.Errorf("store: shard %d compact: %w", l.shard, err)
	}
	if err := b.Set(shardKey(l.shard, kindTruncated), truncState{index, term}.encode(), nil); err != nil {
		return fmt.Errorf("store: shard %d compact: %w", l.shard, err)
	}
	if err := db.apply(b, true); err != nil {
		return err
	}
	db.trimmed.Add(index + 1 - l.first)
	l.first, l.truncTerm = index+1, term
	l.cache.dropThrough(index)
	return nil
}

// cachedEntries serves Entries from the tail cache when it holds all of
// [lo, hi); ok is false when the caller must read the store.
func (l *Log) cachedEntries(lo, hi, maxSize uint64) (ents []*pb.Entry, ok bool, err error) {
	if err := l.rlock(); err != nil {
		return nil, false, err
	}
	defer l.mu.RUnlock()
	if lo < l.first || hi > l.last+1 || lo >= hi {
		return nil, false, nil // the store path reports these cases
	}
	ents, ok = l.cache.get(lo, hi, maxSize)
	return ents, ok, nil
}
