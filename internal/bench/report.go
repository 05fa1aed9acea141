package bench

import (
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"text/tabwriter"
	"time"
)

// Report is a bench's result. Count, Bytes and the latencies cover only
// operations that succeeded (acknowledged appends, delivered records,
// acknowledged publishes); Errors counts those that failed. Rate and MBps
// are Count and Bytes over Duration. Latencies are in milliseconds; they
// are 0 when none was recorded (Latencies is 0), as for MQTT QoS 0.
type Report struct {
	Mode      string        `json:"mode"`
	Duration  time.Duration `json:"-"`
	Seconds   float64       `json:"duration_s"`
	Count     int64         `json:"count"`
	Errors    int64         `json:"errors"`
	Bytes     int64         `json:"bytes"`
	Rate      float64       `json:"rate"` // Count per second
	MBps      float64       `json:"mb_per_s"`
	Latencies int64         `json:"latencies"` // operations whose latency was recorded
	P50       float64       `json:"p50_ms"`
	P90       float64       `json:"p90_ms"`
	P99       float64       `json:"p99_ms"`
	P999      float64       `json:"p999_ms"`
	Max       float64       `json:"max_ms"`
	// Extra holds mode-specific facts (the latency measured, stream
	// names, settings) for the JSON output and a line under the table.
	Extra map[string]any `json:"extra,omitempty"`
}

// WriteJSON writes reps as JSON to w: one object for one report, an array
// for several.
func WriteJSON(w io.Writer, reps ...Report) error {
	for i := range reps {
		reps[i].Seconds = reps[i].Duration.Seconds()
	}
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	if len(reps) == 1 {
		return enc.Encode(reps[0])
	}
	return enc.Encode(reps)
}

// WriteTable writes reps as an aligned table to w, one row each.
func WriteTable(w io.Writer, reps ...Report) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "MODE\tDURATION\tCOUNT\tERRORS\tRATE/S\tMB/S\tP50 MS\tP90 MS\tP99 MS\tP99.9 MS\tMAX MS")
	for _, r := range reps {
		fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%.0f\t%.2f\t%s\t%s\t%s\t%s\t%s\n",
			r.Mode, r.Duration.Round(time.Millisecond), r.Count, r.Errors, r.Rate, r.MBps,
			r.latency(r.P50), r.latency(r.P90), r.latency(r.P99), r.latency(r.P999), r.latency(r.Max))
	}
	return tw.Flush()
}

// latency formats v, or "-" when the report has no latencies.
func (r Report) latency(v float64) string {
	if r.Latencies == 0 {
		return "-"
	}
	return strconv.FormatFloat(v, 'f', 3, 64)
}
