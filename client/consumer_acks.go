package client

import (
	"sync"
	"time"

	"github.com/weir-log/weir/api/hstreampb"
)

// ackBuffer collects the acks of one Consume until an ack sender takes
// them. It outlives the fetch streams of its Consume: acks made while a
// stream breaks, or taken by a sender whose send failed, wait in it for
// the next stream. There is one sender at a time (each stream's, in turn).
// It holds at most the records delivered and not yet acked to the server,
// which the subscription's maxUnackedRecords bounds per stream.
type ackBuffer struct {
	size int
	// wake (capacity 1) tells the ack sender that an ack is pending where
	// none was, or that size of them are. A wake-up left over from an
	// earlier stream only makes the next sender look once more.
	wake chan struct{}

	mu sync.Mutex
	// Guarded by mu:
	pending []pendingAck // in ack order
	closed  bool         // the last acks were taken; later ones are dropped
}

type pendingAck struct {
	id *hstreampb.RecordId
	at time.Time
}

func newAckBuffer(size int) *ackBuffer {
	return &ackBuffer{size: size, wake: make(chan struct{}, 1)}
}

func (b *ackBuffer) add(id *hstreampb.RecordId) {
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return
	}
	b.pending = append(b.pending, pendingAck{id: id, at: time.Now()})
	n := len(b.pending)
	b.mu.Unlock()
	if n == 1 || n >= b.size {
		b.signal()
	}
}

func (b *ackBuffer) signal() {
	select {
	case b.wake <- struct{}{}:
	default: // a wake-up is pending already
	}
}

// putBack returns acks a sender took but could not send to the front of
// the buffer, for the next stream; after close they are dropped. They count
// as made now: the next stream's sender sends every pending ack at once
// anyway.
func (b *ackBuffer) putBack(ids []*hstreampb.RecordId) {
	if len(ids) == 0 {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return
	}
	now := time.Now()
	back := make([]pendingAck, len(ids), len(ids)+len(b.pending))
	for i, id := range ids {
		back[i] = pendingAck{id: id, at: now}
	}
	b.pending = append(back, b.pending...)
}

// take removes the acks to send now: every pending one if all, else as
// many whole requests' worth (multiples of size) as there are. It returns
// them and when the oldest ack left was made (zero if none is left).
func (b *ackBuffer) take(all bool) ([]*hstreampb.RecordId, time.Time) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.takeLocked(all)
}

func (b *ackBuffer) takeLocked(all bool) ([]*hstreampb.RecordId, time.Time) {
	n := len(b.pending)
	if !all {
		n -= n % b.size
	}
	ids := make([]*hstreampb.RecordId, n)
	for i := range ids {
		ids[i] = b.pending[i].id
	}
	b.pending = append(b.pending[:0], b.pending[n:]...)
	var oldest time.Time
	if len(b.pending) > 0 {
		oldest = b.pending[0].at
	}
	return ids, oldest
}

// close takes every pending ack and drops those made later.
func (b *ackBuffer) close() []*hstreampb.RecordId {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.closed = true
	ids, _ := b.takeLocked(true)
	return ids
}
