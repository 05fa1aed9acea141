package client

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/weir-log/weir/api/hstreampb"
	"github.com/weir-log/weir/api/wire"
	"google.golang.org/grpc"
)

// maxDecodedBatchBytes bounds the decompressed size of one received batch,
// so a corrupt or hostile payload cannot exhaust memory.
const maxDecodedBatchBytes = 128 << 20

// ReceivedRecord is one record read back from a stream.
type ReceivedRecord struct {
	ID         *hstreampb.RecordId
	Key        string
	Payload    []byte
	Flag       hstreampb.HStreamRecordHeader_Flag
	Attributes map[string]string
	// PublishTime is when the server stored the record's batch
	// (millisecond precision); zero if the server did not say.
	PublishTime time.Time
}

// DecodeReceived unpacks one delivered batch into its records, pairing the
// i-th record id with the i-th record. It fails with ErrDataContaminated
// when batchSize, the number of ids and the number of records inside the
// payload disagree, and with the wire package's error (wire.ErrCorruptPayload,
// wire.ErrPayloadTooLarge past 128 MiB decoded, …) when the payload does not
// decode.
func DecodeReceived(rr *hstreampb.ReceivedRecord) ([]ReceivedRecord, error) {
	batch := rr.GetRecord()
	if batch == nil {
		return nil, fmt.Errorf("%w: received record has no batch", ErrBadResponse)
	}
	ids := rr.GetRecordIds()
	if uint64(len(ids)) != uint64(batch.GetBatchSize()) {
		return nil, fmt.Errorf("%w: batch has batchSize %d but %d record ids", ErrDataContaminated, batch.GetBatchSize(), len(ids))
	}
	if len(ids) == 0 {
		return nil, fmt.Errorf("%w: received an empty batch (batchSize 0)", ErrBadResponse)
	}
	recs, err := wire.DecodeBatch(batch, maxDecodedBatchBytes)
	switch {
	case errors.Is(err, wire.ErrBatchSizeMismatch):
		return nil, fmt.Errorf("%w: batch %s: %w", ErrDataContaminated, wire.FormatRecordID(ids[0]), err)
	case err != nil:
		return nil, fmt.Errorf("client: decode batch %s: %w", wire.FormatRecordID(ids[0]), err)
	case len(recs) != len(ids):
		return nil, fmt.Errorf("%w: batch %s holds %d records for %d record ids", ErrDataContaminated, wire.FormatRecordID(ids[0]), len(recs), len(ids))
	}
	var published time.Time
	if pt := batch.GetPublishTime(); pt != nil {
		published = pt.AsTime()
	}
	out := make([]ReceivedRecord, len(recs))
	for i, r := range recs {
		h := r.GetHeader()
		out[i] = ReceivedRecord{
			ID:          ids[i],
			Key:         h.GetKey(),
			Payload:     r.GetPayload(),
			Flag:        h.GetFlag(),
			Attributes:  h.GetAttributes(),
			PublishTime: published,
		}
	}
	return out, nil
}

// ReadStream reads every shard of a stream from one offset to another and
// calls fn for each record, in order within each shard; records of
// different shards interleave. from nil means Earliest(); until nil means
// no end: ReadStream follows the stream until ctx is done. maxBatches caps
// the number of batches read (0 = no cap).
//
// It returns nil when the server ends the read (every shard reached until,
// or maxBatches were read), ctx.Err() when ctx is done, fn's error as it is
// if fn fails, and server errors as gRPC status errors.
func (c *Client) ReadStream(ctx context.Context, stream string, from, until *hstreampb.StreamOffset, maxBatches uint64, fn func(ReceivedRecord) error) error {
	if fn == nil {
		return fmt.Errorf("%w: ReadStream %q: nil callback", ErrInvalidArgument, stream)
	}
	if from == nil {
		from = Earliest()
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	readerID := newReaderID()
	t := readerOf(readerID)
	defer c.forget(t) // a one-off reader: its lookup is not needed again
	api, addr, err := c.apiFor(ctx, t)
	if err != nil {
		return c.streamEnded(t, addr, ctxOr(ctx, err), false)
	}
	rs, err := api.ReadStream(ctx, &hstreampb.ReadStreamRequest{
		ReaderId:       readerID,
		StreamName:     stream,
		From:           from,
		Until:          until,
		MaxReadBatches: maxBatches,
	})
	fnErr := false
	if err != nil {
		err = ctxOr(ctx, err)
	} else {
		fnErr, err = consume(ctx, rs, nil, fn)
	}
	return c.streamEnded(t, addr, err, fnErr)
}

// ReadShardStream reads one shard of a stream from one offset to another
// and calls fn for each record, in order. from nil means ShardEarliest();
// when from is a record id (ShardAtRecord), records before it in its batch
// are skipped. until nil means no end: ReadShardStream follows the shard
// until ctx is done. maxBatches and the results are as for ReadStream.
func (c *Client) ReadShardStream(ctx context.Context, stream string, shardID uint64, from, until *hstreampb.ShardOffset, maxBatches uint64, fn func(ReceivedRecord) error) error {
	if fn == nil {
		return fmt.Errorf("%w: ReadShardStream %q shard %d: nil callback", ErrInvalidArgument, stream, shardID)
	}
	if from == nil {
		from = ShardEarliest()
	}
	var skip func(*hstreampb.RecordId) bool
	if start := from.GetRecordOffset(); start != nil {
		skip = func(id *hstreampb.RecordId) bool { return wire.CompareRecordID(id, start) < 0 }
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	t := shardOf(shardID)
	api, addr, err := c.apiFor(ctx, t)
	if err != nil {
		return c.streamEnded(t, addr, ctxOr(ctx, err), false)
	}
	rs, err := api.ReadShardStream(ctx, &hstreampb.ReadShardStreamRequest{
		ReaderId:       newReaderID(),
		ShardId:        shardID,
		From:           from,
		MaxReadBatches: maxBatches,
		Until:          until,
		StreamName:     stream,
	})
	fnErr := false
	if err != nil {
		err = ctxOr(ctx, err)
	} else {
		fnErr, err = consume(ctx, rs, skip, fn)
	}
	return c.streamEnded(t, addr, err, fnErr)
}

// streamEnded reports a read's retryable failure, so the next call looks
// the target up again, and returns what the read returns. An error of the
// caller's callback (fnErr) says nothing about the node.
func (c *Client) streamEnded(t target, addr string, err error, fnErr bool) error {
	if !fnErr && retryable(err) {
		c.failed(t, addr, err)
	}
	return err
}

// batchesResponse is what ReadStream and ReadShardStream responses share.
type batchesResponse[T any] interface {
	*T
	GetReceivedRecords() []*hstreampb.ReceivedRecord
}

// consume drains a read stream into fn, leaving out records skip accepts.
// fnErr tells an error of fn, returned as it is, from the stream's.
func consume[T any, PT batchesResponse[T]](ctx context.Context, rs grpc.ServerStreamingClient[T], skip func(*hstreampb.RecordId) bool, fn func(ReceivedRecord) error) (fnErr bool, err error) {
	for {
		resp, err := rs.Recv()
		if err == io.EOF {
			return false, nil
		}
		if err != nil {
			return false, ctxOr(ctx, err)
		}
		for _, rr := range PT(resp).GetReceivedRecords() {
			recs, err := DecodeReceived(rr)
			if err != nil {
				return false, err
			}
			for _, r := range recs {
				if skip != nil && skip(r.ID) {
					continue
				}
				if err := fn(r); err != nil {
					return true, err
				}
			}
		}
	}
}

// ctxOr returns ctx's error if ctx is done (the call failed because of
// it), else err.
func ctxOr(ctx context.Context, err error) error {
	if ctxErr := ctx.Err(); ctxErr != nil {
		return ctxErr
	}
	return err
}

// newReaderID names a one-off server-side reader. The server wants a letter
// first, then letters, digits, '-' or '_'.
func newReaderID() string {
	return "weir_read_" + rand.Text()
}

// CreateShardReader creates a server-side reader named readerID over one
// shard of stream, starting at from (nil = ShardEarliest()). timeoutMs is
// how long each ReadShard may wait for data before it returns empty.
func (c *Client) CreateShardReader(ctx context.Context, stream, readerID string, shardID uint64, from *hstreampb.ShardOffset, timeoutMs uint32) error {
	if from == nil {
		from = ShardEarliest()
	}
	_, err := call(ctx, c, readerOf(readerID), hstreampb.HStreamApiClient.CreateShardReader, &hstreampb.CreateShardReaderRequest{
		StreamName:  stream,
		ShardId:     shardID,
		ShardOffset: from,
		ReaderId:    readerID,
		Timeout:     timeoutMs,
	})
	return err
}

// ReadShard returns the next records of a shard reader, at most maxBatches
// batches of them; none if nothing arrived within the reader's timeout.
//
// A reader is a cursor the server moves before it answers, so ReadShard is
// not sent again after Unavailable (a lost answer would skip its records):
// the caller gets the error, and a reader it creates anew from the last
// record it got loses nothing. It is resent only after WrongServer, when
// the server did nothing.
func (c *Client) ReadShard(ctx context.Context, readerID string, maxBatches uint32) ([]ReceivedRecord, error) {
	var resp *hstreampb.ReadShardResponse
	// No attempt timeout: the server may wait up to the reader's own
	// timeout for records.
	err := c.try(ctx, readerOf(readerID), wrongServer, 0, func(ctx context.Context, api hstreampb.HStreamApiClient) error {
		var err error
		resp, err = api.ReadShard(ctx, &hstreampb.ReadShardRequest{ReaderId: readerID, MaxRecords: maxBatches})
		return err
	})
	if err != nil {
		return nil, err
	}
	var out []ReceivedRecord
	for _, rr := range resp.GetReceivedRecords() {
		recs, err := DecodeReceived(rr)
		if err != nil {
			return out, fmt.Errorf("shard reader %q: %w", readerID, err)
		}
		out = append(out, recs...)
	}
	return out, nil
}

// DeleteShardReader deletes a shard reader; an unknown id is an error.
func (c *Client) DeleteShardReader(ctx context.Context, readerID string) error {
	_, err := call(ctx, c, readerOf(readerID), hstreampb.HStreamApiClient.DeleteShardReader, &hstreampb.DeleteShardReaderRequest{ReaderId: readerID})
	if err == nil {
		c.forget(readerOf(readerID))
	}
	return err
}

// ListShardReaders returns the ids of the server's shard readers.
func (c *Client) ListShardReaders(ctx context.Context) ([]string, error) {
	resp, err := call(ctx, c, anyNode(), hstreampb.HStreamApiClient.ListShardReaders, &hstreampb.ListShardReadersRequest{})
	if err != nil {
		return nil, err
	}
	return resp.GetReaderId(), nil
}
