package client

import (
	"context"
	"errors"
)

// Consumer is a Consume running in its own goroutine, for code that does
// not want to block on it; StartConsumer starts one. Its methods are safe
// for concurrent use.
type Consumer struct {
	stop context.CancelCauseFunc
	done chan struct{}
	err  error // written before done closes
}

// errConsumerStopped is the cancellation cause Stop gives Consume's ctx.
var errConsumerStopped = errors.New("client: consumer stopped")

// StartConsumer runs Consume(ctx, subID, consumerName, handler, opts...) in
// a new goroutine and returns a handle on it. It checks the arguments
// first and returns Consume's errors for them (and ctx.Err() if ctx is done
// already); the rest, reconnects included, happens in the background as
// Consume's doc says. The consumer runs until Stop is called, ctx is done,
// or Consume ends by itself (Done, Err).
//
// Stop the consumer before closing the Client: closing the Client first
// ends it with codes.Canceled, and its pending acks are lost.
func (c *Client) StartConsumer(ctx context.Context, subID, consumerName string, handler func(ctx context.Context, m *Message) error, opts ...ConsumerOpt) (*Consumer, error) {
	if _, err := newConsumerConfig(subID, consumerName, handler, opts); err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	cctx, stop := context.WithCancelCause(ctx)
	con := &Consumer{stop: stop, done: make(chan struct{})}
	go func() {
		defer close(con.done)
		err := c.Consume(cctx, subID, consumerName, handler, opts...)
		if errors.Is(err, context.Canceled) && errors.Is(context.Cause(cctx), errConsumerStopped) {
			err = nil
		}
		con.err = err
		stop(nil) // release the context's resources
	}()
	return con, nil
}

// Stop stops the consumer as a done ctx stops Consume: a handler call
// under way finishes (its ctx is cancelled), the pending acks are sent and
// the stream is closed (within a grace of 2 s); then Stop returns. It
// returns nil if the consumer stopped because of Stop, else what ended it
// before (Consume's error, or ctx.Err() for StartConsumer's ctx). Stop is
// idempotent; calls after the first return the same. Do not call it from
// the handler, which Stop waits for: cancel a context instead.
func (con *Consumer) Stop() error {
	con.stop(errConsumerStopped)
	<-con.done
	return con.err
}

// Done is closed when the consumer has ended, by Stop or by itself.
func (con *Consumer) Done() <-chan struct{} { return con.done }

// Err returns nil while the consumer runs and, once Done is closed, what
// Stop returns: nil after Stop, else the error that ended Consume (nil if
// the server ended the stream).
func (con *Consumer) Err() error {
	select {
	case <-con.done:
		return con.err
	default:
		return nil
	}
}
