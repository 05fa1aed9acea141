package bridge_test

import (
	"context"
	"fmt"
	"net"
	"slices"
	"sync"
	"testing"
	"time"

	paho "github.com/eclipse/paho.golang/paho"
	paho3 "github.com/eclipse/paho.mqtt.golang"
	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/hooks/auth"
	"github.com/mochi-mqtt/server/v2/listeners"
	"github.com/stretchr/testify/require"

	"github.com/weir-log/weir/api/hstreampb"
	"github.com/weir-log/weir/api/wire"
	"github.com/weir-log/weir/bridge"
	"github.com/weir-log/weir/broker"
	"github.com/weir-log/weir/conf"
	"github.com/weir-log/weir/internal/nodetest"
)

// groupWait bounds every wait of these tests.
const groupWait = 20 * time.Second

func groupCtx(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// groupBroker is a mochi broker on 127.0.0.1 with the shared subscriptions
// hook over a test node.
type groupBroker struct {
	srv    *mqtt.Server
	shared *bridge.Shared
	addr   string
	once   sync.Once
}

// startGroupBroker starts a broker whose groups use n's node and subscription
// manager; routes empty is the default route. It is closed when the test
// ends, or by close.
func startGroupBroker(t *testing.T, n *nodetest.Node, routes []conf.Route, shared conf.MQTTShared) *groupBroker {
	t.Helper()
	return startGroupBrokerCaps(t, n, routes, shared, nil)
}

// startGroupBrokerCaps is startGroupBroker with mochi's capabilities
// changed by caps.
func startGroupBrokerCaps(t *testing.T, n *nodetest.Node, routes []conf.Route, shared conf.MQTTShared, caps func(*mqtt.Capabilities)) *groupBroker {
	t.Helper()
	router, err := bridge.NewRouter(routes, "live")
	require.NoError(t, err)
	c := mqtt.NewDefaultServerCapabilities()
	if caps != nil {
		caps(c)
	}
	srv := mqtt.New(&mqtt.Options{InlineClient: true, Logger: nodetest.Logger(), Capabilities: c})
	require.NoError(t, srv.AddHook(broker.NewTakeoverHook(srv), nil))
	require.NoError(t, srv.AddHook(new(auth.AllowHook), nil))
	sh, err := bridge.NewShared(bridge.SharedOptions{
		Node:          n.Server.Node(),
		Subscriptions: n.Server.Subscriptions(),
		Server:        srv,
		Router:        router,
		Shared:        shared,
		Logger:        nodetest.Logger(),
	})
	require.NoError(t, err)
	require.NoError(t, srv.AddHook(sh, nil))
	l := listeners.NewTCP(listeners.Config{ID: "t", Address: "127.0.0.1:0"})
	require.NoError(t, srv.AddListener(l))
	require.NoError(t, srv.Serve())
	b := &groupBroker{srv: srv, shared: sh, addr: l.Address()}
	t.Cleanup(b.close)
	return b
}

// close stops the hook first (as the node does, before its subscription
// manager), then the broker. Idempotent.
func (b *groupBroker) close() {
	b.once.Do(func() {
		_ = b.shared.Close()
		_ = b.shared.Close() // idempotent
		_ = broker.CloseServer(b.srv)
	})
}

func createGroupStream(t *testing.T, api hstreampb.HStreamApiClient, name string, shards uint32) *wire.ShardMap {
	t.Helper()
	ctx := groupCtx(t)
	_, err := api.CreateStream(ctx, &hstreampb.Stream{StreamName: name, ShardCount: shards, ReplicationFactor: 1, BacklogDuration: 3600})
	require.NoError(t, err)
	resp, err := api.ListShards(ctx, &hstreampb.ListShardsRequest{StreamName: name})
	require.NoError(t, err)
	m, err := wire.NewShardMap(resp.GetShards())
	require.NoError(t, err)
	return m
}

// groupRecord is a RAW record with the mqtt.topic attribute (none if topic is
// empty).
func groupRecord(key, topic, payload string) *hstreampb.HStreamRecord {
	r := &hstreampb.HStreamRecord{
		Header:  &hstreampb.HStreamRecordHeader{Flag: hstreampb.HStreamRecordHeader_RAW, Key: key},
		Payload: []byte(payload),
	}
	if topic != "" {
		r.Header.Attributes = map[string]string{bridge.AttrTopic: topic}
	}
	return r
}

// appendGroupRecords appends each record over gRPC to the shard of its key.
func appendGroupRecords(t *testing.T, api hstreampb.HStreamApiClient, stream string, shards *wire.ShardMap, recs ...*hstreampb.HStreamRecord) {
	t.Helper()
	for _, r := range recs {
		b, err := wire.EncodeBatch([]*hstreampb.HStreamRecord{r}, hstreampb.CompressionType_None)
		require.NoError(t, err)
		_, err = api.Append(groupCtx(t), &hstreampb.AppendRequest{StreamName: stream, ShardId: shards.Lookup(r.GetHeader().GetKey()), Records: b})
		require.NoError(t, err)
	}
}

// sensorRecords are n records on topics sensors/<i%4>/temp, keyed k<i>,
// with payloads <prefix>-<i>.
func sensorRecords(prefix string, n int) ([]*hstreampb.HStreamRecord, []string) {
	recs := make([]*hstreampb.HStreamRecord, n)
	payloads := make([]string, n)
	for i := range n {
		payloads[i] = fmt.Sprintf("%s-%d", prefix, i)
		recs[i] = groupRecord(fmt.Sprintf("k%d", i), fmt.Sprintf("sensors/%d/temp", i%4), payloads[i])
	}
	return recs, payloads
}

// delivery is one PUBLISH a test client received.
type delivery struct {
	topic   string
	payload string
	qos     byte
}

// groupInbox collects what a client receives.
type groupInbox struct {
	mu   sync.Mutex
	msgs []delivery
	acks []func() // per message, for clients that ack by hand
}

func (in *groupInbox) add(m delivery, ack func()) {
	in.mu.Lock()
	in.msgs = append(in.msgs, m)
	in.acks = append(in.acks, ack)
	in.mu.Unlock()
}

// ackAll acknowledges every message received so far.
func (in *groupInbox) ackAll() {
	in.mu.Lock()
	acks := slices.Clone(in.acks)
	in.mu.Unlock()
	for _, ack := range acks {
		ack()
	}
}

func (in *groupInbox) all() []delivery {
	in.mu.Lock()
	defer in.mu.Unlock()
	return slices.Clone(in.msgs)
}

// counts is how many times each payload arrived.
func (in *groupInbox) counts() map[string]int {
	c := make(map[string]int)
	for _, m := range in.all() {
		c[m.payload]++
	}
	return c
}

// deliveredAll reports whether every payload arrived at least once, over the
// inboxes together.
func deliveredAll(payloads []string, ins ...*groupInbox) bool {
	seen := make(map[string]bool)
	for _, in := range ins {
		for _, m := range in.all() {
			seen[m.payload] = true
		}
	}
	for _, p := range payloads {
		if !seen[p] {
			return false
		}
	}
	return true
}

// member3 is an MQTT 3.1.1 client (paho.mqtt.golang).
type member3 struct {
	paho3.Client
	in *groupInbox
}

// connectMember3 connects an MQTT 3.1.1 client; with manualAck it sends a
// PUBACK only when told (groupInbox.ackAll).
func connectMember3(t *testing.T, addr, id string, clean, manualAck bool) *member3 {
	t.Helper()
	c := &member3{in: &groupInbox{}}
	opts := paho3.NewClientOptions().AddBroker("tcp://" + addr).SetClientID(id).
		SetCleanSession(clean).SetAutoReconnect(false).SetConnectRetry(false).
		SetAutoAckDisabled(manualAck).SetConnectTimeout(groupWait).
		SetDefaultPublishHandler(func(_ paho3.Client, m paho3.Message) {
			c.in.add(delivery{topic: m.Topic(), payload: string(m.Payload()), qos: m.Qos()}, m.Ack)
		})
	c.Client = paho3.NewClient(opts)
	tok := c.Connect()
	require.True(t, tok.WaitTimeout(groupWait), "connecting %s", id)
	require.NoError(t, tok.Error())
	t.Cleanup(func() { c.Disconnect(0) })
	return c
}

// subscribe subscribes to one filter and returns the SUBACK's code.
func (c *member3) subscribe(t *testing.T, filter string, qos byte) byte {
	t.Helper()
	tok := c.Subscribe(filter, qos, nil)
	require.True(t, tok.WaitTimeout(groupWait), "subscribing to %s", filter)
	require.NoError(t, tok.Error())
	res := tok.(*paho3.SubscribeToken).Result() // keyed by the filter without $share/{group}/
	require.Len(t, res, 1)
	var code byte
	for _, code = range res {
	}
	return code
}

// member5 is an MQTT 5 client (paho.golang).
type member5 struct {
	*paho.Client
	in *groupInbox
}

// connectMember5 connects an MQTT 5 client; with manualAck it sends a
// PUBACK only when told (groupInbox.ackAll).
func connectMember5(t *testing.T, addr, id string, manualAck bool) *member5 {
	t.Helper()
	return dialMember5(t, addr, id, manualAck, nil)
}

// connectMember5RM connects an MQTT 5 client that acks by hand, with the
// receive maximum rm.
func connectMember5RM(t *testing.T, addr, id string, rm uint16) *member5 {
	t.Helper()
	return dialMember5(t, addr, id, true, &paho.ConnectProperties{ReceiveMaximum: &rm})
}

func dialMember5(t *testing.T, addr, id string, manualAck bool, props *paho.ConnectProperties) *member5 {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, groupWait)
	require.NoError(t, err)
	c := &member5{in: &groupInbox{}}
	c.Client = paho.NewClient(paho.ClientConfig{
		Conn:                       conn,
		EnableManualAcknowledgment: manualAck,
		OnPublishReceived: []func(paho.PublishReceived) (bool, error){func(pr paho.PublishReceived) (bool, error) {
			c.in.add(delivery{topic: pr.Packet.Topic, payload: string(pr.Packet.Payload), qos: pr.Packet.QoS},
				func() { _ = pr.Client.Ack(pr.Packet) })
			return true, nil
		}},
	})
	ca, err := c.Connect(groupCtx(t), &paho.Connect{ClientID: id, CleanStart: true, KeepAlive: 30, Properties: props})
	require.NoError(t, err)
	require.Zero(t, ca.ReasonCode)
	t.Cleanup(func() { _ = c.Disconnect(&paho.Disconnect{}) })
	return c
}

// close disconnects the client.
func (c *member5) close(t *testing.T) {
	t.Helper()
	require.NoError(t, c.Disconnect(&paho.Disconnect{}))
}

// subscribe subscribes to filters at QoS 1 and returns the SUBACK's codes.
func (c *member5) subscribe(t *testing.T, qos byte, filters ...string) []byte {
	t.Helper()
	s := &paho.Subscribe{}
	for _, f := range filters {
		s.Subscriptions = append(s.Subscriptions, paho.SubscribeOptions{Topic: f, QoS: qos})
	}
	sa, err := c.Subscribe(groupCtx(t), s)
	require.NotNil(t, sa, "subscribe: %v", err)
	return sa.Reasons
}
