package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"gopkg.in/yaml.v3"

	"github.com/weir-log/weir/internal/tlstest"
)

// runCerts runs `weir certs --dir dir args...` and returns its output.
func runCerts(t *testing.T, dir string, args ...string) (string, error) {
	t.Helper()
	return runWeir(context.Background(), "", append([]string{"certs", "--dir", dir}, args...)...)
}

// readCert parses the one certificate in the PEM file at path.
func readCert(t *testing.T, path string) *x509.Certificate {
	t.Helper()
	data, err := os.ReadFile(path)
	require.NoError(t, err)
	block, rest := pem.Decode(data)
	require.NotNil(t, block, path)
	require.Equal(t, "CERTIFICATE", block.Type)
	require.Empty(t, rest)
	cert, err := x509.ParseCertificate(block.Bytes)
	require.NoError(t, err)
	return cert
}

// verifyCert checks cert against the CA certificate at caPath for usage,
// and for name when it is not empty.
func verifyCert(t *testing.T, cert *x509.Certificate, caPath, name string, usage x509.ExtKeyUsage) error {
	t.Helper()
	roots := x509.NewCertPool()
	roots.AddCert(readCert(t, caPath))
	_, err := cert.Verify(x509.VerifyOptions{Roots: roots, DNSName: name, KeyUsages: []x509.ExtKeyUsage{usage}})
	return err
}

// dirNames lists the names in dir.
func dirNames(t *testing.T, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	require.NoError(t, err)
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	return names
}

func TestCertsIssuesCertificatesThatChainToTheCA(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "certs")
	out, err := runCerts(t, dir, "--hosts", "127.0.0.1,::1,localhost,node1.weir.example", "--client", "alice,bob", "--client", "carol", "--days", "30")
	require.NoError(t, err)
	require.ElementsMatch(t, []string{"ca.pem", "ca-key.pem", "server.pem", "server-key.pem",
		"alice.pem", "alice-key.pem", "bob.pem", "bob-key.pem", "carol.pem", "carol-key.pem"}, dirNames(t, dir))
	for _, name := range []string{"ca", "server", "alice"} {
		for file, mode := range map[string]os.FileMode{name + ".pem": 0o644, name + "-key.pem": 0o600} {
			fi, err := os.Stat(filepath.Join(dir, file))
			require.NoError(t, err)
			require.Equal(t, mode, fi.Mode().Perm(), file)
		}
	}

	caPath := filepath.Join(dir, "ca.pem")
	ca := readCert(t, caPath)
	require.True(t, ca.IsCA)
	require.Regexp(t, `^weir CA \d{4}-\d\d-\d\d \d\d:\d\d:\d\d$`, ca.Subject.CommonName, "named for when it was made, to tell CAs apart")
	require.WithinDuration(t, time.Now().Add(300*24*time.Hour), ca.NotAfter, time.Minute, "a new CA lives ten times --days")

	server := readCert(t, filepath.Join(dir, "server.pem"))
	require.Equal(t, "server", server.Subject.CommonName)
	require.Equal(t, []string{"localhost", "node1.weir.example"}, server.DNSNames)
	require.Len(t, server.IPAddresses, 2)
	require.True(t, server.IPAddresses[0].Equal(net.IPv4(127, 0, 0, 1)))
	require.True(t, server.IPAddresses[1].Equal(net.IPv6loopback))
	require.Equal(t, []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}, server.ExtKeyUsage)
	require.WithinDuration(t, time.Now().Add(30*24*time.Hour), server.NotAfter, time.Minute)
	for _, name := range []string{"127.0.0.1", "::1", "localhost", "node1.weir.example"} {
		require.NoError(t, verifyCert(t, server, caPath, name, x509.ExtKeyUsageServerAuth), name)
	}
	require.ErrorContains(t, verifyCert(t, server, caPath, "node2.weir.example", x509.ExtKeyUsageServerAuth), "not node2.weir.example")
	require.NoError(t, verifyCert(t, server, caPath, "", x509.ExtKeyUsageClientAuth), "a node presents its certificate to other nodes")

	for _, name := range []string{"alice", "bob", "carol"} {
		client := readCert(t, filepath.Join(dir, name+".pem"))
		require.Equal(t, name, client.Subject.CommonName)
		require.Empty(t, client.DNSNames)
		require.Empty(t, client.IPAddresses)
		require.Equal(t, []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}, client.ExtKeyUsage)
		require.NoError(t, verifyCert(t, client, caPath, "", x509.ExtKeyUsageClientAuth), name)
		require.ErrorContains(t, verifyCert(t, client, caPath, "", x509.ExtKeyUsageServerAuth), "incompatible key usage", name)
		_, err := tls.LoadX509KeyPair(filepath.Join(dir, name+".pem"), filepath.Join(dir, name+"-key.pem"))
		require.NoError(t, err, name)
	}

	// The output says what it wrote, and its configuration names the files.
	require.Contains(t, out, "wrote "+caPath+", "+filepath.Join(dir, "ca-key.pem")+`: new CA "weir CA 20`)
	require.Contains(t, out, "wrote "+filepath.Join(dir, "server.pem")+", "+filepath.Join(dir, "server-key.pem")+`: server and client certificate "server" for 127.0.0.1, ::1, localhost, node1.weir.example`)
	require.Contains(t, out, "wrote "+filepath.Join(dir, "carol.pem")+", "+filepath.Join(dir, "carol-key.pem")+`: client certificate "carol"`)
	require.Contains(t, out, "--tls-ca "+caPath+" --tls-cert "+filepath.Join(dir, "bob.pem")+" --tls-key "+filepath.Join(dir, "bob-key.pem"))
	var snippet string
	for _, block := range strings.Split(out, "\n\n") {
		if strings.HasPrefix(block, "# weir server configuration") {
			snippet = block
		}
	}
	var cfg struct {
		EnableTLS   bool   `yaml:"enable-tls"`
		TLSCertPath string `yaml:"tls-cert-path"`
		TLSKeyPath  string `yaml:"tls-key-path"`
		TLSCAPath   string `yaml:"tls-ca-path"`
		MQTT        struct {
			TLSListen string `yaml:"tls-listen"`
		} `yaml:"mqtt"`
	}
	require.NoError(t, yaml.Unmarshal([]byte(snippet), &cfg), out)
	require.True(t, cfg.EnableTLS)
	require.Equal(t, filepath.Join(dir, "server.pem"), cfg.TLSCertPath)
	require.Equal(t, filepath.Join(dir, "server-key.pem"), cfg.TLSKeyPath)
	require.Equal(t, caPath, cfg.TLSCAPath)
	require.Equal(t, "127.0.0.1:8883", cfg.MQTT.TLSListen)
}

func TestCertsReusesTheCAAndKeepsExistingFiles(t *testing.T) {
	dir := t.TempDir()
	_, err := runCerts(t, dir)
	require.NoError(t, err)
	caPath := filepath.Join(dir, "ca.pem")
	read := func(name string) string {
		data, err := os.ReadFile(filepath.Join(dir, name))
		require.NoError(t, err)
		return string(data)
	}
	caPEM, caKeyPEM, serverPEM := read("ca.pem"), read("ca-key.pem"), read("server.pem")

	// A second run adds a client under the same CA, without a server.
	out, err := runCerts(t, dir, "--server", "", "--client", "device1")
	require.NoError(t, err)
	require.Contains(t, out, "using CA "+caPath+` ("weir CA 20`)
	require.NotContains(t, out, "enable-tls", "no server certificate, no server configuration")
	require.Equal(t, caPEM, read("ca.pem"))
	require.Equal(t, caKeyPEM, read("ca-key.pem"))
	require.Equal(t, serverPEM, read("server.pem"))
	require.NoError(t, verifyCert(t, readCert(t, filepath.Join(dir, "device1.pem")), caPath, "", x509.ExtKeyUsageClientAuth))

	// Existing leaves are kept, and nothing is written, without --force.
	before := dirNames(t, dir)
	_, err = runCerts(t, dir, "--client", "client,device2")
	require.EqualError(t, err, filepath.Join(dir, "server.pem")+" exists: remove it or give --force to overwrite it")
	require.NoError(t, os.Remove(filepath.Join(dir, "server.pem")))
	_, err = runCerts(t, dir, "--client", "device2")
	require.EqualError(t, err, filepath.Join(dir, "server-key.pem")+" exists: remove it or give --force to overwrite it")
	require.Equal(t, len(before)-1, len(dirNames(t, dir)), "a refused run writes nothing")

	// --force replaces the leaves, under the same CA.
	_, err = runCerts(t, dir, "--force", "--hosts", "10.0.0.7")
	require.NoError(t, err)
	require.Equal(t, caPEM, read("ca.pem"))
	server := readCert(t, filepath.Join(dir, "server.pem"))
	require.NotEqual(t, serverPEM, read("server.pem"))
	require.NoError(t, verifyCert(t, server, caPath, "10.0.0.7", x509.ExtKeyUsageServerAuth))
	require.Error(t, verifyCert(t, server, caPath, "127.0.0.1", x509.ExtKeyUsageServerAuth))
}

func TestCertsErrorsNameTheFlagOrFile(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--hosts", "127.0.0.1,foo bar"}, `--hosts "127.0.0.1,foo bar": certificate "server": host "foo bar": not an IP address or a DNS name`},
		{[]string{"--hosts", "node1:6570"}, `--hosts "node1:6570": certificate "server": host "node1:6570"`},
		{[]string{"--hosts", ""}, `--hosts: want at least one IP address or DNS name for the server certificate "server"`},
		{[]string{"--days", "0"}, "--days 0: want 1 to 3650"},
		{[]string{"--days", "3651"}, "--days 3651: want 1 to 3650"},
		{[]string{"--client", "a/b"}, `--client "a/b": want letters, digits`},
		{[]string{"--client", "ca"}, `--client "ca": "ca" names the CA's files`},
		{[]string{"--client", "x-key"}, `--client "x-key": a name ending "-key"`},
		{[]string{"--client", "a,,b"}, `--client "": empty name`},
		{[]string{"--server", "../x"}, `--server "../x": a name starts with`},
		{[]string{"--client", "server"}, `--client "server": already given as --server`},
		{[]string{"--client", "d1,d1"}, `--client "d1": already given as --client`},
		{[]string{"--dir", ""}, `--dir "": want a directory`},
	} {
		_, err := runCerts(t, dir, tc.args...)
		require.ErrorContains(t, err, tc.want, tc.args)
	}
	require.Empty(t, dirNames(t, dir), "failed runs write nothing")

	// One CA file without the other is an error naming both, unless --force.
	_, err := runCerts(t, dir)
	require.NoError(t, err)
	caPath, caKeyPath := filepath.Join(dir, "ca.pem"), filepath.Join(dir, "ca-key.pem")
	oldCA, err := os.ReadFile(caPath)
	require.NoError(t, err)
	require.NoError(t, os.Remove(caKeyPath))
	_, err = runCerts(t, dir, "--server", "n2", "--client", "")
	require.ErrorContains(t, err, caPath+" exists but "+caKeyPath+" does not")
	require.NoFileExists(t, filepath.Join(dir, "n2.pem"))
	require.NoError(t, os.Rename(caPath, caKeyPath))
	_, err = runCerts(t, dir, "--server", "n2", "--client", "")
	require.ErrorContains(t, err, caKeyPath+" exists but "+caPath+" does not")

	// A CA file that is not one names the file.
	require.NoError(t, os.WriteFile(caPath, []byte("junk"), 0o644))
	_, err = runCerts(t, dir, "--server", "n2", "--client", "")
	require.EqualError(t, err, "CA certificate "+caPath+": no PEM certificate")

	// --force replaces a lone CA file with a new CA.
	require.NoError(t, os.Remove(caPath))
	out, err := runCerts(t, dir, "--force")
	require.NoError(t, err)
	require.Contains(t, out, `new CA "weir CA 20`)
	newCA, err := os.ReadFile(caPath)
	require.NoError(t, err)
	require.NotEqual(t, oldCA, newCA)
	require.NoError(t, verifyCert(t, readCert(t, filepath.Join(dir, "server.pem")), caPath, "localhost", x509.ExtKeyUsageServerAuth))
}

func TestCertsMutualTLSHandshake(t *testing.T) {
	dir, otherDir := t.TempDir(), t.TempDir()
	_, err := runCerts(t, dir, "--client", "device1")
	require.NoError(t, err)
	_, err = runCerts(t, otherDir, "--client", "device1")
	require.NoError(t, err)
	pair := func(dir, name string) tls.Certificate {
		p, err := tls.LoadX509KeyPair(filepath.Join(dir, name+".pem"), filepath.Join(dir, name+"-key.pem"))
		require.NoError(t, err)
		return p
	}
	pool := func(dir string) *x509.CertPool {
		data, err := os.ReadFile(filepath.Join(dir, "ca.pem"))
		require.NoError(t, err)
		p := x509.NewCertPool()
		require.True(t, p.AppendCertsFromPEM(data))
		return p
	}
	serverConf := &tls.Config{
		Certificates: []tls.Certificate{pair(dir, "server")},
		ClientCAs:    pool(dir), ClientAuth: tls.RequireAndVerifyClientCert, MinVersion: tls.VersionTLS12,
	}

	// A device, and another node, get in, verifying the server by IP and by name.
	for _, tc := range []struct{ serverName, client, cn string }{
		{"", "device1", "device1"},
		{"localhost", "device1", "device1"},
		{"127.0.0.1", "server", "server"},
	} {
		state, serverErr, clientErr := tlstest.Handshake(t, serverConf, &tls.Config{
			ServerName: tc.serverName, RootCAs: pool(dir), Certificates: []tls.Certificate{pair(dir, tc.client)},
		})
		require.NoError(t, serverErr, tc)
		require.NoError(t, clientErr, tc)
		require.Equal(t, tc.cn, state.PeerCertificates[0].Subject.CommonName)
	}

	// A name the server certificate is not for, no client certificate, or
	// one another CA signed, are refused.
	_, _, clientErr := tlstest.Handshake(t, serverConf, &tls.Config{ServerName: "node9.example", RootCAs: pool(dir), Certificates: []tls.Certificate{pair(dir, "device1")}})
	require.ErrorContains(t, clientErr, "not node9.example")
	_, serverErr, clientErr := tlstest.Handshake(t, serverConf, &tls.Config{RootCAs: pool(dir)})
	require.ErrorContains(t, serverErr, "client didn't provide a certificate")
	require.Error(t, clientErr)
	_, serverErr, clientErr = tlstest.Handshake(t, serverConf, &tls.Config{RootCAs: pool(dir), Certificates: []tls.Certificate{pair(otherDir, "device1")}})
	require.ErrorContains(t, serverErr, "unknown authority")
	require.Error(t, clientErr)
	_, _, clientErr = tlstest.Handshake(t, serverConf, &tls.Config{RootCAs: pool(otherDir), Certificates: []tls.Certificate{pair(dir, "device1")}})
	require.ErrorContains(t, clientErr, "unknown authority")
}
