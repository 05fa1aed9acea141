package subscription

import (
	"fmt"
	"sync/atomic"
	"time"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/weir-log/weir/api/hstreampb"
	"github.com/weir-log/weir/api/wire"
	"github.com/weir-log/weir/cluster"
)

// batchSizeField is BatchedRecord.batchSize's field number.
const batchSizeField = 3

// batchSize reads the batchSize of a marshaled BatchedRecord without
// unmarshaling (and copying) its payload: the owner needs only the count.
func batchSize(b []byte) (int, error) {
	n := 0
	for len(b) > 0 {
		num, typ, l := protowire.ConsumeTag(b)
		if l < 0 {
			return 0, protowire.ParseError(l)
		}
		b = b[l:]
		if num == batchSizeField && typ == protowire.VarintType {
			v, l := protowire.ConsumeVarint(b)
			if l < 0 {
				return 0, protowire.ParseError(l)
			}
			n, b = int(uint32(v)), b[l:]
			continue
		}
		l = protowire.ConsumeFieldValue(num, typ, b)
		if l < 0 {
			return 0, protowire.ParseError(l)
		}
		b = b[l:]
	}
	if n == 0 {
		return 0, fmt.Errorf("batchSize is 0")
	}
	return n, nil
}

// delivery is one batch handed to a consumer: a committed entry and, for a
// redelivery of a partly acknowledged batch, the positions still unacked.
type delivery struct {
	shard      uint64
	index      uint64
	appendTime time.Time
	batch      []byte       // marshaled BatchedRecord, as stored
	keep       []uint32     // positions to send, in order; nil = all
	takenAt    atomic.Int64 // when Next took it for sending (unix ns); 0: still queued
}

// received builds what the consumer is sent: the batch with its publishTime
// set to the append time and one id per record; for a partial redelivery, a
// smaller batch of only the kept records (same compression) with matching
// ids.
func (d *delivery) received() (*hstreampb.ReceivedRecord, error) {
	b := &hstreampb.BatchedRecord{}
	if err := proto.Unmarshal(d.batch, b); err != nil {
		return nil, fmt.Errorf("%w: shard %d index %d does not hold a BatchedRecord: %v", cluster.ErrCorruptEntry, d.shard, d.index, err)
	}
	publish := timestamppb.New(time.UnixMilli(d.appendTime.UnixMilli()))
	if d.keep == nil {
		b.PublishTime = publish
		ids := make([]*hstreampb.RecordId, b.GetBatchSize())
		for i := range ids {
			ids[i] = &hstreampb.RecordId{ShardId: d.shard, BatchId: d.index, BatchIndex: uint32(i)}
		}
		return &hstreampb.ReceivedRecord{RecordIds: ids, Record: b}, nil
	}
	recs, err := wire.DecodeBatch(b, 0)
	if err != nil {
		return nil, fmt.Errorf("%w: shard %d index %d: %v", cluster.ErrCorruptEntry, d.shard, d.index, err)
	}
	kept := make([]*hstreampb.HStreamRecord, 0, len(d.keep))
	ids := make([]*hstreampb.RecordId, 0, len(d.keep))
	for _, i := range d.keep {
		if int(i) >= len(recs) {
			return nil, fmt.Errorf("%w: shard %d index %d holds %d records, not %d", cluster.ErrCorruptEntry, d.shard, d.index, len(recs), i+1)
		}
		kept = append(kept, recs[i])
		ids = append(ids, &hstreampb.RecordId{ShardId: d.shard, BatchId: d.index, BatchIndex: i})
	}
	out, err := wire.EncodeBatch(kept, b.GetCompressionType())
	if err != nil {
		return nil, fmt.Errorf("subscription: re-encoding shard %d index %d for redelivery: %w", d.shard, d.index, err)
	}
	out.PublishTime = publish
	return &hstreampb.ReceivedRecord{RecordIds: ids, Record: out}, nil
}
