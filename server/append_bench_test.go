package server_test

import (
	"bytes"
	"context"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/weir-log/weir/api/hstreampb"
	"github.com/weir-log/weir/api/wire"
	"github.com/weir-log/weir/internal/nodetest"
)

// BenchmarkAppend measures the append path end to end (gRPC, validation,
// raft, one pebble sync per round) for 1 and for 32 concurrent appenders of
// small batches (10 records of 100 B) on a 4-shard stream, each appender a
// producer with its own connection.
//
// Disk sync latency on a shared VM drifts by several times within minutes,
// so the two loads are not run one after the other: the benchmark alternates
// short phases of each (phases × phase per load) and reports both from the
// same stretch of time, with their ratio. Run it once:
//
//	go test -run '^$' -bench BenchmarkAppend -benchtime 1x ./server/
//
// Reported per load: records/s, MB/s, p99 append latency, syncs/s and
// appends per sync; and the ratio of 32-appender to 1-appender records/s.
func BenchmarkAppend(b *testing.B) {
	const (
		phases          = 6
		phase           = 500 * time.Millisecond
		recordsPerBatch = 10
		recordBytes     = 100
		many            = 32
	)
	n, shards := benchStream(b)
	recs := make([]*hstreampb.HStreamRecord, recordsPerBatch)
	for i := range recs {
		recs[i] = &hstreampb.HStreamRecord{
			Header:  &hstreampb.HStreamRecordHeader{Flag: hstreampb.HStreamRecordHeader_RAW, Key: fmt.Sprint("key-", i)},
			Payload: bytes.Repeat([]byte{'x'}, recordBytes),
		}
	}
	batch, err := wire.EncodeBatch(recs, hstreampb.CompressionType_None)
	if err != nil {
		b.Fatal(err)
	}
	apis := benchClients(b, n.Addr, many)

	type totals struct {
		appends int
		syncs   uint64
		elapsed time.Duration
		lat     []time.Duration
	}
	// run appends with k appenders for d and adds what it saw to t.
	run := func(k int, d time.Duration, t *totals) {
		before := n.Server.Store().Stats()
		start := time.Now()
		lat := appendFor(b, apis[:k], shards, d, func(int) *hstreampb.BatchedRecord { return batch })
		t.elapsed += time.Since(start)
		t.syncs += n.Server.Store().Stats().Syncs - before.Syncs
		t.appends += len(lat)
		t.lat = append(t.lat, lat...)
	}
	report := func(name string, t *totals) float64 {
		slices.Sort(t.lat)
		secs := t.elapsed.Seconds()
		records := float64(t.appends * recordsPerBatch)
		b.ReportMetric(records/secs, name+"-records/s")
		b.ReportMetric(records*recordBytes/secs/1e6, name+"-MB/s")
		b.ReportMetric(float64(t.lat[len(t.lat)*99/100].Microseconds())/1000, name+"-p99-ms")
		b.ReportMetric(float64(t.syncs)/secs, name+"-syncs/s")
		b.ReportMetric(float64(t.appends)/max(float64(t.syncs), 1), name+"-appends/sync")
		return records / secs
	}

	for range b.N {
		var one, lots totals
		run(many, phase/5, &totals{}) // warm up connections and caches
		for range phases {
			run(1, phase, &one)
			run(many, phase, &lots)
		}
		r1 := report("1", &one)
		r32 := report(fmt.Sprint(many), &lots)
		b.ReportMetric(r32/r1, "ratio")
	}
}

// benchStream starts a node with a 4-shard stream named "bench".
func benchStream(b *testing.B) (*nodetest.Node, []*hstreampb.Shard) {
	n := nodetest.Start(b)
	ctx := context.Background()
	if _, err := n.API.CreateStream(ctx, &hstreampb.Stream{StreamName: "bench", ShardCount: 4, ReplicationFactor: 1}); err != nil {
		b.Fatal(err)
	}
	resp, err := n.API.ListShards(ctx, &hstreampb.ListShardsRequest{StreamName: "bench"})
	if err != nil {
		b.Fatal(err)
	}
	return n, resp.GetShards()
}

// benchClients opens k connections to addr, one per simulated producer.
func benchClients(b *testing.B, addr string, k int) []hstreampb.HStreamApiClient {
	apis := make([]hstreampb.HStreamApiClient, k)
	for i := range apis {
		conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { conn.Close() })
		apis[i] = hstreampb.NewHStreamApiClient(conn)
	}
	return apis
}

// appendFor runs one appender per client for d, appender a appending
// batch(a) to shard a mod len(shards) of stream "bench" back to back, and
// returns every append's latency.
func appendFor(b *testing.B, apis []hstreampb.HStreamApiClient, shards []*hstreampb.Shard, d time.Duration,
	batch func(appender int) *hstreampb.BatchedRecord) []time.Duration {
	var stop atomic.Bool
	lat := make([][]time.Duration, len(apis))
	var wg sync.WaitGroup
	for a, api := range apis {
		shard := shards[a%len(shards)].ShardId
		wg.Go(func() {
			for !stop.Load() {
				req := &hstreampb.AppendRequest{StreamName: "bench", ShardId: shard, Records: batch(a)}
				t0 := time.Now()
				if _, err := api.Append(context.Background(), req); err != nil {
					b.Error(err)
					return
				}
				lat[a] = append(lat[a], time.Since(t0))
			}
		})
	}
	time.Sleep(d)
	stop.Store(true)
	wg.Wait()
	return slices.Concat(lat...)
}
