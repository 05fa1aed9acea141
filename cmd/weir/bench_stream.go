package main

import (
	"context"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/weir-log/weir/api/hstreampb"
	"github.com/weir-log/weir/client"
	"github.com/weir-log/weir/internal/bench"
)

// stampBytes is the size of the append time at the start of every bench
// record's payload: unix nanoseconds, big-endian.
const stampBytes = 8

// streamBenchFlags are the flags of the benches that go through the gRPC
// API (write, read, writeread).
type streamBenchFlags struct {
	streams, shards int
	prefix          string
	keep            bool

	keys, recordSize, concurrency int
	batchRecords, batchBytes      int
	batchAge                      time.Duration
	flowBytes                     int
	compression                   string
	rate                          float64

	consumers int
	reads     bool // the bench consumes (--consumers is a flag)

	duration time.Duration
	count    int64
	out      benchOutput
}

func (f *streamBenchFlags) addFlags(cmd *cobra.Command, write, read bool) {
	fs := cmd.Flags()
	fs.IntVar(&f.streams, "streams", 1, "number of streams, named <stream-prefix><i>")
	fs.IntVar(&f.shards, "shards", 1, "shards of each stream the bench creates")
	fs.StringVar(&f.prefix, "stream-prefix", "bench-", "stream names are this plus the stream number")
	fs.BoolVar(&f.keep, "keep", false, "keep the streams the bench created (deleted at the end by default)")
	fs.IntVar(&f.keys, "keys", 16, "distinct partition keys (key-0 …), spread round-robin over the records")
	fs.IntVar(&f.recordSize, "record-size", 256, "payload bytes per record (at least 8: the append time)")
	fs.IntVar(&f.concurrency, "concurrency", 4, "writers, each with its own BufferedProducer (writer i writes stream i mod --streams)")
	fs.IntVar(&f.batchRecords, "batch-records", client.DefaultBatchRecordCountLimit, "producer batch record limit (BatchRecordCountLimit)")
	fs.IntVar(&f.batchBytes, "batch-bytes", client.DefaultBatchBytesLimit, "producer batch byte limit (BatchBytesLimit)")
	fs.DurationVar(&f.batchAge, "batch-age", client.DefaultBatchAgeLimit, "producer batch age limit (BatchAgeLimit)")
	fs.IntVar(&f.flowBytes, "flow-bytes", client.DefaultFlowControlBytesLimit, "bytes each producer holds unacknowledged (FlowControlBytesLimit)")
	fs.StringVar(&f.compression, "compression", "none", "batch compression: none, gzip or zstd")
	if write {
		fs.Float64Var(&f.rate, "rate", 0, "target records per second across writers (0 = as fast as possible)")
	}
	if read {
		f.reads = true
		fs.IntVar(&f.consumers, "consumers", 1, "consumers per stream, sharing one subscription")
	}
	f.out.addFlags(cmd)
}

func (f *streamBenchFlags) validate() error {
	for _, c := range []struct {
		flag string
		v    int
	}{{"streams", f.streams}, {"shards", f.shards}, {"keys", f.keys}, {"concurrency", f.concurrency}, {"consumers", f.consumers}} {
		if c.v < 1 && (c.flag != "consumers" || f.reads) {
			return fmt.Errorf("--%s %d: want at least 1", c.flag, c.v)
		}
	}
	if f.recordSize < stampBytes {
		return fmt.Errorf("--record-size %d: want at least %d (the append time)", f.recordSize, stampBytes)
	}
	if f.rate < 0 {
		return fmt.Errorf("--rate %g: want 0 (no limit) or more", f.rate)
	}
	_, err := parseCompression(f.compression)
	return err
}

func (f *streamBenchFlags) producerOpts() []client.ProducerOpt {
	comp, _ := parseCompression(f.compression) // validated
	return []client.ProducerOpt{
		client.BatchRecordCountLimit(f.batchRecords),
		client.BatchBytesLimit(f.batchBytes),
		client.BatchAgeLimit(f.batchAge),
		client.FlowControlBytesLimit(f.flowBytes),
		client.Compression(comp),
	}
}

// benchStreams are the streams of one bench run.
type benchStreams struct {
	names   []string
	created []bool // by this run (so deleted at the end unless --keep)
}

// setupStreams creates the bench's streams; existing ones are used as
// they are, unless fresh: then they are refused (with an error naming
// them, after deleting the streams this call created).
func setupStreams(ctx context.Context, c *client.Client, f *streamBenchFlags, fresh bool) (*benchStreams, error) {
	s := &benchStreams{}
	var existing []string
	for i := range f.streams {
		name := f.prefix + strconv.Itoa(i)
		_, err := c.CreateStream(ctx, name, client.ShardCount(f.shards))
		switch {
		case err == nil:
			s.created = append(s.created, true)
		case status.Code(err) == codes.AlreadyExists:
			s.created = append(s.created, false)
			existing = append(existing, strconv.Quote(name))
		default:
			s.cleanup(c, f.keep)
			return nil, fmt.Errorf("creating stream %q: %w", name, err)
		}
		s.names = append(s.names, name)
	}
	if fresh && len(existing) > 0 {
		s.cleanup(c, f.keep)
		what := "stream " + existing[0] + " already exists"
		if len(existing) > 1 {
			what = "streams " + strings.Join(existing, ", ") + " already exist"
		}
		return nil, fmt.Errorf("%s: the bench fills new streams and reads them from their earliest record, "+
			"where older records would count too; read existing records with --no-fill, or pick another --stream-prefix", what)
	}
	return s, nil
}

// cleanup deletes the streams this run created, unless keep.
func (s *benchStreams) cleanup(c *client.Client, keep bool) {
	if keep {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for i, name := range s.names {
		if s.created[i] {
			_ = c.DeleteStream(ctx, name, true, true)
		}
	}
}

// writeAll runs f.concurrency writers, each appending through its own
// BufferedProducer while lim allows, and records each acknowledged record
// (latency: Append call to its result) into rec. It returns once every
// record's result is known.
func writeAll(ctx context.Context, c *client.Client, f *streamBenchFlags, streams []string, lim *bench.Limit, rec *bench.Recorder) error {
	producers := make([]*client.BufferedProducer, f.concurrency)
	for w := range producers {
		p, err := c.NewBufferedProducer(ctx, streams[w%len(streams)], f.producerOpts()...)
		if err != nil {
			for _, p := range producers[:w] {
				p.Close()
			}
			return err
		}
		producers[w] = p
	}
	var wg sync.WaitGroup
	for w, p := range producers {
		wg.Go(func() { writer(ctx, p, w, f, lim, rec) })
	}
	wg.Wait()
	return nil
}

// pendingAppend is a record waiting for its result.
type pendingAppend struct {
	res   *client.AppendResult
	sent  time.Time
	bytes int
}

// writer is writer w: record j of it has key key-<(w + j·concurrency) mod
// keys>. Results are awaited by up to 32 goroutines, a record going to
// the one of its key, so a record is timed when its own result resolves:
// a key's records are in one shard, whose results resolve in order. (Keys
// sharing a waiter may be in different shards; a record can then be timed
// late by the other shard's lag. With --keys ≤ 32 that never happens.)
func writer(ctx context.Context, p *client.BufferedProducer, w int, f *streamBenchFlags, lim *bench.Limit, rec *bench.Recorder) {
	waiters := make([]chan pendingAppend, min(f.keys, 32))
	var wg sync.WaitGroup
	for i := range waiters {
		ch := make(chan pendingAppend, 1024)
		waiters[i] = ch
		wg.Go(func() {
			for pa := range ch {
				<-pa.res.Done()
				done := time.Now()
				if _, err := pa.res.Wait(context.Background()); err != nil {
					rec.Error()
					continue
				}
				rec.Record(done.Sub(pa.sent), pa.bytes)
			}
		})
	}
	rng := rand.New(rand.NewPCG(uint64(w), 0x5eed))
	filler := make([]byte, f.recordSize-stampBytes)
	for i := range filler {
		filler[i] = byte('a' + rng.IntN(26))
	}
	keyNames := make([]string, f.keys)
	for k := range keyNames {
		keyNames[k] = "key-" + strconv.Itoa(k)
	}
	k := w % f.keys
	for lim.Next(ctx) {
		payload := make([]byte, f.recordSize)
		copy(payload[stampBytes:], filler)
		sent := time.Now()
		binary.BigEndian.PutUint64(payload, uint64(sent.UnixNano()))
		r := client.Record{Key: keyNames[k], Payload: payload}
		res, err := p.Append(ctx, r)
		if err != nil {
			rec.Error()
		} else {
			waiters[k%len(waiters)] <- pendingAppend{res, sent, len(r.Key) + len(payload)}
		}
		k = (k + f.concurrency) % f.keys
	}
	p.Close() // sends what is buffered and waits for the results
	for _, ch := range waiters {
		close(ch)
	}
	wg.Wait()
}

// recordID identifies a record, for telling redeliveries apart.
type recordID struct {
	shard, batch uint64
	index        uint32
}

// deliveries counts the distinct bench records consumers were delivered
// and records their append-to-delivery latency into rec. Records that do
// not parse as bench records (isBenchRecord) are skipped and counted as
// foreign.
type deliveries struct {
	rec *bench.Recorder

	mu          sync.Mutex // guards seen and bench
	seen        map[recordID]struct{}
	bench       int64 // distinct bench records in seen
	redelivered atomic.Int64
	foreign     atomic.Int64 // distinct records that are not bench records
	last        atomic.Int64 // unix nanoseconds of the last delivery (0: none yet)

	target  int64 // close reached once this many bench records were delivered (0: never)
	reached chan struct{}
	once    sync.Once
}

func newDeliveries(rec *bench.Recorder) *deliveries {
	return &deliveries{rec: rec, seen: map[recordID]struct{}{}, reached: make(chan struct{})}
}

// setTarget sets the count at which reached closes (it may already be).
func (d *deliveries) setTarget(n int64) {
	d.mu.Lock()
	d.target = n
	got := d.bench
	d.mu.Unlock()
	if n > 0 && got >= n {
		d.once.Do(func() { close(d.reached) })
	}
}

// lastDelivery is when the last record (of any kind) was delivered, or
// the zero time if none was.
func (d *deliveries) lastDelivery() time.Time {
	if ns := d.last.Load(); ns != 0 {
		return time.Unix(0, ns)
	}
	return time.Time{}
}

// Bench records' payloads start with their append time; the times of
// plausible ones lie between these bounds (the upper one from now).
var (
	benchEpoch  = time.Date(2020, 1, 1, 0, 0, 0, 0, time.UTC)
	benchFuture = 24 * time.Hour
)

// isBenchRecord reports whether a record is one a bench wrote: key
// key-<n>, payload an append time (stampBytes, big-endian unix
// nanoseconds, not before 2020 nor more than a day ahead of now) then
// lowercase letters.
func isBenchRecord(key string, payload []byte, now time.Time) bool {
	n, ok := strings.CutPrefix(key, "key-")
	if !ok || n == "" || strings.Trim(n, "0123456789") != "" || len(payload) < stampBytes {
		return false
	}
	sent := int64(binary.BigEndian.Uint64(payload))
	if sent < benchEpoch.UnixNano() || sent > now.Add(benchFuture).UnixNano() {
		return false
	}
	for _, b := range payload[stampBytes:] {
		if b < 'a' || b > 'z' {
			return false
		}
	}
	return true
}

func (d *deliveries) handle(_ context.Context, m *client.Message) error {
	now := time.Now()
	m.Ack()
	d.last.Store(now.UnixNano())
	id := recordID{m.Record.ID.GetShardId(), m.Record.ID.GetBatchId(), m.Record.ID.GetBatchIndex()}
	ours := isBenchRecord(m.Record.Key, m.Record.Payload, now)
	d.mu.Lock()
	if _, ok := d.seen[id]; ok {
		d.mu.Unlock()
		d.redelivered.Add(1)
		return nil
	}
	d.seen[id] = struct{}{}
	if ours {
		d.bench++
	}
	got, target := d.bench, d.target
	d.mu.Unlock()
	if !ours {
		d.foreign.Add(1)
		return nil
	}
	sent := time.Unix(0, int64(binary.BigEndian.Uint64(m.Record.Payload)))
	d.rec.Record(now.Sub(sent), len(m.Record.Key)+len(m.Record.Payload))
	if target > 0 && got >= target {
		d.once.Do(func() { close(d.reached) })
	}
	return nil
}

// benchConsumers are the subscriptions and consumers of a read bench.
type benchConsumers struct {
	c    *client.Client
	subs []string
	cons []*client.Consumer
}

// startConsumers subscribes to every stream (from offset) and starts n
// consumers on each subscription, all handled by d.
func startConsumers(ctx context.Context, c *client.Client, streams []string, n int, offset hstreampb.SpecialOffset, d *deliveries) (*benchConsumers, error) {
	bc := &benchConsumers{c: c}
	run := strconv.FormatInt(time.Now().UnixNano(), 36)
	for _, s := range streams {
		sub := "bench-" + run + "-" + s
		if _, err := c.CreateSubscription(ctx, sub, s, client.WithSubscriptionOffset(offset),
			client.WithAckTimeout(60*time.Second), client.WithMaxUnackedRecords(100000)); err != nil {
			bc.stop()
			return nil, fmt.Errorf("subscribing to %q: %w", s, err)
		}
		bc.subs = append(bc.subs, sub)
		for i := range n {
			con, err := c.StartConsumer(ctx, sub, "bench-"+strconv.Itoa(i), d.handle)
			if err != nil {
				bc.stop()
				return nil, fmt.Errorf("starting consumer %d of %q: %w", i, sub, err)
			}
			bc.cons = append(bc.cons, con)
		}
	}
	return bc, nil
}

// stop stops the consumers and deletes the subscriptions.
func (bc *benchConsumers) stop() {
	for _, con := range bc.cons {
		_ = con.Stop()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, sub := range bc.subs {
		_ = bc.c.DeleteSubscription(ctx, sub, true)
	}
}

// runTimed checks the flags of a run that writes (write, writeread), sets
// its streams up and calls body with them and the run's duration; the
// streams are cleaned up afterwards (unless --keep).
func (f *streamBenchFlags) runTimed(cmd *cobra.Command, g *clientFlags, body func(ctx context.Context, c *client.Client, streams *benchStreams, duration time.Duration) error) error {
	if err := f.validate(); err != nil {
		return err
	}
	if err := checkRun(f.duration, f.count); err != nil {
		return err
	}
	duration := runDuration(cmd, f.duration)
	ctx, stop := interruptible(cmd)
	defer stop()
	return g.run(ctx, func(ctx context.Context, c *client.Client) error {
		streams, err := setupStreams(ctx, c, f, false)
		if err != nil {
			return err
		}
		defer streams.cleanup(c, f.keep)
		return body(ctx, c, streams, duration)
	})
}
