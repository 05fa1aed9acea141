package wire

import "errors"

// Batch codec errors. DecodeBatch and EncodeBatch wrap them with %w and add
// the detail (sizes, offsets, the underlying decoder error); test with
// errors.Is. At the API edge they all mean InvalidArgument.
var (
	// ErrCorruptPayload: the payload is not a valid gzip member, zstd frame
	// or serialized BatchHStreamRecords.
	ErrCorruptPayload = errors.New("wire: corrupt batch payload")
	// ErrBatchSizeMismatch: BatchedRecord.batchSize differs from the number
	// of records inside the payload.
	ErrBatchSizeMismatch = errors.New("wire: batchSize does not match payload")
	// ErrPayloadTooLarge: the payload inflates past the caller's limit.
	ErrPayloadTooLarge = errors.New("wire: batch payload too large")
	// ErrUnknownCompression: compressionType is not None, Gzip or Zstd.
	ErrUnknownCompression = errors.New("wire: unknown compression type")
	// ErrEmptyBatch: batchSize is 0, the payload is empty, or there are no
	// records to encode (HStreamDB rejects such appends, ErrorCode 206).
	ErrEmptyBatch = errors.New("wire: empty batch")
)

// Text-format errors, wrapped with the offending text.
var (
	// ErrInvalidKey: a hash range key is not canonical base-10 text of an
	// unsigned 128-bit integer.
	ErrInvalidKey = errors.New("wire: invalid hash range key")
	// ErrInvalidRecordID: a record id is not "<shardId>-<batchId>-<batchIndex>".
	ErrInvalidRecordID = errors.New("wire: invalid record id")
	// ErrInvalidShards: a shard list does not tile the key space exactly.
	ErrInvalidShards = errors.New("wire: invalid shard ranges")
)
