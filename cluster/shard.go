package cluster

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"go.etcd.io/raft/v3"
	"go.etcd.io/raft/v3/raftpb"

	"github.com/weir-log/weir/store"
)

// Shard is this node's replica of one shard: a raft group whose log is the
// shard's records. Its methods are safe for concurrent use.
type Shard struct {
	meta   ShardMeta
	eng    *engine
	log    *store.Log
	met    streamMetrics
	leader atomic.Uint64 // the raft leader as last reported (0: none); written by the loop
	// conf is the group's configuration as this replica last applied it;
	// written by the loop.
	conf atomic.Pointer[raftpb.ConfState]
	// leaderless is when the shard last lost its leader, or opened without
	// one (unix ns); 0 while it has one. Written by the loop.
	leaderless atomic.Int64

	// Owned by the engine's loop goroutine.
	rn         *raft.RawNode
	hardState  *raftpb.HardState // last persisted (as raft gave it; the commit saved may be lower)
	applied    uint64            // the last committed index applied (its entries handed out)
	lastStamp  int64             // last append time stamped, ms; never decreases
	confAt     time.Time         // when reconfigure last proposed a configuration change
	transferAt time.Time         // when reconfigure last asked for a leadership transfer

	mu        sync.Mutex
	committed uint64        // guarded by mu: highest applied index, readable
	grown     chan struct{} // guarded by mu: closed when committed grows
	gone      bool          // guarded by mu: the shard was deleted
}

// Meta is the shard's metadata.
func (s *Shard) Meta() ShardMeta { return s.meta }

// member reports whether node id is in the replica's applied raft
// configuration, as a voter (incoming or outgoing) or a learner.
func (s *Shard) member(id uint64) bool {
	cs := s.conf.Load()
	return slices.Contains(cs.GetVoters(), id) || slices.Contains(cs.GetVotersOutgoing(), id) ||
		slices.Contains(cs.GetLearners(), id) || slices.Contains(cs.GetLearnersNext(), id)
}

// Leader is the node id of the shard's raft leader as this replica last
// heard, 0 if none.
func (s *Shard) Leader() uint64 { return s.leader.Load() }

// Append proposes one marshaled BatchedRecord and returns once it is
// committed (durable): its log index and the append time stamped on it.
// It blocks while the node's append queue is full (backpressure).
func (s *Shard) Append(ctx context.Context, batch []byte) (uint64, time.Time, error) {
	p, err := s.Propose(ctx, batch)
	if err != nil {
		return 0, time.Time{}, err
	}
	return p.Wait(ctx)
}

// Propose queues one marshaled BatchedRecord for the next commit round and
// returns without waiting for the commit; Pending.Wait does. It blocks only
// while the node's append queue is full (backpressure). Batches proposed one
// after another (each Propose returning before the next is called) are
// committed in that order, so a caller that pipelines appends keeps their
// order.
func (s *Shard) Propose(ctx context.Context, batch []byte) (*Pending, error) {
	return s.propose(ctx, newEntryData(batch), batchRecords(batch))
}

// propose queues an entry's data (records, or a trim) for the next round.
func (s *Shard) propose(ctx context.Context, data []byte, records int) (*Pending, error) {
	if s.removed() {
		return nil, fmt.Errorf("%w: shard %d was deleted", ErrShardNotFound, s.meta.ID)
	}
	e := s.eng
	if err := e.err(); err != nil {
		return nil, err
	}
	p := &proposal{shard: s, data: data, records: records, queuedAt: time.Now(), done: make(chan proposalResult, 1)}
	select {
	case e.propc <- p:
		return &Pending{p: p, eng: e}, nil
	case <-e.stopc:
		return nil, ErrClosed
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// Pending is a proposed append on its way to commit.
type Pending struct {
	p   *proposal
	eng *engine
	// wait, when set, replaces p and eng: an append forwarded to another
	// node (remote.go).
	wait func(ctx context.Context) (uint64, time.Time, error)
}

// Wait returns once the append is committed, with its log index and the
// append time stamped on it, or once it failed. If ctx ends first, the
// append may still commit; the caller cannot know. Call Wait once.
func (pd *Pending) Wait(ctx context.Context) (uint64, time.Time, error) {
	if pd.wait != nil {
		return pd.wait(ctx)
	}
	result := func(r proposalResult) (uint64, time.Time, error) {
		if r.err != nil {
			return 0, time.Time{}, r.err
		}
		return r.index, msTime(r.appendMs), nil
	}
	select {
	case r := <-pd.p.done:
		return result(r)
	case <-pd.eng.donec:
		// The loop fails every waiter before it exits; a result may
		// still be in the buffer.
		select {
		case r := <-pd.p.done:
			return result(r)
		default:
			return 0, time.Time{}, ErrClosed
		}
	case <-ctx.Done():
		return 0, time.Time{}, ctx.Err()
	}
}

// Read returns committed data entries with index >= max(from, First()), in
// order, at most maxEntries of them and no more than maxBytes of batches
// (but always at least one entry if any is available, however large). Entries that
// hold no records (raft's own) are skipped. It does not block. An entry that
// does not decode ends the read with a *CorruptEntryError, returned with the
// good entries before it.
func (s *Shard) Read(from uint64, maxEntries, maxBytes int) ([]Entry, error) {
	committed, _ := s.Committed()
	from = max(from, s.First())
	if from > committed || maxEntries <= 0 {
		return nil, nil
	}
	var out []Entry
	size := 0
	var bad error
	err := s.scan(from, committed+1, func(ent *raftpb.Entry) bool {
		e, ok, err := dataEntry(ent)
		if err != nil {
			bad = &CorruptEntryError{Shard: s.meta.ID, Index: ent.GetIndex(), Err: err}
			return false
		}
		if !ok {
			return true
		}
		if len(out) > 0 && size+len(e.Batch) > maxBytes {
			return false // the first entry goes out whatever its size
		}
		out = append(out, e)
		size += len(e.Batch)
		return len(out) < maxEntries && size < maxBytes
	})
	if err == nil {
		err = bad
	}
	return out, err
}

// scan calls fn for the stored entries in [lo, hi), starting at the first
// one still stored if lo was trimmed. A trim can move the first index between
// reading it and opening the store's iterator (retention trims the very
// entries a reader from the oldest record starts at), so a scan refused as
// compacted starts again from the new first index; fn has not been called
// then.
func (s *Shard) scan(lo, hi uint64, fn func(*raftpb.Entry) bool) error {
	for {
		err := s.log.Scan(max(lo, s.First()), hi, fn)
		if !errors.Is(err, raft.ErrCompacted) {
			return s.storeErr(err)
		}
	}
}

// storeErr reports a read of a shard deleted meanwhile as ErrShardNotFound.
func (s *Shard) storeErr(err error) error {
	if errors.Is(err, store.ErrShardDeleted) {
		return fmt.Errorf("%w: shard %d was deleted", ErrShardNotFound, s.meta.ID)
	}
	return err
}

// dataEntry decodes a record entry; ok is false for raft's own entries.
func dataEntry(ent *raftpb.Entry) (Entry, bool, error) {
	if ent.GetType() != raftpb.EntryNormal {
		return Entry{}, false, nil
	}
	ms, _, batch, ok, err := decodeEntry(ent.Data)
	if err != nil || !ok {
		return Entry{}, false, err
	}
	return Entry{Index: ent.GetIndex(), AppendTime: msTime(ms), Batch: batch}, true, nil
}

// First is the lowest log index still stored (everything before was trimmed).
func (s *Shard) First() uint64 {
	first, err := s.log.FirstIndex()
	if err != nil {
		return 1
	}
	return first
}

// Committed is the highest committed (readable) index, with a channel that is
// closed when it grows: wait on it, then call Committed again.
func (s *Shard) Committed() (uint64, <-chan struct{}) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.committed, s.grown
}

func (s *Shard) setCommitted(index uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if index <= s.committed {
		return
	}
	s.committed = index
	close(s.grown)
	s.grown = make(chan struct{})
}

func (s *Shard) removed() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.gone
}

// markRemoved wakes everyone waiting on the shard; Committed's channel stays
// closed from then on so waiters notice.
func (s *Shard) markRemoved() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.gone {
		s.gone = true
		close(s.grown)
	}
}

// Removed reports whether the shard was deleted (with its stream).
func (s *Shard) Removed() bool { return s.removed() }

// LastData is the newest committed data entry, if the shard has one.
func (s *Shard) LastData() (Entry, bool, error) {
	committed, _ := s.Committed()
	return s.lastDataThrough(committed)
}

// lastDataThrough is the newest data entry with index <= hi.
func (s *Shard) lastDataThrough(hi uint64) (Entry, bool, error) {
	first := s.First()
	for i := hi; i >= first && i > 0; i-- {
		ents, err := s.log.Entries(i, i+1, 0)
		if errors.Is(err, raft.ErrCompacted) {
			// Trimmed meanwhile; everything above i held no records.
			return Entry{}, false, nil
		}
		if err != nil {
			return Entry{}, false, fmt.Errorf("cluster: reading shard %d index %d: %w", s.meta.ID, i, s.storeErr(err))
		}
		e, ok, err := dataEntry(ents[0])
		if err != nil {
			return Entry{}, false, err
		}
		if ok {
			return e, true, nil
		}
	}
	return Entry{}, false, nil
}

// IndexAtTime is the index of the first committed data entry appended at or
// after t, or Committed()+1 if there is none. Append times never decrease
// along a shard's log, so this is a binary search.
func (s *Shard) IndexAtTime(t time.Time) (uint64, error) {
	committed, _ := s.Committed()
	ms := t.UnixMilli()
	lo, hi := s.First(), committed+1
	// Invariant: every data entry below lo is older than t; the first data
	// entry at or after hi (if any) is not.
	for lo < hi {
		mid := lo + (hi-lo)/2
		e, ok, err := s.firstDataFrom(mid, hi)
		if err != nil {
			return 0, err
		}
		if !ok || e.AppendTime.UnixMilli() >= ms {
			hi = mid
		} else {
			lo = e.Index + 1
		}
	}
	e, ok, err := s.firstDataFrom(lo, committed+1)
	if err != nil {
		return 0, err
	}
	if !ok {
		return committed + 1, nil
	}
	return e.Index, nil
}

// firstDataFrom finds the first data entry in [lo, hi).
func (s *Shard) firstDataFrom(lo, hi uint64) (Entry, bool, error) {
	var found Entry
	var ok bool
	var bad error
	err := s.scan(lo, hi, func(ent *raftpb.Entry) bool {
		e, isData, err := dataEntry(ent)
		if err != nil {
			bad = err
			return false
		}
		if isData {
			found, ok = e, true
			return false
		}
		return true
	})
	if err == nil {
		err = bad
	}
	return found, ok, err
}

// Trim drops every entry with index <= through (capped at Committed()) on
// every replica: it commits a trim entry through raft, which each replica
// applies (applyTrim), and returns once this one has.
func (s *Shard) Trim(ctx context.Context, through uint64) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	committed, _ := s.Committed()
	through = min(through, committed)
	if through < s.First() {
		return nil
	}
	p, err := s.propose(ctx, newTrimData(through), 0)
	if err != nil {
		return err
	}
	if _, _, err := p.Wait(ctx); err != nil {
		return fmt.Errorf("cluster: trimming shard %d through %d: %w", s.meta.ID, through, err)
	}
	return nil
}
