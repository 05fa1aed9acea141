package server

import (
	"context"
	"fmt"
	"net"
	"net/url"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
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
	cu := url.URL{Scheme: "http", Host: clientAddr}
	pu := url.URL{Scheme: "http", Host: peerAddr}
	ec := embed.NewConfig()
	ec.Name = name
	ec.Dir = dir
	ec.ListenClientUrls, ec.AdvertiseClientUrls = []url.URL{cu}, []url.URL{cu}
	ec.ListenPeerUrls, ec.AdvertisePeerUrls = []url.URL{pu}, []url.URL{pu}
	ec.InitialCluster = name + "=" + pu.String()
	ec.LogLevel = "warn"
	ec.ZapLoggerBuilder = embed.NewZapLoggerBuilder(log)
	ec.AutoCompactionMode = "periodic"
	ec.AutoCompactionRetention = "1h"
	e, err := embed.StartEtcd(ec)
	if err != nil {
		return nil, "", fmt.Errorf("starting the embedded etcd in %s: %w", dir, err)
	}
	select {
	case <-e.Server.ReadyNotify():
		return e, cu.Host, nil
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
	cli, err := clientv3.New(clientv3.Config{
		Endpoints:   endpoints,
		DialTimeout: timeout,
		Logger:      zap.NewNop(),
		// gRPC's default reconnect back-off grows to 2 minutes: after an
		// etcd outage, metadata operations would stay refused long after
		// etcd is back. A node has one connection to its etcd; trying it
		// every second at worst costs nothing.
		DialOptions: []grpc.DialOption{grpc.WithConnectParams(grpc.ConnectParams{
			Backoff:           backoff.Config{BaseDelay: 100 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: time.Second},
			MinConnectTimeout: time.Second,
		})},
	})
	if err != nil {
		return nil, fmt.Errorf("connecting to etcd %v: %w", endpoints, err)
	}
	return cli, nil
}
