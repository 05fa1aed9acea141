package cluster

import (
	"encoding/binary"
	"fmt"
	"time"
)

// The data of a raft entry that carries records:
//
//	+------+------------------+------------------+-------------------------+
//	| kind | append time (ms) |   proposal id    | BatchedRecord (as sent)  |
//	|  1 B |   8 B, big end.  |   8 B, big end.  |        n bytes          |
//	+------+------------------+------------------+-------------------------+
//
// kind is entryRecords (1), or entryTrim (2) for a trim: its payload is the
// 8-byte big-endian index through which every replica drops its log when it
// applies the entry, so a trim (TrimShard, retention) is the same on all of
// them. The append time is stamped by the leader when it
// proposes the entry and never decreases within a shard, so the entries of a
// shard are sorted by append time as well as by index (retention and
// timestamp offsets binary-search on it). The proposal id lets the proposer's
// waiter be found when the entry is applied. Entries raft writes itself
// (empty entries on election, configuration changes) carry no records and are
// skipped by readers.
const (
	entryRecords     byte = 1
	entryTrim        byte = 2
	entryHeaderBytes      = 1 + 8 + 8
)

// newTrimData is a trim entry through index through, stamped like a record
// entry by the loop.
func newTrimData(through uint64) []byte {
	data := make([]byte, entryHeaderBytes+8)
	data[0] = entryTrim
	binary.BigEndian.PutUint64(data[entryHeaderBytes:], through)
	return data
}

// decodeTrim reads a trim entry: its proposal id and the index it trims
// through; ok is false for any other entry.
func decodeTrim(data []byte) (id, through uint64, ok bool) {
	if len(data) != entryHeaderBytes+8 || data[0] != entryTrim {
		return 0, 0, false
	}
	return binary.BigEndian.Uint64(data[9:17]), binary.BigEndian.Uint64(data[entryHeaderBytes:]), true
}

// newEntryData allocates an entry for batch with the header zeroed but for its
// kind; the loop stamps the time and proposal id in place.
func newEntryData(batch []byte) []byte {
	data := make([]byte, entryHeaderBytes+len(batch))
	data[0] = entryRecords
	copy(data[entryHeaderBytes:], batch)
	return data
}

func stampEntry(data []byte, appendMs int64, id uint64) {
	stampTime(data, appendMs)
	binary.BigEndian.PutUint64(data[9:17], id)
}

// stampTime sets only the append time: a leader restamps what a follower
// proposed.
func stampTime(data []byte, appendMs int64) {
	binary.BigEndian.PutUint64(data[1:9], uint64(appendMs))
}

// decodeEntry splits an entry's data. ok is false for entries that carry no
// records; err is set only for data that claims to carry records but is
// malformed.
func decodeEntry(data []byte) (appendMs int64, id uint64, batch []byte, ok bool, err error) {
	if len(data) == 0 {
		return 0, 0, nil, false, nil
	}
	if _, _, isTrim := decodeTrim(data); isTrim {
		return 0, 0, nil, false, nil
	}
	if data[0] != entryRecords {
		return 0, 0, nil, false, fmt.Errorf("%w: unknown entry kind %d", ErrCorruptEntry, data[0])
	}
	if len(data) < entryHeaderBytes {
		return 0, 0, nil, false, fmt.Errorf("%w: %d bytes, shorter than the %d-byte header", ErrCorruptEntry, len(data), entryHeaderBytes)
	}
	appendMs = int64(binary.BigEndian.Uint64(data[1:9]))
	id = binary.BigEndian.Uint64(data[9:17])
	return appendMs, id, data[entryHeaderBytes:], true, nil
}

func msTime(ms int64) time.Time { return time.UnixMilli(ms) }
