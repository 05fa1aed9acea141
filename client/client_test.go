package client

import (
	"errors"
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/weir-log/weir/api/hstreampb"
	"github.com/weir-log/weir/api/wire"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// shardOfKey computes, independently of ShardMap, which of shardIDs (in hash
// range order over wire.ShardRanges) a key belongs to.
func shardOfKey(t *testing.T, key string, shardIDs []uint64) uint64 {
	t.Helper()
	h := wire.HashKey(key)
	for i, r := range wire.ShardRanges(uint32(len(shardIDs))) {
		if r.Contains(h) {
			return shardIDs[i]
		}
	}
	t.Fatalf("key %q (hash %s) is in no range", key, h)
	return 0
}

// storedRecord finds the record an id names in the fake server's log.
func storedRecord(t *testing.T, fs *fakeServer, id *hstreampb.RecordId) *hstreampb.HStreamRecord {
	t.Helper()
	batches := fs.batches(id.GetShardId())
	require.Positive(t, id.GetBatchId(), "record id %s", wire.FormatRecordID(id))
	require.LessOrEqual(t, id.GetBatchId(), uint64(len(batches)), "record id %s", wire.FormatRecordID(id))
	recs, err := wire.DecodeBatch(batches[id.GetBatchId()-1], 0)
	require.NoError(t, err)
	require.Less(t, int(id.GetBatchIndex()), len(recs), "record id %s", wire.FormatRecordID(id))
	return recs[id.GetBatchIndex()]
}

func TestAppendRoutesByKeyAndKeepsInputOrder(t *testing.T) {
	fs, c := startFake(t)
	shardIDs := []uint64{907, 13, 4242, 77} // not sorted, so range order ≠ id order
	fs.addStream("s", shardIDs...)

	const n = 200
	records := make([]Record, n)
	for i := range records {
		records[i] = Record{Key: fmt.Sprintf("key-%d", i%37), Payload: fmt.Appendf(nil, "payload-%d", i)}
	}
	ids, err := c.Append(t.Context(), "s", records)
	require.NoError(t, err)
	require.Len(t, ids, n)

	perShard := make(map[uint64]int)
	for i, id := range ids {
		require.NotNil(t, id, "record %d", i)
		require.Equal(t, shardOfKey(t, records[i].Key, shardIDs), id.GetShardId(), "record %d key %q", i, records[i].Key)
		perShard[id.GetShardId()]++
		got := storedRecord(t, fs, id)
		require.Equal(t, records[i].Key, got.GetHeader().GetKey(), "record %d", i)
		require.Equal(t, records[i].Payload, got.GetPayload(), "record %d", i)
		require.Equal(t, hstreampb.HStreamRecordHeader_RAW, got.GetHeader().GetFlag(), "record %d", i)
	}
	require.Len(t, perShard, 4, "37 keys should reach all 4 shards")
	for _, shard := range shardIDs {
		b := fs.batches(shard)
		require.Len(t, b, 1, "one AppendRequest per shard")
		require.Equal(t, uint32(perShard[shard]), b[0].GetBatchSize())
		require.NotNil(t, b[0].GetPublishTime(), "publishTime is set")
		require.WithinDuration(t, time.Now(), b[0].GetPublishTime().AsTime(), time.Minute)
	}
}

func TestAppendCompressionRoundTrip(t *testing.T) {
	for _, comp := range []hstreampb.CompressionType{
		hstreampb.CompressionType_None, hstreampb.CompressionType_Gzip, hstreampb.CompressionType_Zstd,
	} {
		t.Run(comp.String(), func(t *testing.T) {
			fs, c := startFake(t)
			fs.addStream("s", 1, 2)
			records := make([]Record, 50)
			for i := range records {
				records[i] = Record{
					Key:        fmt.Sprintf("dev-%d", i%5),
					Payload:    fmt.Appendf(nil, "reading %d: %0100d", i, i),
					Attributes: map[string]string{"i": fmt.Sprint(i)},
				}
			}
			ids, err := c.Append(t.Context(), "s", records, Compression(comp))
			require.NoError(t, err)
			for _, shard := range []uint64{1, 2} {
				for _, b := range fs.batches(shard) {
					require.Equal(t, comp, b.GetCompressionType())
				}
			}

			want := make(map[string]Record, len(ids))
			for i, id := range ids {
				want[wire.FormatRecordID(id)] = records[i]
			}
			got := 0
			err = c.ReadStream(t.Context(), "s", Earliest(), Latest(), 0, func(r ReceivedRecord) error {
				w, ok := want[wire.FormatRecordID(r.ID)]
				require.True(t, ok, "unexpected record %s", wire.FormatRecordID(r.ID))
				require.Equal(t, w.Key, r.Key)
				require.Equal(t, w.Payload, r.Payload)
				require.Equal(t, w.Attributes, r.Attributes)
				require.Equal(t, hstreampb.HStreamRecordHeader_RAW, r.Flag)
				require.False(t, r.PublishTime.IsZero())
				got++
				return nil
			})
			require.NoError(t, err)
			require.Equal(t, len(records), got)
		})
	}
}

func TestAppendRefreshesShardsOnceOnShardNotFound(t *testing.T) {
	fs, c := startFake(t)
	fs.addStream("s", 1, 2)
	_, err := c.Append(t.Context(), "s", []Record{{Key: "a", Payload: []byte("1")}})
	require.NoError(t, err)

	fs.addStream("s", 5, 6, 7) // recreated: the cached shard ids are gone
	records := []Record{{Key: "a", Payload: []byte("2")}, {Key: "b", Payload: []byte("3")}, {Key: "c", Payload: []byte("4")}}
	ids, err := c.Append(t.Context(), "s", records)
	require.NoError(t, err)
	for i, id := range ids {
		require.Equal(t, shardOfKey(t, records[i].Key, []uint64{5, 6, 7}), id.GetShardId())
		require.Equal(t, records[i].Payload, storedRecord(t, fs, id).GetPayload())
	}
	fs.mu.Lock()
	require.Equal(t, 2, fs.listShardsCalls, "one fetch, one refresh")
	fs.mu.Unlock()
}

func TestAppendErrors(t *testing.T) {
	fs, c := startFake(t)
	fs.addStream("s", 1)

	_, err := c.Append(t.Context(), "s", nil)
	require.ErrorIs(t, err, ErrInvalidArgument)
	require.ErrorContains(t, err, `"s"`)

	_, err = c.Append(t.Context(), "s", []Record{{}}, Compression(9))
	require.ErrorIs(t, err, ErrInvalidArgument)
	require.ErrorContains(t, err, "Compression(9)")

	ids, err := c.Append(t.Context(), "missing", []Record{{Key: "k"}})
	require.Nil(t, ids)
	require.Equal(t, codes.NotFound, status.Code(err))
	code, ok := ErrorCode(err)
	require.True(t, ok)
	require.Equal(t, hstreampb.ErrorCode_StreamNotFound, code)

	fs.mu.Lock()
	require.Zero(t, fs.appendCalls, "nothing sent for rejected input")
	fs.mu.Unlock()
}

func TestErrorCode(t *testing.T) {
	for _, tc := range []struct {
		name string
		err  error
		code hstreampb.ErrorCode
		ok   bool
	}{
		{"hstream json", hstreamError(codes.FailedPrecondition, hstreampb.ErrorCode_WrongServer, "go elsewhere"), hstreampb.ErrorCode_WrongServer, true},
		{"wrapped", fmt.Errorf("outer: %w", hstreamError(codes.NotFound, hstreampb.ErrorCode_StreamShardNotExists, "x")), hstreampb.ErrorCode_StreamShardNotExists, true},
		{"internal error is code 0", status.Error(codes.Internal, `{"error":0,"message":"boom","extra":{"a":1}}`), hstreampb.ErrorCode_InternalError, true},
		{"plain status message", status.Error(codes.Unavailable, "connection refused"), 0, false},
		{"json without error", status.Error(codes.Unknown, `{"message":"x"}`), 0, false},
		{"error not a number", status.Error(codes.Unknown, `{"error":"200"}`), 0, false},
		{"not a status", errors.New(`{"error":200}`), 0, false},
		{"nil", nil, 0, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, ok := ErrorCode(tc.err)
			require.Equal(t, tc.ok, ok)
			require.Equal(t, tc.code, code)
		})
	}
}

func TestDecodeReceivedMismatch(t *testing.T) {
	three := make([]*hstreampb.HStreamRecord, 3)
	for i := range three {
		three[i] = &hstreampb.HStreamRecord{
			Header:  &hstreampb.HStreamRecordHeader{Flag: hstreampb.HStreamRecordHeader_RAW, Key: "k"},
			Payload: fmt.Appendf(nil, "%d", i),
		}
	}
	batch, err := wire.EncodeBatch(three, hstreampb.CompressionType_Gzip)
	require.NoError(t, err)
	ids := func(n int) []*hstreampb.RecordId {
		out := make([]*hstreampb.RecordId, n)
		for i := range out {
			out[i] = &hstreampb.RecordId{ShardId: 1, BatchId: 9, BatchIndex: uint32(i)}
		}
		return out
	}

	recs, err := DecodeReceived(&hstreampb.ReceivedRecord{RecordIds: ids(3), Record: batch})
	require.NoError(t, err)
	require.Len(t, recs, 3)
	for i, r := range recs {
		require.Equal(t, uint32(i), r.ID.GetBatchIndex())
		require.Equal(t, fmt.Appendf(nil, "%d", i), r.Payload)
	}

	_, err = DecodeReceived(&hstreampb.ReceivedRecord{RecordIds: ids(2), Record: batch})
	require.ErrorIs(t, err, ErrDataContaminated)
	require.ErrorContains(t, err, "batchSize 3 but 2 record ids")

	// batchSize and ids agree, but the payload holds fewer records.
	short, err := wire.EncodeBatch(three[:2], hstreampb.CompressionType_None)
	require.NoError(t, err)
	short.BatchSize = 3
	_, err = DecodeReceived(&hstreampb.ReceivedRecord{RecordIds: ids(3), Record: short})
	require.ErrorIs(t, err, ErrDataContaminated)

	_, err = DecodeReceived(&hstreampb.ReceivedRecord{RecordIds: ids(1)})
	require.ErrorIs(t, err, ErrBadResponse)
	_, err = DecodeReceived(&hstreampb.ReceivedRecord{Record: &hstreampb.BatchedRecord{}})
	require.ErrorIs(t, err, ErrBadResponse)
}

func TestReadShardStreamFromRecordSkipsEarlierInBatch(t *testing.T) {
	fs, c := startFake(t)
	fs.addStream("s", 3)
	first := make([]Record, 5)
	for i := range first {
		first[i] = Record{Key: "k", Payload: fmt.Appendf(nil, "a%d", i)}
	}
	ids, err := c.Append(t.Context(), "s", first)
	require.NoError(t, err)
	_, err = c.Append(t.Context(), "s", []Record{{Key: "k", Payload: []byte("b0")}})
	require.NoError(t, err)

	var got []string
	err = c.ReadShardStream(t.Context(), "s", 3, ShardAtRecord(ids[3]), ShardLatest(), 0, func(r ReceivedRecord) error {
		got = append(got, string(r.Payload))
		return nil
	})
	require.NoError(t, err)
	require.Equal(t, []string{"a3", "a4", "b0"}, got)
}

func TestReadStreamStopsOnCallbackError(t *testing.T) {
	fs, c := startFake(t)
	fs.addStream("s", 1)
	_, err := c.Append(t.Context(), "s", []Record{{Payload: []byte("x")}, {Payload: []byte("y")}})
	require.NoError(t, err)

	stop := errors.New("enough")
	calls := 0
	err = c.ReadStream(t.Context(), "s", nil, nil, 0, func(ReceivedRecord) error {
		calls++
		return stop
	})
	require.ErrorIs(t, err, stop)
	require.Equal(t, 1, calls)

	err = c.ReadStream(t.Context(), "missing", nil, nil, 0, func(ReceivedRecord) error { return nil })
	require.Equal(t, codes.NotFound, status.Code(err))
}

func TestCreateStreamOptions(t *testing.T) {
	fs, c := startFake(t)

	_, err := c.CreateStream(t.Context(), "d")
	require.NoError(t, err)
	fs.mu.Lock()
	require.Equal(t, uint32(1), fs.lastCreate.GetShardCount())
	require.Equal(t, uint32(1), fs.lastCreate.GetReplicationFactor())
	require.Equal(t, uint32(7*24*3600), fs.lastCreate.GetBacklogDuration())
	fs.mu.Unlock()

	_, err = c.CreateStream(t.Context(), "e", ShardCount(8), ReplicationFactor(3), BacklogDuration(0))
	require.NoError(t, err)
	fs.mu.Lock()
	require.Equal(t, uint32(8), fs.lastCreate.GetShardCount())
	require.Equal(t, uint32(3), fs.lastCreate.GetReplicationFactor())
	require.Equal(t, uint32(0), fs.lastCreate.GetBacklogDuration())
	fs.mu.Unlock()

	for _, tc := range []struct {
		opt  StreamOpt
		want string
	}{
		{ShardCount(0), "ShardCount(0)"},
		{ReplicationFactor(-1), "ReplicationFactor(-1)"},
		{BacklogDuration(1500 * time.Millisecond), "BacklogDuration(1.5s): not a whole number of seconds"},
		{BacklogDuration(-time.Hour), "BacklogDuration(-1h0m0s): negative"},
	} {
		_, err := c.CreateStream(t.Context(), "bad", tc.opt)
		require.ErrorIs(t, err, ErrInvalidArgument)
		require.ErrorContains(t, err, tc.want)
	}
}

func TestNormalizeAddr(t *testing.T) {
	for in, want := range map[string]string{
		"127.0.0.1:7000": "127.0.0.1:7000",
		"localhost":      "localhost:6570",
		"10.1.2.3":       "10.1.2.3:6570",
		"[::1]:7000":     "[::1]:7000",
		"[::1]":          "[::1]:6570",
		"::1":            "[::1]:6570",
	} {
		got, err := normalizeAddr(in)
		require.NoError(t, err, in)
		require.Equal(t, want, got, in)
	}
	for _, bad := range []string{"", ":7000", "host:", "a:b:c"} {
		_, err := normalizeAddr(bad)
		require.ErrorIs(t, err, ErrInvalidArgument, bad)
		if bad != "" {
			require.ErrorContains(t, err, fmt.Sprintf("%q", bad))
		}
	}
}

func TestDialFailsWithinTimeout(t *testing.T) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := lis.Addr().String()
	require.NoError(t, lis.Close()) // nothing listens there now

	start := time.Now()
	_, err = Dial(t.Context(), addr, WithDialTimeout(300*time.Millisecond))
	require.Error(t, err)
	t.Log(err)
	require.ErrorContains(t, err, addr)
	require.Less(t, time.Since(start), 5*time.Second)
}
