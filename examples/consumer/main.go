// Command consumer reads a stream through a subscription, weir's durable
// consumer group: it prints each record with its lag (how long ago the
// server stored it), acks it, and every few seconds prints a summary line.
// The subscription is created if it does not exist. Start a node with
// `make run`, put records in a stream (examples/device-sim writes to
// "telemetry"), then:
//
//	go run ./examples/consumer -stream telemetry
//
// See README.md for the flags.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"
	"unicode/utf8"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/weir-log/weir/api/hstreampb"
	"github.com/weir-log/weir/api/wire"
	"github.com/weir-log/weir/client"
)

// config is everything the flags set.
type config struct {
	addr         string        // server url, as client.Dial takes it
	stream       string        // the stream a new subscription reads
	subscription string        // subscription id; "" = stream + "-example"
	offset       string        // where a new subscription starts: earliest or latest
	name         string        // consumer name, unique among the subscription's consumers
	max          int           // stop after this many records; 0 = until ctx is done
	every        time.Duration // summary interval; 0 = only the final summary
}

func main() {
	cfg, err := parseFlags(os.Args[1:], os.Stderr)
	if errors.Is(err, flag.ErrHelp) {
		return
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "consumer:", err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, cfg, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "consumer:", err)
		os.Exit(1)
	}
}

// parseFlags reads the command line into a config and checks it.
func parseFlags(args []string, errOut io.Writer) (config, error) {
	var cfg config
	fs := flag.NewFlagSet("consumer", flag.ContinueOnError)
	fs.SetOutput(errOut)
	fs.StringVar(&cfg.addr, "addr", "hstream://127.0.0.1:6570", "server url: host:port, hstream://h1:6570,h2:6570 or hstreams://… for TLS")
	fs.StringVar(&cfg.stream, "stream", "telemetry", "stream to consume (used when the subscription is created)")
	fs.StringVar(&cfg.subscription, "subscription", "", "subscription id, created if missing (default: the stream's name + \"-example\")")
	fs.StringVar(&cfg.offset, "offset", "earliest", "where a new subscription starts: earliest or latest (an existing one resumes where it was)")
	fs.StringVar(&cfg.name, "name", fmt.Sprintf("example-%d", os.Getpid()), "consumer name, unique among the subscription's consumers")
	fs.IntVar(&cfg.max, "max", 0, "stop after this many records (0 = until Ctrl-C)")
	fs.DurationVar(&cfg.every, "every", 5*time.Second, "print a summary line this often (0 = only at the end)")
	if err := fs.Parse(args); err != nil {
		return config{}, err
	}
	if fs.NArg() > 0 {
		return config{}, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	return cfg, cfg.validate()
}

// validate reports every flag set to a value it cannot take.
func (cfg config) validate() error {
	var errs []error
	if cfg.stream == "" && cfg.subscription == "" {
		errs = append(errs, errors.New("-stream and -subscription are both empty: want a stream, a subscription or both"))
	}
	if _, err := parseOffset(cfg.offset); err != nil {
		errs = append(errs, err)
	}
	if cfg.name == "" {
		errs = append(errs, errors.New(`-name "": want a consumer name`))
	}
	if cfg.max < 0 {
		errs = append(errs, fmt.Errorf("-max %d: want 0 (until Ctrl-C) or more", cfg.max))
	}
	if cfg.every < 0 {
		errs = append(errs, fmt.Errorf("-every %s: want 0 (only at the end) or more", cfg.every))
	}
	return errors.Join(errs...)
}

func parseOffset(s string) (hstreampb.SpecialOffset, error) {
	switch s {
	case "earliest":
		return hstreampb.SpecialOffset_EARLIEST, nil
	case "latest":
		return hstreampb.SpecialOffset_LATEST, nil
	}
	return 0, fmt.Errorf("-offset %q: want earliest or latest", s)
}

// subscriptionID is the subscription to join.
func (cfg config) subscriptionID() string {
	if cfg.subscription != "" {
		return cfg.subscription
	}
	return cfg.stream + "-example"
}

// errMaxReached ends Consume once -max records were printed.
var errMaxReached = errors.New("-max records consumed")

// run joins the subscription (creating it if needed) and prints and acks
// records until cfg.max were printed or ctx is done (Ctrl-C), both normal
// ends, after which it prints a final summary.
func run(ctx context.Context, cfg config, out io.Writer) error {
	if err := cfg.validate(); err != nil {
		return err
	}
	c, err := client.Dial(ctx, cfg.addr)
	if err != nil {
		return err
	}
	defer c.Close()
	subID := cfg.subscriptionID()
	if err := ensureSubscription(ctx, c, cfg, out); err != nil {
		return err
	}

	s := &summary{out: out, start: time.Now()}
	s.last = s.start
	handler := func(_ context.Context, m *client.Message) error {
		if err := s.record(m.Record); err != nil {
			return err
		}
		m.Ack() // only once printed
		if cfg.max > 0 && s.count() >= cfg.max {
			return errMaxReached
		}
		return nil
	}
	// The consumer runs in its own goroutine; this one prints the summary
	// lines until it ends (by -max, ctx, or an error).
	con, err := c.StartConsumer(ctx, subID, cfg.name, handler)
	if err != nil {
		return err
	}
	var tick <-chan time.Time
	if cfg.every > 0 {
		t := time.NewTicker(cfg.every)
		defer t.Stop()
		tick = t.C
	}
	for done := false; !done; {
		select {
		case <-con.Done():
			done = true
		case now := <-tick:
			s.line(now)
		}
	}
	err = con.Err()
	switch {
	case errors.Is(err, errMaxReached):
		err = nil
	case errors.Is(err, context.Canceled) && ctx.Err() != nil:
		err = nil // Ctrl-C
	case err == nil:
		err = errors.New("the server ended the subscription's stream")
	}
	s.final()
	return err
}

// ensureSubscription creates the subscription, or checks that the existing
// one reads cfg.stream.
func ensureSubscription(ctx context.Context, c *client.Client, cfg config, out io.Writer) error {
	subID := cfg.subscriptionID()
	offset, _ := parseOffset(cfg.offset) // validated
	if cfg.stream != "" {
		_, err := c.CreateSubscription(ctx, subID, cfg.stream, client.WithSubscriptionOffset(offset))
		switch {
		case err == nil:
			fmt.Fprintf(out, "created subscription %s on stream %s, from %s\n", subID, cfg.stream, cfg.offset)
			return nil
		case status.Code(err) == codes.NotFound:
			return fmt.Errorf("creating subscription %s: stream %s does not exist (publish to it first, or `weir stream create %s`): %w", subID, cfg.stream, cfg.stream, err)
		case status.Code(err) != codes.AlreadyExists:
			return fmt.Errorf("creating subscription %s: %w", subID, err)
		}
	}
	sub, _, err := c.GetSubscription(ctx, subID)
	if err != nil {
		return fmt.Errorf("subscription %s: %w", subID, err)
	}
	if cfg.stream != "" && sub.GetStreamName() != cfg.stream {
		return fmt.Errorf("subscription %s reads stream %s, not %s: pick another -subscription", subID, sub.GetStreamName(), cfg.stream)
	}
	fmt.Fprintf(out, "joined subscription %s on stream %s (it resumes where it was; -offset applies to new ones)\n", subID, sub.GetStreamName())
	return nil
}

// summary prints records and summary lines. The consumer's goroutine (the
// handler) and run's (the summary lines) both write, so mu guards the
// fields below it, out included.
type summary struct {
	start time.Time

	mu      sync.Mutex
	out     io.Writer
	n       int           // records printed
	maxLag  time.Duration // the largest lag seen
	last    time.Time     // when the last summary line was printed
	lastN   int           // n then
	lastMax time.Duration // the largest lag since then
}

// record prints one record with its lag: the time since the server stored
// it (the publish time of its batch).
func (s *summary) record(r client.ReceivedRecord) error {
	var lag time.Duration
	if !r.PublishTime.IsZero() {
		lag = max(0, time.Since(r.PublishTime))
	}
	payload := string(r.Payload)
	if !utf8.Valid(r.Payload) {
		payload = fmt.Sprintf("%q", r.Payload)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.n++
	s.maxLag, s.lastMax = max(s.maxLag, lag), max(s.lastMax, lag)
	_, err := fmt.Fprintf(s.out, "%s\t%s\tlag %s\t%s\n", wire.FormatRecordID(r.ID), r.Key, lag.Round(time.Millisecond), payload)
	return err
}

func (s *summary) count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.n
}

// line prints a summary line about the records since the last one.
func (s *summary) line(now time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	rate := float64(s.n-s.lastN) / now.Sub(s.last).Seconds()
	fmt.Fprintf(s.out, "-- %s: %d records, %.1f/s, max lag %s\n",
		now.Sub(s.start).Round(100*time.Millisecond), s.n, rate, s.lastMax.Round(time.Millisecond))
	s.last, s.lastN, s.lastMax = now, s.n, 0
}

// final prints the summary of the whole run.
func (s *summary) final() {
	s.mu.Lock()
	defer s.mu.Unlock()
	elapsed := time.Since(s.start)
	fmt.Fprintf(s.out, "consumed %d records in %s, %.1f/s, max lag %s\n",
		s.n, elapsed.Round(time.Millisecond), float64(s.n)/elapsed.Seconds(), s.maxLag.Round(time.Millisecond))
}
