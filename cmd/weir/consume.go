package main

import (
	"bufio"
	"context"
	"errors"
	"os"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	"github.com/weir-log/weir/client"
)

func newConsumeCmd(g *clientFlags) *cobra.Command {
	var (
		consumer, format string
		maxRecords       int
	)
	cmd := &cobra.Command{
		Use:   "consume SUB",
		Short: "Print and ack the records a subscription delivers",
		Long: `Join subscription SUB as consumer --consumer and print each record it
delivers, as ` + "`weir read`" + ` does (--format text or json), acking each once it is
printed. Consumers of one subscription share its records: run several with
different --consumer names to split the work.

It runs until --max records were printed (0: until interrupted). On Ctrl-C or
SIGTERM it sends the acks still pending and exits 0; records delivered but
not printed are delivered again after the subscription's ack timeout.`,
		Args: exactlyOne("SUB"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkMax(maxRecords); err != nil {
				return err
			}
			if consumer == "" {
				return errors.New(`--consumer "": want a consumer name`)
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
			handler := func(_ context.Context, m *client.Message) error {
				if err := printRecord(m.Record); err != nil {
					return err
				}
				if err := out.Flush(); err != nil {
					return err
				}
				m.Ack() // only once printed
				printed++
				if maxRecords > 0 && printed >= maxRecords {
					return errMaxReached
				}
				return nil
			}
			err = g.run(ctx, func(ctx context.Context, c *client.Client) error {
				return c.Consume(ctx, args[0], consumer, handler)
			})
			return endOutput(cmd, err, out)
		},
	}
	f := cmd.Flags()
	f.StringVar(&consumer, "consumer", defaultConsumerName(), "consumer name, unique among the subscription's consumers")
	f.IntVar(&maxRecords, "max", 0, "stop after this many records (0 = until interrupted)")
	f.StringVar(&format, "format", "text", "output format: text or json")
	return cmd
}

// defaultConsumerName is "weir-consume-<hostname>-<pid>", with any
// character of the host name other than a letter, digit, '-' or '_'
// replaced by '-', so it is a valid HStreamDB object name.
func defaultConsumerName() string {
	host, err := os.Hostname()
	if err != nil || host == "" {
		host = "unknown"
	}
	host = strings.Map(func(r rune) rune {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '-', r == '_':
			return r
		}
		return '-'
	}, host)
	return "weir-consume-" + host + "-" + strconv.Itoa(os.Getpid())
}
