package cluster

import (
	"fmt"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/weir-log/weir/api/hstreampb"
	"github.com/weir-log/weir/api/wire"
)

// Received builds what readers and consumers are sent for the entry: the
// batch as the producer sent it, its publishTime set to the append time
// (millisecond precision), and one id per record. keep, when not nil, picks
// records by position (a redelivery of a partly acknowledged batch): the
// batch is encoded again, with the same compression and only those records,
// and the ids are theirs. A batch that does not decode is ErrCorruptEntry.
func (e Entry) Received(shardID uint64, keep []uint32) (*hstreampb.ReceivedRecord, error) {
	b := &hstreampb.BatchedRecord{}
	if err := proto.Unmarshal(e.Batch, b); err != nil {
		return nil, fmt.Errorf("%w: shard %d index %d does not hold a BatchedRecord: %v", ErrCorruptEntry, shardID, e.Index, err)
	}
	publish := timestamppb.New(time.UnixMilli(e.AppendTime.UnixMilli()))
	if keep == nil {
		b.PublishTime = publish
		ids := make([]*hstreampb.RecordId, b.GetBatchSize())
		for i := range ids {
			ids[i] = &hstreampb.RecordId{ShardId: shardID, BatchId: e.Index, BatchIndex: uint32(i)}
		}
		return &hstreampb.ReceivedRecord{RecordIds: ids, Record: b}, nil
	}
	recs, err := wire.DecodeBatch(b, 0)
	if err != nil {
		return nil, fmt.Errorf("%w: shard %d index %d: %v", ErrCorruptEntry, shardID, e.Index, err)
	}
	kept := make([]*hstreampb.HStreamRecord, 0, len(keep))
	ids := make([]*hstreampb.RecordId, 0, len(keep))
	for _, i := range keep {
		if int(i) >= len(recs) {
			return nil, fmt.Errorf("%w: shard %d index %d holds %d records, not %d", ErrCorruptEntry, shardID, e.Index, len(recs), i+1)
		}
		kept = append(kept, recs[i])
		ids = append(ids, &hstreampb.RecordId{ShardId: shardID, BatchId: e.Index, BatchIndex: i})
	}
	out, err := wire.EncodeBatch(kept, b.GetCompressionType())
	if err != nil {
		return nil, fmt.Errorf("cluster: encoding records %v of shard %d index %d: %w", keep, shardID, e.Index, err)
	}
	out.PublishTime = publish
	return &hstreampb.ReceivedRecord{RecordIds: ids, Record: out}, nil
}
