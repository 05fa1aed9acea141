package api

import (
	"context"
	"maps"
	"slices"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/emptypb"

	"github.com/weir-log/weir/api/hstreampb"
	"github.com/weir-log/weir/api/wire"
	"github.com/weir-log/weir/cluster"
)

// Trims drop a prefix of a shard's log: every entry with index <= a trim
// point, resolved here from the request's offset. A trim point of 0 trims
// nothing.

// TrimStream trims every shard of a stream up to and including the point:
// EARLIEST trims nothing, LATEST everything committed, a timestamp the
// entries appended before it.
func (s *Service) TrimStream(ctx context.Context, req *hstreampb.TrimStreamRequest) (*emptypb.Empty, error) {
	return unary(ctx, s, "TrimStream", req, s.trimStream)
}

func (s *Service) trimStream(ctx context.Context, req *hstreampb.TrimStreamRequest) (*emptypb.Empty, error) {
	ms, err := s.streamShards(req.GetStreamName())
	if err != nil {
		return nil, err
	}
	for _, m := range ms {
		sh, err := s.shard(m.ID)
		if err != nil {
			return nil, err
		}
		var through uint64
		switch o := req.GetTrimPoint().GetOffset().(type) {
		case nil:
		case *hstreampb.StreamOffset_SpecialOffset:
			through, err = specialTrimPoint(sh, o.SpecialOffset)
		case *hstreampb.StreamOffset_TimestampOffset:
			through, err = timeTrimPoint(sh, o.TimestampOffset)
		default:
			err = errorf(errInvalidOffset, "stream %q: unknown kind of trim point %T", req.GetStreamName(), o)
		}
		if err != nil {
			return nil, err
		}
		if err := trim(ctx, sh, through); err != nil {
			return nil, err
		}
	}
	return &emptypb.Empty{}, nil
}

// TrimShard trims one shard up to and including the point; a record id
// trims through its whole batch.
func (s *Service) TrimShard(ctx context.Context, req *hstreampb.TrimShardRequest) (*emptypb.Empty, error) {
	return unary(ctx, s, "TrimShard", req, s.trimShard)
}

func (s *Service) trimShard(ctx context.Context, req *hstreampb.TrimShardRequest) (*emptypb.Empty, error) {
	sh, err := s.shardOf(req.GetStreamName(), req.GetShardId())
	if err != nil {
		return nil, err
	}
	var through uint64
	switch o := req.GetTrimPoint().GetOffset().(type) {
	case nil:
	case *hstreampb.ShardOffset_SpecialOffset:
		through, err = specialTrimPoint(sh, o.SpecialOffset)
	case *hstreampb.ShardOffset_RecordOffset:
		through, err = recordIndex(sh, req.GetShardId(), o.RecordOffset)
	case *hstreampb.ShardOffset_TimestampOffset:
		through, err = timeTrimPoint(sh, o.TimestampOffset)
	default:
		err = errorf(errInvalidOffset, "shard %d: unknown kind of trim point %T", req.GetShardId(), o)
	}
	if err != nil {
		return nil, err
	}
	return &emptypb.Empty{}, trim(ctx, sh, through)
}

// TrimShards trims, per shard, everything before the batch of the smallest
// record id given for it, as HStreamDB does: every id is parsed first, ids
// with batchId 0 ("earliest") are ignored, and the ids used are returned.
func (s *Service) TrimShards(ctx context.Context, req *hstreampb.TrimShardsRequest) (*hstreampb.TrimShardsResponse, error) {
	return unary(ctx, s, "TrimShards", req, s.trimShards)
}

func (s *Service) trimShards(ctx context.Context, req *hstreampb.TrimShardsRequest) (*hstreampb.TrimShardsResponse, error) {
	name := req.GetStreamName()
	m, err := s.stream(name)
	if err != nil {
		return nil, err
	}
	points := make(map[uint64]*hstreampb.RecordId)
	for _, text := range req.GetRecordIds() {
		rid, err := wire.ParseRecordID(text)
		if err != nil {
			return nil, errorf(errInvalidRecordID, "stream %q: %s", name, reason(err))
		}
		if rid.GetBatchId() == 0 {
			continue
		}
		if cur, ok := points[rid.GetShardId()]; !ok || wire.CompareRecordID(rid, cur) < 0 {
			points[rid.GetShardId()] = rid
		}
	}
	// Check every point before trimming anything.
	shardIDs := slices.Sorted(maps.Keys(points))
	shards := make([]cluster.ShardLog, len(shardIDs))
	for i, id := range shardIDs {
		rid := points[id]
		if !slices.Contains(m.ShardIDs, id) {
			return nil, errorf(cluster.ErrShardNotFound, "record id %s: shard %d not found in stream %q", wire.FormatRecordID(rid), id, name)
		}
		if shards[i], err = s.shard(id); err != nil {
			return nil, err
		}
		if c, _ := shards[i].Committed(); rid.GetBatchId() > c {
			return nil, errorf(errInvalidRecordID, "record id %s is beyond the tail of shard %d (last committed index %d)",
				wire.FormatRecordID(rid), id, c)
		}
	}
	resp := &hstreampb.TrimShardsResponse{TrimPoints: make(map[uint64]string, len(points))}
	for i, id := range shardIDs {
		if err := trim(ctx, shards[i], points[id].GetBatchId()-1); err != nil {
			return nil, err
		}
		resp.TrimPoints[id] = wire.FormatRecordID(points[id])
	}
	return resp, nil
}

// GetTailRecordId returns the id of the last record of a shard, or
// {shard, 0, 0} if the shard holds none.
func (s *Service) GetTailRecordId(ctx context.Context, req *hstreampb.GetTailRecordIdRequest) (*hstreampb.GetTailRecordIdResponse, error) {
	return unary(ctx, s, "GetTailRecordId", req, s.getTailRecordID)
}

func (s *Service) getTailRecordID(_ context.Context, req *hstreampb.GetTailRecordIdRequest) (*hstreampb.GetTailRecordIdResponse, error) {
	id := req.GetShardId()
	sh, err := s.shardOf(req.GetStreamName(), id)
	if err != nil {
		return nil, err
	}
	tail := &hstreampb.RecordId{ShardId: id}
	e, ok, err := sh.LastData()
	if err != nil {
		return nil, err
	}
	if ok {
		var b hstreampb.BatchedRecord
		if err := proto.Unmarshal(e.Batch, &b); err != nil {
			return nil, errorf(cluster.ErrCorruptEntry, "shard %d index %d does not hold a BatchedRecord: %v", id, e.Index, err)
		}
		tail.BatchId = e.Index
		if n := b.GetBatchSize(); n > 0 {
			tail.BatchIndex = n - 1
		}
	}
	return &hstreampb.GetTailRecordIdResponse{TailRecordId: tail}, nil
}

// specialTrimPoint: EARLIEST trims nothing, LATEST everything committed.
func specialTrimPoint(sh cluster.ShardLog, o hstreampb.SpecialOffset) (uint64, error) {
	switch o {
	case hstreampb.SpecialOffset_EARLIEST:
		return 0, nil
	case hstreampb.SpecialOffset_LATEST:
		c, _ := sh.Committed()
		return c, nil
	default:
		return 0, errorf(errInvalidOffset, "shard %d: unknown special trim point %d", sh.Meta().ID, o)
	}
}

// timeTrimPoint trims the entries appended before t.
func timeTrimPoint(sh cluster.ShardLog, t *hstreampb.TimestampOffset) (uint64, error) {
	at, err := sh.IndexAtTime(time.UnixMilli(t.GetTimestampInMs()))
	if err != nil || at == 0 {
		return 0, err
	}
	return at - 1, nil
}

func trim(ctx context.Context, sh cluster.ShardLog, through uint64) error {
	if through == 0 {
		return nil
	}
	return sh.Trim(ctx, through)
}
