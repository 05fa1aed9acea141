package cluster

import "time"

// NodeInfo is one weir node as registered in etcd under its lease.
type NodeInfo struct {
	ID       uint64 `json:"id"`
	GRPCAddr string `json:"grpcAddr"` // advertised host:port clients dial
	MQTTAddr string `json:"mqttAddr,omitempty"`
	HTTPAddr string `json:"httpAddr,omitempty"`
	// Weight is the node's share of placement relative to the others
	// (default 1): a node of weight 2 gets about twice the replicas.
	Weight    float64   `json:"weight,omitempty"`
	Version   string    `json:"version"`
	StartedAt time.Time `json:"startedAt"`
}

// StreamMeta is a stream's metadata, stored in etcd.
type StreamMeta struct {
	Name              string    `json:"name"`
	ReplicationFactor uint32    `json:"replicationFactor"`
	BacklogSeconds    uint32    `json:"backlogSeconds"` // 0 keeps records forever
	ShardCount        uint32    `json:"shardCount"`
	CreatedAt         time.Time `json:"createdAt"`
	ShardIDs          []uint64  `json:"shardIds"` // in hash-range order
}

// ShardMeta is one shard of a stream: a hash range of partition keys and the
// raft group that stores it.
type ShardMeta struct {
	ID       uint64   `json:"id"`
	Stream   string   `json:"stream"`
	Start    string   `json:"start"` // decimal uint128, inclusive
	End      string   `json:"end"`   // decimal uint128, inclusive
	Epoch    uint64   `json:"epoch"`
	Replicas []uint64 `json:"replicas"` // node ids; the first is the preferred leader
	// Initial is the replica set the shard was created with. Only those
	// replicas bootstrap its raft group (identically, from the same
	// configuration); a replica added later starts empty and is caught
	// up by the leader. Empty in catalogs written before it existed,
	// where it means Replicas.
	Initial []uint64 `json:"initial,omitempty"`
}

// ReaderMeta is a server-side shard reader (CreateShardReader): where it reads
// and how far it got. Next is persisted as reads advance, so a reader survives
// restarts.
type ReaderMeta struct {
	ID        string    `json:"id"`
	Stream    string    `json:"stream"`
	ShardID   uint64    `json:"shardId"`
	Next      uint64    `json:"next"`      // the next log index to read
	TimeoutMs uint32    `json:"timeoutMs"` // how long a ReadShard may wait for data
	CreatedAt time.Time `json:"createdAt"`
}

// Entry is one committed data entry of a shard's log: a BatchedRecord as the
// producer sent it, with the time the leader appended it.
type Entry struct {
	Index      uint64    // raft index: the batchId of the records inside
	AppendTime time.Time // ms precision
	Batch      []byte    // a marshaled hstreampb.BatchedRecord
}

// Where a subscription starts reading its shards, as CreateSubscription asked.
const (
	OffsetEarliest = "earliest" // every shard's first stored record
	OffsetLatest   = "latest"   // only records appended after creation
)

// SubscriptionMeta is a subscription (a consumer group) on a stream, stored
// in etcd. Its start offset is resolved per shard when it is created, so
// LATEST means "after creation", not "after a consumer connects".
type SubscriptionMeta struct {
	ID                string    `json:"id"`
	Stream            string    `json:"stream"`
	AckTimeoutSeconds int32     `json:"ackTimeoutSeconds"` // redeliver what is unacked this long
	MaxUnackedRecords int32     `json:"maxUnackedRecords"` // records delivered and not yet acked, at most
	Offset            string    `json:"offset"`            // OffsetEarliest or OffsetLatest, as asked
	CreatedAt         time.Time `json:"createdAt"`
	// Start is the first log index to deliver, per shard id, resolved at
	// creation. A shard missing here (added later) starts at its first
	// stored entry.
	Start map[uint64]uint64 `json:"start"`
}

// Checkpoint is a subscription's persisted progress: per shard id, the
// lowest log index not yet acknowledged in full. Everything below it was
// acknowledged and is never delivered again after a restart.
type Checkpoint struct {
	Next    map[uint64]uint64 `json:"next"`
	SavedAt time.Time         `json:"savedAt"`
}
