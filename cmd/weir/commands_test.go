package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/weir-log/weir/api/hstreampb"
	"github.com/weir-log/weir/client"
)

func TestParseFrom(t *testing.T) {
	at := func(t time.Time) *hstreampb.StreamOffset { return client.AtTime(t) }
	for _, tc := range []struct {
		in     string
		stream *hstreampb.StreamOffset
		record *hstreampb.RecordId
	}{
		{"earliest", client.Earliest(), nil},
		{"LATEST", client.Latest(), nil},
		{"2024-05-01T12:00:00Z", at(time.Date(2024, 5, 1, 12, 0, 0, 0, time.UTC)), nil},
		{"2024-05-01T14:00:00.250+02:00", at(time.Date(2024, 5, 1, 12, 0, 0, 250e6, time.UTC)), nil},
		{"1714564800000", at(time.UnixMilli(1714564800000)), nil},
		{"0", at(time.UnixMilli(0)), nil},
		{"3-1207-5", nil, &hstreampb.RecordId{ShardId: 3, BatchId: 1207, BatchIndex: 5}},
		{"0-0-0", nil, &hstreampb.RecordId{}},
	} {
		t.Run(tc.in, func(t *testing.T) {
			got, err := parseFrom(tc.in)
			require.NoError(t, err)
			if tc.record != nil {
				require.Nil(t, got.stream)
				require.Equal(t, tc.record.String(), got.record.String())
				return
			}
			require.Nil(t, got.record)
			require.Equal(t, tc.stream.String(), got.stream.String())
		})
	}

	for _, tc := range []struct{ in, want string }{
		{"", `--from "": want earliest`},
		{"yesterday", `--from "yesterday": want earliest, latest, a record id`},
		{"2024-05-01", `--from "2024-05-01": a record id has no leading zeros (did you mean 2024-5-1, or a time such as`},
		{"1-2-x", `--from "1-2-x"`},
		{"1-2-4294967296", `--from "1-2-4294967296"`},
		{"99999999999999999999", `--from "99999999999999999999": unix milliseconds out of range`},
		{"-5", `--from "-5": want earliest`},
		{"2024-05-01 12:00", `--from "2024-05-01 12:00"`},
	} {
		t.Run("bad "+tc.in, func(t *testing.T) {
			_, err := parseFrom(tc.in)
			require.ErrorContains(t, err, tc.want)
		})
	}
}

func TestParseCompression(t *testing.T) {
	for in, want := range map[string]hstreampb.CompressionType{
		"none": hstreampb.CompressionType_None,
		"gzip": hstreampb.CompressionType_Gzip,
		"ZSTD": hstreampb.CompressionType_Zstd,
	} {
		got, err := parseCompression(in)
		require.NoError(t, err, in)
		require.Equal(t, want, got, in)
	}
	for _, bad := range []string{"", "lz4", "snappy"} {
		_, err := parseCompression(bad)
		require.EqualError(t, err, `--compression "`+bad+`": want none, gzip or zstd`)
	}
}

func TestLineSource(t *testing.T) {
	src := newLineSource(strings.NewReader("a\r\nbb\n\nccc"), "k")
	recs, err := src.next(2)
	require.NoError(t, err)
	require.Equal(t, []client.Record{{Key: "k", Payload: []byte("a")}, {Key: "k", Payload: []byte("bb")}}, recs)
	recs, err = src.next(5)
	require.ErrorIs(t, err, io.EOF)
	require.Equal(t, []client.Record{{Key: "k", Payload: []byte{}}, {Key: "k", Payload: []byte("ccc")}}, recs)

	recs, err = newLineSource(strings.NewReader("x\n"), "").next(5)
	require.ErrorIs(t, err, io.EOF)
	require.Len(t, recs, 1, "a final newline makes no empty record")

	boom := errors.New("boom")
	_, err = newLineSource(io.MultiReader(strings.NewReader("x\n"), iotestErr{boom}), "").next(5)
	require.ErrorIs(t, err, boom)
	require.ErrorContains(t, err, "reading stdin")
}

type iotestErr struct{ err error }

func (r iotestErr) Read([]byte) (int, error) { return 0, r.err }

func TestSyntheticSource(t *testing.T) {
	src, err := newSyntheticSource(12, 5, 8)
	require.NoError(t, err)
	var all []client.Record
	for {
		recs, err := src.next(5)
		all = append(all, recs...)
		if errors.Is(err, io.EOF) {
			break
		}
		require.NoError(t, err)
	}
	require.Len(t, all, 12)
	for i, r := range all {
		require.Equal(t, "key-"+strconv.Itoa(i%5), r.Key)
		require.Len(t, r.Payload, 8)
		require.True(t, bytes.HasPrefix(r.Payload, []byte(strconv.Itoa(i)+" ")), "payload %q of record %d", r.Payload, i)
	}
	require.Equal(t, syntheticPayload(7, 8), all[7].Payload, "payloads are repeatable")

	require.Equal(t, []byte("123"), syntheticPayload(123, 3), "exactly the digits fit")

	for _, tc := range []struct {
		count, keys, size int
		want              string
	}{
		{0, 1, 8, "--count 0: want at least 1"},
		{10, 0, 8, "--keys 0: want at least 1"},
		{1000, 1, 2, "--size 2: too small to hold sequence numbers up to 999 (want at least 3)"},
	} {
		_, err := newSyntheticSource(tc.count, tc.keys, tc.size)
		require.EqualError(t, err, tc.want)
	}
}

func TestJSONRecord(t *testing.T) {
	ts := time.Date(2024, 5, 1, 12, 0, 0, 5e6, time.UTC)
	var buf bytes.Buffer
	printRecord, err := recordPrinter(&buf, "json")
	require.NoError(t, err)
	require.NoError(t, printRecord(client.ReceivedRecord{ID: &hstreampb.RecordId{ShardId: 1, BatchId: 2, BatchIndex: 3}, Key: "k", Payload: []byte("<ok>"), PublishTime: ts}))
	require.NoError(t, printRecord(client.ReceivedRecord{ID: &hstreampb.RecordId{ShardId: 1, BatchId: 2, BatchIndex: 4}, Payload: []byte{0xff, 0x00}}))
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	require.Len(t, lines, 2)
	require.JSONEq(t, `{"id":"1-2-3","key":"k","payload":"<ok>","publishTime":"2024-05-01T12:00:00.005Z"}`, lines[0])
	require.JSONEq(t, `{"id":"1-2-4","key":"","payload":"/wA=","payloadEncoding":"base64"}`, lines[1])
	var j jsonRecord
	require.NoError(t, json.Unmarshal([]byte(lines[0]), &j))

	buf.Reset()
	printRecord, err = recordPrinter(&buf, "text")
	require.NoError(t, err)
	require.NoError(t, printRecord(client.ReceivedRecord{ID: &hstreampb.RecordId{ShardId: 1, BatchId: 2}, Key: "k", Payload: []byte("hello")}))
	require.Equal(t, "1-2-0\tk\thello\n", buf.String())

	_, err = recordPrinter(&buf, "yaml")
	require.EqualError(t, err, `--format "yaml": want text or json`)
}
