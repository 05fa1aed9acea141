// Package subscription owns the read path of consumer groups: the owner of
// each subscription, its consumers, the dispatch of shards to consumers,
// the window of unacked records, redelivery and checkpoints. The gRPC
// StreamingFetch handler (package api) is a thin shell over it.
//
// # One owner per subscription
//
// A subscription's whole state lives on one node, in one goroutine (owner.run),
// so no lock guards it. The node claims the subscription with an ownership
// key in etcd under its lease (cluster.Node.ClaimSubscription) when the first
// consumer attaches, and every checkpoint write is guarded by that key, so a
// later cluster issue can move ownership and a node that lost its lease cannot
// overwrite its successor's progress. Other goroutines reach the owner through
// channels: a closure run on the loop (attach, detach, delete, listings), acks,
// and wake-ups from shards that have new entries.
//
//	StreamingFetch ─┬─ first request ─► Manager.Attach ─► owner.attach: rebalance
//	                ├─ later requests ─► Consumer.Ack ──► owner.ackc
//	                └─ send loop ◄──── Consumer.Next ◄── consumer queue ◄─┐
//	                                                                      │
//	owner loop: acks ─► window frees ─► dispatch: per shard, in turn ─────┘
//	            tick ─► expired acks due again; new shards; checkpoint
//	            wake ─► a caught-up shard committed more
//
// # Dispatch
//
// Each shard goes to exactly one attached consumer, so a key's records reach
// one consumer, in log order. Assignment is balanced (every consumer gets
// ⌊S/C⌋ or ⌈S/C⌉ shards) and moves as few shards as it can when consumers join
// or leave. The owner reads each shard's committed entries straight from the
// log (never through raft), one batch per delivery, and hands them to the
// consumer's queue; a consumer's RPC goroutine builds the ReceivedRecord and
// sends it, so encoding runs in parallel across consumers. A shard with
// nothing new gets one waiter goroutine on its Committed channel.
//
// # Window, acks and redelivery
//
// maxUnackedRecords bounds the records delivered and not yet acked (due again
// included), over all consumers: reads stop when it is full and go on as acks
// free it. A batch larger than the whole window goes out alone when nothing
// else is outstanding, so it cannot wedge the subscription. Acks name records
// by id and are accepted from any consumer, and acks already handed to the
// owner are applied before any later request (such as the consumer's
// detach). Acks of records never delivered, or of other shards, are ignored
// and counted; repeated acks are counted as duplicates.
//
// A read that fails is retried a second later; a shard deleted under the
// owner is dropped, and what it had outstanding stops counting. An entry
// that does not decode (cluster.CorruptEntryError) or cannot be built into a
// delivery is skipped as a gap, so it cannot wedge its shard or fail consumer
// after consumer.
//
// A batch whose ack timeout passes, or whose consumer leaves, is due again:
// before any new entry of its shard, it goes to the shard's consumer (the
// same or another), re-read from the log. If some of its records were acked,
// the consumer gets a smaller BatchedRecord of only the unacked ones (same
// compression) with their own ids. The ack timeout counts from when the
// consumer's fetch took the batch for sending (a batch still queued, its
// consumer not keeping up, is not due), so a consumer never holds two copies
// of a batch, and the window bounds its queue too.
//
// When a shard moves to another consumer, the batches queued for the old one
// but not yet sent move with it, and the new one gets nothing of the shard
// until the old one has acked (or timed out) what it was sent: one consumer
// per shard at a time, even during a handoff. A consumer that
// leaves frees its shards at once: all it held is due again.
//
// # Checkpoints
//
// Per shard, the checkpoint is the lowest index not yet acknowledged in full:
// everything below it is done. The owner persists it to etcd at most every
// checkpoint interval (only when it moved) and when the node shuts down, never
// per ack, so a crash redelivers at most what was acked in the last interval
// and nothing acknowledged before the last checkpoint. GetSubscription reports
// the persisted checkpoint. A save refused because the node no longer holds
// the ownership key (its lease expired while it was paused or cut off from
// etcd) makes the owner claim the subscription again; if another node holds
// it, the owner ends its consumers with cluster.ErrNotOwner, so they attach
// there, and saves nothing more. An owner resumes each shard at its checkpoint, or
// at the subscription's start as resolved at creation (EARLIEST: the first
// stored entry; LATEST: after the last committed one). If retention trimmed
// past that point, it continues at the first entry still stored, and logs and
// counts the gap.
//
// # Metrics
//
// Per subscription, on the node that owns it (Options.Metrics): records
// delivered, redelivered and acked, acks ignored and repeated, gaps
// (weir_subscription_*_total), and the lag, which the owner updates every
// 10 s (lagEvery; first at its first tick): weir_subscription_lag_records,
// the records committed and not yet acknowledged, and
// weir_subscription_lag_seconds, the age of the oldest of them (0 when
// caught up). The records delivered and unacked are counted exactly; those
// not delivered yet are estimated from one entry read per shard, the
// oldest undelivered: (commit index - its index + 1) × the average records
// per batch the owner has delivered, or that entry's batch size before it
// has delivered any. Raft's own entries in that range count as batches, so
// the estimate is exact when every batch holds the same number of records
// and raft added no entries since. An owner whose subscription was deleted
// stops updating its lag and drops those series at its next tick; the
// Manager drops all of a deleted subscription's series when it stops the
// owner.
//
// # Lifecycle
//
// Owners start on the first attach and run until the node closes (persisting
// progress), or their subscription or its stream is deleted (ending the
// consumers' fetches with ErrDeleted). A delete without force is refused
// while consumers are attached. Every second an owner also looks for shards
// added to its stream (they start at their first entry) and notices a
// subscription deleted behind its back.
package subscription
