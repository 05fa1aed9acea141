package client

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/weir-log/weir/api/hstreampb"
	"github.com/weir-log/weir/api/wire"
	"github.com/weir-log/weir/internal/nodetest"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// scriptFake is an HStreamApi whose fetch streams follow a script: the
// n-th StreamingFetch (from 0) runs script(n, stream). It records every
// request of every fetch stream and counts the subscription lookups.
type scriptFake struct {
	hstreampb.UnimplementedHStreamApiServer
	host   string
	port   uint32
	script func(n int, s *scriptStream) error

	mu      sync.Mutex
	lookups int
	streams []*scriptStream
}

// scriptStream is one fetch stream of a scriptFake.
type scriptStream struct {
	ss grpc.BidiStreamingServer[hstreampb.StreamingFetchRequest, hstreampb.StreamingFetchResponse]

	mu         sync.Mutex
	reqs       []*hstreampb.StreamingFetchRequest
	halfClosed bool
	ended      chan struct{} // closed when the server side returned
}

// startScriptFake serves a scriptFake on 127.0.0.1:0 and dials it with
// fast retries (and opts); both stop when the test ends.
func startScriptFake(t *testing.T, script func(n int, s *scriptStream) error, opts ...Option) (*scriptFake, *Client) {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	host, port, err := net.SplitHostPort(lis.Addr().String())
	require.NoError(t, err)
	p, err := strconv.ParseUint(port, 10, 32)
	require.NoError(t, err)
	fs := &scriptFake{host: host, port: uint32(p), script: script}
	srv := grpc.NewServer()
	hstreampb.RegisterHStreamApiServer(srv, fs)
	served := make(chan struct{})
	go func() {
		defer close(served)
		_ = srv.Serve(lis)
	}()
	t.Cleanup(func() {
		srv.Stop()
		<-served
	})
	opts = append([]Option{WithRetryBackoff(time.Millisecond, 5*time.Millisecond)}, opts...)
	c, err := Dial(t.Context(), lis.Addr().String(), opts...)
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, c.Close()) })
	return fs, c
}

func (fs *scriptFake) Echo(_ context.Context, req *hstreampb.EchoRequest) (*hstreampb.EchoResponse, error) {
	return &hstreampb.EchoResponse{Msg: req.GetMsg()}, nil
}

func (fs *scriptFake) LookupSubscription(_ context.Context, req *hstreampb.LookupSubscriptionRequest) (*hstreampb.LookupSubscriptionResponse, error) {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	fs.lookups++
	return &hstreampb.LookupSubscriptionResponse{
		SubscriptionId: req.GetSubscriptionId(),
		ServerNode:     &hstreampb.ServerNode{Id: 1, Host: fs.host, Port: fs.port},
	}, nil
}

func (fs *scriptFake) StreamingFetch(ss grpc.BidiStreamingServer[hstreampb.StreamingFetchRequest, hstreampb.StreamingFetchResponse]) error {
	s := &scriptStream{ss: ss, ended: make(chan struct{})}
	defer close(s.ended)
	fs.mu.Lock()
	n := len(fs.streams)
	fs.streams = append(fs.streams, s)
	fs.mu.Unlock()
	return fs.script(n, s)
}

// stream returns the n-th fetch stream, or nil if it was not opened.
func (fs *scriptFake) stream(n int) *scriptStream {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	if n >= len(fs.streams) {
		return nil
	}
	return fs.streams[n]
}

func (fs *scriptFake) streamCount() int {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	return len(fs.streams)
}

func (fs *scriptFake) lookupCount() int {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	return fs.lookups
}

// register reads the registration request.
func (s *scriptStream) register() error {
	req, err := s.ss.Recv()
	if err != nil {
		return err
	}
	s.mu.Lock()
	s.reqs = append(s.reqs, req)
	s.mu.Unlock()
	return nil
}

// send sends batches, one per response.
func (s *scriptStream) send(batches ...*hstreampb.ReceivedRecord) error {
	for _, b := range batches {
		if err := s.ss.Send(&hstreampb.StreamingFetchResponse{ReceivedRecords: b}); err != nil {
			return err
		}
	}
	return nil
}

// serve records requests until the client half-closes (the stream then
// ends with OK) or goes away.
func (s *scriptStream) serve() error {
	for {
		req, err := s.ss.Recv()
		if err == io.EOF {
			s.mu.Lock()
			s.halfClosed = true
			s.mu.Unlock()
			return nil
		}
		if err != nil {
			return err
		}
		s.mu.Lock()
		s.reqs = append(s.reqs, req)
		s.mu.Unlock()
	}
}

func (s *scriptStream) requests() []*hstreampb.StreamingFetchRequest {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]*hstreampb.StreamingFetchRequest(nil), s.reqs...)
}

func (s *scriptStream) isHalfClosed() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.halfClosed
}

// acked returns the ids the stream's requests acked, as text, in order.
func (s *scriptStream) acked() []string {
	var out []string
	for _, r := range s.requests() {
		for _, id := range r.GetAckIds() {
			out = append(out, wire.FormatRecordID(id))
		}
	}
	return out
}

// registerThen registers and ends the stream with err.
func registerThen(s *scriptStream, err error) error {
	if rerr := s.register(); rerr != nil {
		return rerr
	}
	return err
}

// registerAndServe registers and records requests until the client leaves.
func registerAndServe(s *scriptStream) error {
	if err := s.register(); err != nil {
		return err
	}
	return s.serve()
}

var errUnavailable = status.Error(codes.Unavailable, "the server is shutting down; fetch again to continue")

func TestConsumeReconnectsAndSendsPendingAcksOnTheNewStream(t *testing.T) {
	// Stream 0 delivers a batch of three and fails at once, while the
	// handler still holds the batch's first record; stream 1 stays up.
	firstEnded := make(chan struct{})
	var logs nodetest.SyncBuffer
	fs, c := startScriptFake(t, func(n int, s *scriptStream) error {
		if n > 0 {
			return registerAndServe(s)
		}
		defer close(firstEnded)
		if err := s.register(); err != nil {
			return err
		}
		if err := s.send(deliveredBatch(t, 1, 7, "a", "b", "c")); err != nil {
			return err
		}
		return errUnavailable
	}, WithLogger(slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelInfo}))))

	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	var (
		mu  sync.Mutex
		got []string
	)
	wait := startConsume(t, ctx, c, "sub", func(_ context.Context, m *Message) error {
		mu.Lock()
		got = append(got, wire.FormatRecordID(m.Record.ID))
		first := len(got) == 1
		mu.Unlock()
		if first {
			<-firstEnded // the stream breaks under the handler
		}
		m.Ack()
		return nil
	}, WithAckBufferSize(100), WithAckAgeLimit(time.Hour))

	require.Eventually(t, func() bool {
		s := fs.stream(1)
		return s != nil && len(s.acked()) == 3
	}, 10*time.Second, 5*time.Millisecond, "the acks made around the break go out on the new stream")
	mu.Lock()
	require.Equal(t, idsText(1, 7, 3), got, "the batch in hand was delivered to the end, in order, once")
	mu.Unlock()
	require.Empty(t, fs.stream(0).acked(), "no ack was due on the old stream (an hour's age limit)")
	reqs := fs.stream(1).requests()
	require.Equal(t, "sub", reqs[0].GetSubscriptionId())
	require.Equal(t, "c1", reqs[0].GetConsumerName(), "the same consumer name registers again")
	require.Empty(t, reqs[0].GetAckIds(), "the registration carries no acks")
	require.Len(t, reqs, 2, "the carried acks go in one request")
	require.Equal(t, 2, fs.lookupCount(), "one lookup per stream: the failure dropped the cached owner")
	require.Contains(t, logs.String(), `level=INFO msg="consumer reconnecting" subscription=sub consumer=c1`)

	cancel()
	require.ErrorIs(t, wait(), context.Canceled)
	require.Equal(t, 2, fs.streamCount())
}

func TestConsumeReconnectPolicy(t *testing.T) {
	wrongServer := hstreamError(codes.FailedPrecondition, hstreampb.ErrorCode_WrongServer, "subscription moved")
	exists := status.Error(codes.AlreadyExists, "subscription: consumer name already attached")
	notFound := subscriptionNotFound("sub")
	for _, tc := range []struct {
		name        string
		maxAttempts int
		// ends[n] is how stream n ends: an error, "deliver" (a batch the
		// handler does not ack, then Unavailable), "ack" (a batch, then
		// Unavailable once its ack arrived), or nil to stay up until the
		// client leaves.
		ends    []any
		want    codes.Code // what Consume returns; OK: it stays up (cancelled by the test)
		streams int
	}{
		{"Unavailable is retried", 8, []any{errUnavailable, errUnavailable, nil}, codes.OK, 3},
		{"WrongServer is retried", 8, []any{wrongServer, nil}, codes.OK, 2},
		{"AlreadyExists is retried on a re-registration", 8, []any{errUnavailable, exists, exists, nil}, codes.OK, 4},
		{"AlreadyExists on the first registration ends Consume", 8, []any{exists}, codes.AlreadyExists, 1},
		{"NotFound ends Consume", 8, []any{errUnavailable, notFound}, codes.NotFound, 2},
		{"attempts are bounded", 3, []any{errUnavailable, errUnavailable, errUnavailable, nil}, codes.Unavailable, 3},
		{"one attempt: no reconnect", 1, []any{errUnavailable, nil}, codes.Unavailable, 1},
		{"acks sent reset the count", 3, []any{errUnavailable, errUnavailable, "ack", errUnavailable, nil}, codes.OK, 5},
		{"a delivery without acks does not reset it", 3, []any{errUnavailable, "deliver", "deliver", nil}, codes.Unavailable, 3},
		{"the server ending the stream ends Consume", 8, []any{errUnavailable, io.EOF}, codes.OK, 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fs, c := startScriptFake(t, func(n int, s *scriptStream) error {
				if n >= len(tc.ends) {
					return errors.New("test: one stream too many")
				}
				switch end := tc.ends[n].(type) {
				case nil:
					return registerAndServe(s)
				case string:
					if err := s.register(); err != nil {
						return err
					}
					if err := s.send(deliveredBatch(t, 1, uint64(n), end)); err != nil {
						return err
					}
					for end == "ack" {
						req, err := s.ss.Recv()
						if err != nil {
							return err
						}
						if len(req.GetAckIds()) > 0 {
							break
						}
					}
					return errUnavailable
				case error:
					if end == io.EOF {
						return registerThen(s, nil)
					}
					return registerThen(s, end)
				}
				panic(fmt.Sprintf("test: bad end %v", tc.ends[n]))
			}, WithMaxAttempts(tc.maxAttempts))

			ctx, cancel := context.WithCancel(t.Context())
			defer cancel()
			wait := startConsume(t, ctx, c, "sub", func(_ context.Context, m *Message) error {
				if string(m.Record.Payload) == "ack" {
					m.Ack()
				}
				return nil
			})
			stayUp := tc.ends[tc.streams-1] == nil
			if stayUp {
				require.Eventually(t, func() bool { return fs.streamCount() == tc.streams }, 10*time.Second, 5*time.Millisecond)
				cancel()
				require.ErrorIs(t, wait(), context.Canceled)
				require.True(t, fs.stream(tc.streams-1).isHalfClosed(), "the last stream was closed cleanly")
			} else {
				err := wait()
				if tc.want == codes.OK {
					require.NoError(t, err)
				} else {
					require.Equal(t, tc.want, status.Code(err), "%v", err)
				}
			}
			require.Equal(t, tc.streams, fs.streamCount())
			require.Equal(t, tc.streams, fs.lookupCount(), "a lookup before every stream")
			for n := range tc.streams {
				reqs := fs.stream(n).requests()
				require.NotEmpty(t, reqs)
				require.Equal(t, "c1", reqs[0].GetConsumerName())
			}
		})
	}
}

func TestConsumeReconnectsWhileTheNodeIsDown(t *testing.T) {
	// A node that went away: every lookup fails to connect, which is
	// Unavailable, until the attempts run out.
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	srv := grpc.NewServer()
	hstreampb.RegisterHStreamApiServer(srv, &scriptFake{})
	served := make(chan struct{})
	go func() {
		defer close(served)
		_ = srv.Serve(lis)
	}()
	var logs nodetest.SyncBuffer
	c, err := Dial(t.Context(), lis.Addr().String(), WithMaxAttempts(3), WithRetryBackoff(time.Millisecond, 5*time.Millisecond),
		WithLogger(slog.New(slog.NewTextHandler(&logs, nil))))
	require.NoError(t, err)
	defer c.Close()
	srv.Stop()
	<-served

	err = c.Consume(t.Context(), "sub", "c1", func(context.Context, *Message) error { return nil })
	require.Equal(t, codes.Unavailable, status.Code(err), "%v", err)
	require.Equal(t, 2, strings.Count(logs.String(), `msg="consumer reconnecting"`), "two reconnects, then the third failure ends it")
}

func TestStartConsumer(t *testing.T) {
	t.Run("Stop flushes the acks and returns nil", func(t *testing.T) {
		fs, c := startScriptFake(t, func(n int, s *scriptStream) error {
			if err := s.register(); err != nil {
				return err
			}
			if err := s.send(deliveredBatch(t, 1, 5, payloads(5)...)); err != nil {
				return err
			}
			return s.serve()
		})
		var (
			mu        sync.Mutex
			delivered int
		)
		con, err := c.StartConsumer(t.Context(), "sub", "c1", func(_ context.Context, m *Message) error {
			mu.Lock()
			delivered++
			mu.Unlock()
			m.Ack()
			return nil
		}, WithAckAgeLimit(time.Hour))
		require.NoError(t, err)
		require.Eventually(t, func() bool {
			mu.Lock()
			defer mu.Unlock()
			return delivered == 5
		}, 10*time.Second, 5*time.Millisecond)
		require.NoError(t, con.Err(), "running")
		select {
		case <-con.Done():
			t.Fatal("Done closed while running")
		default:
		}

		require.NoError(t, con.Stop())
		require.Equal(t, idsText(1, 5, 5), fs.stream(0).acked(), "pending acks flushed by Stop")
		require.True(t, fs.stream(0).isHalfClosed())
		<-con.Done()
		require.NoError(t, con.Err())
		require.NoError(t, con.Stop(), "Stop is idempotent")
	})

	t.Run("a consumer that ends by itself", func(t *testing.T) {
		_, c := startScriptFake(t, func(n int, s *scriptStream) error {
			return registerThen(s, subscriptionNotFound("sub"))
		})
		con, err := c.StartConsumer(t.Context(), "sub", "c1", func(context.Context, *Message) error { return nil })
		require.NoError(t, err)
		select {
		case <-con.Done():
		case <-time.After(10 * time.Second):
			t.Fatal("the consumer did not end")
		}
		require.Equal(t, codes.NotFound, status.Code(con.Err()))
		require.Equal(t, codes.NotFound, status.Code(con.Stop()), "Stop after the end returns the end's error")
	})

	t.Run("its ctx done ends it with ctx's error", func(t *testing.T) {
		_, c := startScriptFake(t, func(n int, s *scriptStream) error { return registerAndServe(s) })
		ctx, cancel := context.WithCancel(t.Context())
		con, err := c.StartConsumer(ctx, "sub", "c1", func(context.Context, *Message) error { return nil })
		require.NoError(t, err)
		cancel()
		<-con.Done()
		require.ErrorIs(t, con.Err(), context.Canceled)
		require.ErrorIs(t, con.Stop(), context.Canceled, "not stopped by Stop")
	})

	t.Run("arguments are checked at once", func(t *testing.T) {
		fs, c := startScriptFake(t, func(n int, s *scriptStream) error { return registerAndServe(s) })
		nop := func(context.Context, *Message) error { return nil }
		con, err := c.StartConsumer(t.Context(), "sub", "", nop)
		require.ErrorIs(t, err, ErrInvalidArgument)
		require.ErrorContains(t, err, `Consume "sub": empty consumer name`)
		require.Nil(t, con)
		_, err = c.StartConsumer(t.Context(), "sub", "c1", nop, WithAckBufferSize(0))
		require.ErrorContains(t, err, "WithAckBufferSize(0): want at least 1")
		ctx, cancel := context.WithCancel(t.Context())
		cancel()
		_, err = c.StartConsumer(ctx, "sub", "c1", nop)
		require.ErrorIs(t, err, context.Canceled)
		require.Zero(t, fs.streamCount(), "no stream opened")
	})
}
