package test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/weir-log/weir/api/hstreampb"
	"github.com/weir-log/weir/internal/nodetest"
)

// weirBinaryNoRace is cmd/weir without -race, for measurements: the race
// detector slows weir down several times, and unevenly.
func weirBinaryNoRace(t *testing.T) string { return binary(t, "cmd/weir", false) }

// benchReport is the part of `weir bench write --json` the comparison uses.
type benchReport struct {
	Seconds float64 `json:"duration_s"`
	Count   int64   `json:"count"`
	Errors  int64   `json:"errors"`
	Rate    float64 `json:"rate"`
	MBps    float64 `json:"mb_per_s"`
	P50     float64 `json:"p50_ms"`
	P99     float64 `json:"p99_ms"`
	Max     float64 `json:"max_ms"`
}

// The load both setups get: `weir bench write` on one stream of 3 shards,
// 8 writers with a BufferedProducer each, 256-byte records over 64 keys.
const (
	benchShards      = 3
	benchConcurrency = "8"
	benchStream      = "cbench-0" // the bench's --stream-prefix plus stream number 0
)

// TestClusterBenchAppend compares appends to a 3-node cluster with
// replication factor 3 against one standalone node, under the same
// `weir bench write` load in the same run: first as fast as the producers
// go (records/s and their ratio; the goal is at least 0.5 on a
// 2-core machine), then both at half the slower one's rate, where p99
// latency means something (at full speed it is mostly time spent queued in
// the producers). It runs only with WEIR_BENCH_CLUSTER=1: it takes about a
// minute and a half, and its binaries are built without -race, whose
// figures would mean nothing. WEIR_BENCH_CLUSTER_DURATION sets each run's
// length (default 15s).
//
//	WEIR_BENCH_CLUSTER=1 go test -count=1 -run ClusterBench -v ./test
func TestClusterBenchAppend(t *testing.T) {
	if os.Getenv("WEIR_BENCH_CLUSTER") != "1" {
		t.Log("set WEIR_BENCH_CLUSTER=1 to run the standalone vs. 3-node RF 3 append comparison")
		return
	}
	duration := 15 * time.Second
	if v := os.Getenv("WEIR_BENCH_CLUSTER_DURATION"); v != "" {
		d, err := time.ParseDuration(v)
		require.NoError(t, err, "WEIR_BENCH_CLUSTER_DURATION")
		duration = d
	}
	bin := weirBinaryNoRace(t)
	standalone := startStandaloneBench(t, bin)
	clustered := startClusterBench(t, bin)

	sFull := runBenchWrite(t, bin, standalone, duration, 0)
	cFull := runBenchWrite(t, bin, clustered, duration, 0)
	rate := min(sFull.Rate, cFull.Rate) / 2
	sHalf := runBenchWrite(t, bin, standalone, duration, rate)
	cHalf := runBenchWrite(t, bin, clustered, duration, rate)

	line := func(what string, r benchReport) {
		t.Logf("%-28s %9.0f records/s  p50 %8.2f ms  p99 %8.2f ms  max %8.2f ms  (%d records, %d errors)",
			what, r.Rate, r.P50, r.P99, r.Max, r.Count, r.Errors)
	}
	line("standalone, full speed:", sFull)
	line("3 nodes RF 3, full speed:", cFull)
	line(fmt.Sprintf("standalone, %.0f/s:", rate), sHalf)
	line(fmt.Sprintf("3 nodes RF 3, %.0f/s:", rate), cHalf)
	ratio := cFull.Rate / sFull.Rate
	verdict := "meets"
	if ratio < 0.5 {
		verdict = "misses"
	}
	t.Logf("RF 3 / standalone throughput: %.2fx (%s the goal of 0.5x); p99 at %.0f records/s: %.2f ms vs %.2f ms standalone",
		ratio, verdict, rate, cHalf.P99, sHalf.P99)
	for _, r := range []benchReport{sFull, cFull, sHalf, cHalf} {
		require.Zero(t, r.Errors, "appends failed")
	}
}

// startStandaloneBench starts one node as `make run` does (embedded etcd),
// creates the bench stream with one replica, and returns the node's address.
func startStandaloneBench(t *testing.T, bin string) string {
	t.Helper()
	root := keptDir(t, "weir-bench-standalone-")
	n := &clusterNode{id: 1, dir: root, grpcAddr: nodetest.FreeAddr(t), httpAddr: nodetest.FreeAddr(t)}
	n.process = process{t: t, name: "standalone node", bin: bin, logPath: filepath.Join(root, "weir.log"), args: []string{"server",
		"--data-dir", filepath.Join(root, "data"),
		"--grpc-listen", n.grpcAddr,
		"--http-listen", n.httpAddr,
		"--mqtt-listen", "",
		"--etcd-embedded-client-listen", nodetest.FreeAddr(t),
		"--etcd-embedded-peer-listen", nodetest.FreeAddr(t),
		"--log-level", "warn",
	}}
	conn, err := grpc.NewClient(n.grpcAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	require.NoError(t, err)
	n.conn, n.api = conn, hstreampb.NewHStreamApiClient(conn)
	// A one-node testCluster only for its readiness wait.
	c := &testCluster{t: t, nodes: []*clusterNode{n}}
	t.Cleanup(func() {
		n.kill()
		conn.Close()
		if t.Failed() {
			t.Logf("---- last lines of the standalone node:\n%s", n.tail(40))
		}
	})
	n.start()
	c.waitReady(n, 60*time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	_, err = n.api.CreateStream(ctx, &hstreampb.Stream{StreamName: benchStream, ShardCount: benchShards, ReplicationFactor: 1, BacklogDuration: 3600})
	require.NoError(t, err)
	return n.grpcAddr
}

// startClusterBench starts three nodes and an etcd, creates the bench
// stream with three replicas, and returns the address of all three nodes
// (the client sends each shard's appends to its leader).
func startClusterBench(t *testing.T, bin string) string {
	t.Helper()
	c := newCluster(t, clusterOptions{bin: bin, logLevel: "warn", deadAfter: 5 * time.Minute, metadataTimeout: 5 * time.Second, checkpointInterval: time.Second})
	c.createStream(benchStream, benchShards, 3)
	leaders := c.waitLeaders(benchStream, 30*time.Second)
	t.Logf("cluster: shard leaders %v; replicas %s", leaderIDs(leaders), replicaText(c.requireShardMetas(benchStream)))
	addrs := make([]string, len(c.nodes))
	for i, n := range c.nodes {
		addrs[i] = n.grpcAddr
	}
	return "hstream://" + strings.Join(addrs, ",")
}

// runBenchWrite runs `weir bench write --json` against addr on the bench
// stream, which exists already and is kept (else the bench would delete
// it, and the next run would create it with one replica), at rate records
// a second (0: as fast as it goes), and returns its report.
func runBenchWrite(t *testing.T, bin, addr string, duration time.Duration, rate float64) benchReport {
	t.Helper()
	cmd := exec.Command(bin, "bench", "write", "--addr", addr, "--json", "--quiet", "--keep",
		"--duration", duration.String(), "--rate", fmt.Sprintf("%.0f", rate), "--concurrency", benchConcurrency,
		"--streams", "1", "--stream-prefix", strings.TrimSuffix(benchStream, "0"), "--shards", fmt.Sprint(benchShards),
		"--record-size", "256", "--keys", "64")
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	done := make(chan error, 1)
	require.NoError(t, cmd.Start())
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		require.NoError(t, err, "weir bench write against %s:\n%s", addr, stderr.String())
	case <-time.After(duration + 2*time.Minute):
		cmd.Process.Kill()
		<-done
		t.Fatalf("weir bench write against %s did not end within %s:\n%s", addr, duration+2*time.Minute, stderr.String())
	}
	var rep benchReport
	require.NoError(t, json.Unmarshal(stdout.Bytes(), &rep), "bench report: %s", stdout.String())
	return rep
}
