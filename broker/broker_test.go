package broker

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	pahov3 "github.com/eclipse/paho.mqtt.golang"
	v3packets "github.com/eclipse/paho.mqtt.golang/packets"
	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/stretchr/testify/require"

	"github.com/weir-log/weir/conf"
)

// wait bounds every wait in these tests.
const wait = 10 * time.Second

// startBroker starts a broker on 127.0.0.1:0 with the defaults, changed by
// mutate, and closes it when the test ends.
func startBroker(t *testing.T, mutate func(*conf.Config)) *Broker {
	t.Helper()
	cfg := conf.Default()
	cfg.MQTT.Listen = "127.0.0.1:0"
	if mutate != nil {
		mutate(cfg)
	}
	b, err := New(Options{Config: cfg, Logger: testLogger()})
	require.NoError(t, err)
	require.NoError(t, b.Start())
	t.Cleanup(func() { require.NoError(t, b.Close()) })
	return b
}

// testLogger logs to stderr when WEIR_TEST_LOG is set, else discards.
func testLogger() *slog.Logger {
	if os.Getenv("WEIR_TEST_LOG") == "" {
		return nil
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// v3 connects a paho.mqtt.golang (MQTT 3.1.1) client to url. The client
// is disconnected when the test ends.
func v3(t *testing.T, url, clientID, user, pass string, edit ...func(*pahov3.ClientOptions)) (pahov3.Client, error) {
	t.Helper()
	o := pahov3.NewClientOptions().AddBroker(url).SetClientID(clientID).
		SetProtocolVersion(4).SetAutoReconnect(false).SetConnectTimeout(wait)
	if user != "" {
		o.SetUsername(user).SetPassword(pass)
	}
	for _, e := range edit {
		e(o)
	}
	c := pahov3.NewClient(o)
	tok := c.Connect()
	require.True(t, tok.WaitTimeout(wait), "connect timed out")
	if tok.Error() == nil {
		t.Cleanup(func() { c.Disconnect(0) })
	}
	return c, tok.Error()
}

// v3Wait waits for tok and returns its error.
func v3Wait(t *testing.T, tok pahov3.Token) error {
	t.Helper()
	require.True(t, tok.WaitTimeout(wait), "token timed out")
	return tok.Error()
}

// v5 connects a paho.golang (MQTT 5) client over TCP to addr; received
// publishes go to recv when it is not nil. The client is disconnected when
// the test ends.
func v5(t *testing.T, addr string, cp *paho.Connect, recv chan<- *paho.Publish) (*paho.Client, *paho.Connack, error) {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, wait)
	require.NoError(t, err)
	return v5Over(t, conn, paho.ClientConfig{}, cp, recv)
}

// v5Over connects a paho.golang client, configured as cfg, over conn; conn
// is closed if it fails. See v5.
func v5Over(t *testing.T, conn net.Conn, cfg paho.ClientConfig, cp *paho.Connect, recv chan<- *paho.Publish) (*paho.Client, *paho.Connack, error) {
	t.Helper()
	cfg.Conn = conn
	if recv != nil {
		cfg.OnPublishReceived = []func(paho.PublishReceived) (bool, error){
			func(pr paho.PublishReceived) (bool, error) {
				recv <- pr.Packet
				return true, nil
			},
		}
	}
	c := paho.NewClient(cfg)
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	cp.CleanStart = true
	cp.UsernameFlag = cp.Username != ""
	cp.PasswordFlag = len(cp.Password) > 0
	ca, err := c.Connect(ctx, cp)
	if err == nil {
		t.Cleanup(func() { _ = c.Disconnect(&paho.Disconnect{}) })
	} else {
		_ = conn.Close()
	}
	return c, ca, err
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), wait)
	t.Cleanup(cancel)
	return c
}

// receive waits for one message on ch.
func receive[T any](t *testing.T, ch <-chan T) T {
	t.Helper()
	select {
	case m := <-ch:
		return m
	case <-time.After(wait):
		t.Fatal("no message within", wait)
		panic("unreachable")
	}
}

func TestPubSubBothVersions(t *testing.T) {
	b := startBroker(t, nil)
	require.NotContains(t, b.Addr(), ":0")
	require.Empty(t, b.TLSAddr())
	require.Empty(t, b.WSAddr())
	url := "tcp://" + b.Addr()

	got3 := make(chan string, 4)
	c3, err := v3(t, url, "sub3", "", "")
	require.NoError(t, err)
	require.NoError(t, v3Wait(t, c3.Subscribe("a/#", 1, func(_ pahov3.Client, m pahov3.Message) {
		got3 <- m.Topic() + "=" + string(m.Payload())
	})))

	got5 := make(chan *paho.Publish, 4)
	c5, _, err := v5(t, b.Addr(), &paho.Connect{ClientID: "sub5", KeepAlive: 30}, got5)
	require.NoError(t, err)
	_, err = c5.Subscribe(ctx(t), &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: "a/#", QoS: 1}}})
	require.NoError(t, err)

	require.NoError(t, v3Wait(t, c3.Publish("a/3", 1, false, "from3")))
	pr, err := c5.Publish(ctx(t), &paho.Publish{Topic: "a/5", QoS: 1, Payload: []byte("from5")})
	require.NoError(t, err)
	require.Zero(t, pr.ReasonCode)

	require.ElementsMatch(t, []string{"a/3=from3", "a/5=from5"}, []string{receive(t, got3), receive(t, got3)})
	var got []string
	for range 2 {
		p := receive(t, got5)
		got = append(got, p.Topic+"="+string(p.Payload))
	}
	require.ElementsMatch(t, []string{"a/3=from3", "a/5=from5"}, got)
}

const aclFile = `
users:
  - username: device1
    password: %s
  - username: admin
    password: %s
acl:
  - username: device1
    publish: ["devices/%%c/#"]
    subscribe: ["commands/%%u/#"]
  - username: admin
    publish: ["#"]
    subscribe: ["#"]
  - publish: ["public/#"]
    subscribe: ["public/#"]
`

func authBroker(t *testing.T, anonymous bool) *Broker {
	h := testHash(t, "pw")
	path := writeFile(t, "auth.yaml", fmt.Sprintf(aclFile, h, h))
	return startBroker(t, func(c *conf.Config) {
		c.MQTT.AuthFile = path
		c.MQTT.AllowAnonymous = anonymous
	})
}

func TestAuthentication(t *testing.T) {
	b := authBroker(t, false)
	url := "tcp://" + b.Addr()

	t.Run("3.1.1", func(t *testing.T) {
		_, err := v3(t, url, "c1", "device1", "pw")
		require.NoError(t, err)
		_, err = v3(t, url, "c2", "device1", "wrong")
		require.ErrorIs(t, err, v3packets.ErrorRefusedNotAuthorised)
		_, err = v3(t, url, "c3", "nobody", "pw")
		require.ErrorIs(t, err, v3packets.ErrorRefusedNotAuthorised)
		_, err = v3(t, url, "c4", "", "")
		require.ErrorIs(t, err, v3packets.ErrorRefusedNotAuthorised)
	})
	t.Run("5", func(t *testing.T) {
		_, ca, err := v5(t, b.Addr(), &paho.Connect{ClientID: "d1", Username: "device1", Password: []byte("pw")}, nil)
		require.NoError(t, err)
		require.Zero(t, ca.ReasonCode)
		for _, cp := range []*paho.Connect{
			{ClientID: "d2", Username: "device1", Password: []byte("wrong")},
			{ClientID: "d3", Username: "nobody", Password: []byte("pw")},
			{ClientID: "d4"}, // anonymous
		} {
			_, ca, err := v5(t, b.Addr(), cp, nil)
			require.Error(t, err)
			require.EqualValues(t, 0x86, ca.ReasonCode, "%+v", cp) // bad user name or password
		}
	})
}

func TestAnonymousAllowed(t *testing.T) {
	b := authBroker(t, true)
	c, err := v3(t, "tcp://"+b.Addr(), "anon", "", "")
	require.NoError(t, err)
	// Anonymous clients get the rules without a username.
	require.NoError(t, v3Wait(t, c.Publish("public/x", 1, false, "hi")))
	_, ca, err := v5(t, b.Addr(), &paho.Connect{ClientID: "anon5"}, nil)
	require.NoError(t, err)
	require.Zero(t, ca.ReasonCode)
	// A wrong password is still refused.
	_, err = v3(t, "tcp://"+b.Addr(), "c2", "device1", "wrong")
	require.ErrorIs(t, err, v3packets.ErrorRefusedNotAuthorised)
}

func TestACL311(t *testing.T) {
	b := authBroker(t, false)
	lost := make(chan error, 1)
	c, err := v3(t, "tcp://"+b.Addr(), "dev-a", "device1", "pw", func(o *pahov3.ClientOptions) {
		o.SetConnectionLostHandler(func(_ pahov3.Client, err error) { lost <- err })
	})
	require.NoError(t, err)

	// %c and %u substituted: allowed.
	require.NoError(t, v3Wait(t, c.Publish("devices/dev-a/temp", 1, false, "21")))
	tok := c.Subscribe("commands/device1/#", 1, nil)
	require.NoError(t, v3Wait(t, tok))
	require.Equal(t, byte(1), tok.(*pahov3.SubscribeToken).Result()["commands/device1/#"])

	// A denied subscribe: SUBACK 0x80.
	tok = c.Subscribe("commands/other/#", 1, nil)
	_ = v3Wait(t, tok) // paho reports the code in Result, not always as an error
	require.Equal(t, byte(0x80), tok.(*pahov3.SubscribeToken).Result()["commands/other/#"])

	// A denied QoS 0 publish is dropped; the connection stays up.
	require.NoError(t, v3Wait(t, c.Publish("devices/dev-b/temp", 0, false, "x")))
	require.NoError(t, v3Wait(t, c.Publish("devices/dev-a/temp", 1, false, "still here")))

	// A denied QoS 1 publish: 3.1.1 has no negative PUBACK, so the broker
	// disconnects.
	c.Publish("devices/dev-b/temp", 1, false, "x")
	select {
	case <-lost:
	case <-time.After(wait):
		t.Fatal("client not disconnected after a denied QoS 1 publish")
	}
}

func TestACL5(t *testing.T) {
	b := authBroker(t, false)
	got := make(chan *paho.Publish, 4)
	c, _, err := v5(t, b.Addr(), &paho.Connect{ClientID: "dev-b", Username: "device1", Password: []byte("pw")}, got)
	require.NoError(t, err)

	pr, err := c.Publish(ctx(t), &paho.Publish{Topic: "devices/dev-b/x", QoS: 1, Payload: []byte("ok")})
	require.NoError(t, err)
	require.Zero(t, pr.ReasonCode)

	// A denied QoS 1 publish: PUBACK 0x87 not authorized, connection kept.
	pr, err = c.Publish(ctx(t), &paho.Publish{Topic: "devices/dev-a/x", QoS: 1, Payload: []byte("no")})
	require.Error(t, err)
	require.EqualValues(t, 0x87, pr.ReasonCode)
	// QoS 2: PUBREC 0x87.
	pr, err = c.Publish(ctx(t), &paho.Publish{Topic: "devices/dev-a/x", QoS: 2, Payload: []byte("no")})
	require.NoError(t, err) // paho.golang returns a failed PUBREC without an error
	require.EqualValues(t, 0x87, pr.ReasonCode)

	// Subscribes, plain and shared: the filter inside $share is checked.
	for filter, want := range map[string]byte{
		"commands/device1/+":          1,
		"commands/other/#":            0x87,
		"$share/g/public/#":           1,
		"$share/g/commands/device1/x": 1,
		"$share/g/private/#":          0x87,
	} {
		sa, _ := c.Subscribe(ctx(t), &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: filter, QoS: 1}}})
		require.NotNil(t, sa, filter)
		require.Equal(t, []byte{want}, sa.Reasons, filter)
	}

	// Delivery through the allowed subscription, published by admin.
	admin, _, err := v5(t, b.Addr(), &paho.Connect{ClientID: "admin", Username: "admin", Password: []byte("pw")}, nil)
	require.NoError(t, err)
	_, err = admin.Publish(ctx(t), &paho.Publish{Topic: "commands/device1/reboot", QoS: 1, Payload: []byte("now")})
	require.NoError(t, err)
	p := receive(t, got)
	require.Equal(t, "commands/device1/reboot", p.Topic)
	require.Equal(t, "now", string(p.Payload))
}

func TestKeepaliveCap(t *testing.T) {
	b := startBroker(t, func(c *conf.Config) {
		c.MQTT.MaxKeepalive = 30 * time.Second
		c.MQTT.MaxPacketSize = 64 * conf.KiB
	})
	for asked, want := range map[uint16]uint16{0: 30, 100: 30, 10: 0} {
		_, ca, err := v5(t, b.Addr(), &paho.Connect{ClientID: "k", KeepAlive: asked}, nil)
		require.NoError(t, err)
		if want == 0 {
			require.Nil(t, ca.Properties.ServerKeepAlive, "asked %d", asked)
		} else {
			require.NotNil(t, ca.Properties.ServerKeepAlive, "asked %d", asked)
			require.Equal(t, want, *ca.Properties.ServerKeepAlive, "asked %d", asked)
		}
		require.NotNil(t, ca.Properties.MaximumPacketSize)
		require.EqualValues(t, 64*conf.KiB, *ca.Properties.MaximumPacketSize)
	}
}

// TestKeepaliveCap311 checks that a 3.1.1 client asking for no keepalive is
// cut off after 1.5 times the maximum of silence.
func TestKeepaliveCap311(t *testing.T) {
	b := startBroker(t, func(c *conf.Config) { c.MQTT.MaxKeepalive = time.Second })
	conn, err := net.DialTimeout("tcp", b.Addr(), wait)
	require.NoError(t, err)
	defer conn.Close()
	require.NoError(t, conn.SetDeadline(time.Now().Add(wait)))
	connect := []byte{
		0x10, 14, // CONNECT, remaining length
		0, 4, 'M', 'Q', 'T', 'T', 4, // protocol name, level 4 (3.1.1)
		0x02, 0, 0, // flags: clean session; keepalive 0
		0, 2, 'k', 'a', // client ID
	}
	// The broker sets its deadline once it has read the CONNECT, before
	// its CONNACK: time from before the write, so that a CONNACK slow to
	// come on a loaded machine cannot make the close look early. (mochi's
	// 1.5 times is in whole seconds: 1 + 1/2 = 1 s for a keepalive of 1 s.)
	start := time.Now()
	_, err = conn.Write(connect)
	require.NoError(t, err)
	r := bufio.NewReader(conn)
	connack := make([]byte, 4)
	_, err = r.Read(connack)
	require.NoError(t, err)
	require.Equal(t, []byte{0x20, 2, 0, 0}, connack)
	_, err = r.ReadByte()
	require.Error(t, err) // closed by the broker, not our deadline
	var ne net.Error
	require.False(t, errors.As(err, &ne) && ne.Timeout(), "broker did not close the connection: %v", err)
	require.GreaterOrEqual(t, time.Since(start), time.Second)
}

func TestWebSocket(t *testing.T) {
	b := startBroker(t, func(c *conf.Config) { c.MQTT.WSListen = "127.0.0.1:0" })
	require.NotContains(t, b.WSAddr(), ":0")
	got := make(chan string, 1)
	c, err := v3(t, "ws://"+b.WSAddr()+"/mqtt", "ws1", "", "")
	require.NoError(t, err)
	require.NoError(t, v3Wait(t, c.Subscribe("ws/#", 1, func(_ pahov3.Client, m pahov3.Message) { got <- string(m.Payload()) })))
	require.NoError(t, v3Wait(t, c.Publish("ws/t", 1, false, "over websocket")))
	require.Equal(t, "over websocket", receive(t, got))
}

func TestCloseIdempotent(t *testing.T) {
	cfg := conf.Default()
	cfg.MQTT.Listen = "127.0.0.1:0"
	cfg.MQTT.WSListen = "127.0.0.1:0"
	b, err := New(Options{Config: cfg, Logger: testLogger()})
	require.NoError(t, err)
	require.NoError(t, b.Start())
	require.ErrorIs(t, b.Start(), ErrStarted)

	// A connection that never sends CONNECT, and a connected client.
	idle, err := net.DialTimeout("tcp", b.Addr(), wait)
	require.NoError(t, err)
	defer idle.Close()
	lost := make(chan struct{})
	_, err = v3(t, "tcp://"+b.Addr(), "c", "", "", func(o *pahov3.ClientOptions) {
		o.SetConnectionLostHandler(func(pahov3.Client, error) { close(lost) })
	})
	require.NoError(t, err)

	require.NoError(t, b.Close())
	require.NoError(t, b.Close())
	require.ErrorIs(t, b.Start(), ErrClosed)

	require.NoError(t, idle.SetReadDeadline(time.Now().Add(wait)))
	_, err = idle.Read(make([]byte, 1))
	var ne net.Error
	require.False(t, errors.As(err, &ne) && ne.Timeout(), "idle connection left open: %v", err)
	receive(t, lost)
	_, err = net.DialTimeout("tcp", b.Addr(), wait)
	require.Error(t, err)
}

func TestCloseWithoutStart(t *testing.T) {
	cfg := conf.Default()
	cfg.MQTT.Listen = "127.0.0.1:0"
	b, err := New(Options{Config: cfg})
	require.NoError(t, err)
	addr := b.Addr()
	require.NoError(t, b.Close())
	ln, err := net.Listen("tcp", addr) // the port is free again
	require.NoError(t, err)
	require.NoError(t, ln.Close())
}

func TestListenErrorNamesKey(t *testing.T) {
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer taken.Close()
	cfg := conf.Default()
	cfg.MQTT.Listen = "127.0.0.1:0"
	cfg.MQTT.WSListen = taken.Addr().String()
	_, err = New(Options{Config: cfg})
	require.ErrorContains(t, err, "mqtt.ws-listen: ")
}

// authOnly is a hook that wrongly answers authentication.
type authOnly struct{ mqtt.HookBase }

func (authOnly) ID() string              { return "x" }
func (authOnly) Provides(b byte) bool    { return b == mqtt.OnACLCheck }
func (publishOnly) ID() string           { return "p" }
func (publishOnly) Provides(b byte) bool { return b == mqtt.OnPublish }

type publishOnly struct{ mqtt.HookBase }

func TestAddHook(t *testing.T) {
	b := startBroker(t, nil)
	require.ErrorContains(t, b.AddHook(&authOnly{}, nil), "must not provide")
	require.NoError(t, b.AddHook(&publishOnly{}, nil))
}

func TestMaxPacketSize(t *testing.T) {
	b := startBroker(t, func(c *conf.Config) { c.MQTT.MaxPacketSize = 1 * conf.KiB })
	lost := make(chan struct{})
	c, err := v3(t, "tcp://"+b.Addr(), "big", "", "", func(o *pahov3.ClientOptions) {
		o.SetConnectionLostHandler(func(pahov3.Client, error) { close(lost) })
	})
	require.NoError(t, err)
	require.NoError(t, v3Wait(t, c.Publish("t", 1, false, make([]byte, 900))))
	c.Publish("t", 1, false, make([]byte, 1100))
	receive(t, lost)
}

// TestWillACL checks that a will is held to the publish ACL: mochi sends
// wills without asking it, so the broker refuses a denied will at CONNECT.
func TestWillACL(t *testing.T) {
	b := authBroker(t, false)
	url := "tcp://" + b.Addr()
	will := func(topic string) func(*pahov3.ClientOptions) {
		return func(o *pahov3.ClientOptions) { o.SetWill(topic, "gone", 1, false) }
	}
	_, err := v3(t, url, "dev-a", "device1", "pw", will("devices/dev-a/status"))
	require.NoError(t, err)
	_, err = v3(t, url, "dev-b", "device1", "pw", will("commands/device1/reboot"))
	require.ErrorIs(t, err, v3packets.ErrorRefusedNotAuthorised)
	_, err = v3(t, url, "dev-c", "device1", "pw", will("devices/#"))
	require.ErrorIs(t, err, v3packets.ErrorRefusedNotAuthorised)

	for topic, want := range map[string]byte{"devices/dev-d/status": 0, "commands/device1/reboot": 0x87} {
		_, ca, err := v5(t, b.Addr(), &paho.Connect{
			ClientID: "dev-d", Username: "device1", Password: []byte("pw"),
			WillMessage: &paho.WillMessage{Topic: topic, Payload: []byte("gone"), QoS: 1},
		}, nil)
		require.Equal(t, want == 0, err == nil, "%s: %v", topic, err)
		require.Equal(t, want, ca.ReasonCode, topic)
	}
}

// A persistent session lasts at most mqtt.max-session-expiry: an MQTT 5
// client asking more is told the cap (and mochi expires the session then).
func TestSessionExpiryCap(t *testing.T) {
	b := startBroker(t, func(c *conf.Config) { c.MQTT.MaxSessionExpiry = 90 * time.Second })
	asked := uint32(1 << 30)
	_, ca, err := v5(t, b.Addr(), &paho.Connect{ClientID: "s", KeepAlive: 30,
		Properties: &paho.ConnectProperties{SessionExpiryInterval: &asked}}, nil)
	require.NoError(t, err)
	require.NotNil(t, ca.Properties.SessionExpiryInterval)
	require.Equal(t, uint32(90), *ca.Properties.SessionExpiryInterval)
	require.Equal(t, uint32(90), b.Server().Options.Capabilities.MaximumSessionExpiryInterval)
}
