package subscription

import (
	"errors"
	"slices"
	"time"

	"github.com/weir-log/weir/api/hstreampb"
	"github.com/weir-log/weir/cluster"
)

// shardState is the owner's view of one shard. Owned by the loop goroutine.
type shardState struct {
	id       uint64
	log      Log
	consumer *Consumer // the one consumer that receives this shard; nil: none
	next     uint64    // the next index to read from the log
	low      uint64    // where this owner started reading: nothing below was delivered by it
	waiting  bool      // caught up: a waiter watches the log for more
	gone     bool      // the shard was deleted
	handoff  bool      // moved: nothing goes out until no other consumer holds its batches
	retryAt  time.Time // a read failed: try again after this

	handoffCheck time.Time // during a handoff, when to look at the held batches again

	inflight map[uint64]*inflightBatch // delivered and not acked in full, by index
	order    []uint64                  // indexes of inflight, increasing; may hold acked ones at the front
	pending  []uint64                  // indexes of inflight due again (consumer nil), increasing
}

// inflightBatch is one delivered batch with records still unacked.
type inflightBatch struct {
	index    uint64
	n        int    // records in the batch
	unacked  int    // records not acked yet
	acked    []bool // per record; nil until the first ack
	consumer *Consumer
	last     *delivery // the latest delivery of the batch
	gen      uint32    // bumped by every delivery
	// sent: a consumer was sent the batch before it fell due again, so the
	// next delivery is a redelivery (not so for a batch taken back unsent
	// from a consumer's queue).
	sent bool
}

// checkpoint is the lowest index not yet acknowledged in full.
func (s *shardState) checkpoint() uint64 {
	for len(s.order) > 0 {
		if _, ok := s.inflight[s.order[0]]; ok {
			return s.order[0]
		}
		s.order = s.order[1:]
	}
	return s.next
}

// due marks a batch for delivery again, to whoever receives the shard next;
// sent says whether its consumer was sent it.
func (s *shardState) due(b *inflightBatch, sent bool) {
	if b.consumer == nil {
		return
	}
	b.consumer, b.sent = nil, sent
	if i, found := slices.BinarySearch(s.pending, b.index); !found {
		s.pending = slices.Insert(s.pending, i, b.index)
	}
}

// dueAll marks many batches due at once (a consumer left): sent tells, per
// batch, whether the consumer was sent it. One sort instead of an insertion
// per batch.
func (s *shardState) dueAll(bs []*inflightBatch, sent func(*inflightBatch) bool) {
	for _, b := range bs {
		if b.consumer == nil {
			continue
		}
		b.consumer, b.sent = nil, sent(b)
		s.pending = append(s.pending, b.index)
	}
	slices.Sort(s.pending)
	s.pending = slices.Compact(s.pending)
}

// heldElsewhere reports whether a consumer other than the shard's own still
// holds a batch of it, sent and unacked.
func (s *shardState) heldElsewhere() bool {
	for _, b := range s.inflight {
		if b.consumer != nil && b.consumer != s.consumer {
			return true
		}
	}
	return false
}

// unackedPositions lists the records still unacked, or nil if none was
// acked (the whole batch goes again).
func (b *inflightBatch) unackedPositions() []uint32 {
	if b.acked == nil {
		return nil
	}
	keep := make([]uint32, 0, b.unacked)
	for i, done := range b.acked {
		if !done {
			keep = append(keep, uint32(i))
		}
	}
	return keep
}

// dispatch hands out what the window allows: batches due again first, then
// new entries, taking the shards in turn so none starves the others.
func (o *owner) dispatch(now time.Time) {
	if len(o.consumers) == 0 || len(o.shardIDs) == 0 {
		return
	}
	n := len(o.shardIDs)
	for progress := true; progress; {
		progress = false
		for k := range n {
			if o.serve(o.shards[o.shardIDs[(o.rr+k)%n]], now) {
				progress = true
			}
		}
		o.rr = (o.rr + 1) % n
	}
}

// serve delivers to a shard's consumer one batch due again, or a read's
// worth of new entries within the window. It reports whether it delivered.
func (o *owner) serve(s *shardState, now time.Time) bool {
	if s.consumer == nil || s.gone || now.Before(s.retryAt) {
		return false
	}
	if s.handoff {
		// One consumer per shard at a time: after a move the new one gets
		// nothing of the shard (due batches included) until the previous
		// one has acked, or timed out, what it was sent, so a key's
		// records are never processed by two at once. Held batches were
		// sent, so each is acked or times out: this cannot wedge.
		if now.Before(s.handoffCheck) {
			return false
		}
		if s.heldElsewhere() {
			s.handoffCheck = now.Add(handoffRecheck)
			return false
		}
		s.handoff = false
	}
	for len(s.pending) > 0 {
		idx := s.pending[0]
		b, ok := s.inflight[idx]
		if !ok || b.consumer != nil {
			s.pending = s.pending[1:]
			continue // acked, or delivered again, meanwhile
		}
		ents, err := s.log.Read(idx, 1, 1)
		var corrupt *cluster.CorruptEntryError
		switch {
		case errors.As(err, &corrupt) && corrupt.Index == idx:
			ents = nil // dropped as a gap below
		case err != nil:
			o.shardFailed(s, err) // still pending: tried again later
			return false
		}
		s.pending = s.pending[1:]
		if len(ents) == 0 || ents[0].Index != idx {
			o.log.Warn("gap: a batch due again is no longer readable (trimmed by retention, or corrupt)", "shard", s.id, "index", idx, "unacked", b.unacked)
			o.met.gaps.add(1)
			o.outstanding -= b.unacked
			delete(s.inflight, idx)
			continue
		}
		keep := b.unackedPositions()
		if b.sent {
			o.met.redelivered.add(b.unacked)
		}
		o.deliver(s, b, ents[0], keep, now)
		return true
	}

	room := o.window - o.outstanding
	if s.waiting || (room <= 0 && o.outstanding > 0) {
		return false
	}
	if first := s.log.First(); s.next < first {
		o.log.Warn("gap: retention trimmed entries before they were delivered", "shard", s.id, "from", s.next, "first", first)
		o.met.gaps.add(1)
		s.next = first
	}
	committed, grown := s.log.Committed()
	ents, err := s.log.Read(s.next, min(max(room, 1), readEntries), readBytes)
	var corrupt *cluster.CorruptEntryError
	switch {
	case errors.As(err, &corrupt) && len(ents) == 0:
		// Skip the entry: it can never be delivered.
		o.log.Error("gap: skipping a log entry that does not decode", "shard", s.id, "index", corrupt.Index, "err", err)
		o.met.gaps.add(1)
		s.next = corrupt.Index + 1
		return true // read on
	case errors.As(err, &corrupt):
		// Deliver the good entries before it; the next read meets it.
	case err != nil:
		o.shardFailed(s, err)
		return false
	}
	if len(ents) == 0 {
		if s.log.Removed() {
			o.shardFailed(s, cluster.ErrShardNotFound)
			return false
		}
		// Nothing through committed holds records; wait for more.
		s.next = max(s.next, committed+1)
		s.waiting = true
		o.wait(s.id, grown)
		return false
	}
	if ents[0].Index > s.next && s.log.First() > s.next {
		// Trimmed between the check above and the read.
		o.log.Warn("gap: retention trimmed entries before they were delivered", "shard", s.id, "from", s.next, "first", ents[0].Index)
		o.met.gaps.add(1)
	}
	delivered := false
	for _, e := range ents {
		n, err := batchSize(e.Batch)
		if err != nil {
			o.log.Error("skipping a log entry that is not a BatchedRecord", "shard", s.id, "index", e.Index, "err", err)
			o.met.gaps.add(1)
			s.next = e.Index + 1
			continue
		}
		if o.outstanding > 0 && o.outstanding+n > o.window {
			break // the window is full; this entry is read again later
		}
		b := &inflightBatch{index: e.Index, n: n, unacked: n}
		s.inflight[e.Index] = b
		s.order = append(s.order, e.Index)
		s.next = e.Index + 1
		o.outstanding += n
		o.seenBatches++
		o.seenRecords += uint64(n)
		o.deliver(s, b, e, nil, now)
		delivered = true
	}
	return delivered
}

// deliver hands a batch (or its unacked records) to the shard's consumer
// and starts its ack timeout.
func (o *owner) deliver(s *shardState, b *inflightBatch, e cluster.Entry, keep []uint32, now time.Time) {
	b.consumer = s.consumer
	b.gen++
	b.last = &delivery{shard: s.id, entry: e, keep: keep}
	o.timeout(s.id, b, now.Add(o.ackTimeout))
	s.consumer.push(b.last)
	o.met.delivered.add(b.unacked)
}

// timeout starts (or restarts) a batch's ack timeout. The queue is kept in
// deadline order, which expire relies on: a deadline earlier than the last
// one queued is moved to it (by at most a tick or a stall of the loop).
func (o *owner) timeout(shard uint64, b *inflightBatch, deadline time.Time) {
	if n := len(o.timeouts); n > 0 && deadline.Before(o.timeouts[n-1].deadline) {
		deadline = o.timeouts[n-1].deadline
	}
	o.timeouts = append(o.timeouts, timeout{shard: shard, index: b.index, gen: b.gen, deadline: deadline})
}

// wait starts a waiter that wakes the loop when the shard commits more.
func (o *owner) wait(id uint64, grown <-chan struct{}) {
	o.wg.Add(1)
	go func() {
		defer o.wg.Done()
		select {
		case <-grown:
			select {
			case o.wakec <- id:
			case <-o.stopc:
			}
		case <-o.stopc:
		}
	}()
}

// shardFailed handles a failed read. A deleted shard is dropped: what it
// had outstanding no longer counts against the window. Any other error is
// logged and the read retried a second later.
func (o *owner) shardFailed(s *shardState, err error) {
	if !errors.Is(err, cluster.ErrShardNotFound) {
		o.log.Error("reading a shard failed; retrying in a second", "shard", s.id, "err", err)
		s.retryAt = time.Now().Add(time.Second)
		return
	}
	o.log.Info("shard deleted; no longer delivering it", "shard", s.id)
	s.gone = true
	for _, b := range s.inflight {
		o.outstanding -= b.unacked
	}
	clear(s.inflight)
	s.order, s.pending = nil, nil
}

// dropCorrupt gives up on a delivered batch that cannot be built (its entry
// is not a BatchedRecord): it counts as a gap, so consumers go on.
func (o *owner) dropCorrupt(shard, index uint64, why error) {
	s := o.shards[shard]
	if s == nil {
		return
	}
	b, ok := s.inflight[index]
	if !ok {
		return
	}
	o.log.Error("skipping a log entry that cannot be delivered", "shard", shard, "index", index, "err", why)
	o.met.gaps.add(1)
	o.outstanding -= b.unacked
	delete(s.inflight, index)
}

// acked applies acks. Acks of records never delivered, of other shards, or
// already acked are ignored and counted.
func (o *owner) acked(ids []*hstreampb.RecordId) {
	var ok, ignored, dup int
	for _, id := range ids {
		s := o.shards[id.GetShardId()]
		if s == nil {
			ignored++
			continue
		}
		b := s.inflight[id.GetBatchId()]
		if b == nil {
			if s.low <= id.GetBatchId() && id.GetBatchId() < s.next {
				dup++ // acknowledged in full already
			} else {
				ignored++
			}
			continue
		}
		i := int(id.GetBatchIndex())
		if i >= b.n {
			ignored++
			continue
		}
		if b.acked == nil {
			b.acked = make([]bool, b.n)
		}
		if b.acked[i] {
			dup++
			continue
		}
		b.acked[i] = true
		b.unacked--
		o.outstanding--
		ok++
		if b.unacked == 0 {
			delete(s.inflight, b.index)
		}
	}
	o.met.acked.add(ok)
	o.met.ignored.add(ignored)
	o.met.dupAcks.add(dup)
	if ignored > 0 {
		o.log.Debug("ignored acks of records never delivered", "count", ignored)
	}
}

// expire marks the batches whose ack timeout passed as due again.
func (o *owner) expire(now time.Time) {
	n := 0
	for _, t := range o.timeouts {
		if t.deadline.After(now) {
			break
		}
		n++
		s := o.shards[t.shard]
		if s == nil {
			continue
		}
		b, ok := s.inflight[t.index]
		if !ok || b.gen != t.gen || b.consumer == nil {
			continue
		}
		taken := b.last.takenAt.Load()
		if taken == 0 {
			// Still queued, never sent (the consumer is not keeping up):
			// the clock starts again rather than a second copy queuing.
			o.timeout(t.shard, b, now.Add(o.ackTimeout))
			continue
		}
		if since := now.Sub(time.Unix(0, taken)); since < o.ackTimeout {
			// Taken for sending after it was queued: the timeout counts
			// from then.
			o.timeout(t.shard, b, now.Add(o.ackTimeout-since))
			continue
		}
		s.due(b, true)
	}
	if n > 0 {
		o.timeouts = slices.Delete(o.timeouts, 0, n)
	}
}

// compact drops the bookkeeping of batches acked since: timeouts of acked
// batches (they would wait out the ack timeout, which may be ten hours) and
// indexes of acked batches behind an unacked one in a shard's order. Both
// stay within twice what is in flight, plus a constant.
func (o *owner) compact() {
	const slack = 1024
	live := 0
	for _, s := range o.shards {
		live += len(s.inflight)
		if len(s.order) > 2*len(s.inflight)+slack {
			s.order = slices.DeleteFunc(s.order, func(idx uint64) bool { _, ok := s.inflight[idx]; return !ok })
		}
	}
	if len(o.timeouts) > 2*live+slack {
		o.timeouts = slices.DeleteFunc(o.timeouts, func(t timeout) bool {
			s := o.shards[t.shard]
			if s == nil {
				return true
			}
			b, ok := s.inflight[t.index]
			return !ok || b.gen != t.gen
		})
	}
}

// rebalance spreads the shards over the consumers, one consumer per shard,
// each consumer getting ⌊S/C⌋ or ⌈S/C⌉, moving as few shards as it can. A
// shard that moves leaves its queued, unsent batches to the new consumer;
// what the old one was sent stays with it until acked or timed out.
func (o *owner) rebalance() {
	if len(o.consumers) == 0 {
		for _, s := range o.shards {
			s.consumer = nil
		}
		return
	}
	nc, ns := len(o.consumers), len(o.shardIDs)
	lo, extra := ns/nc, ns%nc
	hi := lo
	if extra > 0 {
		hi++
	}
	load := make(map[*Consumer][]*shardState, nc)
	var pool []*shardState
	for _, id := range o.shardIDs {
		s := o.shards[id]
		if s.consumer == nil || !slices.Contains(o.consumers, s.consumer) {
			s.consumer = nil
			pool = append(pool, s)
			continue
		}
		load[s.consumer] = append(load[s.consumer], s)
	}
	atHi := 0
	for _, c := range o.consumers {
		limit := hi
		if hi > lo && atHi >= extra {
			limit = lo // only `extra` consumers may hold hi shards
		}
		if len(load[c]) > limit {
			pool = append(pool, load[c][limit:]...)
			load[c] = load[c][:limit]
		}
		if len(load[c]) == hi && hi > lo {
			atHi++
		}
	}
	for _, s := range pool {
		var to *Consumer
		for _, c := range o.consumers {
			if to == nil || len(load[c]) < len(load[to]) {
				to = c
			}
		}
		o.move(s, to)
		load[to] = append(load[to], s)
	}
}

// move gives a shard to consumer to. Batches queued for the previous
// consumer and not yet taken are due again, for the new one.
func (o *owner) move(s *shardState, to *Consumer) {
	if prev := s.consumer; prev != nil && prev != to {
		for _, idx := range prev.unqueue(s.id) {
			if b, ok := s.inflight[idx]; ok {
				s.due(b, false)
			}
		}
	}
	if s.consumer != nil && s.consumer != to {
		s.handoff = true
	}
	s.consumer = to
}
