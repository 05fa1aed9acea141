package client

// The BufferedProducer.
//
// Append hands one record to the producer and returns a future at once; the
// producer gathers records into one batch per shard and sends the batches
// in the background:
//
//	Append(r) ──► flow control ──► shard = ShardMap.Lookup(r.Key) ──► that shard's buffer
//	              reserve the record's           (MD5 of the key)       the batch being filled;
//	              bytes: block, or fail                                 cut at the count, bytes
//	              with ErrBufferFull                                    or age limit, or by Flush
//	                                                                        │
//	                                                                        ▼
//	                                                    the shard's queue of cut batches
//	                                                                        │
//	              one sender goroutine per shard: appendBatch, shared with Client.Append
//	              (encode, compress, one Append RPC through do: Unavailable is retried
//	              with back-off, WrongServer is looked up again), one batch at a time
//	                                                                        │
//	                                                                        ▼
//	              resolve the batch's futures (its ids in order, or the final error),
//	              then give its bytes back to flow control (which wakes blocked Appends)
//
// The age timer of a batch starts when its first record enters the empty
// buffer; the shard's sender owns the timer, so no goroutine but the
// senders runs, and Close waits for them.
//
// # Order
//
// A key maps to one shard, its records enter that shard's buffer in the
// order Append accepted them (for one goroutine: call order), batches are
// cut in that order, and a shard has at most one Append RPC in flight: the
// next batch is sent only once the previous one is resolved, after all its
// retries. So the records of a key are stored in the order they were
// appended. Shards are sent in parallel, so there is no order across keys
// of different shards.
//
// # Retries and failures
//
// A retried RPC may have been carried out already (the node stored the
// batch, then failed before it answered): the batch is then stored twice,
// back to back in its shard, and its futures report the ids of the copy
// that was acknowledged. Delivery is at least once.
//
// A batch that fails for good (attempts exhausted, or an error that is not
// retried) resolves its futures with that error and the sender goes on
// with the next batch: a key's later records are still stored in order,
// with the failed ones missing. A caller that must not leave a gap checks
// each future and stops appending at the first error. Close drains, but
// once one of a shard's batches has run out of attempts against an
// unreachable node while closing, the shard's remaining batches fail at
// once with an error wrapping that one, so that Close ends.
//
// A NotFound answer means the shard or the stream is gone (the stream was
// deleted, or deleted and created again with new shards). The batch fails
// with it, and so do the batches already cut for that shard; the producer
// drops the client's cached shards of the stream (forgetShards) and its own
// routing, and the next Append fetches the stream's shards again (and fails
// if the stream no longer exists).
//
// # Memory
//
// Records are converted to their wire form at Append and kept, with their
// futures, in slabs of 64 per shard (one allocation instead of three per
// record); a slab lives while any of its futures is referenced, but the
// records' payloads, keys and attributes are let go once their batch is
// answered. Flow control counts record bytes only: a full producer holds
// about 170 bytes per record more than FlowControlBytesLimit says.
//
// # Designs not taken
//
// Several Append RPCs in flight per shard would hide more latency, but a
// batch retried after a later one was stored would land after it, breaking
// the order of its keys. A goroutine per batch or per record costs more
// and orders nothing; a timer goroutine per batch (time.AfterFunc) could
// outlive Close. Encoding records into the batch's bytes at Append would
// leave the buffer free of pointers for the garbage collector, but would
// fork the encoding Append uses (wire.EncodeBatch): profiles show the
// producer's own work is under a microsecond per record, small beside the
// server's.
//
// # Locks
//
// refreshMu serializes routing refreshes and is held across ListShards; mu
// guards the producer's list of shard buffers and its closed flag; each
// shardBuf's mu guards that buffer; flowControl.mu is a leaf. Order:
// refreshMu, then mu, then a shardBuf's mu. No lock is held across an
// Append RPC.

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"unicode/utf8"

	"github.com/weir-log/weir/api/hstreampb"
	"github.com/weir-log/weir/api/wire"
)

// BufferedProducer appends records to one stream in the background, in
// batches per shard (see the comment at the top of producer.go). It is
// safe for concurrent use. Close it, before the Client, to send what it
// holds.
type BufferedProducer struct {
	c      *Client
	stream string
	cfg    producerConfig
	fc     flowControl
	// sendCtx is the context of every Append RPC: never cancelled, as
	// Close drains rather than abandons; the client's retry budget bounds
	// each batch.
	sendCtx context.Context

	routing atomic.Pointer[routing]
	stale   atomic.Bool // a shard was not found: fetch the shards again

	refreshMu sync.Mutex // serializes refreshes; held across ListShards

	// mu guards the fields below.
	mu     sync.Mutex
	all    []*shardBuf // every buffer made, routed or not, to flush and close
	closed bool

	senders   sync.WaitGroup
	closeOnce sync.Once
}

// routing maps a key to its shard's buffer. It is immutable; a refresh
// installs a new one.
type routing struct {
	sm   *wire.ShardMap
	bufs map[uint64]*shardBuf
}

// NewBufferedProducer returns a producer for stream. It checks every
// option (an error wrapping ErrInvalidArgument names each bad one and its
// value) and fetches the stream's shards (or uses the client's cached
// ones); ctx bounds only that fetch.
func (c *Client) NewBufferedProducer(ctx context.Context, stream string, opts ...ProducerOpt) (*BufferedProducer, error) {
	cfg := defaultProducerConfig()
	for _, o := range opts {
		o.applyProducer(&cfg)
	}
	if err := cfg.validate(); err != nil {
		return nil, fmt.Errorf("NewBufferedProducer(%q): %w", stream, err)
	}
	sm, err := c.shardMap(ctx, stream, false)
	if err != nil {
		return nil, err
	}
	p := &BufferedProducer{
		c:       c,
		stream:  stream,
		cfg:     cfg,
		fc:      flowControl{limit: cfg.flowBytes},
		sendCtx: context.Background(),
	}
	p.fc.full = p.cutFilling
	p.mu.Lock()
	p.installLocked(sm)
	p.mu.Unlock()
	return p, nil
}

// cutFilling cuts every shard's batch being filled, so that its bytes come
// back once it is sent: flow control calls it when an Append waits for
// bytes that only those batches hold.
func (p *BufferedProducer) cutFilling() {
	p.mu.Lock()
	bufs := p.all
	p.mu.Unlock()
	for _, sb := range bufs {
		sb.cut(false)
	}
}

// Append adds r to its shard's batch and returns the future of its record
// id. The producer keeps r.Payload and r.Attributes until the future
// resolves: do not modify them before.
//
// Append returns an error only when it did not take the record: after
// Close (ErrProducerClosed); when FlowControlBytesLimit is reached and the
// producer does not block (ErrBufferFull); when ctx is done while Append
// waits for buffer space; when the record alone is larger than
// FlowControlBytesLimit, or its key or attributes are not valid UTF-8
// (ErrInvalidArgument); or when the stream's shards
// had to be fetched again and could not be. Failures to store an accepted
// record are reported by its future.
func (p *BufferedProducer) Append(ctx context.Context, r Record) (*AppendResult, error) {
	if err := checkUTF8(&r); err != nil {
		return nil, fmt.Errorf("%w: BufferedProducer.Append to stream %q: %v", ErrInvalidArgument, p.stream, err)
	}
	n := recordBytes(&r)
	if n > p.cfg.flowBytes {
		return nil, fmt.Errorf("%w: BufferedProducer.Append to stream %q: the record has %d bytes, more than FlowControlBytesLimit(%d)", ErrInvalidArgument, p.stream, n, p.cfg.flowBytes)
	}
	if err := p.fc.acquire(ctx, n, !p.cfg.nonBlocking); err != nil {
		switch {
		case errors.Is(err, ErrBufferFull):
			return nil, fmt.Errorf("%w: BufferedProducer.Append to stream %q: FlowControlBytesLimit(%d) reached", err, p.stream, p.cfg.flowBytes)
		case errors.Is(err, ErrProducerClosed):
			return nil, p.closedErr()
		}
		return nil, fmt.Errorf("client: BufferedProducer.Append to stream %q: waiting for buffer space: %w", p.stream, err)
	}
	// Routed only once there is room: an Append that waited across a
	// refresh goes to the new shards.
	rt, err := p.route(ctx)
	if err != nil {
		p.fc.release(n, false)
		return nil, err
	}
	res := rt.bufs[rt.sm.Lookup(r.Key)].add(&r, n)
	if res == nil {
		p.fc.release(n, false)
		return nil, p.closedErr()
	}
	return res, nil
}

// checkUTF8 refuses what protobuf would refuse to encode, so that one bad
// record is turned away by Append rather than failing its whole batch.
func checkUTF8(r *Record) error {
	if !utf8.ValidString(r.Key) {
		return fmt.Errorf("key %q is not valid UTF-8", r.Key)
	}
	for k, v := range r.Attributes {
		if !utf8.ValidString(k) || !utf8.ValidString(v) {
			return fmt.Errorf("attribute %q: %q is not valid UTF-8", k, v)
		}
	}
	return nil
}

func (p *BufferedProducer) closedErr() error {
	return fmt.Errorf("%w: BufferedProducer.Append to stream %q", ErrProducerClosed, p.stream)
}

// Flush cuts every shard's batch, however small, and waits until every
// record appended before the call has its result (id or error). It
// returns an error only when ctx is done first; failures are reported by
// the futures. Appends during Flush go on as usual.
func (p *BufferedProducer) Flush(ctx context.Context) error {
	p.mu.Lock()
	bufs := p.all
	p.mu.Unlock()
	var wait []*pendingBatch
	for _, sb := range bufs {
		if b := sb.cut(false); b != nil {
			wait = append(wait, b)
		}
	}
	for _, b := range wait {
		select {
		case <-b.done:
		case <-ctx.Done():
			return fmt.Errorf("client: BufferedProducer.Flush of stream %q: %w", p.stream, ctx.Err())
		}
	}
	return nil
}

// Close stops taking records (Append then fails with ErrProducerClosed,
// Appends blocked on flow control included), sends everything buffered,
// and returns when every future has resolved and the producer's
// goroutines have ended. Each batch is tried as the client's retry
// options say (WithMaxAttempts, WithRetryBackoff, WithAttemptTimeout: a
// node that accepts the connection but never answers counts as down);
// once a shard's batch has run out of attempts on an unreachable node
// during Close, Close fails that shard's remaining batches without sending
// them, so Close takes at most about two retry budgets when the cluster is
// down. Failures are
// reported by the futures; Close itself returns nil. Close is idempotent.
func (p *BufferedProducer) Close() error {
	p.closeOnce.Do(func() {
		p.mu.Lock()
		p.closed = true
		bufs := p.all
		p.mu.Unlock()
		p.fc.close()
		for _, sb := range bufs {
			sb.cut(true)
		}
		p.senders.Wait()
	})
	return nil
}

// route returns the routing to use, fetching the stream's shards first
// when a batch found its shard gone.
func (p *BufferedProducer) route(ctx context.Context) (*routing, error) {
	if !p.stale.Load() {
		return p.routing.Load(), nil
	}
	p.refreshMu.Lock()
	defer p.refreshMu.Unlock()
	// Cleared before the fetch: a shard found gone meanwhile sets it again.
	if !p.stale.CompareAndSwap(true, false) {
		return p.routing.Load(), nil
	}
	sm, err := p.c.shardMap(ctx, p.stream, false)
	if err != nil {
		p.stale.Store(true)
		return nil, fmt.Errorf("client: BufferedProducer.Append to stream %q: fetching its shards again: %w", p.stream, err)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return nil, p.closedErr()
	}
	p.installLocked(sm)
	return p.routing.Load(), nil
}

// installLocked routes keys by sm, keeping the buffers of shards it
// already had and starting a buffer and its sender for each new shard.
// p.mu is held and the producer is not closed.
func (p *BufferedProducer) installLocked(sm *wire.ShardMap) {
	old := p.routing.Load()
	rt := &routing{sm: sm, bufs: make(map[uint64]*shardBuf)}
	for _, s := range sm.Shards() {
		id := s.GetShardId()
		if old != nil && old.bufs[id] != nil {
			rt.bufs[id] = old.bufs[id]
			continue
		}
		sb := newShardBuf(p, id)
		rt.bufs[id] = sb
		p.all = append(p.all, sb)
		p.senders.Add(1)
		go sb.run()
	}
	p.routing.Store(rt)
}

// shardGone handles a NotFound answer for a batch: the cached shards are
// dropped, and the next Append fetches them again.
func (p *BufferedProducer) shardGone(shard uint64, err error) {
	p.c.forgetShards(p.stream)
	p.stale.Store(true)
	p.c.logger.Info("producer: shard not found, fetching the stream's shards again on the next append",
		"stream", p.stream, "shard", shard, "err", err)
}

// AppendResult is the future of one record given to
// BufferedProducer.Append: it resolves, with the record's id or an error,
// when the server answered for the record's batch (after retries).
type AppendResult struct {
	b *pendingBatch
	i int // the record's position in b
}

// Done returns a channel that is closed when the result is known.
func (r *AppendResult) Done() <-chan struct{} { return r.b.done }

// Wait waits until the result is known, or ctx is done, and returns the
// record's id or the error its batch failed with (server errors are gRPC
// status errors as received).
func (r *AppendResult) Wait(ctx context.Context) (*hstreampb.RecordId, error) {
	select {
	case <-r.b.done:
	default:
		select {
		case <-r.b.done:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	if r.b.err != nil {
		return nil, r.b.err
	}
	return r.b.ids[r.i], nil
}
