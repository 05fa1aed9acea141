package main

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/weir-log/weir/conf"
	"github.com/weir-log/weir/internal/nodetest"
)

// runBench runs `weir bench args…` in-process with a --addr flag as
// addClientCommands gives it, and returns stdout and stderr.
func runBench(ctx context.Context, args ...string) (string, string, error) {
	g := &clientFlags{}
	cmd := newBenchCmd(g)
	cmd.PersistentFlags().StringVar(&g.addr, "addr", defaultAddr, "server host:port")
	var out, errOut bytes.Buffer
	cmd.SetArgs(args)
	cmd.SetOut(&out)
	cmd.SetErr(&errOut)
	cmd.SilenceUsage = true
	err := cmd.ExecuteContext(ctx)
	return out.String(), errOut.String(), err
}

// benchReport is the JSON report's fields the tests check.
type benchReport struct {
	Mode      string         `json:"mode"`
	Count     int64          `json:"count"`
	Errors    int64          `json:"errors"`
	Rate      float64        `json:"rate"`
	Latencies int64          `json:"latencies"`
	P50       float64        `json:"p50_ms"`
	P99       float64        `json:"p99_ms"`
	Extra     map[string]any `json:"extra"`
}

// stored counts the records of streams in n's store.
func stored(t *testing.T, n *nodetest.Node, streams ...string) int64 {
	var total int64
	for _, s := range streams {
		total += int64(len(n.Records(t, s)))
	}
	return total
}

func TestBenchWrite(t *testing.T) {
	t.Parallel()
	n := nodetest.Start(t)
	for _, tc := range []struct {
		name string
		args []string
	}{
		{"duration", []string{"--duration", "2s", "--streams", "2", "--shards", "2", "--concurrency", "3", "--keys", "8", "--batch-records", "50", "--batch-age", "5ms"}},
		{"count", []string{"--count", "3000", "--concurrency", "2", "--compression", "zstd", "--record-size", "100", "--flow-bytes", "65536"}},
		{"rate", []string{"--duration", "2s", "--rate", "500", "--compression", "gzip", "--batch-bytes", "4096"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			prefix := "w" + tc.name + "-"
			stdout, stderr, err := runBench(t.Context(), append([]string{"write", "--addr", n.Addr, "--json", "--keep", "--stream-prefix", prefix}, tc.args...)...)
			require.NoError(t, err, stderr)
			var rep benchReport
			require.NoError(t, json.Unmarshal([]byte(stdout), &rep), stdout)
			require.Equal(t, "write", rep.Mode)
			require.Zero(t, rep.Errors)
			require.Positive(t, rep.Count)
			require.Equal(t, rep.Count, rep.Latencies)
			var streams []string
			for _, s := range rep.Extra["streams"].([]any) {
				streams = append(streams, s.(string))
			}
			require.Equal(t, rep.Count, stored(t, n, streams...), "reported count = records stored")
			switch tc.name {
			case "count":
				require.Equal(t, int64(3000), rep.Count)
			case "rate":
				require.Less(t, rep.Count, int64(1500), "--rate 500 for 2s")
			}
			if tc.name != "count" { // done in under a second
				require.Contains(t, stderr, "write ", "a progress line a second")
			}
		})
	}
}

func TestBenchWriteDeletesStreams(t *testing.T) {
	t.Parallel()
	n := nodetest.Start(t)
	stdout, stderr, err := runBench(t.Context(), "write", "--addr", n.Addr, "--count", "100", "--quiet")
	require.NoError(t, err, stderr)
	require.Empty(t, stderr)
	lines := strings.Split(strings.TrimSpace(stdout), "\n")
	require.Regexp(t, `^MODE +DURATION +COUNT +ERRORS +RATE/S +MB/S +P50 MS`, lines[0])
	require.Regexp(t, `^write +\S+ +100 +0 `, lines[1])
	require.Equal(t, "write latency: Append call to its acknowledgement", lines[2])
	_, err = n.Server.Node().StreamShards("bench-0")
	require.Error(t, err, "the stream is deleted without --keep")
}

func TestBenchRead(t *testing.T) {
	t.Parallel()
	n := nodetest.Start(t)
	stdout, stderr, err := runBench(t.Context(), "read", "--addr", n.Addr, "--json", "--keep",
		"--count", "20000", "--streams", "2", "--shards", "2", "--consumers", "2", "--record-size", "64", "--duration", "60s")
	require.NoError(t, err, stderr)
	var rep benchReport
	require.NoError(t, json.Unmarshal([]byte(stdout), &rep), stdout)
	require.Equal(t, "read", rep.Mode)
	require.Equal(t, int64(20000), rep.Count)
	require.Zero(t, rep.Errors)
	require.Equal(t, rep.Count, stored(t, n, "bench-0", "bench-1"), "delivered = stored")
	require.Positive(t, rep.P50)
	require.Contains(t, stderr, "filled 20000 records")

	// --no-fill reads what is there: --streams 1 is bench-0, which holds
	// the records of the writers that wrote to it.
	in0 := stored(t, n, "bench-0")
	stdout, stderr, err = runBench(t.Context(), "read", "--addr", n.Addr, "--json", "--quiet", "--no-fill",
		"--count", fmt.Sprint(in0), "--duration", "30s")
	require.NoError(t, err, stderr)
	require.NoError(t, json.Unmarshal([]byte(stdout), &rep), stdout)
	require.Equal(t, in0, rep.Count)
	require.Zero(t, rep.Errors)

	// Fewer records than --count: the idle timeout ends it, with the report.
	stdout, _, err = runBench(t.Context(), "read", "--addr", n.Addr, "--json", "--quiet", "--no-fill",
		"--count", fmt.Sprint(in0+5), "--idle-timeout", "1s")
	require.ErrorContains(t, err, fmt.Sprintf("delivered %d of %d records, then nothing for 1s", in0, in0+5))
	require.NoError(t, json.Unmarshal([]byte(stdout), &rep), stdout)
	require.Equal(t, in0, rep.Count)

	// Filling streams that already exist is refused.
	_, _, err = runBench(t.Context(), "read", "--addr", n.Addr, "--quiet", "--count", "10", "--streams", "3")
	require.ErrorContains(t, err, `streams "bench-0", "bench-1" already exist`)
	require.ErrorContains(t, err, "--no-fill")
	_, err = n.Server.Node().StreamShards("bench-2")
	require.Error(t, err, "the stream it created is deleted")
}

func TestIsBenchRecord(t *testing.T) {
	now := time.Now()
	rec := func(sent time.Time, rest string) []byte {
		p := binary.BigEndian.AppendUint64(nil, uint64(sent.UnixNano()))
		return append(p, rest...)
	}
	require.True(t, isBenchRecord("key-3", rec(now, "abcxyz"), now))
	require.True(t, isBenchRecord("key-0", rec(now.Add(-time.Hour), ""), now))
	require.False(t, isBenchRecord("key-", rec(now, "abc"), now))
	require.False(t, isBenchRecord("k1", rec(now, "abc"), now))
	require.False(t, isBenchRecord("key-1", rec(now, "ab{"), now))
	require.False(t, isBenchRecord("key-1", []byte("short"), now))
	require.False(t, isBenchRecord("key-1", []byte("hello, world"), now))
	require.False(t, isBenchRecord("key-1", rec(now.Add(48*time.Hour), "abc"), now))
}

func TestBenchWriteRead(t *testing.T) {
	t.Parallel()
	n := nodetest.Start(t)
	stdout, stderr, err := runBench(t.Context(), "writeread", "--addr", n.Addr, "--json", "--keep",
		"--duration", "2s", "--streams", "2", "--consumers", "2", "--concurrency", "2", "--rate", "5000")
	require.NoError(t, err, stderr)
	var reps []benchReport
	require.NoError(t, json.Unmarshal([]byte(stdout), &reps), stdout)
	require.Len(t, reps, 2)
	read, write := reps[0], reps[1]
	require.Equal(t, "writeread", read.Mode)
	require.Equal(t, "write", write.Mode)
	require.Positive(t, write.Count)
	require.Zero(t, write.Errors+read.Errors)
	s := stored(t, n, "bench-0", "bench-1")
	require.Equal(t, write.Count, s, "acknowledged = stored")
	require.Equal(t, s, read.Count, "delivered = stored")
	require.Contains(t, stderr, "read ")
	require.Contains(t, stderr, "write ")
}

func TestBenchMQTT(t *testing.T) {
	t.Parallel()
	n := nodetest.Start(t, func(c *conf.Config) { c.MQTT.Listen = nodetest.FreeAddr(t) })
	for _, tc := range []struct {
		version, qos int
	}{{3, 1}, {5, 1}, {3, 2}, {5, 0}, {3, 0}} {
		t.Run(fmt.Sprintf("v%d-qos%d", tc.version, tc.qos), func(t *testing.T) {
			stream := fmt.Sprintf("mq%d%d", tc.version, tc.qos)
			stdout, stderr, err := runBench(t.Context(), "mqtt", "--mqtt-addr", n.Server.MQTTAddr(), "--json",
				"--mqtt-version", fmt.Sprint(tc.version), "--qos", fmt.Sprint(tc.qos),
				"--clients", "5", "--window", "8", "--payload", "100", "--duration", "2s", "--rate", "20000",
				"--topic", stream+"/%d", "--client-id", stream+"-%d")
			require.NoError(t, err, stderr)
			var rep benchReport
			require.NoError(t, json.Unmarshal([]byte(stdout), &rep), stdout)
			require.Equal(t, "mqtt", rep.Mode)
			require.Positive(t, rep.Count)
			require.Zero(t, rep.Errors)
			require.Positive(t, rep.Rate)
			if tc.qos == 0 {
				require.Zero(t, rep.Latencies, "QoS 0 has no acknowledgement to time")
				// Nothing acknowledges a QoS 0 publish, but the bench
				// waits until the broker read them all (a SUBACK after
				// them), so the stream gets every one, if a moment later.
				require.Eventually(t, func() bool { return stored(t, n, stream) == rep.Count }, 10*time.Second, 20*time.Millisecond,
					"%d publishes written", rep.Count)
				return
			}
			require.Equal(t, rep.Count, rep.Latencies)
			require.Positive(t, rep.P99)
			require.Equal(t, rep.Count, stored(t, n, stream), "acknowledged = stored")
		})
	}
}

func TestBenchFlagErrors(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"write", "--record-size", "4"}, "--record-size 4: want at least 8"},
		{[]string{"write", "--streams", "0"}, "--streams 0: want at least 1"},
		{[]string{"write", "--compression", "lz4"}, `--compression "lz4"`},
		{[]string{"write", "--duration", "0"}, "give at least one limit"},
		{[]string{"read", "--count", "0"}, "--count 0: want records to fill"},
		{[]string{"writeread", "--consumers", "0"}, "--consumers 0: want at least 1"},
		{[]string{"mqtt", "--qos", "3"}, "--qos 3: want 0, 1 or 2"},
		{[]string{"mqtt", "--mqtt-version", "4"}, "--mqtt-version 4: want 3 (3.1.1) or 5"},
		{[]string{"mqtt", "--mqtt-addr", "nowhere"}, `--mqtt-addr "nowhere": want host:port`},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			_, _, err := runBench(t.Context(), append(tc.args, "--addr", "127.0.0.1:1")...)
			require.ErrorContains(t, err, tc.want)
		})
	}
}
