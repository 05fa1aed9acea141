package wire

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math"
	"slices"
	"sync"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/weir-log/weir/api/hstreampb"
)

// MaxDecodedBytes is the hard ceiling on a decoded batch payload. DecodeBatch
// treats a maxDecodedBytes ≤ 0 or above it as MaxDecodedBytes, and the shared
// zstd decoder is built with it as its memory limit.
const MaxDecodedBytes = 1 << 30

const (
	// minScratch is the smallest decompression buffer worth allocating.
	minScratch = 4 << 10
	// maxPooledScratch: larger decompression buffers are left to the GC
	// rather than pinned in the pool.
	maxPooledScratch = 4 << 20
)

// EncodeBatch serializes records as a BatchHStreamRecords, compresses it per c
// and returns a BatchedRecord with compressionType, batchSize and payload set.
// publishTime is left nil for the caller. Gzip payloads are complete gzip
// members (with trailer); Zstd payloads are single frames that declare their
// content size.
//
// EncodeBatch does not keep or modify the records.
func EncodeBatch(records []*hstreampb.HStreamRecord, c hstreampb.CompressionType) (*hstreampb.BatchedRecord, error) {
	if len(records) == 0 {
		return nil, fmt.Errorf("%w: no records to encode", ErrEmptyBatch)
	}
	if uint64(len(records)) > math.MaxUint32 {
		return nil, fmt.Errorf("wire: %d records do not fit batchSize (uint32)", len(records))
	}
	for i, r := range records {
		if r == nil {
			return nil, fmt.Errorf("wire: record %d of %d is nil", i, len(records))
		}
	}
	batch := &hstreampb.BatchHStreamRecords{Records: records}

	var payload []byte
	switch c {
	case hstreampb.CompressionType_None:
		var err error
		if payload, err = proto.Marshal(batch); err != nil {
			return nil, fmt.Errorf("wire: marshal BatchHStreamRecords: %w", err)
		}
	case hstreampb.CompressionType_Gzip, hstreampb.CompressionType_Zstd:
		scratch := getScratch()
		raw, err := proto.MarshalOptions{}.MarshalAppend((*scratch)[:0], batch)
		if err != nil {
			putScratch(scratch, raw)
			return nil, fmt.Errorf("wire: marshal BatchHStreamRecords: %w", err)
		}
		if c == hstreampb.CompressionType_Gzip {
			payload, err = gzipEncode(raw)
		} else {
			payload, err = zstdEncode(raw)
		}
		putScratch(scratch, raw)
		if err != nil {
			return nil, err
		}
	default:
		return nil, fmt.Errorf("%w: compressionType %d", ErrUnknownCompression, int32(c))
	}
	return &hstreampb.BatchedRecord{
		CompressionType: c,
		BatchSize:       uint32(len(records)),
		Payload:         payload,
	}, nil
}

// DecodeBatch decompresses b.payload, unmarshals the BatchHStreamRecords in it
// and returns its records, checking that there are exactly b.batchSize.
//
// The decoded (decompressed) payload may hold at most maxDecodedBytes bytes,
// else ErrPayloadTooLarge; decompression stops at the limit, so a zip bomb
// costs at most about maxDecodedBytes of memory. maxDecodedBytes ≤ 0 means
// MaxDecodedBytes, and larger values are capped to it.
//
// Gzip payloads need not carry the gzip trailer: HStreamDB's Go client
// flushes its gzip writer but never closes it. A gzip stream that ends early
// after producing data is accepted and the protobuf decides; a bad header, a
// corrupt deflate stream or a present-but-wrong checksum is ErrCorruptPayload.
// Zstd payloads are one or more zstd frames.
//
// Keys and attributes must be valid UTF-8: they are proto3 strings, which
// protobuf-go checks, whereas HStreamDB never decodes payloads when appending
// and gpb (Erlang client) does not check. A server that must accept whatever
// HStreamDB accepts should not decode on its append path.
//
// Errors wrap ErrEmptyBatch, ErrUnknownCompression, ErrPayloadTooLarge,
// ErrCorruptPayload or ErrBatchSizeMismatch. The returned records do not alias
// b.payload.
func DecodeBatch(b *hstreampb.BatchedRecord, maxDecodedBytes int) ([]*hstreampb.HStreamRecord, error) {
	if b == nil {
		return nil, fmt.Errorf("%w: nil BatchedRecord", ErrEmptyBatch)
	}
	n := b.GetBatchSize()
	if n == 0 {
		return nil, fmt.Errorf("%w: batchSize is 0", ErrEmptyBatch)
	}
	payload := b.GetPayload()
	if len(payload) == 0 {
		return nil, fmt.Errorf("%w: payload is empty but batchSize is %d", ErrEmptyBatch, n)
	}
	limit := maxDecodedBytes
	if limit <= 0 || limit > MaxDecodedBytes {
		limit = MaxDecodedBytes
	}

	var (
		raw     []byte
		scratch *[]byte // pooled buffer behind raw, nil for None
		err     error
	)
	switch c := b.GetCompressionType(); c {
	case hstreampb.CompressionType_None:
		if len(payload) > limit {
			return nil, fmt.Errorf("%w: %d-byte payload exceeds the %d-byte limit", ErrPayloadTooLarge, len(payload), limit)
		}
		raw = payload // proto.Unmarshal copies bytes and strings out of its input
	case hstreampb.CompressionType_Gzip:
		scratch = getScratch()
		raw, err = gunzip(*scratch, payload, limit)
	case hstreampb.CompressionType_Zstd:
		scratch = getScratch()
		raw, err = unzstd(*scratch, payload, limit)
	default:
		return nil, fmt.Errorf("%w: compressionType %d", ErrUnknownCompression, int32(c))
	}
	var records []*hstreampb.HStreamRecord
	if err == nil {
		records, err = unmarshalRecords(raw, n)
	}
	if scratch != nil {
		putScratch(scratch, raw) // records own copies of what they keep
	}
	if err != nil {
		return nil, err
	}
	return records, nil
}

// unmarshalRecords counts the top-level records first, so that a wrong
// batchSize is refused before any record is allocated and the result slice is
// allocated once.
func unmarshalRecords(raw []byte, batchSize uint32) ([]*hstreampb.HStreamRecord, error) {
	count, err := countRecords(raw)
	if err != nil {
		return nil, err
	}
	if count != uint64(batchSize) {
		return nil, fmt.Errorf("%w: batchSize %d but payload holds %d records", ErrBatchSizeMismatch, batchSize, count)
	}
	// count ≤ len(raw)/2: every record costs at least a tag and a length.
	batch := hstreampb.BatchHStreamRecords{Records: make([]*hstreampb.HStreamRecord, 0, count)}
	if err := (proto.UnmarshalOptions{Merge: true}).Unmarshal(raw, &batch); err != nil {
		return nil, fmt.Errorf("%w: BatchHStreamRecords: %v", ErrCorruptPayload, err)
	}
	if uint64(len(batch.Records)) != count { // unreachable unless the schema changes
		return nil, fmt.Errorf("%w: batchSize %d but payload holds %d records", ErrBatchSizeMismatch, batchSize, len(batch.Records))
	}
	return batch.Records, nil
}

// countRecords counts field 1 (records) of a serialized BatchHStreamRecords,
// skipping other fields, and checks the top-level framing.
func countRecords(raw []byte) (uint64, error) {
	var count uint64
	for off := 0; off < len(raw); {
		num, typ, n := protowire.ConsumeTag(raw[off:])
		if n < 0 {
			return 0, fmt.Errorf("%w: BatchHStreamRecords: bad tag at byte %d: %v", ErrCorruptPayload, off, protowire.ParseError(n))
		}
		m := protowire.ConsumeFieldValue(num, typ, raw[off+n:])
		if m < 0 {
			return 0, fmt.Errorf("%w: BatchHStreamRecords: field %d at byte %d: %v", ErrCorruptPayload, num, off, protowire.ParseError(m))
		}
		if num == 1 && typ == protowire.BytesType {
			count++
		}
		off += n + m
	}
	return count, nil
}

// Decompression buffers. Unmarshal copies what it keeps, so a buffer goes
// back to the pool as soon as the records are built.
var scratchPool = sync.Pool{New: func() any { return new([]byte) }}

func getScratch() *[]byte { return scratchPool.Get().(*[]byte) }

func putScratch(p *[]byte, b []byte) {
	if cap(b) > maxPooledScratch {
		b = nil
	}
	*p = b[:0]
	scratchPool.Put(p)
}

// readBounded reads r to its end into dst[:0], growing dst geometrically
// (first to about hint bytes), and stops with ErrPayloadTooLarge as soon as
// more than limit bytes have come out. Otherwise it returns the error that
// ended the stream, nil for io.EOF, for the caller to judge.
func readBounded(r io.Reader, dst []byte, hint, limit int, what string) ([]byte, error) {
	dst = dst[:0]
	for {
		if len(dst) == cap(dst) {
			// Room for at most limit+1 bytes: one byte past the limit proves
			// it is passed.
			dst = slices.Grow(dst, min(max(cap(dst), hint, minScratch), limit+1-len(dst)))
		}
		n, err := r.Read(dst[len(dst):min(cap(dst), limit+1)])
		dst = dst[:len(dst)+n]
		if len(dst) > limit {
			return dst, fmt.Errorf("%w: %s payload inflates past %d bytes", ErrPayloadTooLarge, what, limit)
		}
		if err == io.EOF {
			return dst, nil
		}
		if err != nil {
			return dst, err
		}
	}
}

// gzipDecoder pairs a reusable gzip.Reader with the bytes.Reader it reads
// from (a flate.Reader, so gzip adds no bufio layer).
type gzipDecoder struct {
	src bytes.Reader
	zr  gzip.Reader
}

var gzipDecoders = sync.Pool{New: func() any { return new(gzipDecoder) }}

// gunzip inflates the gzip member(s) in src into dst[:0], failing once the
// output passes limit. A stream that ends early after producing data is
// accepted: hstreamdb-go flushes its gzip writer but never closes it.
func gunzip(dst, src []byte, limit int) ([]byte, error) {
	d := gzipDecoders.Get().(*gzipDecoder)
	defer func() {
		d.src.Reset(nil)
		gzipDecoders.Put(d)
	}()
	d.src.Reset(src)
	if err := d.zr.Reset(&d.src); err != nil {
		return dst[:0], fmt.Errorf("%w: gzip header: %v", ErrCorruptPayload, err)
	}
	dst, err := readBounded(&d.zr, dst, 4*len(src), limit, "gzip")
	switch {
	case err == nil:
		return dst, nil
	case errors.Is(err, ErrPayloadTooLarge):
		return dst, err
	case err == io.ErrUnexpectedEOF && len(dst) > 0:
		// Flushed but not closed: no final block, or no trailer.
		return dst, nil
	case err == io.ErrUnexpectedEOF:
		return dst, fmt.Errorf("%w: gzip stream ends before any data", ErrCorruptPayload)
	default:
		return dst, fmt.Errorf("%w: gzip: %v", ErrCorruptPayload, err)
	}
}

var gzipEncoders = sync.Pool{New: func() any { return gzip.NewWriter(io.Discard) }}

func gzipEncode(raw []byte) ([]byte, error) {
	var out bytes.Buffer
	out.Grow(len(raw)/2 + 64)
	zw := gzipEncoders.Get().(*gzip.Writer)
	zw.Reset(&out)
	_, err := zw.Write(raw)
	if err == nil {
		err = zw.Close()
	}
	zw.Reset(io.Discard) // drop the reference to out
	gzipEncoders.Put(zw)
	if err != nil {
		return nil, fmt.Errorf("wire: gzip: %w", err)
	}
	return out.Bytes(), nil
}

// Zstd payloads take one of two paths.
//
// Frames that declare their content size (EncodeAll, libzstd's
// ZSTD_compress: every known HStreamDB client) are decoded in one DecodeAll
// call by a shared decoder into a buffer of exactly the declared total, after
// checking the total against the limit; the decoder enforces each frame's
// declared size, so nothing more can come out.
//
// A payload with any frame that does not declare its size (streaming
// encoders) is read through a pooled single-goroutine streaming decoder with
// the same bounded loop as gzip, so decompression stops at the limit.
//
// Rejected: one shared decoder with WithDecodeAllCapLimit and cap(dst) as the
// limit. When that cap is hit inside a block, the decoder reports a generic
// "output bigger than max block size" error rather than
// ErrDecoderSizeExceeded, so a bomb could not be told from corruption, and it
// prints to stderr; it also needs a limit-sized buffer up front.
var (
	zstdDecoder = sync.OnceValues(func() (*zstd.Decoder, error) {
		return zstd.NewReader(nil,
			zstd.WithDecoderConcurrency(0),
			zstd.WithDecoderMaxMemory(MaxDecodedBytes),
		)
	})
	zstdEncoder = sync.OnceValues(func() (*zstd.Encoder, error) {
		return zstd.NewWriter(nil)
	})
)

// zstdStreamWindow caps the window of frames that do not declare their size,
// and so the memory of each pooled streaming decoder. 8 MiB is what the zstd
// format recommends every decoder support.
const zstdStreamWindow = 8 << 20

type zstdStreamDecoder struct {
	src bytes.Reader
	dec *zstd.Decoder
	err error // from zstd.NewReader; options are constant, so never expected
}

var zstdStreamDecoders = sync.Pool{New: func() any {
	d := new(zstdStreamDecoder)
	d.dec, d.err = zstd.NewReader(nil,
		zstd.WithDecoderConcurrency(1), // synchronous: no goroutines, safe to drop
		zstd.WithDecoderMaxMemory(MaxDecodedBytes),
		zstd.WithDecoderMaxWindow(zstdStreamWindow),
		zstd.WithDecodeBuffersBelow(0), // never decode the whole input in one go
	)
	return d
}}

// unzstd decodes the zstd frames in src into dst[:0], failing if they hold
// more than limit bytes.
func unzstd(dst, src []byte, limit int) ([]byte, error) {
	total, declared := zstdDeclaredSize(src)
	if !declared {
		return unzstdStream(dst, src, limit)
	}
	if total > uint64(limit) {
		return dst[:0], fmt.Errorf("%w: zstd frames declare %d bytes, past the %d-byte limit", ErrPayloadTooLarge, total, limit)
	}
	dec, err := zstdDecoder()
	if err != nil {
		return dst[:0], fmt.Errorf("wire: zstd decoder: %w", err)
	}
	if uint64(cap(dst)) < total {
		dst = make([]byte, 0, total)
	}
	out, err := dec.DecodeAll(src, dst[:0])
	switch {
	case err == nil && len(out) > limit: // unreachable: frames are held to their declared sizes
		return out, fmt.Errorf("%w: zstd payload inflates to %d bytes, past the %d-byte limit", ErrPayloadTooLarge, len(out), limit)
	case err == nil:
		return out, nil
	default:
		// Including size and window errors: within the limit, they mean a
		// frame contradicts its own declared size.
		return dst[:0], fmt.Errorf("%w: zstd: %v", ErrCorruptPayload, err)
	}
}

func unzstdStream(dst, src []byte, limit int) ([]byte, error) {
	d := zstdStreamDecoders.Get().(*zstdStreamDecoder)
	if d.err != nil {
		return dst[:0], fmt.Errorf("wire: zstd stream decoder: %w", d.err)
	}
	defer func() {
		d.src.Reset(nil)
		_ = d.dec.Reset(nil) // drop the reference to src; returns nil for a nil reader
		zstdStreamDecoders.Put(d)
	}()
	d.src.Reset(src)
	if err := d.dec.Reset(&d.src); err != nil {
		return dst[:0], fmt.Errorf("%w: zstd: %v", ErrCorruptPayload, err)
	}
	dst, err := readBounded(d.dec, dst, 8*len(src), limit, "zstd")
	switch {
	case err == nil:
		return dst, nil
	case errors.Is(err, ErrPayloadTooLarge):
		return dst, err
	case errors.Is(err, zstd.ErrWindowSizeExceeded), errors.Is(err, zstd.ErrDecoderSizeExceeded):
		return dst, fmt.Errorf("%w: zstd: %v (limit for frames without a declared size: %d-byte window)", ErrPayloadTooLarge, err, zstdStreamWindow)
	default:
		return dst, fmt.Errorf("%w: zstd: %v", ErrCorruptPayload, err)
	}
}

// zstdDeclaredSize walks the frames in src without decoding them and returns
// the sum of their declared content sizes. declared is false if any frame
// (skippable frames aside) does not declare its size, or src is not a
// well-formed sequence of frames; the streaming path then decides.
func zstdDeclaredSize(src []byte) (total uint64, declared bool) {
	for len(src) > 0 {
		var h zstd.Header
		rest, err := h.DecodeAndStrip(src)
		if err != nil {
			return 0, false
		}
		if h.Skippable {
			if uint64(len(rest)) < uint64(h.SkippableSize) {
				return 0, false
			}
			src = rest[h.SkippableSize:]
			continue
		}
		if !h.HasFCS || h.FrameContentSize > MaxDecodedBytes {
			// Past the ceiling the total is too large anyway; the streaming
			// path reports it without summing near overflow.
			return 0, false
		}
		total += h.FrameContentSize
		for last := false; !last; {
			if len(rest) < 3 {
				return 0, false
			}
			bh := uint32(rest[0]) | uint32(rest[1])<<8 | uint32(rest[2])<<16
			rest = rest[3:]
			last = bh&1 != 0
			size := int(bh >> 3)
			switch (bh >> 1) & 3 {
			case 0, 2: // raw, compressed
			case 1: // RLE: one byte repeated size times
				size = 1
			default: // reserved
				return 0, false
			}
			if len(rest) < size {
				return 0, false
			}
			rest = rest[size:]
		}
		if h.HasCheckSum {
			if len(rest) < 4 {
				return 0, false
			}
			rest = rest[4:]
		}
		src = rest
	}
	return total, true
}

func zstdEncode(raw []byte) ([]byte, error) {
	enc, err := zstdEncoder()
	if err != nil {
		return nil, fmt.Errorf("wire: zstd encoder: %w", err)
	}
	return enc.EncodeAll(raw, nil), nil
}
