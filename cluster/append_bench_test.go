package cluster_test

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"slices"
	"sync"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/weir-log/weir/api/hstreampb"
	"github.com/weir-log/weir/api/wire"
	"github.com/weir-log/weir/cluster"
	"github.com/weir-log/weir/conf"
	"github.com/weir-log/weir/internal/nodetest"
)

// BenchmarkShardAppend measures group commit itself: Shard.Append (the raft
// loop, one sync per round) without gRPC, with 1 and 32 concurrent appenders
// of 10 × 100 B batches on a 4-shard stream.
//
//	go test -run '^$' -bench BenchmarkShardAppend -benchtime 5s ./cluster/
//
// WEIR_BENCH_MAX_WAIT=100us sets store.group-commit.max-wait for the run.
func BenchmarkShardAppend(b *testing.B) {
	n := nodetest.Start(b, func(c *conf.Config) {
		if v := os.Getenv("WEIR_BENCH_MAX_WAIT"); v != "" {
			c.Store.GroupCommit.MaxWait, _ = time.ParseDuration(v)
		}
	})
	node := n.Server.Node()
	ctx := context.Background()
	_, shards, err := node.CreateStream(ctx, cluster.StreamMeta{Name: "bench", ShardCount: 4, ReplicationFactor: 1})
	if err != nil {
		b.Fatal(err)
	}
	recs := make([]*hstreampb.HStreamRecord, 10)
	for i := range recs {
		recs[i] = &hstreampb.HStreamRecord{Header: &hstreampb.HStreamRecordHeader{Key: fmt.Sprint("key-", i)}, Payload: bytes.Repeat([]byte{'x'}, 100)}
	}
	br, err := wire.EncodeBatch(recs, hstreampb.CompressionType_None)
	if err != nil {
		b.Fatal(err)
	}
	batch, err := proto.Marshal(br)
	if err != nil {
		b.Fatal(err)
	}
	for _, appenders := range []int{1, 32} {
		b.Run(fmt.Sprintf("appenders=%d", appenders), func(b *testing.B) {
			per := max(1, b.N/appenders)
			lat := make([][]time.Duration, appenders)
			before := n.Server.Store().Stats()
			start := time.Now()
			var wg sync.WaitGroup
			for a := range appenders {
				sh, err := node.Shard(shards[a%4].ID)
				if err != nil {
					b.Fatal(err)
				}
				wg.Go(func() {
					for range per {
						t0 := time.Now()
						if _, _, err := sh.Append(ctx, batch); err != nil {
							b.Error(err)
							return
						}
						lat[a] = append(lat[a], time.Since(t0))
					}
				})
			}
			wg.Wait()
			elapsed := time.Since(start)
			syncs := float64(n.Server.Store().Stats().Syncs - before.Syncs)
			all := slices.Concat(lat...)
			slices.Sort(all)
			b.ReportMetric(float64(len(all)*10)/elapsed.Seconds(), "records/s")
			b.ReportMetric(syncs/elapsed.Seconds(), "syncs/s")
			b.ReportMetric(float64(len(all))/max(syncs, 1), "appends/sync")
			b.ReportMetric(float64(all[len(all)*99/100].Microseconds())/1000, "p99-ms")
		})
	}
}
