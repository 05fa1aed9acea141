package broker

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	pahov3 "github.com/eclipse/paho.mqtt.golang"
	v3packets "github.com/eclipse/paho.mqtt.golang/packets"
	"github.com/gorilla/websocket"
	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
	"github.com/stretchr/testify/require"
	"golang.org/x/crypto/bcrypt"

	"github.com/weir-log/weir/conf"
)

// A client ID's session belongs to the username that holds it: another
// user (or an anonymous client) cannot take it over, and with it its
// subscriptions and messages, whether it is connected or a persistent
// session nobody is connected to. Its own user resumes it.
func TestSessionTakeoverByOtherUserRefused(t *testing.T) {
	b := authBroker(t, true)
	url := "tcp://" + b.Addr()
	got := make(chan string, 10)
	persistent := func(o *pahov3.ClientOptions) {
		o.SetCleanSession(false).SetDefaultPublishHandler(func(_ pahov3.Client, m pahov3.Message) { got <- string(m.Payload()) })
	}
	alice, err := v3(t, url, "dev", "admin", "pw", persistent)
	require.NoError(t, err)
	require.NoError(t, v3Wait(t, alice.Subscribe("secret/#", 1, nil)))

	refused := func() {
		t.Helper()
		_, err := v3(t, url, "dev", "device1", "pw", persistent)
		require.ErrorIs(t, err, v3packets.ErrorRefusedNotAuthorised)
		_, err = v3(t, url, "dev", "", "", persistent) // anonymous
		require.ErrorIs(t, err, v3packets.ErrorRefusedNotAuthorised)
		_, ca, err := v5(t, b.Addr(), &paho.Connect{ClientID: "dev", Username: "device1", Password: []byte("pw")}, nil)
		require.Error(t, err)
		require.EqualValues(t, packets.ErrNotAuthorized.Code, ca.ReasonCode)
	}
	refused()
	require.True(t, alice.IsConnected(), "the owner's connection was taken over")
	alice.Disconnect(250)
	refused() // the persistent session, nobody connected

	admin, err := v3(t, url, "admin-2", "admin", "pw")
	require.NoError(t, err)
	require.NoError(t, v3Wait(t, admin.Publish("secret/x", 1, false, "while away")))
	_, err = v3(t, url, "dev", "admin", "pw", persistent)
	require.NoError(t, err)
	require.Equal(t, "while away", receive(t, got))
}

// A WebSocket client that stops reading is disconnected once mochi's write
// deadline (1.5 times the keepalive) passes, even while it keeps sending
// PINGREQs: gorilla must not wipe the deadline.
func TestWebSocketWriteDeadline(t *testing.T) {
	b := startBroker(t, func(c *conf.Config) {
		c.MQTT.WSListen = "127.0.0.1:0"
		c.MQTT.MaxKeepalive = time.Second
	})
	d := websocket.Dialer{Subprotocols: []string{"mqtt"}, NetDial: func(network, addr string) (net.Conn, error) {
		c, err := net.DialTimeout(network, addr, wait)
		if err == nil {
			_ = c.(*net.TCPConn).SetReadBuffer(4096)
		}
		return c, err
	}}
	ws, _, err := d.Dial("ws://"+b.WSAddr()+"/mqtt", nil)
	require.NoError(t, err)
	defer ws.Close()
	require.NoError(t, ws.SetReadDeadline(time.Now().Add(wait)))
	exchange := func(want []byte, send ...byte) {
		t.Helper()
		require.NoError(t, ws.WriteMessage(websocket.BinaryMessage, send))
		_, msg, err := ws.ReadMessage()
		require.NoError(t, err)
		require.Equal(t, want, msg)
	}
	// CONNECT (3.1.1, clean, keepalive 0: capped to 1s), SUBSCRIBE t/# QoS 0.
	exchange([]byte{0x20, 2, 0, 0}, 0x10, 16, 0, 4, 'M', 'Q', 'T', 'T', 4, 0x02, 0, 0, 0, 4, 's', 'l', 'o', 'w')
	exchange([]byte{0x90, 3, 0, 1, 0}, 0x82, 8, 0, 1, 0, 3, 't', '/', '#', 0)
	cl, ok := b.Server().Clients.Get("slow")
	require.True(t, ok)

	stop := make(chan struct{})
	defer close(stop)
	go func() { // alive, but never reading again
		tick := time.NewTicker(200 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tick.C:
				if ws.WriteMessage(websocket.BinaryMessage, []byte{0xC0, 0}) != nil {
					return
				}
			}
		}
	}()
	payload := make([]byte, 32<<10)
	for range 600 { // far more than the socket buffers hold
		require.NoError(t, b.Server().Publish("t/x", payload, false, 0))
	}
	start := time.Now()
	require.Eventually(t, cl.Closed, wait, 20*time.Millisecond, "the writer is stuck for ever")
	t.Logf("disconnected %v after the flood", time.Since(start))
}

// Clients may not use topic aliases (mochi checks the ACL before resolving
// them, so an aliased publish would be judged on the empty topic): none
// is offered, and a client using one anyway is disconnected with 0x94.
func TestTopicAliasRefused(t *testing.T) {
	b := authBroker(t, false)
	conn, err := net.DialTimeout("tcp", b.Addr(), wait)
	require.NoError(t, err)
	disc := make(chan byte, 1)
	c := paho.NewClient(paho.ClientConfig{Conn: conn, OnServerDisconnect: func(d *paho.Disconnect) { disc <- d.ReasonCode }})
	defer c.Disconnect(&paho.Disconnect{})
	ca, err := c.Connect(ctx(t), &paho.Connect{ClientID: "dev-b", Username: "device1", UsernameFlag: true,
		Password: []byte("pw"), PasswordFlag: true, CleanStart: true, KeepAlive: 30})
	require.NoError(t, err)
	require.Nil(t, ca.Properties.TopicAliasMaximum, "no topic aliases offered")
	alias := uint16(1)
	pctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_, err = c.Publish(pctx, &paho.Publish{Topic: "devices/dev-b/x", QoS: 1, Payload: []byte("a"),
		Properties: &paho.PublishProperties{TopicAlias: &alias}})
	require.Error(t, err, "an aliased publish was taken")
	require.Equal(t, packets.ErrTopicAliasInvalid.Code, receive(t, disc))
}

// bcrypt ignores a password's bytes after the 72nd: a longer password is
// refused, not matched on its prefix.
func TestPasswordLongerThan72Refused(t *testing.T) {
	pw := strings.Repeat("p", 72)
	path := writeFile(t, "auth.yaml", fmt.Sprintf("users:\n  - username: u\n    password: %s\nacl:\n  - publish: [\"#\"]\n", testHash(t, pw)))
	b := startBroker(t, func(c *conf.Config) { c.MQTT.AuthFile = path })
	url := "tcp://" + b.Addr()
	_, err := v3(t, url, "a", "u", pw)
	require.NoError(t, err)
	_, err = v3(t, url, "b", "u", pw+"x")
	require.ErrorIs(t, err, v3packets.ErrorRefusedNotAuthorised)
}

// An unknown user is checked against a dummy hash at the highest cost of
// the users, so that the refusal takes no less time than a real check.
func TestAuthFileDummyCostIsHighest(t *testing.T) {
	file := "users:\n"
	for i := range 5 {
		file += fmt.Sprintf("  - username: u%d\n    password: %s\n", i, testHash(t, "pw"))
	}
	h, err := bcrypt.GenerateFromPassword([]byte("pw"), bcrypt.MinCost+2)
	require.NoError(t, err)
	file += "  - username: slow\n    password: " + string(h) + "\n"
	for range 5 { // map order varies
		af, err := parseAuthFile([]byte(file))
		require.NoError(t, err)
		cost, err := bcrypt.Cost(af.dummy)
		require.NoError(t, err)
		require.Equal(t, bcrypt.MinCost+2, cost)
	}
}

// Password checks run at most GOMAXPROCS at a time; the others wait.
func TestBcryptConcurrencyBounded(t *testing.T) {
	af, err := parseAuthFile([]byte("users:\n  - username: u\n    password: " + testHash(t, "pw") + "\n"))
	require.NoError(t, err)
	srv := mqtt.New(nil)
	h := newAuthHook(slog.New(slog.DiscardHandler), srv)
	h.auth = af
	for range cap(h.bcryptSlots) { // every slot busy
		h.bcryptSlots <- struct{}{}
	}
	pk := packets.Packet{Connect: packets.ConnectParams{Username: []byte("u"), Password: []byte("pw"), ClientIdentifier: "c"}}
	done := make(chan bool, 1)
	go func() { done <- h.OnConnectAuthenticate(srv.NewClient(nil, "t", "c", false), pk) }()
	select {
	case <-done:
		t.Fatal("checked a password while every bcrypt slot was busy")
	case <-time.After(200 * time.Millisecond):
	}
	<-h.bcryptSlots
	require.True(t, receive(t, done))
}
