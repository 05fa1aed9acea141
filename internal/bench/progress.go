package bench

import (
	"context"
	"fmt"
	"io"
	"time"
)

// Progress writes one line to w every interval until ctx is done: the
// elapsed time, and for the interval just ended the operations per
// second, MB/s, p50 and p99 latency and new errors. It returns when ctx
// is done.
func Progress(ctx context.Context, w io.Writer, r *Recorder, label string, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	start := time.Now()
	last, lastAt := r.Interval(), start
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			s := r.Interval()
			secs := now.Sub(lastAt).Seconds()
			fmt.Fprintf(w, "%s %6.1fs  %9.0f/s  %7.2f MB/s  p50 %s  p99 %s  errors %d\n",
				label, now.Sub(start).Seconds(),
				float64(s.OK-last.OK)/secs, float64(s.Bytes-last.Bytes)/secs/1e6,
				fmtLatency(s.P50), fmtLatency(s.P99), s.Errors-last.Errors)
			last, lastAt = s, now
		}
	}
}

func fmtLatency(d time.Duration) string {
	if d == 0 {
		return "      -"
	}
	return fmt.Sprintf("%5.1fms", float64(d)/float64(time.Millisecond))
}
