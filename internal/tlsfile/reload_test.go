package tlsfile

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"net"
	"net/url"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/weir-log/weir/internal/tlstest"
)

// endpointFiles issues a node certificate from ca into dir as name and
// returns Files naming it and ca's certificate.
func endpointFiles(t *testing.T, ca *CA, dir, name string) Files {
	t.Helper()
	certPEM, keyPEM, err := ca.Issue(Leaf{CommonName: name, Hosts: []string{"127.0.0.1"}, Server: true, Client: true, ValidFor: time.Hour})
	require.NoError(t, err)
	certPath, keyPath, err := WritePair(dir, name, certPEM, keyPEM)
	require.NoError(t, err)
	caPath, _, err := WritePair(dir, name+"-ca", ca.CertPEM, ca.KeyPEM)
	require.NoError(t, err)
	return Files{CertPath: certPath, KeyPath: keyPath, CAPath: caPath, CertKey: "c", KeyKey: "k", CAKey: "a"}
}

// shake is tlstest.Handshake with one error: the first side's.
func shake(t *testing.T, server, client *tls.Config) (tls.ConnectionState, error) {
	t.Helper()
	s, serr, cerr := tlstest.Handshake(t, server, client)
	if serr != nil {
		return s, serr
	}
	return s, cerr
}

// TestEndpointReload: a server and a client config from Endpoints see the
// files Reload read, on the next handshake; a failed Reload keeps the old.
func TestEndpointReload(t *testing.T) {
	dir := t.TempDir()
	ca1, err := NewCA("one", time.Hour)
	require.NoError(t, err)
	ca2, err := NewCA("two", time.Hour)
	require.NoError(t, err)

	srvFiles := endpointFiles(t, ca1, dir, "server")
	cliFiles := endpointFiles(t, ca1, dir, "client")
	srv, err := Load(srvFiles)
	require.NoError(t, err)
	cli, err := Load(cliFiles)
	require.NoError(t, err)
	assert.True(t, srv.Mutual())

	client := cli.ClientConfig
	s, err := shake(t, srv.ServerConfig(), client())
	require.NoError(t, err)
	require.NotEmpty(t, s.VerifiedChains, "the server verified the client's certificate")
	assert.Equal(t, "client", Identity(s.VerifiedChains[0][0], ""))

	// The server moves to CA two (its certificate and the CA it trusts):
	// the old client can no longer connect, a client of CA two can.
	endpointFiles(t, ca2, dir, "server")
	require.NoError(t, srv.Reload())
	_, err = shake(t, srv.ServerConfig(), client())
	require.Error(t, err)
	endpointFiles(t, ca2, dir, "client")
	require.NoError(t, cli.Reload())
	s, err = shake(t, srv.ServerConfig(), client())
	require.NoError(t, err)
	assert.Equal(t, "two", s.VerifiedChains[0][1].Subject.CommonName)

	// A key that no longer matches: Reload fails naming both, and the
	// endpoint goes on with what it had.
	otherKey := endpointFiles(t, ca1, dir, "other").KeyPath
	bad := srvFiles
	bad.KeyPath = otherKey
	broken := &Endpoint{files: bad}
	broken.cur.Store(srv.cur.Load())
	err = broken.Reload()
	require.ErrorContains(t, err, `c "`+srvFiles.CertPath+`", k "`+otherKey+`": tls: private key does not match public key`)
	_, err = shake(t, broken.ServerConfig(), client())
	require.NoError(t, err)

	_, err = Load(Files{CertKey: "tls-cert-path", KeyKey: "tls-key-path"})
	require.EqualError(t, err, "tls-cert-path and tls-key-path must both be set")
	_, err = Load(Files{CertPath: srvFiles.CertPath, KeyPath: srvFiles.KeyPath, CAPath: filepath.Join(dir, "none.pem"), CAKey: "tls-ca-path"})
	require.ErrorContains(t, err, "tls-ca-path: open "+filepath.Join(dir, "none.pem"))
}

// TestServerConfigWithoutCA asks for no client certificate and refuses
// TLS below 1.2.
func TestServerConfigWithoutCA(t *testing.T) {
	ca, err := NewCA("one", time.Hour)
	require.NoError(t, err)
	f := endpointFiles(t, ca, t.TempDir(), "server")
	f.CAPath = ""
	srv, err := Load(f)
	require.NoError(t, err)
	assert.False(t, srv.Mutual())
	roots := x509.NewCertPool()
	roots.AddCert(ca.Cert)
	s, err := shake(t, srv.ServerConfig(), &tls.Config{RootCAs: roots})
	require.NoError(t, err)
	assert.Empty(t, s.PeerCertificates)
	_, err = shake(t, srv.ServerConfig(), &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS10, MaxVersion: tls.VersionTLS11})
	require.ErrorContains(t, err, "unsupported versions")
}

// TestClientCredentialsFollowReload: gRPC client credentials present the
// certificate, and trust the CA, of the latest Reload at each handshake.
func TestClientCredentialsFollowReload(t *testing.T) {
	dir := t.TempDir()
	ca1, err := NewCA("one", time.Hour)
	require.NoError(t, err)
	ca2, err := NewCA("two", time.Hour)
	require.NoError(t, err)
	srv, err := Load(endpointFiles(t, ca1, dir, "server"))
	require.NoError(t, err)
	cli, err := Load(endpointFiles(t, ca1, dir, "client"))
	require.NoError(t, err)
	creds := cli.ClientCredentials().Clone()

	// handshake runs creds' client side, for authority, against srv's
	// server side and returns the issuer of the client certificate the
	// server saw, and the client's error.
	handshake := func(authority string) (string, error) {
		a, b := net.Pipe()
		defer a.Close()
		defer b.Close()
		seen := make(chan string, 1)
		go func() {
			s := tls.Server(a, srv.ServerConfig("h2"))
			err := s.Handshake()
			name := ""
			if err == nil && len(s.ConnectionState().PeerCertificates) > 0 {
				name = s.ConnectionState().PeerCertificates[0].Issuer.CommonName
			}
			a.Close()
			seen <- name
		}()
		ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
		defer cancel()
		_, _, err := creds.ClientHandshake(ctx, authority, b)
		b.Close()
		return <-seen, err
	}
	issuer, err := handshake("127.0.0.1:6570")
	require.NoError(t, err)
	assert.Equal(t, "one", issuer)
	_, err = handshake("node9.example:6570")
	require.ErrorContains(t, err, "wanted to match node9.example", "the server's name is checked against the authority")

	// Both move to CA two; the client's credentials were made before.
	endpointFiles(t, ca2, dir, "server")
	endpointFiles(t, ca2, dir, "client")
	require.NoError(t, srv.Reload())
	require.NoError(t, cli.Reload())
	issuer, err = handshake("127.0.0.1:6570")
	require.NoError(t, err)
	assert.Equal(t, "two", issuer)
}

func TestIdentity(t *testing.T) {
	u, _ := url.Parse("spiffe://weir/device/7")
	full := &x509.Certificate{DNSNames: []string{"d1.example.com"}, EmailAddresses: []string{"d1@example.com"}, URIs: []*url.URL{u}}
	full.Subject.CommonName = "device-1"
	for _, tc := range []struct {
		cert *x509.Certificate
		from string
		want string
	}{
		{full, "cn", "device-1"},
		{full, "san", "d1.example.com"},
		{full, "", "device-1"},
		{&x509.Certificate{EmailAddresses: []string{"d1@example.com"}, URIs: []*url.URL{u}}, "san", "d1@example.com"},
		{&x509.Certificate{URIs: []*url.URL{u}}, "", "spiffe://weir/device/7"},
		{&x509.Certificate{}, "san", ""},
		{&x509.Certificate{DNSNames: []string{"x"}}, "cn", ""},
	} {
		assert.Equal(t, tc.want, Identity(tc.cert, tc.from), "%+v from %q", tc.cert.Subject, tc.from)
	}
}
