package server_test

import (
	"context"
	"fmt"
	"log/slog"
	"math"
	"os"
	"testing"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/hooks/auth"
	"github.com/mochi-mqtt/server/v2/listeners"

	"github.com/weir-log/weir/broker"
	"github.com/weir-log/weir/conf"
	"github.com/weir-log/weir/internal/mqttbench"
	"github.com/weir-log/weir/internal/nodetest"
)

// BenchmarkMQTT measures QoS 1 publishes per second into weir, where every
// PUBACK means the message is committed to its stream (fsynced), against a
// bare mochi broker (no hooks but allow-all auth, acks from memory) in the
// same run: 50 MQTT 3.1.1 clients publishing 256-byte messages as fast as
// their acks allow, each with `window` publishes in flight, 3 s per load,
// bare and weir alternating twice. It reports both rates and weir/bare, and
// checks that weir's stream holds every acknowledged message.
// BENCH_MQTT_LINGER sets mqtt.ingest.linger (default 0).
//
// Run it once:
//
//	go test -run '^$' -bench BenchmarkMQTT -benchtime 1x ./server/
func BenchmarkMQTT(b *testing.B) {
	for _, window := range []int{1, 100} {
		b.Run(fmt.Sprintf("window=%d", window), func(b *testing.B) {
			for range b.N {
				benchMQTT(b, window)
			}
		})
	}
}

func benchMQTT(b *testing.B, window int) {
	const (
		clients  = 50
		payload  = 256
		duration = 3 * time.Second
		rounds   = 2
	)
	bare := startBareMochi(b)
	n := nodetest.Start(b, func(c *conf.Config) {
		c.MQTT.Listen = nodetest.FreeAddr(b)
		if l := os.Getenv("BENCH_MQTT_LINGER"); l != "" { // e.g. 1ms, to compare with the default 0
			d, err := time.ParseDuration(l)
			if err != nil {
				b.Fatalf("BENCH_MQTT_LINGER: %v", err)
			}
			c.MQTT.Ingest.Linger = d
		}
	})
	load := func(addr, prefix string) mqttbench.Result {
		res, err := mqttbench.Run(context.Background(), mqttbench.Options{
			Addr: addr, Clients: clients, Window: window, PayloadBytes: payload, QoS: 1,
			Duration: duration, Topic: "bench/%d/data", ClientID: prefix + "-%d",
		})
		if err != nil {
			b.Fatalf("%s: %v", prefix, err)
		}
		return res
	}
	var bareRates, weirRates []float64
	var weirAcked int64
	for r := range rounds {
		bareRates = append(bareRates, load(bare, fmt.Sprint("bare", r)).Rate())
		res := load(n.Server.MQTTAddr(), fmt.Sprint("weir", r))
		weirRates = append(weirRates, res.Rate())
		weirAcked += res.Acked
	}
	stored := int64(len(n.Records(b, "bench")))
	if stored < weirAcked {
		b.Fatalf("stream bench holds %d records, fewer than the %d publishes weir acknowledged", stored, weirAcked)
	}
	bareRate, weirRate := mean(bareRates), mean(weirRates)
	b.ReportMetric(bareRate, "bare-msgs/s")
	b.ReportMetric(weirRate, "weir-msgs/s")
	b.ReportMetric(weirRate/bareRate, "weir/bare")
	b.Logf("window %d: bare mochi %v msgs/s, weir %v msgs/s (durable; %d acked, %d stored): ratio %.2f",
		window, rounded(bareRates), rounded(weirRates), weirAcked, stored, weirRate/bareRate)
}

// startBareMochi starts a mochi broker with nothing but allow-all auth on a
// free port and returns its address.
func startBareMochi(b *testing.B) string {
	srv := mqtt.New(&mqtt.Options{InlineClient: true, Logger: slog.New(slog.DiscardHandler)})
	if err := srv.AddHook(new(auth.AllowHook), nil); err != nil {
		b.Fatal(err)
	}
	tcp := listeners.NewTCP(listeners.Config{ID: "bare", Address: "127.0.0.1:0"})
	if err := srv.AddListener(tcp); err != nil {
		b.Fatal(err)
	}
	if err := srv.Serve(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = broker.CloseServer(srv) })
	return tcp.Address()
}

func mean(xs []float64) float64 {
	var s float64
	for _, x := range xs {
		s += x
	}
	return s / float64(len(xs))
}

func rounded(xs []float64) []float64 {
	out := make([]float64, len(xs))
	for i, x := range xs {
		out[i] = math.Round(x)
	}
	return out
}
