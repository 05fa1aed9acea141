package server_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/weir-log/weir/conf"
	"github.com/weir-log/weir/internal/nodetest"
	"github.com/weir-log/weir/server"
)

// A second node that claims a node id a live node holds is refused at
// start-up, promptly and with a message naming the id; the failed start
// cleans up after itself (Close does not wait for a raft loop that never
// ran) and the first node keeps serving.
func TestDuplicateNodeIDIsRefused(t *testing.T) {
	first := nodetest.Start(t)

	cfg := conf.Default()
	cfg.DataDir = t.TempDir()
	cfg.GRPC.Listen = nodetest.FreeAddr(t)
	cfg.GRPC.Advertise = cfg.GRPC.Listen
	cfg.HTTP.Listen = ""
	cfg.MQTT.Listen = ""
	cfg.Etcd.Endpoints = []string{first.Cfg.Etcd.Embedded.ClientListen}
	srv, err := server.New(cfg, nodetest.Logger())
	require.NoError(t, err)

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- srv.Start(ctx) }()
	select {
	case err := <-done:
		require.ErrorContains(t, err, "node id 1 is already registered")
	case <-time.After(20 * time.Second):
		t.Fatal("Start with a duplicate node id did not return")
	}
	require.NoError(t, srv.Close())

	_, err = first.API.ListStreams(ctx, nil)
	require.NoError(t, err, "the first node stopped serving")
}

// A route with an invalid filter or template fails start-up with a message
// naming the route.
func TestBadRouteFailsStartup(t *testing.T) {
	for _, tc := range []struct {
		route conf.Route
		want  string
	}{
		{conf.Route{Filter: "factory/#/temp", Stream: "temps"}, `mqtt.routes[1] (filter "factory/#/temp"): filter is not a valid MQTT topic filter`},
		{conf.Route{Filter: "factory/+", Stream: "f", Key: "${client}"}, `mqtt.routes[1] (filter "factory/+"): key "${client}": unknown variable ${client}`},
	} {
		cfg := conf.Default()
		cfg.DataDir = t.TempDir()
		cfg.MQTT.Routes = []conf.Route{{Filter: "ok/#", Stream: "ok"}, tc.route}
		_, err := server.New(cfg, nodetest.Logger())
		require.ErrorContains(t, err, tc.want)
	}
}
