package wire

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/weir-log/weir/api/hstreampb"
)

var compressions = []hstreampb.CompressionType{
	hstreampb.CompressionType_None,
	hstreampb.CompressionType_Gzip,
	hstreampb.CompressionType_Zstd,
}

// testRecords returns n records with keys, both flags, attributes on every
// third record and 0-byte payloads on every fifth.
func testRecords(n, payloadSize int) []*hstreampb.HStreamRecord {
	out := make([]*hstreampb.HStreamRecord, n)
	for i := range out {
		h := &hstreampb.HStreamRecordHeader{
			Flag: hstreampb.HStreamRecordHeader_Flag(i % 2),
			Key:  fmt.Sprintf("key-%d", i%7),
		}
		if i%3 == 0 {
			h.Attributes = map[string]string{"i": fmt.Sprint(i), "": "empty name"}
		}
		var p []byte
		if i%5 != 0 {
			p = bytes.Repeat([]byte{byte('a' + i%26)}, payloadSize)
		}
		out[i] = &hstreampb.HStreamRecord{Header: h, Payload: p}
	}
	return out
}

func marshalRecords(t testing.TB, records []*hstreampb.HStreamRecord) []byte {
	t.Helper()
	raw, err := proto.Marshal(&hstreampb.BatchHStreamRecords{Records: records})
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

func gzipBytes(t testing.TB, raw []byte, close bool) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	if _, err := zw.Write(raw); err != nil {
		t.Fatal(err)
	}
	var err error
	if close {
		err = zw.Close()
	} else {
		err = zw.Flush() // what hstreamdb-go does
	}
	if err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func zstdBytes(t testing.TB, raw []byte) []byte {
	t.Helper()
	enc, err := zstd.NewWriter(nil)
	if err != nil {
		t.Fatal(err)
	}
	defer enc.Close()
	return enc.EncodeAll(raw, nil)
}

// zstdStreamBytes writes raw through the streaming encoder, whose frames do
// not declare their content size when the data spans several blocks.
func zstdStreamBytes(t testing.TB, raw []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	enc, err := zstd.NewWriter(&buf)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := enc.Write(raw); err != nil {
		t.Fatal(err)
	}
	if err := enc.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// zstdRLEFrame hand-builds a frame of n RLE blocks of 128 KiB each (4 bytes
// per block on the wire). With declareSmall it claims a 16-byte content size.
func zstdRLEFrame(n int, declareSmall bool) []byte {
	f := []byte{0x28, 0xb5, 0x2f, 0xfd}
	if declareSmall {
		f = append(f, 0x20, 16) // single segment, 1-byte FCS
	} else {
		f = append(f, 0x00, (17-10)<<3) // window 128 KiB, no FCS
	}
	for i := range n {
		bh := uint32(1)<<1 | uint32(128<<10)<<3 // RLE, 128 KiB
		if i == n-1 {
			bh |= 1
		}
		f = append(f, byte(bh), byte(bh>>8), byte(bh>>16), 'x')
	}
	return f
}

// zstdHugeWindowFrame declares a 1 GiB window and no content size.
func zstdHugeWindowFrame() []byte {
	return []byte{0x28, 0xb5, 0x2f, 0xfd, 0x00, (30 - 10) << 3, 0x01 | 1<<1 | 8<<3, 0, 0, 'x'}
}

// badUTF8Key returns a serialized BatchHStreamRecords with one record whose
// key is the bytes ff fe.
func badUTF8Key() []byte {
	hdr := protowire.AppendBytes(protowire.AppendTag(nil, 3, protowire.BytesType), []byte{0xff, 0xfe})
	rec := protowire.AppendBytes(protowire.AppendTag(nil, 1, protowire.BytesType), hdr)
	return protowire.AppendBytes(protowire.AppendTag(nil, 1, protowire.BytesType), rec)
}

// zstdSkippable returns a skippable frame holding data.
func zstdSkippable(data []byte) []byte {
	n := len(data)
	return append([]byte{0x50, 0x2a, 0x4d, 0x18, byte(n), byte(n >> 8), byte(n >> 16), byte(n >> 24)}, data...)
}

func batch(c hstreampb.CompressionType, n uint32, payload []byte) *hstreampb.BatchedRecord {
	return &hstreampb.BatchedRecord{CompressionType: c, BatchSize: n, Payload: payload}
}

func requireSameRecords(t *testing.T, got, want []*hstreampb.HStreamRecord) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("got %d records, want %d", len(got), len(want))
	}
	for i := range want {
		if !proto.Equal(got[i], want[i]) {
			t.Fatalf("record %d = %v, want %v", i, got[i], want[i])
		}
	}
}

func TestBatchRoundTrip(t *testing.T) {
	sets := map[string][]*hstreampb.HStreamRecord{
		"one empty record":      {{}},
		"empty header":          {{Header: &hstreampb.HStreamRecordHeader{}}},
		"empty key and payload": {{Header: &hstreampb.HStreamRecordHeader{Flag: hstreampb.HStreamRecordHeader_RAW}, Payload: []byte{}}},
		"mixed 100":             testRecords(100, 100),
		"large":                 testRecords(20, 300<<10),
	}
	for name, records := range sets {
		for _, c := range compressions {
			t.Run(name+"/"+c.String(), func(t *testing.T) {
				b, err := EncodeBatch(records, c)
				if err != nil {
					t.Fatal(err)
				}
				if b.CompressionType != c || b.BatchSize != uint32(len(records)) || len(b.Payload) == 0 || b.PublishTime != nil {
					t.Fatalf("EncodeBatch set compressionType %v, batchSize %d, %d-byte payload, publishTime %v",
						b.CompressionType, b.BatchSize, len(b.Payload), b.PublishTime)
				}
				// Survives a trip over the wire.
				wireBytes, err := proto.Marshal(b)
				if err != nil {
					t.Fatal(err)
				}
				var back hstreampb.BatchedRecord
				if err := proto.Unmarshal(wireBytes, &back); err != nil {
					t.Fatal(err)
				}
				got, err := DecodeBatch(&back, 16<<20)
				if err != nil {
					t.Fatal(err)
				}
				requireSameRecords(t, got, records)
			})
		}
	}
}

func TestEncodeBatchErrors(t *testing.T) {
	if _, err := EncodeBatch(nil, hstreampb.CompressionType_None); !errors.Is(err, ErrEmptyBatch) {
		t.Errorf("no records: %v", err)
	}
	_, err := EncodeBatch([]*hstreampb.HStreamRecord{{}, nil}, hstreampb.CompressionType_Gzip)
	if err == nil || !strings.Contains(err.Error(), "record 1 of 2 is nil") {
		t.Errorf("nil record: %v", err)
	}
	_, err = EncodeBatch(testRecords(1, 1), 7)
	if !errors.Is(err, ErrUnknownCompression) || !strings.Contains(err.Error(), "compressionType 7") {
		t.Errorf("compression 7: %v", err)
	}
}

// hstreamdb-go flushes its gzip writer and never closes it, so there is no
// final block and no trailer. Other truncations of the trailer are accepted
// too; the protobuf and the record count decide.
func TestDecodeGzipWithoutTrailer(t *testing.T) {
	records := testRecords(10, 50)
	raw := marshalRecords(t, records)
	closed := gzipBytes(t, raw, true)
	for name, payload := range map[string][]byte{
		"flushed, not closed":  gzipBytes(t, raw, false),
		"closed, no trailer":   closed[:len(closed)-8],
		"closed, half trailer": closed[:len(closed)-4],
	} {
		t.Run(name, func(t *testing.T) {
			got, err := DecodeBatch(batch(hstreampb.CompressionType_Gzip, 10, payload), 1<<20)
			if err != nil {
				t.Fatal(err)
			}
			requireSameRecords(t, got, records)
		})
	}
	// A stream cut inside the deflate data still yields data, but the
	// protobuf is then truncated.
	flushed := gzipBytes(t, raw, false)
	_, err := DecodeBatch(batch(hstreampb.CompressionType_Gzip, 10, flushed[:len(flushed)/2]), 1<<20)
	if !errors.Is(err, ErrCorruptPayload) && !errors.Is(err, ErrBatchSizeMismatch) {
		t.Errorf("gzip cut in half: %v", err)
	}
}

func TestDecodeBatchErrors(t *testing.T) {
	const n = 10
	records := testRecords(n, 100)
	raw := marshalRecords(t, records)
	gz := gzipBytes(t, raw, true)
	zs := zstdBytes(t, raw)

	badCRC := bytes.Clone(gz)
	badCRC[len(badCRC)-8] ^= 0xff
	badDeflate := bytes.Clone(gz[:10])
	badDeflate = append(badDeflate, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff)
	badZstd := bytes.Clone(zs)
	badZstd[len(badZstd)/2] ^= 0xff
	zsNoMagic := bytes.Clone(zs)
	zsNoMagic[0] ^= 0xff

	bombRaw := make([]byte, 4<<20) // zeros: compresses ~1000:1
	limit := 1 << 20

	for _, tc := range []struct {
		name string
		b    *hstreampb.BatchedRecord
		is   error
		want string
	}{
		{"nil batch", nil, ErrEmptyBatch, "nil BatchedRecord"},
		{"batchSize 0", batch(0, 0, raw), ErrEmptyBatch, "batchSize is 0"},
		{"empty payload", batch(0, 3, nil), ErrEmptyBatch, "payload is empty but batchSize is 3"},
		{"compression 7", batch(7, n, raw), ErrUnknownCompression, "compressionType 7"},
		{"compression -1", batch(-1, n, raw), ErrUnknownCompression, "compressionType -1"},

		{"gzip: not gzip", batch(1, n, raw), ErrCorruptPayload, "gzip header"},
		{"gzip: bad deflate", batch(1, n, badDeflate), ErrCorruptPayload, "gzip:"},
		{"gzip: header only", batch(1, n, gz[:10]), ErrCorruptPayload, "ends before any data"},
		{"gzip: bad checksum", batch(1, n, badCRC), ErrCorruptPayload, "checksum"},
		{"gzip: garbage after member", batch(1, n, append(bytes.Clone(gz), "garbage!!!!"...)), ErrCorruptPayload, "gzip"},
		{"gzip: protobuf truncated", batch(1, n, gzipBytes(t, raw[:len(raw)-3], true)), ErrCorruptPayload, "BatchHStreamRecords"},

		{"zstd: not zstd", batch(2, n, raw), ErrCorruptPayload, "zstd"},
		{"zstd: bad magic", batch(2, n, zsNoMagic), ErrCorruptPayload, "zstd"},
		{"zstd: flipped byte", batch(2, n, badZstd), ErrCorruptPayload, "zstd"},
		{"zstd: truncated frame", batch(2, n, zs[:len(zs)-5]), ErrCorruptPayload, "zstd"},
		{"zstd: protobuf truncated", batch(2, n, zstdBytes(t, raw[:len(raw)-3])), ErrCorruptPayload, "BatchHStreamRecords"},

		{"none: protobuf truncated", batch(0, n, raw[:len(raw)-3]), ErrCorruptPayload, "BatchHStreamRecords"},
		{"none: not protobuf", batch(0, n, []byte{0xff, 0xff, 0xff}), ErrCorruptPayload, "BatchHStreamRecords"},
		{"none: key not UTF-8", batch(0, 1, badUTF8Key()), ErrCorruptPayload, "invalid UTF-8"},
		{"none: batchSize too big", batch(0, n+1, raw), ErrBatchSizeMismatch, "batchSize 11 but payload holds 10 records"},
		{"gzip: batchSize too small", batch(1, n-1, gz), ErrBatchSizeMismatch, "batchSize 9 but payload holds 10 records"},
		{"zstd: batchSize huge", batch(2, 1<<32-1, zs), ErrBatchSizeMismatch, "batchSize 4294967295 but payload holds 10 records"},

		{"none: too large", batch(0, n, make([]byte, limit+1)), ErrPayloadTooLarge, "exceeds the 1048576-byte limit"},
		{"gzip: bomb", batch(1, 1, gzipBytes(t, bombRaw, true)), ErrPayloadTooLarge, "inflates past 1048576 bytes"},
		{"gzip: bomb, no trailer", batch(1, 1, gzipBytes(t, bombRaw, false)), ErrPayloadTooLarge, "inflates past"},
		{"zstd: bomb, declared size", batch(2, 1, zstdBytes(t, bombRaw)), ErrPayloadTooLarge, "zstd frames declare 4194304 bytes, past the 1048576-byte limit"},
		{"zstd: bomb, undeclared size", batch(2, 1, zstdStreamBytes(t, bombRaw)), ErrPayloadTooLarge, "zstd payload inflates past 1048576 bytes"},
		{"zstd: bomb in second frame", batch(2, 1, append(zstdBytes(t, raw), zstdBytes(t, bombRaw)...)), ErrPayloadTooLarge, "zstd frames declare"},
		{"zstd: undeclared bomb in second frame", batch(2, 1, append(zstdBytes(t, raw), zstdStreamBytes(t, bombRaw)...)), ErrPayloadTooLarge, "zstd payload inflates past"},
		{"zstd: RLE bomb, undeclared size", batch(2, 1, zstdRLEFrame(1000, false)), ErrPayloadTooLarge, "zstd payload inflates past"},
		{"zstd: RLE blocks past the declared size", batch(2, 1, zstdRLEFrame(1000, true)), ErrCorruptPayload, "zstd"},
		{"zstd: huge window, undeclared size", batch(2, 1, zstdHugeWindowFrame()), ErrPayloadTooLarge, "window"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := DecodeBatch(tc.b, limit)
			if got != nil || !errors.Is(err, tc.is) {
				t.Fatalf("DecodeBatch = %d records, %v; want %v", len(got), err, tc.is)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %q does not mention %q", err, tc.want)
			}
		})
	}
}

// A payload that decodes to exactly the limit is accepted; one byte less
// limit is not.
func TestDecodeBatchLimitIsInclusive(t *testing.T) {
	records := testRecords(50, 1000)
	raw := marshalRecords(t, records)
	payloads := map[hstreampb.CompressionType][]byte{
		hstreampb.CompressionType_None: raw,
		hstreampb.CompressionType_Gzip: gzipBytes(t, raw, false),
		hstreampb.CompressionType_Zstd: zstdBytes(t, raw),
	}
	for c, p := range payloads {
		if _, err := DecodeBatch(batch(c, 50, p), len(raw)); err != nil {
			t.Errorf("%v at limit %d: %v", c, len(raw), err)
		}
		if _, err := DecodeBatch(batch(c, 50, p), len(raw)-1); !errors.Is(err, ErrPayloadTooLarge) {
			t.Errorf("%v at limit %d: %v, want ErrPayloadTooLarge", c, len(raw)-1, err)
		}
	}
	// 0 means the package ceiling.
	if _, err := DecodeBatch(batch(0, 50, raw), 0); err != nil {
		t.Errorf("limit 0: %v", err)
	}
}

// Frames without a declared content size, and payloads of several frames,
// take the growing-buffer path.
func TestDecodeZstdUndeclaredSizeAndMultiFrame(t *testing.T) {
	records := testRecords(40, 20<<10) // ~800 KiB, several zstd blocks
	raw := marshalRecords(t, records)
	stream := zstdStreamBytes(t, raw)
	var hdr zstd.Header
	if err := hdr.Decode(stream); err != nil || hdr.HasFCS {
		t.Fatalf("streaming frame header: HasFCS=%v, err=%v; the test needs an undeclared size", hdr.HasFCS, err)
	}
	half := len(raw) / 2
	first, second := zstdBytes(t, raw[:half]), zstdBytes(t, raw[half:])
	for name, p := range map[string][]byte{
		"undeclared size":           stream,
		"two frames":                slices.Concat(first, second),
		"declared then undeclared":  slices.Concat(first, zstdStreamBytes(t, raw[half:])),
		"skippable frames around":   slices.Concat(zstdSkippable([]byte("meta")), first, zstdSkippable(nil), second),
		"empty frame then the data": slices.Concat(zstdBytesZeroFrame(t), zstdBytes(t, raw)),
	} {
		got, err := DecodeBatch(batch(hstreampb.CompressionType_Zstd, 40, p), 8<<20)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		requireSameRecords(t, got, records)
	}
}

// zstdBytesZeroFrame returns a frame with no content (FCS 0).
func zstdBytesZeroFrame(t testing.TB) []byte {
	t.Helper()
	enc, err := zstd.NewWriter(nil, zstd.WithZeroFrames(true))
	if err != nil {
		t.Fatal(err)
	}
	defer enc.Close()
	return enc.EncodeAll(nil, nil)
}

// Decoded records own their bytes: the payload (and pooled buffers) can be
// reused at once.
func TestDecodedRecordsDoNotAliasPayload(t *testing.T) {
	records := testRecords(5, 10)
	for _, c := range compressions {
		b, err := EncodeBatch(records, c)
		if err != nil {
			t.Fatal(err)
		}
		got, err := DecodeBatch(b, 1<<20)
		if err != nil {
			t.Fatal(err)
		}
		clear(b.Payload)
		for range 3 { // churn the pools
			if _, err := DecodeBatch(mustEncode(t, testRecords(5, 10), c), 1<<20); err != nil {
				t.Fatal(err)
			}
		}
		requireSameRecords(t, got, records)
	}
}

func mustEncode(t testing.TB, records []*hstreampb.HStreamRecord, c hstreampb.CompressionType) *hstreampb.BatchedRecord {
	t.Helper()
	b, err := EncodeBatch(records, c)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// Run with -race: the pools and the shared zstd coder are used concurrently.
func TestBatchConcurrent(t *testing.T) {
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for g := range 8 {
		wg.Go(func() {
			for i := range 30 {
				c := compressions[(g+i)%3]
				records := testRecords(1+i, 10*g)
				b, err := EncodeBatch(records, c)
				if err == nil {
					var got []*hstreampb.HStreamRecord
					got, err = DecodeBatch(b, 1<<20)
					if err == nil && len(got) != len(records) {
						err = fmt.Errorf("got %d records, want %d", len(got), len(records))
					}
				}
				if err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

// benchRecords returns what clients send: n records of size bytes with a
// key and no attributes. Payloads are half fixed text, half random, so they
// compress about as well as log lines.
func benchRecords(n, size int) []*hstreampb.HStreamRecord {
	rng := rand.New(rand.NewPCG(7, 7))
	out := make([]*hstreampb.HStreamRecord, n)
	for i := range out {
		p := make([]byte, size)
		copy(p, fmt.Sprintf("level=info msg=\"request served\" seq=%d ", i))
		for j := size / 2; j < size; j++ {
			p[j] = byte('a' + rng.IntN(26))
		}
		out[i] = &hstreampb.HStreamRecord{
			Header:  &hstreampb.HStreamRecordHeader{Flag: hstreampb.HStreamRecordHeader_RAW, Key: fmt.Sprintf("device-%d", i%10)},
			Payload: p,
		}
	}
	return out
}

func BenchmarkDecodeBatch(b *testing.B) {
	records := benchRecords(100, 100)
	for _, c := range compressions {
		br := mustEncode(b, records, c)
		decoded := len(marshalRecords(b, records))
		b.Run(c.String(), func(b *testing.B) {
			b.SetBytes(int64(decoded))
			b.ReportAllocs()
			for b.Loop() {
				if _, err := DecodeBatch(br, 1<<20); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(len(br.Payload)), "payload-B")
		})
	}
}

func BenchmarkEncodeBatch(b *testing.B) {
	records := benchRecords(100, 100)
	for _, c := range compressions {
		b.Run(c.String(), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := EncodeBatch(records, c); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
