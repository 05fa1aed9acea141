package main

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/weir-log/weir/api/hstreampb"
	"github.com/weir-log/weir/client"
	"github.com/weir-log/weir/internal/bench"
)

func newBenchReadCmd(g *clientFlags) *cobra.Command {
	f := &streamBenchFlags{}
	var noFill bool
	var idle time.Duration
	cmd := &cobra.Command{
		Use:   "read",
		Short: "Pre-fill streams, then consume them and time append to delivery",
		Long: `Create --streams streams, append --count records to them as
` + "`weir bench write`" + ` would (unless --no-fill), then subscribe to each stream from
its earliest record and consume with --consumers consumers per stream,
acking every record, until every record appended was delivered,
--duration (0: no limit) ends, or nothing was delivered for --idle-timeout.

Without --no-fill the streams must be new: if one of them already exists
the bench refuses to run (its older records would be read too); read
existing streams with --no-fill, or pick another --stream-prefix. With
--no-fill, missing streams are created and existing ones are read as they
are, until --count bench records if given.

Only bench records (key key-<n>, payload an append time then lowercase
letters, as the benches write them) count; other records are skipped and
reported as "foreign". A record's latency runs from its Append call (the
time in its first 8 bytes) to its delivery, so it includes the time it
waited in the stream since the fill. The report counts distinct records
delivered; redeliveries are reported apart. If the bench ends before every
record it expected arrived, it still prints the report, then fails.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := f.validate(); err != nil {
				return err
			}
			if f.duration < 0 || f.count < 0 {
				return fmt.Errorf("--duration %s, --count %d: want 0 or more", f.duration, f.count)
			}
			if !noFill && f.count == 0 {
				return errors.New("--count 0: want records to fill the streams with (or --no-fill)")
			}
			if noFill && f.count == 0 && f.duration == 0 {
				return errNothingStored
			}
			if idle < 0 {
				return fmt.Errorf("--idle-timeout %s: want 0 (none) or more", idle)
			}
			ctx, stop := interruptible(cmd)
			defer stop()
			return g.run(ctx, func(ctx context.Context, c *client.Client) error {
				streams, err := setupStreams(ctx, c, f, !noFill)
				if err != nil {
					return err
				}
				defer streams.cleanup(c, f.keep)
				target := f.count
				if !noFill {
					fill := bench.NewRecorder()
					stopProgress := f.out.progress(cmd, fill, "fill")
					err := writeAll(ctx, c, f, streams.names, bench.NewLimit(f.count, 0, f.rate), fill)
					stopProgress()
					if err != nil {
						return err
					}
					r := fill.Report("fill", 0)
					if !f.out.quiet {
						fmt.Fprintf(f.out.stderr(cmd), "filled %d records (%d errors) in %s\n", r.Count, r.Errors, r.Duration.Round(time.Millisecond))
					}
					if r.Count == 0 {
						if ctx.Err() != nil {
							return ctx.Err()
						}
						return fmt.Errorf("fill: none of the %d appends succeeded (%d errors); nothing to read", f.count, r.Errors)
					}
					target = r.Count
				}
				rec := bench.NewRecorder()
				d := newDeliveries(rec)
				d.setTarget(target)
				stopProgress := f.out.progress(cmd, rec, "read")
				cons, err := startConsumers(ctx, c, streams.names, f.consumers, hstreampb.SpecialOffset_EARLIEST, d)
				if err != nil {
					stopProgress()
					return err
				}
				why := waitDelivered(ctx, d, f.duration, idle)
				elapsed := time.Since(rec.Start())
				if why == endIdle {
					// The rate is over the time records flowed, not the idle wait.
					if last := d.lastDelivery(); last.After(rec.Start()) {
						elapsed = last.Sub(rec.Start())
					}
				}
				cons.stop()
				stopProgress()
				rep := rec.Report("read", elapsed)
				rep.Extra = f.extra(streams.names)
				rep.Extra["latency"] = "Append call (time in the payload) to delivery"
				rep.Extra["consumers_per_stream"] = f.consumers
				rep.Extra["expected"] = target
				rep.Extra["redelivered"] = d.redelivered.Load()
				rep.Extra["foreign"] = d.foreign.Load()
				if err := f.out.report(cmd, rep); err != nil {
					return err
				}
				return incomplete(ctx, rep.Count, target, why, idle)
			})
		},
	}
	f.addFlags(cmd, false, true)
	fs := cmd.Flags()
	fs.DurationVar(&f.duration, "duration", 0, "stop consuming after this long (0: once every record was delivered)")
	fs.Int64Var(&f.count, "count", 100000, "records to fill the streams with; with --no-fill, records to read")
	fs.Float64Var(&f.rate, "rate", 0, "fill rate, records per second (0 = as fast as possible)")
	fs.BoolVar(&noFill, "no-fill", false, "read the streams' existing records instead of appending first (without it, existing streams are refused)")
	fs.DurationVar(&idle, "idle-timeout", 10*time.Second, "stop, and fail if records are missing, once nothing was delivered for this long (0: no limit)")
	return cmd
}

// endReason is why waitDelivered returned.
type endReason int

const (
	endReached  endReason = iota // every expected record was delivered
	endDuration                  // the duration passed
	endIdle                      // nothing was delivered for the idle timeout
	endDone                      // ctx is done
)

// waitDelivered waits until d reached its target, duration passed (if
// positive), nothing was delivered for idle (if positive; counted from the
// call or the last delivery, whichever is later), or ctx is done.
func waitDelivered(ctx context.Context, d *deliveries, duration, idle time.Duration) endReason {
	var timeout <-chan time.Time
	if duration > 0 {
		t := time.NewTimer(duration)
		defer t.Stop()
		timeout = t.C
	}
	var idleC <-chan time.Time
	var idleT *time.Timer
	since := time.Now()
	if idle > 0 {
		idleT = time.NewTimer(idle)
		defer idleT.Stop()
		idleC = idleT.C
	}
	for {
		select {
		case <-d.reached:
			return endReached
		case <-timeout:
			return endDuration
		case <-ctx.Done():
			return endDone
		case <-idleC:
			from := since
			if last := d.lastDelivery(); last.After(from) {
				from = last
			}
			if left := idle - time.Since(from); left > 0 {
				idleT.Reset(left)
				continue
			}
			select { // the target may have been reached at the same moment
			case <-d.reached:
				return endReached
			default:
				return endIdle
			}
		}
	}
}

// incomplete reports a read that ended before delivering target records,
// unless it was interrupted.
func incomplete(ctx context.Context, got, target int64, why endReason, idle time.Duration) error {
	if target <= 0 || got >= target || ctx.Err() != nil {
		return nil
	}
	if why == endIdle {
		return fmt.Errorf("delivered %d of %d records, then nothing for %s (--idle-timeout)", got, target, idle)
	}
	return fmt.Errorf("delivered %d of %d records before the time ran out", got, target)
}

func newBenchWriteReadCmd(g *clientFlags) *cobra.Command {
	f := &streamBenchFlags{}
	var drain time.Duration
	cmd := &cobra.Command{
		Use:   "writeread",
		Short: "Append and consume at once; time append to delivery end to end",
		Long: `Create --streams streams (existing ones are used as they are), subscribe to
each (from the earliest record of a stream it created, from the latest of an
existing one) with --consumers consumers, then append as ` + "`weir bench write`" + ` does
for --duration or --count records, and wait (up to --drain) until every
acknowledged record was delivered.

The first row of the report is the delivery side: distinct records
delivered, with append-to-delivery latency (from the time in each record's
first 8 bytes); the second is the append side, with Append-to-ack latency.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return f.runTimed(cmd, g, func(ctx context.Context, c *client.Client, streams *benchStreams, duration time.Duration) error {
				offset := hstreampb.SpecialOffset_EARLIEST
				for _, created := range streams.created {
					if !created {
						offset = hstreampb.SpecialOffset_LATEST
					}
				}
				readRec, writeRec := bench.NewRecorder(), bench.NewRecorder()
				d := newDeliveries(readRec)
				cons, err := startConsumers(ctx, c, streams.names, f.consumers, offset, d)
				if err != nil {
					return err
				}
				defer cons.stop()
				readRec.Restart()
				writeRec.Restart()
				stopRead := f.out.progress(cmd, readRec, "read ")
				stopWrite := f.out.progress(cmd, writeRec, "write")
				err = writeAll(ctx, c, f, streams.names, bench.NewLimit(f.count, duration, f.rate), writeRec)
				stopWrite()
				if err != nil {
					stopRead()
					return err
				}
				writeRep := writeRec.Report("write", 0)
				why := endReached
				if writeRep.Count > 0 { // with nothing acknowledged, nothing to wait for
					d.setTarget(writeRep.Count)
					why = waitDelivered(ctx, d, drain, 0)
				}
				readRep := readRec.Report("writeread", 0)
				stopRead()
				readRep.Extra = f.extra(streams.names)
				readRep.Extra["latency"] = "Append call (time in the payload) to delivery"
				readRep.Extra["consumers_per_stream"] = f.consumers
				readRep.Extra["expected"] = writeRep.Count
				readRep.Extra["redelivered"] = d.redelivered.Load()
				readRep.Extra["foreign"] = d.foreign.Load()
				writeRep.Extra = map[string]any{"latency": "Append call to its acknowledgement"}
				if err := f.out.report(cmd, readRep, writeRep); err != nil {
					return err
				}
				return incomplete(ctx, readRep.Count, writeRep.Count, why, 0)
			})
		},
	}
	f.addFlags(cmd, true, true)
	fs := cmd.Flags()
	fs.DurationVar(&f.duration, "duration", 10*time.Second, "how long to append (0: until --count)")
	fs.Int64Var(&f.count, "count", 0, "records to append in all (0: until --duration; alone, it lifts the default --duration)")
	fs.DurationVar(&drain, "drain", 30*time.Second, "after appending, how long to wait for the last deliveries")
	return cmd
}
