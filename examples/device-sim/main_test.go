package main

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/weir-log/weir/conf"
	"github.com/weir-log/weir/internal/nodetest"
	"github.com/weir-log/weir/internal/tlsfile"
)

// TestRun has 3 devices publish 20 messages each at QoS 1 to a real node
// and checks the stream "telemetry" holds all 60, keyed by device id and in
// order per device.
func TestRun(t *testing.T) {
	n := nodetest.Start(t, func(c *conf.Config) { c.MQTT.Listen = nodetest.FreeAddr(t) })
	out, err := simulate(t, "-broker", "tcp://"+n.Server.MQTTAddr(), "-devices", "3", "-count", "20", "-rate", "200", "-qos", "1")
	require.NoError(t, err)
	assert.Contains(t, out, "sent 60  acked 60  errors 0")

	// A QoS 1 PUBACK means the message is committed: no waiting needed.
	recs := n.Records(t, "telemetry")
	require.Len(t, recs, 60)
	seqs := map[string][]int{}
	for _, r := range recs {
		var m reading
		require.NoError(t, json.Unmarshal(r.Payload, &m), "payload %s", r.Payload)
		assert.Equal(t, r.Header.Key, m.Device, "the record key is the client ID, the device id")
		seqs[r.Header.Key] = append(seqs[r.Header.Key], m.Seq)
	}
	want := make([]int, 20)
	for i := range want {
		want[i] = i + 1
	}
	assert.Equal(t, map[string][]int{"dev-001": want, "dev-002": want, "dev-003": want}, seqs)
}

// TestRunMutualTLS runs devices against a node whose MQTT TLS listener
// requires client certificates signed by its CA: with -tls-ca, -tls-cert
// and -tls-key every message lands; without -tls-cert the broker refuses
// the connection and nothing is acknowledged.
func TestRunMutualTLS(t *testing.T) {
	// The self-signed certificate is the CA, the broker's certificate and
	// the client's.
	certPath, keyPath, _, err := tlsfile.SelfSigned(t.TempDir())
	require.NoError(t, err)
	n := nodetest.Start(t, func(c *conf.Config) {
		c.MQTT.TLSListen = nodetest.FreeAddr(t)
		c.TLSCertPath, c.TLSKeyPath, c.TLSCAPath = certPath, keyPath, certPath
	})
	broker := "ssl://" + n.Cfg.MQTT.TLSListen

	t.Run("client certificate", func(t *testing.T) {
		out, err := simulate(t, "-broker", broker, "-tls-ca", certPath, "-tls-cert", certPath, "-tls-key", keyPath,
			"-devices", "2", "-count", "10", "-rate", "200", "-qos", "1", "-progress", "0")
		require.NoError(t, err)
		assert.Contains(t, out, "sent 20  acked 20  errors 0")
		assert.Len(t, n.Records(t, "telemetry"), 20)
	})

	t.Run("no client certificate", func(t *testing.T) {
		out, err := simulate(t, "-broker", broker, "-tls-ca", certPath, "-topic", "refused/{device}",
			"-devices", "1", "-count", "5", "-rate", "200", "-qos", "1", "-progress", "0")
		require.Error(t, err)
		assert.Contains(t, err.Error(), "connecting to "+broker)
		assert.Contains(t, err.Error(), "certificate", "the broker asked for a client certificate")
		assert.NotContains(t, out, "acked", "nothing was published")
		assert.Len(t, n.Records(t, "telemetry"), 20, "no new records")
	})

	t.Run("unknown CA", func(t *testing.T) {
		// Without -tls-ca the system roots do not know the broker's
		// self-signed certificate.
		_, err := simulate(t, "-broker", broker, "-tls-cert", certPath, "-tls-key", keyPath,
			"-devices", "1", "-count", "5", "-progress", "0")
		require.Error(t, err)
		assert.Contains(t, err.Error(), "certificate")
	})
}

// TestParseFlagsTLS checks the TLS flags: loaded for a TLS url, refused
// with a plain one, the certificate and key only together, and files that
// cannot be read or parsed named with their flag.
func TestParseFlagsTLS(t *testing.T) {
	dir := t.TempDir()
	certPath, keyPath, _, err := tlsfile.SelfSigned(dir)
	require.NoError(t, err)
	missing := filepath.Join(dir, "missing.pem")
	junk := filepath.Join(dir, "junk.pem")
	require.NoError(t, os.WriteFile(junk, []byte("not PEM"), 0o600))
	otherDir := t.TempDir()
	_, otherKey, _, err := tlsfile.SelfSigned(otherDir)
	require.NoError(t, err)

	for _, scheme := range []string{"ssl", "tls", "mqtts", "tcps", "wss", "SSL"} {
		cfg, err := parseFlags([]string{"-broker", scheme + "://127.0.0.1:8883",
			"-tls-ca", certPath, "-tls-cert", certPath, "-tls-key", keyPath}, io.Discard)
		require.NoError(t, err, scheme)
		require.NotNil(t, cfg.tls)
		assert.NotNil(t, cfg.tls.RootCAs)
		assert.Len(t, cfg.tls.Certificates, 1)
		assert.Equal(t, uint16(tls.VersionTLS12), cfg.tls.MinVersion)
	}
	cfg, err := parseFlags([]string{"-broker", "ssl://127.0.0.1:8883"}, io.Discard)
	require.NoError(t, err)
	assert.Nil(t, cfg.tls.RootCAs, "no -tls-ca: the system roots")
	assert.Equal(t, uint16(tls.VersionTLS12), cfg.tlsConfig().MinVersion)
	assert.Equal(t, uint16(tls.VersionTLS12), config{}.tlsConfig().MinVersion)

	for _, tc := range []struct {
		name string
		args []string
		want []string // substrings of the error
	}{
		{"tls flags with tcp url", []string{"-broker", "tcp://127.0.0.1:1883", "-tls-ca", certPath, "-tls-cert", certPath, "-tls-key", keyPath},
			[]string{`-tls-ca is set but -broker "tcp://127.0.0.1:1883" is not a TLS url`, "-tls-cert is set but", "-tls-key is set but"}},
		{"tls flags with ws url", []string{"-broker", "ws://127.0.0.1:8080/mqtt", "-tls-ca", certPath},
			[]string{`-tls-ca is set but -broker "ws://127.0.0.1:8080/mqtt" is not a TLS url`}},
		{"tls flags with bare host:port", []string{"-broker", "127.0.0.1:1883", "-tls-ca", certPath},
			[]string{`-tls-ca is set but -broker "127.0.0.1:1883" is not a TLS url`}},
		{"unknown scheme", []string{"-broker", "http://127.0.0.1:1883"},
			[]string{`-broker "http://127.0.0.1:1883": unknown scheme "http"`}},
		{"cert without key", []string{"-broker", "ssl://h:8883", "-tls-cert", certPath},
			[]string{"-tls-cert is set without -tls-key"}},
		{"key without cert", []string{"-broker", "ssl://h:8883", "-tls-key", keyPath},
			[]string{"-tls-key is set without -tls-cert"}},
		{"missing ca", []string{"-broker", "ssl://h:8883", "-tls-ca", missing},
			[]string{`-tls-ca "` + missing + `"`, "no such file"}},
		{"ca without certificates", []string{"-broker", "ssl://h:8883", "-tls-ca", junk},
			[]string{`-tls-ca "` + junk + `"`, "no PEM certificate"}},
		{"missing cert", []string{"-broker", "ssl://h:8883", "-tls-cert", missing, "-tls-key", keyPath},
			[]string{`-tls-cert "` + missing + `"`, "no such file"}},
		{"missing key", []string{"-broker", "ssl://h:8883", "-tls-cert", certPath, "-tls-key", missing},
			[]string{`-tls-key "` + missing + `"`, "no such file"}},
		{"key of another certificate", []string{"-broker", "ssl://h:8883", "-tls-cert", certPath, "-tls-key", otherKey},
			[]string{`-tls-cert "` + certPath + `", -tls-key "` + otherKey + `"`, "private key does not match"}},
		{"junk cert", []string{"-broker", "ssl://h:8883", "-tls-cert", junk, "-tls-key", keyPath},
			[]string{`-tls-cert "` + junk + `", -tls-key "` + keyPath + `"`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := parseFlags(tc.args, io.Discard)
			require.Error(t, err)
			for _, w := range tc.want {
				assert.Contains(t, err.Error(), w)
			}
		})
	}
}

// simulate parses args and runs the simulation for at most 30 s, and
// returns what it printed.
func simulate(t *testing.T, args ...string) (string, error) {
	t.Helper()
	cfg, err := parseFlags(args, io.Discard)
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var out strings.Builder
	err = run(ctx, cfg, &out)
	t.Logf("output:\n%s\nerror: %v", out.String(), err)
	return out.String(), err
}

// TestParseFlags checks the defaults and that every bad flag is reported.
func TestParseFlags(t *testing.T) {
	cfg, err := parseFlags(nil, io.Discard)
	require.NoError(t, err)
	assert.Equal(t, "tcp://127.0.0.1:1883", cfg.broker)
	assert.Equal(t, "telemetry/{device}", cfg.topic)
	assert.Equal(t, "dev-007", cfg.deviceID(6))

	_, err = parseFlags([]string{"-devices", "0", "-rate", "0", "-qos", "3", "-topic", "a/+"}, io.Discard)
	require.Error(t, err)
	for _, f := range []string{"-devices", "-rate", "-qos", "-topic"} {
		assert.Contains(t, err.Error(), f)
	}
}
