// Package bridge connects MQTT to streams: routes from topics to streams
// and record keys, the ingest hook that stores publishes and acknowledges
// them only once committed, and durable shared subscriptions that deliver
// a stream to MQTT clients. Its hooks are added to the broker (package
// broker) by the server.
//
// # Routes
//
// mqtt.routes is an ordered list of {filter, stream, key, create}; the
// first route whose filter matches a publish's topic decides its stream
// and key. stream and key are templates over ${clientid}, ${username},
// ${topic} and ${topic[N]} (the Nth topic level, counted from 0); key
// defaults to ${clientid}, so one device's messages stay in order in one
// shard. With create: true the stream is created, with the stream.*
// defaults, on first use. A route whose stream renders to a name that is
// not a valid stream name does not match. With no routes configured there
// is one default route:
//
//	{filter: "#", stream: "${topic[0]}", key: "${clientid}", create: true}
//
// so sensors/dev1/temp goes to stream "sensors", keyed "dev1", and a topic
// whose first level is not a stream name ($SYS/…, 1st/…) is unmatched. An
// unmatched publish is delivered to live subscribers only (mqtt.unmatched:
// live, the default) or refused (reject). A filter or template that does
// not compile fails start-up with an error naming the route
// ("mqtt.routes[2] (filter "a/#/b"): …").
//
// # Records
//
// A publish is stored as one RAW record: the payload as published, the
// route's key, and attributes (NewRecord): mqtt.topic, mqtt.qos,
// mqtt.retain (only when set), mqtt.clientid, mqtt.username (when given),
// and the MQTT 5 properties mqtt.content-type, mqtt.response-topic,
// mqtt.correlation-data (base64), mqtt.payload-format, mqtt.message-expiry
// and mqtt.user-properties (a JSON array of [name, value] pairs, in order,
// since names may repeat). PublishPacket turns a record back into a
// PUBLISH; a record without mqtt.topic (appended over gRPC) is published on
// its stream's name.
//
// # Ingest
//
// Ingest (ingest.go) is an OnPublish hook that answers QoS 1 and 2 itself,
// after the commit: it queues each publish to its shard's batcher and
// returns, so a connection keeps many publishes in flight and concurrent
// publishes to a shard share one append and one fsync. PUBACK and PUBREC
// thus mean durable, and go out in each client's publish order. QoS 2 is
// stored once however often the device retransmits before PUBREL. Memory
// is bounded by mqtt.receive-maximum per client and
// mqtt.ingest.max-pending-bytes overall: beyond them publishers wait, and
// after mqtt.ingest.publish-timeout MQTT 5 clients get quota exceeded and
// 3.1.1 clients are disconnected. A client's will is stored too, like a
// QoS 0 publish, when the broker sends it. The comment at the top of ingest.go has
// the design, and why acks are asynchronous (a hook that blocked until the
// commit would allow one publish in flight per connection).
//
// # Shared subscriptions
//
// Shared (shared.go) makes $share/{group}/{filter} a durable consumer
// group: the subscription named {group} on the one stream the filter
// routes to (Router.StreamFor), created on first use with mqtt.shared.*.
// Each subscribing client is a consumer named by its client ID; records
// whose topic matches the filter are delivered at QoS ≤ 1 to one member,
// PUBACK acknowledges them, and unacknowledged records are redelivered
// after the ack timeout or to another member when one leaves. A group
// resumes from its checkpoint after a restart. Records appended over gRPC
// reach members too. Plain subscriptions keep the broker's live
// behaviour. The comment at the top of shared.go has the design.
//
// # Connectors
//
// Connectors (connector.go) are paho MQTT 3.1.1 clients of external
// brokers, configured under connectors.ingest and connectors.egress and run
// by Connectors. Each keeps one connection up with its own capped back-off
// (reconnect-min doubling to reconnect-max), logs every failed attempt at
// warn with its name, url and the broker's answer, and never stops the
// node. An ingest connector (connector_ingest.go) subscribes to its filters
// at QoS 1 on a persistent session, appends each message through its
// routes, and sends the PUBACK only once the record is committed, in
// arrival order, so the broker keeps what weir has not stored. An egress
// connector (connector_egress.go) consumes a stream through a subscription
// and publishes each record at QoS 1 on a topic template, acknowledging
// the record only after the broker's PUBACK. Both are bounded (max-pending,
// max-inflight) and counted in weir_connector_{up,connects_total,
// messages_total}. docs/emqx.md is the user's guide.
package bridge
