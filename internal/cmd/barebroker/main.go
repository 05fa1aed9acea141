// Command barebroker is a bare mochi-mqtt broker for peer benchmarks: one
// TCP listener, an allow-all auth hook and nothing else, so every session,
// inflight message and retained message lives in memory and a QoS 1 PUBACK
// is written as soon as the publish is parsed. scripts/bench-peers runs
// weir's MQTT load against it to show what the broker alone costs.
//
//	go run ./internal/cmd/barebroker -addr 127.0.0.1:1883
package main

import (
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/hooks/auth"
	"github.com/mochi-mqtt/server/v2/listeners"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:1883", "host:port of the MQTT TCP listener")
	flag.Parse()
	if err := run(*addr); err != nil {
		fmt.Fprintln(os.Stderr, "barebroker:", err)
		os.Exit(1)
	}
}

func run(addr string) error {
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	srv := mqtt.New(&mqtt.Options{Logger: logger})
	if err := srv.AddHook(new(auth.AllowHook), nil); err != nil {
		return err
	}
	tcp := listeners.NewTCP(listeners.Config{ID: "tcp", Address: addr})
	if err := srv.AddListener(tcp); err != nil {
		return err
	}
	if err := srv.Serve(); err != nil {
		return err
	}
	fmt.Fprintln(os.Stderr, "barebroker: listening on", tcp.Address())
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	<-sig
	return srv.Close()
}
