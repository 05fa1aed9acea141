package api_test

import (
	"bytes"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"

	"github.com/weir-log/weir/api/hstreampb"
	"github.com/weir-log/weir/api/wire"
	"github.com/weir-log/weir/conf"
	"github.com/weir-log/weir/internal/nodetest"
)

// TestBadInput sends requests HStreamDB rejects and checks each answer's
// gRPC code, the ErrorCode in its JSON message, that the message names what
// was wrong, and that the node goes on serving.
func TestBadInput(t *testing.T) {
	node := nodetest.Start(t, func(c *conf.Config) {
		c.Store.MaxRecordSize = 1 * conf.KiB
		c.Store.MaxBatchSize = 64 * conf.KiB
	})
	api := node.API
	shards := createStream(t, api, "orders", 2)
	shardA, shardB := shards[0].GetShardId(), shards[1].GetShardId()
	idA := appendBatch(t, api, "orders", shardA, hstreampb.CompressionType_None, rec("a", []byte("x")))[0]
	idB := appendBatch(t, api, "orders", shardB, hstreampb.CompressionType_None, rec("b", []byte("y")))[0]
	_, err := api.CreateShardReader(ctxT(t), &hstreampb.CreateShardReaderRequest{StreamName: "orders", ShardId: shardA, ReaderId: "taken"})
	require.NoError(t, err)

	good, err := wire.EncodeBatch([]*hstreampb.HStreamRecord{rec("a", []byte("1")), rec("b", []byte("2")), rec("c", []byte("3"))}, hstreampb.CompressionType_None)
	require.NoError(t, err)
	withBatch := func(f func(b *hstreampb.BatchedRecord)) *hstreampb.BatchedRecord {
		b := &hstreampb.BatchedRecord{CompressionType: good.GetCompressionType(), BatchSize: good.GetBatchSize(), Payload: good.GetPayload()}
		f(b)
		return b
	}
	appendTo := func(b *hstreampb.BatchedRecord) error {
		_, err := api.Append(ctxT(t), &hstreampb.AppendRequest{StreamName: "orders", ShardId: shardA, Records: b})
		return err
	}
	createNamed := func(name string) error {
		_, err := api.CreateStream(ctxT(t), &hstreampb.Stream{StreamName: name, ShardCount: 1})
		return err
	}
	createReader := func(id string, off *hstreampb.ShardOffset) error {
		_, err := api.CreateShardReader(ctxT(t), &hstreampb.CreateShardReaderRequest{
			StreamName: "orders", ShardId: shardA, ReaderId: id, ShardOffset: off})
		return err
	}
	// Incompressible bytes, so the batch stays over the 64 KiB limit.
	noise := make([]byte, 900)
	for i := range noise {
		noise[i] = byte(i*7919 + i*i)
	}
	var big []*hstreampb.HStreamRecord
	for i := range 100 {
		big = append(big, rec("k", append([]byte{byte(i)}, noise...)))
	}
	bigBatch, err := wire.EncodeBatch(big, hstreampb.CompressionType_None)
	require.NoError(t, err)

	cases := []struct {
		name      string
		call      func() error
		code      codes.Code
		ec        hstreampb.ErrorCode
		fragments []string
	}{
		{"stream name empty", func() error { return createNamed("") }, codes.InvalidArgument, hstreampb.ErrorCode_StreamInvalidObjectIdentifier, []string{`""`}},
		{"stream name digit first", func() error { return createNamed("1orders") }, codes.InvalidArgument, hstreampb.ErrorCode_StreamInvalidObjectIdentifier, []string{`"1orders"`, "letter"}},
		{"stream name slash", func() error { return createNamed("a/b") }, codes.InvalidArgument, hstreampb.ErrorCode_StreamInvalidObjectIdentifier, []string{`"a/b"`, `'/'`}},
		{"stream name space", func() error { return createNamed("a b") }, codes.InvalidArgument, hstreampb.ErrorCode_StreamInvalidObjectIdentifier, []string{`"a b"`}},
		{"stream name too long", func() error { return createNamed("a" + strings.Repeat("b", 255)) }, codes.InvalidArgument, hstreampb.ErrorCode_StreamInvalidObjectIdentifier, []string{"256 characters"}},
		{"shard count 0", func() error {
			_, err := api.CreateStream(ctxT(t), &hstreampb.Stream{StreamName: "zero", ShardCount: 0})
			return err
		}, codes.InvalidArgument, hstreampb.ErrorCode_StreamInvalidShardCount, []string{`"zero"`, "shardCount"}},
		{"replication factor", func() error {
			_, err := api.CreateStream(ctxT(t), &hstreampb.Stream{StreamName: "rf", ShardCount: 1, ReplicationFactor: 3})
			return err
		}, codes.InvalidArgument, hstreampb.ErrorCode_StreamInvalidReplicaFactor, []string{`"rf"`, "3"}},
		{"stream exists", func() error { return createNamed("orders") }, codes.AlreadyExists, hstreampb.ErrorCode_StreamExists, []string{`stream "orders" already exists`}},
		{"reader id empty", func() error { return createReader("", nil) }, codes.InvalidArgument, hstreampb.ErrorCode_ShardReaderInvalidObjectIdentifier, []string{"shard reader"}},
		{"reader id bad char", func() error { return createReader("r.1", nil) }, codes.InvalidArgument, hstreampb.ErrorCode_ShardReaderInvalidObjectIdentifier, []string{`"r.1"`}},
		{"reader id duplicate", func() error { return createReader("taken", nil) }, codes.AlreadyExists, hstreampb.ErrorCode_ShardReaderInvalidObjectIdentifier, []string{`"taken"`}},
		{"reader offset of another shard", func() error { return createReader("other", recordOffset(idB)) }, codes.InvalidArgument, hstreampb.ErrorCode_ShardReaderConflictOffset, []string{wire.FormatRecordID(idB)}},
		{"reader offset beyond tail", func() error {
			return createReader("beyond", recordOffset(&hstreampb.RecordId{ShardId: shardA, BatchId: idA.GetBatchId() + 100}))
		}, codes.InvalidArgument, hstreampb.ErrorCode_StreamInvalidOffset, []string{"beyond the tail"}},
		{"no records", func() error { return appendTo(nil) }, codes.InvalidArgument, hstreampb.ErrorCode_StreamEmptyBatchedRecord, []string{"no records"}},
		{"batchSize 0", func() error { return appendTo(withBatch(func(b *hstreampb.BatchedRecord) { b.BatchSize = 0 })) }, codes.InvalidArgument, hstreampb.ErrorCode_StreamEmptyBatchedRecord, []string{"batchSize is 0"}},
		{"empty payload", func() error { return appendTo(withBatch(func(b *hstreampb.BatchedRecord) { b.Payload = nil })) }, codes.InvalidArgument, hstreampb.ErrorCode_StreamEmptyBatchedRecord, []string{"payload is empty"}},
		{"batchSize mismatch", func() error { return appendTo(withBatch(func(b *hstreampb.BatchedRecord) { b.BatchSize = 5 })) }, codes.InvalidArgument, hstreampb.ErrorCode_StreamEmptyBatchedRecord, []string{"batchSize 5", "3 records"}},
		{"corrupt gzip", func() error {
			return appendTo(withBatch(func(b *hstreampb.BatchedRecord) {
				b.CompressionType = hstreampb.CompressionType_Gzip
				b.Payload = []byte{0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff, 0xde, 0xad, 0xbe, 0xef, 0xff, 0xff}
			}))
		}, codes.InvalidArgument, hstreampb.ErrorCode_StreamEmptyBatchedRecord, []string{"Gzip", "corrupt"}},
		{"corrupt zstd", func() error {
			return appendTo(withBatch(func(b *hstreampb.BatchedRecord) {
				b.CompressionType = hstreampb.CompressionType_Zstd
				b.Payload = bytes.Repeat([]byte{0x28, 0xb5, 0x2f, 0xfd, 0x99}, 4)
			}))
		}, codes.InvalidArgument, hstreampb.ErrorCode_StreamEmptyBatchedRecord, []string{"Zstd", "corrupt"}},
		{"not a BatchHStreamRecords", func() error {
			return appendTo(withBatch(func(b *hstreampb.BatchedRecord) { b.Payload = []byte{0x0a, 0x50, 1} }))
		}, codes.InvalidArgument, hstreampb.ErrorCode_StreamEmptyBatchedRecord, []string{"corrupt"}},
		{"unknown compression", func() error {
			return appendTo(withBatch(func(b *hstreampb.BatchedRecord) { b.CompressionType = 9 }))
		}, codes.InvalidArgument, hstreampb.ErrorCode_StreamEmptyBatchedRecord, []string{"compression"}},
		{"record over MaxRecordSize", func() error {
			b, err := wire.EncodeBatch([]*hstreampb.HStreamRecord{rec("a", []byte("ok")), rec("b", make([]byte, 1025))}, hstreampb.CompressionType_Gzip)
			require.NoError(t, err)
			return appendTo(b)
		}, codes.InvalidArgument, hstreampb.ErrorCode_StreamInvalidRecordSize, []string{"record 1 of 2", "1025-byte", "1024 bytes"}},
		{"batch over MaxBatchSize", func() error { return appendTo(bigBatch) }, codes.InvalidArgument, hstreampb.ErrorCode_StreamInvalidRecordSize, []string{"65536 bytes"}},
		{"unknown stream", func() error {
			_, err := api.Append(ctxT(t), &hstreampb.AppendRequest{StreamName: "nope", ShardId: shardA, Records: good})
			return err
		}, codes.NotFound, hstreampb.ErrorCode_StreamNotFound, []string{`stream "nope" not found`}},
		{"unknown stream GetStream", func() error {
			_, err := api.GetStream(ctxT(t), &hstreampb.GetStreamRequest{Name: "nope"})
			return err
		}, codes.NotFound, hstreampb.ErrorCode_StreamNotFound, []string{`"nope"`}},
		{"unknown stream DeleteStream", func() error {
			_, err := api.DeleteStream(ctxT(t), &hstreampb.DeleteStreamRequest{StreamName: "nope"})
			return err
		}, codes.NotFound, hstreampb.ErrorCode_StreamNotFound, []string{`"nope"`}},
		{"unknown shard", func() error {
			_, err := api.Append(ctxT(t), &hstreampb.AppendRequest{StreamName: "orders", ShardId: 987654, Records: good})
			return err
		}, codes.NotFound, hstreampb.ErrorCode_StreamShardNotExists, []string{"987654", `"orders"`}},
		{"unknown shard LookupShard", func() error {
			_, err := api.LookupShard(ctxT(t), &hstreampb.LookupShardRequest{ShardId: 987654})
			return err
		}, codes.NotFound, hstreampb.ErrorCode_StreamShardNotExists, []string{"987654"}},
		{"LookupResource shard id not decimal", func() error {
			_, err := api.LookupResource(ctxT(t), &hstreampb.LookupResourceRequest{ResType: hstreampb.ResourceType_ResShard, ResId: "x1"})
			return err
		}, codes.InvalidArgument, hstreampb.ErrorCode_InternalError, []string{`"x1"`}},
		{"unknown reader", func() error {
			_, err := api.ReadShard(ctxT(t), &hstreampb.ReadShardRequest{ReaderId: "ghost"})
			return err
		}, codes.NotFound, hstreampb.ErrorCode_ShardReaderInvalidObjectIdentifier, []string{`shard reader "ghost" not found`}},
		{"delete unknown reader", func() error {
			_, err := api.DeleteShardReader(ctxT(t), &hstreampb.DeleteShardReaderRequest{ReaderId: "ghost"})
			return err
		}, codes.NotFound, hstreampb.ErrorCode_ShardReaderInvalidObjectIdentifier, []string{`"ghost"`}},
		{"TrimShards bad id", func() error {
			_, err := api.TrimShards(ctxT(t), &hstreampb.TrimShardsRequest{StreamName: "orders", RecordIds: []string{"1-2-x"}})
			return err
		}, codes.InvalidArgument, hstreampb.ErrorCode_StreamInvalidRecordId, []string{`"1-2-x"`}},
		{"ReadShardStream offset of another shard", func() error {
			rs, err := api.ReadShardStream(ctxT(t), &hstreampb.ReadShardStreamRequest{
				StreamName: "orders", ShardId: shardA, From: recordOffset(idB)})
			require.NoError(t, err)
			_, err = rs.Recv()
			return err
		}, codes.InvalidArgument, hstreampb.ErrorCode_ShardReaderConflictOffset, []string{wire.FormatRecordID(idB)}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			requireStatus(t, tc.call(), tc.code, tc.ec, tc.fragments...)
			resp, err := api.Echo(ctxT(t), &hstreampb.EchoRequest{Msg: "hello"})
			require.NoError(t, err, "the node stops serving after %s", tc.name)
			require.Equal(t, "hello", resp.GetMsg())
		})
	}

	// Nothing that was refused was stored, and good input still works.
	tail, err := api.GetTailRecordId(ctxT(t), &hstreampb.GetTailRecordIdRequest{StreamName: "orders", ShardId: shardA})
	require.NoError(t, err)
	require.Equal(t, idA.GetBatchId(), tail.GetTailRecordId().GetBatchId())
	appendBatch(t, api, "orders", shardA, hstreampb.CompressionType_None, rec("a", make([]byte, 1024)))
	_, err = api.DeleteStream(ctxT(t), &hstreampb.DeleteStreamRequest{StreamName: "nope", IgnoreNonExist: true})
	require.NoError(t, err)
}
