package client

import (
	"time"

	"github.com/weir-log/weir/api/hstreampb"
)

// Stream offsets, for ReadStream. A nil *StreamOffset sent as "until" means
// no end.

// Earliest is the first record still retained in every shard.
func Earliest() *hstreampb.StreamOffset {
	return &hstreampb.StreamOffset{Offset: &hstreampb.StreamOffset_SpecialOffset{SpecialOffset: hstreampb.SpecialOffset_EARLIEST}}
}

// Latest is the tail of every shard: as a start, only records appended from
// then on; as an end ("until"), the last record when the read starts.
func Latest() *hstreampb.StreamOffset {
	return &hstreampb.StreamOffset{Offset: &hstreampb.StreamOffset_SpecialOffset{SpecialOffset: hstreampb.SpecialOffset_LATEST}}
}

// AtTime is the first record appended at or after t (millisecond
// precision), found exactly (strictAccuracy) rather than approximately.
func AtTime(t time.Time) *hstreampb.StreamOffset {
	return &hstreampb.StreamOffset{Offset: &hstreampb.StreamOffset_TimestampOffset{TimestampOffset: timestampOffset(t)}}
}

// Shard offsets, for ReadShardStream and shard readers. A nil *ShardOffset
// sent as "until" means no end.

// ShardEarliest is the first record still retained in the shard.
func ShardEarliest() *hstreampb.ShardOffset {
	return &hstreampb.ShardOffset{Offset: &hstreampb.ShardOffset_SpecialOffset{SpecialOffset: hstreampb.SpecialOffset_EARLIEST}}
}

// ShardLatest is the shard's tail: as a start, only records appended from
// then on; as an end ("until"), the last record when the read starts.
func ShardLatest() *hstreampb.ShardOffset {
	return &hstreampb.ShardOffset{Offset: &hstreampb.ShardOffset_SpecialOffset{SpecialOffset: hstreampb.SpecialOffset_LATEST}}
}

// ShardAtRecord is the record id's batch. The server starts at the whole
// batch (it ignores batchIndex); ReadShardStream drops the records before id
// itself, while CreateShardReader readers see the whole batch. id.ShardId
// must be the shard read, else the server answers ConflictOffset (901).
func ShardAtRecord(id *hstreampb.RecordId) *hstreampb.ShardOffset {
	return &hstreampb.ShardOffset{Offset: &hstreampb.ShardOffset_RecordOffset{RecordOffset: id}}
}

// ShardAtTime is the first record of the shard appended at or after t
// (millisecond precision), found exactly rather than approximately.
func ShardAtTime(t time.Time) *hstreampb.ShardOffset {
	return &hstreampb.ShardOffset{Offset: &hstreampb.ShardOffset_TimestampOffset{TimestampOffset: timestampOffset(t)}}
}

func timestampOffset(t time.Time) *hstreampb.TimestampOffset {
	return &hstreampb.TimestampOffset{TimestampInMs: t.UnixMilli(), StrictAccuracy: true}
}
