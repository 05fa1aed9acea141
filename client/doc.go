// Package client is weir's Go client. It speaks HStreamDB's HStreamApi over
// gRPC, so it works against weir and against HStreamDB itself.
//
//	Dial(url) ──► admin:   streams, shards, subscriptions, consumers, readers, DescribeCluster, lookups
//	          ──► produce: Append (synchronous), NewBufferedProducer (batched, background)
//	          ──► read:    ReadStream, ReadShardStream, shard readers (CreateShardReader, ReadShard, …)
//	          ──► consume: Consume (blocking), StartConsumer (background, Stop)
//	          ──► API():   every other RPC, raw
//
// # Connecting
//
// Dial takes one address or a url of several: "127.0.0.1:6570",
// "hstream://h1:6570,h2,h3" (a missing port is 6570), "hstreams://…" for
// TLS (WithCACert, WithClientCert, WithTLSConfig; WithAuthToken sends
// HStreamDB's "authorization: Basic <token>" metadata). It asks the
// url's servers at once for the cluster's nodes (DescribeCluster) and keeps
// one gRPC connection per node it uses. The server list is refreshed every
// 30 s and after a node fails (falling back to the url's servers when no
// listed node answers).
//
// Every call has a target: any node (metadata calls), or the node serving
// a shard, a subscription or a shard reader, which the client asks any node
// for (LookupShard, LookupSubscription, LookupShardReader) and caches:
//
//	call ──► route(target) ──► node ──► RPC ──► ok
//	            ▲ cache                  │
//	            │                        ├─ Unavailable: forget the lookup, prefer the next
//	            └── forget, back off ◄───┤  node, refresh the server list, back off, retry
//	                                     ├─ FailedPrecondition WrongServer: look up again, resend
//	                                     └─ anything else: returned as received
//
// Attempts are bounded (WithMaxAttempts, default 8) and the back-off grows
// from 100 ms to 2 s with jitter (WithRetryBackoff): together about 6 s,
// enough for a node to restart. An attempt that gets no answer within
// WithAttemptTimeout (30 s) counts as Unavailable. A call retried after Unavailable may have
// been carried out already, so an Append can be stored twice: delivery is
// at least once. Retries never reorder one key's records: every producer
// here sends one request per shard at a time and finishes its retries
// before it sends the next. Streaming reads are not retried; their failure
// only refreshes the route for the next call.
//
// # Producing
//
// Records are routed by their partition key: the MD5 of the key, read as a
// 128-bit big-endian number, falls in exactly one shard's hash range. The
// client fetches a stream's shards once (ListShards) and caches them.
//
// Append sends records now and returns their ids: one AppendRequest per
// shard, each one BatchedRecord (optionally gzip or zstd compressed, see
// Compression), shards in parallel.
//
// A BufferedProducer (NewBufferedProducer) batches in the background: Append
// returns an AppendResult (a future: Done, Wait) at once; each shard's
// batch is sent when it reaches BatchRecordCountLimit records (default 100),
// BatchBytesLimit bytes (1 MiB) or BatchAgeLimit age (100 ms), whichever
// comes first; FlowControlBytesLimit (64 MiB) bounds the bytes buffered and
// in flight, beyond which Append blocks (or fails with ErrBufferFull, with
// FlowControlNonBlocking). One batch per shard is in flight at a time, and
// shards are sent in parallel. Flush sends everything and waits; Close
// drains and stops. See producer.go's top comment for the design.
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
// StreamingFetch RPC, on the node LookupSubscription names, and calls a
// handler per record; Message.Ack queues the record's ack, and a single
// sender goroutine sends acks in batches (by count, WithAckBufferSize, or by
// age, WithAckAgeLimit):
//
//	server ══StreamingFetch══► receive ──► loop: handler(m) ──► m.Ack()
//	   ▲                         (one batch in hand)               │
//	   └──── {subId, consumer, ackIds} ◄── ack sender ◄── ack buffer
//
// Consume reconnects by itself when the stream fails with Unavailable (a
// node shutting down, a broken connection) or WrongServer (the subscription
// moved): it looks the subscription up again and registers the same
// consumer name, retrying AlreadyExists while the server notices the old
// stream is gone. Waits follow WithRetryBackoff; failed attempts in a row
// are capped by WithMaxAttempts, and a stream on which acks were sent (or
// that stayed up 10 s) resets the count. Acks not yet sent are carried over to the new stream.
// Expect redeliveries after a reconnect or a node restart: records acked
// since the server's last checkpoint come again.
//
// When Consume stops (ctx done, handler error) it sends the pending acks and
// half-closes the stream first. StartConsumer runs Consume in the
// background and returns a Consumer: Stop flushes the pending acks and
// returns nil when it was Stop that ended it; Done and Err report a
// consumer that ended by itself.
//
// # Errors
//
// Server errors are gRPC status errors, returned as received: use
// status.Code(err), and ErrorCode(err) for HStreamDB's finer error code.
// Errors the client finds itself wrap ErrInvalidArgument (naming the option
// or argument), ErrBadResponse, ErrDataContaminated, ErrBufferFull or
// ErrProducerClosed.
//
// # Example
//
//	c, err := client.Dial(ctx, "hstream://127.0.0.1:6570")
//	if err != nil { … }
//	defer c.Close()
//	if _, err := c.CreateStream(ctx, "sensors", client.ShardCount(4)); err != nil { … }
//	p, err := c.NewBufferedProducer(ctx, "sensors", client.Compression(hstreampb.CompressionType_Zstd))
//	if err != nil { … }
//	res, err := p.Append(ctx, client.Record{Key: "device-1", Payload: []byte(`{"t": 21.5}`)})
//	if err != nil { … }
//	id, err := res.Wait(ctx) // the record's id once its batch is stored
//	err = p.Close()          // sends what is buffered, waits, stops
//	err = c.ReadStream(ctx, "sensors", client.Earliest(), client.Latest(), 0,
//		func(r client.ReceivedRecord) error {
//			fmt.Println(wire.FormatRecordID(r.ID), r.Key, string(r.Payload))
//			return nil
//		})
package client
