package api

import (
	"context"
	"errors"
	"slices"

	"google.golang.org/protobuf/types/known/emptypb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/weir-log/weir/api/hstreampb"
	"github.com/weir-log/weir/cluster"
)

// CreateStream creates a stream and its shards.
func (s *Service) CreateStream(ctx context.Context, req *hstreampb.Stream) (*hstreampb.Stream, error) {
	return unary(ctx, s, "CreateStream", req, s.createStream)
}

func (s *Service) createStream(ctx context.Context, req *hstreampb.Stream) (*hstreampb.Stream, error) {
	name := req.GetStreamName()
	if err := checkStreamName(name); err != nil {
		return nil, err
	}
	if req.GetShardCount() == 0 {
		return nil, errorf(errInvalidShardCount, "stream %q: shardCount must be at least 1, got 0", name)
	}
	rf := req.GetReplicationFactor()
	if rf == 0 {
		rf = s.opts.Defaults.ReplicationFactor
	}
	m, _, err := s.node.CreateStream(ctx, cluster.StreamMeta{
		Name:              name,
		ReplicationFactor: rf,
		BacklogSeconds:    req.GetBacklogDuration(),
		ShardCount:        req.GetShardCount(),
	})
	switch {
	case errors.Is(err, cluster.ErrStreamExists):
		return nil, errorf(err, "stream %q already exists", name)
	case errors.Is(err, cluster.ErrTooFewNodes):
		return nil, errorf(err, "stream %q: replicationFactor %d cannot be met: %s", name, rf, reason(err))
	case err != nil:
		return nil, err
	}
	return streamPB(m), nil
}

// DeleteStream removes a stream with its shards and readers. A stream with
// subscriptions needs force, which deletes them too.
func (s *Service) DeleteStream(ctx context.Context, req *hstreampb.DeleteStreamRequest) (*emptypb.Empty, error) {
	return unary(ctx, s, "DeleteStream", req, s.deleteStream)
}

func (s *Service) deleteStream(ctx context.Context, req *hstreampb.DeleteStreamRequest) (*emptypb.Empty, error) {
	err := s.subs.DeleteStream(ctx, req.GetStreamName(), req.GetForce())
	if errors.Is(err, cluster.ErrStreamNotFound) {
		if req.GetIgnoreNonExist() {
			return &emptypb.Empty{}, nil
		}
		return nil, streamNotFound(req.GetStreamName())
	}
	if errors.Is(err, cluster.ErrStreamHasSubscriptions) {
		return nil, errorf(err, "%s", reason(err))
	}
	if err != nil {
		return nil, err
	}
	return &emptypb.Empty{}, nil
}

// GetStream returns one stream.
func (s *Service) GetStream(ctx context.Context, req *hstreampb.GetStreamRequest) (*hstreampb.GetStreamResponse, error) {
	return unary(ctx, s, "GetStream", req, s.getStream)
}

func (s *Service) getStream(_ context.Context, req *hstreampb.GetStreamRequest) (*hstreampb.GetStreamResponse, error) {
	m, err := s.stream(req.GetName())
	if err != nil {
		return nil, err
	}
	return &hstreampb.GetStreamResponse{Stream: streamPB(m)}, nil
}

// ListStreams lists every stream, by name.
func (s *Service) ListStreams(_ context.Context, _ *hstreampb.ListStreamsRequest) (*hstreampb.ListStreamsResponse, error) {
	return s.listStreams(""), nil
}

// ListStreamsWithPrefix lists the streams whose name starts with prefix.
func (s *Service) ListStreamsWithPrefix(_ context.Context, req *hstreampb.ListStreamsWithPrefixRequest) (*hstreampb.ListStreamsResponse, error) {
	return s.listStreams(req.GetPrefix()), nil
}

func (s *Service) listStreams(prefix string) *hstreampb.ListStreamsResponse {
	ms := s.node.Streams(prefix)
	resp := &hstreampb.ListStreamsResponse{Streams: make([]*hstreampb.Stream, 0, len(ms))}
	for _, m := range ms {
		resp.Streams = append(resp.Streams, streamPB(m))
	}
	return resp
}

// ListShards lists a stream's shards in hash-range order.
func (s *Service) ListShards(ctx context.Context, req *hstreampb.ListShardsRequest) (*hstreampb.ListShardsResponse, error) {
	return unary(ctx, s, "ListShards", req, s.listShards)
}

func (s *Service) listShards(_ context.Context, req *hstreampb.ListShardsRequest) (*hstreampb.ListShardsResponse, error) {
	ms, err := s.streamShards(req.GetStreamName())
	if err != nil {
		return nil, err
	}
	resp := &hstreampb.ListShardsResponse{Shards: make([]*hstreampb.Shard, 0, len(ms))}
	for _, m := range ms {
		resp.Shards = append(resp.Shards, &hstreampb.Shard{
			StreamName:        m.Stream,
			ShardId:           m.ID,
			StartHashRangeKey: m.Start,
			EndHashRangeKey:   m.End,
			Epoch:             m.Epoch,
			IsActive:          true,
		})
	}
	return resp, nil
}

// stream returns a stream's metadata, or a NotFound naming it.
func (s *Service) stream(name string) (cluster.StreamMeta, error) {
	m, err := s.node.Stream(name)
	if errors.Is(err, cluster.ErrStreamNotFound) {
		return m, streamNotFound(name)
	}
	return m, err
}

// streamShards returns a stream's shards in hash-range order, or a NotFound
// naming the stream.
func (s *Service) streamShards(name string) ([]cluster.ShardMeta, error) {
	ms, err := s.node.StreamShards(name)
	if errors.Is(err, cluster.ErrStreamNotFound) {
		return nil, streamNotFound(name)
	}
	return ms, err
}

// shardOf returns the shard id of stream, checking that the stream exists
// and the shard belongs to it.
func (s *Service) shardOf(stream string, id uint64) (cluster.ShardLog, error) {
	m, err := s.stream(stream)
	if err != nil {
		return nil, err
	}
	if !slices.Contains(m.ShardIDs, id) {
		return nil, errorf(cluster.ErrShardNotFound, "shard %d not found in stream %q", id, stream)
	}
	return s.shard(id)
}

// shard returns the local replica of shard id, or a NotFound naming it.
func (s *Service) shard(id uint64) (cluster.ShardLog, error) {
	sh, err := s.node.Shard(id)
	if errors.Is(err, cluster.ErrShardNotFound) {
		return nil, errorf(err, "shard %d not found", id)
	}
	return sh, err
}

func streamNotFound(name string) error {
	return errorf(cluster.ErrStreamNotFound, "stream %q not found", name)
}

func streamPB(m cluster.StreamMeta) *hstreampb.Stream {
	return &hstreampb.Stream{
		StreamName:        m.Name,
		ReplicationFactor: m.ReplicationFactor,
		BacklogDuration:   m.BacklogSeconds,
		ShardCount:        m.ShardCount,
		CreationTime:      timestamppb.New(m.CreatedAt),
	}
}
