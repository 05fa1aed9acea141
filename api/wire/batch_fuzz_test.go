package wire

import (
	"errors"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/weir-log/weir/api/hstreampb"
)

// FuzzDecodeBatch feeds DecodeBatch arbitrary batches. Seeds (valid batches of
// each compression, trailerless gzip, undeclared-size and multi-frame zstd,
// bombs, corrupt and mismatched ones) are in testdata/fuzz/FuzzDecodeBatch.
//
//	go test -run '^$' -fuzz FuzzDecodeBatch -fuzztime 30s ./api/wire/
func FuzzDecodeBatch(f *testing.F) {
	sentinels := []error{ErrCorruptPayload, ErrBatchSizeMismatch, ErrPayloadTooLarge, ErrUnknownCompression, ErrEmptyBatch}
	f.Fuzz(func(t *testing.T, compression int32, batchSize uint32, payload []byte) {
		b := &hstreampb.BatchedRecord{
			CompressionType: hstreampb.CompressionType(compression),
			BatchSize:       batchSize,
			Payload:         payload,
		}
		records, err := DecodeBatch(b, 1<<20)
		if err != nil {
			if records != nil {
				t.Fatalf("DecodeBatch returned %d records and error %v", len(records), err)
			}
			for _, s := range sentinels {
				if errors.Is(err, s) {
					return
				}
			}
			t.Fatalf("DecodeBatch error %v wraps no sentinel", err)
		}
		if uint64(len(records)) != uint64(batchSize) {
			t.Fatalf("batchSize %d but DecodeBatch returned %d records", batchSize, len(records))
		}
		// What decodes re-encodes, and decodes to the same records.
		again, err := EncodeBatch(records, hstreampb.CompressionType_None)
		if err != nil {
			t.Fatalf("re-encode: %v", err)
		}
		back, err := DecodeBatch(again, 0)
		if err != nil {
			t.Fatalf("decode re-encoded batch: %v", err)
		}
		for i := range records {
			if !proto.Equal(records[i], back[i]) {
				t.Fatalf("record %d changed on re-encode: %v != %v", i, records[i], back[i])
			}
		}
	})
}
