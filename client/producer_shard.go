package client

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/weir-log/weir/api/hstreampb"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// The BufferedProducer's per-shard buffers and its flow control; the
// design is described at the top of producer.go.

// slabSize is how many records (wire form and future) a shard buffer
// allocates at a time.
const slabSize = 64

// slot holds one record between Append and its result: one allocation per
// slabSize records instead of three per record.
type slot struct {
	rec hstreampb.HStreamRecord
	hdr hstreampb.HStreamRecordHeader
	res AppendResult
}

// pendingBatch is one batch of one shard, from its first record until its
// futures resolve.
type pendingBatch struct {
	recs     []*hstreampb.HStreamRecord // dropped once sent
	bytes    int                        // recordBytes of recs, held in flow control
	deadline time.Time                  // when the age limit cuts it
	done     chan struct{}              // closed once ids or err is set
	ids      []*hstreampb.RecordId
	err      error
}

// shardBuf buffers the records of one shard; its sender goroutine (run)
// sends its batches one at a time.
type shardBuf struct {
	p    *BufferedProducer
	id   uint64
	wake chan struct{} // capacity 1: the sender has something to look at

	// mu guards the fields below.
	mu     sync.Mutex
	cur    *pendingBatch   // being filled; nil when empty
	queue  []*pendingBatch // cut and not yet sent, oldest first
	last   *pendingBatch   // the newest batch cut (queued, in flight or resolved)
	closed bool            // Close began: no more records; run ends once all is sent
	slots  []slot          // not handed out yet
}

func newShardBuf(p *BufferedProducer, id uint64) *shardBuf {
	return &shardBuf{p: p, id: id, wake: make(chan struct{}, 1)}
}

// add puts r, of n bytes, into the batch being filled and returns its
// future, or nil after Close. It cuts the batch first if r would take it
// past the bytes limit, and after if a limit is reached.
func (sb *shardBuf) add(r *Record, n int) *AppendResult {
	cfg := &sb.p.cfg
	wake := false
	sb.mu.Lock()
	if sb.closed {
		sb.mu.Unlock()
		return nil
	}
	if sb.cur != nil && sb.cur.bytes+n > cfg.batchBytes {
		sb.cutLocked()
	}
	if sb.cur == nil {
		sb.cur = &pendingBatch{
			recs:     make([]*hstreampb.HStreamRecord, 0, min(cfg.batchCount, 128)),
			deadline: time.Now().Add(cfg.batchAge),
			done:     make(chan struct{}),
		}
		wake = true // the sender arms the age timer
	}
	if len(sb.slots) == 0 {
		sb.slots = make([]slot, slabSize)
	}
	s := &sb.slots[0]
	sb.slots = sb.slots[1:]
	fillRecord(&s.rec, &s.hdr, r)
	b := sb.cur
	b.recs = append(b.recs, &s.rec)
	b.bytes += n
	res := &s.res
	res.b, res.i = b, len(b.recs)-1
	if len(b.recs) >= cfg.batchCount || b.bytes >= cfg.batchBytes {
		sb.cutLocked()
		wake = true
	}
	sb.mu.Unlock()
	if wake {
		sb.signal()
	}
	return res
}

// cutLocked moves the batch being filled, if any, to the send queue.
func (sb *shardBuf) cutLocked() {
	if sb.cur == nil {
		return
	}
	sb.p.fc.markCut(sb.cur.bytes)
	sb.queue = append(sb.queue, sb.cur)
	sb.last = sb.cur
	sb.cur = nil
}

// cut cuts the batch being filled, for Flush, or for Close when closing
// is set, and returns the newest batch cut: once it resolves, so have all
// earlier ones of the shard. Nil if the shard never had a batch.
func (sb *shardBuf) cut(closing bool) *pendingBatch {
	sb.mu.Lock()
	if closing {
		sb.closed = true
	}
	sb.cutLocked()
	last := sb.last
	sb.mu.Unlock()
	sb.signal()
	return last
}

// signal wakes the sender without blocking.
func (sb *shardBuf) signal() {
	select {
	case sb.wake <- struct{}{}:
	default:
	}
}

// run is the shard's sender: it cuts the batch being filled when its age
// limit passes and sends the queued batches one at a time, oldest first,
// until Close and an empty buffer.
func (sb *shardBuf) run() {
	defer sb.p.senders.Done()
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	var unreachable error // while closing, the last batch ran out of attempts on an unreachable node
	for {
		sb.mu.Lock()
		wait := time.Duration(-1)
		if sb.cur != nil {
			if wait = time.Until(sb.cur.deadline); wait <= 0 {
				sb.cutLocked()
				wait = -1
			}
		}
		var b *pendingBatch
		if len(sb.queue) > 0 {
			b = sb.queue[0]
			sb.queue[0] = nil
			sb.queue = sb.queue[1:]
		}
		closed := sb.closed
		done := b == nil && closed && sb.cur == nil
		sb.mu.Unlock()
		switch {
		case b != nil && closed && unreachable != nil:
			sb.resolve(b, nil, fmt.Errorf("client: BufferedProducer of stream %q: shard %d: batch of %d records not sent: closing, and an earlier batch ran out of attempts: %w",
				sb.p.stream, sb.id, len(b.recs), unreachable))
			continue
		case b != nil:
			err := sb.send(b)
			sb.mu.Lock()
			closing := sb.closed
			sb.mu.Unlock()
			// Only a node found unreachable while closing ends the drain:
			// an outage before Close may be over by now.
			if closing && status.Code(err) == codes.Unavailable {
				unreachable = err
			} else {
				unreachable = nil
			}
			continue
		case done:
			return
		}
		if wait >= 0 {
			timer.Reset(wait)
		}
		select {
		case <-sb.wake:
		case <-timer.C:
		}
		timer.Stop()
	}
}

// send appends b to the shard (retried and routed by do), resolves its
// futures, and returns the error it failed with.
func (sb *shardBuf) send(b *pendingBatch) error {
	p := sb.p
	ids, err := p.c.appendBatch(p.sendCtx, p.stream, sb.id, b.recs, p.cfg.compression)
	if status.Code(err) == codes.NotFound {
		p.shardGone(sb.id, err)
	}
	sb.resolve(b, ids, err)
	return err
}

// resolve sets b's result, wakes its futures and gives its bytes back to
// flow control.
func (sb *shardBuf) resolve(b *pendingBatch, ids []*hstreampb.RecordId, err error) {
	for _, rec := range b.recs {
		// A future keeps its slab alive: let the records' data go.
		rec.Payload, rec.Header.Key, rec.Header.Attributes = nil, "", nil
	}
	b.ids, b.err, b.recs = ids, err, nil
	close(b.done)
	sb.p.fc.release(b.bytes, true)
}

// flowControl bounds the bytes a producer holds. Waiters are served first
// come, first served: a large record is not starved by small ones.
type flowControl struct {
	limit int
	// full, if set, is called (no lock held) when an acquire has to wait
	// and the batches already cut would not make room for it once sent: the
	// rest of the bytes sit in batches being filled, which would otherwise
	// hold them until their age limit.
	full func()

	// mu guards the fields below. It is a leaf lock.
	mu      sync.Mutex
	used    int // bytes held: records being batched, queued or in flight
	cut     int // of used, the bytes of batches cut and not yet resolved
	waiters []*fcWaiter
	closed  bool
}

type fcWaiter struct {
	n     int
	ready chan error // capacity 1: nil once granted, ErrProducerClosed at close
}

// acquire takes n bytes, waiting for them if block is set. It fails with
// ErrBufferFull (not blocking), ErrProducerClosed, or ctx.Err().
func (f *flowControl) acquire(ctx context.Context, n int, block bool) error {
	f.mu.Lock()
	switch {
	case f.closed:
		f.mu.Unlock()
		return ErrProducerClosed
	case len(f.waiters) == 0 && f.used+n <= f.limit:
		f.used += n
		f.mu.Unlock()
		return nil
	case !block:
		f.mu.Unlock()
		return ErrBufferFull
	}
	w := &fcWaiter{n: n, ready: make(chan error, 1)}
	f.waiters = append(f.waiters, w)
	stuck := f.used-f.cut+n > f.limit
	f.mu.Unlock()
	if stuck && f.full != nil {
		f.full()
	}
	select {
	case err := <-w.ready:
		return err
	case <-ctx.Done():
	}
	f.mu.Lock()
	i := slices.Index(f.waiters, w)
	if i < 0 { // granted or closed meanwhile
		f.mu.Unlock()
		return <-w.ready
	}
	f.waiters = slices.Delete(f.waiters, i, i+1)
	f.grantLocked() // those behind it may fit now
	f.mu.Unlock()
	return ctx.Err()
}

// release gives n bytes back and wakes the waiters that now fit. cut says
// they were a cut batch's.
func (f *flowControl) release(n int, cut bool) {
	f.mu.Lock()
	f.used -= n
	if cut {
		f.cut -= n
	}
	f.grantLocked()
	f.mu.Unlock()
}

// markCut counts n bytes as those of a cut batch.
func (f *flowControl) markCut(n int) {
	f.mu.Lock()
	f.cut += n
	f.mu.Unlock()
}

func (f *flowControl) grantLocked() {
	for len(f.waiters) > 0 && f.used+f.waiters[0].n <= f.limit {
		w := f.waiters[0]
		f.waiters = slices.Delete(f.waiters, 0, 1)
		f.used += w.n
		w.ready <- nil
	}
}

// close fails every waiter and every later acquire with ErrProducerClosed.
func (f *flowControl) close() {
	f.mu.Lock()
	f.closed = true
	for _, w := range f.waiters {
		w.ready <- ErrProducerClosed
	}
	f.waiters = nil
	f.mu.Unlock()
}
