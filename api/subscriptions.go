package api

import (
	"context"
	"errors"
	"io"
	"maps"
	"slices"

	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/protobuf/types/known/emptypb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/weir-log/weir/api/hstreampb"
	"github.com/weir-log/weir/cluster"
	"github.com/weir-log/weir/subscription"
)

// Bounds of a subscription's settings. An ack timeout over ten hours is
// almost certainly a unit mistake; the window bounds the owner's memory
// (about 100 bytes per outstanding batch).
const (
	maxAckTimeoutSeconds = 36000
	maxUnackedRecords    = 1_000_000
)

// CreateSubscription creates a subscription, resolving its offset on every
// shard now.
func (s *Service) CreateSubscription(ctx context.Context, req *hstreampb.Subscription) (*hstreampb.Subscription, error) {
	return unary(ctx, s, "CreateSubscription", req, s.createSubscription)
}

func (s *Service) createSubscription(ctx context.Context, req *hstreampb.Subscription) (*hstreampb.Subscription, error) {
	id, stream := req.GetSubscriptionId(), req.GetStreamName()
	if p := cluster.NameProblem(id); p != "" {
		return nil, errorf(errInvalidSubscriptionName, "invalid subscription id %q: %s", id, p)
	}
	if t := req.GetAckTimeoutSeconds(); t < 1 || t > maxAckTimeoutSeconds {
		return nil, errorf(errInvalidSubscription, "subscription %q: ackTimeoutSeconds must be from 1 to %d, got %d", id, maxAckTimeoutSeconds, t)
	}
	if n := req.GetMaxUnackedRecords(); n < 1 || n > maxUnackedRecords {
		return nil, errorf(errInvalidSubscription, "subscription %q: maxUnackedRecords must be from 1 to %d, got %d", id, maxUnackedRecords, n)
	}
	var offset string
	switch req.GetOffset() {
	case hstreampb.SpecialOffset_EARLIEST:
		offset = cluster.OffsetEarliest
	case hstreampb.SpecialOffset_LATEST:
		offset = cluster.OffsetLatest
	default:
		return nil, errorf(errInvalidSubscriptionOffset, "subscription %q: offset %d is neither EARLIEST (0) nor LATEST (1)", id, int32(req.GetOffset()))
	}
	m, err := s.node.CreateSubscription(ctx, cluster.SubscriptionMeta{
		ID:                id,
		Stream:            stream,
		AckTimeoutSeconds: req.GetAckTimeoutSeconds(),
		MaxUnackedRecords: req.GetMaxUnackedRecords(),
		Offset:            offset,
	})
	switch {
	case errors.Is(err, cluster.ErrStreamNotFound):
		return nil, errorf(errSubscriptionOnMissingStream, "subscription %q: stream %q not found", id, stream)
	case errors.Is(err, cluster.ErrSubscriptionExists):
		return nil, errorf(err, "subscription %q already exists", id)
	case err != nil:
		return nil, err
	}
	return subscriptionPB(m), nil
}

// GetSubscription returns a subscription and its committed (persisted)
// progress per shard.
func (s *Service) GetSubscription(ctx context.Context, req *hstreampb.GetSubscriptionRequest) (*hstreampb.GetSubscriptionResponse, error) {
	return unary(ctx, s, "GetSubscription", req, s.getSubscription)
}

func (s *Service) getSubscription(ctx context.Context, req *hstreampb.GetSubscriptionRequest) (*hstreampb.GetSubscriptionResponse, error) {
	m, err := s.subscription(req.GetId())
	if err != nil {
		return nil, err
	}
	committed, err := s.subs.Committed(ctx, m.ID)
	if err != nil {
		return nil, err
	}
	resp := &hstreampb.GetSubscriptionResponse{Subscription: subscriptionPB(m)}
	for _, id := range slices.Sorted(maps.Keys(committed)) {
		// batchId is the last index acknowledged in full (with everything
		// before it); the owner resumes after it.
		resp.Offsets = append(resp.Offsets, &hstreampb.SubscriptionOffset{ShardId: id, BatchId: committed[id] - 1})
	}
	return resp, nil
}

// ListSubscriptions lists every subscription, by id.
func (s *Service) ListSubscriptions(_ context.Context, _ *hstreampb.ListSubscriptionsRequest) (*hstreampb.ListSubscriptionsResponse, error) {
	return s.listSubscriptions(""), nil
}

// ListSubscriptionsWithPrefix lists the subscriptions whose id starts with
// prefix.
func (s *Service) ListSubscriptionsWithPrefix(_ context.Context, req *hstreampb.ListSubscriptionsWithPrefixRequest) (*hstreampb.ListSubscriptionsResponse, error) {
	return s.listSubscriptions(req.GetPrefix()), nil
}

func (s *Service) listSubscriptions(prefix string) *hstreampb.ListSubscriptionsResponse {
	ms := s.node.Subscriptions(prefix)
	resp := &hstreampb.ListSubscriptionsResponse{Subscription: make([]*hstreampb.Subscription, 0, len(ms))}
	for _, m := range ms {
		resp.Subscription = append(resp.Subscription, subscriptionPB(m))
	}
	return resp
}

// CheckSubscriptionExist says whether a subscription exists.
func (s *Service) CheckSubscriptionExist(_ context.Context, req *hstreampb.CheckSubscriptionExistRequest) (*hstreampb.CheckSubscriptionExistResponse, error) {
	_, err := s.node.Subscription(req.GetSubscriptionId())
	return &hstreampb.CheckSubscriptionExistResponse{Exists: err == nil}, nil
}

// DeleteSubscription deletes a subscription; with consumers attached it needs
// force, and then ends their fetches.
func (s *Service) DeleteSubscription(ctx context.Context, req *hstreampb.DeleteSubscriptionRequest) (*emptypb.Empty, error) {
	return unary(ctx, s, "DeleteSubscription", req, s.deleteSubscription)
}

func (s *Service) deleteSubscription(ctx context.Context, req *hstreampb.DeleteSubscriptionRequest) (*emptypb.Empty, error) {
	id := req.GetSubscriptionId()
	if _, err := s.subscription(id); err != nil {
		return nil, err
	}
	if err := s.subs.DeleteSubscription(ctx, id, req.GetForce()); err != nil {
		if errors.Is(err, cluster.ErrSubscriptionNotFound) {
			return nil, subscriptionNotFound(id)
		}
		return nil, err
	}
	return &emptypb.Empty{}, nil
}

// ListConsumers lists the consumers attached to a subscription.
func (s *Service) ListConsumers(ctx context.Context, req *hstreampb.ListConsumersRequest) (*hstreampb.ListConsumersResponse, error) {
	return unary(ctx, s, "ListConsumers", req, s.listConsumers)
}

func (s *Service) listConsumers(_ context.Context, req *hstreampb.ListConsumersRequest) (*hstreampb.ListConsumersResponse, error) {
	id := req.GetSubscriptionId()
	if _, err := s.subscription(id); err != nil {
		return nil, err
	}
	cs, err := s.subs.Consumers(id)
	if err != nil {
		return nil, err
	}
	resp := &hstreampb.ListConsumersResponse{Consumers: make([]*hstreampb.Consumer, 0, len(cs))}
	for _, c := range cs {
		resp.Consumers = append(resp.Consumers, &hstreampb.Consumer{Name: c.Name, Uri: c.URI, UserAgent: c.UserAgent})
	}
	return resp, nil
}

// StreamingFetch attaches a consumer to a subscription: its first request
// names the subscription and the consumer, later ones carry acks; the
// server sends one batch per response, for the shards assigned to this
// consumer, within the subscription's window of unacked records.
func (s *Service) StreamingFetch(ss hstreampb.HStreamApi_StreamingFetchServer) error {
	return statusError(s.log, "StreamingFetch", s.streamingFetch(ss))
}

func (s *Service) streamingFetch(ss hstreampb.HStreamApi_StreamingFetchServer) error {
	ctx, cancel := context.WithCancel(ss.Context())
	defer cancel()
	first, err := ss.Recv()
	if err == io.EOF {
		return nil
	}
	if err != nil {
		return err
	}
	id := first.GetSubscriptionId()
	if _, err := s.subscription(id); err != nil {
		return err
	}
	if _, err := s.serverFor(ctx, hstreampb.ResourceType_ResSubscription.String(), id); err != nil {
		return err
	}
	info := subscription.ConsumerInfo{Name: first.GetConsumerName()}
	if p, ok := peer.FromContext(ctx); ok {
		info.URI = p.Addr.String()
	}
	if md, ok := metadata.FromIncomingContext(ctx); ok {
		if ua := md.Get("user-agent"); len(ua) > 0 {
			info.UserAgent = ua[0]
		}
	}
	c, err := s.subs.Attach(ctx, id, info)
	if errors.Is(err, cluster.ErrSubscriptionNotFound) {
		return subscriptionNotFound(id)
	}
	if err != nil {
		return err
	}
	defer c.Close()
	c.Ack(first.GetAckIds())

	// Acks come in on their own goroutine. The client closing its side
	// (io.EOF) is the consumer leaving: the fetch ends with OK.
	left := make(chan error, 1)
	go func() {
		for {
			req, err := ss.Recv()
			if err != nil {
				left <- err
				cancel()
				return
			}
			c.Ack(req.GetAckIds())
		}
	}()
	go func() {
		select {
		case <-s.shutdown:
			cancel()
		case <-ctx.Done():
		}
	}()
	for {
		rr, err := c.Next(ctx)
		if err != nil {
			select {
			case <-s.shutdown:
				return errorf(cluster.ErrClosed, "the server is shutting down; fetch again to continue")
			case why := <-left:
				if why == io.EOF {
					return nil
				}
				return why
			default:
			}
			return err
		}
		if err := ss.Send(&hstreampb.StreamingFetchResponse{ReceivedRecords: rr}); err != nil {
			return err
		}
	}
}

// subscription returns a subscription's metadata, or a NotFound naming it.
func (s *Service) subscription(id string) (cluster.SubscriptionMeta, error) {
	m, err := s.node.Subscription(id)
	if errors.Is(err, cluster.ErrSubscriptionNotFound) {
		return m, subscriptionNotFound(id)
	}
	return m, err
}

func subscriptionNotFound(id string) error {
	return errorf(cluster.ErrSubscriptionNotFound, "subscription %q not found", id)
}

func subscriptionPB(m cluster.SubscriptionMeta) *hstreampb.Subscription {
	offset := hstreampb.SpecialOffset_LATEST
	if m.Offset == cluster.OffsetEarliest {
		offset = hstreampb.SpecialOffset_EARLIEST
	}
	return &hstreampb.Subscription{
		SubscriptionId:    m.ID,
		StreamName:        m.Stream,
		AckTimeoutSeconds: m.AckTimeoutSeconds,
		MaxUnackedRecords: m.MaxUnackedRecords,
		Offset:            offset,
		CreationTime:      timestamppb.New(m.CreatedAt),
	}
}
