// Package chaos checks the history of a fault-injection ("chaos") run of a
// weir cluster, in the manner of Jepsen: producers append unique values
// while a nemesis kills, pauses, partitions and slows nodes; after healing,
// the test reads every shard back, and Check compares what was acked with
// what survived. This package is pure logic: the test in package test runs
// the cluster and records the History; Check turns it into a Report, which
// prints as text (Report.Text) or JSON (encoding/json).
//
// # Values
//
// Every value is unique, and says who wrote it:
//
//	p=<producer> s=<seq>[ <padding>]
//	  "p=w3 s=1742 ........"
//
// Payload makes one and ParsePayload reads one back, ignoring everything
// after a space that follows the seq. Producer names have no space; seqs
// count from 1 per producer, in decimal without leading zeros.
//
// A write is acked when the producer got a success reply, unacked when it
// got an error or nothing (a timeout, a dropped connection): an unacked
// write may or may not have landed, and either is allowed.
//
// # What Check reports
//
// Lost: an acked write whose value is in no record of the final read. This
// is the cardinal sin of a log. Lost writes are classified per producer,
// against the producer's acked writes that were found, in seq order:
//
//	acked seq:  1  2  3  4  5  6  7  8  9
//	found:      .  .  F  F  .  F  F  .  .
//	lost:       P  P        M        S  S
//
// where P, M and S are the classes:
//
//   - prefix: before the first acked write found, as when a log loses its
//     head (a bad snapshot or truncation). When none of a producer's acked
//     writes was found, all its lost writes are prefix: there is no found
//     write for them to be in the middle of or after.
//   - middle: between two acked writes found, as when one batch of a
//     pipeline is dropped while later ones commit.
//   - suffix: after the last acked write found, as when a node acks before
//     its write is durable and then crashes, or a leader acks before commit
//     and is deposed.
//
// Unacked writes, found or not, play no part in the classes.
//
// Unacked found: an unacked write whose value was read back. Counted in
// Totals.UnackedFound, never a problem: the write landed though its ack
// was lost.
//
// Unexpected: a record whose payload does not parse, names a (producer,
// seq) that was never attempted, is not byte for byte what was written
// (History.Pad says how it was padded), or carries another key than its
// write's: corruption, misrouting, or data from elsewhere. Deliveries are
// checked the same way, but for the key.
//
// Duplicates: extra copies of one value in the final read (three copies
// count two). A client that retried a write (Attempts > 1) may have had
// both sends land, so those copies are "retried" and allowed; copies of a
// write sent once are "unexplained", a bug in replication or in the log.
//
// Order: within one key, a producer's values must be read in the order it
// wrote them. Check walks each key's records in log order, separately per
// shard, and flags a record whose seq is lower than one of the same
// producer already read on that key. A flagged record is a "reorder"
// when its seq is read there for the first time: a genuine inversion, an
// order violation. It is a "late duplicate" when the same seq was read
// there before: an extra copy of a retried write whose first send landed
// after the retry and the values after it (a request held up in a
// partition and delivered once it healed). Late duplicates are counted,
// not violations: the first copies are in order, and a copy is allowed
// where the client retried (a copy of a write sent once is an unexplained
// duplicate above). A key whose records lie in more than one shard is a
// split key, also a problem: all records of a key belong in one shard.
//
// Replicas: each node's copy of each shard, given as (index, digest)
// entries, is compared with the other nodes' over the range all of them
// hold: from the highest first index to the lowest last index. An index in
// that range whose digests differ, or which some node lacks while another
// has it, is divergent; a shard with any divergent index is a divergent
// shard, a failure of replication's core promise. Replicas that end at
// different indexes are "lagging", reported but not a problem: a follower
// may not have caught up yet. A node holding no entry of a shard is only
// lagging.
//
// Delivery: an acked write that the subscription never delivered is a
// problem (never delivered); a value delivered more than once counts
// redeliveries, allowed by at-least-once delivery; a delivered value that
// was never attempted is an unexpected delivery, a problem.
//
// Faults: for each fault window [Start, End] the nemesis injected, the
// rate of acks (acked writes whose AckTime is in the window, per second)
// and the longest unavailability, the longest interval in the window
// without any ack, bounded by the window's edges (the whole window when
// nothing was acked in it). Windows are summed per kind: count, total
// time, rate over total time, longest unavailability of any window. The
// baseline is the ack rate over the run's time outside every window, to
// compare with. These are measurements, never problems.
//
// A report is OK when it has no problem: nothing lost, unexpected,
// unexplained duplicate, out of order or split, divergent or never
// delivered. Report.Problems says, one line each, why not.
//
// # JSON
//
// A Report marshals with encoding/json as is: times are RFC 3339 strings,
// fields of type Seconds (named *_s) are durations in seconds, rates are
// acks per second. Lists of examples hold at most MaxExamples entries.
package chaos
