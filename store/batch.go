package store

import (
	"fmt"

	"github.com/cockroachdb/pebble/v2"
	"go.etcd.io/raft/v3"
	pb "go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"
)

// Batch gathers the Ready output of many shards for one group commit: Commit
// writes all of it with one pebble commit and at most one fsync. See doc.go
// for the loop around it.
//
// A Batch is used by one goroutine (the node's raft loop). It sees the Logs as
// they were when it first touched each shard, so the batches touching a shard
// must be built and committed one at a time, in order. After Commit returns,
// successfully or not, the Batch is empty and may be reused.
type Batch struct {
	db     *DB
	pb     *pebble.Batch          // nil until the first write
	shards map[uint64]*pendingLog // the Logs this batch changes
	err    error                  // sticky: the batch is incomplete, Commit refuses it
	buf    []byte                 // marshaling scratch
	key    []byte                 // key scratch
}

// pendingLog is the state a Log will have once the batch commits.
type pendingLog struct {
	log *Log

	first, last         uint64
	truncTerm, lastTerm uint64
	hs                  *pb.HardState
	cs                  *pb.ConfState

	// cached: entries this batch writes, for the Log's tail cache; reset
	// when the batch drops every entry (a snapshot).
	cached      []cachedEntry
	clearsCache bool

	setEntries, setTrunc, setHS, setCS bool
	// rewrites: the batch removes or overwrites stored entries, so it commits
	// holding the Log's lock (see Log).
	rewrites bool
}

// NewBatch returns an empty batch. It does no I/O.
func (db *DB) NewBatch() *Batch {
	return &Batch{db: db, shards: make(map[uint64]*pendingLog)}
}

// Empty reports whether the batch holds nothing to commit.
func (b *Batch) Empty() bool {
	return b.err == nil && (b.pb == nil || b.pb.Empty())
}

func (b *Batch) pebble() *pebble.Batch {
	if b.pb == nil {
		b.pb = b.db.pdb.NewBatch()
	}
	return b.pb
}

// pending returns the pending state of shard, starting from its Log.
func (b *Batch) pending(shard uint64) (*pendingLog, error) {
	if p := b.shards[shard]; p != nil {
		return p, nil
	}
	l, err := b.db.Log(shard)
	if err != nil {
		return nil, err
	}
	if err := l.rlock(); err != nil {
		return nil, err
	}
	p := &pendingLog{
		log:   l,
		first: l.first, last: l.last,
		truncTerm: l.truncTerm, lastTerm: l.lastTerm,
	}
	l.mu.RUnlock()
	b.shards[shard] = p
	return p, nil
}

// Append writes raft's Ready.Entries for shard: consecutive entries that
// replace any stored entries at index >= ents[0].Index (the conflicting
// suffix is dropped, as raft.MemoryStorage.Append does). Entries at or below
// the truncated index are ignored. A gap after the last index is an error.
func (b *Batch) Append(shard uint64, ents []*pb.Entry) error {
	if len(ents) == 0 {
		return nil
	}
	p, err := b.pending(shard)
	if err != nil {
		return err
	}
	lo := ents[0].GetIndex()
	for i, e := range ents {
		if e.GetIndex() != lo+uint64(i) {
			return fmt.Errorf("store: shard %d: append: entry %d has index %d, want %d", shard, i, e.GetIndex(), lo+uint64(i))
		}
	}
	hi := lo + uint64(len(ents)) - 1
	if hi < p.first {
		return nil // all compacted
	}
	if lo < p.first {
		ents = ents[p.first-lo:]
		lo = p.first
	}
	if lo > p.last+1 {
		return fmt.Errorf("store: shard %d: append at %d leaves a gap after last index %d", shard, lo, p.last)
	}
	pbb := b.pebble()
	mo := proto.MarshalOptions{Deterministic: true}
	// Entries this batch already cached at or past lo are replaced.
	for len(p.cached) > 0 && p.cached[len(p.cached)-1].e.GetIndex() >= lo {
		p.cached = p.cached[:len(p.cached)-1]
	}
	for _, e := range ents {
		b.key = appendEntryKey(b.key[:0], shard, e.GetIndex())
		if b.buf, err = mo.MarshalAppend(b.buf[:0], e); err != nil {
			return b.fail(fmt.Errorf("store: shard %d: marshal entry %d: %w", shard, e.GetIndex(), err))
		}
		if err := pbb.Set(b.key, b.buf, nil); err != nil {
			return b.fail(fmt.Errorf("store: shard %d: append: %w", shard, err))
		}
		p.cached = append(p.cached, cachedEntry{e: e, size: len(b.buf)})
	}
	if lo <= p.last {
		p.rewrites = true
		if hi < p.last {
			if err := pbb.DeleteRange(entryKey(shard, hi+1), entryKey(shard, p.last+1), nil); err != nil {
				return b.fail(fmt.Errorf("store: shard %d: append: %w", shard, err))
			}
		}
	}
	p.last, p.lastTerm = hi, ents[len(ents)-1].GetTerm()
	p.setEntries = true
	return nil
}

// SetHardState writes raft's Ready.HardState for shard. Errors (a closed DB)
// surface at Commit.
func (b *Batch) SetHardState(shard uint64, hs *pb.HardState) {
	if hs == nil {
		hs = &pb.HardState{}
	}
	b.setProto(shard, kindHardState, proto.CloneOf(hs), func(p *pendingLog, m proto.Message) {
		p.hs, p.setHS = m.(*pb.HardState), true
	})
}

// SetConfState writes the ConfState that raft returned from ApplyConfChange.
// Errors surface at Commit.
func (b *Batch) SetConfState(shard uint64, cs *pb.ConfState) {
	b.setProto(shard, kindConfState, pb.EnsureConfState(proto.CloneOf(cs)), func(p *pendingLog, m proto.Message) {
		p.cs, p.setCS = m.(*pb.ConfState), true
	})
}

// setProto writes m, which the batch owns, as the state record kind of shard.
func (b *Batch) setProto(shard uint64, kind byte, m proto.Message, set func(*pendingLog, proto.Message)) {
	if b.err != nil {
		return
	}
	p, err := b.pending(shard)
	if err != nil {
		b.err = err
		return
	}
	v, err := proto.MarshalOptions{Deterministic: true}.Marshal(m)
	if err == nil {
		err = b.pebble().Set(shardKey(shard, kind), v, nil)
	}
	if err != nil {
		_ = b.fail(fmt.Errorf("store: shard %d: %w", shard, err))
		return
	}
	set(p, m)
}

// ApplySnapshot installs raft's Ready.Snapshot for shard (a follower far
// behind): every entry is dropped, the truncated state becomes the
// snapshot's index and term, and its ConfState is stored. A snapshot at or
// below the truncated index is raft.ErrSnapOutOfDate. The HardState that
// comes with it is written by SetHardState as usual.
func (b *Batch) ApplySnapshot(shard uint64, snap *pb.Snapshot) error {
	p, err := b.pending(shard)
	if err != nil {
		return err
	}
	md := snap.GetMetadata()
	idx, term := md.GetIndex(), md.GetTerm()
	if p.first > 1 && idx < p.first {
		return raft.ErrSnapOutOfDate
	}
	cs := proto.CloneOf(pb.EnsureConfState(md.GetConfState()))
	csv, err := proto.MarshalOptions{Deterministic: true}.Marshal(cs)
	if err != nil {
		return fmt.Errorf("store: shard %d: snapshot: %w", shard, err)
	}
	pbb := b.pebble()
	err = pbb.DeleteRange(entryKey(shard, 0), entriesEnd(shard), nil)
	if err == nil {
		err = pbb.Set(shardKey(shard, kindTruncated), truncState{idx, term}.encode(), nil)
	}
	if err == nil {
		err = pbb.Set(shardKey(shard, kindConfState), csv, nil)
	}
	if err != nil {
		return b.fail(fmt.Errorf("store: shard %d: snapshot: %w", shard, err))
	}
	p.first, p.last = idx+1, idx
	p.truncTerm, p.lastTerm = term, term
	p.cached, p.clearsCache = nil, true
	p.cs = cs
	p.setTrunc, p.setEntries, p.setCS, p.rewrites = true, true, true, true
	return nil
}

// Commit writes the batch with one pebble commit, synced (one WAL fsync for
// every shard in it) if sync is set; pass true if any Ready in it had
// MustSync. Only once the commit succeeds do the touched Logs show the new
// entries, hard state and conf state. An empty batch commits nothing.
func (b *Batch) Commit(sync bool) error {
	defer b.reset()
	if b.err != nil {
		return b.err
	}
	if b.Empty() {
		return nil
	}
	db := b.db
	db.mu.RLock()
	defer db.mu.RUnlock()
	if db.closed.Load() {
		return ErrClosed
	}

	// db.mu keeps DeleteShard out until we are done, so deleted cannot
	// change under us. Logs whose entries are rewritten are locked across
	// the write, in shard order.
	ids := sortedShards(b.shards)
	locked := make([]*Log, 0, len(ids))
	defer func() {
		for _, l := range locked {
			l.mu.Unlock()
		}
	}()
	for _, id := range ids {
		p := b.shards[id]
		if p.rewrites {
			p.log.mu.Lock()
			locked = append(locked, p.log)
		} else {
			p.log.mu.RLock()
		}
		deleted := p.log.deleted
		if !p.rewrites {
			p.log.mu.RUnlock()
		}
		if deleted {
			return fmt.Errorf("store: shard %d: %w", id, ErrShardDeleted)
		}
	}

	if err := db.apply(b.pb, sync); err != nil {
		return err
	}

	for _, id := range ids {
		p := b.shards[id]
		l := p.log
		if !p.rewrites {
			l.mu.Lock()
		}
		if p.setTrunc {
			l.first, l.truncTerm = p.first, p.truncTerm
		}
		if p.setEntries {
			l.last, l.lastTerm = p.last, p.lastTerm
		}
		if p.clearsCache {
			l.cache.reset()
		}
		l.cache.add(p.cached)
		if p.setHS {
			l.hs = p.hs
		}
		if p.setCS {
			l.cs = p.cs
		}
		if !p.rewrites {
			l.mu.Unlock()
		}
	}
	return nil
}

// fail records an error after part of a change reached the pebble batch:
// Commit refuses to write the batch and returns it.
func (b *Batch) fail(err error) error {
	if b.err == nil {
		b.err = err
	}
	return err
}

// reset empties the batch for reuse.
func (b *Batch) reset() {
	if b.pb != nil {
		_ = b.pb.Close()
		b.pb = nil
	}
	clear(b.shards)
	b.err = nil
}
