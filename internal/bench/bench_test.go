package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/weir-log/weir/internal/syncbuf"
)

func TestRecorderReport(t *testing.T) {
	r := NewRecorder()
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Go(func() {
			for i := range 250 {
				r.Record(time.Duration(w*250+i+1)*time.Millisecond/10, 10)
			}
		})
	}
	wg.Wait()
	r.Error()
	r.Count(5)
	rep := r.Report("write", 2*time.Second)
	require.Equal(t, int64(1001), rep.Count)
	require.Equal(t, int64(1), rep.Errors)
	require.Equal(t, int64(10005), rep.Bytes)
	require.Equal(t, int64(1000), rep.Latencies)
	require.InDelta(t, 500.5, rep.Rate, 0.01)
	require.InDelta(t, 50, rep.P50, 0.1)
	require.InDelta(t, 99, rep.P99, 0.1)
	require.InDelta(t, 100, rep.Max, 0.1)

	var buf bytes.Buffer
	require.NoError(t, WriteJSON(&buf, rep))
	var got map[string]any
	require.NoError(t, json.Unmarshal(buf.Bytes(), &got))
	for _, k := range []string{"mode", "count", "errors", "rate", "p50_ms", "p99_ms"} {
		require.Contains(t, got, k)
	}
	require.Equal(t, 2.0, got["duration_s"])

	buf.Reset()
	require.NoError(t, WriteTable(&buf, rep, Report{Mode: "mqtt"}))
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	require.Len(t, lines, 3)
	require.True(t, strings.HasPrefix(lines[1], "write "), lines[1])
	require.Contains(t, lines[2], " - ", "no latencies: dashes")
}

func TestRecorderClampsAndIntervals(t *testing.T) {
	r := NewRecorder()
	r.Record(0, 1)
	r.Record(time.Hour, 1)
	s := r.Interval()
	require.Equal(t, int64(2), s.OK)
	require.Equal(t, time.Microsecond, s.P50)
	require.InDelta(t, float64(60*time.Second), float64(s.P99), float64(100*time.Millisecond))
	require.Zero(t, r.Interval().P99, "a new interval starts empty")
}

func TestProgress(t *testing.T) {
	r := NewRecorder()
	r.Record(time.Millisecond, 1000)
	var buf syncbuf.Buffer
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() { Progress(ctx, &buf, r, "write", 20*time.Millisecond); close(done) }()
	require.Eventually(t, func() bool { return strings.Count(buf.String(), "\n") >= 2 }, 5*time.Second, 5*time.Millisecond)
	cancel()
	<-done
	require.Contains(t, buf.String(), "write ")
	require.Contains(t, buf.String(), "errors 0")
}

func TestLimit(t *testing.T) {
	l := NewLimit(100, 0, 0)
	var n atomic.Int64
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for l.Next(t.Context()) {
				n.Add(1)
			}
		})
	}
	wg.Wait()
	require.Equal(t, int64(100), n.Load())

	start := time.Now()
	l = NewLimit(0, 300*time.Millisecond, 100)
	n.Store(0)
	for l.Next(t.Context()) {
		n.Add(1)
	}
	require.Less(t, time.Since(start), 2*time.Second)
	require.InDelta(t, 30, n.Load(), 5, "100/s for 0.3s")
}
