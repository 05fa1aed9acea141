package main

import (
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/weir-log/weir/conf"
	"github.com/weir-log/weir/internal/nodetest"
)

// TestCLIOverMutualTLS is the walk-through of docs/security.md: `weir
// certs` makes the files, a node serves with them and asks for client
// certificates, and the CLI talks to it over hstreams:// with its flags.
func TestCLIOverMutualTLS(t *testing.T) {
	dir := t.TempDir()
	_, err := runCerts(t, dir, "--hosts", "127.0.0.1", "--client", "alice")
	require.NoError(t, err)
	file := func(name string) string { return filepath.Join(dir, name) }
	node := nodetest.Start(t, func(c *conf.Config) {
		c.EnableTLS = true
		c.TLSCertPath, c.TLSKeyPath, c.TLSCAPath = file("server.pem"), file("server-key.pem"), file("ca.pem")
	})
	addr := "hstreams://" + node.Addr
	tlsFlags := []string{"--tls-ca", file("ca.pem"), "--tls-cert", file("alice.pem"), "--tls-key", file("alice-key.pem")}
	weir := func(stdin string, args ...string) (string, error) {
		return runWeir(t.Context(), stdin, append(append(args, "--addr", addr), tlsFlags...)...)
	}

	_, err = weir("", "stream", "create", "secure")
	require.NoError(t, err)
	_, err = weir("reading 1\nreading 2\n", "append", "secure", "--key", "dev-1")
	require.NoError(t, err)
	out, err := weir("", "stream", "list")
	require.NoError(t, err)
	assert.Contains(t, out, "secure")
	recs := node.Records(t, "secure")
	require.Len(t, recs, 2)
	assert.Equal(t, "reading 2", string(recs[1].Payload))

	// Without a client certificate, or without TLS, the node refuses.
	_, err = runWeir(t.Context(), "", "stream", "list", "--addr", addr, "--tls-ca", file("ca.pem"))
	assert.Error(t, err)
	_, err = runWeir(t.Context(), "", "stream", "list", "--addr", "hstream://"+node.Addr)
	assert.Error(t, err)
	// And TLS flags with a plaintext url are a contradiction.
	_, err = runWeir(t.Context(), "", append([]string{"stream", "list", "--addr", "hstream://" + node.Addr}, tlsFlags...)...)
	assert.ErrorContains(t, err, "is plaintext (hstream://)")
}
