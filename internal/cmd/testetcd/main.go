// Command testetcd runs a one-member etcd (the same embed package the weir
// node uses for its embedded etcd) as a process of its own, so the
// multi-process cluster tests and examples/cluster/run.sh can stop and
// restart etcd under running weir nodes without a system etcd installed.
//
//	go run ./internal/cmd/testetcd --data-dir /tmp/etcd --client-addr 127.0.0.1:2379 --peer-addr 127.0.0.1:2380
//
// It prints "etcd ready <client-url>" on stdout once etcd serves clients,
// and stops cleanly on SIGTERM or SIGINT. Its data survives a restart on
// the same --data-dir and addresses.
package main

import (
	"flag"
	"fmt"
	"net"
	"os"
	"os/signal"
	"syscall"
	"time"

	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/weir-log/weir/internal/etcdutil"
)

// name is the member's name. It is fixed so that a restart on the same
// data dir finds the member it wrote there.
const name = "testetcd"

func main() {
	dir := flag.String("data-dir", "", "directory of etcd's data (required)")
	clientAddr := flag.String("client-addr", "127.0.0.1:2379", "host:port etcd serves clients on")
	peerAddr := flag.String("peer-addr", "127.0.0.1:2380", "host:port etcd listens on for peers")
	flag.Parse()
	if err := run(*dir, *clientAddr, *peerAddr); err != nil {
		fmt.Fprintln(os.Stderr, "testetcd:", err)
		os.Exit(1)
	}
}

func run(dir, clientAddr, peerAddr string) error {
	if dir == "" {
		return fmt.Errorf("--data-dir is required")
	}
	for _, a := range []string{clientAddr, peerAddr} {
		if _, _, err := net.SplitHostPort(a); err != nil {
			return fmt.Errorf("address %q: %w", a, err)
		}
	}
	// Signals are caught before etcd starts, so a SIGTERM that arrives
	// during startup still ends in a clean close rather than a kill.
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)

	// etcd logs every listener it closes at error level on a clean stop;
	// the level is raised before Close so a clean stop prints nothing
	// that looks like a failure.
	level := zap.NewAtomicLevelAt(zapcore.WarnLevel)
	zc := zap.NewProductionConfig()
	zc.Level = level
	zc.Sampling = nil
	log, err := zc.Build()
	if err != nil {
		return err
	}
	ec := etcdutil.Config(name, dir, clientAddr, peerAddr, log)
	ec.LogLevel = "warn"
	ec.AutoCompactionMode = "periodic"
	ec.AutoCompactionRetention = "1h"
	e, err := embed.StartEtcd(ec)
	if err != nil {
		return fmt.Errorf("starting etcd in %s: %w", dir, err)
	}
	defer func() {
		level.SetLevel(zapcore.FatalLevel)
		e.Close()
	}()
	select {
	case <-e.Server.ReadyNotify():
	case err := <-e.Err():
		return fmt.Errorf("etcd failed while starting: %w", err)
	case s := <-sig:
		fmt.Fprintf(os.Stderr, "testetcd: %v before etcd was ready; stopping\n", s)
		return nil
	case <-time.After(60 * time.Second):
		return fmt.Errorf("etcd was not ready within 60s")
	}
	fmt.Printf("etcd ready %s\n", ec.ListenClientUrls[0].String())
	select {
	case err := <-e.Err():
		return fmt.Errorf("etcd failed: %w", err)
	case s := <-sig:
		fmt.Fprintf(os.Stderr, "testetcd: %v; stopping\n", s)
		return nil
	}
}
