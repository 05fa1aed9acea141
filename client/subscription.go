package client

import (
	"context"
	"fmt"
	"math"
	"time"

	"github.com/weir-log/weir/api/hstreampb"
)

// SubscriptionOpt configures a subscription created by CreateSubscription.
type SubscriptionOpt interface{ applySubscription(*subscriptionConfig) }

type subscriptionOption func(*subscriptionConfig)

func (o subscriptionOption) applySubscription(c *subscriptionConfig) { o(c) }

// Defaults of the subscription options, those of HStreamDB's Go client.
const (
	// DefaultAckTimeout is how long the server waits for a delivered
	// record's ack before it delivers the record again.
	DefaultAckTimeout = 600 * time.Second
	// DefaultMaxUnackedRecords is how many delivered records the server
	// lets wait for their ack before it stops delivering.
	DefaultMaxUnackedRecords = 10000
	// DefaultSubscriptionOffset starts a subscription at every shard's tail:
	// only records appended after its creation are delivered.
	DefaultSubscriptionOffset = hstreampb.SpecialOffset_LATEST
)

type subscriptionConfig struct {
	ackTimeout time.Duration
	maxUnacked int
	offset     hstreampb.SpecialOffset
}

func defaultSubscriptionConfig() subscriptionConfig {
	return subscriptionConfig{
		ackTimeout: DefaultAckTimeout,
		maxUnacked: DefaultMaxUnackedRecords,
		offset:     DefaultSubscriptionOffset,
	}
}

// WithAckTimeout sets how long the server waits for the ack of a delivered
// record before it delivers it again (to any consumer of the
// subscription). Default 600 s (DefaultAckTimeout). The wire carries whole
// seconds, so d must be a whole number of seconds, at least 1 s.
func WithAckTimeout(d time.Duration) SubscriptionOpt {
	return subscriptionOption(func(c *subscriptionConfig) { c.ackTimeout = d })
}

// WithMaxUnackedRecords sets the subscription's flow-control window: the
// server stops delivering while this many delivered records await their
// ack. Default 10000 (DefaultMaxUnackedRecords). Must be at least 1. It also
// bounds what a consumer holds: acks a Consume has not sent yet count as
// unacked.
func WithMaxUnackedRecords(n int) SubscriptionOpt {
	return subscriptionOption(func(c *subscriptionConfig) { c.maxUnacked = n })
}

// WithSubscriptionOffset sets where the subscription starts in every shard:
// SpecialOffset_EARLIEST (the first record still retained) or
// SpecialOffset_LATEST (only records appended after the subscription is
// created). Default LATEST (DefaultSubscriptionOffset). The server resolves
// it once, when the subscription is created, not when consumers connect.
func WithSubscriptionOffset(o hstreampb.SpecialOffset) SubscriptionOpt {
	return subscriptionOption(func(c *subscriptionConfig) { c.offset = o })
}

// CreateSubscription creates subscription id over stream and returns it as
// the server recorded it (with its creation time). Defaults: ack timeout
// 600 s, 10000 unacked records, offset LATEST; see WithAckTimeout,
// WithMaxUnackedRecords and WithSubscriptionOffset. An existing id is
// codes.AlreadyExists, a missing stream codes.NotFound.
func (c *Client) CreateSubscription(ctx context.Context, id, stream string, opts ...SubscriptionOpt) (*hstreampb.Subscription, error) {
	cfg := defaultSubscriptionConfig()
	for _, o := range opts {
		o.applySubscription(&cfg)
	}
	if id == "" {
		return nil, fmt.Errorf("%w: CreateSubscription: empty subscription id", ErrInvalidArgument)
	}
	if stream == "" {
		return nil, fmt.Errorf("%w: CreateSubscription %q: empty stream name", ErrInvalidArgument, id)
	}
	ackSeconds, err := ackTimeoutSeconds(cfg.ackTimeout)
	if err != nil {
		return nil, fmt.Errorf("%w: CreateSubscription %q: %v", ErrInvalidArgument, id, err)
	}
	if cfg.maxUnacked < 1 || cfg.maxUnacked > math.MaxInt32 {
		return nil, fmt.Errorf("%w: CreateSubscription %q: WithMaxUnackedRecords(%d): want 1..%d", ErrInvalidArgument, id, cfg.maxUnacked, math.MaxInt32)
	}
	if cfg.offset != hstreampb.SpecialOffset_EARLIEST && cfg.offset != hstreampb.SpecialOffset_LATEST {
		return nil, fmt.Errorf("%w: CreateSubscription %q: WithSubscriptionOffset(%d): want EARLIEST or LATEST", ErrInvalidArgument, id, cfg.offset)
	}
	return call(ctx, c, subscriptionOf(id), hstreampb.HStreamApiClient.CreateSubscription, &hstreampb.Subscription{
		SubscriptionId:    id,
		StreamName:        stream,
		AckTimeoutSeconds: ackSeconds,
		MaxUnackedRecords: int32(cfg.maxUnacked),
		Offset:            cfg.offset,
	})
}

// ackTimeoutSeconds converts a WithAckTimeout to the wire's whole seconds.
func ackTimeoutSeconds(d time.Duration) (int32, error) {
	switch {
	case d < time.Second:
		return 0, fmt.Errorf("WithAckTimeout(%s): want at least 1s", d)
	case d%time.Second != 0:
		return 0, fmt.Errorf("WithAckTimeout(%s): not a whole number of seconds", d)
	case d/time.Second > math.MaxInt32:
		return 0, fmt.Errorf("WithAckTimeout(%s): above %d seconds", d, math.MaxInt32)
	}
	return int32(d / time.Second), nil
}

// GetSubscription returns a subscription and its committed progress, one
// SubscriptionOffset (shard id, batch id) per shard: how far the shard's
// records have been acked, as the server last recorded it (it may lag the
// acks a little). A missing subscription is codes.NotFound.
func (c *Client) GetSubscription(ctx context.Context, id string) (*hstreampb.Subscription, []*hstreampb.SubscriptionOffset, error) {
	resp, err := call(ctx, c, subscriptionOf(id), hstreampb.HStreamApiClient.GetSubscription, &hstreampb.GetSubscriptionRequest{Id: id})
	if err != nil {
		return nil, nil, err
	}
	if resp.GetSubscription() == nil {
		return nil, nil, fmt.Errorf("%w: GetSubscription %q: response has no subscription", ErrBadResponse, id)
	}
	return resp.GetSubscription(), resp.GetOffsets(), nil
}

// ListSubscriptions returns every subscription whose id starts with prefix;
// "" lists all of them (ListSubscriptions RPC), anything else uses
// ListSubscriptionsWithPrefix.
func (c *Client) ListSubscriptions(ctx context.Context, prefix string) ([]*hstreampb.Subscription, error) {
	var (
		resp *hstreampb.ListSubscriptionsResponse
		err  error
	)
	if prefix == "" {
		resp, err = call(ctx, c, anyNode(), hstreampb.HStreamApiClient.ListSubscriptions, &hstreampb.ListSubscriptionsRequest{})
	} else {
		resp, err = call(ctx, c, anyNode(), hstreampb.HStreamApiClient.ListSubscriptionsWithPrefix, &hstreampb.ListSubscriptionsWithPrefixRequest{Prefix: prefix})
	}
	if err != nil {
		return nil, err
	}
	return resp.GetSubscription(), nil
}

// SubscriptionExists reports whether subscription id exists
// (CheckSubscriptionExist RPC).
func (c *Client) SubscriptionExists(ctx context.Context, id string) (bool, error) {
	resp, err := call(ctx, c, anyNode(), hstreampb.HStreamApiClient.CheckSubscriptionExist, &hstreampb.CheckSubscriptionExistRequest{SubscriptionId: id})
	if err != nil {
		return false, err
	}
	return resp.GetExists(), nil
}

// DeleteSubscription deletes a subscription. force is needed while
// consumers are attached (else codes.FailedPrecondition); a missing
// subscription is codes.NotFound.
func (c *Client) DeleteSubscription(ctx context.Context, id string, force bool) error {
	_, err := call(ctx, c, subscriptionOf(id), hstreampb.HStreamApiClient.DeleteSubscription, &hstreampb.DeleteSubscriptionRequest{SubscriptionId: id, Force: force})
	return err
}

// ListConsumers returns the consumers attached to a subscription.
func (c *Client) ListConsumers(ctx context.Context, id string) ([]*hstreampb.Consumer, error) {
	resp, err := call(ctx, c, subscriptionOf(id), hstreampb.HStreamApiClient.ListConsumers, &hstreampb.ListConsumersRequest{SubscriptionId: id})
	if err != nil {
		return nil, err
	}
	return resp.GetConsumers(), nil
}
