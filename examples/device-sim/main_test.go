package main

import (
	"context"
	"encoding/json"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/weir-log/weir/conf"
	"github.com/weir-log/weir/internal/nodetest"
)

// TestRun has 3 devices publish 20 messages each at QoS 1 to a real node
// and checks the stream "telemetry" holds all 60, keyed by device id and in
// order per device.
func TestRun(t *testing.T) {
	n := nodetest.Start(t, func(c *conf.Config) { c.MQTT.Listen = nodetest.FreeAddr(t) })
	cfg, err := parseFlags([]string{
		"-broker", "tcp://" + n.Server.MQTTAddr(),
		"-devices", "3", "-count", "20", "-rate", "200", "-qos", "1",
	}, io.Discard)
	require.NoError(t, err)

	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	var out strings.Builder
	require.NoError(t, run(ctx, cfg, &out))
	t.Logf("output:\n%s", out.String())
	assert.Contains(t, out.String(), "sent 60  acked 60  errors 0")

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
