// Package nodetest starts real weir nodes for tests: a standalone node with
// an embedded etcd, pebble in t.TempDir(), and gRPC on a free 127.0.0.1
// port, plus a connected HStreamApi client (over TLS, with the node's own
// certificate, when the node has enable-tls).
//
// Set WEIR_TEST_LOG=debug (or info, warn) to see the node's log on stderr.
package nodetest

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"os"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/proto"

	"github.com/weir-log/weir/api/hstreampb"
	"github.com/weir-log/weir/api/wire"
	"github.com/weir-log/weir/conf"
	"github.com/weir-log/weir/internal/tlsfile"
	"github.com/weir-log/weir/server"
)

// Node is a running standalone node and a client connected to it.
type Node struct {
	Cfg    *conf.Config
	Addr   string // gRPC address
	API    hstreampb.HStreamApiClient
	Server *server.Server

	conn *grpc.ClientConn
}

// Start starts a node with test settings (free ports, a temporary data
// directory, quiet logs), after applying mutate to its config. The node is
// closed when the test ends.
func Start(t testing.TB, mutate ...func(*conf.Config)) *Node {
	t.Helper()
	cfg := conf.Default()
	cfg.DataDir = t.TempDir()
	cfg.GRPC.Listen = FreeAddr(t)
	cfg.GRPC.Advertise = cfg.GRPC.Listen
	cfg.HTTP.Listen = FreeAddr(t)
	cfg.MQTT.Listen = ""
	cfg.Etcd.Embedded.ClientListen = FreeAddr(t)
	cfg.Etcd.Embedded.PeerListen = FreeAddr(t)
	cfg.Etcd.LeaseTTL = 5 * time.Second
	for _, m := range mutate {
		m(cfg)
	}
	n := &Node{Cfg: cfg}
	n.start(t)
	t.Cleanup(n.Close)
	return n
}

func (n *Node) start(t testing.TB) {
	t.Helper()
	srv, err := server.New(n.Cfg, Logger())
	if err != nil {
		t.Fatalf("nodetest: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := srv.Start(ctx); err != nil {
		t.Fatalf("nodetest: starting the node: %v", err)
	}
	creds := insecure.NewCredentials()
	if n.Cfg.EnableTLS {
		// The node's own certificate as client certificate, as other
		// nodes dial it.
		e, err := tlsfile.Load(n.Cfg.APITLS())
		if err != nil {
			srv.Close()
			t.Fatalf("nodetest: %v", err)
		}
		creds = e.ClientCredentials()
	}
	conn, err := grpc.NewClient(srv.GRPCAddr(), grpc.WithTransportCredentials(creds),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(64<<20), grpc.MaxCallSendMsgSize(64<<20)))
	if err != nil {
		srv.Close()
		t.Fatalf("nodetest: dialing the node: %v", err)
	}
	n.Server, n.conn, n.Addr = srv, conn, srv.GRPCAddr()
	n.API = hstreampb.NewHStreamApiClient(conn)
}

// Restart stops the node cleanly and starts it again on the same data
// directory and ports; API is reconnected.
func (n *Node) Restart(t testing.TB) {
	t.Helper()
	n.Close()
	n.start(t)
}

// Reopen starts a node stopped by Close again, on the same data directory
// and ports: Close, then Reopen, is a Restart with a gap the test chooses.
func (n *Node) Reopen(t testing.TB) {
	t.Helper()
	if n.Server != nil {
		t.Fatalf("nodetest: Reopen of a running node")
	}
	n.start(t)
}

// Close stops the node; it is safe to call twice.
func (n *Node) Close() {
	if n.conn != nil {
		n.conn.Close()
		n.conn = nil
	}
	if n.Server != nil {
		n.Server.Close()
		n.Server = nil
	}
}

// Records returns every record of stream, read from the node's store in
// log order, shard by shard.
func (n *Node) Records(t testing.TB, stream string) []*hstreampb.HStreamRecord {
	t.Helper()
	node := n.Server.Node()
	shards, err := node.StreamShards(stream)
	if err != nil {
		t.Fatalf("nodetest: %v", err)
	}
	var out []*hstreampb.HStreamRecord
	for _, m := range shards {
		sh, err := node.Shard(m.ID)
		if err != nil {
			t.Fatalf("nodetest: %v", err)
		}
		for from := uint64(0); ; {
			ents, err := sh.Read(from, 1000, 64<<20)
			if err != nil {
				t.Fatalf("nodetest: reading shard %d: %v", m.ID, err)
			}
			if len(ents) == 0 {
				break
			}
			for _, e := range ents {
				var br hstreampb.BatchedRecord
				if err := proto.Unmarshal(e.Batch, &br); err != nil {
					t.Fatalf("nodetest: shard %d entry %d: %v", m.ID, e.Index, err)
				}
				recs, err := wire.DecodeBatch(&br, wire.MaxDecodedBytes)
				if err != nil {
					t.Fatalf("nodetest: shard %d entry %d: %v", m.ID, e.Index, err)
				}
				out = append(out, recs...)
			}
			from = ents[len(ents)-1].Index + 1
		}
	}
	return out
}

// FreeAddr returns a 127.0.0.1 address with a port that was free a moment
// ago (for servers that must know their port before they listen).
//
// Ports come from below Linux's ephemeral range (32768-60999), so an
// outgoing connection cannot take one between this call and the listen,
// and a port is never handed out twice in one test binary: asking the
// kernel for port 0 twice in a row can return the same port once the first
// listener is closed, which gave one node the same port for two listeners.
func FreeAddr(t testing.TB) string {
	t.Helper()
	portsMu.Lock()
	defer portsMu.Unlock()
	for range 1000 {
		port := 20000 + rand.IntN(12000)
		if portsGiven[port] {
			continue
		}
		l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port))
		if err != nil {
			continue
		}
		addr := l.Addr().String()
		l.Close()
		portsGiven[port] = true
		return addr
	}
	t.Fatalf("nodetest: no free port found in 1000 tries")
	return ""
}

var (
	portsMu    sync.Mutex
	portsGiven = map[int]bool{}
)

// Logger is the node logger for tests: silent unless WEIR_TEST_LOG names a
// level.
func Logger() *slog.Logger {
	lv := os.Getenv("WEIR_TEST_LOG")
	if lv == "" {
		return slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(lv)); err != nil {
		level = slog.LevelDebug
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
}
