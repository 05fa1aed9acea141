// Package cluster owns a node's share of weir: its registration in etcd, the
// metadata catalog (streams, shards, shard readers, subscriptions with their
// checkpoints and ownership keys), and the raft group of every shard the node
// hosts. Subscriptions' runtime state is package subscription's; this package
// stores them and guards them against streams being deleted under them (see
// subscriptions.go).
//
// A shard is a raft group (go.etcd.io/raft/v3) whose log is the data: one
// entry holds one BatchedRecord as the producer sent it, behind a small
// header (see entry.go), and a record's id is {shard, raft index, position in
// the batch}. Standalone weir is the same code with one voter per group, so
// there is a single write path.
//
// The path of an append through this package:
//
//	Shard.Append ──► engine.propc (bounded: backpressure)
//	                    │  the loop takes every queued append (group commit)
//	                    ▼
//	             RawNode.Propose, stamped with append time + proposal id
//	                    │
//	                    ▼
//	             Ready of ALL groups ──► one store.Batch, one sync
//	                    │
//	                    ▼
//	             committed entries applied: the proposer wakes with its
//	             index, Shard.Committed advances and readers wake
//
// Reads never go through raft: Shard.Read scans committed entries straight
// from the store. Retention and trims are log compaction (a range delete),
// decided through raft: a trim is an entry of the log (entry.go) that every
// replica applies alike, and retention is the leader proposing one.
//
// # Across nodes
//
// A stream's replicationFactor R puts each shard's group on R nodes, chosen
// by placement.go (consistent hashing with bounded loads, weighted; the first
// replica is the preferred leader). Only the shard's initial replicas
// bootstrap the group, each from the same configuration; the preferred
// leader campaigns at once. The loop sends each round's raft messages after
// the round's sync through transport.go, which batches them per peer over
// the peer service's Raft stream (api/proto/peer.proto, served on the gRPC
// port by peer_server.go). A follower's appends are forwarded to the leader
// by raft itself; the leader restamps their append time so stamps stay
// monotonic, and the follower's waiter wakes when it applies the entry. A
// node that hosts no replica reaches one through remote.go (a ShardLog over
// the peer service: an Appends stream per shard that keeps a producer's
// order, and reads, state and long-polls of the committed index).
//
// Membership (members.go): each node registers under its lease at nodes/<id>
// and, for good, at members/<id>; one watch keeps every node's view of the
// members, whose states are Starting, Running, Unavailable (lease gone) and
// Dead (unavailable for longer than Options.DeadAfter). One watch of the
// catalog (watch.go) keeps its cache in step with every node's writes and
// calls shardChanged, which opens a replica placed here and removes those
// of a deleted stream; dropMovedReplicas deletes a replica moved away once
// its group no longer counts it. Groups open and close only on the engine
// loop, and whoever opens or removes one (the watch, CreateStream,
// DeleteStream, dropMovedReplicas) decides there, against the cache,
// whether it still must: a check made before reaching the loop may be stale
// by then. On each group's leader, replicas.go re-places a
// Dead node's replicas in the catalog, then walks raft's configuration to
// the catalog's replica set one change at a time (learner, promotion once
// caught up, then removal of the dead node), and hands leadership back to
// the preferred leader once it is live and caught up.
//
// The data path needs no etcd: appends, reads and raft run from the cache
// while etcd is away. Metadata operations wait at most
// Options.MetadataTimeout and fail with ErrMetadataUnavailable; the node's
// lease is taken up again (or a new one granted) when etcd is back.
//
// Metadata lives in etcd (catalog.go lists the keys); the node caches it for
// the append and read paths. A node registers under a lease at nodes/<id>
// and keeps the lease id in its data directory, so a node restarted after a
// crash can take its registration back at once, while a second live node
// with the same id is refused.
//
// # Metrics and readiness
//
// Every append reaches a shard through Shard.Propose, whichever door it came
// in by (gRPC, the MQTT ingest hook, the ingest connectors), so this package
// counts them, per stream: records, bytes and the latency from Propose to
// commit (weir_stream_append_*; a deleted stream's series are dropped). The
// loop counts proposals, refusals, leader changes and raft commit latency
// (weir_raft_*); metrics.go has the list. Node.Ready says whether the node
// serves its shards: started, store healthy, and no shard placed here
// unopened or without a leader for longer than an append waits for one.
//
// Lock order: Node.readyMu (Ready's own state), then catalog.mu or
// engine.mu; engine.mu, then Shard.mu;
// catalog.mu is never held while calling out.
package cluster
