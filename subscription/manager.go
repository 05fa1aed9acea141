package subscription

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/weir-log/weir/cluster"
)

// Log is one shard's log as an owner reads it; *cluster.Shard is one.
type Log interface {
	// Read returns committed data entries from index from on, at most
	// maxEntries and about maxBytes of them, without blocking.
	Read(from uint64, maxEntries, maxBytes int) ([]cluster.Entry, error)
	// Committed is the last committed index and a channel closed when it
	// grows (or the shard is deleted).
	Committed() (uint64, <-chan struct{})
	// First is the lowest index still stored.
	First() uint64
	// Removed reports that the shard was deleted.
	Removed() bool
}

// Source is what the subscription layer needs of the node: metadata,
// ownership, checkpoints and the shards' logs. NodeSource adapts a
// *cluster.Node; tests use fakes.
type Source interface {
	Subscription(id string) (cluster.SubscriptionMeta, error)
	StreamShards(stream string) ([]cluster.ShardMeta, error)
	Shard(id uint64) (Log, error)
	ClaimSubscription(ctx context.Context, id string) error
	ReleaseSubscription(ctx context.Context, id string) error
	Checkpoint(ctx context.Context, id string) (cluster.Checkpoint, bool, error)
	SaveCheckpoint(ctx context.Context, id string, cp cluster.Checkpoint) error
	DeleteSubscription(ctx context.Context, id string) error
	DeleteStream(ctx context.Context, name string, force bool) ([]string, error)
}

// NodeSource is a Source over a cluster node.
func NodeSource(n *cluster.Node) Source { return nodeSource{n} }

type nodeSource struct{ *cluster.Node }

func (s nodeSource) Shard(id uint64) (Log, error) {
	sh, err := s.Node.Shard(id)
	if err != nil {
		return nil, err
	}
	return sh, nil
}

// startTimeout bounds starting an owner (claiming it and reading its
// checkpoint from etcd).
const startTimeout = 10 * time.Second

// DefaultCheckpointInterval is how often an owner persists the acknowledged
// prefix of its shards, when Options.CheckpointInterval is 0.
const DefaultCheckpointInterval = time.Second

// Options configure a Manager.
type Options struct {
	Source Source // required
	// CheckpointInterval is the longest an owner waits to persist progress
	// that changed; progress is also persisted when the owner stops.
	// Default DefaultCheckpointInterval.
	CheckpointInterval time.Duration
	// Tick is how often owners look for expired ack timeouts and for new
	// shards of their stream. Default 100ms.
	Tick    time.Duration
	Logger  *slog.Logger          // default: discard
	Metrics prometheus.Registerer // optional
}

// Manager runs the subscriptions this node owns: one owner goroutine per
// subscription with consumers attached since the node started. It is safe
// for concurrent use.
type Manager struct {
	src  Source
	opts Options
	log  *slog.Logger
	met  *metrics
	// lagEvery is lagEvery; tests shorten it before the first attach.
	lagEvery time.Duration

	// mu guards owners and closed. It is held while an owner starts (which
	// reads etcd) and stops, so an attach never races a delete.
	mu     sync.Mutex
	owners map[string]*owner
	closed bool
}

// New builds a manager; it does no I/O.
func New(opts Options) (*Manager, error) {
	if opts.Source == nil {
		return nil, errors.New("subscription: a source is required")
	}
	if opts.CheckpointInterval <= 0 {
		opts.CheckpointInterval = DefaultCheckpointInterval
	}
	if opts.Tick <= 0 {
		opts.Tick = 100 * time.Millisecond
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	m := &Manager{src: opts.Source, opts: opts, log: opts.Logger, met: newMetrics(), owners: make(map[string]*owner), lagEvery: lagEvery}
	if opts.Metrics != nil {
		if err := m.met.register(opts.Metrics); err != nil {
			return nil, err
		}
	}
	return m, nil
}

// Attach registers a consumer with a subscription, starting its owner here
// if needed. cluster.ErrSubscriptionNotFound, cluster.ErrNotOwner (another
// node owns it), ErrConsumerExists, ErrClosed.
func (m *Manager) Attach(ctx context.Context, subID string, info ConsumerInfo) (*Consumer, error) {
	if info.Name == "" {
		return nil, fmt.Errorf("%w: subscription %q: consumerName is empty", ErrInvalidConsumer, subID)
	}
	o, err := m.owner(ctx, subID, true)
	if err != nil {
		return nil, err
	}
	return o.attach(info)
}

// owner returns the running owner of a subscription, starting it if start is
// true; nil, nil if it is not running and start is false.
func (m *Manager) owner(ctx context.Context, subID string, start bool) (*owner, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return nil, ErrClosed
	}
	var err error
	o, ok := m.owners[subID]
	if ok && o.retired.Load() { // its subscription was deleted, or claimed, elsewhere
		o.stop(fmt.Errorf("%w: subscription %q was deleted", ErrDeleted, subID), false)
		delete(m.owners, subID)
		m.met.forget(subID)
		o, ok = nil, false
	}
	if ok || !start {
		return o, nil
	}
	// Starting reads etcd under m.mu: bound it, since clients send no
	// deadline.
	ctx, cancel := context.WithTimeout(ctx, startTimeout)
	defer cancel()
	o, err = startOwner(ctx, m, subID)
	if err != nil {
		return nil, err
	}
	m.owners[subID] = o
	return o, nil
}

// Consumers lists a subscription's attached consumers, by name.
// cluster.ErrSubscriptionNotFound.
func (m *Manager) Consumers(subID string) ([]ConsumerInfo, error) {
	if _, err := m.src.Subscription(subID); err != nil {
		return nil, err
	}
	o, err := m.owner(context.Background(), subID, false)
	if err != nil || o == nil {
		return nil, err
	}
	return o.consumerList()
}

// Committed is a subscription's persisted progress per shard: the lowest
// index not yet acknowledged in full, as the last checkpoint saved it (or the
// start, before any). This is where a restarted owner resumes.
// cluster.ErrSubscriptionNotFound.
func (m *Manager) Committed(ctx context.Context, subID string) (map[uint64]uint64, error) {
	meta, err := m.src.Subscription(subID)
	if err != nil {
		return nil, err
	}
	if o, err := m.owner(ctx, subID, false); err == nil && o != nil {
		if cp, err := o.persistedCheckpoint(); err == nil {
			return cp, nil
		}
	}
	cp, ok, err := m.src.Checkpoint(ctx, subID)
	if err != nil {
		return nil, err
	}
	out := maps.Clone(meta.Start)
	if out == nil {
		out = make(map[uint64]uint64)
	}
	if ok {
		maps.Copy(out, cp.Next)
	}
	return out, nil
}

// DeleteSubscription deletes a subscription. Without force, one with
// attached consumers is refused (ErrActiveConsumers); with force, its
// consumers' deliveries end with ErrDeleted. cluster.ErrSubscriptionNotFound.
func (m *Manager) DeleteSubscription(ctx context.Context, subID string, force bool) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return ErrClosed
	}
	del := func() error { return m.src.DeleteSubscription(ctx, subID) }
	o, ok := m.owners[subID]
	if !ok {
		return del()
	}
	if err := o.retire(force, fmt.Errorf("%w: subscription %q was deleted", ErrDeleted, subID), del); err != nil {
		return err
	}
	delete(m.owners, subID)
	m.met.forget(subID)
	return nil
}

// DeleteStream deletes a stream. Without force, a stream with subscriptions
// is refused (cluster.ErrStreamHasSubscriptions); with force its
// subscriptions go too and their consumers' deliveries end with ErrDeleted.
func (m *Manager) DeleteStream(ctx context.Context, name string, force bool) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return ErrClosed
	}
	deleted, err := m.src.DeleteStream(ctx, name, force)
	for _, id := range deleted {
		if o, ok := m.owners[id]; ok {
			_ = o.retire(true, fmt.Errorf("%w: subscription %q was deleted with its stream %q", ErrDeleted, id, name),
				func() error { return nil })
			delete(m.owners, id)
			m.met.forget(id)
		}
	}
	return err
}

// Close stops every owner: consumers' deliveries end with ErrClosed and each
// owner persists its progress. Idempotent.
func (m *Manager) Close() {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return
	}
	m.closed = true
	var wg sync.WaitGroup
	for id, o := range m.owners {
		wg.Go(o.shutdown) // each persists its checkpoint: in parallel
		delete(m.owners, id)
	}
	wg.Wait()
}

// Stats are counters since the manager started, over all subscriptions.
type Stats struct {
	DeliveredRecords   uint64 // records sent, first deliveries and redeliveries
	RedeliveredRecords uint64 // records sent again (ack timeout, consumer left)
	AckedRecords       uint64 // acks that acknowledged an outstanding record
	IgnoredAcks        uint64 // acks of records never delivered (or of unknown shards)
	DuplicateAcks      uint64 // acks of records already acknowledged
	Gaps               uint64 // times retention trimmed records before they were delivered
	Checkpoints        uint64 // checkpoints persisted
}

// Stats returns the counters.
func (m *Manager) Stats() Stats { return m.met.stats() }

// metrics count what owners do, in total (Stats) and per subscription
// (Prometheus).
type metrics struct {
	delivered, redelivered, acked, ignored, dupAcks, gaps, checkpoints atomic.Uint64

	deliveredVec, redeliveredVec, ackedVec, ignoredVec, dupAcksVec, gapsVec *prometheus.CounterVec
	lagRecordsVec, lagSecondsVec                                            *prometheus.GaugeVec
}

func newMetrics() *metrics {
	vec := func(name, help string) *prometheus.CounterVec {
		return prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "weir", Subsystem: "subscription", Name: name, Help: help},
			[]string{"subscription"})
	}
	gauge := func(name, help string) *prometheus.GaugeVec {
		return prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: "weir", Subsystem: "subscription", Name: name, Help: help},
			[]string{"subscription"})
	}
	return &metrics{
		deliveredVec:   vec("delivered_records_total", "Records sent to consumers, redeliveries included."),
		redeliveredVec: vec("redelivered_records_total", "Records sent again after an ack timeout or a consumer leaving."),
		ackedVec:       vec("acked_records_total", "Records acknowledged."),
		ignoredVec:     vec("ignored_acks_total", "Acks of records never delivered, ignored."),
		dupAcksVec:     vec("duplicate_acks_total", "Acks of records already acknowledged."),
		gapsVec:        vec("gaps_total", "Times retention trimmed records before the subscription delivered them."),
		lagRecordsVec: gauge("lag_records",
			"Records committed to the subscription's stream and not yet acknowledged: delivered and unacked (exact) plus an estimate of those not delivered yet: per shard, the log entries from the oldest undelivered through the commit index times the average records per batch the owner has delivered (the oldest undelivered batch's size before it has delivered any). Updated every 10 s while this node owns the subscription."),
		lagSecondsVec: gauge("lag_seconds",
			"Age of the oldest record of the subscription's stream not yet acknowledged (0 when caught up). Updated every 10 s while this node owns the subscription."),
	}
}

func (mt *metrics) register(r prometheus.Registerer) error {
	for _, c := range []prometheus.Collector{mt.deliveredVec, mt.redeliveredVec, mt.ackedVec, mt.ignoredVec, mt.dupAcksVec, mt.gapsVec,
		mt.lagRecordsVec, mt.lagSecondsVec} {
		if err := r.Register(c); err != nil {
			return fmt.Errorf("subscription: registering metrics: %w", err)
		}
	}
	return nil
}

func (mt *metrics) stats() Stats {
	return Stats{
		DeliveredRecords:   mt.delivered.Load(),
		RedeliveredRecords: mt.redelivered.Load(),
		AckedRecords:       mt.acked.Load(),
		IgnoredAcks:        mt.ignored.Load(),
		DuplicateAcks:      mt.dupAcks.Load(),
		Gaps:               mt.gaps.Load(),
		Checkpoints:        mt.checkpoints.Load(),
	}
}

// counter is one count of one subscription: it adds to the manager's total
// and to the subscription's Prometheus series.
type counter struct {
	total *atomic.Uint64
	sub   prometheus.Counter
}

func (c counter) add(n int) {
	if n > 0 {
		c.total.Add(uint64(n))
		c.sub.Add(float64(n))
	}
}

// subCounters are an owner's counters and gauges, looked up once.
type subCounters struct {
	delivered, redelivered, acked, ignored, dupAcks, gaps counter
	lagRecords, lagSeconds                                prometheus.Gauge
}

func (mt *metrics) forSubscription(id string) subCounters {
	return subCounters{
		delivered:   counter{&mt.delivered, mt.deliveredVec.WithLabelValues(id)},
		redelivered: counter{&mt.redelivered, mt.redeliveredVec.WithLabelValues(id)},
		acked:       counter{&mt.acked, mt.ackedVec.WithLabelValues(id)},
		ignored:     counter{&mt.ignored, mt.ignoredVec.WithLabelValues(id)},
		dupAcks:     counter{&mt.dupAcks, mt.dupAcksVec.WithLabelValues(id)},
		gaps:        counter{&mt.gaps, mt.gapsVec.WithLabelValues(id)},
		lagRecords:  mt.lagRecordsVec.WithLabelValues(id),
		lagSeconds:  mt.lagSecondsVec.WithLabelValues(id),
	}
}

// forget drops a deleted subscription's series.
func (mt *metrics) forget(id string) {
	for _, v := range []*prometheus.CounterVec{mt.deliveredVec, mt.redeliveredVec, mt.ackedVec, mt.ignoredVec, mt.dupAcksVec, mt.gapsVec} {
		v.DeleteLabelValues(id)
	}
	mt.lagRecordsVec.DeleteLabelValues(id)
	mt.lagSecondsVec.DeleteLabelValues(id)
}
