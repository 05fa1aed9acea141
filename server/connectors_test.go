package server_test

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/weir-log/weir/api/hstreampb"
	"github.com/weir-log/weir/conf"
	"github.com/weir-log/weir/internal/nodetest"
	"github.com/weir-log/weir/server"
)

// Connectors whose broker cannot be reached do not stop the node: it
// serves, each connector logs its failed attempts (naming itself and its
// url) and keeps retrying, its metrics say so, and Close is prompt.
func TestUnreachableConnectorsDoNotStopTheNode(t *testing.T) {
	dead := "tcp://" + nodetest.FreeAddr(t) // nothing listens there
	remote := conf.Remote{URL: dead, ReconnectMin: 50 * time.Millisecond, ReconnectMax: 100 * time.Millisecond, ConnectTimeout: time.Second}
	cfg := testConfig(t)
	cfg.Connectors.Ingest = []conf.IngestConnector{{Name: "in", Remote: remote, Filters: []string{"a/#"}}}
	cfg.Connectors.Egress = []conf.EgressConnector{{Name: "out", Remote: remote, Stream: "s"}}
	cfg = cfg.WithDefaults()
	logs := new(nodetest.SyncBuffer)
	srv, err := server.New(cfg, slog.New(slog.NewTextHandler(logs, nil)))
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	require.NoError(t, srv.Start(ctx))
	defer srv.Close()

	api := dial(t, srv.GRPCAddr())
	_, err = api.Echo(ctx, &hstreampb.EchoRequest{Msg: "hello"})
	require.NoError(t, err)
	// The egress connector waits for its stream before it connects.
	_, err = api.CreateStream(ctx, &hstreampb.Stream{StreamName: "s", ReplicationFactor: 1, ShardCount: 1})
	require.NoError(t, err)

	require.Eventually(t, func() bool {
		return failedAttempts(logs.String(), "in") >= 2 && failedAttempts(logs.String(), "out") >= 2
	}, 20*time.Second, 50*time.Millisecond, "want repeated failed attempts of both connectors in the log:\n%s", logs)
	require.Contains(t, logs.String(), "url="+dead)
	require.Contains(t, logs.String(), "connection refused")

	metrics := scrape(t, srv.HTTPAddr())
	for _, series := range []string{
		`weir_connector_up{connector="in",direction="ingest"} 0`,
		`weir_connector_up{connector="out",direction="egress"} 0`,
		`weir_connector_connects_total{connector="in",direction="ingest",result="failed"}`,
		`weir_connector_connects_total{connector="out",direction="egress",result="failed"}`,
	} {
		require.True(t, strings.Contains(metrics, series), "/metrics lacks %s", series)
	}

	start := time.Now()
	require.NoError(t, srv.Close())
	require.Less(t, time.Since(start), 10*time.Second, "Close waited on connectors that never connected")
}

// A connector whose routes do not compile fails start-up, naming it.
func TestBadConnectorFailsStartup(t *testing.T) {
	cfg := testConfig(t)
	cfg.Connectors.Ingest = []conf.IngestConnector{{Name: "in", Remote: conf.Remote{URL: "tcp://127.0.0.1:1"},
		Filters: []string{"a/#"}, Routes: []conf.Route{{Filter: "a/#/b", Stream: "a"}}}}
	srv, err := server.New(cfg.WithDefaults(), nodetest.Logger())
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	err = srv.Start(ctx)
	srv.Close()
	require.ErrorContains(t, err, `connectors.ingest[0] (in).routes[0] (filter "a/#/b")`)
}

func testConfig(t *testing.T) *conf.Config {
	cfg := conf.Default()
	cfg.DataDir = t.TempDir()
	cfg.GRPC.Listen = nodetest.FreeAddr(t)
	cfg.GRPC.Advertise = cfg.GRPC.Listen
	cfg.HTTP.Listen = nodetest.FreeAddr(t)
	cfg.MQTT.Listen = ""
	cfg.Etcd.Embedded.ClientListen = nodetest.FreeAddr(t)
	cfg.Etcd.Embedded.PeerListen = nodetest.FreeAddr(t)
	return cfg
}

func scrape(t *testing.T, addr string) string {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	require.NoError(t, err)
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return string(body)
}

func dial(t *testing.T, addr string) hstreampb.HStreamApiClient {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	require.NoError(t, err)
	t.Cleanup(func() { conn.Close() })
	return hstreampb.NewHStreamApiClient(conn)
}

// failedAttempts counts the log lines of a connector's failed attempts.
func failedAttempts(log, connector string) int {
	n := 0
	for _, line := range strings.Split(log, "\n") {
		if strings.Contains(line, "connector cannot connect to its broker") && strings.Contains(line, " connector="+connector+" ") {
			n++
		}
	}
	return n
}
