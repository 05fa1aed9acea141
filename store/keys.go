package store

import (
	"encoding/binary"
	"fmt"

	"google.golang.org/protobuf/encoding/protowire"
)

// Key layout: see doc.go for the picture and the reasons.

const (
	shardPrefix byte = 's'

	kindConfState byte = 'c'
	kindEntry     byte = 'e'
	kindHardState byte = 'h'
	kindTruncated byte = 't'

	// kindEnd sorts after every kind byte: 's' | shard | kindEnd bounds the
	// shard's key range, even for the largest shard id.
	kindEnd byte = 0xff

	shardKeyLen = 1 + 8 + 1       // 's' | shard | kind
	entryKeyLen = shardKeyLen + 8 // ... | index

	truncatedLen = 16 // index u64 | term u64
)

// shardKey returns 's' | shard | kind, the key of a per-shard state record
// (kindHardState, kindConfState, kindTruncated) or, with kindEntry or
// kindEnd, a bound of the shard's entries or of the whole shard.
func shardKey(shard uint64, kind byte) []byte {
	k := make([]byte, shardKeyLen)
	k[0] = shardPrefix
	binary.BigEndian.PutUint64(k[1:9], shard)
	k[9] = kind
	return k
}

// entryKey returns 's' | shard | 'e' | index.
func entryKey(shard, index uint64) []byte {
	return appendEntryKey(make([]byte, 0, entryKeyLen), shard, index)
}

func appendEntryKey(dst []byte, shard, index uint64) []byte {
	dst = append(dst, shardPrefix)
	dst = binary.BigEndian.AppendUint64(dst, shard)
	dst = append(dst, kindEntry)
	return binary.BigEndian.AppendUint64(dst, index)
}

// entriesEnd is the exclusive upper bound of every entry key of shard.
func entriesEnd(shard uint64) []byte { return shardKey(shard, kindEntry+1) }

// shardStart and shardEnd bound every key of shard.
func shardStart(shard uint64) []byte {
	k := shardKey(shard, 0)
	return k[:9]
}

func shardEnd(shard uint64) []byte { return shardKey(shard, kindEnd) }

// decodeEntryKey returns the shard and index of an entry key.
func decodeEntryKey(k []byte) (shard, index uint64, ok bool) {
	if len(k) != entryKeyLen || k[0] != shardPrefix || k[9] != kindEntry {
		return 0, 0, false
	}
	return binary.BigEndian.Uint64(k[1:9]), binary.BigEndian.Uint64(k[10:]), true
}

// decodeShard returns the shard id of any per-shard key.
func decodeShard(k []byte) (uint64, bool) {
	if len(k) < shardKeyLen || k[0] != shardPrefix {
		return 0, false
	}
	return binary.BigEndian.Uint64(k[1:9]), true
}

// truncState is the truncated state of a shard's log: the index and term of
// the last entry dropped by compaction or covered by an applied snapshot.
// The log's first index is index+1.
type truncState struct {
	index, term uint64
}

func (t truncState) encode() []byte {
	b := make([]byte, truncatedLen)
	binary.BigEndian.PutUint64(b[:8], t.index)
	binary.BigEndian.PutUint64(b[8:], t.term)
	return b
}

func decodeTruncState(b []byte) (truncState, error) {
	if len(b) != truncatedLen {
		return truncState{}, fmt.Errorf("truncated state is %d bytes, want %d", len(b), truncatedLen)
	}
	return truncState{
		index: binary.BigEndian.Uint64(b[:8]),
		term:  binary.BigEndian.Uint64(b[8:]),
	}, nil
}

// Field numbers of raftpb.Entry (raft.proto): Term = 2, Index = 3.
const (
	entryTermField  protowire.Number = 2
	entryIndexField protowire.Number = 3
)

// entryTermIndex reads the Term and Index fields of a marshaled raftpb.Entry
// without unmarshaling its data: Term() on a stored entry pays for a varint
// scan, not for copying the payload.
func entryTermIndex(b []byte) (term, index uint64, err error) {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return 0, 0, protowire.ParseError(n)
		}
		b = b[n:]
		if (num == entryTermField || num == entryIndexField) && typ == protowire.VarintType {
			v, n := protowire.ConsumeVarint(b)
			if n < 0 {
				return 0, 0, protowire.ParseError(n)
			}
			if num == entryTermField {
				term = v
			} else {
				index = v
			}
			b = b[n:]
			continue
		}
		n = protowire.ConsumeFieldValue(num, typ, b)
		if n < 0 {
			return 0, 0, protowire.ParseError(n)
		}
		b = b[n:]
	}
	return term, index, nil
}
