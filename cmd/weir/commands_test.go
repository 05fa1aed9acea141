package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"golang.org/x/crypto/bcrypt"
	"gopkg.in/yaml.v3"

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
	require.NoError(t, printRecord(client.ReceivedRecord{ID: &hstreampb.RecordId{ShardId: 1, BatchId: 2, BatchIndex: 3}, Key: "k", Payload: []byte("<ok>"), PublishTime: ts,
		Attributes: map[string]string{"mqtt.topic": "a/b"}}))
	require.NoError(t, printRecord(client.ReceivedRecord{ID: &hstreampb.RecordId{ShardId: 1, BatchId: 2, BatchIndex: 4}, Payload: []byte{0xff, 0x00}}))
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	require.Len(t, lines, 2)
	require.JSONEq(t, `{"id":"1-2-3","key":"k","payload":"<ok>","publishTime":"2024-05-01T12:00:00.005Z","attributes":{"mqtt.topic":"a/b"}}`, lines[0])
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

// runWeir runs the weir command line in-process with args and stdin, and
// returns what it wrote to stdout.
func runWeir(ctx context.Context, stdin string, args ...string) (string, error) {
	root := newRootCmd()
	var out bytes.Buffer
	root.SetArgs(args)
	root.SetIn(strings.NewReader(stdin))
	root.SetOut(&out)
	root.SetErr(io.Discard)
	err := root.ExecuteContext(ctx)
	return out.String(), err
}

func TestSubscriptionOpts(t *testing.T) {
	opts, err := subscriptionOpts(600*time.Second, 10000, "latest")
	require.NoError(t, err)
	require.Len(t, opts, 3)
	_, err = subscriptionOpts(time.Second, 1, "EARLIEST")
	require.NoError(t, err)

	for _, tc := range []struct {
		ackTimeout time.Duration
		maxUnacked int
		offset     string
		want       string
	}{
		{0, 1, "latest", "--ack-timeout 0s: want a whole number of seconds, from 1s to 2147483647s"},
		{1500 * time.Millisecond, 1, "latest", "--ack-timeout 1.5s: want a whole number of seconds"},
		{-time.Second, 1, "latest", "--ack-timeout -1s: want a whole number of seconds"},
		{(1 << 31) * time.Second, 1, "latest", "--ack-timeout 596523h14m8s: want a whole number of seconds"},
		{time.Second, 0, "latest", "--max-unacked 0: want 1 to 2147483647"},
		{time.Second, 1 << 31, "latest", "--max-unacked 2147483648: want 1 to 2147483647"},
		{time.Second, 1, "middle", `--offset "middle": want earliest or latest`},
		{time.Second, 1, "", `--offset "": want earliest or latest`},
	} {
		_, err := subscriptionOpts(tc.ackTimeout, tc.maxUnacked, tc.offset)
		require.ErrorContains(t, err, tc.want)
	}
}

func TestDefaultConsumerName(t *testing.T) {
	name := defaultConsumerName()
	require.Regexp(t, regexp.MustCompile(`^weir-consume-[A-Za-z0-9_-]+-[0-9]+$`), name)
	require.True(t, strings.HasSuffix(name, "-"+strconv.Itoa(os.Getpid())), name)
}

// TestSubscriptionFlagErrors checks that bad flags are refused before any
// server is dialed: --addr points where nothing listens.
func TestSubscriptionFlagErrors(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"sub", "create", "x"}, `required flag(s) "stream" not set`},
		{[]string{"sub", "create", "x", "--stream", ""}, `--stream "": want the stream to subscribe to`},
		{[]string{"sub", "create", "--stream", "s"}, "sub create: want exactly one SUB argument, got 0"},
		{[]string{"sub", "create", "x", "--stream", "s", "--offset", "middle"}, `--offset "middle": want earliest or latest`},
		{[]string{"sub", "create", "x", "--stream", "s", "--ack-timeout", "1500ms"}, "--ack-timeout 1.5s: want a whole number of seconds"},
		{[]string{"sub", "create", "x", "--stream", "s", "--max-unacked", "0"}, "--max-unacked 0: want 1 to"},
		{[]string{"sub", "get"}, "sub get: want exactly one SUB argument, got 0"},
		{[]string{"sub", "delete", "a", "b"}, "sub delete: want exactly one SUB argument, got 2"},
		{[]string{"sub", "consumers"}, "sub consumers: want exactly one SUB argument, got 0"},
		{[]string{"sub", "list", "x"}, `unknown command "x"`},
		{[]string{"consume"}, "consume: want exactly one SUB argument, got 0"},
		{[]string{"consume", "s", "--max", "-1"}, "--max -1: want 0 (no limit) or more"},
		{[]string{"consume", "s", "--format", "yaml"}, `--format "yaml": want text or json`},
		{[]string{"consume", "s", "--consumer", ""}, `--consumer "": want a consumer name`},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			_, err := runWeir(t.Context(), "", append(tc.args, "--addr", "127.0.0.1:1")...)
			require.ErrorContains(t, err, tc.want)
		})
	}
}

func TestPrintSubscriptions(t *testing.T) {
	var buf bytes.Buffer
	require.NoError(t, printSubscriptions(&buf, []*hstreampb.Subscription{{
		SubscriptionId: "alerts", StreamName: "sensors", AckTimeoutSeconds: 30, MaxUnackedRecords: 100, Offset: hstreampb.SpecialOffset_EARLIEST,
	}}))
	require.Equal(t, "ID      STREAM   ACK-TIMEOUT  MAX-UNACKED  OFFSET    CREATED\n"+
		"alerts  sensors  30s          100          earliest  -\n", buf.String())

	buf.Reset()
	require.NoError(t, printSubscriptionOffsets(&buf, []*hstreampb.SubscriptionOffset{{ShardId: 9, BatchId: 4}, {ShardId: 2, BatchId: 11}}))
	require.Equal(t, "SHARD  BATCH\n2      11\n9      4\n", buf.String(), "by shard id")
}

func TestMQTTPasswd(t *testing.T) {
	root := newRootCmd()
	var out bytes.Buffer
	root.SetOut(&out)
	root.SetIn(strings.NewReader("s3cret\n"))
	root.SetArgs([]string{"mqtt", "passwd", "device1"})
	require.NoError(t, root.Execute())
	var users []struct{ Username, Password string }
	require.NoError(t, yaml.Unmarshal(out.Bytes(), &users), out.String())
	require.Len(t, users, 1)
	require.Equal(t, "device1", users[0].Username)
	require.NoError(t, bcrypt.CompareHashAndPassword([]byte(users[0].Password), []byte("s3cret")))

	root = newRootCmd()
	root.SetOut(io.Discard)
	root.SetIn(strings.NewReader(""))
	root.SetArgs([]string{"mqtt", "passwd", "device1"})
	require.ErrorContains(t, root.Execute(), "no password on stdin")
}
