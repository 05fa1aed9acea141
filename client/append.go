package client

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"sync"

	"github.com/weir-log/weir/api/hstreampb"
	"github.com/weir-log/weir/api/wire"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// Record is one record to append.
type Record struct {
	// Key is the partition key: it picks the shard (MD5 of the key within
	// the shards' hash ranges), and records with the same key keep their
	// order. "" is a legal key.
	Key     string
	Payload []byte
	// JSON marks Payload as HStreamDB's JSON record (HRecord: a serialized
	// google.protobuf.Struct). Default false: a RAW record of opaque bytes.
	// (A bool rather than HStreamDB's flag enum, whose zero value is JSON.)
	JSON bool
	// Attributes are optional header attributes, carried as they are.
	Attributes map[string]string
}

// Append appends records to a stream and returns their ids in the order of
// records.
//
// Each record goes to the shard whose hash range holds the MD5 of its key.
// The shards of each stream are fetched with ListShards on first use and
// cached; when the server answers NotFound for a shard (the stream was
// recreated, say), Append refreshes the stream's shards once and resends
// what failed. All records of one shard travel in one AppendRequest (one
// BatchedRecord, publishTime = now, compressed per Compression); requests to
// different shards are sent concurrently, so order holds per key, not
// across keys.
//
// An empty records slice is an error. On error some shards may have
// accepted their records: the returned slice (nil only for errors found
// before sending) holds their ids, and nil for records not appended. Server
// errors are gRPC status errors as received.
func (c *Client) Append(ctx context.Context, stream string, records []Record, opts ...AppendOpt) ([]*hstreampb.RecordId, error) {
	var cfg appendConfig
	for _, o := range opts {
		o.applyAppend(&cfg)
	}
	if len(records) == 0 {
		return nil, fmt.Errorf("%w: Append to stream %q: no records", ErrInvalidArgument, stream)
	}
	if _, ok := hstreampb.CompressionType_name[int32(cfg.compression)]; !ok {
		return nil, fmt.Errorf("%w: Append to stream %q: Compression(%d): unknown compression type", ErrInvalidArgument, stream, cfg.compression)
	}

	ids := make([]*hstreampb.RecordId, len(records))
	pending := make([]int, len(records))
	for i := range pending {
		pending[i] = i
	}
	sent := false // whether any request was made; decides if ids is returned
	for refresh := false; ; refresh = true {
		sm, err := c.shardMap(ctx, stream, refresh)
		if err != nil {
			if !sent {
				return nil, err
			}
			return ids, err
		}
		batches := route(sm, records, pending)
		c.sendBatches(ctx, stream, records, batches, cfg.compression, ids)
		sent = true

		retry, err := firstFailure(batches)
		if err == nil {
			return ids, nil
		}
		if !retry || refresh {
			return ids, err
		}
		pending = pending[:0]
		for _, b := range batches {
			if b.err != nil {
				pending = append(pending, b.idx...)
			}
		}
		slices.Sort(pending)
		c.logger.Info("shard not found, refreshing the stream's shards", "stream", stream, "err", err)
	}
}

// shardBatch is the part of one Append that goes to one shard.
type shardBatch struct {
	shard uint64
	idx   []int // positions in the caller's records, ascending
	err   error // outcome of sending it
}

// route groups the records at positions pending by shard, in shard id
// order.
func route(sm *wire.ShardMap, records []Record, pending []int) []*shardBatch {
	byShard := make(map[uint64]*shardBatch)
	var out []*shardBatch
	for _, i := range pending {
		id := sm.Lookup(records[i].Key)
		b := byShard[id]
		if b == nil {
			b = &shardBatch{shard: id}
			byShard[id] = b
			out = append(out, b)
		}
		b.idx = append(b.idx, i)
	}
	slices.SortFunc(out, func(a, b *shardBatch) int { return cmp.Compare(a.shard, b.shard) })
	return out
}

// sendBatches sends every batch, concurrently when there are several, and
// records each outcome in its err. Each batch writes only its own positions
// of ids.
func (c *Client) sendBatches(ctx context.Context, stream string, records []Record, batches []*shardBatch, comp hstreampb.CompressionType, ids []*hstreampb.RecordId) {
	if len(batches) == 1 {
		b := batches[0]
		b.err = c.appendShard(ctx, stream, records, b, comp, ids)
		return
	}
	var wg sync.WaitGroup
	for _, b := range batches {
		wg.Go(func() { b.err = c.appendShard(ctx, stream, records, b, comp, ids) })
	}
	wg.Wait()
}

func (c *Client) appendShard(ctx context.Context, stream string, records []Record, b *shardBatch, comp hstreampb.CompressionType, ids []*hstreampb.RecordId) error {
	recs := make([]*hstreampb.HStreamRecord, len(b.idx))
	for j, i := range b.idx {
		recs[j] = hstreamRecord(&records[i])
	}
	got, err := c.appendBatch(ctx, stream, b.shard, recs, comp)
	if err != nil {
		return err
	}
	for j, i := range b.idx {
		ids[i] = got[j]
	}
	return nil
}

// hstreamRecord returns r in its wire form; it shares r's payload and
// attributes.
func hstreamRecord(r *Record) *hstreampb.HStreamRecord {
	rec := new(hstreampb.HStreamRecord)
	fillRecord(rec, new(hstreampb.HStreamRecordHeader), r)
	return rec
}

// fillRecord sets the empty rec and hdr to r's wire form, hdr as rec's
// header. Append and the BufferedProducer (which allocates records in
// slabs) both convert records with it.
func fillRecord(rec *hstreampb.HStreamRecord, hdr *hstreampb.HStreamRecordHeader, r *Record) {
	hdr.Flag = hstreampb.HStreamRecordHeader_RAW
	if r.JSON {
		hdr.Flag = hstreampb.HStreamRecordHeader_JSON
	}
	hdr.Attributes = r.Attributes
	hdr.Key = r.Key
	rec.Header = hdr
	rec.Payload = r.Payload
}

// appendBatch sends recs to one shard as one AppendRequest (one
// BatchedRecord compressed per comp, publishTime now) through do, so it is
// routed and retried, and returns their ids in order. Append and the
// BufferedProducer both send through it.
func (c *Client) appendBatch(ctx context.Context, stream string, shard uint64, recs []*hstreampb.HStreamRecord, comp hstreampb.CompressionType) ([]*hstreampb.RecordId, error) {
	batch, err := wire.EncodeBatch(recs, comp)
	if err != nil {
		return nil, fmt.Errorf("client: Append to stream %q shard %d: encode %d records: %w", stream, shard, len(recs), err)
	}
	batch.PublishTime = timestamppb.Now()
	resp, err := call(ctx, c, shardOf(shard), hstreampb.HStreamApiClient.Append, &hstreampb.AppendRequest{
		StreamName: stream,
		ShardId:    shard,
		Records:    batch,
	})
	if err != nil {
		return nil, err
	}
	got := resp.GetRecordIds()
	if len(got) != len(recs) {
		return nil, fmt.Errorf("%w: Append to stream %q shard %d: sent %d records, got %d record ids", ErrBadResponse, stream, shard, len(recs), len(got))
	}
	return got, nil
}

// firstFailure returns the first error among batches (in shard order) and
// whether every failure was a missing shard, which a fresh shard map may
// cure.
func firstFailure(batches []*shardBatch) (retry bool, first error) {
	retry = true
	for _, b := range batches {
		if b.err == nil {
			continue
		}
		if first == nil {
			first = b.err
		}
		if !shardNotFound(b.err) {
			retry = false
		}
	}
	return first != nil && retry, first
}

// shardNotFound reports whether err is the server's NotFound for a shard,
// as opposed to one for the whole stream (which a refresh cannot cure).
func shardNotFound(err error) bool {
	if status.Code(err) != codes.NotFound {
		return false
	}
	code, ok := ErrorCode(err)
	return !ok || code != hstreampb.ErrorCode_StreamNotFound
}

// shardMap returns the routing table of stream: the cached one, unless
// refresh is set or there is none, in which case it fetches the shards.
func (c *Client) shardMap(ctx context.Context, stream string, refresh bool) (*wire.ShardMap, error) {
	if !refresh {
		c.mu.Lock()
		sm := c.shardMaps[stream]
		c.mu.Unlock()
		if sm != nil {
			return sm, nil
		}
	}
	shards, err := c.ListShards(ctx, stream)
	if err != nil {
		return nil, err
	}
	// Split shards stay listed as inactive; keys route to active ones only.
	active := make([]*hstreampb.Shard, 0, len(shards))
	for _, s := range shards {
		if s.GetIsActive() {
			active = append(active, s)
		}
	}
	if len(active) == 0 {
		return nil, fmt.Errorf("%w: stream %q has %d shards, none active", ErrBadResponse, stream, len(shards))
	}
	sm, err := wire.NewShardMap(active)
	if err != nil {
		return nil, fmt.Errorf("%w: shards of stream %q: %w", ErrBadResponse, stream, err)
	}
	c.mu.Lock()
	c.shardMaps[stream] = sm
	c.mu.Unlock()
	return sm, nil
}

// forgetShards drops the cached routing table of stream.
func (c *Client) forgetShards(stream string) {
	c.mu.Lock()
	delete(c.shardMaps, stream)
	c.mu.Unlock()
}
