package cluster

import "time"

// NodeInfo is one weir node as registered in etcd under its lease.
type NodeInfo struct {
	ID        uint64    `json:"id"`
	GRPCAddr  string    `json:"grpcAddr"` // advertised host:port clients dial
	MQTTAddr  string    `json:"mqttAddr,omitempty"`
	HTTPAddr  string    `json:"httpAddr,omitempty"`
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
