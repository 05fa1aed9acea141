package bridge_test

import (
	"context"
	"log/slog"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	paho3 "github.com/eclipse/paho.mqtt.golang"
	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/hooks/auth"
	"github.com/mochi-mqtt/server/v2/listeners"
	"github.com/stretchr/testify/require"

	"github.com/weir-log/weir/api/hstreampb"
	"github.com/weir-log/weir/bridge"
	"github.com/weir-log/weir/broker"
	"github.com/weir-log/weir/conf"
	"github.com/weir-log/weir/internal/nodetest"
)

// waitFor bounds every wait in these tests.
const waitFor = 20 * time.Second

// rig is a real node plus a mochi broker with the ingest hook on a
// 127.0.0.1 port.
type rig struct {
	n    *nodetest.Node
	srv  *mqtt.Server
	ing  *bridge.Ingest
	addr string
}

type rigConfig struct {
	routes    []conf.Route
	unmatched string
	mqtt      conf.MQTT
	stream    conf.StreamDefaults
	maxRecord int
	maxBatch  int
	gate      *gate
}

// defaultRoutes: dev/# to "devs" (created, keyed by client ID), keyed/# to
// "keyed" (created, 4 shards by default, keyed by topic), missing/# to a
// stream that does not exist and may not be created.
func defaultRoutes() []conf.Route {
	return []conf.Route{
		{Filter: "dev/#", Stream: "devs", Create: true},
		{Filter: "keyed/#", Stream: "keyed", Key: "${topic}", Create: true},
		{Filter: "missing/#", Stream: "nostream"},
	}
}

func startRig(t *testing.T, mutate ...func(*rigConfig)) *rig {
	t.Helper()
	cfg := conf.Default()
	rc := &rigConfig{
		routes:    defaultRoutes(),
		unmatched: "live",
		mqtt:      cfg.MQTT,
		stream:    cfg.Stream,
		maxRecord: int(cfg.Store.MaxRecordSize),
		maxBatch:  int(cfg.Store.MaxBatchSize),
	}
	rc.stream.ShardCount = 4
	for _, m := range mutate {
		m(rc)
	}
	n := nodetest.Start(t)

	srv := mqtt.New(&mqtt.Options{InlineClient: true, Logger: slog.New(slog.DiscardHandler)})
	srv.Options.Capabilities.ReceiveMaximum = uint16(rc.mqtt.ReceiveMaximum)
	require.NoError(t, srv.AddHook(broker.NewTakeoverHook(srv), nil))
	require.NoError(t, srv.AddHook(new(auth.AllowHook), nil))
	router, err := bridge.NewRouter(rc.routes, rc.unmatched)
	require.NoError(t, err)
	ing, err := bridge.NewIngest(bridge.IngestOptions{
		Node:          n.Server.Node(),
		Server:        srv,
		Router:        router,
		MQTT:          rc.mqtt,
		Stream:        rc.stream,
		MaxRecordSize: rc.maxRecord,
		MaxBatchSize:  rc.maxBatch,
		Logger:        nodetest.Logger(),
	})
	require.NoError(t, err)
	if rc.gate != nil {
		bridge.SetBeforeBatch(ing, rc.gate.pass)
	}
	require.NoError(t, srv.AddHook(ing, nil))
	tcp := listeners.NewTCP(listeners.Config{ID: "t1", Address: "127.0.0.1:0"})
	require.NoError(t, srv.AddListener(tcp))
	require.NoError(t, srv.Serve())
	t.Cleanup(func() {
		if rc.gate != nil {
			rc.gate.open()
		}
		_ = broker.CloseServer(srv)
		require.NoError(t, ing.Close())
	})
	return &rig{n: n, srv: srv, ing: ing, addr: tcp.Address()}
}

// records reads a stream back from the node's store.
func (r *rig) records(t *testing.T, stream string) []*hstreampb.HStreamRecord {
	t.Helper()
	return r.n.Records(t, stream)
}

// gate holds batchers back while closed, and slows each batch by delay
// (a slow store).
type gate struct {
	delay time.Duration // set before use

	mu     sync.Mutex
	closed bool
	opened chan struct{}
}

func newGate() *gate { return &gate{opened: make(chan struct{})} }

// hold closes the gate: batchers stop before their next batch.
func (g *gate) hold() {
	g.mu.Lock()
	defer g.mu.Unlock()
	if !g.closed {
		g.closed = true
		g.opened = make(chan struct{})
	}
}

func (g *gate) open() {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed {
		g.closed = false
		close(g.opened)
	}
}

func (g *gate) pass() {
	g.mu.Lock()
	ch, closed := g.opened, g.closed
	g.mu.Unlock()
	if closed {
		<-ch
	}
	time.Sleep(g.delay)
}

// client5 connects an MQTT 5 client (paho.golang).
func client5(t *testing.T, addr, id string, onPublish func(*paho.Publish)) *paho.Client {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, waitFor)
	require.NoError(t, err)
	cfg := paho.ClientConfig{Conn: conn, ClientID: id, PacketTimeout: waitFor}
	if onPublish != nil {
		cfg.OnPublishReceived = []func(paho.PublishReceived) (bool, error){
			func(pr paho.PublishReceived) (bool, error) { onPublish(pr.Packet); return true, nil },
		}
	}
	c := paho.NewClient(cfg)
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	ca, err := c.Connect(ctx, &paho.Connect{ClientID: id, CleanStart: true, KeepAlive: 30})
	require.NoError(t, err)
	require.Equal(t, byte(0), ca.ReasonCode)
	t.Cleanup(func() { _ = c.Disconnect(&paho.Disconnect{}) })
	return c
}

// client3 connects an MQTT 3.1.1 client (paho.mqtt.golang) that does not
// reconnect; lost is closed when its connection drops.
func client3(t *testing.T, addr, id string) (c paho3.Client, lost <-chan struct{}) {
	t.Helper()
	lostc := make(chan struct{})
	var once sync.Once
	opts := paho3.NewClientOptions().AddBroker("tcp://" + addr).SetClientID(id).
		SetProtocolVersion(4).SetCleanSession(true).SetAutoReconnect(false).
		SetConnectRetry(false).SetKeepAlive(30 * time.Second).SetWriteTimeout(waitFor).
		SetConnectionLostHandler(func(paho3.Client, error) { once.Do(func() { close(lostc) }) })
	c = paho3.NewClient(opts)
	tok := c.Connect()
	require.True(t, tok.WaitTimeout(waitFor), "connect timed out")
	require.NoError(t, tok.Error())
	t.Cleanup(func() { c.Disconnect(100) })
	return c, lostc
}

// waitToken waits for a paho 3.1.1 token.
func waitToken(t *testing.T, tok paho3.Token) {
	t.Helper()
	require.True(t, tok.WaitTimeout(waitFor), "token timed out")
	require.NoError(t, tok.Error())
}

// paho3Token is a paho 3.1.1 token.
type paho3Token = paho3.Token

// createStream creates a stream with the rig's 4 shards ahead of the
// publishes (for tests whose short publish-timeout must not include it).
func (r *rig) createStream(t *testing.T, name string) {
	t.Helper()
	_, err := r.n.API.CreateStream(context.Background(), &hstreampb.Stream{StreamName: name, ReplicationFactor: 1, ShardCount: 4})
	require.NoError(t, err)
}
