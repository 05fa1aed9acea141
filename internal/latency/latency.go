// Package latency holds what weir's latency histograms share: one set of
// buckets, so that panels and alerts read every weir_*_latency_seconds
// series the same way.
package latency

import "github.com/prometheus/client_golang/prometheus"

// Buckets are the buckets of weir's latency histograms, in seconds: 100µs
// to 10s, 16 buckets, each about 2.15 times the one before (100µs, 215µs,
// 464µs, 1ms, 2.2ms, … 4.6s, 10s).
var Buckets = prometheus.ExponentialBucketsRange(100e-6, 10, 16)
