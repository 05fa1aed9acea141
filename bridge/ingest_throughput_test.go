package bridge_test

import (
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"sync"
	"testing"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/hooks/auth"
	"github.com/mochi-mqtt/server/v2/listeners"
	"github.com/stretchr/testify/require"
)

// TestIngestThroughput is a sanity check of the speed goal, not a pass/fail
// timing (weir bench mqtt is the benchmark): 50 MQTT 3.1.1 clients publish
// 256-byte QoS 1 messages, up to 100 unacknowledged each, through a bare
// mochi broker and through the ingest hook, and the msgs/s are logged.
// Run it with WEIR_INGEST_THROUGHPUT=1 (20,000 messages) or a message
// count, and without -race.
func TestIngestThroughput(t *testing.T) {
	env := os.Getenv("WEIR_INGEST_THROUGHPUT")
	if env == "" {
		t.Skip("set WEIR_INGEST_THROUGHPUT=1 (or a message count) to run")
	}
	const clients, window, size = 50, 100, 256
	total := 20000
	if n, err := strconv.Atoi(env); err == nil && n > clients {
		total = n / clients * clients
	}

	run := func(addr string) float64 {
		conns := make([]func(int) paho3Token, clients)
		for c := range clients {
			cl, _ := client3(t, addr, fmt.Sprintf("bench%d", c))
			conns[c] = func(k int) paho3Token { return cl.Publish("dev/bench", 1, false, make([]byte, size)) }
		}
		start := time.Now()
		var wg sync.WaitGroup
		for c := range clients {
			wg.Add(1)
			go func() {
				defer wg.Done()
				ring := make([]paho3Token, window)
				for k := range total / clients {
					if tok := ring[k%window]; tok != nil {
						waitToken(t, tok)
					}
					ring[k%window] = conns[c](k)
				}
				for _, tok := range ring {
					if tok != nil {
						waitToken(t, tok)
					}
				}
			}()
		}
		wg.Wait()
		return float64(total) / time.Since(start).Seconds()
	}

	// Bare mochi.
	srv := mqtt.New(&mqtt.Options{InlineClient: true, Logger: slog.New(slog.DiscardHandler)})
	require.NoError(t, srv.AddHook(new(auth.AllowHook), nil))
	tcp := listeners.NewTCP(listeners.Config{ID: "bare", Address: "127.0.0.1:0"})
	require.NoError(t, srv.AddListener(tcp))
	require.NoError(t, srv.Serve())
	bare := run(tcp.Address())
	srv.Close()

	r := startRig(t)
	r.createStream(t, "devs")
	weir := run(r.addr)
	require.Len(t, r.records(t, "devs"), total)
	t.Logf("bare mochi %.0f msgs/s, weir ingest (durable acks) %.0f msgs/s: %.2fx", bare, weir, weir/bare)
}
