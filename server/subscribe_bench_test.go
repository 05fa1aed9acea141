package server_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/weir-log/weir/api/hstreampb"
	"github.com/weir-log/weir/api/wire"
	"github.com/weir-log/weir/client"
)

// BenchmarkSubscription measures the deliver-and-ack throughput of one
// subscription with 4 consumers (weir's client.Consume, default ack
// batching) on a 4-shard stream, against the append throughput of the same
// stream under 32 appenders of 10-record batches (100 B records), in one run:
//
//  1. backlog: the 32 appenders alone for 2 s: the append rate.
//  2. catch-up: the consumers attach 2 s behind while the appenders go on
//     for 3 s. Deliver-and-ack records/s over append records/s in that
//     window is the ratio: above 1 the consumers keep up with the appenders
//     and eat into the backlog besides. (If the backlog runs out first, the
//     ratio understates them; the lag left is reported.)
//  3. steady: with the backlog drained, appenders and consumers together
//     for 2 s: end-to-end latency from the start of an Append call to the
//     consumer's handler, p50 and p99.
//
// Run it once:
//
//	go test -run '^$' -bench BenchmarkSubscription -benchtime 1x ./server/
func BenchmarkSubscription(b *testing.B) {
	const (
		appenders       = 32
		consumers       = 4
		recordsPerBatch = 10
		recordBytes     = 100
	)
	n, shards := benchStream(b)
	ctx := context.Background()
	apis := benchClients(b, n.Addr, appenders)
	// Each record's payload starts with the time its Append call started.
	batch := func(a int) *hstreampb.BatchedRecord {
		now := time.Now().UnixNano()
		recs := make([]*hstreampb.HStreamRecord, recordsPerBatch)
		for i := range recs {
			p := bytes.Repeat([]byte{'x'}, recordBytes)
			binary.BigEndian.PutUint64(p, uint64(now))
			recs[i] = &hstreampb.HStreamRecord{
				Header:  &hstreampb.HStreamRecordHeader{Flag: hstreampb.HStreamRecordHeader_RAW, Key: fmt.Sprint("device-", a, "-", i)},
				Payload: p,
			}
		}
		br, err := wire.EncodeBatch(recs, hstreampb.CompressionType_None)
		if err != nil {
			panic(err)
		}
		return br
	}
	subs := n.Server.Subscriptions()
	acked := func() int { return int(subs.Stats().AckedRecords) }

	for range b.N {
		sub := fmt.Sprint("bench-", time.Now().UnixNano())
		if _, err := n.API.CreateSubscription(ctx, &hstreampb.Subscription{
			SubscriptionId: sub, StreamName: "bench", AckTimeoutSeconds: 60, MaxUnackedRecords: 10000,
			Offset: hstreampb.SpecialOffset_LATEST,
		}); err != nil {
			b.Fatal(err)
		}

		// 1. backlog
		start := time.Now()
		appended := len(appendFor(b, apis, shards, 2*time.Second, batch)) * recordsPerBatch
		appendAlone := float64(appended) / time.Since(start).Seconds()

		// 2. catch-up
		var (
			steady  atomic.Bool
			latMu   sync.Mutex
			lat     []time.Duration
			stopped = make(chan error, consumers)
		)
		cctx, cancel := context.WithCancel(ctx)
		for i := range consumers {
			c, err := client.Dial(ctx, n.Addr)
			if err != nil {
				b.Fatal(err)
			}
			defer c.Close()
			go func() {
				var mine []time.Duration
				err := c.Consume(cctx, sub, fmt.Sprint("consumer-", i), func(_ context.Context, m *client.Message) error {
					if steady.Load() {
						mine = append(mine, time.Since(time.Unix(0, int64(binary.BigEndian.Uint64(m.Record.Payload)))))
					}
					m.Ack()
					return nil
				})
				latMu.Lock()
				lat = append(lat, mine...)
				latMu.Unlock()
				stopped <- err
			}()
		}
		ackedBefore := acked()
		start = time.Now()
		added := len(appendFor(b, apis, shards, 3*time.Second, batch)) * recordsPerBatch
		window := time.Since(start).Seconds()
		consumed := acked() - ackedBefore
		appended += added
		lag := appended - acked()

		// 3. steady
		drainStart := time.Now()
		for acked() < appended {
			if time.Since(drainStart) > time.Minute {
				b.Fatalf("the consumers did not drain the backlog: %d of %d records acked", acked(), appended)
			}
			time.Sleep(10 * time.Millisecond)
		}
		drain := time.Since(drainStart)
		steady.Store(true)
		appended += len(appendFor(b, apis, shards, 2*time.Second, batch)) * recordsPerBatch
		for acked() < appended {
			time.Sleep(10 * time.Millisecond)
		}
		cancel()
		for range consumers {
			<-stopped
		}

		slices.Sort(lat)
		appendRate, consumeRate := float64(added)/window, float64(consumed)/window
		b.ReportMetric(appendAlone, "append-alone-records/s")
		b.ReportMetric(appendRate, "append-records/s")
		b.ReportMetric(consumeRate, "deliver+ack-records/s")
		b.ReportMetric(consumeRate/appendRate, "ratio")
		b.ReportMetric(float64(lag), "lag-records")
		b.ReportMetric(drain.Seconds(), "drain-s")
		if len(lat) > 0 {
			b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "e2e-p50-ms")
			b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds())/1000, "e2e-p99-ms")
		}
		if st := subs.Stats(); st.RedeliveredRecords > 0 {
			b.Logf("%d records were redelivered", st.RedeliveredRecords)
		}
	}
}
