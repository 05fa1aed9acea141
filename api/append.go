package api

import (
	"context"
	"fmt"

	"google.golang.org/protobuf/proto"

	"github.com/weir-log/weir/api/hstreampb"
	"github.com/weir-log/weir/api/wire"
	"github.com/weir-log/weir/cluster"
)

// Append stores one batch in a shard and returns one id per record once the
// batch is committed.
//
// The batch is checked the way HStreamDB checks it, and then some: it must
// be non-empty, decode (decompress and unmarshal) within MaxBatchSize, hold
// exactly batchSize records, and no record may exceed MaxRecordSize. It is
// stored as the producer sent it (still compressed, publishTime included),
// as one log entry whose index is the records' batchId.
func (s *Service) Append(ctx context.Context, req *hstreampb.AppendRequest) (*hstreampb.AppendResponse, error) {
	return unary(ctx, s, "Append", req, s.append)
}

func (s *Service) append(ctx context.Context, req *hstreampb.AppendRequest) (*hstreampb.AppendResponse, error) {
	name, shardID := req.GetStreamName(), req.GetShardId()
	sh, err := s.shardOf(name, shardID)
	if err != nil {
		return nil, err
	}
	b := req.GetRecords()
	where := fmt.Sprintf("append to stream %q shard %d", name, shardID)
	switch {
	case b == nil:
		return nil, errorf(errEmptyBatch, "%s: the request carries no records", where)
	case b.GetBatchSize() == 0:
		return nil, errorf(errEmptyBatch, "%s: batchSize is 0", where)
	case len(b.GetPayload()) == 0:
		return nil, errorf(errEmptyBatch, "%s: the payload is empty (batchSize %d)", where, b.GetBatchSize())
	case len(b.GetPayload()) > s.opts.MaxBatchSize:
		return nil, errorf(errRecordTooLarge, "%s: the batch payload is %d bytes, over the limit of %d bytes",
			where, len(b.GetPayload()), s.opts.MaxBatchSize)
	}
	records, err := wire.DecodeBatch(b, s.opts.MaxBatchSize)
	if err != nil {
		return nil, errorf(err, "%s: malformed batch (%s, batchSize %d): %s",
			where, b.GetCompressionType(), b.GetBatchSize(), reason(err))
	}
	for i, r := range records {
		if n := len(r.GetPayload()); n > s.opts.MaxRecordSize {
			return nil, errorf(errRecordTooLarge, "%s: record %d of %d (key %q) has a %d-byte payload, over the limit of %d bytes",
				where, i, len(records), r.GetHeader().GetKey(), n, s.opts.MaxRecordSize)
		}
	}
	data, err := proto.Marshal(b)
	if err != nil {
		return nil, fmt.Errorf("%s: marshal BatchedRecord: %w", where, err)
	}
	index, err := s.appendEntry(ctx, sh, data)
	if err != nil {
		return nil, err
	}
	ids := make([]*hstreampb.RecordId, b.GetBatchSize())
	for i := range ids {
		ids[i] = &hstreampb.RecordId{ShardId: shardID, BatchId: index, BatchIndex: uint32(i)}
	}
	return &hstreampb.AppendResponse{StreamName: name, ShardId: shardID, RecordIds: ids}, nil
}

// appendEntry appends one batch and returns its index once the batch is
// committed, durable and readable. (The cluster holds an append while its
// shard elects a leader and fails it with ErrNoLeader, Unavailable to
// clients, which retry, only if none appears in time.)
func (s *Service) appendEntry(ctx context.Context, sh cluster.ShardLog, data []byte) (uint64, error) {
	index, _, err := sh.Append(ctx, data)
	return index, err
}
