package tlsfile

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"sync/atomic"

	"google.golang.org/grpc/credentials"
)

// Files are the PEM files of one TLS endpoint, with the config keys that
// named them, so that an error names both.
type Files struct {
	CertPath, KeyPath, CAPath string
	CertKey, KeyKey, CAKey    string
}

// Endpoint holds the certificate, key and CA pool loaded from Files, and
// hands out TLS configurations that always use the latest ones, so Reload
// takes effect on the next handshake without restarting a listener.
type Endpoint struct {
	files Files
	cur   atomic.Pointer[material]
}

type material struct {
	cert *tls.Certificate
	cas  *x509.CertPool // nil when Files.CAPath is empty
}

// Load reads f's files. Errors name the config key and the file, e.g.
// `tls-cert-path "c.pem", tls-key-path "k.pem": tls: private key does not
// match public key`.
func Load(f Files) (*Endpoint, error) {
	e := &Endpoint{files: f}
	if err := e.Reload(); err != nil {
		return nil, err
	}
	return e, nil
}

// Reload reads the files again. On error the endpoint keeps what it had.
func (e *Endpoint) Reload() error {
	f := e.files
	if f.CertPath == "" || f.KeyPath == "" {
		return fmt.Errorf("%s and %s must both be set", f.CertKey, f.KeyKey)
	}
	cert, err := tls.LoadX509KeyPair(f.CertPath, f.KeyPath)
	if err != nil {
		return fmt.Errorf("%s %q, %s %q: %w", f.CertKey, f.CertPath, f.KeyKey, f.KeyPath, err)
	}
	m := &material{cert: &cert}
	if f.CAPath != "" {
		if m.cas, err = CAPool(f.CAPath); err != nil {
			return fmt.Errorf("%s: %w", f.CAKey, err)
		}
	}
	e.cur.Store(m)
	return nil
}

// Mutual reports whether the endpoint has a CA, so that its server side
// requires client certificates.
func (e *Endpoint) Mutual() bool { return e.files.CAPath != "" }

// ServerConfig is a server's configuration: TLS 1.2 or later, the current
// certificate and, with a CA, a client certificate the current CA
// verifies. nextProtos are the ALPN protocols ("h2" for gRPC).
func (e *Endpoint) ServerConfig(nextProtos ...string) *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		NextProtos: nextProtos,
		GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
			m := e.cur.Load()
			c := &tls.Config{MinVersion: tls.VersionTLS12, NextProtos: nextProtos, Certificates: []tls.Certificate{*m.cert}}
			if m.cas != nil {
				c.ClientCAs, c.ClientAuth = m.cas, tls.RequireAndVerifyClientCert
			}
			return c, nil
		},
	}
}

// ClientConfig is a client's configuration as of now: TLS 1.2 or later,
// the certificate as client certificate, and servers verified with the CA
// (the system's roots without one).
func (e *Endpoint) ClientConfig() *tls.Config {
	m := e.cur.Load()
	return &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{*m.cert}, RootCAs: m.cas}
}

// ServerCredentials are gRPC server credentials over ServerConfig.
func (e *Endpoint) ServerCredentials() credentials.TransportCredentials {
	return credentials.NewTLS(e.ServerConfig("h2"))
}

// ClientCredentials are gRPC client credentials that take ClientConfig
// afresh for every handshake, so a connection redialed after Reload
// presents the new certificate and trusts the new CA.
func (e *Endpoint) ClientCredentials() credentials.TransportCredentials {
	return &clientCreds{TransportCredentials: credentials.NewTLS(e.ClientConfig()), e: e}
}

// clientCreds embeds credentials for Info, ServerHandshake and
// OverrideServerName (unused by gRPC, and deprecated).
type clientCreds struct {
	credentials.TransportCredentials
	e *Endpoint
}

func (c *clientCreds) ClientHandshake(ctx context.Context, authority string, conn net.Conn) (net.Conn, credentials.AuthInfo, error) {
	return credentials.NewTLS(c.e.ClientConfig()).ClientHandshake(ctx, authority, conn)
}

func (c *clientCreds) Clone() credentials.TransportCredentials {
	return &clientCreds{TransportCredentials: c.TransportCredentials.Clone(), e: c.e}
}

// VerifiedLeaf returns the certificate the peer presented and the
// handshake verified (the first of the first verified chain), or nil.
func VerifiedLeaf(state tls.ConnectionState) *x509.Certificate {
	if len(state.VerifiedChains) == 0 || len(state.VerifiedChains[0]) == 0 {
		return nil
	}
	return state.VerifiedChains[0][0]
}

// Identity is who a verified certificate names: its Common Name for "cn";
// for "san" its first DNS name, else email address, else URI; for ""
// the Common Name, else the first of those. It is "" when the
// certificate names none.
func Identity(cert *x509.Certificate, from string) string {
	san := func() string {
		switch {
		case len(cert.DNSNames) > 0:
			return cert.DNSNames[0]
		case len(cert.EmailAddresses) > 0:
			return cert.EmailAddresses[0]
		case len(cert.URIs) > 0:
			return cert.URIs[0].String()
		}
		return ""
	}
	switch from {
	case "cn":
		return cert.Subject.CommonName
	case "san":
		return san()
	}
	if cert.Subject.CommonName != "" {
		return cert.Subject.CommonName
	}
	return san()
}
