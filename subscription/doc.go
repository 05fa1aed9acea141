// Package subscription will own the read path of consumer groups: the
// subscription owner, consumers, dispatch of shards to consumers, ack
// windows, redelivery and checkpoints (StreamingFetch).
//
// It holds no code yet: until it arrives, the subscription RPCs answer
// UNIMPLEMENTED saying subscriptions are not available in this version.
package subscription
