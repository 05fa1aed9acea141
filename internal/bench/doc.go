// Package bench holds what weir's load generators share: a Recorder of
// outcomes and latencies, a once-a-second progress line, and the final
// Report, printed as an aligned table or as JSON.
//
// Workers call Recorder.Record (or Recorder.Error) once per operation they
// saw finish; nothing else feeds a Report, so a bench can only report
// operations it did and saw acknowledged:
//
//	workers ──Record(latency, bytes)──► Recorder ──Interval()──► Progress: one line a second (stderr)
//	        ──Error()────────────────►    │
//	                                      └──Report(mode, elapsed)──► Report.WriteTable / WriteJSON (stdout)
//
// Latencies go into an HdrHistogram in microseconds, from 1µs to 60s with 3
// significant figures; longer latencies are clamped to 60s. Reports give
// them in milliseconds.
package bench
