package broker

import (
	"crypto/tls"
	"crypto/x509"
	"testing"

	pahov3 "github.com/eclipse/paho.mqtt.golang"
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

// TestTLS connects over mqtt.tls-listen with tls-ca-path set: a client
// with a certificate the CA signed gets in, one without is refused.
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

	c, err := v3(t, url, "tls1", "", "", func(o *pahov3.ClientOptions) {
		o.SetTLSConfig(&tls.Config{RootCAs: roots, Certificates: []tls.Certificate{pair}})
	})
	require.NoError(t, err)
	require.NoError(t, v3Wait(t, c.Publish("tls/t", 1, false, "secure")))

	_, err = v3(t, url, "tls2", "", "", func(o *pahov3.ClientOptions) {
		o.SetTLSConfig(&tls.Config{RootCAs: roots})
	})
	require.Error(t, err)
}

func TestTLSConfigErrors(t *testing.T) {
	certPath, keyPath, _ := selfSigned(t)
	for want, mutate := range map[string]func(*conf.Config){
		"mqtt.tls-listen: needs tls-cert-path and tls-key-path": func(c *conf.Config) {},
		"tls-cert-path, tls-key-path: ": func(c *conf.Config) {
			c.TLSCertPath, c.TLSKeyPath = keyPath, keyPath
		},
		"tls-ca-path: no PEM certificate": func(c *conf.Config) {
			c.TLSCertPath, c.TLSKeyPath, c.TLSCAPath = certPath, keyPath, writeFile(t, "ca.pem", "nothing")
		},
	} {
		cfg := conf.Default()
		cfg.MQTT.TLSListen = "127.0.0.1:0"
		mutate(cfg)
		_, err := New(Options{Config: cfg})
		require.ErrorContains(t, err, want)
	}
}
