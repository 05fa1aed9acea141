package broker

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"testing"
	"time"

	pahov3 "github.com/eclipse/paho.mqtt.golang"
	"github.com/stretchr/testify/require"

	"github.com/weir-log/weir/conf"
)

// selfSigned writes a self-signed certificate for 127.0.0.1, usable as
// server, client and CA certificate, and returns the paths and the pair.
func selfSigned(t *testing.T) (certPath, keyPath string, pair tls.Certificate) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "weir test"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1)},
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		IsCA:                  true,
		BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	require.NoError(t, err)
	kder, err := x509.MarshalECPrivateKey(key)
	require.NoError(t, err)
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder})
	pair, err = tls.X509KeyPair(certPEM, keyPEM)
	require.NoError(t, err)
	return writeFile(t, "cert.pem", string(certPEM)), writeFile(t, "key.pem", string(keyPEM)), pair
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
