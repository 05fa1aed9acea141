package tlsfile

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/weir-log/weir/internal/tlstest"
)

// parseCert parses the single certificate of a PEM file's contents.
func parseCert(t *testing.T, certPEM []byte) *x509.Certificate {
	t.Helper()
	block, rest := pem.Decode(certPEM)
	require.NotNil(t, block)
	require.Equal(t, "CERTIFICATE", block.Type)
	require.Empty(t, rest)
	cert, err := x509.ParseCertificate(block.Bytes)
	require.NoError(t, err)
	return cert
}

// verify checks cert against ca for usage, and for name when not empty.
func verify(cert, ca *x509.Certificate, name string, usage x509.ExtKeyUsage) error {
	roots := x509.NewCertPool()
	roots.AddCert(ca)
	_, err := cert.Verify(x509.VerifyOptions{Roots: roots, DNSName: name, KeyUsages: []x509.ExtKeyUsage{usage}})
	return err
}

func TestNewCAIssuesVerifiableLeaves(t *testing.T) {
	ca, err := NewCA("test CA", 24*time.Hour)
	require.NoError(t, err)
	require.Equal(t, ca.Cert, parseCert(t, ca.CertPEM))
	require.True(t, ca.Cert.IsCA)
	require.True(t, ca.Cert.MaxPathLenZero)
	require.Equal(t, x509.KeyUsageCertSign|x509.KeyUsageCRLSign, ca.Cert.KeyUsage)
	require.Equal(t, "test CA", ca.Cert.Subject.CommonName)
	require.WithinDuration(t, time.Now().Add(-time.Hour), ca.Cert.NotBefore, time.Minute)
	require.WithinDuration(t, time.Now().Add(24*time.Hour), ca.Cert.NotAfter, time.Minute)
	require.NoError(t, ca.Cert.CheckSignatureFrom(ca.Cert))
	require.IsType(t, &ecdsa.PrivateKey{}, ca.Key)
	require.Equal(t, elliptic.P256(), ca.Key.(*ecdsa.PrivateKey).Curve)

	certPEM, keyPEM, err := ca.Issue(Leaf{
		CommonName: "node1", Hosts: []string{"127.0.0.1", "::1", "localhost", "*.weir.example"},
		Server: true, Client: true, ValidFor: time.Hour,
	})
	require.NoError(t, err)
	server := parseCert(t, certPEM)
	require.Equal(t, "node1", server.Subject.CommonName)
	require.Equal(t, []string{"localhost", "*.weir.example"}, server.DNSNames)
	require.Len(t, server.IPAddresses, 2)
	require.True(t, server.IPAddresses[0].Equal(net.IPv4(127, 0, 0, 1)))
	require.True(t, server.IPAddresses[1].Equal(net.IPv6loopback))
	require.Equal(t, []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}, server.ExtKeyUsage)
	require.Equal(t, x509.KeyUsageDigitalSignature, server.KeyUsage)
	require.False(t, server.IsCA)
	require.WithinDuration(t, time.Now().Add(time.Hour), server.NotAfter, time.Minute)
	for _, name := range []string{"127.0.0.1", "::1", "localhost", "a.weir.example"} {
		require.NoError(t, verify(server, ca.Cert, name, x509.ExtKeyUsageServerAuth), name)
	}
	require.Error(t, verify(server, ca.Cert, "other.example", x509.ExtKeyUsageServerAuth))
	require.NoError(t, verify(server, ca.Cert, "", x509.ExtKeyUsageClientAuth))
	_, err = tls.X509KeyPair(certPEM, keyPEM)
	require.NoError(t, err)

	certPEM, _, err = ca.Issue(Leaf{CommonName: "device1", Emails: []string{"device1@weir.example"}, Client: true, ValidFor: 1000 * time.Hour})
	require.NoError(t, err)
	client := parseCert(t, certPEM)
	require.Equal(t, []string{"device1@weir.example"}, client.EmailAddresses)
	require.Empty(t, client.DNSNames)
	require.Equal(t, []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}, client.ExtKeyUsage)
	require.NoError(t, verify(client, ca.Cert, "", x509.ExtKeyUsageClientAuth))
	require.ErrorContains(t, verify(client, ca.Cert, "", x509.ExtKeyUsageServerAuth), "incompatible key usage")
	require.Equal(t, ca.Cert.NotAfter, client.NotAfter, "a leaf ends no later than its CA")

	// Serial numbers are random, positive and at most 128 bits.
	require.NotEqual(t, server.SerialNumber, client.SerialNumber)
	for _, c := range []*x509.Certificate{ca.Cert, server, client} {
		require.Positive(t, c.SerialNumber.Sign())
		require.LessOrEqual(t, c.SerialNumber.BitLen(), 128)
	}

	other, err := NewCA("other CA", time.Hour)
	require.NoError(t, err)
	require.ErrorContains(t, verify(server, other.Cert, "localhost", x509.ExtKeyUsageServerAuth), "unknown authority")
}

func TestNewCAAndIssueRefuseBadInput(t *testing.T) {
	_, err := NewCA("x", 0)
	require.EqualError(t, err, `CA "x": validity 0s is not positive`)

	ca, err := NewCA("test CA", time.Hour)
	require.NoError(t, err)
	for _, tc := range []struct {
		leaf Leaf
		want []string
	}{
		{Leaf{CommonName: "a", Hosts: []string{"foo bar"}, Server: true, ValidFor: time.Hour}, []string{`certificate "a": host "foo bar": not an IP address or a DNS name`}},
		{Leaf{CommonName: "a", Hosts: []string{"localhost", "h:443", "", "https://x", "-x.example", "a..b", "x.*"}, Server: true, ValidFor: time.Hour},
			[]string{`host "h:443"`, `host ""`, `host "https://x"`, `host "-x.example"`, `host "a..b"`, `host "x.*"`}},
		{Leaf{CommonName: "a", Emails: []string{"not an email", "A <a@b.example>"}, Client: true, ValidFor: time.Hour},
			[]string{`email "not an email": not a plain address`, `email "A <a@b.example>"`}},
		{Leaf{CommonName: "a", Hosts: []string{"localhost"}}, []string{`certificate "a": neither server nor client`, "validity 0s is not positive"}},
	} {
		certPEM, keyPEM, err := ca.Issue(tc.leaf)
		for _, want := range tc.want {
			require.ErrorContains(t, err, want)
		}
		require.Nil(t, certPEM)
		require.Nil(t, keyPEM)
	}
	_, _, err = ca.Issue(Leaf{CommonName: "a", Hosts: []string{"localhost"}, Server: true, ValidFor: time.Hour})
	require.NoError(t, err, "localhost alone is fine")
}

func TestWritePairAndLoadCA(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "certs")
	ca, err := NewCA("test CA", time.Hour)
	require.NoError(t, err)
	certPath, keyPath, err := WritePair(dir, "ca", ca.CertPEM, ca.KeyPEM)
	require.NoError(t, err)
	require.Equal(t, filepath.Join(dir, "ca.pem"), certPath)
	require.Equal(t, filepath.Join(dir, "ca-key.pem"), keyPath)
	for path, mode := range map[string]os.FileMode{certPath: 0o644, keyPath: 0o600} {
		fi, err := os.Stat(path)
		require.NoError(t, err)
		require.Equal(t, mode, fi.Mode().Perm(), path)
	}
	entries, err := os.ReadDir(dir)
	require.NoError(t, err)
	require.Len(t, entries, 2, "no temporary files left behind")

	loaded, err := LoadCA(certPath, keyPath)
	require.NoError(t, err)
	require.True(t, ca.Cert.Equal(loaded.Cert))
	require.Equal(t, ca.CertPEM, loaded.CertPEM)
	require.Equal(t, ca.KeyPEM, loaded.KeyPEM)

	// The loaded CA signs leaves the original verifies, and WritePair
	// replaces an existing pair.
	leafPEM, leafKeyPEM, err := loaded.Issue(Leaf{CommonName: "node1", Hosts: []string{"127.0.0.1"}, Server: true, ValidFor: time.Hour})
	require.NoError(t, err)
	require.NoError(t, verify(parseCert(t, leafPEM), ca.Cert, "127.0.0.1", x509.ExtKeyUsageServerAuth))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "node1.pem"), []byte("old"), 0o600))
	leafPath, leafKeyPath, err := WritePair(dir, "node1", leafPEM, leafKeyPEM)
	require.NoError(t, err)
	pair, err := tls.LoadX509KeyPair(leafPath, leafKeyPath)
	require.NoError(t, err)
	require.Equal(t, "node1", pair.Leaf.Subject.CommonName)

	_, _, err = WritePair(filepath.Join(certPath, "sub"), "x", leafPEM, leafKeyPEM)
	require.ErrorContains(t, err, certPath)
}

func TestLoadCAAcceptsOpenSSLKeyEncodings(t *testing.T) {
	dir := t.TempDir()
	write := func(name string, blocks ...*pem.Block) string {
		var data []byte
		for _, b := range blocks {
			data = append(data, pem.EncodeToMemory(b)...)
		}
		path := filepath.Join(dir, name)
		require.NoError(t, os.WriteFile(path, data, 0o600))
		return path
	}
	tmpl := caTemplate("openssl CA", time.Hour)
	tmpl.SerialNumber = big.NewInt(7)

	// An EC key as openssl ecparam -genkey writes it: EC PARAMETERS first.
	ecKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &ecKey.PublicKey, ecKey)
	require.NoError(t, err)
	ecDER, err := x509.MarshalECPrivateKey(ecKey)
	require.NoError(t, err)
	ecCert := write("ec.pem", &pem.Block{Type: "CERTIFICATE", Bytes: der})
	ecKeyPath := write("ec-key.pem", &pem.Block{Type: "EC PARAMETERS", Bytes: []byte{6, 8, 42, 134, 72, 206, 61, 3, 1, 7}},
		&pem.Block{Type: "EC PRIVATE KEY", Bytes: ecDER})
	ca, err := LoadCA(ecCert, ecKeyPath)
	require.NoError(t, err)
	leafPEM, _, err := ca.Issue(Leaf{CommonName: "c", Client: true, ValidFor: time.Hour})
	require.NoError(t, err)
	require.NoError(t, verify(parseCert(t, leafPEM), ca.Cert, "", x509.ExtKeyUsageClientAuth))

	// An RSA CA with a PKCS #1 key.
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	require.NoError(t, err)
	der, err = x509.CreateCertificate(rand.Reader, tmpl, tmpl, &rsaKey.PublicKey, rsaKey)
	require.NoError(t, err)
	rsaCert := write("rsa.pem", &pem.Block{Type: "CERTIFICATE", Bytes: der})
	rsaKeyPath := write("rsa-key.pem", &pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(rsaKey)})
	ca, err = LoadCA(rsaCert, rsaKeyPath)
	require.NoError(t, err)
	leafPEM, _, err = ca.Issue(Leaf{CommonName: "s", Hosts: []string{"localhost"}, Server: true, ValidFor: time.Hour})
	require.NoError(t, err)
	require.NoError(t, verify(parseCert(t, leafPEM), ca.Cert, "localhost", x509.ExtKeyUsageServerAuth))

	_, err = LoadCA(rsaCert, ecKeyPath)
	require.EqualError(t, err, "CA key "+ecKeyPath+" does not match CA certificate "+rsaCert)
}

func TestLoadCAErrorsNameTheFile(t *testing.T) {
	dir := t.TempDir()
	ca, err := NewCA("test CA", time.Hour)
	require.NoError(t, err)
	caPath, caKeyPath, err := WritePair(dir, "ca", ca.CertPEM, ca.KeyPEM)
	require.NoError(t, err)
	leafPEM, leafKeyPEM, err := ca.Issue(Leaf{CommonName: "leaf", Client: true, ValidFor: time.Hour})
	require.NoError(t, err)
	leafPath, leafKeyPath, err := WritePair(dir, "leaf", leafPEM, leafKeyPEM)
	require.NoError(t, err)
	junk := filepath.Join(dir, "junk.pem")
	require.NoError(t, os.WriteFile(junk, []byte("junk"), 0o600))
	encrypted := filepath.Join(dir, "enc.pem")
	require.NoError(t, os.WriteFile(encrypted, pem.EncodeToMemory(&pem.Block{Type: "ENCRYPTED PRIVATE KEY", Bytes: []byte{1}}), 0o600))
	missing := filepath.Join(dir, "missing.pem")

	_, err = LoadCA(missing, caKeyPath)
	require.ErrorIs(t, err, os.ErrNotExist)
	require.ErrorContains(t, err, missing)
	_, err = LoadCA(caPath, missing)
	require.ErrorIs(t, err, os.ErrNotExist)
	require.ErrorContains(t, err, missing)
	_, err = LoadCA(junk, caKeyPath)
	require.EqualError(t, err, "CA certificate "+junk+": no PEM certificate")
	_, err = LoadCA(caPath, junk)
	require.EqualError(t, err, "CA key "+junk+": no PEM private key")
	_, err = LoadCA(caPath, encrypted)
	require.ErrorContains(t, err, "CA key "+encrypted+": the key is encrypted")
	_, err = LoadCA(leafPath, leafKeyPath)
	require.EqualError(t, err, "CA certificate "+leafPath+`: "leaf" is not a CA certificate`)
	_, err = LoadCA(caPath, leafKeyPath)
	require.EqualError(t, err, "CA key "+leafKeyPath+" does not match CA certificate "+caPath)
}

func TestSelfSigned(t *testing.T) {
	dir := t.TempDir()
	certPath, keyPath, pair, err := SelfSigned(dir)
	require.NoError(t, err)
	require.Equal(t, filepath.Join(dir, "cert.pem"), certPath)
	require.Equal(t, filepath.Join(dir, "key.pem"), keyPath)
	require.NotNil(t, pair.Leaf)
	data, err := os.ReadFile(certPath)
	require.NoError(t, err)
	cert := parseCert(t, data)
	require.True(t, cert.Equal(pair.Leaf))
	require.Equal(t, pkix.Name{CommonName: "weir test"}.String(), cert.Subject.String())
	require.NoError(t, cert.CheckSignatureFrom(cert), "self-signed")
	require.True(t, cert.IsCA)
	require.WithinDuration(t, time.Now().Add(-time.Hour), cert.NotBefore, time.Minute)
	require.WithinDuration(t, time.Now().Add(time.Hour), cert.NotAfter, time.Minute)
	require.NoError(t, verify(cert, cert, "127.0.0.1", x509.ExtKeyUsageServerAuth))
	require.NoError(t, verify(cert, cert, "", x509.ExtKeyUsageClientAuth))

	fromFiles, err := tls.LoadX509KeyPair(certPath, keyPath)
	require.NoError(t, err)
	pool, err := CAPool(certPath)
	require.NoError(t, err)
	state, serverErr, clientErr := tlstest.Handshake(t,
		&tls.Config{Certificates: []tls.Certificate{fromFiles}, ClientCAs: pool, ClientAuth: tls.RequireAndVerifyClientCert},
		&tls.Config{Certificates: []tls.Certificate{pair}, RootCAs: pool})
	require.NoError(t, serverErr)
	require.NoError(t, clientErr)
	require.Equal(t, "weir test", state.PeerCertificates[0].Subject.CommonName)
}

func TestIssuedPairsHandshakeWithMutualTLS(t *testing.T) {
	ca, err := NewCA("test CA", time.Hour)
	require.NoError(t, err)
	issue := func(l Leaf) tls.Certificate {
		certPEM, keyPEM, err := ca.Issue(l)
		require.NoError(t, err)
		pair, err := tls.X509KeyPair(certPEM, keyPEM)
		require.NoError(t, err)
		return pair
	}
	server := issue(Leaf{CommonName: "node1", Hosts: []string{"127.0.0.1", "localhost"}, Server: true, Client: true, ValidFor: time.Hour})
	client := issue(Leaf{CommonName: "device1", Client: true, ValidFor: time.Hour})
	serverOnly := issue(Leaf{CommonName: "web", Hosts: []string{"127.0.0.1"}, Server: true, ValidFor: time.Hour})
	pool := x509.NewCertPool()
	pool.AddCert(ca.Cert)
	serverConf := &tls.Config{Certificates: []tls.Certificate{server}, ClientCAs: pool, ClientAuth: tls.RequireAndVerifyClientCert}

	for _, peer := range []tls.Certificate{client, server} {
		state, serverErr, clientErr := tlstest.Handshake(t, serverConf, &tls.Config{Certificates: []tls.Certificate{peer}, RootCAs: pool})
		require.NoError(t, serverErr)
		require.NoError(t, clientErr)
		require.Equal(t, peer.Leaf.Subject.CommonName, state.PeerCertificates[0].Subject.CommonName)
	}

	// A certificate without client auth is refused as a client.
	_, serverErr, clientErr := tlstest.Handshake(t, serverConf, &tls.Config{Certificates: []tls.Certificate{serverOnly}, RootCAs: pool})
	require.ErrorContains(t, serverErr, "incompatible key usage")
	require.Error(t, clientErr)
}
