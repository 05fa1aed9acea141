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
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// ConsumerOpt configures one call to Consume or StartConsumer.
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
// WithAckBufferSize and WithAckAgeLimit); an ack made while Consume
// reconnects waits for the next stream. An ack made after Consume returned
// is dropped, and the server delivers the record again after the
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
// another consumer of the subscription. StartConsumer runs Consume in the
// background.
//
// Consume finds the node serving the subscription (LookupSubscription)
// and opens a StreamingFetch there; its first request registers the
// consumer, later ones carry acks.
//
// # Reconnecting
//
// When the stream fails with Unavailable (the node shuts down, which ends
// its fetches so, or the connection broke) or with FailedPrecondition
// WrongServer (the subscription moved to another node), Consume reports
// the failure to the client's routing, waits, looks the subscription up
// again and opens a new stream, registering the same consumer name. It
// also retries AlreadyExists on a re-registration: the server has not yet
// noticed that the old stream ended. The waits are those of the client's
// retries (WithRetryBackoff; none before the first retry after
// WrongServer), and the number of failed attempts in a row is bounded by
// WithMaxAttempts: the last error is returned when they run out. A stream
// on which acks were sent (the handler made progress), or that stayed open
// for 10 s, resets the count, so a long-lived consumer rides out any number
// of separate outages, but a server that fails every stream right after
// redelivering the same batch does not keep it looping. Each
// reconnect is logged at Info (WithLogger). To ride out a node restart,
// give WithMaxAttempts and WithRetryBackoff a budget longer than the
// restart takes (the defaults wait about 6 s in all).
//
// Across a reconnect, the handler keeps its order: a batch being
// delivered when the stream broke is delivered to the end, and acks not
// yet sent (including those made meanwhile) go out on the next stream,
// right after it registers. The server delivers again what the old stream
// left unacked, so expect redeliveries after a reconnect: delivery is at
// least once. Records acked less than the server's checkpoint interval
// before a node restart may also come again.
//
// # Results
//
// Consume returns:
//   - ctx.Err() when ctx is done, as ReadStream does, after sending the
//     pending acks and closing the stream. A record whose handler call is
//     under way finishes first (the handler gets ctx, so it can stop
//     early); a handler error that wraps ctx.Err() counts as the
//     cancellation. Acks pending while no stream is open (ctx is done
//     during a reconnect) are lost.
//   - the handler's first error, wrapped, after sending the pending acks;
//     records after it are not delivered.
//   - nil when the server ends the stream with OK (acks still pending are
//     lost: the server delivers those records again).
//   - the stream's error, a gRPC status error as received (status.Code
//     works), when the stream fails with an error it does not retry, or
//     its attempts ran out: codes.NotFound for an unknown subscription,
//     codes.AlreadyExists when consumerName is attached already (on the
//     first registration), codes.Unavailable when the node stayed
//     unreachable, … Pending acks are lost then.
//   - an error wrapping ErrDataContaminated or ErrBadResponse when the
//     server sends a batch that does not decode.
//
// Memory is bounded: the handler runs in the receive loop, so at most one
// batch waits besides the one being handled, and the server stops
// delivering while the subscription's maxUnackedRecords records await
// their ack (pending acks included).
func (c *Client) Consume(ctx context.Context, subID, consumerName string, handler func(ctx context.Context, m *Message) error, opts ...ConsumerOpt) error {
	cfg, err := newConsumerConfig(subID, consumerName, handler, opts)
	if err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	s := &consumption{
		c:        c,
		subID:    subID,
		consumer: consumerName,
		handler:  handler,
		acks:     newAckBuffer(cfg.ackBufferSize),
		ageLimit: cfg.ackAgeLimit,
	}
	// Acks made after Consume returns are dropped.
	defer s.acks.close()
	return s.run(ctx)
}

// newConsumerConfig applies opts and checks the arguments of Consume and
// StartConsumer.
func newConsumerConfig(subID, consumerName string, handler func(context.Context, *Message) error, opts []ConsumerOpt) (consumerConfig, error) {
	cfg := defaultConsumerConfig()
	for _, o := range opts {
		o.applyConsumer(&cfg)
	}
	switch {
	case subID == "":
		return cfg, fmt.Errorf("%w: Consume: empty subscription id", ErrInvalidArgument)
	case consumerName == "":
		return cfg, fmt.Errorf("%w: Consume %q: empty consumer name", ErrInvalidArgument, subID)
	case handler == nil:
		return cfg, fmt.Errorf("%w: Consume %q: nil handler", ErrInvalidArgument, subID)
	case cfg.ackBufferSize < 1:
		return cfg, fmt.Errorf("%w: Consume %q: WithAckBufferSize(%d): want at least 1", ErrInvalidArgument, subID, cfg.ackBufferSize)
	case cfg.ackAgeLimit <= 0:
		return cfg, fmt.Errorf("%w: Consume %q: WithAckAgeLimit(%s): want more than 0", ErrInvalidArgument, subID, cfg.ackAgeLimit)
	}
	return cfg, nil
}

// consumerStableAfter is how long a fetch stream must stay open, if no ack
// was sent on it, for its failure to count as a new outage rather than
// one more failed attempt of the last one.
const consumerStableAfter = 10 * time.Second

// consumption is one Consume: the handler and the ack buffer, which
// outlive the fetch streams it opens one after the other.
type consumption struct {
	c               *Client
	subID, consumer string
	handler         func(context.Context, *Message) error
	acks            *ackBuffer
	ageLimit        time.Duration
}

// streamEnd is how one fetch stream ended.
type streamEnd struct {
	err error
	// retry: err is the stream's failure (or the lookup's, or the
	// connection's), and Consume reconnects if it is retryable. Otherwise
	// err (nil included) is what Consume returns.
	retry      bool
	registered bool // the registration request was sent
	progressed bool // acks were sent on the stream: records were processed
}

// run opens fetch streams until one ends Consume, as Consume's doc says.
func (s *consumption) run(ctx context.Context) error {
	t := subscriptionOf(s.subID)
	failures := 0       // failed attempts in a row
	registered := false // an earlier stream sent its registration
	for {
		opened := time.Now()
		addr, end := s.fetchOnce(ctx, t)
		if !end.retry {
			return end.err
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		err := end.err
		if end.progressed || time.Since(opened) >= consumerStableAfter {
			failures = 0
		}
		failures++
		again := retryable(err) || (registered && status.Code(err) == codes.AlreadyExists)
		registered = registered || end.registered
		if again {
			// Forget the lookup (for Unavailable, the node too), even when
			// giving up: the next Consume must not trust the route.
			s.c.failed(t, addr, err)
		}
		if !again || failures >= s.c.cfg.maxAttempts {
			return err
		}
		wait := s.c.backoff(failures)
		if wrongServer(err) && failures == 1 {
			wait = 0 // the lookup is stale; look again at once
		}
		s.c.logger.Info("consumer reconnecting", "subscription", s.subID, "consumer", s.consumer,
			"node", addr, "attempt", failures, "wait", wait, "err", err)
		if err := sleep(ctx, wait); err != nil {
			return err
		}
	}
}

// fetchOnce runs one fetch stream: it looks up the subscription's node,
// opens the stream, registers and delivers until the stream ends. It
// returns the node's address (empty if the lookup failed) and how the
// stream ended.
func (s *consumption) fetchOnce(ctx context.Context, t target) (string, streamEnd) {
	api, addr, err := s.c.apiFor(ctx, t)
	if err != nil {
		return addr, streamEnd{err: ctxOr(ctx, err), retry: true}
	}
	// The stream outlives ctx a little: once ctx is done, Consume still
	// sends its last acks on it. It keeps ctx's values (metadata).
	sctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	defer cancel()
	// Until the consumer is registered there are no acks to send, so ctx
	// cancels the stream outright: opening it can block for as long as
	// gRPC takes to give up on a node that accepts but does not answer.
	stopCancel := context.AfterFunc(ctx, cancel)
	defer stopCancel()
	stream, err := api.StreamingFetch(sctx)
	if err != nil {
		return addr, streamEnd{err: err, retry: true}
	}
	f := &fetch{
		consumption: s,
		stream:      stream,
		batches:     make(chan *hstreampb.StreamingFetchResponse),
		recvErr:     make(chan error, 1),
		sendErr:     make(chan error, 1),
		stopSend:    make(chan struct{}),
	}

	// The first request registers the consumer. It is sent before the ack
	// sender starts, which then is the stream's only sender (gRPC allows
	// one at a time).
	if err := stream.Send(f.request([]*hstreampb.RecordId{})); err != nil {
		if !errors.Is(err, io.EOF) {
			return addr, streamEnd{err: err, retry: true}
		}
		// The stream ended already; Recv has the reason.
		for err = nil; err == nil; {
			_, err = stream.Recv()
		}
		if errors.Is(err, io.EOF) {
			return addr, streamEnd{}
		}
		return addr, streamEnd{err: err, retry: true}
	}

	if !stopCancel() {
		return addr, streamEnd{err: ctx.Err()} // cancelled while registering
	}

	// Acks an earlier stream left pending go first, all at once.
	left, _ := s.acks.take(true)
	var wg sync.WaitGroup
	wg.Go(func() { f.recvErr <- f.receive(sctx) })
	wg.Go(func() { f.sendErr <- f.sendAcks(sctx, left) })
	defer func() {
		cancel() // unblocks the goroutines whatever they wait for
		wg.Wait()
	}()
	end := f.loop(ctx)
	end.registered = true
	end.progressed = f.ackSent.Load()
	return addr, end
}

// fetch is one fetch stream of a Consume: the receive goroutine hands
// batches to the loop (Consume's goroutine), which runs the handler; the
// handler's acks collect in the Consume's ack buffer, which the stream's
// ack sender goroutine sends.
type fetch struct {
	*consumption
	stream grpc.BidiStreamingClient[hstreampb.StreamingFetchRequest, hstreampb.StreamingFetchResponse]

	batches  chan *hstreampb.StreamingFetchResponse // unbuffered: one batch in hand at most
	recvErr  chan error                             // the receive goroutine's end: io.EOF or the stream's error
	sendErr  chan error                             // the ack sender's end: nil after a clean half-close
	stopSend chan struct{}                          // closed: send the pending acks and half-close
	ackSent  atomic.Bool                            // an ack request went out on this stream
}

func (f *fetch) request(ids []*hstreampb.RecordId) *hstreampb.StreamingFetchRequest {
	return &hstreampb.StreamingFetchRequest{SubscriptionId: f.subID, ConsumerName: f.consumer, AckIds: ids}
}

// loop delivers batches until ctx is done, the handler fails or the stream
// ends, and returns how the stream ended.
func (f *fetch) loop(ctx context.Context) streamEnd {
	for {
		if ctx.Err() != nil {
			f.closeGracefully()
			return streamEnd{err: ctx.Err()}
		}
		select {
		case <-ctx.Done():
			continue
		case err := <-f.recvErr:
			if errors.Is(err, io.EOF) {
				return streamEnd{} // the server ended the stream
			}
			return streamEnd{err: err, retry: true}
		case err := <-f.sendErr:
			if errors.Is(err, io.EOF) {
				// The stream ended; the receive goroutine reports why.
				return f.streamEnd()
			}
			return streamEnd{err: fmt.Errorf("client: Consume %q: sending acks: %w", f.subID, err), retry: true}
		case resp := <-f.batches:
			if err := f.deliver(ctx, resp); err != nil {
				f.closeGracefully()
				return streamEnd{err: err}
			}
		}
	}
}

// streamEnd waits for the receive goroutine and returns how the stream
// ended. Batches that arrive meanwhile are not delivered: the server
// delivers them again.
func (f *fetch) streamEnd() streamEnd {
	for {
		select {
		case <-f.batches:
		case err := <-f.recvErr:
			if errors.Is(err, io.EOF) {
				return streamEnd{}
			}
			return streamEnd{err: err, retry: true}
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

// sendAcks is the stream's only sender once Consume has registered. It
// first sends left, the acks earlier streams left pending, then sends
// pending acks when WithAckBufferSize of them are pending or the oldest is
// WithAckAgeLimit old, and when stopSend closes, sends the rest and
// half-closes the stream. It returns the first send error (io.EOF: the
// stream is over), or ctx's error when the stream's ctx is cancelled; acks
// it could not send go back to the buffer for the next stream.
func (f *fetch) sendAcks(ctx context.Context, left []*hstreampb.RecordId) error {
	if err := f.send(left); err != nil {
		return err
	}
	// Acks an earlier stream left over are no sign that this one works: a
	// server that fails every stream right after its first batch would
	// otherwise reset the reconnect count forever.
	f.ackSent.Store(false)
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

// send sends ids in requests of at most the buffer size. When a send
// fails, the ids not sent go back to the buffer.
func (f *fetch) send(ids []*hstreampb.RecordId) error {
	for len(ids) > 0 {
		n := min(len(ids), f.acks.size)
		if err := f.stream.Send(f.request(ids[:n])); err != nil {
			f.acks.putBack(ids)
			return err
		}
		f.ackSent.Store(true)
		ids = ids[n:]
	}
	return nil
}
