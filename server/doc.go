// Package server assembles one weir node: it starts etcd (embedded, or a
// client of the configured endpoints), opens the store, starts the cluster
// node (registration, catalog, raft groups), and serves the HStreamDB gRPC
// API, the HTTP endpoint (/metrics from the node's own Prometheus
// registry; /healthz; /readyz: etcd answers and the shards are open, see
// health.go), the MQTT broker and the connectors to external brokers
// (connectors.*), in that order; Close stops them in reverse, finishing
// in-flight appends before the store is closed.
package server
