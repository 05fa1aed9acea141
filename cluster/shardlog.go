package cluster

import (
	"context"
	"time"
)

// ShardLog is a shard as the append and read paths see it, wherever its
// replicas are: Node.Shard returns this node's replica (*Shard) when it hosts
// the shard, and otherwise a remote handle that reaches a node hosting it
// through the peer service (remote.go). Its methods are safe for concurrent
// use.
type ShardLog interface {
	// Meta is the shard's metadata.
	Meta() ShardMeta
	// Append proposes one marshaled BatchedRecord and returns once it is
	// committed, with its log index and append time.
	Append(ctx context.Context, batch []byte) (uint64, time.Time, error)
	// Propose queues one marshaled BatchedRecord and returns without
	// waiting for its commit; batches proposed one after another keep
	// their order.
	Propose(ctx context.Context, batch []byte) (*Pending, error)
	// Read returns committed data entries from index from on, without
	// blocking (see Shard.Read).
	Read(from uint64, maxEntries, maxBytes int) ([]Entry, error)
	// First is the lowest log index still stored.
	First() uint64
	// Committed is the highest committed index, with a channel closed when
	// it grows (or the shard is removed).
	Committed() (uint64, <-chan struct{})
	// LastData is the newest committed data entry, if any.
	LastData() (Entry, bool, error)
	// IndexAtTime is the first committed data entry appended at or after
	// t, or Committed()+1.
	IndexAtTime(t time.Time) (uint64, error)
	// Trim drops every entry with index <= through.
	Trim(ctx context.Context, through uint64) error
	// Removed reports whether the shard was deleted, or no longer reachable
	// through this handle (Node.Shard gives a fresh one).
	Removed() bool
}

var _ ShardLog = (*Shard)(nil)
