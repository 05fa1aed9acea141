package client

import (
	"context"
	"encoding/json"
	"net"
	"strconv"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"
	"github.com/weir-log/weir/api/hstreampb"
	"github.com/weir-log/weir/api/wire"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/emptypb"
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
		streams: make(map[string][]*hstreampb.Shard),
		logs:    make(map[uint64][]*hstreampb.BatchedRecord),
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
