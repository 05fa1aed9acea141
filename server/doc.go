// Package server assembles one weir node: it starts etcd (embedded, or a
// client of the configured endpoints), opens the store, starts the cluster
// node (registration, catalog, raft groups), and serves the HStreamDB gRPC
// API, the HTTP metrics/health endpoint, the MQTT broker and the
// connectors to external brokers (connectors.*), in that order; Close stops
// them in reverse, finishing in-flight appends before the store is closed.
package server
