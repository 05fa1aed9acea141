package server_test

import (
	"bytes"
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/weir-log/weir/api/hstreampb"
	"github.com/weir-log/weir/api/wire"
	"github.com/weir-log/weir/internal/nodetest"
)

// BenchmarkAppend measures the append path end to end (gRPC, validation,
// raft, one pebble sync per round) with 1 and with 32 concurrent appenders of
// small batches (10 records of 100 B) on a 4-shard stream. Group commit shows
// as records/s growing with appenders while syncs/s stays near the disk's
// sync rate, with many appends per sync.
//
//	go test -run '^$' -bench BenchmarkAppend -benchtime 5s ./server/
func BenchmarkAppend(b *testing.B) {
	n := nodetest.Start(b)
	ctx := context.Background()
	if _, err := n.API.CreateStream(ctx, &hstreampb.Stream{StreamName: "bench", ShardCount: 4, ReplicationFactor: 1}); err != nil {
		b.Fatal(err)
	}
	shards, err := n.API.ListShards(ctx, &hstreampb.ListShardsRequest{StreamName: "bench"})
	if err != nil {
		b.Fatal(err)
	}
	const recordsPerBatch, recordBytes = 10, 100
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

	for _, appenders := range []int{1, 32} {
		b.Run(fmt.Sprintf("appenders=%d", appenders), func(b *testing.B) {
			perAppender := max(1, b.N/appenders)
			lat := make([][]time.Duration, appenders)
			before := n.Server.Store().Stats()
			b.ResetTimer()
			start := time.Now()
			var wg sync.WaitGroup
			for a := range appenders {
				wg.Add(1)
				go func() {
					defer wg.Done()
					req := &hstreampb.AppendRequest{StreamName: "bench", ShardId: shards.Shards[a%4].ShardId, Records: batch}
					lat[a] = make([]time.Duration, 0, perAppender)
					for range perAppender {
						t0 := time.Now()
						if _, err := n.API.Append(ctx, req); err != nil {
							b.Error(err)
							return
						}
						lat[a] = append(lat[a], time.Since(t0))
					}
				}()
			}
			wg.Wait()
			elapsed := time.Since(start)
			b.StopTimer()
			after := n.Server.Store().Stats()

			all := slices.Concat(lat...)
			slices.Sort(all)
			appends := len(all)
			records := float64(appends * recordsPerBatch)
			syncs := float64(after.Syncs - before.Syncs)
			b.ReportMetric(records/elapsed.Seconds(), "records/s")
			b.ReportMetric(records*recordBytes/elapsed.Seconds()/1e6, "MB/s")
			b.ReportMetric(float64(all[len(all)*99/100].Microseconds())/1000, "p99-ms")
			b.ReportMetric(syncs/elapsed.Seconds(), "syncs/s")
			b.ReportMetric(float64(appends)/max(syncs, 1), "appends/sync")
		})
	}
}
