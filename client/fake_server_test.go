package client

import (
	"context"
	"encoding/json"
	"io"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/weir-log/weir/api/hstreampb"
	"github.com/weir-log/weir/api/wire"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/emptypb"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// fakeServer is an in-memory HStreamApi: streams with shards tiled by
// wire.ShardRanges, and per shard a log of the BatchedRecords as appended
// (still compressed). Batch ids start at 1.
type fakeServer struct {
	hstreampb.UnimplementedHStreamApiServer

	mu              sync.Mutex
	streams         map[string][]*hstreampb.Shard
	logs            map[uint64][]*hstreampb.BatchedRecord // by shard id
	listShardsCalls int
	appendCalls     int
	lastCreate      *hstreampb.Stream

	// Subscriptions: what the unary RPCs keep and saw.
	subs                map[string]*hstreampb.Subscription
	subOffsets          map[string][]*hstreampb.SubscriptionOffset
	consumers           map[string][]*hstreampb.Consumer
	lastCreateSub       *hstreampb.Subscription
	lastDeleteSub       *hstreampb.DeleteSubscriptionRequest
	listSubsCalls       int
	listSubsPrefixCalls int

	// StreamingFetch: after a consumer registers, the fake sends the
	// subscription's deliveries, one batch per response; then it ends the
	// stream with fetchErr if set, with OK if fetchEnd, and else records
	// the client's requests until the client half-closes.
	deliveries      map[string][]*hstreampb.ReceivedRecord
	fetchErr        error
	fetchEnd        bool
	fetchLog        []fetchRequest // every request of every fetch stream, in arrival order
	fetchHalfClosed int            // fetch streams the client half-closed
}

// fetchRequest is one StreamingFetchRequest the fake received, and when.
type fetchRequest struct {
	req *hstreampb.StreamingFetchRequest
	at  time.Time
}

// hstreamError builds an error the way HStreamDB does: a gRPC status whose
// message is {"error": code, "message": text, "extra": null}.
func hstreamError(c codes.Code, code hstreampb.ErrorCode, text string) error {
	msg, err := json.Marshal(map[string]any{"error": int32(code), "message": text, "extra": nil})
	if err != nil {
		panic(err)
	}
	return status.Error(c, string(msg))
}

// startFake serves a fakeServer on 127.0.0.1:0 and returns it with a
// Client dialed to it; both stop when the test ends.
func startFake(t *testing.T) (*fakeServer, *Client) {
	t.Helper()
	fs := &fakeServer{
		streams:    make(map[string][]*hstreampb.Shard),
		logs:       make(map[uint64][]*hstreampb.BatchedRecord),
		subs:       make(map[string]*hstreampb.Subscription),
		subOffsets: make(map[string][]*hstreampb.SubscriptionOffset),
		consumers:  make(map[string][]*hstreampb.Consumer),
		deliveries: make(map[string][]*hstreampb.ReceivedRecord),
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
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

	c, err := Dial(t.Context(), lis.Addr().String())
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, c.Close()) })
	return fs, c
}

// addStream creates a stream whose shards have the given ids, in hash range
// order.
func (fs *fakeServer) addStream(name string, shardIDs ...uint64) {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	ranges := wire.ShardRanges(uint32(len(shardIDs)))
	shards := make([]*hstreampb.Shard, len(shardIDs))
	for i, r := range ranges {
		shards[i] = &hstreampb.Shard{
			StreamName:        name,
			ShardId:           shardIDs[i],
			StartHashRangeKey: wire.FormatKey(r.Start),
			EndHashRangeKey:   wire.FormatKey(r.End),
			Epoch:             uint64(len(shardIDs)),
			IsActive:          true,
		}
		delete(fs.logs, shardIDs[i])
	}
	fs.streams[name] = shards
}

// batches returns what shard holds.
func (fs *fakeServer) batches(shard uint64) []*hstreampb.BatchedRecord {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	return append([]*hstreampb.BatchedRecord(nil), fs.logs[shard]...)
}

func (fs *fakeServer) Echo(_ context.Context, req *hstreampb.EchoRequest) (*hstreampb.EchoResponse, error) {
	return &hstreampb.EchoResponse{Msg: req.GetMsg()}, nil
}

func (fs *fakeServer) CreateStream(_ context.Context, req *hstreampb.Stream) (*hstreampb.Stream, error) {
	fs.mu.Lock()
	fs.lastCreate = proto.Clone(req).(*hstreampb.Stream)
	fs.mu.Unlock()
	return req, nil
}

func (fs *fakeServer) DeleteStream(_ context.Context, req *hstreampb.DeleteStreamRequest) (*emptypb.Empty, error) {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	if _, ok := fs.streams[req.GetStreamName()]; !ok && !req.GetIgnoreNonExist() {
		return nil, hstreamError(codes.NotFound, hstreampb.ErrorCode_StreamNotFound, "stream "+req.GetStreamName()+" not found")
	}
	delete(fs.streams, req.GetStreamName())
	return &emptypb.Empty{}, nil
}

func (fs *fakeServer) ListShards(_ context.Context, req *hstreampb.ListShardsRequest) (*hstreampb.ListShardsResponse, error) {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	fs.listShardsCalls++
	shards, ok := fs.streams[req.GetStreamName()]
	if !ok {
		return nil, hstreamError(codes.NotFound, hstreampb.ErrorCode_StreamNotFound, "stream "+req.GetStreamName()+" not found")
	}
	return &hstreampb.ListShardsResponse{Shards: shards}, nil
}

func (fs *fakeServer) Append(_ context.Context, req *hstreampb.AppendRequest) (*hstreampb.AppendResponse, error) {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	fs.appendCalls++
	shards, ok := fs.streams[req.GetStreamName()]
	if !ok {
		return nil, hstreamError(codes.NotFound, hstreampb.ErrorCode_StreamNotFound, "stream "+req.GetStreamName()+" not found")
	}
	found := false
	for _, s := range shards {
		found = found || s.GetShardId() == req.GetShardId()
	}
	if !found {
		return nil, hstreamError(codes.NotFound, hstreampb.ErrorCode_StreamShardNotExists,
			"shard "+strconv.FormatUint(req.GetShardId(), 10)+" not found")
	}
	batch := req.GetRecords()
	if batch.GetBatchSize() == 0 || len(batch.GetPayload()) == 0 {
		return nil, hstreamError(codes.InvalidArgument, hstreampb.ErrorCode_StreamEmptyBatchedRecord, "empty batch")
	}
	fs.logs[req.GetShardId()] = append(fs.logs[req.GetShardId()], batch)
	batchID := uint64(len(fs.logs[req.GetShardId()]))
	resp := &hstreampb.AppendResponse{StreamName: req.GetStreamName(), ShardId: req.GetShardId()}
	for i := range batch.GetBatchSize() {
		resp.RecordIds = append(resp.RecordIds, &hstreampb.RecordId{ShardId: req.GetShardId(), BatchId: batchID, BatchIndex: i})
	}
	return resp, nil
}

// received returns every batch of stream, from batch id from on, as
// ReceivedRecords.
func (fs *fakeServer) received(stream string, onlyShard *uint64, fromBatch uint64) ([]*hstreampb.ReceivedRecord, error) {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	shards, ok := fs.streams[stream]
	if !ok {
		return nil, hstreamError(codes.NotFound, hstreampb.ErrorCode_StreamNotFound, "stream "+stream+" not found")
	}
	var out []*hstreampb.ReceivedRecord
	for _, s := range shards {
		if onlyShard != nil && s.GetShardId() != *onlyShard {
			continue
		}
		for i, b := range fs.logs[s.GetShardId()] {
			batchID := uint64(i + 1)
			if batchID < fromBatch {
				continue
			}
			rr := &hstreampb.ReceivedRecord{Record: b}
			for j := range b.GetBatchSize() {
				rr.RecordIds = append(rr.RecordIds, &hstreampb.RecordId{ShardId: s.GetShardId(), BatchId: batchID, BatchIndex: j})
			}
			out = append(out, rr)
		}
	}
	return out, nil
}

// ReadStream sends every stored batch, one per response, and ends; it
// ignores the offsets.
func (fs *fakeServer) ReadStream(req *hstreampb.ReadStreamRequest, ss grpc.ServerStreamingServer[hstreampb.ReadStreamResponse]) error {
	rrs, err := fs.received(req.GetStreamName(), nil, 0)
	if err != nil {
		return err
	}
	for _, rr := range rrs {
		if err := ss.Send(&hstreampb.ReadStreamResponse{ReceivedRecords: []*hstreampb.ReceivedRecord{rr}}); err != nil {
			return err
		}
	}
	return nil
}

// ReadShardStream sends the shard's batches from the record offset's batch
// on (as HStreamDB does, ignoring batchIndex), in one response.
func (fs *fakeServer) ReadShardStream(req *hstreampb.ReadShardStreamRequest, ss grpc.ServerStreamingServer[hstreampb.ReadShardStreamResponse]) error {
	shard := req.GetShardId()
	rrs, err := fs.received(req.GetStreamName(), &shard, req.GetFrom().GetRecordOffset().GetBatchId())
	if err != nil {
		return err
	}
	return ss.Send(&hstreampb.ReadShardStreamResponse{ReceivedRecords: rrs})
}

func subscriptionNotFound(id string) error {
	return hstreamError(codes.NotFound, hstreampb.ErrorCode_SubscriptionNotFound, "subscription "+id+" not found")
}

func (fs *fakeServer) CreateSubscription(_ context.Context, req *hstreampb.Subscription) (*hstreampb.Subscription, error) {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	fs.lastCreateSub = proto.Clone(req).(*hstreampb.Subscription)
	if _, ok := fs.subs[req.GetSubscriptionId()]; ok {
		return nil, hstreamError(codes.AlreadyExists, hstreampb.ErrorCode_SubscriptionExists, "subscription "+req.GetSubscriptionId()+" exists")
	}
	created := proto.Clone(req).(*hstreampb.Subscription)
	created.CreationTime = timestamppb.Now()
	fs.subs[req.GetSubscriptionId()] = created
	return created, nil
}

func (fs *fakeServer) GetSubscription(_ context.Context, req *hstreampb.GetSubscriptionRequest) (*hstreampb.GetSubscriptionResponse, error) {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	sub, ok := fs.subs[req.GetId()]
	if !ok {
		return nil, subscriptionNotFound(req.GetId())
	}
	return &hstreampb.GetSubscriptionResponse{Subscription: sub, Offsets: fs.subOffsets[req.GetId()]}, nil
}

// sortedSubs returns the subscriptions whose id starts with prefix, by id.
func (fs *fakeServer) sortedSubs(prefix string) []*hstreampb.Subscription {
	var out []*hstreampb.Subscription
	for id, s := range fs.subs {
		if strings.HasPrefix(id, prefix) {
			out = append(out, s)
		}
	}
	slices.SortFunc(out, func(a, b *hstreampb.Subscription) int {
		return strings.Compare(a.GetSubscriptionId(), b.GetSubscriptionId())
	})
	return out
}

func (fs *fakeServer) ListSubscriptions(context.Context, *hstreampb.ListSubscriptionsRequest) (*hstreampb.ListSubscriptionsResponse, error) {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	fs.listSubsCalls++
	return &hstreampb.ListSubscriptionsResponse{Subscription: fs.sortedSubs("")}, nil
}

func (fs *fakeServer) ListSubscriptionsWithPrefix(_ context.Context, req *hstreampb.ListSubscriptionsWithPrefixRequest) (*hstreampb.ListSubscriptionsResponse, error) {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	fs.listSubsPrefixCalls++
	return &hstreampb.ListSubscriptionsResponse{Subscription: fs.sortedSubs(req.GetPrefix())}, nil
}

func (fs *fakeServer) CheckSubscriptionExist(_ context.Context, req *hstreampb.CheckSubscriptionExistRequest) (*hstreampb.CheckSubscriptionExistResponse, error) {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	_, ok := fs.subs[req.GetSubscriptionId()]
	return &hstreampb.CheckSubscriptionExistResponse{Exists: ok}, nil
}

func (fs *fakeServer) DeleteSubscription(_ context.Context, req *hstreampb.DeleteSubscriptionRequest) (*emptypb.Empty, error) {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	fs.lastDeleteSub = proto.Clone(req).(*hstreampb.DeleteSubscriptionRequest)
	id := req.GetSubscriptionId()
	if _, ok := fs.subs[id]; !ok {
		return nil, subscriptionNotFound(id)
	}
	if len(fs.consumers[id]) > 0 && !req.GetForce() {
		return nil, hstreamError(codes.FailedPrecondition, hstreampb.ErrorCode_SubscriptionFoundActiveConsumers, "subscription "+id+" has active consumers")
	}
	delete(fs.subs, id)
	return &emptypb.Empty{}, nil
}

func (fs *fakeServer) ListConsumers(_ context.Context, req *hstreampb.ListConsumersRequest) (*hstreampb.ListConsumersResponse, error) {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	if _, ok := fs.subs[req.GetSubscriptionId()]; !ok {
		return nil, subscriptionNotFound(req.GetSubscriptionId())
	}
	return &hstreampb.ListConsumersResponse{Consumers: fs.consumers[req.GetSubscriptionId()]}, nil
}

// logFetch records one StreamingFetchRequest.
func (fs *fakeServer) logFetch(req *hstreampb.StreamingFetchRequest) {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	fs.fetchLog = append(fs.fetchLog, fetchRequest{req: req, at: time.Now()})
}

// fetchRequests returns the requests received so far.
func (fs *fakeServer) fetchRequests() []fetchRequest {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	return slices.Clone(fs.fetchLog)
}

// ackedIDs returns the ids of every ack received so far, as text, in order.
func (fs *fakeServer) ackedIDs() []string {
	var out []string
	for _, r := range fs.fetchRequests() {
		for _, id := range r.req.GetAckIds() {
			out = append(out, wire.FormatRecordID(id))
		}
	}
	return out
}

// StreamingFetch: see the fields above.
func (fs *fakeServer) StreamingFetch(ss grpc.BidiStreamingServer[hstreampb.StreamingFetchRequest, hstreampb.StreamingFetchResponse]) error {
	first, err := ss.Recv()
	if err != nil {
		return err
	}
	fs.logFetch(first)
	id := first.GetSubscriptionId()
	fs.mu.Lock()
	_, ok := fs.subs[id]
	batches := fs.deliveries[id]
	fetchErr, fetchEnd := fs.fetchErr, fs.fetchEnd
	fs.mu.Unlock()
	if !ok {
		return subscriptionNotFound(id)
	}
	for _, rr := range batches {
		if err := ss.Send(&hstreampb.StreamingFetchResponse{ReceivedRecords: rr}); err != nil {
			return err
		}
	}
	switch {
	case fetchErr != nil:
		return fetchErr
	case fetchEnd:
		return nil
	}
	for {
		req, err := ss.Recv()
		if err == io.EOF {
			fs.mu.Lock()
			fs.fetchHalfClosed++
			fs.mu.Unlock()
			return nil
		}
		if err != nil {
			return err
		}
		fs.logFetch(req)
	}
}
