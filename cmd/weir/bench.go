package main

// `weir bench`: load generators for the gRPC API (write, read, writeread)
// and for any MQTT broker (mqtt). Each prints a progress line a second to
// stderr and a final report to stdout: an aligned table, or JSON with
// --json. The numbers come only from a bench.Recorder fed by operations
// the server acknowledged (appends, deliveries, publishes).

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/spf13/cobra"

	"github.com/weir-log/weir/internal/bench"
)

// benchOutput are the flags of every bench about what it prints.
type benchOutput struct {
	json  bool
	quiet bool

	// mu serializes every write of the bench's output: its progress
	// goroutines (one per recorder, running at once) and the lines and
	// report written around them may share one writer (a bytes.Buffer in
	// tests, or a terminal for stdout and stderr).
	mu sync.Mutex
}

// lockedWriter writes to w under mu.
type lockedWriter struct {
	mu *sync.Mutex
	w  io.Writer
}

func (l lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// stderr is cmd's stderr, its writes serialized with every other write of o.
func (o *benchOutput) stderr(cmd *cobra.Command) io.Writer {
	return lockedWriter{&o.mu, cmd.ErrOrStderr()}
}

// stdout is cmd's stdout, its writes serialized with every other write of o.
func (o *benchOutput) stdout(cmd *cobra.Command) io.Writer {
	return lockedWriter{&o.mu, cmd.OutOrStdout()}
}

func (o *benchOutput) addFlags(cmd *cobra.Command) {
	f := cmd.Flags()
	f.BoolVar(&o.json, "json", false, "print the report as JSON (to stdout; progress stays on stderr)")
	f.BoolVar(&o.quiet, "quiet", false, "no progress line every second")
}

// progress prints rec's progress line to stderr every second until the
// returned stop is called (unless --quiet).
func (o *benchOutput) progress(cmd *cobra.Command, rec *bench.Recorder, label string) (stop func()) {
	if o.quiet {
		return func() {}
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		bench.Progress(ctx, o.stderr(cmd), rec, label, time.Second)
	}()
	return func() { cancel(); <-done }
}

// report prints reps to stdout, as a table or JSON.
func (o *benchOutput) report(cmd *cobra.Command, reps ...bench.Report) error {
	out := o.stdout(cmd)
	if o.json {
		return bench.WriteJSON(out, reps...)
	}
	if err := bench.WriteTable(out, reps...); err != nil {
		return err
	}
	for _, r := range reps {
		if s, ok := r.Extra["latency"].(string); ok {
			fmt.Fprintf(out, "%s latency: %s\n", r.Mode, s)
		}
	}
	return nil
}

func newBenchCmd(g *clientFlags) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "bench",
		Short: "Load generators: append, consume, both at once, or MQTT publish",
		Long: `Benchmarks against a running server.

  write      appends through BufferedProducers; latency is Append to its ack
  read       pre-fills streams, then consumes them through subscriptions;
             latency is append to delivery
  writeread  appends and consumes at once; latency is append to delivery,
             end to end (and Append to ack, in a second row)
  mqtt       publishes to any MQTT broker (--mqtt-addr); latency is publish
             to PUBACK (QoS 1) or PUBCOMP (QoS 2), none for QoS 0

Every second a progress line goes to stderr (that second's rate, MB/s, p50
and p99 latency, errors); at the end a report goes to stdout, as a table or,
with --json, as JSON. Reports count only what the server acknowledged or
delivered. Latencies are kept in an HdrHistogram (1µs to 60s, 3 significant
digits).

Records written by write, read and writeread carry the time of their Append
call (unix nanoseconds, big-endian) in their first 8 bytes, which is how
read benches time append to delivery: run them on one machine, or on
machines with synchronized clocks.`,
	}
	cmd.AddCommand(newBenchWriteCmd(g), newBenchReadCmd(g), newBenchWriteReadCmd(g), newBenchMQTTCmd())
	return cmd
}

// checkRun validates the --duration and --count pair: at least one limit.
func checkRun(duration time.Duration, count int64) error {
	if duration < 0 {
		return fmt.Errorf("--duration %s: want 0 (no limit) or more", duration)
	}
	if count < 0 {
		return fmt.Errorf("--count %d: want 0 (no limit) or more", count)
	}
	if duration == 0 && count == 0 {
		return errors.New("--duration 0 and --count 0: give at least one limit")
	}
	return nil
}

// runDuration is --duration, except that a --count given without
// --duration runs until the count.
func runDuration(cmd *cobra.Command, duration time.Duration) time.Duration {
	if cmd.Flags().Changed("count") && !cmd.Flags().Changed("duration") {
		return 0
	}
	return duration
}
