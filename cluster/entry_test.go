package cluster

import (
	"bytes"
	"encoding/binary"
	"errors"
	"math"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestEntryRoundTrip(t *testing.T) {
	for _, tc := range []struct {
		name  string
		batch []byte
		ms    int64
		id    uint64
	}{
		{"empty batch", nil, 0, 0},
		{"small", []byte("hello"), 1_700_000_000_123, 1<<48 | 7},
		{"max values", bytes.Repeat([]byte{0xff}, 300), math.MaxInt64, math.MaxUint64},
		{"negative time", []byte{0}, -1, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			data := newEntryData(tc.batch)
			require.Len(t, data, entryHeaderBytes+len(tc.batch))
			assert.Equal(t, entryRecords, data[0])
			assert.Equal(t, make([]byte, 16), data[1:entryHeaderBytes], "time and id are zero until stamped")

			stampEntry(data, tc.ms, tc.id)
			assert.Equal(t, uint64(tc.ms), binary.BigEndian.Uint64(data[1:9]), "append time, big endian")
			assert.Equal(t, tc.id, binary.BigEndian.Uint64(data[9:17]), "proposal id, big endian")

			ms, id, batch, ok, err := decodeEntry(data)
			require.NoError(t, err)
			require.True(t, ok)
			assert.Equal(t, tc.ms, ms)
			assert.Equal(t, tc.id, id)
			assert.Equal(t, len(tc.batch), len(batch))
			assert.True(t, bytes.Equal(tc.batch, batch), "batch %q, want %q", batch, tc.batch)
		})
	}
}

func TestEntryDataCopiesBatch(t *testing.T) {
	batch := []byte("abc")
	data := newEntryData(batch)
	batch[0] = 'X'
	_, _, got, ok, err := decodeEntry(data)
	require.NoError(t, err)
	require.True(t, ok)
	assert.Equal(t, []byte("abc"), got, "the entry must not alias the caller's batch")
}

func TestDecodeEntryNotRecords(t *testing.T) {
	for _, data := range [][]byte{nil, {}} {
		ms, id, batch, ok, err := decodeEntry(data)
		require.NoError(t, err)
		assert.False(t, ok)
		assert.Zero(t, ms)
		assert.Zero(t, id)
		assert.Nil(t, batch)
	}
}

func TestDecodeEntryCorrupt(t *testing.T) {
	valid := newEntryData([]byte("payload"))
	stampEntry(valid, 42, 43)
	unknown := bytes.Clone(valid)
	unknown[0] = 2
	for _, tc := range []struct {
		name string
		data []byte
	}{
		{"unknown kind 0", []byte{0}},
		{"unknown kind 2, full length", unknown},
		{"unknown kind 0xff", []byte{0xff, 1, 2, 3}},
		{"kind only", []byte{entryRecords}},
		{"header one byte short", valid[:entryHeaderBytes-1]},
		{"time without id", valid[:9]},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ms, id, batch, ok, err := decodeEntry(tc.data)
			require.Error(t, err)
			assert.True(t, errors.Is(err, ErrCorruptEntry), "err = %v", err)
			assert.False(t, ok)
			assert.Zero(t, ms)
			assert.Zero(t, id)
			assert.Nil(t, batch)
		})
	}
	// Exactly a header: a record entry with an empty batch.
	ms, id, batch, ok, err := decodeEntry(valid[:entryHeaderBytes])
	require.NoError(t, err)
	require.True(t, ok)
	assert.Equal(t, int64(42), ms)
	assert.Equal(t, uint64(43), id)
	assert.Empty(t, batch)
}

func TestMsTime(t *testing.T) {
	at := msTime(1_700_000_000_123)
	assert.Equal(t, int64(1_700_000_000_123), at.UnixMilli())
	assert.Equal(t, 123*time.Millisecond, time.Duration(at.Nanosecond()))
}

// FuzzDecodeEntry checks that decodeEntry never panics, that it classifies
// every input one way only, and that what it accepts re-encodes to the same
// bytes.
func FuzzDecodeEntry(f *testing.F) {
	f.Add([]byte{})
	f.Add([]byte{entryRecords})
	f.Add([]byte{2, 0, 0})
	seed := newEntryData([]byte("batch"))
	stampEntry(seed, 1_700_000_000_000, 1<<48|1)
	f.Add(seed)
	f.Fuzz(func(t *testing.T, data []byte) {
		ms, id, batch, ok, err := decodeEntry(data)
		switch {
		case err != nil:
			if !errors.Is(err, ErrCorruptEntry) {
				t.Fatalf("error %v is not ErrCorruptEntry", err)
			}
			if ok {
				t.Fatal("ok with an error")
			}
			if len(data) == 0 || (data[0] == entryRecords && len(data) >= entryHeaderBytes) {
				t.Fatalf("%x rejected: %v", data, err)
			}
		case !ok:
			if len(data) != 0 {
				t.Fatalf("%x: neither records nor an error", data)
			}
		default:
			if len(batch) != len(data)-entryHeaderBytes {
				t.Fatalf("batch of %d bytes from %d bytes of data", len(batch), len(data))
			}
			again := newEntryData(batch)
			stampEntry(again, ms, id)
			if !bytes.Equal(again, data) {
				t.Fatalf("re-encoded %x, want %x", again, data)
			}
		}
	})
}
