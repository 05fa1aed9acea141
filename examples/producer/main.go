// Command producer appends records to a stream with the client's
// BufferedProducer, with every batching, flow-control and compression
// setting on a flag, and reports throughput (records/s, MB/s) and append
// latency (p50, p99: from the Append call to its future resolving). Start a
// node with `make run`, then:
//
//	go run ./examples/producer -stream bench -records 100000 -keys 100 -size 200
//
// See README.md for the flags.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/signal"
	"slices"
	"strconv"
	"sync"
	"syscall"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/weir-log/weir/api/hstreampb"
	"github.com/weir-log/weir/client"
)

// config is everything the flags set.
type config struct {
	addr        string // server url, as client.Dial takes it
	stream      string // created with shards shards if missing
	shards      int
	records     int // how many records to append
	keys        int // distinct partition keys, used in turn
	size        int // payload bytes per record
	batchCount  int
	batchBytes  int
	batchAge    time.Duration
	flowBytes   int
	compression string // none, gzip or zstd
}

func main() {
	cfg, err := parseFlags(os.Args[1:], os.Stderr)
	if errors.Is(err, flag.ErrHelp) {
		return
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "producer:", err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, cfg, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "producer:", err)
		os.Exit(1)
	}
}

// parseFlags reads the command line into a config and checks it.
func parseFlags(args []string, errOut io.Writer) (config, error) {
	var cfg config
	fs := flag.NewFlagSet("producer", flag.ContinueOnError)
	fs.SetOutput(errOut)
	fs.StringVar(&cfg.addr, "addr", "hstream://127.0.0.1:6570", "server url: host:port, hstream://h1:6570,h2:6570 or hstreams://… for TLS")
	fs.StringVar(&cfg.stream, "stream", "bench", "stream to append to, created if missing")
	fs.IntVar(&cfg.shards, "shards", 4, "shards of the stream, if it is created")
	fs.IntVar(&cfg.records, "records", 100000, "records to append")
	fs.IntVar(&cfg.keys, "keys", 100, "distinct partition keys (key-0000, key-0001, …), used in turn")
	fs.IntVar(&cfg.size, "size", 200, "payload bytes per record")
	fs.IntVar(&cfg.batchCount, "batch-records", client.DefaultBatchRecordCountLimit, "BatchRecordCountLimit: cut a shard's batch at this many records")
	fs.IntVar(&cfg.batchBytes, "batch-bytes", client.DefaultBatchBytesLimit, "BatchBytesLimit: cut a shard's batch at this many record bytes")
	fs.DurationVar(&cfg.batchAge, "batch-age", client.DefaultBatchAgeLimit, "BatchAgeLimit: cut a shard's batch this long after its first record")
	fs.IntVar(&cfg.flowBytes, "flow-bytes", client.DefaultFlowControlBytesLimit, "FlowControlBytesLimit: record bytes buffered or in flight, at most; Append blocks at the limit")
	fs.StringVar(&cfg.compression, "compression", "none", "batch compression: none, gzip or zstd")
	if err := fs.Parse(args); err != nil {
		return config{}, err
	}
	if fs.NArg() > 0 {
		return config{}, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	return cfg, cfg.validate()
}

// validate reports every flag set to a value it cannot take, except the
// producer settings, which NewBufferedProducer checks (and names).
func (cfg config) validate() error {
	var errs []error
	if cfg.stream == "" {
		errs = append(errs, errors.New(`-stream "": want a stream name`))
	}
	if cfg.shards < 1 {
		errs = append(errs, fmt.Errorf("-shards %d: want at least 1", cfg.shards))
	}
	if cfg.records < 1 {
		errs = append(errs, fmt.Errorf("-records %d: want at least 1", cfg.records))
	}
	if cfg.keys < 1 {
		errs = append(errs, fmt.Errorf("-keys %d: want at least 1", cfg.keys))
	}
	if cfg.size < 0 {
		errs = append(errs, fmt.Errorf("-size %d: want 0 or more", cfg.size))
	}
	if _, err := parseCompression(cfg.compression); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

func parseCompression(s string) (hstreampb.CompressionType, error) {
	switch s {
	case "none":
		return hstreampb.CompressionType_None, nil
	case "gzip":
		return hstreampb.CompressionType_Gzip, nil
	case "zstd":
		return hstreampb.CompressionType_Zstd, nil
	}
	return 0, fmt.Errorf("-compression %q: want none, gzip or zstd", s)
}

// run creates the stream if needed, appends cfg.records records through a
// BufferedProducer, closes it (which sends what it still holds), and prints
// the throughput and latency. ctx ending (Ctrl-C) stops the appends early,
// a normal end. It returns an error if a record was not stored.
func run(ctx context.Context, cfg config, out io.Writer) error {
	if err := cfg.validate(); err != nil {
		return err
	}
	comp, _ := parseCompression(cfg.compression) // validated
	c, err := client.Dial(ctx, cfg.addr)
	if err != nil {
		return err
	}
	defer c.Close()
	if err := ensureStream(ctx, c, cfg, out); err != nil {
		return err
	}

	p, err := c.NewBufferedProducer(ctx, cfg.stream,
		client.BatchRecordCountLimit(cfg.batchCount),
		client.BatchBytesLimit(cfg.batchBytes),
		client.BatchAgeLimit(cfg.batchAge),
		client.FlowControlBytesLimit(cfg.flowBytes),
		client.Compression(comp))
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "appending %d records of %d bytes over %d keys: batches of %d records / %d bytes / %s, flow control %d bytes, compression %s\n",
		cfg.records, cfg.size, cfg.keys, cfg.batchCount, cfg.batchBytes, cfg.batchAge, cfg.flowBytes, cfg.compression)

	t := newTracker()
	rng := rand.New(rand.NewPCG(1, 2))
	start := time.Now()
	appended := 0
	for i := range cfg.records {
		r := client.Record{Key: fmt.Sprintf("key-%04d", i%cfg.keys), Payload: payload(rng, i, cfg.size)}
		t0 := time.Now()
		res, err := p.Append(ctx, r)
		if err != nil {
			if ctx.Err() != nil {
				break // Ctrl-C while Append waited for buffer space
			}
			t.fail(err)
			continue
		}
		t.add(res, t0)
		appended++
		if ctx.Err() != nil {
			break
		}
	}
	// Close sends what the producer still holds and returns once every
	// future has resolved; then the tracker has seen them all.
	p.Close()
	t.wait()
	elapsed := time.Since(start)

	if ctx.Err() != nil {
		fmt.Fprintf(out, "interrupted after %d records\n", appended)
	}
	return t.report(out, elapsed, cfg.size)
}

// ensureStream creates the stream, or reports that it exists.
func ensureStream(ctx context.Context, c *client.Client, cfg config, out io.Writer) error {
	_, err := c.CreateStream(ctx, cfg.stream, client.ShardCount(cfg.shards))
	switch {
	case err == nil:
		fmt.Fprintf(out, "created stream %s with %d shards\n", cfg.stream, cfg.shards)
		return nil
	case status.Code(err) != codes.AlreadyExists:
		return fmt.Errorf("creating stream %s: %w", cfg.stream, err)
	}
	shards, err := c.ListShards(ctx, cfg.stream)
	if err != nil {
		return fmt.Errorf("stream %s: %w", cfg.stream, err)
	}
	fmt.Fprintf(out, "using existing stream %s (%d shards; -shards applies to new streams)\n", cfg.stream, len(shards))
	return nil
}

// payload returns size bytes of JSON-looking text: a sequence number and
// random hex digits, which compress to about half, as telemetry might.
func payload(rng *rand.Rand, seq, size int) []byte {
	const hex = "0123456789abcdef"
	b := make([]byte, 0, size)
	b = append(b, `{"seq":`...)
	b = strconv.AppendInt(b, int64(seq), 10)
	b = append(b, `,"data":"`...)
	for len(b) < size-2 {
		b = append(b, hex[rng.IntN(len(hex))])
	}
	b = append(b, `"}`...)
	if len(b) > size { // size too small for the JSON: plain digits
		b = b[:0]
		for len(b) < size {
			b = append(b, hex[rng.IntN(len(hex))])
		}
	}
	return b
}

// tracker measures each record's append latency: from its Append call to
// its future resolving. The records of one batch share a Done channel, so
// it waits with one goroutine per batch in flight (bounded by flow
// control), not one per record, and not in append order, which would count
// a batch that waited behind another shard's as slow.
type tracker struct {
	wg sync.WaitGroup

	// mu guards the fields below.
	mu        sync.Mutex
	waiting   map[<-chan struct{}][]pending // per Done channel, the records awaiting it
	latencies []time.Duration               // of the records stored
	failed    int
	firstErr  error
}

type pending struct {
	res *client.AppendResult
	t0  time.Time // when Append was called
}

func newTracker() *tracker {
	return &tracker{waiting: make(map[<-chan struct{}][]pending)}
}

// add tracks one record's future.
func (t *tracker) add(res *client.AppendResult, t0 time.Time) {
	done := res.Done()
	t.mu.Lock()
	defer t.mu.Unlock()
	recs, ok := t.waiting[done]
	t.waiting[done] = append(recs, pending{res, t0})
	if !ok {
		// A channel resolved and removed before now starts over here:
		// its new goroutine finds it closed and resolves the late record.
		t.wg.Go(func() {
			<-done
			t.resolve(done, time.Now())
		})
	}
}

// resolve records the results of the records waiting on done, which is
// closed.
func (t *tracker) resolve(done <-chan struct{}, now time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, p := range t.waiting[done] {
		if _, err := p.res.Wait(context.Background()); err != nil { // resolved: does not block
			t.failLocked(err)
			continue
		}
		t.latencies = append(t.latencies, now.Sub(p.t0))
	}
	delete(t.waiting, done)
}

// fail counts a record that was not stored.
func (t *tracker) fail(err error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.failLocked(err)
}

func (t *tracker) failLocked(err error) {
	t.failed++
	if t.firstErr == nil {
		t.firstErr = err
	}
}

// wait waits until every tracked future has resolved.
func (t *tracker) wait() { t.wg.Wait() }

// report prints the summary and returns an error if a record failed.
func (t *tracker) report(out io.Writer, elapsed time.Duration, size int) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	ok := len(t.latencies)
	secs := elapsed.Seconds()
	fmt.Fprintf(out, "stored %d records in %s: %.0f records/s, %.2f MB/s of payload; errors %d\n",
		ok, elapsed.Round(time.Millisecond), float64(ok)/secs, float64(ok*size)/secs/1e6, t.failed)
	if ok > 0 {
		slices.Sort(t.latencies)
		fmt.Fprintf(out, "append latency: p50 %s  p99 %s  max %s\n",
			round(percentile(t.latencies, 50)), round(percentile(t.latencies, 99)), round(t.latencies[ok-1]))
	}
	if t.failed > 0 {
		return fmt.Errorf("%d records not stored; first error: %w", t.failed, t.firstErr)
	}
	return nil
}

// percentile returns the p-th percentile of sorted, nearest-rank.
func percentile(sorted []time.Duration, p int) time.Duration {
	i := (len(sorted)*p + 99) / 100 // ceil(n·p/100), 1-based
	return sorted[max(i, 1)-1]
}

// round keeps three significant digits or so.
func round(d time.Duration) time.Duration {
	switch {
	case d >= time.Second:
		return d.Round(10 * time.Millisecond)
	case d >= time.Millisecond:
		return d.Round(10 * time.Microsecond)
	default:
		return d.Round(time.Microsecond)
	}
}
