package main

import (
	"context"
	"fmt"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/weir-log/weir/client"
	"github.com/weir-log/weir/internal/nodetest"
)

// TestRun appends records to a real node, consumes them with -max, then
// appends more and checks that a second consumer of the same subscription
// gets only those (the first one's acks were committed) and stops cleanly
// when its context is cancelled, as on Ctrl-C.
func TestRun(t *testing.T) {
	n := nodetest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	c, err := client.Dial(ctx, n.Addr)
	require.NoError(t, err)
	defer c.Close()
	_, err = c.CreateStream(ctx, "sensors", client.ShardCount(2))
	require.NoError(t, err)
	appendN := func(from, to int) {
		t.Helper()
		var recs []client.Record
		for i := from; i < to; i++ {
			recs = append(recs, client.Record{Key: fmt.Sprintf("dev-%d", i%3), Payload: fmt.Appendf(nil, `{"seq":%d}`, i)})
		}
		_, err := c.Append(ctx, "sensors", recs)
		require.NoError(t, err)
	}
	appendN(0, 10)

	cfg, err := parseFlags([]string{"-addr", "hstream://" + n.Addr, "-stream", "sensors", "-name", "first", "-max", "10", "-every", "50ms"}, io.Discard)
	require.NoError(t, err)
	var out strings.Builder
	require.NoError(t, run(ctx, cfg, &out))
	t.Logf("first consumer:\n%s", out.String())
	assert.Contains(t, out.String(), "created subscription sensors-example on stream sensors, from earliest")
	assert.Equal(t, seqs(0, 10), printedSeqs(out.String()))
	assert.Contains(t, out.String(), "consumed 10 records in ")

	appendN(10, 13)
	cfg.name = "second"
	cfg.max = 0
	var out2 nodetest.SyncBuffer
	cctx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- run(cctx, cfg, &out2) }()
	require.Eventually(t, func() bool {
		return len(printedSeqs(out2.String())) >= 3 && strings.Contains(out2.String(), "-- ")
	}, 10*time.Second, 20*time.Millisecond, "the records and a summary line")
	stop()
	require.NoError(t, <-done)
	t.Logf("second consumer:\n%s", out2.String())
	assert.Contains(t, out2.String(), "joined subscription sensors-example on stream sensors")
	assert.Equal(t, seqs(10, 13), printedSeqs(out2.String()))
	assert.Regexp(t, `(?m)^-- [0-9.]+m?s: 3 records, [0-9.]+/s, max lag [0-9.]+m?s$`, out2.String())
	assert.Contains(t, out2.String(), "consumed 3 records in ")
}

// printedSeqs returns the seqs of the record lines in out whose key is the
// one the seq was appended with. Records of different shards interleave, so
// it returns a set.
func printedSeqs(out string) map[int]bool {
	got := map[int]bool{}
	for line := range strings.Lines(out) {
		f := strings.Split(strings.TrimSuffix(line, "\n"), "\t")
		if len(f) != 4 || !strings.HasPrefix(f[2], "lag ") {
			continue
		}
		var seq int
		if _, err := fmt.Sscanf(f[3], `{"seq":%d}`, &seq); err == nil && f[1] == fmt.Sprintf("dev-%d", seq%3) {
			got[seq] = true
		}
	}
	return got
}

func seqs(from, to int) map[int]bool {
	m := map[int]bool{}
	for i := from; i < to; i++ {
		m[i] = true
	}
	return m
}

// TestParseFlags checks the defaults and that every bad flag is reported.
func TestParseFlags(t *testing.T) {
	cfg, err := parseFlags(nil, io.Discard)
	require.NoError(t, err)
	assert.Equal(t, "hstream://127.0.0.1:6570", cfg.addr)
	assert.Equal(t, "telemetry-example", cfg.subscriptionID())

	_, err = parseFlags([]string{"-offset", "middle", "-max", "-1", "-name", ""}, io.Discard)
	require.Error(t, err)
	for _, f := range []string{"-offset", "-max", "-name"} {
		assert.Contains(t, err.Error(), f)
	}
}
