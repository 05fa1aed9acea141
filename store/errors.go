package store

import (
	"errors"
	"fmt"
)

// Sentinel errors. Wrapped with %w for detail; test with errors.Is.
//
// The raft.Storage methods of Log also return raft's own sentinels
// (raft.ErrCompacted, raft.ErrUnavailable, raft.ErrSnapOutOfDate) unwrapped,
// because raft compares them with ==.
var (
	// ErrClosed is returned by every call on a DB (and its Logs and Batches)
	// after Close.
	ErrClosed = errors.New("store: closed")

	// ErrShardDeleted is returned by a Log, or by a Batch touching it, once
	// DeleteShard has dropped its shard. Ask DB.Log for the shard's new Log.
	ErrShardDeleted = errors.New("store: shard deleted")

	// ErrCorrupt is the class of errors for stored data that cannot be
	// decoded or breaks an invariant of the layout (a gap in a log, a hard
	// state committing past the last entry). The wrapping error names the
	// shard and the key.
	ErrCorrupt = errors.New("store: corrupt data")
)

// corruptError reports corrupt data at key of shard.
func corruptError(shard uint64, key []byte, format string, args ...any) error {
	return fmt.Errorf("%w: shard %d key %x: %s", ErrCorrupt, shard, key, fmt.Sprintf(format, args...))
}
