package main

import (
	"context"
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/weir-log/weir/client"
	"github.com/weir-log/weir/internal/bench"
)

func newBenchWriteCmd(g *clientFlags) *cobra.Command {
	f := &streamBenchFlags{}
	cmd := &cobra.Command{
		Use:   "write",
		Short: "Append records through BufferedProducers and time each ack",
		Long: `Create --streams streams of --shards shards (existing ones are used as
they are), then have --concurrency writers append records of --record-size
bytes with --keys keys through one BufferedProducer each, with the batch and
flow-control settings of the --batch-* and --flow-bytes flags, for --duration
or until --count records, at --rate records a second in all (0: as fast as
the producers take them). A record's latency runs from its Append call to
its result. The report counts acknowledged records only; failed ones are
errors. The streams are deleted at the end unless --keep.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return f.runTimed(cmd, g, func(ctx context.Context, c *client.Client, streams *benchStreams, duration time.Duration) error {
				rec := bench.NewRecorder()
				stopProgress := f.out.progress(cmd, rec, "write")
				err := writeAll(ctx, c, f, streams.names, bench.NewLimit(f.count, duration, f.rate), rec)
				stopProgress()
				if err != nil {
					return err
				}
				rep := rec.Report("write", 0)
				rep.Extra = f.extra(streams.names)
				rep.Extra["latency"] = "Append call to its acknowledgement"
				return f.out.report(cmd, rep)
			})
		},
	}
	f.addFlags(cmd, true, false)
	cmd.Flags().DurationVar(&f.duration, "duration", 10*time.Second, "how long to append (0: until --count)")
	cmd.Flags().Int64Var(&f.count, "count", 0, "records to append in all (0: until --duration; alone, it lifts the default --duration)")
	return cmd
}

// extra is the settings a report carries in its JSON.
func (f *streamBenchFlags) extra(streams []string) map[string]any {
	return map[string]any{
		"streams":       streams,
		"shards":        f.shards,
		"keys":          f.keys,
		"record_size":   f.recordSize,
		"concurrency":   f.concurrency,
		"batch_records": f.batchRecords,
		"batch_bytes":   f.batchBytes,
		"batch_age":     f.batchAge.String(),
		"flow_bytes":    f.flowBytes,
		"compression":   f.compression,
		"target_rate":   f.rate,
	}
}

// errNothingStored is returned by a read bench that has nothing to read.
var errNothingStored = fmt.Errorf("nothing to read: drop --no-fill, or give --count or --duration")
