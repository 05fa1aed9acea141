package subscription

import (
	"context"
	"sync"
	"time"

	"github.com/weir-log/weir/api/hstreampb"
)

// ConsumerInfo describes an attached consumer (ListConsumers).
type ConsumerInfo struct {
	Name      string
	URI       string // the peer address it connected from
	UserAgent string
}

// Consumer is one attached member of a subscription's consumer group. The
// owner pushes batches into its queue; the RPC handler takes them with Next
// and sends them, and passes acks back with Ack. The queue needs no bound of
// its own: the owner never has more than the subscription's
// maxUnackedRecords delivered and unacked, over all its consumers.
type Consumer struct {
	info ConsumerInfo
	o    *owner

	mu    sync.Mutex
	queue []*delivery // guarded by mu: handed over, not yet taken by Next
	err   error       // guarded by mu: why the consumer was dropped
	ready chan struct{}

	closeOnce sync.Once
}

func newConsumer(o *owner, info ConsumerInfo) *Consumer {
	return &Consumer{info: info, o: o, ready: make(chan struct{}, 1)}
}

// Info is the consumer's name and origin.
func (c *Consumer) Info() ConsumerInfo { return c.info }

// push queues a batch for the consumer. Called by the owner.
func (c *Consumer) push(d *delivery) {
	c.mu.Lock()
	c.queue = append(c.queue, d)
	c.mu.Unlock()
	c.signal()
}

// unqueue takes back the batches of one shard that were queued but not
// taken by Next, and returns their indexes: the shard moved to another
// consumer, which gets them instead. Called by the owner.
func (c *Consumer) unqueue(shard uint64) []uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	var taken []uint64
	kept := c.queue[:0]
	for _, d := range c.queue {
		if d.shard == shard {
			taken = append(taken, d.entry.Index)
		} else {
			kept = append(kept, d)
		}
	}
	clear(c.queue[len(kept):])
	c.queue = kept
	return taken
}

// fail ends the consumer's deliveries with err. Called by the owner.
func (c *Consumer) fail(err error) {
	c.mu.Lock()
	if c.err == nil {
		c.err = err
	}
	c.mu.Unlock()
	c.signal()
}

func (c *Consumer) signal() {
	select {
	case c.ready <- struct{}{}:
	default:
	}
}

// Next waits for the next batch to send and builds it. It returns the
// reason if the consumer was dropped (the subscription was deleted, the
// manager closed), or ctx's error.
func (c *Consumer) Next(ctx context.Context) (*hstreampb.ReceivedRecord, error) {
	for {
		c.mu.Lock()
		if c.err != nil {
			err := c.err
			c.mu.Unlock()
			return nil, err
		}
		if len(c.queue) > 0 {
			d := c.queue[0]
			c.queue[0] = nil
			c.queue = c.queue[1:]
			d.takenAt.Store(time.Now().UnixNano())
			c.mu.Unlock()
			rr, err := d.received()
			if err != nil {
				// A batch that cannot be built would fail every
				// consumer in turn: skip it, and go on.
				_ = c.o.do(func() { c.o.dropCorrupt(d.shard, d.entry.Index, err) })
				continue
			}
			return rr, nil
		}
		c.mu.Unlock()
		select {
		case <-c.ready:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// Ack acknowledges records by id. Ids of other subscriptions' shards, ids
// never delivered and repeated acks are ignored (and counted). Acks are
// accepted from any consumer, even one that has left, since a record id names
// the record whoever received it.
func (c *Consumer) Ack(ids []*hstreampb.RecordId) {
	if len(ids) > 0 {
		c.o.ack(ids)
	}
}

// Close detaches the consumer: its shards go to the others and what it holds
// unacked is delivered again. Idempotent.
func (c *Consumer) Close() {
	c.closeOnce.Do(func() { c.o.detach(c) })
}
