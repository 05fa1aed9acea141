package api_test

import (
	"bytes"
	"context"
	"fmt"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/weir-log/weir/api/hstreampb"
	"github.com/weir-log/weir/api/wire"
	"github.com/weir-log/weir/internal/nodetest"
)

// sent is a record as the producer sent it, and the id Append gave it.
type sent struct {
	key     string
	seq     int // position among the records of its key
	payload []byte
	id      *hstreampb.RecordId
}

// TestRoundTrip appends 10,000 records over 100 keys to a 4-shard stream,
// routed by key as clients route them, in batches of about 100 per shard,
// once per compression type; then reads them back through ReadStream and
// through one shard reader per shard. Every record must come back exactly
// once, with the id Append returned, its payload intact, and each key's
// records in the order they were sent.
func TestRoundTrip(t *testing.T) {
	const (
		records   = 10_000
		keys      = 100
		batchSize = 100
	)
	node := nodetest.Start(t)
	api := node.API

	for _, c := range []hstreampb.CompressionType{
		hstreampb.CompressionType_Gzip, hstreampb.CompressionType_Zstd, hstreampb.CompressionType_None,
	} {
		t.Run(c.String(), func(t *testing.T) {
			stream := "roundtrip-" + c.String()
			shards := createStream(t, api, stream, 4)

			// Route every record to its shard, keeping each key's order.
			perShard := make(map[uint64][]*sent)
			seqs := make(map[string]int)
			for i := range records {
				key := fmt.Sprintf("device-%03d", i%keys)
				r := &sent{key: key, seq: seqs[key], payload: fmt.Appendf(nil, "%s #%d: %s", key, seqs[key], bytes.Repeat([]byte{byte(i)}, i%50))}
				seqs[key]++
				sh := shardFor(t, shards, key)
				perShard[sh] = append(perShard[sh], r)
			}
			require.Len(t, perShard, 4, "100 keys should reach every shard")

			// Append each shard's batches in order, the shards concurrently.
			errs := make([]error, len(shards))
			parallel(len(shards), func(i int) {
				id := shards[i].GetShardId()
				errs[i] = appendAll(context.Background(), api, stream, id, c, perShard[id], batchSize)
			})
			for _, err := range errs {
				require.NoError(t, err)
			}
			byID := make(map[string]*sent, records)
			for _, rs := range perShard {
				for _, r := range rs {
					byID[wire.FormatRecordID(r.id)] = r
				}
			}
			require.Len(t, byID, records, "ids are unique")

			t.Run("ReadStream", func(t *testing.T) {
				got := readStream(t, api, &hstreampb.ReadStreamRequest{
					ReaderId: "rt-" + c.String(), StreamName: stream, Until: latest(),
				})
				checkDelivery(t, byID, got)
			})
			t.Run("ShardReaders", func(t *testing.T) {
				var got []gotRecord
				for _, s := range shards {
					reader := fmt.Sprintf("rt-%s-%d", c, s.GetShardId())
					_, err := api.CreateShardReader(ctxT(t), &hstreampb.CreateShardReaderRequest{
						StreamName: stream, ShardId: s.GetShardId(), ShardOffset: earliestShard(), ReaderId: reader, Timeout: 100,
					})
					require.NoError(t, err)
					got = append(got, readShard(t, api, reader, len(perShard[s.GetShardId()]))...)
					// Nothing more arrives within the reader's timeout.
					resp, err := api.ReadShard(ctxT(t), &hstreampb.ReadShardRequest{ReaderId: reader, MaxRecords: 10})
					require.NoError(t, err)
					require.Empty(t, resp.GetReceivedRecords())
				}
				checkDelivery(t, byID, got)
			})
		})
	}
}

// appendAll appends records to one shard in batches of batchSize, in order,
// and records the ids returned. It runs on its own goroutine, so it returns
// errors rather than failing the test.
func appendAll(ctx context.Context, api hstreampb.HStreamApiClient, stream string, shard uint64,
	c hstreampb.CompressionType, rs []*sent, batchSize int) error {
	for start := 0; start < len(rs); start += batchSize {
		chunk := rs[start:min(start+batchSize, len(rs))]
		hrs := make([]*hstreampb.HStreamRecord, len(chunk))
		for i, r := range chunk {
			hrs[i] = rec(r.key, r.payload)
		}
		b, err := wire.EncodeBatch(hrs, c)
		if err != nil {
			return err
		}
		resp, err := api.Append(ctx, &hstreampb.AppendRequest{StreamName: stream, ShardId: shard, Records: b})
		if err != nil {
			return fmt.Errorf("append to shard %d: %w", shard, err)
		}
		if len(resp.GetRecordIds()) != len(chunk) {
			return fmt.Errorf("append of %d records returned %d ids", len(chunk), len(resp.GetRecordIds()))
		}
		for i, id := range resp.GetRecordIds() {
			if id.GetShardId() != shard || id.GetBatchIndex() != uint32(i) || id.GetBatchId() != resp.GetRecordIds()[0].GetBatchId() {
				return fmt.Errorf("append returned id %s at position %d", wire.FormatRecordID(id), i)
			}
			chunk[i].id = id
		}
	}
	return nil
}

// checkDelivery checks that got holds every sent record exactly once, under
// the id Append returned, with its key and payload, each key in order.
func checkDelivery(t *testing.T, byID map[string]*sent, got []gotRecord) {
	t.Helper()
	require.Len(t, got, len(byID))
	seen := make(map[string]bool, len(got))
	nextSeq := make(map[string]int)
	for _, g := range got {
		id := wire.FormatRecordID(g.id)
		want, ok := byID[id]
		require.True(t, ok, "delivered id %s was never returned by Append", id)
		require.False(t, seen[id], "id %s delivered twice", id)
		seen[id] = true
		require.Equal(t, want.key, g.key, "key of %s", id)
		require.Equal(t, want.payload, g.payload, "payload of %s", id)
		require.Equal(t, nextSeq[g.key], want.seq, "key %q out of order at %s", g.key, id)
		nextSeq[g.key]++
	}
}
