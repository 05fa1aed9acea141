// Package server assembles one weir node: it starts etcd (embedded, or a
// client of the configured endpoints), opens the store, starts the cluster
// node (registration, catalog, raft groups), and serves the HStreamDB gRPC
// API, the HTTP endpoint (/metrics from the node's own Prometheus
// registry; /healthz; /readyz: etcd answers and the shards are open, see
// health.go), the MQTT broker and the connectors to external brokers
// (connectors.*), in that order; Close stops them in reverse, finishing
// in-flight appends before the store is closed.
//
// With enable-tls the gRPC API is served over TLS 1.2 or later, and the
// node dials other nodes over TLS presenting the same certificate. With
// tls-ca-path too, every caller must present a certificate that CA signed
// (mutual TLS), its Common Name (else first SAN) is the principal that
// the audit log of admin RPCs names (grpcauth.go), and the node-to-node
// service serves only callers whose certificate is valid for server
// authentication, as nodes' are. Start loads every TLS file before
// anything else, so a bad one fails start-up naming the key and the
// file; ReloadTLS (SIGHUP in `weir server`) reads them all again.
package server
