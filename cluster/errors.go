package cluster

import "errors"

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
)
