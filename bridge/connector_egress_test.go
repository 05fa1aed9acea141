package bridge_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/hooks/auth"
	"github.com/mochi-mqtt/server/v2/listeners"
	"github.com/mochi-mqtt/server/v2/packets"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/weir-log/weir/api/hstreampb"
	"github.com/weir-log/weir/api/wire"
	"github.com/weir-log/weir/bridge"
	"github.com/weir-log/weir/broker"
	"github.com/weir-log/weir/cluster"
	"github.com/weir-log/weir/conf"
	"github.com/weir-log/weir/internal/mqtttest"
	"github.com/weir-log/weir/internal/nodetest"
	"github.com/weir-log/weir/subscription"
)

// egressWait bounds the waits of these tests for deliveries.
const egressWait = 30 * time.Second

// egressConfig is an egress connector named name to url on stream "s",
// topic out/${key}, from the earliest record, with short back-off and
// every other default filled (as conf.Load does), changed by mutate. It
// must validate.
func egressConfig(t *testing.T, name, url string, mutate func(*conf.EgressConnector)) conf.EgressConnector {
	t.Helper()
	ec := conf.EgressConnector{Name: name, Stream: "s", Topic: "out/${key}", Offset: "earliest"}
	ec.URL = url
	ec.ConnectTimeout = 2 * time.Second
	ec.ReconnectMin, ec.ReconnectMax = 50*time.Millisecond, 200*time.Millisecond
	if mutate != nil {
		mutate(&ec)
	}
	cfg := conf.Default()
	cfg.Connectors.Egress = []conf.EgressConnector{ec}
	cfg = cfg.WithDefaults()
	require.NoError(t, cfg.Validate())
	return cfg.Connectors.Egress[0]
}

// egressHarness is running connectors with their log and metrics.
type egressHarness struct {
	cs   *bridge.Connectors
	logs *nodetest.SyncBuffer
	reg  *prometheus.Registry
}

// startEgress starts egress connectors over n's node; they are closed
// when the test ends (before the node), and their log is printed if it
// failed. WEIR_TEST_LOG also sends it to stderr.
func startEgress(t *testing.T, n *nodetest.Node, ecs ...conf.EgressConnector) *egressHarness {
	t.Helper()
	h := &egressHarness{logs: &nodetest.SyncBuffer{}, reg: prometheus.NewRegistry()}
	var w io.Writer = h.logs
	if os.Getenv("WEIR_TEST_LOG") != "" {
		w = io.MultiWriter(h.logs, os.Stderr)
	}
	cs, err := bridge.NewConnectors(bridge.ConnectorsOptions{
		Node:          n.Server.Node(),
		Subscriptions: n.Server.Subscriptions(),
		Config:        conf.Connectors{Egress: ecs},
		Logger:        slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug})),
		Metrics:       h.reg,
	})
	require.NoError(t, err)
	h.cs = cs
	cs.Start()
	t.Cleanup(func() {
		require.NoError(t, cs.Close())
		if t.Failed() {
			t.Logf("connector log:\n%s", h.logs)
		}
	})
	return h
}

// count is the connectors' weir_connector_messages_total{direction="egress"}
// of one result.
func (h *egressHarness) count(t *testing.T, result string) int {
	t.Helper()
	return int(connectorMessages(t, h.reg, map[string]string{"direction": "egress", "result": result}))
}

// waitLog waits until the log matches re at least n times, and returns the
// matches.
func (h *egressHarness) waitLog(t *testing.T, re *regexp.Regexp, n int) []string {
	t.Helper()
	var lines []string
	require.Eventually(t, func() bool {
		lines = nil
		for _, l := range strings.Split(h.logs.String(), "\n") {
			if re.MatchString(l) {
				lines = append(lines, l)
			}
		}
		return len(lines) >= n
	}, egressWait, 10*time.Millisecond, "the connector log has fewer than %d lines matching %s", n, re)
	return lines
}

// egressRecordPayload is the payload of record seq of key.
func egressRecordPayload(key string, seq int) string { return fmt.Sprintf("%s-%04d", key, seq) }

// egressAppendKey appends the records [from, to) of key to stream, as one batch.
func egressAppendKey(ctx context.Context, api hstreampb.HStreamApiClient, shards *wire.ShardMap, stream, key string, from, to int) error {
	recs := make([]*hstreampb.HStreamRecord, 0, to-from)
	for i := from; i < to; i++ {
		recs = append(recs, groupRecord(key, "", egressRecordPayload(key, i)))
	}
	b, err := wire.EncodeBatch(recs, hstreampb.CompressionType_None)
	if err != nil {
		return err
	}
	_, err = api.Append(ctx, &hstreampb.AppendRequest{StreamName: stream, ShardId: shards.Lookup(key), Records: b})
	return err
}

func egressKeys(n int) []string {
	keys := make([]string, n)
	for i := range keys {
		keys[i] = "k" + strconv.Itoa(i)
	}
	return keys
}

// egressDistinct is the number of different payloads among msgs.
func egressDistinct(msgs []mqtttest.Message) int {
	seen := map[string]bool{}
	for _, m := range msgs {
		seen[string(m.Payload)] = true
	}
	return len(seen)
}

// egressWaitDistinct waits until the observer has n different payloads.
func egressWaitDistinct(t *testing.T, obs *mqtttest.Observer, n int) []mqtttest.Message {
	t.Helper()
	var msgs []mqtttest.Message
	require.Eventually(t, func() bool {
		msgs = obs.Messages()
		return egressDistinct(msgs) >= n
	}, egressWait, 10*time.Millisecond, "fewer than %d different messages arrived", n)
	return msgs
}

// egressCheckKeyOrder checks msgs against records 0..perKey-1 of each key: each on
// out/<key>, none unknown, none missing, and the first occurrences of each
// key's records in append order. It returns the duplicates.
func egressCheckKeyOrder(t *testing.T, msgs []mqtttest.Message, keys []string, perKey int) (dups []string) {
	t.Helper()
	next := map[string]int{} // by key: the seq of the next first occurrence
	seen := map[string]bool{}
	for _, m := range msgs {
		p := string(m.Payload)
		key, seqText, ok := strings.Cut(p, "-")
		seq, err := strconv.Atoi(seqText)
		require.True(t, ok && err == nil && seq < perKey, "unexpected message %q on %q", p, m.Topic)
		require.Equal(t, "out/"+key, m.Topic, "message %q", p)
		require.False(t, m.Retained, "message %q", p)
		if seen[p] {
			dups = append(dups, p)
			continue
		}
		seen[p] = true
		require.Equal(t, egressRecordPayload(key, next[key]), p, "key %s: first occurrences out of order", key)
		next[key]++
	}
	for _, k := range keys {
		require.Equal(t, perKey, next[k], "key %s: records missing", k)
	}
	return dups
}

// TestEgressPublishesInKeyOrderAcrossBrokerRestart appends 10 keys × 100
// records; the connector publishes them to out/<key> on the external
// broker (with a username and password), which restarts in the middle of
// the second half; then 10 × 50 more are appended while it is stopped.
// Everything arrives, the first occurrences of each key's records in
// append order.
func TestEgressPublishesInKeyOrderAcrossBrokerRestart(t *testing.T) {
	mqtttest.Each(t, func(t *testing.T, k mqtttest.Kind) {
		users := map[string]string{"weir": "s3cret"}
		b := mqtttest.Start(t, k, mqtttest.Options{Users: users})
		obs := b.Observe(t, "out/#")
		n := nodetest.Start(t)
		shards := createGroupStream(t, n.API, "s", 3)
		h := startEgress(t, n, egressConfig(t, "out-"+string(k), b.URL, func(ec *conf.EgressConnector) {
			ec.Username, ec.Password = "weir", "s3cret"
		}))
		keys := egressKeys(10)
		const half, all = 50, 100

		// First half: one batch of 50 per key.
		ctx := groupCtx(t)
		for _, key := range keys {
			require.NoError(t, egressAppendKey(ctx, n.API, shards, "s", key, 0, half))
		}
		egressCheckKeyOrder(t, egressWaitDistinct(t, obs, len(keys)*half), keys, half)

		// Second half: one record per append, while the broker restarts.
		done := make(chan error, 1)
		go func() {
			for i := half; i < all; i++ {
				for _, key := range keys {
					if err := egressAppendKey(ctx, n.API, shards, "s", key, i, i+1); err != nil {
						done <- err
						return
					}
				}
			}
			done <- nil
		}()
		egressWaitDistinct(t, obs, len(keys)*half+len(keys)*5)
		b.Restart(t)
		atRestart := egressDistinct(obs.Messages())
		select {
		case err := <-done:
			require.NoError(t, err)
		case <-time.After(egressWait):
			t.Fatal("appending the second half takes too long")
		}
		msgs := egressWaitDistinct(t, obs, len(keys)*all)
		dups := egressCheckKeyOrder(t, msgs, keys, all)
		h.waitLog(t, regexp.MustCompile(`connector lost its broker connection`), 1)
		t.Logf("%s: %d records, %d delivered before the restart, %d messages, %d duplicates %v; metrics: published %d, retried %d",
			k, len(keys)*all, atRestart, len(msgs), len(dups), dups, h.count(t, "published"), h.count(t, "retried"))

		// A third round, in batches of 10, appended while the broker is
		// down: delivered once it is back.
		const total = all + 50
		b.Stop(t)
		h.waitLog(t, regexp.MustCompile(`connector cannot connect to its broker; retrying`), 1)
		for i := all; i < total; i += 10 {
			for _, key := range keys {
				require.NoError(t, egressAppendKey(ctx, n.API, shards, "s", key, i, i+10))
			}
		}
		b.Start(t)
		msgs = egressWaitDistinct(t, obs, len(keys)*total)
		dups = egressCheckKeyOrder(t, msgs, keys, total)
		t.Logf("%s: after a stop and start: %d records, %d messages, %d duplicates; metrics: published %d, retried %d",
			k, len(keys)*total, len(msgs), len(dups), h.count(t, "published"), h.count(t, "retried"))
		require.Eventually(t, func() bool { // the last PUBACKs may come after the messages
			return h.count(t, "published") >= len(keys)*total
		}, egressWait, 10*time.Millisecond, "published: %d", h.count(t, "published"))
		require.Zero(t, h.count(t, "skipped"))
	})
}

// TestEgressBadCredentialsRetries: a connector with a wrong password logs
// a clear error naming the connector and the url, retries, and neither
// stops the node nor delays Close.
func TestEgressBadCredentialsRetries(t *testing.T) {
	mqtttest.Each(t, func(t *testing.T, k mqtttest.Kind) {
		b := mqtttest.Start(t, k, mqtttest.Options{Users: map[string]string{"weir": "s3cret"}})
		n := nodetest.Start(t)
		createGroupStream(t, n.API, "s", 1)
		h := startEgress(t, n, egressConfig(t, "badpw", b.URL, func(ec *conf.EgressConnector) {
			ec.Username, ec.Password = "weir", "wrong"
		}))
		lines := h.waitLog(t, regexp.MustCompile(`level=WARN msg="connector cannot connect to its broker; retrying".* connector=badpw .*url=`+regexp.QuoteMeta(b.URL)+`.*(?i:not authori[sz]ed|bad user name or password)`), 2)
		t.Logf("%s: %s", k, lines[1])
		egressRequireNodeServes(t, n)
		egressClosePromptly(t, h)
	})
}

// TestEgressBadAddressRetries: a connector whose broker is not there logs
// a clear error naming the connector and the url, retries, and neither
// stops the node nor delays Close.
func TestEgressBadAddressRetries(t *testing.T) {
	n := nodetest.Start(t)
	createGroupStream(t, n.API, "s", 1)
	url := "tcp://" + nodetest.FreeAddr(t) // nothing listens there
	h := startEgress(t, n, egressConfig(t, "nobroker", url, nil))
	lines := h.waitLog(t, regexp.MustCompile(`level=WARN msg="connector cannot connect to its broker; retrying".* connector=nobroker .*url=`+regexp.QuoteMeta(url)+`.*connection refused`), 2)
	t.Log(lines[1])
	egressRequireNodeServes(t, n)
	egressClosePromptly(t, h)
}

// egressRequireNodeServes appends to the node and reads the record back.
func egressRequireNodeServes(t *testing.T, n *nodetest.Node) {
	t.Helper()
	_, err := n.API.CreateStream(groupCtx(t), &hstreampb.Stream{StreamName: "alive", ShardCount: 1, ReplicationFactor: 1})
	require.NoError(t, err)
	shards := egressShardMap(t, n.API, "alive")
	require.NoError(t, egressAppendKey(groupCtx(t), n.API, shards, "alive", "k", 0, 1))
	require.Len(t, n.Records(t, "alive"), 1)
}

func egressShardMap(t *testing.T, api hstreampb.HStreamApiClient, stream string) *wire.ShardMap {
	t.Helper()
	resp, err := api.ListShards(groupCtx(t), &hstreampb.ListShardsRequest{StreamName: stream})
	require.NoError(t, err)
	m, err := wire.NewShardMap(resp.GetShards())
	require.NoError(t, err)
	return m
}

// egressClosePromptly closes the connectors, which must not take long (a
// connection attempt in progress is abandoned).
func egressClosePromptly(t *testing.T, h *egressHarness) {
	t.Helper()
	start := time.Now()
	require.NoError(t, h.cs.Close())
	require.Less(t, time.Since(start), 2*time.Second, "Close took too long")
}

// TestEgressSkipsUnpublishableAndPublishesJSON: a record whose topic
// renders to a wildcard is acked and skipped (logged, counted); a JSON
// record is published as JSON text; a batch larger than max-inflight goes
// through the window in order; records without mqtt.topic are published
// on the stream's name.
func TestEgressSkipsUnpublishableAndPublishesJSON(t *testing.T) {
	mqtttest.Each(t, func(t *testing.T, k mqtttest.Kind) {
		b := mqtttest.Start(t, k, mqtttest.Options{})
		obs := b.Observe(t, "out/#") // not "#": mochi sends $SYS topics to inline subscribers of "#"
		n := nodetest.Start(t)
		shards := createGroupStream(t, n.API, "s", 1)
		h := startEgress(t, n, egressConfig(t, "skips", b.URL, func(ec *conf.EgressConnector) {
			ec.Topic = "out/${topic}"
			ec.MaxInflight = 8
		}))

		st, err := structpb.NewStruct(map[string]any{"temp": 21.5, "unit": "C", "ok": true})
		require.NoError(t, err)
		js, err := proto.Marshal(st)
		require.NoError(t, err)
		recs := []*hstreampb.HStreamRecord{
			groupRecord("d", "a/+/b", "wildcard"),
			groupRecord("d", "", "no topic"),
			{Header: &hstreampb.HStreamRecordHeader{Flag: hstreampb.HStreamRecordHeader_JSON, Key: "d",
				Attributes: map[string]string{bridge.AttrTopic: "json/1"}}, Payload: js},
		}
		for i := range 50 {
			recs = append(recs, groupRecord("d", "seq", strconv.Itoa(i)))
		}
		ids := egressAppendBatch(t, n.API, "s", shards, recs)

		msgs := obs.WaitCount(t, len(recs)-1, egressWait)
		require.Equal(t, mqtttest.Message{Topic: "out/s", Payload: []byte("no topic")}, msgs[0])
		require.Equal(t, "out/json/1", msgs[1].Topic)
		require.JSONEq(t, `{"ok":true,"temp":21.5,"unit":"C"}`, string(msgs[1].Payload))
		require.Equal(t, `{"ok":true,"temp":21.5,"unit":"C"}`, string(msgs[1].Payload), "compact, keys sorted")
		seq := 0
		for _, m := range msgs[2:] {
			require.Equal(t, "out/seq", m.Topic)
			require.Equal(t, strconv.Itoa(seq), string(m.Payload))
			seq++
		}
		require.Equal(t, 50, seq)
		h.waitLog(t, regexp.MustCompile(`level=WARN msg="egress connector: a record's topic cannot be published to; the record is acked and skipped".* topic=out/a/\+/b problem="it has a wildcard`), 1)
		require.Eventually(t, func() bool {
			return h.count(t, "skipped") == 1 && h.count(t, "published") == len(recs)-1
		}, egressWait, 10*time.Millisecond)

		// Everything was acked, the skipped record too: the subscription's
		// checkpoint passes the batch.
		require.Eventually(t, func() bool {
			c, err := n.Server.Subscriptions().Committed(groupCtx(t), "weir-egress-skips")
			return err == nil && c[ids[0].GetShardId()] > ids[0].GetBatchId()
		}, egressWait, 50*time.Millisecond)
	})
}

// egressAppendBatch appends recs (all of one key) to stream as one batch
// and returns their ids.
func egressAppendBatch(t *testing.T, api hstreampb.HStreamApiClient, stream string, shards *wire.ShardMap, recs []*hstreampb.HStreamRecord) []*hstreampb.RecordId {
	t.Helper()
	b, err := wire.EncodeBatch(recs, hstreampb.CompressionType_None)
	require.NoError(t, err)
	resp, err := api.Append(groupCtx(t), &hstreampb.AppendRequest{StreamName: stream, ShardId: shards.Lookup(recs[0].GetHeader().GetKey()), Records: b})
	require.NoError(t, err)
	require.Len(t, resp.GetRecordIds(), len(recs))
	return resp.GetRecordIds()
}

// TestEgressWaitsForItsStream: a connector whose stream does not exist yet
// warns and retries, and publishes once the stream is created; one whose
// subscription reads another stream logs that and retries.
func TestEgressWaitsForItsStream(t *testing.T) {
	b := mqtttest.Start(t, mqtttest.Mochi, mqtttest.Options{})
	obs := b.Observe(t, "out/#")
	n := nodetest.Start(t)
	createGroupStream(t, n.API, "other", 1)
	_, err := n.Server.Node().CreateSubscription(groupCtx(t), cluster.SubscriptionMeta{
		ID: "taken", Stream: "other", AckTimeoutSeconds: 10, MaxUnackedRecords: 10, Offset: cluster.OffsetEarliest,
	})
	require.NoError(t, err)
	h := startEgress(t, n,
		egressConfig(t, "later", b.URL, nil),
		egressConfig(t, "wrongsub", b.URL, func(ec *conf.EgressConnector) { ec.Subscription = "taken" }),
	)
	h.waitLog(t, regexp.MustCompile(`level=WARN msg="egress connector's stream does not exist \(yet\); retrying".* connector=later .*stream=s `), 2)
	h.waitLog(t, regexp.MustCompile(`level=WARN msg="egress connector's subscription reads another stream.* connector=wrongsub .*reads stream \\"other\\", not \\"s\\"`), 2)

	shards := createGroupStream(t, n.API, "s", 2)
	require.NoError(t, egressAppendKey(groupCtx(t), n.API, shards, "s", "k", 0, 20))
	egressCheckKeyOrder(t, egressWaitDistinct(t, obs, 20), []string{"k"}, 20)
}

// TestEgressConfigErrors: NewConnectors refuses what cannot work, naming
// the connector's key, before connecting anywhere.
func TestEgressConfigErrors(t *testing.T) {
	for _, tc := range []struct {
		name   string
		mutate func(*conf.EgressConnector)
		want   string
	}{
		{"unknown variable", func(ec *conf.EgressConnector) { ec.Topic = "out/${clientid}" },
			`connectors.egress[0] (bad).topic: "out/${clientid}": unknown variable ${clientid} (want ${stream}, ${key} or ${topic})`},
		{"unclosed variable", func(ec *conf.EgressConnector) { ec.Topic = "out/${key" },
			`connectors.egress[0] (bad).topic: "out/${key": "${key" is not closed with }`},
		{"wildcard", func(ec *conf.EgressConnector) { ec.Topic = "out/+/${key}" },
			`connectors.egress[0] (bad).topic: "out/+/${key}": has a wildcard (+ or #)`},
		{"stream", func(ec *conf.EgressConnector) { ec.Stream = "1st" },
			`connectors.egress[0] (bad).stream: "1st" is not a valid stream name`},
		{"subscription", func(ec *conf.EgressConnector) { ec.Subscription = "a b" },
			`connectors.egress[0] (bad).subscription: "a b" is not a valid subscription id`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ec := egressConfig(t, "bad", "tcp://127.0.0.1:1", nil)
			tc.mutate(&ec)
			_, err := bridge.NewConnectors(bridge.ConnectorsOptions{
				Node:          new(cluster.Node), // never used: compiling does no I/O
				Subscriptions: new(subscription.Manager),
				Config:        conf.Connectors{Egress: []conf.EgressConnector{ec}},
			})
			require.ErrorContains(t, err, tc.want)
		})
	}
}

// egressHoldHook holds the first PUBLISH from a network client until released,
// so that nothing the client sends meanwhile is acknowledged.
type egressHoldHook struct {
	mqtt.HookBase
	held        chan struct{} // closed when the first PUBLISH is held
	release     chan struct{}
	holdOnce    sync.Once
	releaseOnce sync.Once
}

func (h *egressHoldHook) ID() string { return "hold" }

func (h *egressHoldHook) Provides(b byte) bool { return b == mqtt.OnPublish }

func (h *egressHoldHook) OnPublish(cl *mqtt.Client, pk packets.Packet) (packets.Packet, error) {
	if !cl.Net.Inline {
		h.holdOnce.Do(func() {
			close(h.held)
			<-h.release
		})
	}
	return pk, nil
}

func (h *egressHoldHook) Release() { h.releaseOnce.Do(func() { close(h.release) }) }

// TestEgressRedeliveredBatchIsNotPublishedAgain: the broker holds the
// connector's first PUBLISH past the ack timeout, so the connector
// publishes the batch again (no PUBACK) and the subscription delivers it
// again (ack timeout). Once the broker goes on, the batch is published
// twice, not three times: the redelivered copy is acked, not published.
func TestEgressRedeliveredBatchIsNotPublishedAgain(t *testing.T) {
	hold := &egressHoldHook{held: make(chan struct{}), release: make(chan struct{})}
	srv := mqtt.New(&mqtt.Options{InlineClient: true, Logger: nodetest.Logger()})
	require.NoError(t, srv.AddHook(new(auth.AllowHook), nil))
	require.NoError(t, srv.AddHook(hold, nil))
	l := listeners.NewTCP(listeners.Config{ID: "t", Address: "127.0.0.1:0"})
	require.NoError(t, srv.AddListener(l))
	var mu sync.Mutex
	var got []string
	require.NoError(t, srv.Subscribe("out/#", 1, func(_ *mqtt.Client, _ packets.Subscription, pk packets.Packet) {
		mu.Lock()
		got = append(got, string(pk.Payload))
		mu.Unlock()
	}))
	require.NoError(t, srv.Serve())
	t.Cleanup(func() {
		hold.Release()
		_ = broker.CloseServer(srv)
	})

	n := nodetest.Start(t)
	shards := createGroupStream(t, n.API, "s", 1)
	h := startEgress(t, n, egressConfig(t, "held", "tcp://"+l.Address(), func(ec *conf.EgressConnector) {
		ec.AckTimeout = 2 * time.Second
	}))
	subs := n.Server.Subscriptions()
	before := subs.Stats()
	ctx := groupCtx(t)
	require.NoError(t, egressAppendKey(ctx, n.API, shards, "s", "k", 0, 5))
	select {
	case <-hold.held:
	case <-time.After(egressWait):
		t.Fatal("the connector published nothing")
	}
	h.waitLog(t, regexp.MustCompile(`msg="egress connector: publishing failed.* error="bridge: no PUBACK within the ack timeout"`), 1)
	require.Eventually(t, func() bool {
		return subs.Stats().RedeliveredRecords-before.RedeliveredRecords >= 5
	}, egressWait, 10*time.Millisecond, "the subscription did not deliver the batch again")
	hold.Release()

	// Records appended later come after the redelivered copy.
	require.NoError(t, egressAppendKey(ctx, n.API, shards, "s", "k", 5, 10))
	counts := map[string]int{}
	require.Eventually(t, func() bool {
		mu.Lock()
		defer mu.Unlock()
		clear(counts)
		for _, p := range got {
			counts[p]++
		}
		return counts[egressRecordPayload("k", 9)] > 0
	}, egressWait, 10*time.Millisecond)
	for i := range 10 {
		want := 1
		if i < 5 {
			want = 2 // the PUBLISH held, and the one sent again
		}
		require.Equal(t, want, counts[egressRecordPayload("k", i)], "record %d", i)
	}
	require.Eventually(t, func() bool { // the last PUBACKs may come after the messages
		return h.count(t, "published") == 10
	}, egressWait, 10*time.Millisecond, "published: %d", h.count(t, "published"))
	require.Equal(t, 5, h.count(t, "retried"))
	require.GreaterOrEqual(t, subs.Stats().DuplicateAcks-before.DuplicateAcks, uint64(5), "the redelivered copy is acked again")
}
