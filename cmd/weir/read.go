package main

import (
	"bufio"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"
	"unicode/utf8"

	"github.com/spf13/cobra"

	"github.com/weir-log/weir/api/hstreampb"
	"github.com/weir-log/weir/api/wire"
	"github.com/weir-log/weir/client"
)

// checkMax rejects a negative --max.
func checkMax(n int) error {
	if n < 0 {
		return fmt.Errorf("--max %d: want 0 (no limit) or more", n)
	}
	return nil
}

// interruptible is cmd's context, ended by the first SIGINT or SIGTERM so
// a read or a consumer stops cleanly; a second signal kills the process
// (the default handling is back by then).
func interruptible(cmd *cobra.Command) (context.Context, context.CancelFunc) {
	ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
	context.AfterFunc(ctx, stop)
	return ctx, stop
}

// errMaxReached stops a read once --max records were printed.
var errMaxReached = errors.New("--max records printed")

// endOutput ends a command that prints records until --max or a signal:
// those two ends are success, and what was printed is flushed.
func endOutput(cmd *cobra.Command, err error, out *bufio.Writer) error {
	switch {
	case errors.Is(err, errMaxReached):
		err = nil
	case errors.Is(err, context.Canceled) && cmd.Context().Err() == nil:
		err = nil // interrupted by a signal
	}
	if err != nil {
		return err
	}
	return out.Flush()
}

func newReadCmd(g *clientFlags) *cobra.Command {
	var (
		from, format string
		follow       bool
		maxRecords   int
	)
	cmd := &cobra.Command{
		Use:   "read STREAM",
		Short: "Print the records of a stream",
		Long: `Print the records of STREAM, in order within each shard.

--from picks the start:
  earliest, latest      every shard's first record, or its tail
  2024-05-01T12:00:00Z  the first records at or after an RFC 3339 time
  1714564800000         the same, as unix milliseconds
  3-1207-5              a record id (shard-batch-index): that shard only, from that record

Without --follow the read ends at the tail as of its start; with --follow it
waits for new records until interrupted.

--format text prints "<record-id>\t<key>\t<payload>" per record; --format json
prints one object per line: id, key, payload (a string if it is UTF-8, else
base64 with "payloadEncoding": "base64"), publishTime and attributes (for a
record published over MQTT: mqtt.topic, mqtt.qos, mqtt.clientid, ...).`,
		Args: exactlyOne("STREAM"),
		RunE: func(cmd *cobra.Command, args []string) error {
			start, err := parseFrom(from)
			if err != nil {
				return err
			}
			if err := checkMax(maxRecords); err != nil {
				return err
			}
			out := bufio.NewWriter(cmd.OutOrStdout())
			defer out.Flush()
			printRecord, err := recordPrinter(out, format)
			if err != nil {
				return err
			}

			ctx, stop := interruptible(cmd)
			defer stop()

			printed := 0
			fn := func(r client.ReceivedRecord) error {
				if err := printRecord(r); err != nil {
					return err
				}
				printed++
				if follow {
					if err := out.Flush(); err != nil {
						return err
					}
				}
				if maxRecords > 0 && printed >= maxRecords {
					return errMaxReached
				}
				return nil
			}
			err = g.run(ctx, func(ctx context.Context, c *client.Client) error {
				stream := args[0]
				// Each batch holds at least one record, so --max batches
				// (one more when the first batch may be partly skipped)
				// always suffice; 0 is no limit.
				if start.record != nil {
					var until *hstreampb.ShardOffset
					if !follow {
						until = client.ShardLatest()
					}
					return c.ReadShardStream(ctx, stream, start.record.GetShardId(), client.ShardAtRecord(start.record), until, batchBudget(maxRecords, 1), fn)
				}
				var until *hstreampb.StreamOffset
				if !follow {
					until = client.Latest()
				}
				return c.ReadStream(ctx, stream, start.stream, until, batchBudget(maxRecords, 0), fn)
			})
			return endOutput(cmd, err, out)
		},
	}
	f := cmd.Flags()
	f.StringVar(&from, "from", "earliest", "start: earliest, latest, a record id, an RFC 3339 time or unix milliseconds")
	f.BoolVar(&follow, "follow", false, "keep reading new records until interrupted")
	f.IntVar(&maxRecords, "max", 0, "stop after this many records (0 = no limit)")
	f.StringVar(&format, "format", "text", "output format: text or json")
	return cmd
}

func batchBudget(maxRecords, extra int) uint64 {
	if maxRecords == 0 {
		return 0
	}
	return uint64(maxRecords + extra)
}

// startOffset is a parsed --from: a stream-wide offset, or a record id
// (which names one shard).
type startOffset struct {
	stream *hstreampb.StreamOffset
	record *hstreampb.RecordId
}

// parseFrom parses --from: earliest, latest, an RFC 3339 time, unix
// milliseconds (all digits) or a record id "shard-batch-index" in canonical
// form. A record id with leading zeros is refused: it is most likely a date
// ("2024-05-01"), which would otherwise read shard 2024.
func parseFrom(s string) (startOffset, error) {
	switch strings.ToLower(s) {
	case "earliest":
		return startOffset{stream: client.Earliest()}, nil
	case "latest":
		return startOffset{stream: client.Latest()}, nil
	case "":
		return startOffset{}, errors.New(`--from "": want earliest, latest, a record id (shard-batch-index), an RFC 3339 time or unix milliseconds`)
	}
	if t, err := time.Parse(time.RFC3339, s); err == nil {
		return startOffset{stream: client.AtTime(t)}, nil
	}
	if isDigits(s) {
		ms, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return startOffset{}, fmt.Errorf("--from %q: unix milliseconds out of range", s)
		}
		return startOffset{stream: client.AtTime(time.UnixMilli(ms))}, nil
	}
	if strings.Count(s, "-") == 2 {
		id, err := wire.ParseRecordID(s)
		if err != nil {
			return startOffset{}, fmt.Errorf("--from %q: %w", s, err)
		}
		if wire.FormatRecordID(id) != s {
			return startOffset{}, fmt.Errorf("--from %q: a record id has no leading zeros (did you mean %s, or a time such as 2024-05-01T00:00:00Z?)",
				s, wire.FormatRecordID(id))
		}
		return startOffset{record: id}, nil
	}
	return startOffset{}, fmt.Errorf("--from %q: want earliest, latest, a record id (shard-batch-index), an RFC 3339 time or unix milliseconds", s)
}

func isDigits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return s != ""
}

// jsonRecord is one line of --format json.
type jsonRecord struct {
	ID              string            `json:"id"`
	Key             string            `json:"key"`
	Payload         string            `json:"payload"`
	PayloadEncoding string            `json:"payloadEncoding,omitempty"` // "base64" when the payload is not UTF-8
	PublishTime     string            `json:"publishTime,omitempty"`
	Attributes      map[string]string `json:"attributes,omitempty"` // e.g. mqtt.topic for a record published over MQTT
}

// recordPrinter returns the function that writes one record to w in the
// given --format.
func recordPrinter(w io.Writer, format string) (func(client.ReceivedRecord) error, error) {
	switch strings.ToLower(format) {
	case "text":
		return func(r client.ReceivedRecord) error {
			_, err := fmt.Fprintf(w, "%s\t%s\t%s\n", wire.FormatRecordID(r.ID), r.Key, r.Payload)
			return err
		}, nil
	case "json":
		enc := json.NewEncoder(w)
		enc.SetEscapeHTML(false)
		return func(r client.ReceivedRecord) error {
			return enc.Encode(toJSONRecord(r))
		}, nil
	}
	return nil, fmt.Errorf("--format %q: want text or json", format)
}

func toJSONRecord(r client.ReceivedRecord) jsonRecord {
	j := jsonRecord{ID: wire.FormatRecordID(r.ID), Key: r.Key, Attributes: r.Attributes}
	if utf8.Valid(r.Payload) {
		j.Payload = string(r.Payload)
	} else {
		j.Payload = base64.StdEncoding.EncodeToString(r.Payload)
		j.PayloadEncoding = "base64"
	}
	if !r.PublishTime.IsZero() {
		j.PublishTime = r.PublishTime.UTC().Format(time.RFC3339Nano)
	}
	return j
}
