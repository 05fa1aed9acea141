// Package etcdutil holds what weir's node, its tests and internal/cmd/testetcd
// share about etcd: the configuration of a one-member embedded etcd, and a
// client that reconnects promptly after an outage.
package etcdutil

import (
	"net/url"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
)

// Config is a one-member etcd named name, with its data in dir, serving
// clients and peers over plain HTTP on the given host:ports, logging to log.
// Callers set the rest (log level, compaction) on what it returns.
func Config(name, dir, clientAddr, peerAddr string, log *zap.Logger) *embed.Config {
	cu := url.URL{Scheme: "http", Host: clientAddr}
	pu := url.URL{Scheme: "http", Host: peerAddr}
	ec := embed.NewConfig()
	ec.Name = name
	ec.Dir = dir
	ec.ListenClientUrls, ec.AdvertiseClientUrls = []url.URL{cu}, []url.URL{cu}
	ec.ListenPeerUrls, ec.AdvertisePeerUrls = []url.URL{pu}, []url.URL{pu}
	ec.InitialCluster = name + "=" + pu.String()
	ec.ZapLoggerBuilder = embed.NewZapLoggerBuilder(log)
	return ec
}

// Dial returns a client of the etcd at endpoints. Its reconnect back-off is
// capped at a second: gRPC's default grows to 2 minutes, so after an etcd
// outage, metadata operations would stay refused long after etcd is back,
// and one connection tried every second at worst costs nothing.
func Dial(endpoints []string, dialTimeout time.Duration) (*clientv3.Client, error) {
	return clientv3.New(clientv3.Config{
		Endpoints:   endpoints,
		DialTimeout: dialTimeout,
		Logger:      zap.NewNop(),
		DialOptions: []grpc.DialOption{grpc.WithConnectParams(grpc.ConnectParams{
			Backoff:           backoff.Config{BaseDelay: 100 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: time.Second},
			MinConnectTimeout: time.Second,
		})},
	})
}
