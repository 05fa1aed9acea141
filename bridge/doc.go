// Package bridge will connect MQTT to streams: routes from topics to streams
// and client IDs to partition keys, the ingest hook that acknowledges a
// publish only once it is committed, MQTT-side durable subscriptions, and
// paho connectors to external brokers.
//
// It holds no code yet: it arrives with the MQTT front door.
package bridge
