// Package wire holds the hand-written parts of HStreamDB's wire formats that
// the generated code in api/hstreampb does not cover. Both the weir server and
// the weir Go client import it, so the two can never disagree on them.
//
// It owns three formats, all defined by HStreamDB (its hstream.proto and the
// server's Haskell sources) and reproduced here exactly:
//
// # Batches (EncodeBatch, DecodeBatch)
//
// An append carries one BatchedRecord. The server stores it whole as one log
// entry and mints batchSize record ids from its position, without needing to
// open the payload; consumers and the client open it:
//
//	BatchedRecord                       (hstreampb, field numbers on the left)
//	  1 compressionType  None=0 | Gzip=1 | Zstd=2
//	  2 publishTime      set by the caller; the server overwrites it on delivery
//	  3 batchSize        uint32 > 0, number of records in the payload
//	  4 payload          bytes ─────┐
//	                                │ None: as is
//	                                │ Gzip: gzip member, trailer optional
//	                                │ Zstd: zstd frame(s)
//	                                ▼
//	BatchHStreamRecords
//	  1 records          repeated, exactly batchSize of:
//	      HStreamRecord
//	        1 header     HStreamRecordHeader
//	                       1 flag        JSON=0 | RAW=1
//	                       2 attributes  map<string,string>
//	                       3 key         partition key, "" allowed
//	        2 payload    bytes, may be empty; never interpreted here
//
// DecodeBatch bounds decompression (zip bombs), accepts gzip streams that
// were flushed but never closed (HStreamDB's Go client writes them), and
// checks the record count against batchSize. Decoders, encoders and
// decompression buffers are pooled: DecodeBatch is on the server's append and
// delivery paths.
//
// # Partition keys and shard ranges (HashKey, ShardRanges, ShardMap)
//
// A stream's key space is the unsigned 128-bit integers. A record's key maps
// to MD5(key) read big-endian; each shard owns an inclusive range, written as
// canonical base-10 text in Shard.startHashRangeKey/endHashRangeKey:
//
//	0                                                          2^128−1
//	├──── shard 0 ────┼──── shard 1 ────┼ … ┼──── shard n−1 ────────┤
//	[0, cnt−1]         [cnt, 2cnt−1]          [(n−1)cnt, 2^128−1]
//	                         cnt = (2^128−1) div n
//
// ShardRanges cuts the space as HStreamDB's CreateStream does; ShardMap
// checks that a shard list tiles the space and routes keys by binary search,
// as clients do before every append.
//
// # Record ids (FormatRecordID, ParseRecordID, CompareRecordID)
//
// A RecordId {shardId, batchId, batchIndex} is written as
// "<shardId>-<batchId>-<batchIndex>" in decimal (TrimShards, client logs) and
// ordered by (shardId, batchId, batchIndex).
//
// Errors are sentinels in errors.go, wrapped with the detail.
package wire
