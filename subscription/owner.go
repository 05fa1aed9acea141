package subscription

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/weir-log/weir/api/hstreampb"
	"github.com/weir-log/weir/cluster"
)

// Owner tuning.
const (
	// readEntries and readBytes bound one read of a shard's log.
	readEntries = 64
	readBytes   = 1 << 20
	// reconcileEvery is how often an owner compares its shards with its
	// stream's and checks that its subscription still exists.
	reconcileEvery = time.Second
	// saveTimeout bounds one checkpoint write to etcd.
	saveTimeout = 5 * time.Second
	// handoffRecheck spaces the checks of a moved shard's held batches.
	handoffRecheck = 20 * time.Millisecond
	// lagEvery is how often an owner updates its lag gauges (the first
	// update comes at its first tick). Each update reads at most one
	// entry per shard (updateLag).
	lagEvery = 10 * time.Second
)

// owner holds the whole state of one subscription on this node and runs it
// on one goroutine (run): consumers, shard assignment, what is delivered and
// unacked, ack timeouts and checkpoints. Other goroutines talk to it through
// channels: do (a closure run on the loop), ackc and wakec.
type owner struct {
	m          *Manager
	id         string
	meta       cluster.SubscriptionMeta
	log        *slog.Logger
	met        subCounters
	ackTimeout time.Duration
	window     int // maxUnackedRecords

	reqc  chan func()
	ackc  chan []*hstreampb.RecordId
	wakec chan uint64   // a shard that was caught up has new entries
	stopc chan struct{} // closed by stop
	done  chan struct{} // closed when run has returned
	wg    sync.WaitGroup

	stopOnce      sync.Once
	stopErr       error // set before stopc closes: why consumers are dropped
	persistOnStop bool  // set before stopc closes
	retired       atomic.Bool

	// Owned by the loop goroutine.
	consumers     []*Consumer // in the order they joined
	shards        map[uint64]*shardState
	shardIDs      []uint64 // sorted
	rr            int      // where the next dispatch round starts
	outstanding   int      // records delivered (or due again) and unacked
	timeouts      []timeout
	persisted     map[uint64]uint64 // the last checkpoint saved
	lostClaim     bool              // another node claimed the subscription: save nothing more
	lastReconcile time.Time
	lastLag       time.Time
	lagDropped    bool   // the lag series were deleted while retired
	seenBatches   uint64 // batches delivered for the first time, for the lag estimate
	seenRecords   uint64 // their records
}

// timeout is when a delivery of a batch expires; gen tells a stale entry
// (the batch was acked or delivered again since) from a live one.
type timeout struct {
	shard, index uint64
	gen          uint32
	deadline     time.Time
}

// startOwner claims a subscription for this node, loads its checkpoint and
// starts its loop.
func startOwner(ctx context.Context, m *Manager, id string) (_ *owner, err error) {
	meta, err := m.src.Subscription(id)
	if err != nil {
		return nil, err
	}
	if err := m.src.ClaimSubscription(ctx, id); err != nil {
		return nil, err
	}
	defer func() {
		if err != nil { // do not keep a claim this node does not use
			rctx, cancel := context.WithTimeout(context.Background(), saveTimeout)
			defer cancel()
			_ = m.src.ReleaseSubscription(rctx, id)
		}
	}()
	cp, _, err := m.src.Checkpoint(ctx, id)
	if err != nil {
		return nil, err
	}
	o := &owner{
		m:          m,
		id:         id,
		meta:       meta,
		log:        m.log.With("subscription", id),
		met:        m.met.forSubscription(id),
		ackTimeout: time.Duration(meta.AckTimeoutSeconds) * time.Second,
		window:     int(meta.MaxUnackedRecords),
		reqc:       make(chan func()),
		ackc:       make(chan []*hstreampb.RecordId, 64),
		wakec:      make(chan uint64, 64),
		stopc:      make(chan struct{}),
		done:       make(chan struct{}),
		shards:     make(map[uint64]*shardState),
	}
	if err := o.addShards(cp.Next, false); err != nil {
		return nil, err
	}
	o.persisted = o.checkpoint()
	o.log.Info("subscription owner started", "stream", meta.Stream, "shards", len(o.shardIDs), "checkpoint", o.persisted)
	go o.run()
	return o, nil
}

// addShards adds the stream's shards the owner does not have yet. A shard
// starts at its checkpoint, else at the subscription's resolved start, else
// (a shard added to the stream after the subscription was created) at its
// first entry. later says the owner is running: a shard added now is new to
// the stream.
func (o *owner) addShards(checkpoint map[uint64]uint64, later bool) error {
	metas, err := o.m.src.StreamShards(o.meta.Stream)
	if err != nil {
		return err
	}
	added := false
	var firstErr error
	for _, sm := range metas {
		if _, ok := o.shards[sm.ID]; ok {
			continue
		}
		lg, err := o.m.src.Shard(sm.ID)
		if err != nil {
			firstErr = cmp.Or(firstErr, err) // the next reconcile tries again
			continue
		}
		next, ok := checkpoint[sm.ID]
		if !ok {
			if next, ok = o.meta.Start[sm.ID]; !ok {
				next = lg.First()
			}
		}
		o.shards[sm.ID] = &shardState{id: sm.ID, log: lg, next: next, low: next, inflight: make(map[uint64]*inflightBatch)}
		o.shardIDs = append(o.shardIDs, sm.ID)
		added = true
		if later {
			o.log.Info("new shard of the stream joins the subscription", "shard", sm.ID, "from", next)
		}
	}
	if added {
		slices.Sort(o.shardIDs)
		o.rebalance()
	}
	return firstErr
}

func (o *owner) run() {
	defer close(o.done)
	tick := time.NewTicker(o.m.opts.Tick)
	defer tick.Stop()
	saves := time.NewTicker(o.m.opts.CheckpointInterval)
	defer saves.Stop()
	for {
		select {
		case f := <-o.reqc:
			// Acks already handed over go first: a consumer's last acks
			// are queued before its detach, and must not lose to it.
			o.drainAcks()
			f()
		case ids := <-o.ackc:
			o.acked(ids)
		case id := <-o.wakec:
			if s := o.shards[id]; s != nil {
				s.waiting = false
			}
		case now := <-tick.C:
			o.expire(now)
			o.compact()
			if now.Sub(o.lastReconcile) >= reconcileEvery {
				o.lastReconcile = now
				o.reconcile()
			}
			if now.Sub(o.lastLag) >= o.m.lagEvery {
				o.lastLag = now
				o.updateLag(now)
			}
		case now := <-saves.C:
			o.save(now)
		case <-o.stopc:
			o.finish()
			return
		}
		o.dispatch(time.Now())
	}
}

// finish drops the consumers and, when the node is shutting down, takes
// the acks already queued and persists the checkpoint.
func (o *owner) finish() {
	for _, c := range o.consumers {
		c.fail(o.stopErr)
	}
	if !o.persistOnStop {
		return
	}
	o.drainAcks()
	o.save(time.Now())
	ctx, cancel := context.WithTimeout(context.Background(), saveTimeout)
	defer cancel()
	if err := o.m.src.ReleaseSubscription(ctx, o.id); err != nil {
		o.log.Warn("releasing the subscription", "err", err)
	}
}

// drainAcks applies every ack already queued, without waiting for more.
func (o *owner) drainAcks() {
	for {
		select {
		case ids := <-o.ackc:
			o.acked(ids)
		default:
			return
		}
	}
}

// do runs f on the loop and waits for it; it fails once the loop is gone.
func (o *owner) do(f func()) error {
	ran := make(chan struct{})
	select {
	case o.reqc <- func() { f(); close(ran) }:
	case <-o.done:
		return o.stopErr
	}
	<-ran
	return nil
}

// stop ends the loop: consumers' deliveries end with err, and the
// checkpoint is persisted if persist is set. It waits for the loop and its
// waiters. Idempotent: the first call's err and persist win.
func (o *owner) stop(err error, persist bool) {
	o.stopOnce.Do(func() {
		o.stopErr, o.persistOnStop = err, persist
		o.retired.Store(true)
		close(o.stopc)
	})
	<-o.done
	o.wg.Wait()
}

// shutdown stops the owner because the node is closing.
func (o *owner) shutdown() {
	o.stop(fmt.Errorf("%w: the server is shutting down; reconnect to continue", ErrClosed), true)
}

// retire stops the owner because its subscription is being deleted: del
// deletes it from the catalog. Without force it refuses while consumers are
// attached; once it has agreed no new consumer can attach, and if del fails
// the owner carries on as before.
func (o *owner) retire(force bool, why error, del func() error) error {
	var refused error
	err := o.do(func() {
		if !force && len(o.consumers) > 0 {
			names := make([]string, len(o.consumers))
			for i, c := range o.consumers {
				names[i] = c.info.Name
			}
			refused = fmt.Errorf("%w: subscription %q has %d consumer(s) attached (%v); stop them first, or delete with force",
				ErrActiveConsumers, o.id, len(o.consumers), names)
			return
		}
		o.retired.Store(true)
	})
	if refused != nil {
		return refused
	}
	if err != nil && !errors.Is(err, ErrDeleted) && !errors.Is(err, ErrClosed) {
		return err
	}
	if err := del(); err != nil {
		o.retired.Store(false)
		return err
	}
	o.stop(why, false)
	return nil
}

// attach adds a consumer and rebalances the shards.
func (o *owner) attach(info ConsumerInfo) (*Consumer, error) {
	var (
		c   *Consumer
		bad error
	)
	err := o.do(func() {
		if o.retired.Load() {
			bad = fmt.Errorf("%w: subscription %q is being deleted", cluster.ErrSubscriptionNotFound, o.id)
			return
		}
		for _, other := range o.consumers {
			if other.info.Name == info.Name {
				bad = fmt.Errorf("%w: consumer %q is already attached to subscription %q", ErrConsumerExists, info.Name, o.id)
				return
			}
		}
		c = newConsumer(o, info)
		o.consumers = append(o.consumers, c)
		o.log.Info("consumer attached", "consumer", info.Name, "from", info.URI, "consumers", len(o.consumers))
		o.rebalance()
	})
	if err != nil {
		return nil, err
	}
	return c, bad
}

// detach removes a consumer: what it holds unacked is due again, and its
// shards go to the others.
func (o *owner) detach(c *Consumer) {
	_ = o.do(func() {
		i := slices.Index(o.consumers, c)
		if i < 0 {
			return
		}
		o.consumers = slices.Delete(o.consumers, i, i+1)
		for _, id := range o.shardIDs {
			s := o.shards[id]
			unsent := make(map[uint64]bool)
			for _, idx := range c.unqueue(id) {
				unsent[idx] = true
			}
			var due []*inflightBatch
			for _, b := range s.inflight {
				if b.consumer == c {
					due = append(due, b)
				}
			}
			s.dueAll(due, func(b *inflightBatch) bool { return !unsent[b.index] })
			if s.consumer == c {
				s.consumer = nil
			}
		}
		o.log.Info("consumer detached", "consumer", c.info.Name, "consumers", len(o.consumers))
		o.rebalance()
	})
}

// ack hands acks to the loop; it blocks while the loop is behind.
func (o *owner) ack(ids []*hstreampb.RecordId) {
	select {
	case o.ackc <- ids:
	case <-o.done:
	}
}

func (o *owner) consumerList() ([]ConsumerInfo, error) {
	var out []ConsumerInfo
	err := o.do(func() {
		for _, c := range o.consumers {
			out = append(out, c.info)
		}
	})
	slices.SortFunc(out, func(a, b ConsumerInfo) int { return cmp.Compare(a.Name, b.Name) })
	return out, err
}

func (o *owner) persistedCheckpoint() (map[uint64]uint64, error) {
	var out map[uint64]uint64
	err := o.do(func() { out = maps.Clone(o.persisted) })
	return out, err
}

// reconcile picks up shards added to the stream and notices a subscription
// deleted behind the owner's back (by another node), or deleted and created
// again under the same id.
func (o *owner) reconcile() {
	if o.retired.Load() {
		return
	}
	cur, err := o.m.src.Subscription(o.id)
	if errors.Is(err, cluster.ErrSubscriptionNotFound) || (err == nil && !cur.CreatedAt.Equal(o.meta.CreatedAt)) {
		o.log.Info("the subscription was deleted; dropping its consumers")
		o.retired.Store(true)
		for _, c := range o.consumers {
			c.fail(fmt.Errorf("%w: subscription %q was deleted", ErrDeleted, o.id))
		}
		o.consumers = nil
		return
	}
	if err := o.addShards(nil, true); err != nil && !errors.Is(err, cluster.ErrStreamNotFound) {
		o.log.Warn("looking for new shards of the stream", "stream", o.meta.Stream, "err", err)
	}
}

// checkpoint is the acknowledged prefix of every shard.
func (o *owner) checkpoint() map[uint64]uint64 {
	cp := make(map[uint64]uint64, len(o.shards))
	for id, s := range o.shards {
		cp[id] = s.checkpoint()
	}
	return cp
}

// save persists the checkpoint if it moved since the last save.
//
// A save refused because this node no longer holds the subscription means
// its claim lapsed (the node's lease expired while it was paused or cut
// off from etcd, and the node registered again under a new lease) or
// another node claimed it meanwhile. The owner claims it again; if another
// node holds it, this owner retires: its consumers end with ErrNotOwner
// and attach again where lookups now send them. An owner that kept
// delivering without saving would leave the persisted checkpoint behind,
// and the next owner would deliver all of that again.
func (o *owner) save(now time.Time) {
	cp := o.checkpoint()
	if maps.Equal(cp, o.persisted) || o.lostClaim {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), saveTimeout)
	defer cancel()
	ckpt := cluster.Checkpoint{Next: cp, SavedAt: now.UTC()}
	err := o.m.src.SaveCheckpoint(ctx, o.id, ckpt)
	if errors.Is(err, cluster.ErrNotOwner) {
		switch cerr := o.m.src.ClaimSubscription(ctx, o.id); {
		case cerr == nil:
			o.log.Warn("the subscription's ownership had lapsed; claimed it again", "err", err)
			err = o.m.src.SaveCheckpoint(ctx, o.id, ckpt)
		case errors.Is(cerr, cluster.ErrNotOwner):
			o.log.Warn("another node owns the subscription now; ending the consumers here", "err", cerr)
			o.lostClaim = true
			o.retired.Store(true)
			for _, c := range o.consumers {
				c.fail(fmt.Errorf("%w: subscription %q moved to another node; attach again", cluster.ErrNotOwner, o.id))
			}
			o.consumers = nil
			return
		default:
			err = cerr
		}
	}
	if err != nil {
		o.log.Warn("saving the checkpoint", "err", err)
		return
	}
	o.persisted = cp
	o.m.met.checkpoints.Add(1)
}

// updateLag sets the subscription's lag gauges: the records committed to
// its shards and not yet acknowledged, and the age of the oldest of them.
// Records delivered and unacked (due again included) are counted exactly.
// Those not delivered yet are estimated, reading at most one entry per
// shard, the oldest undelivered: its index gap to the shard's commit index
// (undelivered index + 1 through committed, both included) times the
// average records per batch this owner has delivered (that entry's own
// batch size while it has delivered none). Raft's own entries in the gap
// count as batches; reading them all every update would cost a read of the
// whole backlog. A shard whose read fails is left out until the next
// update.
//
// A retired owner (its subscription deleted, or the node closing) leaves
// the gauges alone and drops its lag series once: a subscription created
// again under the same id gets its own owner and series.
func (o *owner) updateLag(now time.Time) {
	if o.retired.Load() {
		if !o.lagDropped {
			o.lagDropped = true
			o.m.met.lagRecordsVec.DeleteLabelValues(o.id)
			o.m.met.lagSecondsVec.DeleteLabelValues(o.id)
		}
		return
	}
	if o.lagDropped { // retiring failed: the subscription lives on
		o.lagDropped = false
		o.met.lagRecords = o.m.met.lagRecordsVec.WithLabelValues(o.id)
		o.met.lagSeconds = o.m.met.lagSecondsVec.WithLabelValues(o.id)
	}
	records := float64(o.outstanding)
	var oldest time.Time
	older := func(t time.Time) {
		if oldest.IsZero() || t.Before(oldest) {
			oldest = t
		}
	}
	for _, id := range o.shardIDs {
		s := o.shards[id]
		if s.gone {
			continue
		}
		if b, ok := s.inflight[s.checkpoint()]; ok && b.last != nil {
			older(b.last.entry.AppendTime) // the oldest unacked: entries are in append time order
		}
		committed, _ := s.log.Committed()
		if s.waiting || s.next > committed {
			continue // caught up: nothing undelivered
		}
		ents, err := s.log.Read(s.next, 1, 1) // one entry, whatever its size
		if err != nil || len(ents) == 0 || ents[0].Index > committed {
			continue
		}
		older(ents[0].AppendTime)
		perBatch := 0.0
		if o.seenBatches > 0 {
			perBatch = float64(o.seenRecords) / float64(o.seenBatches)
		} else if n, err := batchSize(ents[0].Batch); err == nil {
			perBatch = float64(n)
		}
		records += float64(committed-ents[0].Index+1) * perBatch
	}
	o.met.lagRecords.Set(records)
	lag := 0.0
	if !oldest.IsZero() {
		lag = max(now.Sub(oldest).Seconds(), 0)
	}
	o.met.lagSeconds.Set(lag)
}
