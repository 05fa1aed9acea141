package broker

import (
	"testing"
	"time"

	pahov3 "github.com/eclipse/paho.mqtt.golang"
	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
	"github.com/stretchr/testify/require"

	"github.com/weir-log/weir/conf"
)

// takeoverProbe widens mochi's takeover window and records what the
// taken-over connection's OnDisconnect sees. While old is being
// unsubscribed by the takeover (after mochi closed it, before mochi marks
// it taken over) it sleeps, so the old connection's goroutine reaches
// OnDisconnect inside the window.
type takeoverProbe struct {
	mqtt.HookBase
	old  *mqtt.Client
	seen chan bool // old.IsTakenOver() in old's OnDisconnect
}

func (p *takeoverProbe) ID() string { return "probe" }
func (p *takeoverProbe) Provides(b byte) bool {
	return b == mqtt.OnUnsubscribed || b == mqtt.OnDisconnect
}
func (p *takeoverProbe) OnUnsubscribed(cl *mqtt.Client, _ packets.Packet) {
	if cl == p.old {
		time.Sleep(100 * time.Millisecond)
	}
}
func (p *takeoverProbe) OnDisconnect(cl *mqtt.Client, _ error, _ bool) {
	if cl == p.old {
		p.seen <- cl.IsTakenOver()
	}
}

// A connection taken over by a new one with its client ID is marked taken
// over before its OnDisconnect runs, so neither mochi (which would delete
// the client ID from its map, and the new connection with it) nor weir's
// hooks take it for a session that ended; the new connection stays in the
// map and gets its messages.
func TestTakeoverMarkedBeforeOnDisconnect(t *testing.T) {
	cfg := conf.Default()
	cfg.MQTT.Listen = "127.0.0.1:0"
	cfg.MQTT.AllowAnonymous = true
	b, err := New(Options{Config: cfg, Logger: testLogger()})
	require.NoError(t, err)
	probe := &takeoverProbe{seen: make(chan bool, 1)}
	require.NoError(t, b.AddHook(probe, nil))
	require.NoError(t, b.Start())
	t.Cleanup(func() { require.NoError(t, b.Close()) })
	url := "tcp://" + b.Addr()

	for round := range 3 {
		old, err := v3(t, url, "dev", "", "")
		require.NoError(t, err)
		require.NoError(t, v3Wait(t, old.Subscribe("a/#", 1, nil)))
		probe.old, _ = b.Server().Clients.Get("dev")
		require.NotNil(t, probe.old)

		got := make(chan string, 1)
		renewed, err := v3(t, url, "dev", "", "", func(o *pahov3.ClientOptions) {
			o.SetDefaultPublishHandler(func(_ pahov3.Client, m pahov3.Message) { got <- string(m.Payload()) })
		})
		require.NoError(t, err)
		require.True(t, receive(t, probe.seen), "round %d: OnDisconnect of the old connection ran before the takeover marked it", round)
		live, ok := b.Server().Clients.Get("dev")
		require.True(t, ok, "round %d: the new connection is gone from the map", round)
		require.NotSame(t, probe.old, live)
		require.NoError(t, v3Wait(t, renewed.Subscribe("b/#", 1, nil)))
		require.NoError(t, b.Server().Publish("b/x", []byte("hello"), false, 1))
		require.Equal(t, "hello", receive(t, got))
		renewed.Disconnect(0)
		require.Eventually(t, func() bool { _, ok := b.Server().Clients.Get("dev"); return !ok }, wait, 10*time.Millisecond)
	}
}
