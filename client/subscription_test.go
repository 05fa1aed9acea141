package client

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/weir-log/weir/api/hstreampb"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

func TestCreateSubscriptionOptions(t *testing.T) {
	fs, c := startFake(t)

	sub, err := c.CreateSubscription(t.Context(), "d", "s")
	require.NoError(t, err)
	require.NotNil(t, sub.GetCreationTime(), "the server's answer is returned")
	fs.mu.Lock()
	require.Equal(t, "d", fs.lastCreateSub.GetSubscriptionId())
	require.Equal(t, "s", fs.lastCreateSub.GetStreamName())
	require.Equal(t, int32(600), fs.lastCreateSub.GetAckTimeoutSeconds())
	require.Equal(t, int32(10000), fs.lastCreateSub.GetMaxUnackedRecords())
	require.Equal(t, hstreampb.SpecialOffset_LATEST, fs.lastCreateSub.GetOffset())
	fs.mu.Unlock()

	_, err = c.CreateSubscription(t.Context(), "e", "s",
		WithAckTimeout(30*time.Second), WithMaxUnackedRecords(1), WithSubscriptionOffset(hstreampb.SpecialOffset_EARLIEST))
	require.NoError(t, err)
	fs.mu.Lock()
	require.Equal(t, int32(30), fs.lastCreateSub.GetAckTimeoutSeconds())
	require.Equal(t, int32(1), fs.lastCreateSub.GetMaxUnackedRecords())
	require.Equal(t, hstreampb.SpecialOffset_EARLIEST, fs.lastCreateSub.GetOffset())
	fs.mu.Unlock()

	_, err = c.CreateSubscription(t.Context(), "e", "s")
	require.Equal(t, codes.AlreadyExists, status.Code(err))
	code, ok := ErrorCode(err)
	require.True(t, ok)
	require.Equal(t, hstreampb.ErrorCode_SubscriptionExists, code)

	fs.mu.Lock()
	fs.lastCreateSub = nil
	fs.mu.Unlock()
	for _, tc := range []struct {
		id, stream string
		opt        SubscriptionOpt
		want       string
	}{
		{"", "s", nil, "CreateSubscription: empty subscription id"},
		{"x", "", nil, `CreateSubscription "x": empty stream name`},
		{"x", "s", WithAckTimeout(0), "WithAckTimeout(0s): want at least 1s"},
		{"x", "s", WithAckTimeout(500 * time.Millisecond), "WithAckTimeout(500ms): want at least 1s"},
		{"x", "s", WithAckTimeout(-time.Minute), "WithAckTimeout(-1m0s): want at least 1s"},
		{"x", "s", WithAckTimeout(1500 * time.Millisecond), "WithAckTimeout(1.5s): not a whole number of seconds"},
		{"x", "s", WithAckTimeout((1 << 31) * time.Second), "WithAckTimeout(596523h14m8s): above 2147483647 seconds"},
		{"x", "s", WithMaxUnackedRecords(0), "WithMaxUnackedRecords(0): want 1..2147483647"},
		{"x", "s", WithMaxUnackedRecords(-3), "WithMaxUnackedRecords(-3): want 1..2147483647"},
		{"x", "s", WithMaxUnackedRecords(1 << 31), "WithMaxUnackedRecords(2147483648): want 1..2147483647"},
		{"x", "s", WithSubscriptionOffset(7), "WithSubscriptionOffset(7): want EARLIEST or LATEST"},
	} {
		var opts []SubscriptionOpt
		if tc.opt != nil {
			opts = append(opts, tc.opt)
		}
		_, err := c.CreateSubscription(t.Context(), tc.id, tc.stream, opts...)
		require.ErrorIs(t, err, ErrInvalidArgument, tc.want)
		require.ErrorContains(t, err, tc.want)
	}
	fs.mu.Lock()
	require.Nil(t, fs.lastCreateSub, "nothing sent for rejected input")
	fs.mu.Unlock()
}

func TestSubscriptionAdmin(t *testing.T) {
	fs, c := startFake(t)
	for _, id := range []string{"orders-a", "orders-b", "metrics"} {
		_, err := c.CreateSubscription(t.Context(), id, "s")
		require.NoError(t, err)
	}
	fs.mu.Lock()
	fs.subOffsets["orders-a"] = []*hstreampb.SubscriptionOffset{{ShardId: 3, BatchId: 17}, {ShardId: 4, BatchId: 2}}
	fs.consumers["orders-a"] = []*hstreampb.Consumer{{Name: "c1", Uri: "127.0.0.1:5000", UserAgent: "weir"}}
	fs.mu.Unlock()

	sub, offsets, err := c.GetSubscription(t.Context(), "orders-a")
	require.NoError(t, err)
	require.Equal(t, "orders-a", sub.GetSubscriptionId())
	require.Len(t, offsets, 2)
	require.Equal(t, uint64(3), offsets[0].GetShardId())
	require.Equal(t, uint64(17), offsets[0].GetBatchId())
	_, _, err = c.GetSubscription(t.Context(), "missing")
	require.Equal(t, codes.NotFound, status.Code(err))

	ids := func(subs []*hstreampb.Subscription) []string {
		var out []string
		for _, s := range subs {
			out = append(out, s.GetSubscriptionId())
		}
		return out
	}
	all, err := c.ListSubscriptions(t.Context(), "")
	require.NoError(t, err)
	require.Equal(t, []string{"metrics", "orders-a", "orders-b"}, ids(all))
	some, err := c.ListSubscriptions(t.Context(), "orders-")
	require.NoError(t, err)
	require.Equal(t, []string{"orders-a", "orders-b"}, ids(some))
	fs.mu.Lock()
	require.Equal(t, 1, fs.listSubsCalls, `prefix "" uses ListSubscriptions`)
	require.Equal(t, 1, fs.listSubsPrefixCalls, "a prefix uses ListSubscriptionsWithPrefix")
	fs.mu.Unlock()

	ok, err := c.SubscriptionExists(t.Context(), "metrics")
	require.NoError(t, err)
	require.True(t, ok)
	ok, err = c.SubscriptionExists(t.Context(), "missing")
	require.NoError(t, err)
	require.False(t, ok)

	consumers, err := c.ListConsumers(t.Context(), "orders-a")
	require.NoError(t, err)
	require.Len(t, consumers, 1)
	require.Equal(t, "c1", consumers[0].GetName())

	err = c.DeleteSubscription(t.Context(), "orders-a", false)
	require.Equal(t, codes.FailedPrecondition, status.Code(err), "consumers attached")
	require.NoError(t, c.DeleteSubscription(t.Context(), "orders-a", true))
	fs.mu.Lock()
	require.True(t, fs.lastDeleteSub.GetForce())
	require.Equal(t, "orders-a", fs.lastDeleteSub.GetSubscriptionId())
	fs.mu.Unlock()
	err = c.DeleteSubscription(t.Context(), "orders-a", false)
	require.Equal(t, codes.NotFound, status.Code(err))
}
