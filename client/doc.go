// Package client is weir's Go client. It speaks HStreamDB's HStreamApi over
// gRPC, so it works against weir and against HStreamDB itself.
//
// A Client holds one connection to one server (plaintext HTTP/2 for now):
//
//	Dial ──► admin:   CreateStream, GetStream, ListStreams, DeleteStream, ListShards
//	     ──► produce: Append
//	     ──► read:    ReadStream, ReadShardStream, shard readers (CreateShardReader, ReadShard, …)
//	     ──► consume: subscriptions (CreateSubscription, GetSubscription, …), Consume
//	     ──► API():   every other RPC, raw
//
// # Producing
//
// Append routes each record by its partition key: the MD5 of the key, read as
// a 128-bit big-endian number, falls in exactly one shard's hash range. The
// client fetches a stream's shards once (ListShards), caches them, and sends
// one AppendRequest per shard, each carrying one BatchedRecord (optionally
// gzip or zstd compressed). The ids come back in the order of the records.
//
// # Reading
//
// ReadStream and ReadShardStream read between two offsets (Earliest, Latest,
// AtTime; ShardEarliest, ShardLatest, ShardAtRecord, ShardAtTime) and call a
// function per record; without an end offset they follow the stream until
// the context is done. DecodeReceived unpacks a raw ReceivedRecord for
// callers using API() directly.
//
// # Consuming
//
// A subscription is a consumer group over a stream: the server splits the
// stream's shards among the consumers attached to it, delivers each record
// until it is acked (again after the subscription's ack timeout), and keeps
// each shard's committed progress. Consume attaches one consumer over the
// StreamingFetch RPC and calls a handler per record; Message.Ack queues the
// record's ack, and a single sender goroutine sends acks in batches (by
// count, WithAckBufferSize, or by age, WithAckAgeLimit):
//
//	server ══StreamingFetch══► receive ──► loop: handler(m) ──► m.Ack()
//	   ▲                         (one batch in hand)               │
//	   └──── {subId, consumer, ackIds} ◄── ack sender ◄── ack buffer
//
// When Consume stops (ctx done, handler error) it sends the pending acks and
// half-closes the stream first.
//
// # Errors
//
// Server errors are gRPC status errors, returned as received: use
// status.Code(err), and ErrorCode(err) for HStreamDB's finer error code.
// Errors the client finds itself wrap ErrInvalidArgument, ErrBadResponse or
// ErrDataContaminated.
//
// # Example
//
//	c, err := client.Dial(ctx, "127.0.0.1:6570")
//	if err != nil { … }
//	defer c.Close()
//	if _, err := c.CreateStream(ctx, "sensors", client.ShardCount(4)); err != nil { … }
//	ids, err := c.Append(ctx, "sensors", []client.Record{
//		{Key: "device-1", Payload: []byte(`{"t": 21.5}`)},
//	}, client.Compression(hstreampb.CompressionType_Zstd))
//	err = c.ReadStream(ctx, "sensors", client.Earliest(), client.Latest(), 0,
//		func(r client.ReceivedRecord) error {
//			fmt.Println(wire.FormatRecordID(r.ID), r.Key, string(r.Payload))
//			return nil
//		})
package client
