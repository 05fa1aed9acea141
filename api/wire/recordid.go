package wire

import (
	"cmp"
	"fmt"
	"strconv"
	"strings"

	"github.com/weir-log/weir/api/hstreampb"
)

// FormatRecordID returns the text form "<shardId>-<batchId>-<batchIndex>"
// used by clients and TrimShards. A nil id formats as "0-0-0".
func FormatRecordID(id *hstreampb.RecordId) string {
	b := make([]byte, 0, 48)
	b = strconv.AppendUint(b, id.GetShardId(), 10)
	b = append(b, '-')
	b = strconv.AppendUint(b, id.GetBatchId(), 10)
	b = append(b, '-')
	b = strconv.AppendUint(b, uint64(id.GetBatchIndex()), 10)
	return string(b)
}

// ParseRecordID parses "<shardId>-<batchId>-<batchIndex>": exactly three
// non-empty runs of ASCII digits (no sign, no spaces) that fit uint64,
// uint64 and uint32. Leading zeros are accepted, as HStreamDB's parser
// accepts them. Errors wrap ErrInvalidRecordID and quote the text.
func ParseRecordID(s string) (*hstreampb.RecordId, error) {
	shard, rest, ok1 := strings.Cut(s, "-")
	batch, index, ok2 := strings.Cut(rest, "-")
	if !ok1 || !ok2 || strings.Contains(index, "-") {
		return nil, fmt.Errorf("%w %q: want <shardId>-<batchId>-<batchIndex>", ErrInvalidRecordID, s)
	}
	shardID, err := parseDecimal(s, "shardId", shard, 64)
	if err != nil {
		return nil, err
	}
	batchID, err := parseDecimal(s, "batchId", batch, 64)
	if err != nil {
		return nil, err
	}
	batchIndex, err := parseDecimal(s, "batchIndex", index, 32)
	if err != nil {
		return nil, err
	}
	return &hstreampb.RecordId{ShardId: shardID, BatchId: batchID, BatchIndex: uint32(batchIndex)}, nil
}

func parseDecimal(whole, field, part string, bits int) (uint64, error) {
	if part == "" {
		return 0, fmt.Errorf("%w %q: %s is empty", ErrInvalidRecordID, whole, field)
	}
	// strconv.ParseUint with base 10 already refuses signs and underscores;
	// it is the digit check that makes the refusal explicit.
	for i := 0; i < len(part); i++ {
		if part[i] < '0' || part[i] > '9' {
			return 0, fmt.Errorf("%w %q: %s %q is not unsigned decimal", ErrInvalidRecordID, whole, field, part)
		}
	}
	v, err := strconv.ParseUint(part, 10, bits)
	if err != nil {
		return 0, fmt.Errorf("%w %q: %s %q overflows uint%d", ErrInvalidRecordID, whole, field, part, bits)
	}
	return v, nil
}

// CompareRecordID orders record ids by (shardId, batchId, batchIndex) and
// returns -1, 0 or +1. A nil id compares as 0-0-0.
func CompareRecordID(a, b *hstreampb.RecordId) int {
	return cmp.Or(
		cmp.Compare(a.GetShardId(), b.GetShardId()),
		cmp.Compare(a.GetBatchId(), b.GetBatchId()),
		cmp.Compare(a.GetBatchIndex(), b.GetBatchIndex()),
	)
}
