package server_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/weir-log/weir/api/hstreampb"
	"github.com/weir-log/weir/api/peerpb"
	"github.com/weir-log/weir/client"
	"github.com/weir-log/weir/conf"
	"github.com/weir-log/weir/internal/nodetest"
	"github.com/weir-log/weir/internal/tlsfile"
	"github.com/weir-log/weir/server"
)

// testPKI is a CA in a temporary folder, and the certificates it issues.
type testPKI struct {
	t      *testing.T
	dir    string
	ca     *tlsfile.CA
	caPath string
}

func newPKI(t *testing.T, name string) *testPKI {
	t.Helper()
	ca, err := tlsfile.NewCA(name, time.Hour)
	require.NoError(t, err)
	p := &testPKI{t: t, dir: t.TempDir(), ca: ca}
	p.caPath = filepath.Join(p.dir, "ca.pem")
	require.NoError(t, os.WriteFile(p.caPath, ca.CertPEM, 0o644))
	return p
}

// node issues a node's certificate: for 127.0.0.1, valid for server and
// client authentication, as `weir certs` makes them.
func (p *testPKI) node(name string) (certPath, keyPath string) {
	return p.issue(tlsfile.Leaf{CommonName: name, Hosts: []string{"127.0.0.1"}, Server: true, Client: true, ValidFor: time.Hour})
}

// client issues a client-only certificate named name.
func (p *testPKI) client(name string) (certPath, keyPath string) {
	return p.issue(tlsfile.Leaf{CommonName: name, Client: true, ValidFor: time.Hour})
}

func (p *testPKI) issue(l tlsfile.Leaf) (certPath, keyPath string) {
	p.t.Helper()
	certPEM, keyPEM, err := p.ca.Issue(l)
	require.NoError(p.t, err)
	certPath, keyPath, err = tlsfile.WritePair(p.dir, l.CommonName, certPEM, keyPEM)
	require.NoError(p.t, err)
	return certPath, keyPath
}

// pool is a cert pool holding only p's CA.
func (p *testPKI) pool() *x509.CertPool {
	pool := x509.NewCertPool()
	pool.AddCert(p.ca.Cert)
	return pool
}

// pair loads a certificate and key for a tls.Config.
func (p *testPKI) pair(certPath, keyPath string) []tls.Certificate {
	p.t.Helper()
	c, err := tls.LoadX509KeyPair(certPath, keyPath)
	require.NoError(p.t, err)
	return []tls.Certificate{c}
}

// withTLS turns on enable-tls with a node certificate of p; mutual adds
// p's CA, so clients must present a certificate.
func withTLS(p *testPKI, name string, mutual bool) func(*conf.Config) {
	cert, key := p.node(name)
	return func(c *conf.Config) {
		c.EnableTLS, c.TLSCertPath, c.TLSKeyPath = true, cert, key
		if mutual {
			c.TLSCAPath = p.caPath
		}
	}
}

// dialTLS connects to addr over TLS with tc, or in plaintext when tc is nil.
func dialTLS(t *testing.T, addr string, tc *tls.Config) *grpc.ClientConn {
	t.Helper()
	creds := insecure.NewCredentials()
	if tc != nil {
		creds = credentials.NewTLS(tc)
	}
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(creds))
	require.NoError(t, err)
	t.Cleanup(func() { cc.Close() })
	return cc
}

// echo calls Echo over a fresh connection.
func echo(t *testing.T, addr string, tc *tls.Config) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	_, err := hstreampb.NewHStreamApiClient(dialTLS(t, addr, tc)).Echo(ctx, &hstreampb.EchoRequest{Msg: "hi"})
	return err
}

// TestGRPCTLS serves the API over TLS without a CA: clients that trust the
// server's CA get in; plaintext clients and clients that do not trust it
// are refused, as is TLS 1.1.
func TestGRPCTLS(t *testing.T) {
	p := newPKI(t, "weir test CA")
	n := nodetest.Start(t, withTLS(p, "node1", false))

	require.NoError(t, echo(t, n.Addr, &tls.Config{RootCAs: p.pool()}))
	err := echo(t, n.Addr, nil)
	assert.Equal(t, codes.Unavailable, status.Code(err), "plaintext: %v", err)
	err = echo(t, n.Addr, &tls.Config{RootCAs: newPKI(t, "other CA").pool()})
	assert.ErrorContains(t, err, "certificate signed by unknown authority")
	// gRPC's credentials insist on TLS 1.2 themselves: ask in raw TLS.
	_, err = tls.Dial("tcp", n.Addr, &tls.Config{RootCAs: p.pool(), MinVersion: tls.VersionTLS10, MaxVersion: tls.VersionTLS11})
	assert.ErrorContains(t, err, "protocol version not supported")

	// The client library and its hstreams:// url: create, append, read.
	ctx := t.Context()
	c, err := client.Dial(ctx, "hstreams://"+n.Addr, client.WithCACert(p.caPath))
	require.NoError(t, err)
	defer c.Close()
	_, err = c.CreateStream(ctx, "secure")
	require.NoError(t, err)
	_, err = c.Append(ctx, "secure", []client.Record{{Key: "k", Payload: []byte("over TLS")}})
	require.NoError(t, err)
	recs := n.Records(t, "secure")
	require.Len(t, recs, 1)
	assert.Equal(t, "over TLS", string(recs[0].Payload))

	_, err = client.Dial(ctx, "hstream://"+n.Addr, client.WithDialTimeout(2*time.Second))
	assert.Error(t, err, "a plaintext client of a TLS server")
}

// TestGRPCMutualTLS serves the API with a CA: only clients presenting a
// certificate that CA signed get in; the node-to-node service further
// wants a node's certificate.
func TestGRPCMutualTLS(t *testing.T) {
	p, other := newPKI(t, "weir test CA"), newPKI(t, "other CA")
	n := nodetest.Start(t, withTLS(p, "node1", true))
	good := p.pair(p.client("app"))

	require.NoError(t, echo(t, n.Addr, &tls.Config{RootCAs: p.pool(), Certificates: good}), "valid client certificate")
	for name, tc := range map[string]*tls.Config{
		"plaintext":           nil,
		"no certificate":      {RootCAs: p.pool()},
		"another CA's client": {RootCAs: p.pool(), Certificates: p.pair(other.client("app"))},
		"another CA's node":   {RootCAs: p.pool(), Certificates: p.pair(other.node("node9"))},
	} {
		err := echo(t, n.Addr, tc)
		assert.Equal(t, codes.Unavailable, status.Code(err), "%s: %v", name, err)
	}

	// The client library, with and without its certificate.
	ctx := t.Context()
	cert, key := p.client("cli")
	c, err := client.Dial(ctx, "hstreams://"+n.Addr, client.WithCACert(p.caPath), client.WithClientCert(cert, key))
	require.NoError(t, err)
	_, err = c.ListStreams(ctx, "")
	require.NoError(t, err)
	c.Close()
	_, err = client.Dial(ctx, "hstreams://"+n.Addr, client.WithCACert(p.caPath), client.WithDialTimeout(2*time.Second))
	assert.Error(t, err, "no client certificate")

	// A client certificate is not a node's: the peer service refuses it,
	// and serves a node certificate (ShardState of an unknown shard is
	// an error, but not a refusal).
	shardState := func(certs []tls.Certificate) error {
		ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		_, err := peerpb.NewPeerClient(dialTLS(t, n.Addr, &tls.Config{RootCAs: p.pool(), Certificates: certs})).
			ShardState(ctx, &peerpb.ShardStateRequest{ShardId: 424242})
		return err
	}
	err = shardState(good)
	assert.Equal(t, codes.PermissionDenied, status.Code(err), "%v", err)
	assert.ErrorContains(t, err, `"app" presented a certificate not valid for server authentication`)
	err = shardState(p.pair(p.node("node2")))
	assert.NotEqual(t, codes.PermissionDenied, status.Code(err), "%v", err)
	assert.NotEqual(t, codes.Unavailable, status.Code(err), "%v", err)
}

// TestClusterTLS runs two nodes with mutual TLS between them: the stream's
// replicas are written and read over the peer service, which refuses
// plaintext, so replication proves the nodes speak TLS to each other.
func TestClusterTLS(t *testing.T) {
	p := newPKI(t, "weir cluster CA")
	cert, key := p.node("node") // one certificate for both, as `weir certs` makes
	nodes := startCluster(t, 2, func(c *conf.Config) {
		c.EnableTLS, c.TLSCertPath, c.TLSKeyPath, c.TLSCAPath = true, cert, key, p.caPath
	})
	_, err := nodes[0].API.CreateStream(t.Context(), &hstreampb.Stream{StreamName: "rf2", ShardCount: 1, ReplicationFactor: 2})
	require.NoError(t, err)
	metas, err := nodes[0].Server.Node().StreamShards("rf2")
	require.NoError(t, err)
	shard := metas[0].ID
	const per = 20
	for i := range per {
		for _, nd := range nodes {
			appendVia(t, nd, "rf2", shard, fmt.Sprintf("n%d", nd.Cfg.NodeID), i)
		}
	}
	require.Eventually(t, func() bool {
		a := replicaEntries(t, nodes[0], shard)
		return len(a) == per*len(nodes) && sameEntries(a, replicaEntries(t, nodes[1], shard))
	}, 10*time.Second, 50*time.Millisecond, "the replicas differ")
}

// TestTLSMisconfiguration: a bad TLS setting fails start-up with an
// error naming the key and the file.
func TestTLSMisconfiguration(t *testing.T) {
	p, other := newPKI(t, "weir test CA"), newPKI(t, "other CA")
	cert, key := p.node("node1")
	_, otherKey := other.node("node1")
	missing := filepath.Join(t.TempDir(), "missing.pem")
	notPEM := filepath.Join(t.TempDir(), "ca.pem")
	require.NoError(t, os.WriteFile(notPEM, []byte("not a certificate"), 0o644))

	for _, tc := range []struct {
		name   string
		mutate func(*conf.Config)
		want   string
	}{
		{"missing certificate", func(c *conf.Config) { c.EnableTLS, c.TLSCertPath, c.TLSKeyPath = true, missing, key },
			"tls-cert-path: stat " + missing + ": no such file or directory"},
		{"missing CA", func(c *conf.Config) { c.EnableTLS, c.TLSCertPath, c.TLSKeyPath, c.TLSCAPath = true, cert, key, missing },
			"tls-ca-path: stat " + missing},
		{"key of another certificate", func(c *conf.Config) { c.EnableTLS, c.TLSCertPath, c.TLSKeyPath = true, cert, otherKey },
			fmt.Sprintf("tls-cert-path %q, tls-key-path %q: tls: private key does not match public key", cert, otherKey)},
		{"key and certificate swapped", func(c *conf.Config) { c.EnableTLS, c.TLSCertPath, c.TLSKeyPath = true, key, cert },
			fmt.Sprintf("tls-cert-path %q, tls-key-path %q: ", key, cert)},
		{"CA file without a certificate", func(c *conf.Config) { c.EnableTLS, c.TLSCertPath, c.TLSKeyPath, c.TLSCAPath = true, cert, key, notPEM },
			"tls-ca-path: no PEM certificate in " + notPEM},
		{"CA without TLS", func(c *conf.Config) { c.TLSCAPath = p.caPath },
			fmt.Sprintf("tls-ca-path: %q is set but enable-tls is false", p.caPath)},
		{"MQTT key of another certificate", func(c *conf.Config) {
			c.MQTT.TLSListen, c.MQTT.TLSCertPath, c.MQTT.TLSKeyPath = nodetest.FreeAddr(t), cert, otherKey
		}, fmt.Sprintf("mqtt.tls-cert-path %q, mqtt.tls-key-path %q: tls: private key does not match public key", cert, otherKey)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := conf.Default()
			cfg.DataDir = t.TempDir()
			cfg.GRPC.Listen, cfg.MQTT.Listen, cfg.HTTP.Listen = nodetest.FreeAddr(t), "", ""
			cfg.Etcd.Embedded.ClientListen, cfg.Etcd.Embedded.PeerListen = nodetest.FreeAddr(t), nodetest.FreeAddr(t)
			tc.mutate(cfg)
			srv, err := server.New(cfg, nil)
			if err == nil {
				err = srv.Start(t.Context())
				srv.Close()
			}
			require.Error(t, err)
			assert.Contains(t, err.Error(), tc.want)
		})
	}
}

// TestReloadTLS swaps the node's certificate for one from a new CA:
// after ReloadTLS, new connections see the new one. A reload that fails
// keeps the one in use.
func TestReloadTLS(t *testing.T) {
	old, fresh := newPKI(t, "old CA"), newPKI(t, "new CA")
	cert, key := old.node("node1")
	n := nodetest.Start(t, func(c *conf.Config) { c.EnableTLS, c.TLSCertPath, c.TLSKeyPath = true, cert, key })
	require.NoError(t, echo(t, n.Addr, &tls.Config{RootCAs: old.pool()}))

	newCert, newKey := fresh.node("node1")
	copyFile(t, newCert, cert)
	copyFile(t, newKey, key)
	require.NoError(t, n.Server.ReloadTLS())
	require.NoError(t, echo(t, n.Addr, &tls.Config{RootCAs: fresh.pool()}))
	assert.ErrorContains(t, echo(t, n.Addr, &tls.Config{RootCAs: old.pool()}), "certificate signed by unknown authority")

	require.NoError(t, os.WriteFile(key, []byte("broken"), 0o600))
	err := n.Server.ReloadTLS()
	assert.ErrorContains(t, err, fmt.Sprintf("tls-cert-path %q, tls-key-path %q", cert, key))
	require.NoError(t, echo(t, n.Addr, &tls.Config{RootCAs: fresh.pool()}), "the failed reload kept the working certificate")
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	b, err := os.ReadFile(from)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(to, b, 0o600))
}
