package bridge_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	paho3 "github.com/eclipse/paho.mqtt.golang"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/weir-log/weir/api/hstreampb"
	"github.com/weir-log/weir/bridge"
	"github.com/weir-log/weir/cluster"
	"github.com/weir-log/weir/conf"
	"github.com/weir-log/weir/internal/mqtttest"
	"github.com/weir-log/weir/internal/nodetest"
)

// ingestConnRig is a node running ingest connectors against an external
// broker, with their log and metrics captured.
type ingestConnRig struct {
	n   *nodetest.Node
	cs  *bridge.Connectors
	log *nodetest.SyncBuffer
	reg *prometheus.Registry
}

// ingestConnConfig is one ingest connector to url with the test's short
// back-off, defaults filled.
func ingestConnConfig(url string, mutate func(*conf.IngestConnector)) conf.Connectors {
	ic := conf.IngestConnector{
		Name:    "in",
		Remote:  conf.Remote{URL: url, ReconnectMin: 50 * time.Millisecond, ReconnectMax: 200 * time.Millisecond, ConnectTimeout: 2 * time.Second},
		Filters: []string{"dev/+/temp"},
		Routes:  []conf.Route{{Filter: "dev/+/temp", Stream: "devs", Key: "${topic[1]}", Create: true}},
	}
	if mutate != nil {
		mutate(&ic)
	}
	cfg := &conf.Config{Connectors: conf.Connectors{Ingest: []conf.IngestConnector{ic}}}
	return cfg.WithDefaults().Connectors
}

// startIngestConn starts connectors on n (a new node when nil); they are
// closed at the end of the test.
func startIngestConn(t *testing.T, n *nodetest.Node, cfg conf.Connectors) *ingestConnRig {
	t.Helper()
	r := newIngestConn(t, n, cfg)
	r.cs.Start()
	return r
}

// newIngestConn is startIngestConn without the start.
func newIngestConn(t *testing.T, n *nodetest.Node, cfg conf.Connectors) *ingestConnRig {
	t.Helper()
	if n == nil {
		n = nodetest.Start(t)
	}
	r := &ingestConnRig{n: n, log: new(nodetest.SyncBuffer), reg: prometheus.NewRegistry()}
	cs, err := bridge.NewConnectors(bridge.ConnectorsOptions{
		Node:          n.Server.Node(),
		Config:        cfg,
		Stream:        conf.StreamDefaults{ShardCount: 4, ReplicationFactor: 1},
		MaxRecordSize: 1024,
		Logger:        slog.New(slog.NewTextHandler(r.log, &slog.HandlerOptions{Level: slog.LevelDebug})),
		Metrics:       r.reg,
	})
	require.NoError(t, err)
	r.cs = cs
	t.Cleanup(func() {
		cs.Close()
		if t.Failed() {
			t.Logf("connector log:\n%s", r.log)
		}
	})
	return r
}

// waitSubscribed waits until the connector has subscribed n times in all.
func (r *ingestConnRig) waitSubscribed(t *testing.T, n int) {
	t.Helper()
	require.Eventually(t, func() bool {
		return strings.Count(r.log.String(), "connector subscribed") >= n
	}, waitFor, 10*time.Millisecond, "the connector did not subscribe")
}

// counted is weir_connector_messages_total of the ingest connector "in"
// for result.
func (r *ingestConnRig) counted(t *testing.T, result string) float64 {
	t.Helper()
	return connectorMessages(t, r.reg, map[string]string{"connector": "in", "direction": "ingest", "result": result})
}

// streamRecords reads a stream back, or nil while it does not exist or
// its shards are not all open yet.
func streamRecords(t *testing.T, n *nodetest.Node, stream string) []*hstreampb.HStreamRecord {
	t.Helper()
	metas, err := n.Server.Node().StreamShards(stream)
	if errors.Is(err, cluster.ErrStreamNotFound) {
		return nil
	}
	require.NoError(t, err)
	for _, m := range metas {
		if _, err := n.Server.Node().Shard(m.ID); err != nil {
			return nil
		}
	}
	return n.Records(t, stream)
}

// devMessage is message i of a publish run: 10 devices, round robin.
func devMessage(i int) (topic string, payload []byte) {
	return fmt.Sprintf("dev/d%d/temp", i%10), []byte(strconv.Itoa(i))
}

// 5,000 QoS 1 messages published to the external broker land in the
// stream once each, keyed by the device's topic level, with their topic,
// in publish order per key; all are acknowledged (a new connection on the
// same session gets nothing again).
func TestIngestConnectorStoresEveryMessage(t *testing.T) {
	mqtttest.Each(t, func(t *testing.T, k mqtttest.Kind) {
		b := mqtttest.Start(t, k, mqtttest.Options{})
		r := startIngestConn(t, nil, ingestConnConfig(b.URL, nil))
		r.waitSubscribed(t, 1)

		const total = 5000
		start := time.Now()
		b.Publish(t, "publisher", "", "", total, devMessage)
		var recs []*hstreampb.HStreamRecord
		require.Eventually(t, func() bool {
			recs = streamRecords(t, r.n, "devs")
			return len(recs) >= total
		}, 60*time.Second, 20*time.Millisecond, "records in the stream")
		t.Logf("%s: %d messages stored in %v", k, total, time.Since(start).Round(time.Millisecond))
		require.Len(t, recs, total, "no duplicates in a clean run")

		seen := map[int]bool{}
		last := map[string]int{}
		for _, rec := range recs {
			i, err := strconv.Atoi(string(rec.Payload))
			require.NoError(t, err)
			require.False(t, seen[i], "message %d stored twice", i)
			seen[i] = true
			topic, _ := devMessage(i)
			dev := fmt.Sprintf("d%d", i%10)
			a := rec.Header.Attributes
			require.Equal(t, dev, rec.Header.Key)
			require.Equal(t, topic, a[bridge.AttrTopic])
			require.Equal(t, "1", a[bridge.AttrQoS])
			require.Equal(t, "weir-in", a[bridge.AttrClientID])
			require.Equal(t, "in", a[bridge.AttrConnector])
			if prev, ok := last[dev]; ok {
				require.Greater(t, i, prev, "key %s out of publish order", dev)
			}
			last[dev] = i
		}
		require.Eventually(t, func() bool { return r.counted(t, "stored") == total }, waitFor, 10*time.Millisecond)
		assert.Zero(t, r.counted(t, "refused"))

		// Everything was acknowledged: the session holds nothing to deliver
		// again to the next connection.
		r.cs.Close()
		again := startIngestConn(t, r.n, ingestConnConfig(b.URL, nil))
		again.waitSubscribed(t, 1)
		assert.Never(t, func() bool { return again.counted(t, "stored")+again.counted(t, "refused") > 0 }, time.Second, 20*time.Millisecond,
			"messages delivered again after they were acknowledged")
		assert.Len(t, streamRecords(t, r.n, "devs"), total)
	})
}

// Messages that can never be stored (a topic no route gives a valid
// stream name, a payload over max-record-size) are acknowledged, counted
// and logged, and do not hold up those after them.
func TestIngestConnectorRefusesWhatCannotBeStored(t *testing.T) {
	mqtttest.Each(t, func(t *testing.T, k mqtttest.Kind) {
		b := mqtttest.Start(t, k, mqtttest.Options{})
		r := startIngestConn(t, nil, ingestConnConfig(b.URL, func(ic *conf.IngestConnector) {
			ic.Filters = []string{"dev/+/temp", "other/#"}
			// other/<stream>: "1st" and "9lives" are not stream names.
			ic.Routes = append(ic.Routes, conf.Route{Filter: "other/#", Stream: "${topic[1]}", Create: true})
			ic.MaxPending = 4
		}))
		r.waitSubscribed(t, 1)
		b.Publish(t, "publisher", "", "", 30, func(i int) (string, []byte) {
			switch i % 3 {
			case 0:
				return "dev/d1/temp", []byte(strconv.Itoa(i))
			case 1:
				if i/3%2 == 0 {
					return "other/1st", []byte("unrouted")
				}
				return "dev/d1/temp", []byte(strings.Repeat("x", 2000)) // over MaxRecordSize
			default:
				return "other/9lives", []byte("unrouted")
			}
		})
		require.Eventually(t, func() bool { return r.counted(t, "stored") == 10 && r.counted(t, "refused") == 20 },
			waitFor, 10*time.Millisecond, "stored %v, refused %v", r.counted(t, "stored"), r.counted(t, "refused"))
		assert.Len(t, streamRecords(t, r.n, "devs"), 10)
		assert.Zero(t, r.counted(t, "retried"))
		logs := r.log.String()
		assert.Regexp(t, `level=WARN msg="message refused: it cannot be stored, so it is acknowledged and dropped" .*`+
			`topic=other/1st stream="" reason="no route matches its topic with a valid stream name"`, logs)
		assert.Contains(t, logs, `topic=dev/d1/temp stream=devs reason="its payload of 2000 bytes is over store.max-record-size (1024)"`)

		// All were acknowledged: the session holds nothing to deliver again.
		r.cs.Close()
		again := startIngestConn(t, r.n, ingestConnConfig(b.URL, nil))
		again.waitSubscribed(t, 1)
		assert.Never(t, func() bool { return again.counted(t, "stored")+again.counted(t, "refused") > 0 }, time.Second, 20*time.Millisecond,
			"messages delivered again after they were acknowledged")
	})
}

// missingStreamRetries counts the warnings of retries of messages whose
// stream "nostream" does not exist (and may not be created).
func missingStreamRetries(log string) int {
	return len(regexp.MustCompile(`level=WARN msg="message not stored: its stream does not exist and its route does not create it; `+
		`retrying until the stream is created \(the broker keeps the messages\)" .*stream=nostream topic=missing/x`).FindAllString(log, -1))
}

// withMissingRoute adds missing/# to the filters, routed to "nostream",
// which the route may not create.
func withMissingRoute(ic *conf.IngestConnector) {
	ic.Filters = append(ic.Filters, "missing/#")
	ic.Routes = append(ic.Routes, conf.Route{Filter: "missing/#", Stream: "nostream"})
}

// createStream creates a stream of one shard through the node's API.
func createStream(t *testing.T, n *nodetest.Node, name string) {
	t.Helper()
	_, err := n.API.CreateStream(context.Background(), &hstreampb.Stream{StreamName: name, ReplicationFactor: 1, ShardCount: 1})
	require.NoError(t, err)
}

// Messages for a stream that does not exist and that their route may not
// create are not acknowledged: the connector warns, naming the stream, and
// retries; a new connection gets them again from the broker; once the
// stream is created they are stored, once each (in order, where the broker
// delivers them again in order), and acknowledged.
func TestIngestConnectorWaitsForAMissingStream(t *testing.T) {
	mqtttest.Each(t, func(t *testing.T, k mqtttest.Kind) {
		b := mqtttest.Start(t, k, mqtttest.Options{})
		cfg := ingestConnConfig(b.URL, withMissingRoute)
		r := startIngestConn(t, nil, cfg)
		r.waitSubscribed(t, 1)
		const total = 5
		b.Publish(t, "publisher", "", "", total, func(i int) (string, []byte) { return "missing/x", []byte(strconv.Itoa(i)) })
		require.Eventually(t, func() bool { return missingStreamRetries(r.log.String()) >= 2 }, waitFor, 10*time.Millisecond,
			"no warnings of retries naming the missing stream")
		assert.Zero(t, r.counted(t, "stored")+r.counted(t, "refused"))

		// Nothing was acknowledged: the broker delivers it all again.
		r.cs.Close()
		again := startIngestConn(t, r.n, cfg)
		again.waitSubscribed(t, 1)
		require.Eventually(t, func() bool { return missingStreamRetries(again.log.String()) >= 1 }, waitFor, 10*time.Millisecond,
			"the broker did not deliver the unacknowledged messages again")

		createStream(t, r.n, "nostream")
		require.Eventually(t, func() bool { return again.counted(t, "stored") == total }, waitFor, 10*time.Millisecond,
			"stored %v", again.counted(t, "stored"))
		var got []string
		for _, rec := range streamRecords(t, r.n, "nostream") {
			got = append(got, string(rec.Payload))
		}
		if k == mqtttest.Mosquitto {
			assert.Equal(t, []string{"0", "1", "2", "3", "4"}, got)
		} else { // mochi does not deliver again in order
			assert.ElementsMatch(t, []string{"0", "1", "2", "3", "4"}, got)
		}
		assert.NotZero(t, again.counted(t, "retried"))
		assert.Zero(t, again.counted(t, "refused"))

		// Now they were acknowledged.
		again.cs.Close()
		third := startIngestConn(t, r.n, cfg)
		third.waitSubscribed(t, 1)
		assert.Never(t, func() bool { return third.counted(t, "stored")+third.counted(t, "refused") > 0 }, time.Second, 20*time.Millisecond,
			"messages delivered again after they were acknowledged")
	})
}

// A connector whose broker is not there logs each failed attempt, naming
// itself, the url and the error, and keeps retrying; Close stops it at
// once.
func TestIngestConnectorBadAddressRetries(t *testing.T) {
	url := "tcp://" + nodetest.FreeAddr(t) // nothing listens there
	r := startIngestConn(t, nil, ingestConnConfig(url, nil))
	r.requireRetries(t, url, "connection refused")
}

// A connector with a wrong password logs the broker's refusal and keeps
// retrying; Close stops it at once.
func TestIngestConnectorBadCredentialsRetries(t *testing.T) {
	n := nodetest.Start(t)
	mqtttest.Each(t, func(t *testing.T, k mqtttest.Kind) {
		b := mqtttest.Start(t, k, mqtttest.Options{Users: map[string]string{"weir": "right"}})
		r := startIngestConn(t, n, ingestConnConfig(b.URL, func(ic *conf.IngestConnector) {
			ic.Username, ic.Password = "weir", "wrong"
		}))
		r.requireRetries(t, b.URL, "(bad user name or password|not Authori[sz]ed)")
	})
}

// requireRetries checks that the connector logs at least two failed
// attempts to connect to url, naming itself, the url and an error matching
// errRE, and that Close then returns promptly.
func (r *ingestConnRig) requireRetries(t *testing.T, url, errRE string) {
	t.Helper()
	want := regexp.MustCompile(`level=WARN msg="connector cannot connect to its broker; retrying" .*connector=in direction=ingest url=` +
		regexp.QuoteMeta(url) + ` .*error=".*` + errRE)
	require.Eventually(t, func() bool { return len(want.FindAllString(r.log.String(), -1)) >= 2 }, waitFor, 10*time.Millisecond,
		"want two failed attempts logged:\n%s", r.log)
	start := time.Now()
	r.cs.Close()
	assert.Less(t, time.Since(start), 2*time.Second, "Close of a connector that cannot connect")
}

// Filters and routes that do not compile fail NewConnectors with an error
// naming the connector's key.
func TestIngestConnectorConfigErrors(t *testing.T) {
	for _, tc := range []struct {
		mutate func(*conf.IngestConnector)
		want   string
	}{
		{func(ic *conf.IngestConnector) { ic.Filters = []string{"dev/+/temp", "a/#/b"} }, `connectors.ingest[0] (in).filters[1] ("a/#/b"): filter is not a valid MQTT topic filter`},
		{func(ic *conf.IngestConnector) { ic.Filters = []string{"$share/g/dev/#"} }, `connectors.ingest[0] (in).filters[0] ("$share/g/dev/#"): filter must be a topic filter, not a shared subscription`},
		{func(ic *conf.IngestConnector) { ic.Routes[0].Key = "${nope}" }, `connectors.ingest[0] (in).routes[0] (filter "dev/+/temp"): key "${nope}"`},
		{func(ic *conf.IngestConnector) {
			ic.Filters = []string{"dev/+/temp", "dev/#"}
			ic.Routes = append(ic.Routes, conf.Route{Filter: "dev/+/+/#", Stream: "deep"})
		}, `connectors.ingest[0] (in).filters[1] ("dev/#"): no route covers it: every topic it matches must match one route's filter (the routes' filters are "dev/+/temp", "dev/+/+/#")`},
		{func(ic *conf.IngestConnector) { ic.Routes, ic.Filters = nil, []string{"#", "$SYS/#"} },
			`connectors.ingest[0] (in).filters[1] ("$SYS/#"): no route covers it: every topic it matches must match one route's filter (the default route's filter is "#", and a filter whose first level starts with '$' is covered only by a route naming that level)`},
	} {
		_, err := bridge.NewConnectors(bridge.ConnectorsOptions{
			Node:   new(cluster.Node), // compiling does no I/O
			Config: ingestConnConfig("tcp://127.0.0.1:1", tc.mutate),
		})
		require.ErrorContains(t, err, tc.want)
	}

	// Filters that routes cover.
	for _, tc := range []struct{ filters, routes []string }{
		{[]string{"#", "a/+/b", "a"}, nil}, // the default route
		{[]string{"dev/+/temp", "dev/x", "dev", "dev/#"}, []string{"dev/+/temp", "dev/#"}},
		{[]string{"+/#", "#"}, []string{"+/#"}},
		{[]string{"$SYS/x", "$SYS/#"}, []string{"#", "$SYS/#"}},
	} {
		_, err := bridge.NewConnectors(bridge.ConnectorsOptions{
			Node: new(cluster.Node),
			Config: ingestConnConfig("tcp://127.0.0.1:1", func(ic *conf.IngestConnector) {
				ic.Filters, ic.Routes = tc.filters, nil
				for _, f := range tc.routes {
					ic.Routes = append(ic.Routes, conf.Route{Filter: f, Stream: "s"})
				}
			}),
		})
		require.NoError(t, err, "filters %q, routes %q", tc.filters, tc.routes)
	}
}

// fakeMessage is a QoS 1 message as paho hands it to the connector; Ack
// reports its packet ID.
type fakeMessage struct {
	id    uint16
	dup   bool
	topic string
	acks  chan<- uint16
}

func (m *fakeMessage) Duplicate() bool   { return m.dup }
func (m *fakeMessage) Qos() byte         { return 1 }
func (m *fakeMessage) Retained() bool    { return false }
func (m *fakeMessage) Topic() string     { return m.topic }
func (m *fakeMessage) MessageID() uint16 { return m.id }
func (m *fakeMessage) Payload() []byte   { return []byte("x") }
func (m *fakeMessage) Ack()              { m.acks <- m.id }

// No PUBACK can acknowledge a message that is not settled: a DUP copy of a
// packet ID already received on the connection gets no second PUBACK (the
// broker may have reused the ID by then), a redelivery on a new connection
// is answered, and a message settled after its connection was lost is not
// acknowledged at all. (Unrouted messages: refused, so acknowledged as soon
// as they are settled.)
func TestIngestConnectorAcksOnlyItsConnectionsMessages(t *testing.T) {
	cs, err := bridge.NewConnectors(bridge.ConnectorsOptions{
		Node:   new(cluster.Node), // unrouted messages touch no stream
		Config: ingestConnConfig("tcp://127.0.0.1:1", nil),
	})
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	handle, reconnect, settle := bridge.DriveIngestConnector(ctx, cs, 0)
	acks := make(chan uint16, 100)
	msg := func(id uint16, dup bool) *fakeMessage {
		return &fakeMessage{id: id, dup: dup, topic: "unrouted/x", acks: acks}
	}
	nextAck := func() uint16 {
		t.Helper()
		select {
		case id := <-acks:
			return id
		case <-time.After(waitFor):
			t.Fatal("no PUBACK")
			return 0
		}
	}

	reconnect()
	handle(msg(7, false)) // queued; its connection is lost before it is settled
	reconnect()
	settle()
	handle(msg(5, false))
	require.Equal(t, uint16(5), nextAck(), "message 7 of the lost connection acknowledged")
	handle(msg(5, true)) // the broker's retransmit of 5: 5's PUBACK settles it
	handle(msg(6, false))
	require.Equal(t, uint16(6), nextAck(), "a second PUBACK for packet ID 5")
	handle(msg(5, false)) // ID 5 reused for a new message
	require.Equal(t, uint16(5), nextAck())

	reconnect()
	handle(msg(6, true)) // redelivered on the new connection
	require.Equal(t, uint16(6), nextAck())
	select {
	case id := <-acks:
		t.Fatalf("unexpected PUBACK %d", id)
	default:
	}
}

// drivenIngestConn is an ingest connector on a real node, driven by the
// test (bridge.DriveIngestConnector) with fakeMessages, its settler
// running; acks receives the packet IDs it acknowledges.
type drivenIngestConn struct {
	*ingestConnRig
	handle    func(paho3.Message)
	reconnect func()
	acks      chan uint16
}

// driveIngestConn builds the connector of cfg on a new node, lets setup
// (when set) adjust it, and starts its settler on connection 1; the
// settler is stopped at the end of the test.
func driveIngestConn(t *testing.T, cfg conf.Connectors, setup func(*bridge.Connectors)) *drivenIngestConn {
	t.Helper()
	r := newIngestConn(t, nil, cfg)
	if setup != nil {
		setup(r.cs)
	}
	ctx, cancel := context.WithCancel(context.Background())
	d := &drivenIngestConn{ingestConnRig: r, acks: make(chan uint16, 100)}
	var settle func() <-chan struct{}
	d.handle, d.reconnect, settle = bridge.DriveIngestConnector(ctx, r.cs, 0)
	d.reconnect()
	done := settle()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	return d
}

// send hands the connector message id on topic.
func (d *drivenIngestConn) send(id uint16, topic string) {
	d.handle(&fakeMessage{id: id, topic: topic, acks: d.acks})
}

// nextAck waits for the next PUBACK.
func (d *drivenIngestConn) nextAck(t *testing.T) uint16 {
	t.Helper()
	select {
	case id := <-d.acks:
		return id
	case <-time.After(waitFor):
		t.Fatal("no PUBACK")
		return 0
	}
}

// requireNoAck fails if a PUBACK was sent, or is within a short while.
func (d *drivenIngestConn) requireNoAck(t *testing.T, why string) {
	t.Helper()
	check := func() bool {
		select {
		case id := <-d.acks:
			t.Fatalf("PUBACK of message %d %s", id, why)
		default:
		}
		return false
	}
	check()
	require.Never(t, check, 100*time.Millisecond, 10*time.Millisecond)
}

// A message is acknowledged only once its record is committed, and those
// after it only after it: while the settler waits for the first commit
// (held back here), no PUBACK goes out.
func TestIngestConnectorAcksOnlyAfterTheCommit(t *testing.T) {
	waiting, release := make(chan struct{}, 10), make(chan struct{})
	d := driveIngestConn(t, ingestConnConfig("tcp://127.0.0.1:1", nil), func(cs *bridge.Connectors) {
		bridge.SetIngestCommitWait(cs, 0, func(ctx context.Context, p *cluster.Pending) error {
			waiting <- struct{}{}
			select {
			case <-release:
			case <-ctx.Done():
				return ctx.Err()
			}
			_, _, err := p.Wait(ctx)
			return err
		})
	})
	var opened sync.Once
	open := func() { opened.Do(func() { close(release) }) }
	t.Cleanup(open) // before the settler is stopped, which would wait for the drain
	d.send(1, "dev/d1/temp")
	d.send(2, "dev/d2/temp")
	select {
	case <-waiting:
	case <-time.After(waitFor):
		t.Fatal("the settler does not wait for the first commit")
	}
	d.requireNoAck(t, "sent before its commit")

	open()
	require.Equal(t, uint16(1), d.nextAck(t))
	require.Equal(t, uint16(2), d.nextAck(t))
	assert.Len(t, streamRecords(t, d.n, "devs"), 2)
	assert.Equal(t, 2.0, d.counted(t, "stored"))
}

// A message for a missing stream that its route may not create holds up
// the PUBACKs of those after it (committed or not) until someone creates
// the stream; one whose connection is lost meanwhile is left to the
// broker (not stored), which delivers it again on the next connection.
func TestIngestConnectorRetriesAMissingStreamUnacknowledged(t *testing.T) {
	d := driveIngestConn(t, ingestConnConfig("tcp://127.0.0.1:1", withMissingRoute), nil)
	d.send(1, "missing/x")
	d.send(2, "dev/d1/temp")
	require.Eventually(t, func() bool { return missingStreamRetries(d.log.String()) >= 2 }, waitFor, 10*time.Millisecond,
		"no warnings of retries naming the missing stream")
	require.Eventually(t, func() bool { return len(streamRecords(t, d.n, "devs")) == 1 }, waitFor, 10*time.Millisecond,
		"message 2 is not appended while message 1 waits")
	d.requireNoAck(t, "sent while message 1 waits for its stream")

	// The connection is lost; the broker delivers both again on the next.
	d.reconnect()
	d.send(1, "missing/x")
	d.send(2, "dev/d1/temp")
	require.Eventually(t, func() bool { return strings.Contains(d.log.String(), "its connection is lost: left to the broker") },
		waitFor, 10*time.Millisecond, "message 1 of the lost connection still retried")
	retries := missingStreamRetries(d.log.String())
	require.Eventually(t, func() bool { return missingStreamRetries(d.log.String()) > retries }, waitFor, 10*time.Millisecond,
		"message 1 of the new connection not retried")
	d.requireNoAck(t, "sent while message 1 waits for its stream")

	createStream(t, d.n, "nostream")
	require.Equal(t, uint16(1), d.nextAck(t))
	require.Equal(t, uint16(2), d.nextAck(t))
	assert.Len(t, streamRecords(t, d.n, "nostream"), 1, "message 1 of the lost connection stored too")
	assert.Len(t, streamRecords(t, d.n, "devs"), 2, "message 2 once per connection")
	assert.Zero(t, d.counted(t, "refused"))
	assert.NotZero(t, d.counted(t, "retried"))
}

// A stream deleted under a running connector: the append that finds its
// shard gone is retried (and the stream, which the route may create, made
// again); nothing is lost.
func TestIngestConnectorRetriesWhenTheStreamIsGone(t *testing.T) {
	mqtttest.Each(t, func(t *testing.T, k mqtttest.Kind) {
		b := mqtttest.Start(t, k, mqtttest.Options{})
		r := startIngestConn(t, nil, ingestConnConfig(b.URL, nil))
		r.waitSubscribed(t, 1)
		b.Publish(t, "publisher", "", "", 100, devMessage)
		require.Eventually(t, func() bool { return r.counted(t, "stored") == 100 }, waitFor, 10*time.Millisecond)

		_, err := r.n.API.DeleteStream(context.Background(), &hstreampb.DeleteStreamRequest{StreamName: "devs", Force: true})
		require.NoError(t, err)
		b.Publish(t, "publisher", "", "", 100, func(i int) (string, []byte) { return devMessage(100 + i) })
		require.Eventually(t, func() bool { return r.counted(t, "stored") == 200 }, waitFor, 10*time.Millisecond,
			"stored %v", r.counted(t, "stored"))
		got := map[string]bool{}
		for _, rec := range streamRecords(t, r.n, "devs") {
			require.False(t, got[string(rec.Payload)], "message %s stored twice", rec.Payload)
			got[string(rec.Payload)] = true
		}
		for i := 100; i < 200; i++ {
			require.True(t, got[strconv.Itoa(i)], "message %d missing", i)
		}
		assert.Len(t, got, 100, "the new stream holds the messages published after the delete")
		assert.NotZero(t, r.counted(t, "retried"))
		assert.Zero(t, r.counted(t, "refused"))
	})
}
