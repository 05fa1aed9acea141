package server

import (
	"context"
	"fmt"
	"net"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"

	"github.com/weir-log/weir/internal/etcdutil"
)

// startEmbeddedEtcd starts a one-member etcd in dir, listening on the given
// client and peer addresses (port 0 picks a free port), and returns it with
// the client endpoint to dial.
func startEmbeddedEtcd(ctx context.Context, name, dir, clientAddr, peerAddr string, log *zap.Logger) (*embed.Etcd, string, error) {
	clientAddr, err := concreteAddr(clientAddr)
	if err != nil {
		return nil, "", fmt.Errorf("etcd.embedded.client-listen: %w", err)
	}
	peerAddr, err = concreteAddr(peerAddr)
	if err != nil {
		return nil, "", fmt.Errorf("etcd.embedded.peer-listen: %w", err)
	}
	ec := etcdutil.Config(name, dir, clientAddr, peerAddr, log)
	ec.LogLevel = "warn"
	ec.AutoCompactionMode = "periodic"
	ec.AutoCompactionRetention = "1h"
	e, err := embed.StartEtcd(ec)
	if err != nil {
		return nil, "", fmt.Errorf("starting the embedded etcd in %s: %w", dir, err)
	}
	select {
	case <-e.Server.ReadyNotify():
		return e, clientAddr, nil
	case err := <-e.Err():
		e.Close()
		return nil, "", fmt.Errorf("the embedded etcd failed: %w", err)
	case <-ctx.Done():
		e.Close()
		return nil, "", fmt.Errorf("waiting for the embedded etcd: %w", ctx.Err())
	}
}

// concreteAddr replaces port 0 with a free port: etcd must advertise the
// port it listens on.
func concreteAddr(addr string) (string, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return "", err
	}
	if port != "0" {
		return addr, nil
	}
	l, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}

func dialEtcd(endpoints []string, timeout time.Duration) (*clientv3.Client, error) {
	cli, err := etcdutil.Dial(endpoints, timeout)
	if err != nil {
		return nil, fmt.Errorf("connecting to etcd %v: %w", endpoints, err)
	}
	return cli, nil
}
