package api

import (
	"math"
	"time"

	"github.com/weir-log/weir/api/hstreampb"
	"github.com/weir-log/weir/api/wire"
	"github.com/weir-log/weir/cluster"
)

// Offsets name positions in a shard's log; the api turns them into log
// indexes (= batchIds) here, against the shard's state at the time of the
// call. A start is the first index to read; an end ("until") is the last
// index to read, inclusive, and an absent end means "follow".
//
//	offset             as a start               as an end (inclusive)
//	nil, EARLIEST      First()                  First()  (nil: unbounded)
//	LATEST             Committed()+1            Committed()
//	RecordId{s, b, i}  max(b, First())          b
//	Timestamp t        first entry at/after t   last entry at/before t

// bound is a resolved "until": the last index to read, if bounded.
type bound struct {
	last    uint64
	bounded bool
}

// passed reports whether a reader about to read index next is done.
func (b bound) passed(next uint64) bool { return b.bounded && next > b.last }

// shardStart resolves a ShardOffset used as a read start on shard sh.
func shardStart(sh cluster.ShardLog, off *hstreampb.ShardOffset) (uint64, error) {
	id := sh.Meta().ID
	switch o := off.GetOffset().(type) {
	case nil:
		return sh.First(), nil
	case *hstreampb.ShardOffset_SpecialOffset:
		return specialStart(sh, o.SpecialOffset)
	case *hstreampb.ShardOffset_RecordOffset:
		b, err := recordIndex(sh, id, o.RecordOffset)
		if err != nil {
			return 0, err
		}
		return max(b, sh.First()), nil
	case *hstreampb.ShardOffset_TimestampOffset:
		return sh.IndexAtTime(time.UnixMilli(o.TimestampOffset.GetTimestampInMs()))
	default:
		return 0, errorf(errInvalidOffset, "shard %d: unknown kind of offset %T", id, o)
	}
}

// shardEnd resolves a ShardOffset used as an inclusive read end on shard sh;
// nil (or an empty oneof) is unbounded.
func shardEnd(sh cluster.ShardLog, off *hstreampb.ShardOffset) (bound, error) {
	id := sh.Meta().ID
	switch o := off.GetOffset().(type) {
	case nil:
		return bound{}, nil
	case *hstreampb.ShardOffset_SpecialOffset:
		return specialEnd(sh, o.SpecialOffset)
	case *hstreampb.ShardOffset_RecordOffset:
		b, err := recordIndex(sh, id, o.RecordOffset)
		return bound{last: b, bounded: true}, err
	case *hstreampb.ShardOffset_TimestampOffset:
		return timeEnd(sh, o.TimestampOffset)
	default:
		return bound{}, errorf(errInvalidOffset, "shard %d: unknown kind of offset %T", id, o)
	}
}

// streamStart resolves a StreamOffset used as a read start on one shard.
func streamStart(sh cluster.ShardLog, off *hstreampb.StreamOffset) (uint64, error) {
	switch o := off.GetOffset().(type) {
	case nil:
		return sh.First(), nil
	case *hstreampb.StreamOffset_SpecialOffset:
		return specialStart(sh, o.SpecialOffset)
	case *hstreampb.StreamOffset_TimestampOffset:
		return sh.IndexAtTime(time.UnixMilli(o.TimestampOffset.GetTimestampInMs()))
	default:
		return 0, errorf(errInvalidOffset, "shard %d: unknown kind of stream offset %T", sh.Meta().ID, o)
	}
}

// streamEnd resolves a StreamOffset used as an inclusive read end on one
// shard; nil (or an empty oneof) is unbounded.
func streamEnd(sh cluster.ShardLog, off *hstreampb.StreamOffset) (bound, error) {
	switch o := off.GetOffset().(type) {
	case nil:
		return bound{}, nil
	case *hstreampb.StreamOffset_SpecialOffset:
		return specialEnd(sh, o.SpecialOffset)
	case *hstreampb.StreamOffset_TimestampOffset:
		return timeEnd(sh, o.TimestampOffset)
	default:
		return bound{}, errorf(errInvalidOffset, "shard %d: unknown kind of stream offset %T", sh.Meta().ID, o)
	}
}

func specialStart(sh cluster.ShardLog, o hstreampb.SpecialOffset) (uint64, error) {
	switch o {
	case hstreampb.SpecialOffset_EARLIEST:
		return sh.First(), nil
	case hstreampb.SpecialOffset_LATEST:
		c, _ := sh.Committed()
		return c + 1, nil
	default:
		return 0, errorf(errInvalidOffset, "shard %d: unknown special offset %d", sh.Meta().ID, o)
	}
}

func specialEnd(sh cluster.ShardLog, o hstreampb.SpecialOffset) (bound, error) {
	switch o {
	case hstreampb.SpecialOffset_EARLIEST:
		return bound{last: sh.First(), bounded: true}, nil
	case hstreampb.SpecialOffset_LATEST:
		c, _ := sh.Committed()
		return bound{last: c, bounded: true}, nil
	default:
		return bound{}, errorf(errInvalidOffset, "shard %d: unknown special offset %d", sh.Meta().ID, o)
	}
}

// timeEnd is the last index appended at or before t: one before the first
// entry appended after it.
func timeEnd(sh cluster.ShardLog, t *hstreampb.TimestampOffset) (bound, error) {
	ms := t.GetTimestampInMs()
	if ms == math.MaxInt64 {
		c, _ := sh.Committed()
		return bound{last: c, bounded: true}, nil
	}
	after, err := sh.IndexAtTime(time.UnixMilli(ms + 1))
	if err != nil || after == 0 {
		return bound{last: 0, bounded: true}, err
	}
	return bound{last: after - 1, bounded: true}, nil
}

// recordIndex is the batchId of a record id offset on shard id, checking it
// names this shard and does not lie beyond the next index to be written.
func recordIndex(sh cluster.ShardLog, id uint64, rid *hstreampb.RecordId) (uint64, error) {
	if rid.GetShardId() != id {
		return 0, errorf(errConflictOffset, "offset record id %s belongs to shard %d, not shard %d",
			wire.FormatRecordID(rid), rid.GetShardId(), id)
	}
	c, _ := sh.Committed()
	if rid.GetBatchId() > c+1 {
		return 0, errorf(errInvalidOffset, "offset record id %s is beyond the tail of shard %d (last committed index %d)",
			wire.FormatRecordID(rid), id, c)
	}
	return rid.GetBatchId(), nil
}
