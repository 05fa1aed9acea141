package cluster

import (
	"fmt"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/protobuf/encoding/protowire"

	"github.com/weir-log/weir/internal/latency"
)

// metrics are the node's append and raft series. Every append reaches the
// log through Shard.Propose (gRPC Append, the MQTT ingest hook, the ingest
// connectors), so they are counted once, here, whichever door they came in
// by. The loop goroutine updates them; a shard looks its stream's series up
// once, when its group opens.
//
// Per-stream series (weir_stream_append_*) carry the stream's name: one
// series each per stream (a histogram: one per bucket), dropped when the
// last of the stream's shards open here closes (engine.removeShard, on the
// loop, as engine.addShard looks them up: a stream created again under the
// same name gets live series).
type metrics struct {
	appendRecords *prometheus.CounterVec
	appendBytes   *prometheus.CounterVec
	appendLatency *prometheus.HistogramVec

	leaderChanges   prometheus.Counter
	proposals       prometheus.Counter
	proposalsFailed prometheus.Counter
	commitLatency   prometheus.Histogram
	shards, leading atomic.Int64 // raft groups open here, and those led here
	gauges          []prometheus.Collector
}

func newMetrics() *metrics {
	m := &metrics{
		appendRecords: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "weir_stream_append_records_total",
			Help: "Records committed to the stream by appends this node proposed (gRPC Append, MQTT publishes, ingest connectors).",
		}, []string{"stream"}),
		appendBytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "weir_stream_append_bytes_total",
			Help: "Bytes of BatchedRecords (as the producer sent them, compressed or not) committed to the stream by appends this node proposed.",
		}, []string{"stream"}),
		appendLatency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "weir_stream_append_latency_seconds",
			Help:    "Time from an append reaching this node's raft loop queue (waiting for room included) to its commit (durable), per stream.",
			Buckets: latency.Buckets,
		}, []string{"stream"}),
		leaderChanges: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "weir_raft_leader_changes_total",
			Help: "Times a shard replica on this node saw its raft leader change (a shard's first election included).",
		}),
		proposals: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "weir_raft_proposals_total",
			Help: "Record batches this node proposed to a shard's raft group.",
		}),
		proposalsFailed: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "weir_raft_proposals_failed_total",
			Help: "Appends the raft loop answered with an error: no leader in time, shard deleted, store failure, node shutting down.",
		}),
		commitLatency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "weir_raft_commit_latency_seconds",
			Help:    "Time from proposing a record batch to raft to its commit (persisted on a quorum and applied).",
			Buckets: latency.Buckets,
		}),
	}
	m.gauges = []prometheus.Collector{
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "weir_raft_shards",
			Help: "Shard raft groups open on this node.",
		}, func() float64 { return float64(m.shards.Load()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "weir_raft_leader_shards",
			Help: "Shard raft groups this node leads.",
		}, func() float64 { return float64(m.leading.Load()) }),
	}
	return m
}

func (m *metrics) register(r prometheus.Registerer) error {
	cs := append([]prometheus.Collector{m.appendRecords, m.appendBytes, m.appendLatency,
		m.leaderChanges, m.proposals, m.proposalsFailed, m.commitLatency}, m.gauges...)
	for _, c := range cs {
		if err := r.Register(c); err != nil {
			return fmt.Errorf("cluster: registering metrics: %w", err)
		}
	}
	return nil
}

// streamMetrics are one stream's append series, looked up once per shard.
type streamMetrics struct {
	records, bytes prometheus.Counter
	latency        prometheus.Observer
}

func (m *metrics) forStream(name string) streamMetrics {
	return streamMetrics{
		records: m.appendRecords.WithLabelValues(name),
		bytes:   m.appendBytes.WithLabelValues(name),
		latency: m.appendLatency.WithLabelValues(name),
	}
}

// forget drops a deleted stream's series. REQUIRES: the loop goroutine.
func (m *metrics) forget(stream string) {
	m.appendRecords.DeleteLabelValues(stream)
	m.appendBytes.DeleteLabelValues(stream)
	m.appendLatency.DeleteLabelValues(stream)
}

// batchRecords reads batchSize (field 3) from a marshaled BatchedRecord
// without unmarshaling the rest: four fields to skip at most. 0 when the
// bytes do not parse (the appender checked them; counting is all this is
// for).
func batchRecords(batch []byte) int {
	for len(batch) > 0 {
		num, typ, n := protowire.ConsumeTag(batch)
		if n < 0 {
			return 0
		}
		batch = batch[n:]
		if num == 3 && typ == protowire.VarintType {
			v, n := protowire.ConsumeVarint(batch)
			if n < 0 {
				return 0
			}
			return int(uint32(v))
		}
		n = protowire.ConsumeFieldValue(num, typ, batch)
		if n < 0 {
			return 0
		}
		batch = batch[n:]
	}
	return 0
}
