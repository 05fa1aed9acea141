package test

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/weir-log/weir/api/hstreampb"
	"github.com/weir-log/weir/bridge"
	"github.com/weir-log/weir/conf"
	"github.com/weir-log/weir/internal/nodetest"
)

// mosquittoClients returns the paths of mosquitto_pub and mosquitto_sub.
// Without them the test is skipped, unless WEIR_REQUIRE_MOSQUITTO is set
// (.ci/run installs them and sets it), where it fails.
func mosquittoClients(t *testing.T) (pub, sub string) {
	pub, errPub := exec.LookPath("mosquitto_pub")
	sub, errSub := exec.LookPath("mosquitto_sub")
	if errPub != nil || errSub != nil {
		if os.Getenv("WEIR_REQUIRE_MOSQUITTO") != "" {
			t.Fatalf("mosquitto_pub and mosquitto_sub are required (WEIR_REQUIRE_MOSQUITTO is set): %v, %v", errPub, errSub)
		}
		t.Skip("mosquitto_pub/mosquitto_sub not installed (apt-get install mosquitto-clients)")
	}
	return pub, sub
}

// TestMosquittoInterop publishes with mosquitto_pub (MQTT 3.1.1 and 5) and
// consumes a durable shared subscription with mosquitto_sub.
func TestMosquittoInterop(t *testing.T) {
	pubBin, subBin := mosquittoClients(t)
	n := nodetest.Start(t, func(c *conf.Config) { c.MQTT.Listen = nodetest.FreeAddr(t) })
	host, port, ok := strings.Cut(n.Server.MQTTAddr(), ":")
	require.True(t, ok)
	run := func(bin string, args ...string) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		out, err := exec.CommandContext(ctx, bin, append([]string{"-h", host, "-p", port}, args...)...).CombinedOutput()
		require.NoError(t, err, "%s %v:\n%s", bin, args, out)
	}

	// Publishes land in the stream named by the first topic level, keyed by
	// client ID, with the MQTT attributes.
	run(pubBin, "-i", "m311", "-q", "1", "-t", "sensors/m311/temp", "-m", "hello 3.1.1")
	run(pubBin, "-V", "mqttv5", "-i", "m5", "-q", "2", "-t", "sensors/m5/temp", "-m", "hello 5",
		"-D", "publish", "user-property", "unit", "celsius", "-D", "publish", "content-type", "text/plain")
	recs := n.Records(t, "sensors")
	require.Len(t, recs, 2)
	assert.Equal(t, "m311", recs[0].Header.Key)
	assert.Equal(t, "hello 3.1.1", string(recs[0].Payload))
	assert.Equal(t, "sensors/m311/temp", recs[0].Header.Attributes[bridge.AttrTopic])
	assert.Equal(t, "1", recs[0].Header.Attributes[bridge.AttrQoS])
	assert.Equal(t, "m5", recs[1].Header.Key)
	assert.Equal(t, "hello 5", string(recs[1].Payload))
	assert.Equal(t, "2", recs[1].Header.Attributes[bridge.AttrQoS])
	assert.Equal(t, "text/plain", recs[1].Header.Attributes[bridge.AttrContentType])
	assert.Equal(t, `[["unit","celsius"]]`, recs[1].Header.Attributes[bridge.AttrUserProperties])

	// mosquitto_sub joins the group g and gets the next two messages.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var out bytes.Buffer
	sub := exec.CommandContext(ctx, subBin, "-h", host, "-p", port, "-V", "mqttv5", "-i", "reader1",
		"-q", "1", "-t", "$share/g/sensors/#", "-C", "2", "-v")
	sub.Stdout, sub.Stderr = &out, &out
	require.NoError(t, sub.Start())
	waitc := make(chan error, 1)
	go func() { waitc <- sub.Wait() }()
	require.Eventually(t, func() bool {
		resp, err := n.API.ListConsumers(ctx, &hstreampb.ListConsumersRequest{SubscriptionId: "g"})
		return err == nil && len(resp.Consumers) == 1
	}, 20*time.Second, 20*time.Millisecond, "mosquitto_sub did not join group g:\n%s", &out)
	run(pubBin, "-i", "m311", "-q", "1", "-t", "sensors/m311/temp", "-m", "first")
	run(pubBin, "-i", "m311", "-q", "1", "-t", "sensors/m311/hum", "-m", "second")
	select {
	case err := <-waitc:
		require.NoError(t, err, "mosquitto_sub:\n%s", &out)
	case <-ctx.Done():
		t.Fatalf("mosquitto_sub did not get 2 messages:\n%s", &out)
	}
	assert.Equal(t, "sensors/m311/temp first\nsensors/m311/hum second\n", out.String())
}
