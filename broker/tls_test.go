package broker

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	"github.com/eclipse/paho.golang/paho/log"
	pahov3 "github.com/eclipse/paho.mqtt.golang"
	v3packets "github.com/eclipse/paho.mqtt.golang/packets"
	"github.com/stretchr/testify/require"

	"github.com/weir-log/weir/conf"
	"github.com/weir-log/weir/internal/tlsfile"
)

// selfSigned writes a self-signed certificate for 127.0.0.1, usable as
// server, client and CA certificate, and returns the paths and the pair.
func selfSigned(t *testing.T) (certPath, keyPath string, pair tls.Certificate) {
	t.Helper()
	certPath, keyPath, pair, err := tlsfile.SelfSigned(t.TempDir())
	require.NoError(t, err)
	return certPath, keyPath, pair
}

// testCA is a CA for the tests, with its certificate written to CAPath
// and as a pool for clients to trust.
type testCA struct {
	*tlsfile.CA
	CAPath string
	Pool   *x509.CertPool
}

func newTestCA(t *testing.T, name string) *testCA {
	t.Helper()
	ca, err := tlsfile.NewCA(name, time.Hour)
	require.NoError(t, err)
	pool := x509.NewCertPool()
	pool.AddCert(ca.Cert)
	path := filepath.Join(t.TempDir(), "ca.pem")
	require.NoError(t, os.WriteFile(path, ca.CertPEM, 0o644))
	return &testCA{CA: ca, CAPath: path, Pool: pool}
}

// issue signs l with ca and returns the pair (Leaf set) and the PEM.
func (ca *testCA) issue(t *testing.T, l tlsfile.Leaf) (pair tls.Certificate, certPEM, keyPEM []byte) {
	t.Helper()
	if l.ValidFor == 0 {
		l.ValidFor = time.Hour
	}
	certPEM, keyPEM, err := ca.Issue(l)
	require.NoError(t, err)
	pair, err = tls.X509KeyPair(certPEM, keyPEM)
	require.NoError(t, err)
	pair.Leaf, err = x509.ParseCertificate(pair.Certificate[0])
	require.NoError(t, err)
	return pair, certPEM, keyPEM
}

// server writes a server certificate for 127.0.0.1 that ca signs and
// returns its paths.
func (ca *testCA) server(t *testing.T) (certPath, keyPath string) {
	t.Helper()
	_, c, k := ca.issue(t, tlsfile.Leaf{CommonName: "server", Hosts: []string{"127.0.0.1"}, Server: true})
	certPath, keyPath, err := tlsfile.WritePair(t.TempDir(), "server", c, k)
	require.NoError(t, err)
	return certPath, keyPath
}

// client is a client certificate (client EKU only) that ca signs.
func (ca *testCA) client(t *testing.T, l tlsfile.Leaf) tls.Certificate {
	t.Helper()
	l.Client = true
	pair, _, _ := ca.issue(t, l)
	return pair
}

// clientTLS trusts roots and presents certs.
func clientTLS(roots *x509.CertPool, certs ...tls.Certificate) func(*pahov3.ClientOptions) {
	return func(o *pahov3.ClientOptions) {
		o.SetTLSConfig(&tls.Config{RootCAs: roots, Certificates: certs})
	}
}

// noPinger is a paho.Pinger that never pings. paho.golang v0.23's default
// one sends a PINGREQ as soon as the client connects, while a PUBLISH is
// written in several Write calls without a lock: over TLS (no writev, as
// TCP has) the two can interleave into a malformed packet, which the
// broker answers by closing the connection. The tests' connections live
// far shorter than the keepalive.
type noPinger struct{}

func (noPinger) Run(ctx context.Context, _ net.Conn, _ uint16) error { <-ctx.Done(); return nil }
func (noPinger) PacketSent()                                         {}
func (noPinger) PacketReceived()                                     {}
func (noPinger) PingResp()                                           {}
func (noPinger) SetDebug(log.Logger)                                 {}

// v5TLS is v5 over TLS with cfg. A failed handshake is returned as the
// error (with a nil client and CONNACK).
func v5TLS(t *testing.T, addr string, cfg *tls.Config, cp *paho.Connect, recv chan<- *paho.Publish) (*paho.Client, *paho.Connack, error) {
	t.Helper()
	d := &tls.Dialer{NetDialer: &net.Dialer{Timeout: wait}, Config: cfg}
	conn, err := d.DialContext(ctx(t), "tcp", addr)
	if err != nil {
		return nil, nil, err
	}
	return v5Over(t, conn, paho.ClientConfig{PingHandler: noPinger{}}, cp, recv)
}

// TestTLS connects over mqtt.tls-listen with tls-ca-path set to a
// self-signed certificate: a client with a certificate the CA signed gets
// in, one without is refused.
func TestTLS(t *testing.T) {
	certPath, keyPath, pair := selfSigned(t)
	b := startBroker(t, func(c *conf.Config) {
		c.MQTT.TLSListen = "127.0.0.1:0"
		c.TLSCertPath, c.TLSKeyPath, c.TLSCAPath = certPath, keyPath, certPath
	})
	require.NotContains(t, b.TLSAddr(), ":0")
	roots := x509.NewCertPool()
	roots.AddCert(pair.Leaf)
	url := "tls://" + b.TLSAddr()

	c, err := v3(t, url, "tls1", "", "", clientTLS(roots, pair))
	require.NoError(t, err)
	require.NoError(t, v3Wait(t, c.Publish("tls/t", 1, false, "secure")))

	_, err = v3(t, url, "tls2", "", "", clientTLS(roots))
	require.Error(t, err)
}

// TestTLSWithoutCA: without a CA the listener asks for no client
// certificate, but still only speaks TLS 1.2 or later with its own
// certificate.
func TestTLSWithoutCA(t *testing.T) {
	ca := newTestCA(t, "weir CA")
	certPath, keyPath := ca.server(t)
	b := startBroker(t, func(c *conf.Config) {
		c.MQTT.TLSListen = "127.0.0.1:0"
		c.TLSCertPath, c.TLSKeyPath = certPath, keyPath
	})
	url := "tls://" + b.TLSAddr()

	got := make(chan string, 1)
	c, err := v3(t, url, "ok", "", "", clientTLS(ca.Pool))
	require.NoError(t, err)
	require.NoError(t, v3Wait(t, c.Subscribe("tls/#", 1, func(_ pahov3.Client, m pahov3.Message) { got <- string(m.Payload()) })))
	require.NoError(t, v3Wait(t, c.Publish("tls/t", 1, false, "secure")))
	require.Equal(t, "secure", receive(t, got))

	// MQTT 5 too.
	c5, ack, err := v5TLS(t, b.TLSAddr(), &tls.Config{RootCAs: ca.Pool}, &paho.Connect{ClientID: "ok5", KeepAlive: 30}, nil)
	require.NoError(t, err)
	require.Zero(t, ack.ReasonCode)
	pr, err := c5.Publish(ctx(t), &paho.Publish{Topic: "tls/5", QoS: 1, Payload: []byte("x")})
	require.NoError(t, err)
	require.Zero(t, pr.ReasonCode)

	t.Run("plaintext", func(t *testing.T) {
		_, err := v3(t, "tcp://"+b.TLSAddr(), "plain", "", "")
		require.Error(t, err)
	})
	t.Run("untrusted server", func(t *testing.T) {
		other := newTestCA(t, "other CA")
		_, err := v3(t, url, "untrusting", "", "", clientTLS(other.Pool))
		require.Error(t, err)
		_, err = v3(t, url, "system-roots", "", "", clientTLS(nil))
		require.Error(t, err)
	})
	t.Run("TLS 1.1", func(t *testing.T) {
		old := &tls.Config{RootCAs: ca.Pool, MinVersion: tls.VersionTLS10, MaxVersion: tls.VersionTLS11}
		_, err := v3(t, url, "old", "", "", func(o *pahov3.ClientOptions) { o.SetTLSConfig(old) })
		require.Error(t, err)
		conn, err := tls.DialWithDialer(&net.Dialer{Timeout: wait}, "tcp", b.TLSAddr(), old)
		if err == nil {
			conn.Close()
		}
		require.ErrorContains(t, err, "protocol version")

		// TLS 1.2 exactly is accepted.
		conn, err = tls.DialWithDialer(&net.Dialer{Timeout: wait}, "tcp", b.TLSAddr(),
			&tls.Config{RootCAs: ca.Pool, MaxVersion: tls.VersionTLS12})
		require.NoError(t, err)
		require.Equal(t, uint16(tls.VersionTLS12), conn.ConnectionState().Version)
		conn.Close()
	})
}

// TestMutualTLS: with a CA, only clients with a certificate it signed get
// in.
func TestMutualTLS(t *testing.T) {
	ca := newTestCA(t, "weir CA")
	certPath, keyPath := ca.server(t)
	b := startBroker(t, func(c *conf.Config) {
		c.MQTT.TLSListen = "127.0.0.1:0"
		c.TLSCertPath, c.TLSKeyPath, c.TLSCAPath = certPath, keyPath, ca.CAPath
	})
	url := "tls://" + b.TLSAddr()
	other := newTestCA(t, "other CA")

	_, err := v3(t, url, "nocert", "", "", clientTLS(ca.Pool))
	require.Error(t, err)
	_, err = v3(t, url, "othercert", "", "", clientTLS(ca.Pool, other.client(t, tlsfile.Leaf{CommonName: "device1"})))
	require.Error(t, err)
	// A server-only certificate from the right CA is not a client one.
	srv, _, _ := ca.issue(t, tlsfile.Leaf{CommonName: "device1", Server: true})
	_, err = v3(t, url, "servercert", "", "", clientTLS(ca.Pool, srv))
	require.Error(t, err)

	good := ca.client(t, tlsfile.Leaf{CommonName: "device1"})
	c, err := v3(t, url, "good", "", "", clientTLS(ca.Pool, good))
	require.NoError(t, err)
	require.NoError(t, v3Wait(t, c.Publish("mtls/t", 1, false, "x")))

	tcfg := func(certs ...tls.Certificate) *tls.Config {
		return &tls.Config{RootCAs: ca.Pool, Certificates: certs}
	}
	_, _, err = v5TLS(t, b.TLSAddr(), tcfg(), &paho.Connect{ClientID: "nocert5"}, nil)
	require.Error(t, err)
	_, _, err = v5TLS(t, b.TLSAddr(), tcfg(other.client(t, tlsfile.Leaf{CommonName: "x"})), &paho.Connect{ClientID: "other5"}, nil)
	require.Error(t, err)
	c5, ack, err := v5TLS(t, b.TLSAddr(), tcfg(good), &paho.Connect{ClientID: "good5"}, nil)
	require.NoError(t, err)
	require.Zero(t, ack.ReasonCode)
	pr, err := c5.Publish(ctx(t), &paho.Publish{Topic: "mtls/5", QoS: 1, Payload: []byte("x")})
	require.NoError(t, err)
	require.Zero(t, pr.ReasonCode)
}

// TestMQTTOwnTLS: the mqtt.tls-*-path keys, when set, are the listener's
// files, not the top-level ones.
func TestMQTTOwnTLS(t *testing.T) {
	a, bca := newTestCA(t, "A"), newTestCA(t, "B")
	aCert, aKey := a.server(t)
	bCert, bKey := bca.server(t)
	aClient := a.client(t, tlsfile.Leaf{CommonName: "c"})
	bClient := bca.client(t, tlsfile.Leaf{CommonName: "c"})

	t.Run("own cert and CA", func(t *testing.T) {
		b := startBroker(t, func(c *conf.Config) {
			c.MQTT.TLSListen = "127.0.0.1:0"
			c.TLSCertPath, c.TLSKeyPath, c.TLSCAPath = aCert, aKey, a.CAPath
			c.MQTT.TLSCertPath, c.MQTT.TLSKeyPath, c.MQTT.TLSCAPath = bCert, bKey, bca.CAPath
		})
		url := "tls://" + b.TLSAddr()
		_, err := v3(t, url, "b", "", "", clientTLS(bca.Pool, bClient))
		require.NoError(t, err)
		// Trusting only A: the server's certificate is B's.
		_, err = v3(t, url, "a", "", "", clientTLS(a.Pool, aClient))
		require.Error(t, err)
		// Trusting B but with A's client certificate: the CA is B.
		_, err = v3(t, url, "ab", "", "", clientTLS(bca.Pool, aClient))
		require.Error(t, err)
	})
	t.Run("own cert without CA", func(t *testing.T) {
		// tls-ca-path is not inherited once an mqtt.tls-*-path is set: no
		// client certificate is asked for.
		b := startBroker(t, func(c *conf.Config) {
			c.MQTT.TLSListen = "127.0.0.1:0"
			c.TLSCertPath, c.TLSKeyPath, c.TLSCAPath = aCert, aKey, a.CAPath
			c.MQTT.TLSCertPath, c.MQTT.TLSKeyPath = bCert, bKey
		})
		url := "tls://" + b.TLSAddr()
		_, err := v3(t, url, "nocert", "", "", clientTLS(bca.Pool))
		require.NoError(t, err)
		_, err = v3(t, url, "a", "", "", clientTLS(a.Pool))
		require.Error(t, err)
	})
}

// sensor-1 is no user: it has no password, only its certificate, and
// rules all the same.
const peerAuthFile = `
users:
  - username: admin
    password: %s
acl:
  - username: sensor-1
    publish: ["sensors/sensor-1/#"]
    subscribe: ["sensors/sensor-1/#"]
  - username: admin
    publish: ["#"]
    subscribe: ["#"]
`

// peerBroker starts a broker with a plain and a mutual TLS listener,
// mqtt.peer-cert-as-username mode and peerAuthFile, anonymous refused.
// admin (password "pw", on the plain listener) receives on sensors/# what
// reaches it.
func peerBroker(t *testing.T, mode string) (b *Broker, ca *testCA, admin <-chan string) {
	t.Helper()
	ca = newTestCA(t, "weir CA")
	certPath, keyPath := ca.server(t)
	h := testHash(t, "pw")
	auth := writeFile(t, "auth.yaml", fmt.Sprintf(peerAuthFile, h))
	b = startBroker(t, func(c *conf.Config) {
		c.MQTT.TLSListen = "127.0.0.1:0"
		c.MQTT.TLSCertPath, c.MQTT.TLSKeyPath, c.MQTT.TLSCAPath = certPath, keyPath, ca.CAPath
		c.MQTT.PeerCertAsUsername = mode
		c.MQTT.AuthFile = auth
		c.MQTT.AllowAnonymous = false
	})
	got := make(chan string, 16)
	c, err := v3(t, "tcp://"+b.Addr(), "admin-sub", "admin", "pw")
	require.NoError(t, err)
	require.NoError(t, v3Wait(t, c.Subscribe("sensors/#", 1, func(_ pahov3.Client, m pahov3.Message) {
		got <- m.Topic() + "=" + string(m.Payload())
	})))
	return b, ca, got
}

// v3Denied publishes a QoS 1 message that the ACL must deny: 3.1.1 has
// no negative PUBACK, so the broker disconnects the client.
func v3Denied(t *testing.T, c pahov3.Client, lost <-chan error, topic string) {
	t.Helper()
	c.Publish(topic, 1, false, "denied")
	select {
	case <-lost:
	case <-time.After(wait):
		t.Fatalf("publish to %s not denied: client still connected", topic)
	}
}

func lostHandler(lost chan<- error) func(*pahov3.ClientOptions) {
	return func(o *pahov3.ClientOptions) {
		o.SetConnectionLostHandler(func(_ pahov3.Client, err error) { lost <- err })
	}
}

func TestPeerCertAsUsernameCN(t *testing.T) {
	b, ca, admin := peerBroker(t, "cn")
	url := "tls://" + b.TLSAddr()
	sensor := ca.client(t, tlsfile.Leaf{CommonName: "sensor-1"})

	// MQTT 3.1.1, as sensor-1, then with sensor-1's certificate claiming
	// to be admin with admin's password: either way it is sensor-1.
	for name, login := range map[string][2]string{
		"3.1.1": {"", ""},
		"3.1.1 with a username, which is ignored": {"admin", "pw"},
	} {
		t.Run(name, func(t *testing.T) {
			lost := make(chan error, 1)
			c, err := v3(t, url, "s3-"+login[0], login[0], login[1], clientTLS(ca.Pool, sensor), lostHandler(lost))
			require.NoError(t, err)
			require.NoError(t, v3Wait(t, c.Publish("sensors/sensor-1/t", 1, false, name)))
			require.Equal(t, "sensors/sensor-1/t="+name, receive(t, admin))
			v3Denied(t, c, lost, "sensors/other/t")
		})
	}

	// MQTT 5, as sensor-1, then with sensor-1's certificate claiming to be
	// admin with a wrong password: either way it gets in as sensor-1, with
	// sensor-1's rules.
	for name, cp := range map[string]*paho.Connect{
		"5":                                   {ClientID: "s5"},
		"5 with a username, which is ignored": {ClientID: "s5-admin", Username: "admin", Password: []byte("wrong")},
	} {
		t.Run(name, func(t *testing.T) {
			tcfg := &tls.Config{RootCAs: ca.Pool, Certificates: []tls.Certificate{sensor}}
			c, ack, err := v5TLS(t, b.TLSAddr(), tcfg, cp, nil)
			require.NoError(t, err)
			require.Zero(t, ack.ReasonCode)
			pr, err := c.Publish(ctx(t), &paho.Publish{Topic: "sensors/sensor-1/t", QoS: 1, Payload: []byte(cp.ClientID)})
			require.NoError(t, err)
			require.Zero(t, pr.ReasonCode)
			require.Equal(t, "sensors/sensor-1/t="+cp.ClientID, receive(t, admin))
			for _, topic := range []string{"sensors/other/t", "anything"} {
				pr, err = c.Publish(ctx(t), &paho.Publish{Topic: topic, QoS: 1, Payload: []byte("no")})
				require.Error(t, err, topic)
				require.NotNil(t, pr, "%s: no PUBACK: %v", topic, err)
				require.EqualValues(t, 0x87, pr.ReasonCode, topic)
			}
		})
	}

	t.Run("no common name", func(t *testing.T) {
		noCN := ca.client(t, tlsfile.Leaf{Hosts: []string{"sensor-1"}})
		_, err := v3(t, url, "nocn", "", "", clientTLS(ca.Pool, noCN))
		require.ErrorIs(t, err, v3packets.ErrorRefusedNotAuthorised)
	})

	t.Run("no certificate", func(t *testing.T) {
		_, err := v3(t, url, "nocert", "sensor-1", "pw", clientTLS(ca.Pool))
		require.Error(t, err)
	})

	t.Run("plain listener unaffected", func(t *testing.T) {
		_, err := v3(t, "tcp://"+b.Addr(), "plain-anon", "", "")
		require.ErrorIs(t, err, v3packets.ErrorRefusedNotAuthorised)
		// sensor-1 has no password: without its certificate no one can
		// be it.
		_, err = v3(t, "tcp://"+b.Addr(), "plain-sensor", "sensor-1", "pw")
		require.ErrorIs(t, err, v3packets.ErrorRefusedNotAuthorised)
		_, err = v3(t, "tcp://"+b.Addr(), "plain-bad", "admin", "wrong")
		require.ErrorIs(t, err, v3packets.ErrorRefusedNotAuthorised)
		c, err := v3(t, "tcp://"+b.Addr(), "plain", "admin", "pw")
		require.NoError(t, err)
		require.NoError(t, v3Wait(t, c.Publish("sensors/sensor-1/p", 1, false, "plain")))
		require.Equal(t, "sensors/sensor-1/p=plain", receive(t, admin))
	})
}

func TestPeerCertAsUsernameSAN(t *testing.T) {
	b, ca, admin := peerBroker(t, "san")
	url := "tls://" + b.TLSAddr()

	// The first DNS SAN is the username, not the Common Name.
	cert := ca.client(t, tlsfile.Leaf{CommonName: "admin", Hosts: []string{"sensor-1", "admin.example"}})
	lost := make(chan error, 1)
	c, err := v3(t, url, "san1", "", "", clientTLS(ca.Pool, cert), lostHandler(lost))
	require.NoError(t, err)
	require.NoError(t, v3Wait(t, c.Publish("sensors/sensor-1/t", 1, false, "san")))
	require.Equal(t, "sensors/sensor-1/t=san", receive(t, admin))
	v3Denied(t, c, lost, "sensors/other/t")

	tcfg := &tls.Config{RootCAs: ca.Pool, Certificates: []tls.Certificate{cert}}
	c5, _, err := v5TLS(t, b.TLSAddr(), tcfg, &paho.Connect{ClientID: "san5"}, nil)
	require.NoError(t, err)
	pr, err := c5.Publish(ctx(t), &paho.Publish{Topic: "admin/only", QoS: 1, Payload: []byte("no")})
	require.Error(t, err)
	require.NotNil(t, pr, "no PUBACK: %v", err)
	require.EqualValues(t, 0x87, pr.ReasonCode)

	// No SAN (an IP address is none): refused, whatever the CN and the
	// username sent.
	for name, l := range map[string]tlsfile.Leaf{
		"CN only": {CommonName: "sensor-1"},
		"IP only": {CommonName: "sensor-1", Hosts: []string{"127.0.0.1"}},
	} {
		bare := ca.client(t, l)
		_, err = v3(t, url, "bare", "sensor-1", "pw", clientTLS(ca.Pool, bare))
		require.ErrorIs(t, err, v3packets.ErrorRefusedNotAuthorised, name)
		tcfg := &tls.Config{RootCAs: ca.Pool, Certificates: []tls.Certificate{bare}}
		_, ack, err := v5TLS(t, b.TLSAddr(), tcfg, &paho.Connect{ClientID: "bare5"}, nil)
		require.Error(t, err, name)
		require.NotNil(t, ack, name)
		require.EqualValues(t, 0x86, ack.ReasonCode, name) // bad user name or password
	}
}

// TestReloadTLS replaces the listener's files with ones from a new CA:
// connections made after ReloadTLS use them, the open ones are kept, and
// a failed reload keeps the old files.
func TestReloadTLS(t *testing.T) {
	dir := t.TempDir()
	write := func(ca *testCA) (certPath, keyPath, caPath string) {
		_, c, k := ca.issue(t, tlsfile.Leaf{CommonName: "server", Hosts: []string{"127.0.0.1"}, Server: true})
		certPath, keyPath, err := tlsfile.WritePair(dir, "server", c, k)
		require.NoError(t, err)
		caPath = filepath.Join(dir, "ca.pem")
		require.NoError(t, os.WriteFile(caPath, ca.CertPEM, 0o644))
		return certPath, keyPath, caPath
	}
	oldCA, newCA := newTestCA(t, "old CA"), newTestCA(t, "new CA")
	certPath, keyPath, caPath := write(oldCA)
	b := startBroker(t, func(c *conf.Config) {
		c.MQTT.TLSListen = "127.0.0.1:0"
		c.MQTT.TLSCertPath, c.MQTT.TLSKeyPath, c.MQTT.TLSCAPath = certPath, keyPath, caPath
	})
	url := "tls://" + b.TLSAddr()
	oldClient := oldCA.client(t, tlsfile.Leaf{CommonName: "c"})
	newClient := newCA.client(t, tlsfile.Leaf{CommonName: "c"})

	before, err := v3(t, url, "before", "", "", clientTLS(oldCA.Pool, oldClient))
	require.NoError(t, err)
	_, err = v3(t, url, "new-early", "", "", clientTLS(newCA.Pool, newClient))
	require.Error(t, err)

	write(newCA)
	require.NoError(t, b.ReloadTLS())

	_, err = v3(t, url, "new", "", "", clientTLS(newCA.Pool, newClient))
	require.NoError(t, err)
	_, err = v3(t, url, "old", "", "", clientTLS(oldCA.Pool, oldClient))
	require.Error(t, err)
	// The server certificate is new, and so is the client CA.
	_, err = v3(t, url, "old-server", "", "", clientTLS(oldCA.Pool, newClient))
	require.Error(t, err)
	_, err = v3(t, url, "old-client", "", "", clientTLS(newCA.Pool, oldClient))
	require.Error(t, err)
	// The connection made before is still open.
	require.NoError(t, v3Wait(t, before.Publish("reload/t", 1, false, "still here")))

	t.Run("broken key", func(t *testing.T) {
		require.NoError(t, os.WriteFile(keyPath, []byte("garbage"), 0o600))
		err := b.ReloadTLS()
		require.ErrorContains(t, err, fmt.Sprintf("mqtt.tls-cert-path %q, mqtt.tls-key-path %q: ", certPath, keyPath))
		_, err = v3(t, url, "after-bad-key", "", "", clientTLS(newCA.Pool, newClient))
		require.NoError(t, err)
	})
	t.Run("broken CA", func(t *testing.T) {
		write(oldCA) // a good pair from the old CA, and a broken CA file
		require.NoError(t, os.WriteFile(caPath, []byte("nothing"), 0o644))
		err := b.ReloadTLS()
		require.ErrorContains(t, err, "mqtt.tls-ca-path: no PEM certificate in "+caPath)
		// Nothing of that reload is used: not even the good pair.
		_, err = v3(t, url, "after-bad-ca", "", "", clientTLS(newCA.Pool, newClient))
		require.NoError(t, err)
		_, err = v3(t, url, "after-bad-ca-old", "", "", clientTLS(oldCA.Pool, oldClient))
		require.Error(t, err)
	})
}

func TestReloadTLSWithoutListener(t *testing.T) {
	b := startBroker(t, nil)
	require.NoError(t, b.ReloadTLS())
}

func TestTLSConfigErrors(t *testing.T) {
	certPath, keyPath, _ := selfSigned(t)
	otherCert, otherKey, _ := selfSigned(t)
	badCA := writeFile(t, "ca.pem", "nothing")
	missing := filepath.Join(t.TempDir(), "missing.pem")
	for _, tc := range []struct {
		name   string
		want   string
		mutate func(*conf.Config)
	}{
		{"no files", "tls-cert-path and tls-key-path must both be set", func(c *conf.Config) {}},
		{"key as certificate", fmt.Sprintf(`tls-cert-path %q, tls-key-path %q: tls: `, keyPath, keyPath), func(c *conf.Config) {
			c.TLSCertPath, c.TLSKeyPath = keyPath, keyPath
		}},
		{"key of another certificate", fmt.Sprintf(`tls-cert-path %q, tls-key-path %q: tls: private key does not match public key`, certPath, otherKey), func(c *conf.Config) {
			c.TLSCertPath, c.TLSKeyPath = certPath, otherKey
		}},
		{"CA without certificate", "tls-ca-path: no PEM certificate in " + badCA, func(c *conf.Config) {
			c.TLSCertPath, c.TLSKeyPath, c.TLSCAPath = certPath, keyPath, badCA
		}},
		{"missing CA", "tls-ca-path: open " + missing + ": no such file or directory", func(c *conf.Config) {
			c.TLSCertPath, c.TLSKeyPath, c.TLSCAPath = certPath, keyPath, missing
		}},
		{"mqtt key of another certificate", fmt.Sprintf(`mqtt.tls-cert-path %q, mqtt.tls-key-path %q: tls: private key does not match public key`, otherCert, keyPath), func(c *conf.Config) {
			c.TLSCertPath, c.TLSKeyPath = certPath, keyPath // not used
			c.MQTT.TLSCertPath, c.MQTT.TLSKeyPath = otherCert, keyPath
		}},
		{"mqtt CA without certificate", "mqtt.tls-ca-path: no PEM certificate in " + badCA, func(c *conf.Config) {
			c.MQTT.TLSCertPath, c.MQTT.TLSKeyPath, c.MQTT.TLSCAPath = certPath, keyPath, badCA
		}},
		{"mqtt CA alone does not inherit the pair", "mqtt.tls-cert-path and mqtt.tls-key-path must both be set", func(c *conf.Config) {
			c.TLSCertPath, c.TLSKeyPath = certPath, keyPath
			c.MQTT.TLSCAPath = certPath
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := conf.Default()
			cfg.MQTT.TLSListen = "127.0.0.1:0"
			tc.mutate(cfg)
			_, err := New(Options{Config: cfg})
			require.ErrorContains(t, err, tc.want)
		})
	}
}
