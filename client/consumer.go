package client

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"time"

	"github.com/weir-log/weir/api/hstreampb"
	"google.golang.org/grpc"
)

// ConsumerOpt configures one call to Consume.
type ConsumerOpt interface{ applyConsumer(*consumerConfig) }

type consumerOption func(*consumerConfig)

func (o consumerOption) applyConsumer(c *consumerConfig) { o(c) }

// Defaults of the consumer options.
const (
	// DefaultAckBufferSize is how many acks Consume collects before it
	// sends them in one request (the HStreamDB Go client's 100).
	DefaultAckBufferSize = 100
	// DefaultAckAgeLimit is how long an ack may wait for others before it
	// is sent anyway. (The HStreamDB Go client waits up to 5 s; a shorter
	// wait keeps acked records from being redelivered after a crash.)
	DefaultAckAgeLimit = 200 * time.Millisecond
)

// consumerCloseGrace bounds how long Consume, once it decided to stop,
// waits for its last acks to be sent and for the server to end the stream
// after the client's half-close (which proves the server read the acks).
// After it the stream is cancelled; acks not sent by then are lost, and the
// server delivers those records again after the subscription's ack timeout.
const consumerCloseGrace = 2 * time.Second

type consumerConfig struct {
	ackBufferSize int
	ackAgeLimit   time.Duration
}

func defaultConsumerConfig() consumerConfig {
	return consumerConfig{ackBufferSize: DefaultAckBufferSize, ackAgeLimit: DefaultAckAgeLimit}
}

// WithAckBufferSize sets how many acks are sent together: Consume sends a
// request as soon as n acks are pending, and never more than n ids in one
// request. Default 100 (DefaultAckBufferSize); 1 sends every ack at once.
// Must be at least 1. Acks fewer than n go out when the oldest of them
// reaches the age limit (WithAckAgeLimit).
func WithAckBufferSize(n int) ConsumerOpt {
	return consumerOption(func(c *consumerConfig) { c.ackBufferSize = n })
}

// WithAckAgeLimit sets how long an ack waits for others: pending acks are
// sent when the oldest has waited d, even if fewer than the buffer size
// (WithAckBufferSize). Default 200 ms (DefaultAckAgeLimit). Must be
// positive. Keep it well below the subscription's ack timeout, or acked
// records are delivered again.
func WithAckAgeLimit(d time.Duration) ConsumerOpt {
	return consumerOption(func(c *consumerConfig) { c.ackAgeLimit = d })
}

// Message is one record delivered to a Consume handler.
type Message struct {
	Record ReceivedRecord

	acked atomic.Bool
	acks  *ackBuffer
}

// Ack tells the server the record was processed, so it is not delivered
// again. It is safe to call from any goroutine, at any time, and more than
// once (later calls do nothing). Acks are sent in batches (see
// WithAckBufferSize and WithAckAgeLimit); an ack made after Consume
// returned is dropped, and the server delivers the record again after the
// subscription's ack timeout.
func (m *Message) Ack() {
	if m.acks == nil || !m.acked.CompareAndSwap(false, true) {
		return
	}
	m.acks.add(m.Record.ID)
}

// Consume joins subscription subID as consumer consumerName and calls
// handler for each delivered record, one at a time, in delivery order
// (which is record order within each shard). The handler acks a record
// with m.Ack, then or later, from any goroutine; the server delivers
// unacked records again after the subscription's ack timeout, to this or
// another consumer of the subscription.
//
// Consume returns:
//   - ctx.Err() when ctx is done, as ReadStream does, after sending the
//     pending acks and closing the stream. A record whose handler call is
//     under way finishes first (the handler gets ctx, so it can stop
//     early); a handler error that wraps ctx.Err() counts as the
//     cancellation.
//   - the handler's first error, wrapped, after sending the pending acks;
//     records after it are not delivered.
//   - nil when the server ends the stream (acks still pending are lost:
//     the server delivers those records again).
//   - the stream's error, a gRPC status error as received (status.Code
//     works), when the stream fails: codes.NotFound for an unknown
//     subscription, codes.AlreadyExists when consumerName is attached
//     already, … Pending acks are lost then.
//   - an error wrapping ErrDataContaminated or ErrBadResponse when the
//     server sends a batch that does not decode.
//
// Memory is bounded: the handler runs in the receive loop, so at most one
// batch waits besides the one being handled, and the server stops
// delivering while the subscription's maxUnackedRecords records await
// their ack (pending acks included).
func (c *Client) Consume(ctx context.Context, subID, consumerName string, handler func(ctx context.Context, m *Message) error, opts ...ConsumerOpt) error {
	cfg := defaultConsumerConfig()
	for _, o := range opts {
		o.applyConsumer(&cfg)
	}
	switch {
	case subID == "":
		return fmt.Errorf("%w: Consume: empty subscription id", ErrInvalidArgument)
	case consumerName == "":
		return fmt.Errorf("%w: Consume %q: empty consumer name", ErrInvalidArgument, subID)
	case handler == nil:
		return fmt.Errorf("%w: Consume %q: nil handler", ErrInvalidArgument, subID)
	case cfg.ackBufferSize < 1:
		return fmt.Errorf("%w: Consume %q: WithAckBufferSize(%d): want at least 1", ErrInvalidArgument, subID, cfg.ackBufferSize)
	case cfg.ackAgeLimit <= 0:
		return fmt.Errorf("%w: Consume %q: WithAckAgeLimit(%s): want more than 0", ErrInvalidArgument, subID, cfg.ackAgeLimit)
	}
	if err := ctx.Err(); err != nil {
		return err
	}

	// The stream outlives ctx a little: once ctx is done, Consume still
	// sends its last acks on it. It keeps ctx's values (metadata).
	sctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	defer cancel()
	// One server for now: the stream goes to the node c is dialed to.
	// Finding the subscription's owner (LookupSubscription) and moving to
	// it, and reconnecting after a node fails, come with clusters.
	api, _, err := c.apiFor(sctx, subscriptionOf(subID))
	if err != nil {
		return err
	}
	stream, err := api.StreamingFetch(sctx)
	if err != nil {
		return err
	}
	f := &fetch{
		subID:    subID,
		consumer: consumerName,
		stream:   stream,
		handler:  handler,
		acks:     newAckBuffer(cfg.ackBufferSize),
		ageLimit: cfg.ackAgeLimit,
		batches:  make(chan *hstreampb.StreamingFetchResponse),
		recvErr:  make(chan error, 1),
		sendErr:  make(chan error, 1),
		stopSend: make(chan struct{}),
	}
	// Acks made after Consume returns are dropped.
	defer f.acks.close()

	// The first request registers the consumer. It is sent before the ack
	// sender starts, which then is the stream's only sender (gRPC allows
	// one at a time).
	if err := stream.Send(f.request([]*hstreampb.RecordId{})); err != nil {
		if !errors.Is(err, io.EOF) {
			return err
		}
		// The stream ended already; Recv has the reason.
		for err = nil; err == nil; {
			_, err = stream.Recv()
		}
		if errors.Is(err, io.EOF) {
			return nil
		}
		return err
	}

	var wg sync.WaitGroup
	wg.Go(func() { f.recvErr <- f.receive(sctx) })
	wg.Go(func() { f.sendErr <- f.sendAcks(sctx) })
	defer func() {
		cancel() // unblocks the goroutines whatever they wait for
		wg.Wait()
	}()
	return f.loop(ctx)
}

// fetch is one Consume: the receive goroutine hands batches to the loop
// (Consume's goroutine), which runs the handler; the handler's acks
// collect in acks, which the ack sender goroutine sends.
type fetch struct {
	subID, consumer string
	stream          grpc.BidiStreamingClient[hstreampb.StreamingFetchRequest, hstreampb.StreamingFetchResponse]
	handler         func(context.Context, *Message) error
	acks            *ackBuffer
	ageLimit        time.Duration

	batches  chan *hstreampb.StreamingFetchResponse // unbuffered: one batch in hand at most
	recvErr  chan error                             // the receive goroutine's end: io.EOF or the stream's error
	sendErr  chan error                             // the ack sender's end: nil after a clean half-close
	stopSend chan struct{}                          // closed: send the pending acks and half-close
}

func (f *fetch) request(ids []*hstreampb.RecordId) *hstreampb.StreamingFetchRequest {
	return &hstreampb.StreamingFetchRequest{SubscriptionId: f.subID, ConsumerName: f.consumer, AckIds: ids}
}

// loop delivers batches until ctx is done, the handler fails or the stream
// ends, and returns what Consume returns.
func (f *fetch) loop(ctx context.Context) error {
	for {
		if ctx.Err() != nil {
			f.closeGracefully()
			return ctx.Err()
		}
		select {
		case <-ctx.Done():
			continue
		case err := <-f.recvErr:
			if errors.Is(err, io.EOF) {
				return nil // the server ended the stream
			}
			return err
		case err := <-f.sendErr:
			if errors.Is(err, io.EOF) {
				// The stream ended; the receive goroutine reports why.
				return f.streamEnd()
			}
			return fmt.Errorf("client: Consume %q: sending acks: %w", f.subID, err)
		case resp := <-f.batches:
			if err := f.deliver(ctx, resp); err != nil {
				f.closeGracefully()
				return err
			}
		}
	}
}

// streamEnd waits for the receive goroutine and returns what Consume
// returns for its end.
func (f *fetch) streamEnd() error {
	for {
		select {
		case <-f.batches: // not delivered: the stream is over
		case err := <-f.recvErr:
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		}
	}
}

// deliver decodes one batch and runs the handler on each record. It stops
// early, returning nil, when ctx is done.
func (f *fetch) deliver(ctx context.Context, resp *hstreampb.StreamingFetchResponse) error {
	rr := resp.GetReceivedRecords()
	if rr == nil {
		return nil // nothing to deliver
	}
	recs, err := DecodeReceived(rr)
	if err != nil {
		if !errors.Is(err, ErrDataContaminated) && !errors.Is(err, ErrBadResponse) {
			err = fmt.Errorf("%w: %w", ErrBadResponse, err)
		}
		return fmt.Errorf("client: Consume %q: %w", f.subID, err)
	}
	for _, r := range recs {
		if ctx.Err() != nil {
			return nil
		}
		if err := f.handler(ctx, &Message{Record: r, acks: f.acks}); err != nil {
			if ctxErr := ctx.Err(); ctxErr != nil && errors.Is(err, ctxErr) {
				return nil // the handler saw the cancellation
			}
			return fmt.Errorf("client: Consume %q: handler: %w", f.subID, err)
		}
	}
	return nil
}

// receive passes the stream's batches to the loop until the stream ends
// (io.EOF), fails, or ctx (the stream's own) is done.
func (f *fetch) receive(ctx context.Context) error {
	for {
		resp, err := f.stream.Recv()
		if err != nil {
			return err
		}
		select {
		case f.batches <- resp:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// closeGracefully ends a healthy stream: the ack sender sends the pending
// acks and half-closes, then the server, having read them, ends the
// stream. It waits at most consumerCloseGrace; batches that arrive
// meanwhile are not delivered (the server delivers them again after the
// ack timeout).
func (f *fetch) closeGracefully() {
	close(f.stopSend)
	grace := time.NewTimer(consumerCloseGrace)
	defer grace.Stop()
	sent, ended := false, false
	for !sent || !ended {
		select {
		case <-f.sendErr:
			sent = true
		case <-f.recvErr:
			ended = true
		case <-f.batches:
		case <-grace.C:
			return
		}
	}
}

// sendAcks is the stream's only sender once Consume has registered: it
// sends pending acks when WithAckBufferSize of them are pending or the
// oldest is WithAckAgeLimit old, and when stopSend closes, sends the rest
// and half-closes the stream. It returns the first send error (io.EOF: the
// stream is over), or ctx's error when the stream's ctx is cancelled.
func (f *fetch) sendAcks(ctx context.Context) error {
	age := time.NewTimer(time.Hour)
	age.Stop()
	defer age.Stop()
	for {
		all := false
		select {
		case <-f.stopSend:
			if err := f.send(f.acks.close()); err != nil {
				return err
			}
			return f.stream.CloseSend()
		case <-ctx.Done():
			return ctx.Err()
		case <-f.acks.wake:
		case <-age.C:
			all = true
		}
		ids, oldest := f.acks.take(all)
		if err := f.send(ids); err != nil {
			return err
		}
		if oldest.IsZero() {
			age.Stop()
		} else {
			age.Reset(time.Until(oldest.Add(f.ageLimit)))
		}
	}
}

// send sends ids in requests of at most the buffer size.
func (f *fetch) send(ids []*hstreampb.RecordId) error {
	for len(ids) > 0 {
		n := min(len(ids), f.acks.size)
		if err := f.stream.Send(f.request(ids[:n])); err != nil {
			return err
		}
		ids = ids[n:]
	}
	return nil
}

// ackBuffer collects the acks of one Consume until the ack sender takes
// them. It holds at most the records delivered and not yet acked to the
// server, which the subscription's maxUnackedRecords bounds.
type ackBuffer struct {
	size int
	// wake (capacity 1) tells the ack sender that an ack is pending where
	// none was, or that size of them are.
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
		select {
		case b.wake <- struct{}{}:
		default: // a wake-up is pending already
		}
	}
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
