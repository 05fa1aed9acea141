package server_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/proto"

	"github.com/weir-log/weir/api/hstreampb"
	"github.com/weir-log/weir/api/wire"
	"github.com/weir-log/weir/client"
	"github.com/weir-log/weir/conf"
	"github.com/weir-log/weir/internal/nodetest"
)

// /metrics exposes the append, MQTT, subscription, raft and store series,
// and their values move when records flow: 3 gRPC appends of 4 records and
// 5 QoS 1 MQTT publishes (with a QoS 1 subscriber) are counted exactly per
// stream and packet; a consumer that
// takes 12 records without acking shows as 12 records of lag, and once it
// leaves and another acks them all the lag is 0, with 12 redeliveries; a
// trim counts the entries it drops.
func TestMetricsMoveWhenRecordsFlow(t *testing.T) {
	n := nodetest.Start(t, func(c *conf.Config) {
		c.MQTT.Listen = nodetest.FreeAddr(t)
		// No retention pass during the test: its compactions would move
		// weir_store_trimmed_entries_total besides the trim it checks.
		c.Store.RetentionCheckInterval = time.Hour
	})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	url := "http://" + n.Server.HTTPAddr()

	_, err := n.API.CreateStream(ctx, &hstreampb.Stream{StreamName: "metrics", ReplicationFactor: 1, ShardCount: 1})
	require.NoError(t, err)
	shards, err := n.API.ListShards(ctx, &hstreampb.ListShardsRequest{StreamName: "metrics"})
	require.NoError(t, err)
	shardID := shards.GetShards()[0].GetShardId()
	cl, err := client.Dial(ctx, n.Addr)
	require.NoError(t, err)
	defer cl.Close()
	_, err = cl.CreateSubscription(ctx, "sub", "metrics", client.WithSubscriptionOffset(hstreampb.SpecialOffset_EARLIEST))
	require.NoError(t, err)

	// A consumer that takes records and acks none.
	var seenA atomic.Int64
	consA, err := cl.StartConsumer(ctx, "sub", "a", func(context.Context, *client.Message) error { seenA.Add(1); return nil })
	require.NoError(t, err)
	require.Eventually(t, func() bool { return scrapeMetrics(t, url).has("weir_subscription_lag_records", "subscription", "sub") },
		10*time.Second, 20*time.Millisecond, "the subscription's owner never reported its lag")

	before := scrapeMetrics(t, url)
	for _, name := range []string{
		"weir_stream_append_records_total", "weir_stream_append_bytes_total", "weir_stream_append_latency_seconds",
		"weir_mqtt_connections", "weir_mqtt_connections_total", "weir_mqtt_publishes_received_total",
		"weir_mqtt_publishes_sent_total", "weir_mqtt_acks_sent_total", "weir_mqtt_acks_received_total", "weir_mqtt_dropped_total",
		"weir_mqtt_ingest_publishes_total",
		"weir_subscription_delivered_records_total", "weir_subscription_acked_records_total",
		"weir_subscription_redelivered_records_total", "weir_subscription_lag_records", "weir_subscription_lag_seconds",
		"weir_raft_leader_changes_total", "weir_raft_proposals_total", "weir_raft_proposals_failed_total",
		"weir_raft_commit_latency_seconds", "weir_raft_shards", "weir_raft_leader_shards",
		"weir_store_syncs_total", "weir_store_sync_latency_seconds", "weir_store_bytes_written_total",
		"weir_store_trimmed_entries_total",
	} {
		assert.Contains(t, before.fams, name, "no %s in /metrics", name)
	}

	// 3 appends of 4 records over gRPC.
	var appendedBytes int
	var firstBatch uint64
	for b := range 3 {
		recs := make([]*hstreampb.HStreamRecord, 4)
		for i := range recs {
			recs[i] = &hstreampb.HStreamRecord{Header: &hstreampb.HStreamRecordHeader{Key: "k"}, Payload: fmt.Appendf(nil, "r%d-%d", b, i)}
		}
		batch, err := wire.EncodeBatch(recs, hstreampb.CompressionType_None)
		require.NoError(t, err)
		appendedBytes += proto.Size(batch)
		resp, err := n.API.Append(ctx, &hstreampb.AppendRequest{StreamName: "metrics", ShardId: shardID, Records: batch})
		require.NoError(t, err)
		if b == 0 {
			firstBatch = resp.GetRecordIds()[0].GetBatchId()
		}
	}

	// 5 QoS 1 publishes over MQTT, to the stream "devices" (the default
	// route: the topic's first level), which a plain QoS 1 subscriber
	// receives and acks too.
	var got atomic.Int64
	subscriber := paho.NewClient(paho.NewClientOptions().AddBroker("tcp://" + n.Server.MQTTAddr()).SetClientID("watcher").
		SetCleanSession(true).SetAutoReconnect(false).SetConnectRetry(false))
	tok := subscriber.Connect()
	require.True(t, tok.WaitTimeout(10*time.Second))
	require.NoError(t, tok.Error())
	defer subscriber.Disconnect(0)
	tok = subscriber.Subscribe("devices/#", 1, func(paho.Client, paho.Message) { got.Add(1) })
	require.True(t, tok.WaitTimeout(10*time.Second))
	require.NoError(t, tok.Error())
	mq := paho.NewClient(paho.NewClientOptions().AddBroker("tcp://" + n.Server.MQTTAddr()).SetClientID("dev-1").
		SetCleanSession(true).SetAutoReconnect(false).SetConnectRetry(false))
	tok = mq.Connect()
	require.True(t, tok.WaitTimeout(10*time.Second))
	require.NoError(t, tok.Error())
	defer mq.Disconnect(0)
	for i := range 5 {
		tok := mq.Publish("devices/dev-1/temp", 1, false, fmt.Sprintf("t%d", i))
		require.True(t, tok.WaitTimeout(10*time.Second))
		require.NoError(t, tok.Error())
	}

	// The lag shows the 12 records taken and not acked, and their age.
	require.Eventually(t, func() bool {
		m := scrapeMetrics(t, url)
		return seenA.Load() == 12 && got.Load() == 5 && m.value("weir_mqtt_acks_received_total", "packet", "puback") == 5 &&
			m.value("weir_subscription_lag_records", "subscription", "sub") == 12 &&
			m.value("weir_subscription_lag_seconds", "subscription", "sub") > 0
	}, 25*time.Second, 50*time.Millisecond, "lag never showed 12 unacked records") // updated every 10 s
	require.NoError(t, consA.Stop())

	// Another consumer acks everything: the lag is gone.
	var seenB atomic.Int64
	consB, err := cl.StartConsumer(ctx, "sub", "b", func(_ context.Context, m *client.Message) error { m.Ack(); seenB.Add(1); return nil })
	require.NoError(t, err)
	defer consB.Stop()
	require.Eventually(t, func() bool {
		m := scrapeMetrics(t, url)
		return m.value("weir_subscription_acked_records_total", "subscription", "sub") == 12 &&
			m.value("weir_subscription_lag_records", "subscription", "sub") == 0 &&
			m.value("weir_subscription_lag_seconds", "subscription", "sub") == 0
	}, 25*time.Second, 50*time.Millisecond, "the lag did not drop to 0 once everything was acked")

	// A trim through the first batch drops the entries up to it.
	sh, err := n.Server.Node().Shard(shardID)
	require.NoError(t, err)
	wantTrimmed := firstBatch - sh.First() + 1
	_, err = n.API.TrimShard(ctx, &hstreampb.TrimShardRequest{StreamName: "metrics", ShardId: shardID,
		TrimPoint: &hstreampb.ShardOffset{Offset: &hstreampb.ShardOffset_RecordOffset{RecordOffset: &hstreampb.RecordId{ShardId: shardID, BatchId: firstBatch}}}})
	require.NoError(t, err)

	after := scrapeMetrics(t, url)
	delta := func(name string, labels ...string) float64 {
		return after.value(name, labels...) - before.value(name, labels...)
	}
	// Appends, per stream.
	assert.Equal(t, 12.0, after.value("weir_stream_append_records_total", "stream", "metrics"))
	assert.Equal(t, float64(appendedBytes), after.value("weir_stream_append_bytes_total", "stream", "metrics"))
	assert.Equal(t, 3.0, after.value("weir_stream_append_latency_seconds", "stream", "metrics"), "latency observations")
	assert.Equal(t, 5.0, after.value("weir_stream_append_records_total", "stream", "devices"))
	assert.Positive(t, after.value("weir_stream_append_bytes_total", "stream", "devices"))
	// MQTT.
	assert.Equal(t, 2.0, after.value("weir_mqtt_connections"))
	assert.Equal(t, 2.0, delta("weir_mqtt_connections_total"))
	assert.Equal(t, 5.0, delta("weir_mqtt_publishes_received_total", "qos", "1"))
	assert.Equal(t, 5.0, delta("weir_mqtt_publishes_sent_total", "qos", "1"))
	assert.Equal(t, 5.0, delta("weir_mqtt_acks_sent_total", "packet", "puback", "result", "success"))
	assert.Equal(t, 5.0, delta("weir_mqtt_acks_received_total", "packet", "puback"))
	assert.Equal(t, 5.0, delta("weir_mqtt_ingest_publishes_total", "result", "stored"))
	assert.Zero(t, after.value("weir_mqtt_dropped_total", "reason", "outbound_queue_full"))
	// Subscription.
	assert.Equal(t, 24.0, after.value("weir_subscription_delivered_records_total", "subscription", "sub"))
	assert.Equal(t, 12.0, after.value("weir_subscription_redelivered_records_total", "subscription", "sub"))
	assert.Equal(t, 12.0, after.value("weir_subscription_acked_records_total", "subscription", "sub"))
	assert.Equal(t, 12, int(seenB.Load()))
	// Raft: the appends to "metrics" are 3 proposals and the trim one
	// more, the publishes 1 to 5 (batched), each committed; "devices"
	// elected its leader.
	proposals := delta("weir_raft_proposals_total")
	assert.GreaterOrEqual(t, proposals, 5.0)
	assert.LessOrEqual(t, proposals, 9.0)
	assert.Equal(t, proposals, delta("weir_raft_commit_latency_seconds"), "commit latency observations")
	assert.Equal(t, after.value("weir_stream_append_latency_seconds", "stream", "devices")+4, proposals)
	assert.GreaterOrEqual(t, delta("weir_raft_leader_changes_total"), 1.0)
	assert.Equal(t, 2.0, after.value("weir_raft_shards"))
	assert.Equal(t, 2.0, after.value("weir_raft_leader_shards"))
	assert.Zero(t, after.value("weir_raft_proposals_failed_total"))
	// Store.
	assert.GreaterOrEqual(t, delta("weir_store_syncs_total"), 4.0)
	assert.Equal(t, delta("weir_store_syncs_total"), delta("weir_store_sync_latency_seconds"), "sync latency observations")
	assert.GreaterOrEqual(t, delta("weir_store_bytes_written_total"), float64(appendedBytes))
	assert.Equal(t, float64(wantTrimmed), delta("weir_store_trimmed_entries_total"))

	// Every series the example dashboard queries is exposed.
	dash, err := os.ReadFile("../examples/grafana/weir.json")
	require.NoError(t, err)
	for _, name := range regexp.MustCompile(`weir_[a-z_]+`).FindAllString(string(dash), -1) {
		name = strings.TrimSuffix(name, "_bucket")
		assert.Contains(t, after.fams, name, "examples/grafana/weir.json queries %s, which /metrics does not expose", name)
	}

	// Deleting a stream drops its series.
	_, err = n.API.DeleteStream(ctx, &hstreampb.DeleteStreamRequest{StreamName: "devices", Force: true})
	require.NoError(t, err)
	gone := scrapeMetrics(t, url)
	assert.False(t, gone.has("weir_stream_append_records_total", "stream", "devices"))
	assert.True(t, gone.has("weir_stream_append_records_total", "stream", "metrics"))

	// A multi-shard stream deleted and at once created again under the
	// same name has live series, which its appends move.
	_, err = n.API.CreateStream(ctx, &hstreampb.Stream{StreamName: "again", ReplicationFactor: 1, ShardCount: 3})
	require.NoError(t, err)
	appendTo := func(n4 int) {
		t.Helper()
		ss, err := n.API.ListShards(ctx, &hstreampb.ListShardsRequest{StreamName: "again"})
		require.NoError(t, err)
		for _, sh := range ss.GetShards() {
			recs := make([]*hstreampb.HStreamRecord, n4)
			for i := range recs {
				recs[i] = &hstreampb.HStreamRecord{Header: &hstreampb.HStreamRecordHeader{Key: "k"}, Payload: []byte("x")}
			}
			batch, err := wire.EncodeBatch(recs, hstreampb.CompressionType_None)
			require.NoError(t, err)
			_, err = n.API.Append(ctx, &hstreampb.AppendRequest{StreamName: "again", ShardId: sh.GetShardId(), Records: batch})
			require.NoError(t, err)
		}
	}
	appendTo(1)
	require.Equal(t, 3.0, scrapeMetrics(t, url).value("weir_stream_append_records_total", "stream", "again"))
	_, err = n.API.DeleteStream(ctx, &hstreampb.DeleteStreamRequest{StreamName: "again", Force: true})
	require.NoError(t, err)
	_, err = n.API.CreateStream(ctx, &hstreampb.Stream{StreamName: "again", ReplicationFactor: 1, ShardCount: 3})
	require.NoError(t, err)
	appendTo(2)
	require.Equal(t, 6.0, scrapeMetrics(t, url).value("weir_stream_append_records_total", "stream", "again"),
		"the recreated stream's appends are not exported")
	appendTo(1)
	require.Equal(t, 9.0, scrapeMetrics(t, url).value("weir_stream_append_records_total", "stream", "again"))
}

// /readyz answers 200 on a healthy node, still 200 right after its etcd
// becomes unreachable (the grace that rides out an etcd election), and 503
// naming etcd once it has been unreachable for longer; /healthz stays ok.
func TestReadyz(t *testing.T) {
	first := nodetest.Start(t)
	get := func(url string) (int, string) {
		resp, err := http.Get(url)
		require.NoError(t, err)
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		require.NoError(t, err)
		return resp.StatusCode, string(b)
	}
	code, body := get("http://" + first.Server.HTTPAddr() + "/readyz")
	require.Equal(t, http.StatusOK, code, body)
	require.Equal(t, "ready\n", body)

	// A second node reaches the first one's etcd through a proxy, which
	// then cuts it off.
	proxy := newCutProxy(t, first.Cfg.Etcd.Embedded.ClientListen)
	second := nodetest.Start(t, func(c *conf.Config) {
		c.NodeID = 2
		c.Etcd.Endpoints = []string{proxy.addr()}
	})
	base := "http://" + second.Server.HTTPAddr()
	code, body = get(base + "/readyz")
	require.Equal(t, http.StatusOK, code, body)
	proxy.cut()
	cut := time.Now()
	code, body = get(base + "/readyz")
	require.Equal(t, http.StatusOK, code, "within the grace: %s", body)
	require.Eventually(t, func() bool {
		code, body = get(base + "/readyz")
		return code == http.StatusServiceUnavailable
	}, 15*time.Second, 100*time.Millisecond, "/readyz stayed ready with etcd cut off")
	require.GreaterOrEqual(t, time.Since(cut), 3*time.Second)
	require.Contains(t, body, "etcd unreachable")
	code, body = get(base + "/healthz")
	require.Equal(t, http.StatusOK, code)
	require.Equal(t, "ok\n", body)
}

// cutProxy forwards TCP connections to a target until cut, which closes
// them all and refuses new ones.
type cutProxy struct {
	l     net.Listener
	mu    sync.Mutex
	conns []net.Conn
	done  bool
}

func newCutProxy(t *testing.T, target string) *cutProxy {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	p := &cutProxy{l: l}
	t.Cleanup(p.cut)
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			up, err := net.Dial("tcp", target)
			if err != nil {
				c.Close()
				continue
			}
			if !p.track(c, up) {
				return
			}
			go func() { io.Copy(up, c); up.Close() }()
			go func() { io.Copy(c, up); c.Close() }()
		}
	}()
	return p
}

func (p *cutProxy) addr() string { return p.l.Addr().String() }

func (p *cutProxy) track(cs ...net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.done {
		for _, c := range cs {
			c.Close()
		}
		return false
	}
	p.conns = append(p.conns, cs...)
	return true
}

func (p *cutProxy) cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.done = true
	p.l.Close()
	for _, c := range p.conns {
		c.Close()
	}
	p.conns = nil
}

// metricsScrape is one scrape of /metrics, by family name.
type metricsScrape struct {
	t    *testing.T
	fams map[string]*dto.MetricFamily
}

func scrapeMetrics(t *testing.T, base string) metricsScrape {
	t.Helper()
	resp, err := http.Get(base + "/metrics")
	require.NoError(t, err)
	defer resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(resp.Body)
	require.NoError(t, err)
	return metricsScrape{t: t, fams: fams}
}

// find returns the series of family name with the given label pairs.
func (s metricsScrape) find(name string, labels ...string) *dto.Metric {
	f := s.fams[name]
	if f == nil {
		return nil
	}
next:
	for _, m := range f.GetMetric() {
		for i := 0; i+1 < len(labels); i += 2 {
			found := false
			for _, lp := range m.GetLabel() {
				if lp.GetName() == labels[i] && lp.GetValue() == labels[i+1] {
					found = true
				}
			}
			if !found {
				continue next
			}
		}
		return m
	}
	return nil
}

func (s metricsScrape) has(name string, labels ...string) bool { return s.find(name, labels...) != nil }

// value is a series' value: a histogram's is its count of observations.
// A missing series is 0.
func (s metricsScrape) value(name string, labels ...string) float64 {
	m := s.find(name, labels...)
	switch {
	case m == nil:
		return 0
	case m.Counter != nil:
		return m.GetCounter().GetValue()
	case m.Gauge != nil:
		return m.GetGauge().GetValue()
	case m.Histogram != nil:
		return float64(m.GetHistogram().GetSampleCount())
	case m.Untyped != nil:
		return m.GetUntyped().GetValue()
	}
	s.t.Fatalf("%s{%s}: unexpected metric type", name, strings.Join(labels, ","))
	return 0
}
