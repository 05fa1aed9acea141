package client

import (
	"fmt"
	"strings"
	"time"

	"github.com/weir-log/weir/api/hstreampb"
)

// ProducerOpt configures a BufferedProducer; pass it to
// NewBufferedProducer. Compression is one as well.
type ProducerOpt interface{ applyProducer(*producerConfig) }

type producerOption func(*producerConfig)

func (o producerOption) applyProducer(c *producerConfig) { o(c) }

// Defaults of the producer options.
const (
	// DefaultBatchRecordCountLimit is how many records a shard's batch
	// holds at most (BatchRecordCountLimit).
	DefaultBatchRecordCountLimit = 100
	// DefaultBatchBytesLimit is how many record bytes a shard's batch
	// holds at most (BatchBytesLimit): 1 MiB.
	DefaultBatchBytesLimit = 1 << 20
	// DefaultBatchAgeLimit is how long a batch may wait for more records
	// (BatchAgeLimit).
	DefaultBatchAgeLimit = 100 * time.Millisecond
	// DefaultFlowControlBytesLimit is how many record bytes a producer
	// holds at most, buffered or in flight (FlowControlBytesLimit): 64 MiB.
	DefaultFlowControlBytesLimit = 64 << 20
)

type producerConfig struct {
	batchCount  int
	batchBytes  int
	batchAge    time.Duration
	flowBytes   int
	nonBlocking bool
	compression hstreampb.CompressionType
}

func defaultProducerConfig() producerConfig {
	return producerConfig{
		batchCount: DefaultBatchRecordCountLimit,
		batchBytes: DefaultBatchBytesLimit,
		batchAge:   DefaultBatchAgeLimit,
		flowBytes:  DefaultFlowControlBytesLimit,
	}
}

// validate reports every option set to a value it cannot take, at once.
func (cfg *producerConfig) validate() error {
	var bad []string
	if cfg.batchCount < 1 {
		bad = append(bad, fmt.Sprintf("BatchRecordCountLimit(%d): want at least 1", cfg.batchCount))
	}
	if cfg.batchBytes < 1 {
		bad = append(bad, fmt.Sprintf("BatchBytesLimit(%d): want at least 1", cfg.batchBytes))
	}
	if cfg.batchAge <= 0 {
		bad = append(bad, fmt.Sprintf("BatchAgeLimit(%s): want more than 0", cfg.batchAge))
	}
	if cfg.flowBytes < 1 {
		bad = append(bad, fmt.Sprintf("FlowControlBytesLimit(%d): want at least 1", cfg.flowBytes))
	}
	if _, ok := hstreampb.CompressionType_name[int32(cfg.compression)]; !ok {
		bad = append(bad, fmt.Sprintf("Compression(%d): unknown compression type", cfg.compression))
	}
	if len(bad) > 0 {
		return fmt.Errorf("%w: %s", ErrInvalidArgument, strings.Join(bad, "; "))
	}
	return nil
}

// recordBytes is what a record counts for against BatchBytesLimit and
// FlowControlBytesLimit: its key, payload and attribute keys and values.
func recordBytes(r *Record) int {
	n := len(r.Key) + len(r.Payload)
	for k, v := range r.Attributes {
		n += len(k) + len(v)
	}
	return n
}

// BatchRecordCountLimit cuts a shard's batch when it holds n records.
// Default 100 (DefaultBatchRecordCountLimit); 1 sends every record on its
// own. Must be at least 1. Whichever of the three batch limits is reached
// first cuts the batch.
func BatchRecordCountLimit(n int) ProducerOpt {
	return producerOption(func(c *producerConfig) { c.batchCount = n })
}

// BatchBytesLimit cuts a shard's batch when its records reach n bytes,
// counting each record's len(Key)+len(Payload) and the lengths of its
// attribute keys and values (not the encoding's overhead, and before
// compression). A record that would take a non-empty batch past n starts
// the next batch; a record of n bytes or more travels alone. Default 1 MiB
// (DefaultBatchBytesLimit). Must be at least 1; keep it below the server's
// largest accepted batch.
func BatchBytesLimit(n int) ProducerOpt {
	return producerOption(func(c *producerConfig) { c.batchBytes = n })
}

// BatchAgeLimit cuts a shard's batch d after its first record entered it,
// however few records it holds: the longest a record waits in the buffer
// for company. Default 100 ms (DefaultBatchAgeLimit). Must be more than 0.
func BatchAgeLimit(d time.Duration) ProducerOpt {
	return producerOption(func(c *producerConfig) { c.batchAge = d })
}

// FlowControlBytesLimit bounds the record bytes (counted as for
// BatchBytesLimit) the producer holds across all shards: buffered, waiting
// to be sent, or in flight until their results resolve. At the limit
// Append blocks until enough bytes are released, or fails with
// ErrBufferFull under FlowControlNonBlocking; a record larger than the
// limit is refused. Default 64 MiB (DefaultFlowControlBytesLimit). Must be
// at least 1. When a blocked Append waits for bytes that only batches still
// being filled hold, those batches are cut and sent at once rather than at
// their age limit, so a limit below BatchBytesLimit (or below the bytes
// all shards' batches hold) gives smaller batches, not a stall. It counts
// record bytes, not
// memory: the producer's bookkeeping adds about 170 bytes per record.
func FlowControlBytesLimit(n int) ProducerOpt {
	return producerOption(func(c *producerConfig) { c.flowBytes = n })
}

// FlowControlNonBlocking makes Append fail at once with an error wrapping
// ErrBufferFull, instead of blocking, when the record does not fit under
// FlowControlBytesLimit; the caller may Flush, wait on earlier results, or
// drop the record. Default: Append blocks.
func FlowControlNonBlocking() ProducerOpt {
	return producerOption(func(c *producerConfig) { c.nonBlocking = true })
}
