package api_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/big"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/weir-log/weir/api/hstreampb"
	"github.com/weir-log/weir/api/wire"
)

// ctxT is a per-test context bounded well under the suite's budget.
func ctxT(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// statusOf splits an error of the API into its gRPC code, the HStreamDB
// ErrorCode of its JSON message, and the message's text.
func statusOf(t *testing.T, err error) (codes.Code, hstreampb.ErrorCode, string) {
	t.Helper()
	require.Error(t, err)
	st, ok := status.FromError(err)
	require.True(t, ok, "not a gRPC status: %v", err)
	var body struct {
		Error   *int32          `json:"error"`
		Message string          `json:"message"`
		Extra   json.RawMessage `json:"extra"`
	}
	require.NoError(t, json.Unmarshal([]byte(st.Message()), &body), "status message is not HStreamDB's JSON: %q", st.Message())
	require.NotNil(t, body.Error, "status message has no error code: %q", st.Message())
	require.Equal(t, "null", string(body.Extra), "extra in %q", st.Message())
	return st.Code(), hstreampb.ErrorCode(*body.Error), body.Message
}

// requireStatus asserts err's gRPC code and HStreamDB ErrorCode, and that
// the message mentions each of the fragments.
func requireStatus(t *testing.T, err error, code codes.Code, ec hstreampb.ErrorCode, fragments ...string) {
	t.Helper()
	gotCode, gotEC, msg := statusOf(t, err)
	require.Equal(t, code, gotCode, "gRPC code of %q", msg)
	require.Equal(t, ec, gotEC, "ErrorCode of %q", msg)
	for _, f := range fragments {
		require.Contains(t, msg, f)
	}
}

func createStream(t *testing.T, api hstreampb.HStreamApiClient, name string, shards uint32) []*hstreampb.Shard {
	t.Helper()
	ctx := ctxT(t)
	_, err := api.CreateStream(ctx, &hstreampb.Stream{StreamName: name, ShardCount: shards, ReplicationFactor: 1})
	require.NoError(t, err)
	resp, err := api.ListShards(ctx, &hstreampb.ListShardsRequest{StreamName: name})
	require.NoError(t, err)
	require.Len(t, resp.GetShards(), int(shards))
	return resp.GetShards()
}

// rec builds a RAW record.
func rec(key string, payload []byte) *hstreampb.HStreamRecord {
	return &hstreampb.HStreamRecord{
		Header:  &hstreampb.HStreamRecordHeader{Flag: hstreampb.HStreamRecordHeader_RAW, Key: key},
		Payload: payload,
	}
}

// appendBatch encodes records and appends them as one batch, checking the
// ids returned.
func appendBatch(t *testing.T, api hstreampb.HStreamApiClient, stream string, shard uint64,
	c hstreampb.CompressionType, records ...*hstreampb.HStreamRecord) []*hstreampb.RecordId {
	t.Helper()
	b, err := wire.EncodeBatch(records, c)
	require.NoError(t, err)
	resp, err := api.Append(ctxT(t), &hstreampb.AppendRequest{StreamName: stream, ShardId: shard, Records: b})
	require.NoError(t, err)
	ids := resp.GetRecordIds()
	require.Len(t, ids, len(records))
	for i, id := range ids {
		require.Equal(t, shard, id.GetShardId())
		require.Equal(t, ids[0].GetBatchId(), id.GetBatchId())
		require.Equal(t, uint32(i), id.GetBatchIndex())
	}
	require.NotZero(t, ids[0].GetBatchId())
	return ids
}

// shardFor routes a key as clients do: the shard whose inclusive hash range
// holds MD5(key).
func shardFor(t *testing.T, shards []*hstreampb.Shard, key string) uint64 {
	t.Helper()
	h := wire.HashKey(key)
	for _, s := range shards {
		start, ok1 := new(big.Int).SetString(s.GetStartHashRangeKey(), 10)
		end, ok2 := new(big.Int).SetString(s.GetEndHashRangeKey(), 10)
		require.True(t, ok1 && ok2, "shard %d has a bad range", s.GetShardId())
		if start.Cmp(h) <= 0 && h.Cmp(end) <= 0 {
			return s.GetShardId()
		}
	}
	t.Fatalf("no shard holds key %q", key)
	return 0
}

// gotRecord is one delivered record with its id.
type gotRecord struct {
	id      *hstreampb.RecordId
	key     string
	payload []byte
	publish time.Time // the batch's publishTime: its append time
}

// unpack checks a delivered batch's invariants and decodes its records.
func unpack(t *testing.T, rr *hstreampb.ReceivedRecord) []gotRecord {
	t.Helper()
	b := rr.GetRecord()
	require.NotNil(t, b)
	require.NotNil(t, b.GetPublishTime(), "publishTime is the append time")
	require.Len(t, rr.GetRecordIds(), int(b.GetBatchSize()))
	recs, err := wire.DecodeBatch(b, 0)
	require.NoError(t, err)
	out := make([]gotRecord, len(recs))
	for i, r := range recs {
		id := rr.GetRecordIds()[i]
		require.Equal(t, uint32(i), id.GetBatchIndex())
		require.Equal(t, rr.GetRecordIds()[0].GetBatchId(), id.GetBatchId())
		out[i] = gotRecord{id: id, key: r.GetHeader().GetKey(), payload: r.GetPayload(), publish: b.GetPublishTime().AsTime()}
	}
	return out
}

// readStream reads a stream from..until through ReadStream until the server
// ends it, returning every record in delivery order.
func readStream(t *testing.T, api hstreampb.HStreamApiClient, req *hstreampb.ReadStreamRequest) []gotRecord {
	t.Helper()
	rs, err := api.ReadStream(ctxT(t), req)
	require.NoError(t, err)
	return recvAll(t, rs.Recv)
}

// recvAll receives a read stream's responses until the server ends it and
// returns every record in delivery order.
func recvAll[R interface {
	GetReceivedRecords() []*hstreampb.ReceivedRecord
}](t *testing.T, recv func() (R, error)) []gotRecord {
	t.Helper()
	var out []gotRecord
	for {
		resp, err := recv()
		if errors.Is(err, io.EOF) {
			return out
		}
		require.NoError(t, err)
		for _, rr := range resp.GetReceivedRecords() {
			out = append(out, unpack(t, rr)...)
		}
	}
}

// readShard reads a shard reader until it has delivered want records.
func readShard(t *testing.T, api hstreampb.HStreamApiClient, reader string, want int) []gotRecord {
	t.Helper()
	var out []gotRecord
	deadline := time.Now().Add(20 * time.Second)
	for len(out) < want {
		require.True(t, time.Now().Before(deadline), "reader %q delivered %d of %d records", reader, len(out), want)
		resp, err := api.ReadShard(ctxT(t), &hstreampb.ReadShardRequest{ReaderId: reader, MaxRecords: 7})
		require.NoError(t, err)
		for _, rr := range resp.GetReceivedRecords() {
			out = append(out, unpack(t, rr)...)
		}
	}
	return out
}

func latest() *hstreampb.StreamOffset {
	return &hstreampb.StreamOffset{Offset: &hstreampb.StreamOffset_SpecialOffset{SpecialOffset: hstreampb.SpecialOffset_LATEST}}
}

func earliestShard() *hstreampb.ShardOffset {
	return &hstreampb.ShardOffset{Offset: &hstreampb.ShardOffset_SpecialOffset{SpecialOffset: hstreampb.SpecialOffset_EARLIEST}}
}

func latestShard() *hstreampb.ShardOffset {
	return &hstreampb.ShardOffset{Offset: &hstreampb.ShardOffset_SpecialOffset{SpecialOffset: hstreampb.SpecialOffset_LATEST}}
}

func recordOffset(id *hstreampb.RecordId) *hstreampb.ShardOffset {
	return &hstreampb.ShardOffset{Offset: &hstreampb.ShardOffset_RecordOffset{RecordOffset: id}}
}

// idSet formats ids for set comparisons.
func idSet(recs []gotRecord) map[string]bool {
	m := make(map[string]bool, len(recs))
	for _, r := range recs {
		m[wire.FormatRecordID(r.id)] = true
	}
	return m
}

// appendN appends n single-record batches with payloads "<prefix>-<i>" and
// returns their ids.
func appendN(t *testing.T, api hstreampb.HStreamApiClient, stream string, shard uint64, prefix string, n int) []*hstreampb.RecordId {
	t.Helper()
	ids := make([]*hstreampb.RecordId, n)
	for i := range ids {
		ids[i] = appendBatch(t, api, stream, shard, hstreampb.CompressionType_None,
			rec("k", fmt.Appendf(nil, "%s-%d", prefix, i)))[0]
	}
	return ids
}

// parallel runs f for each i in [0, n) concurrently and waits.
func parallel(n int, f func(i int)) {
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() { f(i) })
	}
	wg.Wait()
}
