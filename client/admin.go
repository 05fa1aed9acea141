package client

import (
	"context"
	"fmt"
	"math"
	"time"

	"github.com/weir-log/weir/api/hstreampb"
	"google.golang.org/protobuf/types/known/emptypb"
)

// CreateStream creates a stream and returns it as the server recorded it
// (with its creation time). Defaults: 1 shard, replication factor 1, 7 days
// of backlog; see ShardCount, ReplicationFactor and BacklogDuration.
func (c *Client) CreateStream(ctx context.Context, name string, opts ...StreamOpt) (*hstreampb.Stream, error) {
	cfg := defaultStreamConfig()
	for _, o := range opts {
		o.applyStream(&cfg)
	}
	if name == "" {
		return nil, fmt.Errorf("%w: CreateStream: empty stream name", ErrInvalidArgument)
	}
	shards, ok := positiveUint32(cfg.shardCount)
	if !ok {
		return nil, fmt.Errorf("%w: CreateStream %q: ShardCount(%d): want 1..%d", ErrInvalidArgument, name, cfg.shardCount, uint32(math.MaxUint32))
	}
	rf, ok := positiveUint32(cfg.replicationFactor)
	if !ok {
		return nil, fmt.Errorf("%w: CreateStream %q: ReplicationFactor(%d): want 1..%d", ErrInvalidArgument, name, cfg.replicationFactor, uint32(math.MaxUint32))
	}
	backlog, err := backlogSeconds(cfg.backlog)
	if err != nil {
		return nil, fmt.Errorf("%w: CreateStream %q: %v", ErrInvalidArgument, name, err)
	}
	return call(ctx, c, anyNode(), hstreampb.HStreamApiClient.CreateStream, &hstreampb.Stream{
		StreamName:        name,
		ReplicationFactor: rf,
		BacklogDuration:   backlog,
		ShardCount:        shards,
	})
}

// positiveUint32 converts n if it is in 1..2^32-1.
func positiveUint32(n int) (uint32, bool) {
	if n < 1 || uint64(n) > math.MaxUint32 {
		return 0, false
	}
	return uint32(n), true
}

// backlogSeconds converts a BacklogDuration to the wire's whole seconds.
func backlogSeconds(d time.Duration) (uint32, error) {
	switch {
	case d < 0:
		return 0, fmt.Errorf("BacklogDuration(%s): negative", d)
	case d%time.Second != 0:
		return 0, fmt.Errorf("BacklogDuration(%s): not a whole number of seconds", d)
	case d/time.Second > math.MaxUint32:
		return 0, fmt.Errorf("BacklogDuration(%s): above %d seconds", d, uint32(math.MaxUint32))
	}
	return uint32(d / time.Second), nil
}

// GetStream returns the named stream; a missing stream is codes.NotFound.
func (c *Client) GetStream(ctx context.Context, name string) (*hstreampb.Stream, error) {
	resp, err := call(ctx, c, anyNode(), hstreampb.HStreamApiClient.GetStream, &hstreampb.GetStreamRequest{Name: name})
	if err != nil {
		return nil, err
	}
	if resp.GetStream() == nil {
		return nil, fmt.Errorf("%w: GetStream %q: response has no stream", ErrBadResponse, name)
	}
	return resp.GetStream(), nil
}

// ListStreams returns every stream whose name starts with prefix; "" lists
// all streams (ListStreams RPC), anything else uses ListStreamsWithPrefix.
func (c *Client) ListStreams(ctx context.Context, prefix string) ([]*hstreampb.Stream, error) {
	var (
		resp *hstreampb.ListStreamsResponse
		err  error
	)
	if prefix == "" {
		resp, err = call(ctx, c, anyNode(), hstreampb.HStreamApiClient.ListStreams, &hstreampb.ListStreamsRequest{})
	} else {
		resp, err = call(ctx, c, anyNode(), hstreampb.HStreamApiClient.ListStreamsWithPrefix, &hstreampb.ListStreamsWithPrefixRequest{Prefix: prefix})
	}
	if err != nil {
		return nil, err
	}
	return resp.GetStreams(), nil
}

// DeleteStream deletes a stream. force is needed when the stream has
// subscriptions (else codes.FailedPrecondition); with ignoreNonExist a missing
// stream is not an error.
func (c *Client) DeleteStream(ctx context.Context, name string, force, ignoreNonExist bool) error {
	c.forgetShards(name)
	_, err := call(ctx, c, anyNode(), hstreampb.HStreamApiClient.DeleteStream, &hstreampb.DeleteStreamRequest{
		StreamName:     name,
		IgnoreNonExist: ignoreNonExist,
		Force:          force,
	})
	return err
}

// ListShards returns the shards of a stream, each with its inclusive hash
// range as base-10 text.
func (c *Client) ListShards(ctx context.Context, stream string) ([]*hstreampb.Shard, error) {
	resp, err := call(ctx, c, anyNode(), hstreampb.HStreamApiClient.ListShards, &hstreampb.ListShardsRequest{StreamName: stream})
	if err != nil {
		return nil, err
	}
	return resp.GetShards(), nil
}

// DescribeCluster returns the cluster's nodes and their states, as any
// node reports them.
func (c *Client) DescribeCluster(ctx context.Context) (*hstreampb.DescribeClusterResponse, error) {
	return call(ctx, c, anyNode(), hstreampb.HStreamApiClient.DescribeCluster, &emptypb.Empty{})
}

// LookupShard returns the address (host:port) of the node serving a shard,
// as the server reports it now; the client's own cache is bypassed.
func (c *Client) LookupShard(ctx context.Context, shardID uint64) (string, error) {
	return c.lookupAddr(ctx, shardOf(shardID))
}

// LookupSubscription returns the address (host:port) of the node that owns
// a subscription, as the server reports it now.
func (c *Client) LookupSubscription(ctx context.Context, subID string) (string, error) {
	return c.lookupAddr(ctx, subscriptionOf(subID))
}

// lookupAddr runs a fresh lookup of t, retried as any call.
func (c *Client) lookupAddr(ctx context.Context, t target) (string, error) {
	var addr string
	err := c.do(ctx, anyNode(), func(ctx context.Context, _ hstreampb.HStreamApiClient) error {
		var err error
		addr, err = c.lookup(ctx, t)
		return err
	})
	return addr, err
}
