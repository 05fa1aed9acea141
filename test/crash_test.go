package test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/proto"

	"github.com/weir-log/weir/api/hstreampb"
	"github.com/weir-log/weir/api/wire"
)

type acked struct {
	id      *hstreampb.RecordId
	payload string
}

// TestKill9KeepsAcknowledgedRecords runs `weir server` as a process, appends
// from several goroutines, kills the process with SIGKILL mid-flight, starts
// it again and checks that every acknowledged record is there, once, in
// order per key.
func TestKill9KeepsAcknowledgedRecords(t *testing.T) {
	p := newProc(t)
	p.start()
	api := p.client()
	ctx := context.Background()
	_, err := api.CreateStream(ctx, &hstreampb.Stream{StreamName: "crash", ShardCount: 4, ReplicationFactor: 1})
	require.NoError(t, err)
	shards := listShards(t, api, "crash")
	smap, err := wire.NewShardMap(shards)
	require.NoError(t, err)

	const writers, perBatch = 8, 10
	var total atomic.Int64
	acks := make([][]acked, writers)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			key := fmt.Sprintf("device-%d", w)
			shard := smap.Lookup(key)
			for seq := 0; ; seq += perBatch {
				select {
				case <-stop:
					return
				default:
				}
				recs := make([]*hstreampb.HStreamRecord, perBatch)
				for i := range recs {
					recs[i] = &hstreampb.HStreamRecord{
						Header:  &hstreampb.HStreamRecordHeader{Flag: hstreampb.HStreamRecordHeader_RAW, Key: key},
						Payload: fmt.Appendf(nil, "%s/%08d", key, seq+i),
					}
				}
				br, err := wire.EncodeBatch(recs, hstreampb.CompressionType(w%3))
				if err != nil {
					panic(err)
				}
				actx, cancel := context.WithTimeout(ctx, 10*time.Second)
				resp, err := api.Append(actx, &hstreampb.AppendRequest{StreamName: "crash", ShardId: shard, Records: br})
				cancel()
				if err != nil {
					return // the server is gone: this batch is not acknowledged
				}
				if len(resp.RecordIds) != perBatch {
					panic(fmt.Sprintf("append returned %d ids for %d records", len(resp.RecordIds), perBatch))
				}
				for i, id := range resp.RecordIds {
					acks[w] = append(acks[w], acked{id: id, payload: string(recs[i].Payload)})
				}
				total.Add(perBatch)
			}
		}()
	}
	require.Eventually(t, func() bool { return total.Load() >= 3000 }, 60*time.Second, 10*time.Millisecond,
		"appends did not get going:\n%s", p.log)
	p.kill() // SIGKILL while the writers are mid-flight
	close(stop)
	wg.Wait()
	t.Logf("acknowledged %d records before kill -9", total.Load())

	p.start()
	api = p.client()
	got := readAll(t, api, "crash")

	byID := make(map[string]string, len(got))
	seen := make(map[string]int, len(got))
	for _, r := range got {
		byID[wire.FormatRecordID(r.id)] = r.payload
		seen[r.payload]++
	}
	for p, n := range seen {
		require.Equal(t, 1, n, "record %q read %d times", p, n)
	}
	for w := range writers {
		for _, a := range acks[w] {
			payload, ok := byID[wire.FormatRecordID(a.id)]
			require.True(t, ok, "acknowledged record %s (%s) is missing after kill -9", wire.FormatRecordID(a.id), a.payload)
			require.Equal(t, a.payload, payload, "record %s holds another payload", wire.FormatRecordID(a.id))
		}
	}
	// Per key, records are read in the order they were appended.
	last := make(map[string]string)
	for _, r := range got {
		key := r.payload[:strings.IndexByte(r.payload, '/')]
		require.Greater(t, r.payload, last[key], "record %s out of order for key %s", r.payload, key)
		last[key] = r.payload
	}
}

// TestCleanRestartKeepsState stops `weir server` with SIGTERM and checks that
// streams, shards, records and a shard reader's position survive.
func TestCleanRestartKeepsState(t *testing.T) {
	p := newProc(t)
	p.start()
	api := p.client()
	ctx := context.Background()
	_, err := api.CreateStream(ctx, &hstreampb.Stream{StreamName: "keep", ShardCount: 2, ReplicationFactor: 1, BacklogDuration: 3600})
	require.NoError(t, err)
	shards := listShards(t, api, "keep")
	for i := range 20 {
		recs := []*hstreampb.HStreamRecord{{Header: &hstreampb.HStreamRecordHeader{Key: "k"}, Payload: fmt.Appendf(nil, "r%02d", i)}}
		br, err := wire.EncodeBatch(recs, hstreampb.CompressionType_None)
		require.NoError(t, err)
		_, err = api.Append(ctx, &hstreampb.AppendRequest{StreamName: "keep", ShardId: shards[0].ShardId, Records: br})
		require.NoError(t, err)
	}
	_, err = api.CreateShardReader(ctx, &hstreampb.CreateShardReaderRequest{StreamName: "keep", ShardId: shards[0].ShardId, ReaderId: "r1",
		ShardOffset: &hstreampb.ShardOffset{Offset: &hstreampb.ShardOffset_SpecialOffset{SpecialOffset: hstreampb.SpecialOffset_EARLIEST}}})
	require.NoError(t, err)
	first, err := api.ReadShard(ctx, &hstreampb.ReadShardRequest{ReaderId: "r1", MaxRecords: 5})
	require.NoError(t, err)
	require.Len(t, first.ReceivedRecords, 5)

	p.stop()
	require.Contains(t, p.log.String(), "stopped", "no clean shutdown in the log")
	p.start()
	api = p.client()

	streams, err := api.ListStreams(ctx, &hstreampb.ListStreamsRequest{})
	require.NoError(t, err)
	require.Len(t, streams.Streams, 1)
	require.Equal(t, "keep", streams.Streams[0].StreamName)
	require.EqualValues(t, 3600, streams.Streams[0].BacklogDuration)
	again := listShards(t, api, "keep")
	require.Len(t, again, 2)
	for i := range shards {
		require.True(t, proto.Equal(shards[i], again[i]), "shard %d changed across restart: %v vs %v", i, shards[i], again[i])
	}
	readers, err := api.ListShardReaders(ctx, &hstreampb.ListShardReadersRequest{})
	require.NoError(t, err)
	require.Equal(t, []string{"r1"}, readers.ReaderId)
	rest, err := api.ReadShard(ctx, &hstreampb.ReadShardRequest{ReaderId: "r1", MaxRecords: 100})
	require.NoError(t, err)
	require.Len(t, rest.ReceivedRecords, 15, "the reader should resume after the 5 batches it had read")
	recs, err := wire.DecodeBatch(rest.ReceivedRecords[0].Record, 1<<20)
	require.NoError(t, err)
	require.Equal(t, "r05", string(recs[0].Payload))
}

func listShards(t *testing.T, api hstreampb.HStreamApiClient, stream string) []*hstreampb.Shard {
	t.Helper()
	resp, err := api.ListShards(context.Background(), &hstreampb.ListShardsRequest{StreamName: stream})
	require.NoError(t, err)
	return resp.Shards
}

// readAll reads a whole stream, from the earliest record to the tail as it
// is now, sorted per shard by record id (the order the log holds them).
func readAll(t *testing.T, api hstreampb.HStreamApiClient, stream string) []acked {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	rs, err := api.ReadStream(ctx, &hstreampb.ReadStreamRequest{
		ReaderId:   "crash-check",
		StreamName: stream,
		From:       &hstreampb.StreamOffset{Offset: &hstreampb.StreamOffset_SpecialOffset{SpecialOffset: hstreampb.SpecialOffset_EARLIEST}},
		Until:      &hstreampb.StreamOffset{Offset: &hstreampb.StreamOffset_SpecialOffset{SpecialOffset: hstreampb.SpecialOffset_LATEST}},
	})
	require.NoError(t, err)
	var out []acked
	for {
		resp, err := rs.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		require.NoError(t, err)
		for _, rr := range resp.ReceivedRecords {
			recs, err := wire.DecodeBatch(rr.Record, 64<<20)
			require.NoError(t, err)
			require.Len(t, rr.RecordIds, len(recs))
			for i, r := range recs {
				out = append(out, acked{id: rr.RecordIds[i], payload: string(r.Payload)})
			}
		}
	}
	sort.SliceStable(out, func(i, j int) bool { return wire.CompareRecordID(out[i].id, out[j].id) < 0 })
	return out
}
