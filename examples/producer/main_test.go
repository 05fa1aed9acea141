package main

import (
	"context"
	"encoding/json"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/weir-log/weir/internal/nodetest"
)

// TestRun appends records to a real node with each compression (the first
// run creates the stream, the others reuse it) and checks the stream holds
// them all, each key's in the order appended.
func TestRun(t *testing.T) {
	n := nodetest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()

	for i, comp := range []string{"zstd", "gzip", "none"} {
		cfg, err := parseFlags([]string{
			"-addr", "hstream://" + n.Addr, "-stream", "bench", "-shards", "2",
			"-records", "300", "-keys", "7", "-size", "64",
			"-batch-records", "40", "-batch-bytes", "2000", "-batch-age", "5ms", "-flow-bytes", "8000",
			"-compression", comp,
		}, io.Discard)
		require.NoError(t, err)
		var out strings.Builder
		require.NoError(t, run(ctx, cfg, &out), "-compression %s", comp)
		t.Logf("-compression %s:\n%s", comp, out.String())
		if i == 0 {
			assert.Contains(t, out.String(), "created stream bench with 2 shards")
		} else {
			assert.Contains(t, out.String(), "using existing stream bench (2 shards")
		}
		assert.Regexp(t, `stored 300 records in .*; errors 0\n`, out.String())
		assert.Regexp(t, `append latency: p50 \S+  p99 \S+  max \S+\n`, out.String())
	}

	recs := n.Records(t, "bench")
	require.Len(t, recs, 900)
	seqs := map[string][]int{}
	for _, r := range recs {
		assert.Len(t, r.Payload, 64)
		var m struct{ Seq int }
		require.NoError(t, json.Unmarshal(r.Payload, &m), "payload %s", r.Payload)
		seqs[r.Header.Key] = append(seqs[r.Header.Key], m.Seq)
	}
	assert.Len(t, seqs, 7)
	for k, s := range seqs {
		// Three runs of seqs 0..299: within each run, increasing.
		runs := 1
		for i := 1; i < len(s); i++ {
			if s[i] <= s[i-1] {
				runs++
			}
		}
		assert.Equal(t, 3, runs, "key %s: seqs %v", k, s)
	}
}

// TestParseFlags checks that every bad flag is reported, and that the
// producer settings reach NewBufferedProducer, which names them.
func TestParseFlags(t *testing.T) {
	_, err := parseFlags([]string{"-records", "0", "-keys", "0", "-shards", "0", "-compression", "lz4"}, io.Discard)
	require.Error(t, err)
	for _, f := range []string{"-records", "-keys", "-shards", "-compression"} {
		assert.Contains(t, err.Error(), f)
	}

	n := nodetest.Start(t)
	cfg, err := parseFlags([]string{"-addr", n.Addr, "-batch-records", "0", "-batch-age", "0s"}, io.Discard)
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err = run(ctx, cfg, io.Discard)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "BatchRecordCountLimit(0)")
	assert.Contains(t, err.Error(), "BatchAgeLimit(0s)")
}
