// Package api serves weir's public gRPC API, HStreamDB's
// hstream.server.HStreamApi (generated in api/hstreampb from
// api/proto/hstream.proto), so HStreamDB clients and EMQX's HStreamDB
// connector work against weir unchanged.
//
// # What it owns
//
// The edge between the wire and the cluster: validating requests (names,
// shard counts, batches, offsets, record ids), resolving offsets to log
// indexes, converting between protobuf messages and cluster metadata, and
// mapping every error to a gRPC code plus HStreamDB's JSON status message.
// Storage, replication and metadata belong to cluster.Node; the batch codec,
// hash ranges and record id text to api/wire. The package keeps no state of
// its own beyond a lock per shard reader that serializes its reads.
//
// # How a request flows
//
//	gRPC ──► Service.Append(ctx, req)           exported method: one line
//	           └─ unary(ctx, s, "Append", req, s.append)
//	                s.append: validate ─► cluster call ─► proto response
//	                  │ error: errorf(class, "stream %q …", name)
//	                  ▼
//	           statusError: errorTable[class] ─► status{code, {"error": N, "message": …, "extra": null}}
//
// Every unary RPC goes through unary and every streaming RPC through
// statusError, so no error reaches a client without its code. An error's
// class is a sentinel (the api's own in errors.go, cluster's or wire's) and
// its message names the object and the value; errors that match no class
// are Internal and logged.
//
// # Records and ids
//
// Append decodes the producer's BatchedRecord only to check it, then stores
// it as sent, one cluster log entry per batch. The entry's raft index is the
// records' batchId, so a record id is {shardId, index, position in batch}
// and ids are minted from batchSize without decoding on either path. On
// delivery the stored batch goes out with publishTime set to the entry's
// append time.
//
// # Reads
//
// Offsets become log indexes when a read starts (offsets.go): a start is the
// first index to read, an "until" the last, inclusive. Readers poll the
// shard with the non-blocking cluster.Shard.Read and, with nothing new,
// wait on the shard's Committed channel (read.go). ReadStream runs one
// goroutine per shard, sending under a mutex and sharing the maxReadBatches
// budget; shard readers (readers.go) persist their position after every
// read that moves it.
//
// # Subscriptions
//
// Subscription RPCs validate and convert (subscriptions.go); the state of a
// consumer group lives in package subscription. StreamingFetch registers the
// consumer with the first request, passes the acks of later ones on from a
// receiving goroutine, and sends what the consumer's queue holds, one batch
// per response. The client closing its side is the consumer leaving (the
// fetch ends OK); a deleted subscription ends it with NotFound, a node
// shutting down with Unavailable.
package api
