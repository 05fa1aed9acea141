package bench

import (
	"sync"
	"sync/atomic"
	"time"

	hdrhistogram "github.com/HdrHistogram/hdrhistogram-go"
)

// Bounds of the latency histograms, in microseconds.
const (
	minLatencyMicros = 1
	maxLatencyMicros = int64(60 * time.Second / time.Microsecond)
	sigFigs          = 3
)

// Recorder counts finished operations and records their latencies. It is
// safe for concurrent use.
type Recorder struct {
	start time.Time

	ok, errs, bytes atomic.Int64

	mu sync.Mutex // guards the two histograms
	// total holds every latency; interval only those since the last
	// Interval call.
	total, interval *hdrhistogram.Histogram
}

// NewRecorder returns an empty Recorder; its clock starts now.
func NewRecorder() *Recorder {
	return &Recorder{
		start:    time.Now(),
		total:    newHistogram(),
		interval: newHistogram(),
	}
}

func newHistogram() *hdrhistogram.Histogram {
	return hdrhistogram.New(minLatencyMicros, maxLatencyMicros, sigFigs)
}

// Restart resets the clock the Report's duration is measured from (the
// counts stay): for benches that prepare before they measure.
func (r *Recorder) Restart() {
	r.mu.Lock()
	r.start = time.Now()
	r.mu.Unlock()
}

// Record counts one successful operation of n bytes that took d.
func (r *Recorder) Record(d time.Duration, n int) {
	r.ok.Add(1)
	r.bytes.Add(int64(n))
	us := min(max(d.Microseconds(), minLatencyMicros), maxLatencyMicros)
	r.mu.Lock()
	_ = r.total.RecordValue(us) // in range by the clamp above
	_ = r.interval.RecordValue(us)
	r.mu.Unlock()
}

// Count counts one successful operation of n bytes whose latency is not
// known (an MQTT QoS 0 publish has no acknowledgement to time).
func (r *Recorder) Count(n int) {
	r.ok.Add(1)
	r.bytes.Add(int64(n))
}

// Error counts one failed operation.
func (r *Recorder) Error() { r.errs.Add(1) }

// OK returns the successful operations so far.
func (r *Recorder) OK() int64 { return r.ok.Load() }

// Errors returns the failed operations so far.
func (r *Recorder) Errors() int64 { return r.errs.Load() }

// Snapshot is the counters and latency percentiles of a span of time.
type Snapshot struct {
	OK, Errors, Bytes int64
	P50, P99          time.Duration // zero when no latency was recorded
}

// Interval returns the latencies recorded since the previous call (or
// since the start) and the counters' totals, and starts a new interval.
func (r *Recorder) Interval() Snapshot {
	r.mu.Lock()
	h := r.interval
	r.interval = newHistogram()
	r.mu.Unlock()
	return Snapshot{
		OK:     r.ok.Load(),
		Errors: r.errs.Load(),
		Bytes:  r.bytes.Load(),
		P50:    micros(h.ValueAtQuantile(50)),
		P99:    micros(h.ValueAtQuantile(99)),
	}
}

// Report summarizes everything recorded, with the rates taken over the
// time since NewRecorder or Restart (or over elapsed, when positive).
func (r *Recorder) Report(mode string, elapsed time.Duration) Report {
	r.mu.Lock()
	if elapsed <= 0 {
		elapsed = time.Since(r.start)
	}
	h := r.total
	rep := Report{
		Mode:      mode,
		Duration:  elapsed,
		Count:     r.ok.Load(),
		Errors:    r.errs.Load(),
		Bytes:     r.bytes.Load(),
		P50:       ms(h.ValueAtQuantile(50)),
		P90:       ms(h.ValueAtQuantile(90)),
		P99:       ms(h.ValueAtQuantile(99)),
		P999:      ms(h.ValueAtQuantile(99.9)),
		Max:       ms(h.Max()),
		Latencies: h.TotalCount(),
	}
	r.mu.Unlock()
	if s := elapsed.Seconds(); s > 0 {
		rep.Rate = float64(rep.Count) / s
		rep.MBps = float64(rep.Bytes) / s / 1e6
	}
	return rep
}

func micros(us int64) time.Duration { return time.Duration(us) * time.Microsecond }

func ms(us int64) float64 { return float64(us) / 1000 }

// Start returns when the Recorder's clock started.
func (r *Recorder) Start() time.Time {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.start
}
