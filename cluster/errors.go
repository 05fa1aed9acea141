package cluster

import (
	"errors"
	"fmt"
)

// Sentinel errors. The API layer maps them to gRPC and HStreamDB codes in one
// table (api/errors.go); wrap them with %w to add detail.
var (
	ErrClosed          = errors.New("cluster: node is closed")
	ErrStreamNotFound  = errors.New("cluster: stream not found")
	ErrStreamExists    = errors.New("cluster: stream already exists")
	ErrShardNotFound   = errors.New("cluster: shard not found")
	ErrReaderNotFound  = errors.New("cluster: shard reader not found")
	ErrReaderExists    = errors.New("cluster: shard reader already exists")
	ErrTooFewNodes     = errors.New("cluster: replication factor exceeds the nodes in the cluster")
	ErrOffsetBeyondEnd = errors.New("cluster: offset is beyond the shard's tail")
	ErrCorruptEntry    = errors.New("cluster: corrupt log entry")
	ErrNoLeader        = errors.New("cluster: shard has no leader")
	// ErrNodeUnavailable: a node this one needs to reach (to forward an
	// append or a read) is not a live member or does not answer.
	ErrNodeUnavailable = errors.New("cluster: node unavailable")
	// ErrMetadataUnavailable: etcd, which holds the metadata, cannot be
	// reached; appends and reads of existing shards go on without it.
	ErrMetadataUnavailable = errors.New("cluster: metadata store (etcd) unavailable")
)

// Subscription errors.
var (
	ErrSubscriptionNotFound   = errors.New("cluster: subscription not found")
	ErrSubscriptionExists     = errors.New("cluster: subscription already exists")
	ErrStreamHasSubscriptions = errors.New("cluster: stream has subscriptions")
	// ErrNotOwner: another node owns the subscription (holds its ownership
	// key), or this node lost it.
	ErrNotOwner = errors.New("cluster: subscription is owned by another node")
)

// CorruptEntryError is a log entry that does not decode, with where it is;
// it unwraps to ErrCorruptEntry (through Err), so readers can skip it.
type CorruptEntryError struct {
	Shard, Index uint64
	Err          error
}

func (e *CorruptEntryError) Error() string {
	return fmt.Sprintf("shard %d index %d: %v", e.Shard, e.Index, e.Err)
}

func (e *CorruptEntryError) Unwrap() error { return e.Err }
