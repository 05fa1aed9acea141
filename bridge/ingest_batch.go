package bridge

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/weir-log/weir/api/hstreampb"
	"github.com/weir-log/weir/api/wire"
	"github.com/weir-log/weir/cluster"
	"github.com/weir-log/weir/conf"
)

// recordFraming bounds what a record adds to a batch payload besides its
// bytes: the field tag and the length prefix.
const recordFraming = 1 + 5

// streamRoute is a stream's routing table, resolved once: the shard map
// and the batcher of each shard.
type streamRoute struct {
	ready    chan struct{} // closed once resolved
	sm       *wire.ShardMap
	batchers map[uint64]*batcher
	err      error
}

// batcherFor returns the batcher of the shard tgt.Key maps to in
// tgt.Stream, resolving (and, if the route says so, creating) the stream
// on first use.
func (i *Ingest) batcherFor(ctx context.Context, tgt Target) (*batcher, error) {
	i.streamsMu.RLock()
	sr := i.streams[tgt.Stream]
	i.streamsMu.RUnlock()
	if sr == nil {
		i.streamsMu.Lock()
		if sr = i.streams[tgt.Stream]; sr == nil {
			sr = &streamRoute{ready: make(chan struct{})}
			i.streams[tgt.Stream] = sr
			i.streamsMu.Unlock()
			i.resolve(ctx, sr, tgt)
		} else {
			i.streamsMu.Unlock()
		}
	}
	select {
	case <-sr.ready:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	if sr.err != nil {
		return nil, sr.err
	}
	return sr.batchers[sr.sm.Lookup(tgt.Key)], nil
}

// resolve fills sr in; a failure is not cached (sr leaves the map), so the
// next publish tries again.
func (i *Ingest) resolve(ctx context.Context, sr *streamRoute, tgt Target) {
	defer close(sr.ready)
	sr.sm, sr.batchers, sr.err = i.lookupStream(ctx, tgt)
	if sr.err != nil {
		i.evict(tgt.Stream, sr)
	}
}

func (i *Ingest) lookupStream(ctx context.Context, tgt Target) (*wire.ShardMap, map[uint64]*batcher, error) {
	metas, sm, err := resolveStream(ctx, i.node, i.opts.Stream, i.log, tgt)
	if err != nil {
		return nil, nil, err
	}
	batchers := make(map[uint64]*batcher, len(metas))
	for _, m := range metas {
		b, err := i.batcher(m)
		if err != nil {
			return nil, nil, err
		}
		batchers[m.ID] = b
	}
	return sm, batchers, nil
}

// resolveStream returns the shards of tgt.Stream, in hash-range order, and
// their ShardMap (HashKey ranges, as the gRPC clients route), creating the
// stream with the defaults d when it is missing and tgt.Create. A missing
// stream its route may not create is cluster.ErrStreamNotFound (wrapped).
// The ingest hook and the ingest connectors resolve their streams with it.
func resolveStream(ctx context.Context, node *cluster.Node, d conf.StreamDefaults, log *slog.Logger, tgt Target) ([]cluster.ShardMeta, *wire.ShardMap, error) {
	metas, err := node.StreamShards(tgt.Stream)
	if errors.Is(err, cluster.ErrStreamNotFound) && tgt.Create {
		metas, err = createStream(ctx, node, d, log, tgt.Stream)
	}
	if errors.Is(err, cluster.ErrStreamNotFound) {
		return nil, nil, fmt.Errorf("%w: %q (its route does not create it)", err, tgt.Stream)
	}
	if err != nil {
		return nil, nil, err
	}
	shards := make([]*hstreampb.Shard, len(metas))
	for k, m := range metas {
		shards[k] = &hstreampb.Shard{StreamName: m.Stream, ShardId: m.ID, StartHashRangeKey: m.Start, EndHashRangeKey: m.End, Epoch: m.Epoch, IsActive: true}
	}
	sm, err := wire.NewShardMap(shards)
	if err != nil {
		return nil, nil, fmt.Errorf("bridge: shards of stream %q: %w", tgt.Stream, err)
	}
	return metas, sm, nil
}

// createStream creates a stream with the stream defaults d; one created
// meanwhile by someone else is as good.
func createStream(ctx context.Context, node *cluster.Node, d conf.StreamDefaults, log *slog.Logger, name string) ([]cluster.ShardMeta, error) {
	m := cluster.StreamMeta{
		Name:              name,
		ShardCount:        max(d.ShardCount, 1),
		ReplicationFactor: max(d.ReplicationFactor, 1),
		BacklogSeconds:    uint32(d.BacklogDuration / time.Second),
	}
	_, _, err := node.CreateStream(ctx, m)
	switch {
	case err == nil:
		log.Info("stream created for MQTT publishes", "stream", name, "shards", m.ShardCount)
	case errors.Is(err, cluster.ErrStreamExists):
	default:
		return nil, fmt.Errorf("bridge: creating stream %q: %w", name, err)
	}
	return node.StreamShards(name)
}

// evict drops a stream's cached route that failed to resolve.
func (i *Ingest) evict(stream string, sr *streamRoute) {
	i.streamsMu.Lock()
	defer i.streamsMu.Unlock()
	if i.streams[stream] == sr {
		delete(i.streams, stream)
	}
}

// dropStream handles a shard of b's stream found gone (the stream or the
// shard was deleted): the stream's route is dropped, so the next publish
// looks it up again, and every batcher of the route is stopped (what they
// hold queued fails like a deleted shard). A route resolved anew since,
// which does not hold b, is left alone; b stops in any case.
func (i *Ingest) dropStream(b *batcher) {
	b.halt()
	i.streamsMu.Lock()
	sr := i.streams[b.stream]
	if sr == nil || !sr.resolved() || sr.batchers[b.id] != b {
		i.streamsMu.Unlock()
		return
	}
	delete(i.streams, b.stream)
	i.streamsMu.Unlock()
	for _, o := range sr.batchers {
		o.halt()
	}
}

func (sr *streamRoute) resolved() bool {
	select {
	case <-sr.ready:
		return true
	default:
		return false
	}
}

// batcher returns the shard's batcher, starting it on first use.
func (i *Ingest) batcher(m cluster.ShardMeta) (*batcher, error) {
	i.mu.Lock()
	defer i.mu.Unlock()
	if i.closed {
		return nil, errClosed
	}
	if b := i.batchers[m.ID]; b != nil && !b.halted() {
		return b, nil
	}
	sh, err := i.node.Shard(m.ID)
	if err != nil {
		return nil, err
	}
	b := &batcher{
		i:       i,
		id:      m.ID,
		stream:  m.Stream,
		shard:   sh,
		signal:  make(chan struct{}, 1),
		stopc:   make(chan struct{}),
		slots:   make(chan struct{}, pipelineDepth),
		handoff: make(chan proposal, pipelineDepth),
	}
	i.batchers[m.ID] = b
	i.wg.Add(2)
	go func() {
		defer i.wg.Done()
		b.run()
	}()
	go func() {
		defer i.wg.Done()
		b.wait()
	}()
	return b, nil
}

// batcher groups the publishes to one shard, from every connection, into
// appends: one goroutine (run) proposes batches in queue order, another
// (wait) waits for their commits in the same order.
type batcher struct {
	i       *Ingest
	id      uint64
	stream  string
	shard   cluster.ShardLog
	signal  chan struct{} // the queue became non-empty
	stopc   chan struct{} // closed by halt: the shard is gone
	stop    sync.Once
	slots   chan struct{} // one token per batch proposed and not yet committed
	handoff chan proposal // proposed batches, to the waiter

	mu      sync.Mutex
	queue   []*entry // guarded by mu
	stopped bool     // guarded by mu: no more entries are taken
}

// halt makes the batcher stop: its shard, or another of its stream's, is
// gone.
func (b *batcher) halt() { b.stop.Do(func() { close(b.stopc) }) }

func (b *batcher) halted() bool {
	select {
	case <-b.stopc:
		return true
	default:
		return false
	}
}

// proposal is a batch proposed (or refused: err) for the waiter.
type proposal struct {
	pending *cluster.Pending
	entries []*entry
	err     error
}

// enqueue adds a publish to the queue; false once the batcher stopped.
func (b *batcher) enqueue(e *entry) bool {
	b.mu.Lock()
	if b.stopped {
		b.mu.Unlock()
		return false
	}
	b.queue = append(b.queue, e)
	first := len(b.queue) == 1
	b.mu.Unlock()
	if first {
		select {
		case b.signal <- struct{}{}:
		default:
		}
	}
	return true
}

// run proposes batches until the Ingest closes (then it drains the queue)
// or the shard is gone (halt, or its append finds it gone).
func (b *batcher) run() {
	defer close(b.handoff)
	for {
		draining := false
		select {
		case <-b.signal:
		case <-b.i.quit:
			draining = true
		case <-b.stopc:
			b.retire()
			return
		}
		if b.i.linger > 0 && !draining {
			t := time.NewTimer(b.i.linger)
			select {
			case <-t.C:
			case <-b.i.quit:
				draining = true
			case <-b.stopc:
			}
			t.Stop()
		}
		for {
			if hook := b.i.beforeBatch; hook != nil {
				hook()
			}
			batch, more := b.take(draining)
			if len(batch) > 0 && !b.propose(batch) {
				b.retire()
				return
			}
			if !more {
				break
			}
		}
		if draining {
			return
		}
	}
}

// take cuts the next batch, at most MaxBatchSize bytes of records (the
// first record always goes); more reports whether records remain. Once
// draining, nothing more is accepted.
func (b *batcher) take(draining bool) (batch []*entry, more bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if draining {
		b.stopped = true
	}
	size, n := 0, 0
	for n < len(b.queue) {
		sz := len(b.queue[n].rec) + recordFraming
		if n > 0 && size+sz > b.i.maxBatch {
			break
		}
		size += sz
		n++
	}
	batch = make([]*entry, n)
	copy(batch, b.queue)
	rest := copy(b.queue, b.queue[n:])
	clear(b.queue[rest:])
	b.queue = b.queue[:rest]
	return batch, rest > 0
}

// propose appends a batch (refusing what expired while queued) and hands
// it to the waiter; false when the shard is gone. publish-timeout bounds
// the wait until the batch is proposed; once proposed, it is not refused
// for taking long to commit.
func (b *batcher) propose(batch []*entry) bool {
	now := time.Now()
	live := batch[:0:0]
	var expired []*entry
	for _, e := range batch {
		if now.Before(e.deadline) {
			live = append(live, e)
		} else {
			expired = append(expired, e)
		}
	}
	if len(expired) > 0 {
		b.i.complete(expired, fmt.Errorf("%w: queued for longer than mqtt.ingest.publish-timeout", errTimeout))
	}
	if len(live) == 0 {
		return true
	}
	select {
	case b.slots <- struct{}{}:
	case <-b.i.ctx.Done():
		b.i.complete(live, errClosed)
		return true
	}
	deadline := live[0].deadline
	for _, e := range live {
		if e.deadline.Before(deadline) {
			deadline = e.deadline
		}
	}
	data, err := encodeBatch(live)
	// A Propose that fails did not queue the batch: refusing it then is
	// safe.
	var p *cluster.Pending
	if err == nil {
		ctx, cancel := context.WithDeadline(b.i.ctx, deadline)
		p, err = b.shard.Propose(ctx, data)
		cancel()
	}
	b.i.metrics.batchRecords.Observe(float64(len(live)))
	b.handoff <- proposal{pending: p, entries: live, err: err}
	return !errors.Is(err, cluster.ErrShardNotFound)
}

// encodeBatch builds the BatchedRecord of a batch as api/wire.EncodeBatch
// would with no compression (the records were marshaled on their clients'
// goroutines; the payload is their BatchHStreamRecords framing).
func encodeBatch(batch []*entry) ([]byte, error) {
	n := 0
	for _, e := range batch {
		n += protowire.SizeTag(1) + protowire.SizeBytes(len(e.rec))
	}
	payload := make([]byte, 0, n)
	for _, e := range batch {
		payload = protowire.AppendTag(payload, 1, protowire.BytesType)
		payload = protowire.AppendBytes(payload, e.rec)
		e.rec = nil
	}
	return proto.Marshal(&hstreampb.BatchedRecord{
		CompressionType: hstreampb.CompressionType_None,
		PublishTime:     timestamppb.Now(),
		BatchSize:       uint32(len(batch)),
		Payload:         payload,
	})
}

// retire stops a batcher whose shard is gone: what is queued fails, the
// stream's other batchers stop too, and the stream's route is looked up
// again by the next publish.
func (b *batcher) retire() {
	b.mu.Lock()
	b.stopped = true
	rest := b.queue
	b.queue = nil
	b.mu.Unlock()
	b.i.mu.Lock()
	if b.i.batchers[b.id] == b {
		delete(b.i.batchers, b.id)
	}
	b.i.mu.Unlock()
	b.i.dropStream(b)
	if len(rest) > 0 {
		b.i.complete(rest, fmt.Errorf("%w: shard %d", cluster.ErrShardNotFound, b.id))
	}
}

// wait completes proposed batches in order, each once committed or
// failed. A proposed batch is waited for without a deadline but Close's
// (i.ctx): once the Ingest gives up, the outcome is unknown.
func (b *batcher) wait() {
	for pr := range b.handoff {
		err := pr.err
		if pr.pending != nil {
			if hook := b.i.beforeWait; hook != nil {
				hook()
			}
			_, _, err = pr.pending.Wait(b.i.ctx)
			if errors.Is(err, context.Canceled) || errors.Is(err, cluster.ErrClosed) {
				err = fmt.Errorf("%w: %w", errUnknown, err) // it may commit yet
			}
		}
		<-b.slots
		if err != nil {
			b.i.log.Warn("MQTT publishes not stored (or not known to be)", "stream", b.stream, "shard", b.id, "publishes", len(pr.entries), "error", err)
			if errors.Is(err, cluster.ErrShardNotFound) || errors.Is(err, cluster.ErrStreamNotFound) {
				b.i.dropStream(b)
			}
		}
		b.i.complete(pr.entries, err)
	}
}

// complete settles entries: their sessions learn the outcome (QoS 1/2
// entries leave the pending budget once acknowledged, QoS 0 ones here).
func (i *Ingest) complete(es []*entry, err error) {
	code := codeOf(err)
	unknown := errors.Is(err, errUnknown)
	for _, e := range es {
		e.rec = nil
		switch {
		case err == nil:
			i.metrics.stored.Inc()
		case unknown || errors.Is(err, errTimeout) || code == packets.ErrQuotaExceeded:
			i.metrics.overload.Inc()
		default:
			i.metrics.failed.Inc()
		}
		if e.sess != nil {
			e.sess.finish(e, code, unknown)
		} else {
			i.budget.release(e.cost)
		}
	}
}

// budget bounds the bytes of publishes queued or committing.
type budget struct {
	changed notifier // notified on release

	mu   sync.Mutex
	used int64 // guarded by mu
	peak int64 // guarded by mu: the most used ever
	max  int64
}

func newBudget(max int64) *budget { return &budget{max: max} }

// acquire waits until n bytes fit (or nothing else is pending, so a
// publish larger than the whole budget still goes alone).
func (b *budget) acquire(i *Ingest, cl *mqtt.Client, n int64, deadline time.Time) error {
	try := func() bool {
		b.mu.Lock()
		defer b.mu.Unlock()
		if b.used == 0 || b.used+n <= b.max {
			b.used += n
			b.peak = max(b.peak, b.used)
			return true
		}
		return false
	}
	return i.waitUntil(cl, deadline, b.changed.wait, try)
}

func (b *budget) release(n int64) {
	b.mu.Lock()
	b.used -= n
	b.mu.Unlock()
	b.changed.notify()
}

// pending returns the bytes held now and the most ever held.
func (b *budget) pending() (now, peak int64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.used, b.peak
}

// ingestMetrics count what happens to publishes.
type ingestMetrics struct {
	publishes    *prometheus.CounterVec
	stored       prometheus.Counter // committed
	failed       prometheus.Counter // not stored: an error
	overload     prometheus.Counter // not stored (or not known to be): timeouts, no leader
	refused      prometheus.Counter // not stored: too large, unmatched under reject, dropped QoS 0
	live         prometheus.Counter // unmatched, delivered live only
	duplicates   prometheus.Counter // retransmits not stored again
	batchRecords prometheus.Histogram
	pendingBytes prometheus.GaugeFunc
}

func newIngestMetrics(b *budget) *ingestMetrics {
	vec := prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "weir", Subsystem: "mqtt_ingest", Name: "publishes_total",
		Help: "MQTT publishes by outcome: stored, failed, overload, refused, live (unmatched, not stored), duplicate (retransmit not stored again).",
	}, []string{"result"})
	return &ingestMetrics{
		publishes:  vec,
		stored:     vec.WithLabelValues("stored"),
		failed:     vec.WithLabelValues("failed"),
		overload:   vec.WithLabelValues("overload"),
		refused:    vec.WithLabelValues("refused"),
		live:       vec.WithLabelValues("live"),
		duplicates: vec.WithLabelValues("duplicate"),
		batchRecords: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: "weir", Subsystem: "mqtt_ingest", Name: "batch_records",
			Help:    "Publishes per append.",
			Buckets: prometheus.ExponentialBuckets(1, 4, 8),
		}),
		pendingBytes: prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Namespace: "weir", Subsystem: "mqtt_ingest", Name: "pending_bytes",
			Help: "Bytes charged for publishes queued or committing (mqtt.ingest.max-pending-bytes bounds it).",
		}, func() float64 { now, _ := b.pending(); return float64(now) }),
	}
}

func (m *ingestMetrics) register(r prometheus.Registerer) error {
	for _, c := range []prometheus.Collector{m.publishes, m.batchRecords, m.pendingBytes} {
		if err := r.Register(c); err != nil {
			return fmt.Errorf("bridge: registering ingest metrics: %w", err)
		}
	}
	return nil
}
