// Package store keeps one node's shards in pebble: for every shard the node
// hosts, its raft log (which is weir's record log: one entry, one producer
// batch) and its raft state, behind raft's Storage interface, written by
// group commit.
//
// # What it owns
//
//   - DB: the pebble instance of the node (one directory, one WAL, one block
//     cache) and the write counters (Stats, and as Prometheus series
//     weir_store_syncs_total, _commits_total, _bytes_written_total,
//     _trimmed_entries_total and the weir_store_sync_latency_seconds
//     histogram of synced commits).
//   - Log: one shard's raft.Storage. It answers raft (InitialState, Entries,
//     Term, FirstIndex, LastIndex, Snapshot) and readers of committed entries
//     (Entries, Scan), and trims the log (Compact).
//   - Batch: the Ready output of many shards (entries, hard state, conf
//     state, snapshots), committed with one pebble commit and one fsync.
//
// Data flows in through Batch.Commit (and Log.Compact, DB.DeleteShard) and
// out through Log. A Log's in-memory state (first and last index, last term,
// hard state, conf state) changes only after the pebble write that makes it
// true has returned; Log's comment says how readers are kept from seeing a
// half-made change.
//
// # Key layout
//
// Every key belongs to one shard; integers are big-endian and fixed-width,
// so pebble's bytewise order is shard order, then kind, then log index:
//
//	0     1                 9     10                18
//	+-----+-----------------+-----+-----------------+
//	| 's' | shard (u64 BE)  | 'e' | index (u64 BE)  |  -> raftpb.Entry (proto)
//	+-----+-----------------+-----+-----------------+
//	| 's' | shard (u64 BE)  | 'c' |  -> raftpb.ConfState (proto)
//	| 's' | shard (u64 BE)  | 'h' |  -> raftpb.HardState (proto)
//	| 's' | shard (u64 BE)  | 't' |  -> truncated state:
//	+-----+-----------------+-----+       index u64 BE | term u64 BE
//
// Sorted, one shard's keys read:
//
//	s|7|c   s|7|e|5  s|7|e|6  ...  s|7|e|912   s|7|h   s|7|t   s|8|c ...
//	        `--- entries [first, last] ----'
//
// Why this shape:
//
//   - Shard first: everything of a shard is one contiguous key range, so
//     DeleteShard is a single range delete ['s'|shard, 's'|shard|0xff), and
//     the shard's state sits next to its newest entries in the memtable and
//     in the same sstables.
//   - Index last, fixed width: a shard's entries are one contiguous run in
//     index order, so reading [lo, hi) is one iterator seek and sequential
//     Next calls, and compaction (retention) drops a prefix with one range
//     delete ['s'|shard|'e'|0, 's'|shard|'e'|index+1). Varints would not sort
//     numerically.
//   - The kind bytes are chosen so the three state keys ('c' < 'e' < 'h' <
//     't') never interleave with entries: the entry run is bounded by
//     ['s'|shard|'e', 's'|shard|'f').
//   - The leading 's' leaves the rest of the keyspace free for other
//     families (a format version, node-wide state) without a migration.
//   - The truncated state is stored (not derived from the first entry)
//     because after compacting everything, or applying a snapshot, there is
//     no entry left to carry the term raft needs at FirstIndex()-1.
//
// Rejected: a keyspace per kind ('e'|shard|index, 'h'|shard, ...), which
// gathers all hard states in one small, hot range but splits DeleteShard into
// four range deletes and separates a shard's state from its entries; and one
// pebble instance (or WAL) per shard, which turns one fsync per round into
// one per shard (see below).
//
// # Group commit
//
// weir acknowledges a write only once its entry is committed, and raft
// commits an entry only once a quorum has it on disk, so every acknowledged
// write waits for at least one fsync. An fsync costs about the same for 1 KiB
// as for 1 MiB (0.1 to 10 ms, by disk), so the store makes fsyncs few and
// shares each among as many writes as possible: one node drives all of its
// shards from one loop, and each round of that loop writes the Ready of every
// shard in ONE pebble batch and syncs it ONCE.
//
// The loop (in package cluster) is raft's Ready loop, run for all shards at
// once:
//
//	for each round:
//	    b := db.NewBatch()                       // or reuse one
//	    for each shard with rn.HasReady():
//	        rd := rn.Ready()
//	        if snapshot: b.ApplySnapshot(shard, rd.Snapshot)
//	        b.Append(shard, rd.Entries)          // truncates a conflicting suffix
//	        if hard state: b.SetHardState(shard, rd.HardState)
//	        sync = sync || rd.MustSync
//	    b.Commit(sync)                           // 1 pebble commit, <= 1 fsync
//	    for each shard: send rd.Messages         // only after the commit
//	    for each shard: apply rd.CommittedEntries, ApplyConfChange
//	                    (its ConfState goes into the next round's batch),
//	                    wake the proposers waiting on those indexes
//	    for each shard: rn.Advance(rd)
//
// Messages wait for the commit because raft requires the HardState (votes)
// and entries a message depends on to be durable before it leaves: a
// follower's MsgAppResp promises the entries are on its disk. (A leader may
// send MsgApp before its own write, raft thesis 10.2.1; etcd does. It buys a
// little latency and is left for later.) Rounds pipeline naturally: while one
// round syncs, new proposals queue up in raft, and the next round carries
// all of them, so the batch grows with load and the number of fsyncs per
// second stays bounded by the disk, not by the write rate.
//
// Commit(sync=false) is for rounds where no Ready asked for MustSync (only
// the commit index moved, or messages only); pebble still writes the batch to
// its WAL, and the next synced round makes it durable with everything else.
//
// pebble has a commit pipeline of its own (commit.go): concurrent committers
// are queued and their WAL syncs coalesced. We do not lean on it for the
// grouping; we hand it a single large batch per round.
//
// Designs rejected:
//
//   - One fsync per message or per proposal: one disk flush per write; at a
//     few ms each, a node does hundreds of writes per second however many
//     shards it has.
//   - One batch and fsync per shard per round (or a pebble instance or WAL
//     file per shard, as one raft group per etcd member has): fsyncs grow
//     with the number of shards, a node with 1000 shards does 1000 fsyncs per
//     round, and separate files cost more seeks than one sequential WAL.
//   - A goroutine per shard committing its own synced batch, relying on
//     pebble's pipeline to coalesce the syncs: it does coalesce them, but
//     only those that happen to overlap; it costs a goroutine and a wakeup
//     per shard per round, the grouping is left to scheduling, and there is
//     no single point where a round's writes are known to be durable before
//     its messages go out.
//   - raft's AsynchronousStorageWrites (a separate append thread answering
//     with local messages): it overlaps the fsync with the next round, which
//     the simple loop gets mostly from pipelining; it is the next step if the
//     loop itself becomes the bottleneck, and Batch fits it unchanged.
//   - Unsynced writes with a periodic background fsync (Kafka's default):
//     faster, but an acknowledged record could be lost by a power cut on a
//     quorum of nodes, which DESIGN.md decision 2 rules out.
//   - Writing entries to a separate record store and only indexes to the raft
//     log: two writes (and two syncs, or an ordering protocol) per record;
//     the raft log is the record log (DESIGN.md decision 1).
//
// # Concurrency
//
// A Batch belongs to one goroutine; the batches touching a shard are built
// and committed one at a time, in order (the shard's raft loop). Log is safe
// for concurrent use. Log.Compact may run on another goroutine; it holds the
// shard's lock through its fsync. DeleteShard and Close wait for running
// commits and reads.
package store
