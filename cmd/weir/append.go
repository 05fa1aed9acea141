package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/weir-log/weir/api/hstreampb"
	"github.com/weir-log/weir/api/wire"
	"github.com/weir-log/weir/client"
)

func newAppendCmd(g *clientFlags) *cobra.Command {
	var (
		key                      string
		count, keys, size, batch int
		compression              string
		printIDs                 bool
	)
	cmd := &cobra.Command{
		Use:   "append STREAM",
		Short: "Append records: one per line of stdin, or --count synthetic ones",
		Long: `Append records to STREAM.

By default every line of stdin (without its line ending) is one record, with
the partition key --key. With --count N it appends N synthetic records
instead: record i has key "key-<i mod --keys>" and a payload of --size bytes
that starts with i.

Records go out --batch at a time, one Append call each. A summary goes to
stderr; --ids prints each record's id to stdout.`,
		Args: exactlyOne("STREAM"),
		RunE: func(cmd *cobra.Command, args []string) error {
			comp, err := parseCompression(compression)
			if err != nil {
				return err
			}
			if batch < 1 {
				return fmt.Errorf("--batch %d: want at least 1", batch)
			}
			var src recordSource
			if cmd.Flags().Changed("count") {
				if cmd.Flags().Changed("key") {
					return errors.New("--key sets the key of records from stdin; with --count use --keys")
				}
				s, err := newSyntheticSource(count, keys, size)
				if err != nil {
					return err
				}
				src = s
			} else {
				for _, f := range []string{"keys", "size"} {
					if cmd.Flags().Changed(f) {
						return fmt.Errorf("--%s needs --count (synthetic records)", f)
					}
				}
				src = newLineSource(cmd.InOrStdin(), key)
			}

			return g.run(cmd.Context(), func(ctx context.Context, c *client.Client) error {
				out := bufio.NewWriter(cmd.OutOrStdout())
				defer out.Flush()
				start := time.Now()
				var records, batches int
				for {
					recs, err := src.next(batch)
					if err != nil && !errors.Is(err, io.EOF) {
						return err
					}
					if len(recs) > 0 {
						ids, aerr := c.Append(ctx, args[0], recs, client.Compression(comp))
						if aerr != nil {
							return fmt.Errorf("append batch %d (records %d..%d): %w", batches+1, records, records+len(recs)-1, aerr)
						}
						batches++
						records += len(recs)
						if printIDs {
							for _, id := range ids {
								fmt.Fprintln(out, wire.FormatRecordID(id))
							}
						}
					}
					if err != nil { // io.EOF
						break
					}
				}
				elapsed := time.Since(start)
				fmt.Fprintf(cmd.ErrOrStderr(), "appended %d records in %d batches in %s (%.0f records/s)\n",
					records, batches, elapsed.Round(time.Millisecond), float64(records)/elapsed.Seconds())
				return out.Flush()
			})
		},
	}
	f := cmd.Flags()
	f.StringVar(&key, "key", "", "partition key of the records read from stdin")
	f.IntVar(&count, "count", 0, "append this many synthetic records instead of reading stdin")
	f.IntVar(&keys, "keys", 1, "with --count: number of distinct keys (key-0 … key-<keys-1>)")
	f.IntVar(&size, "size", 64, "with --count: payload size in bytes")
	f.IntVar(&batch, "batch", 100, "records per Append call")
	f.StringVar(&compression, "compression", "none", "batch compression: none, gzip or zstd")
	f.BoolVar(&printIDs, "ids", false, "print each record id to stdout")
	return cmd
}

// parseCompression maps a --compression value to the wire's type.
func parseCompression(s string) (hstreampb.CompressionType, error) {
	switch strings.ToLower(s) {
	case "none":
		return hstreampb.CompressionType_None, nil
	case "gzip":
		return hstreampb.CompressionType_Gzip, nil
	case "zstd":
		return hstreampb.CompressionType_Zstd, nil
	}
	return 0, fmt.Errorf("--compression %q: want none, gzip or zstd", s)
}

// recordSource yields records to append. next returns up to max records;
// with io.EOF once the source is exhausted (possibly with a last few).
type recordSource interface {
	next(max int) ([]client.Record, error)
}

// lineSource makes one record of each line of r, line ending removed.
type lineSource struct {
	r   *bufio.Reader
	key string
}

func newLineSource(r io.Reader, key string) *lineSource {
	return &lineSource{r: bufio.NewReaderSize(r, 64<<10), key: key}
}

func (s *lineSource) next(max int) ([]client.Record, error) {
	var recs []client.Record
	for len(recs) < max {
		line, err := s.r.ReadBytes('\n')
		if len(line) > 0 {
			line = bytes.TrimSuffix(line, []byte("\n"))
			line = bytes.TrimSuffix(line, []byte("\r"))
			recs = append(recs, client.Record{Key: s.key, Payload: line})
		}
		if err != nil {
			if errors.Is(err, io.EOF) {
				return recs, io.EOF
			}
			return recs, fmt.Errorf("reading stdin: %w", err)
		}
	}
	return recs, nil
}

// syntheticSource makes count records: record i has key "key-<i mod keys>"
// and a payload of size bytes: i in decimal, a space, then pseudo-random
// lowercase letters (seeded by i, so runs are repeatable and the payload
// compresses like text rather than like zeros).
type syntheticSource struct {
	count, keys, size int
	i                 int
}

func newSyntheticSource(count, keys, size int) (*syntheticSource, error) {
	if count < 1 {
		return nil, fmt.Errorf("--count %d: want at least 1", count)
	}
	if keys < 1 {
		return nil, fmt.Errorf("--keys %d: want at least 1", keys)
	}
	if need := len(strconv.Itoa(count - 1)); size < need {
		return nil, fmt.Errorf("--size %d: too small to hold sequence numbers up to %d (want at least %d)", size, count-1, need)
	}
	return &syntheticSource{count: count, keys: keys, size: size}, nil
}

func (s *syntheticSource) next(max int) ([]client.Record, error) {
	n := min(max, s.count-s.i)
	recs := make([]client.Record, n)
	for j := range recs {
		recs[j] = client.Record{
			Key:     "key-" + strconv.Itoa(s.i%s.keys),
			Payload: syntheticPayload(s.i, s.size),
		}
		s.i++
	}
	if s.i == s.count {
		return recs, io.EOF
	}
	return recs, nil
}

// syntheticPayload returns size bytes starting with seq in decimal.
func syntheticPayload(seq, size int) []byte {
	p := make([]byte, 0, size)
	p = strconv.AppendInt(p, int64(seq), 10)
	if len(p) < size {
		p = append(p, ' ')
	}
	rng := rand.New(rand.NewPCG(uint64(seq), 0x5eed))
	for len(p) < size {
		p = append(p, byte('a'+rng.IntN(26)))
	}
	return p[:size]
}
