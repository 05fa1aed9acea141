package cluster

import (
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"go.etcd.io/raft/v3"
	"go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"

	"github.com/weir-log/weir/store"
)

// The engine drives the raft groups of every shard this node hosts from one
// goroutine, the loop. Each round of the loop:
//
//  1. takes the appends queued since the last round (up to maxRoundBytes,
//     waiting up to maxWait for more) and proposes them, stamping each with
//     its append time and a proposal id;
//  2. collects the Ready of every group that has one and writes all their
//     entries, hard states and configuration states in ONE store batch with
//     ONE sync (none when no group needs one: a commit-index-only change);
//  3. sends messages (a later issue: peers; standalone has none);
//  4. applies committed entries: a record entry wakes the proposer waiting
//     for it, and the group's readable (committed) index advances;
//  5. calls Advance on each group.
//
// Appends that arrive while a round syncs wait in propc and go into the next
// round together, so one sync carries every append that arrived during the
// previous one: throughput grows with concurrency while the sync rate stays
// bounded by the disk (group commit). propc is bounded, which is the
// backpressure: Append blocks when it is full.
//
// Rejected: a goroutine and a sync per shard (syncs grow with shards, not with
// the disk's ability); raft's AsyncStorageWrites (more moving parts for a
// pipeline this loop already gets by queueing during the sync); acking before
// the sync (breaks the durability contract).
//
// Configuration changes in committed entries are applied before the batch is
// written, so a group's ConfState and its commit index are persisted
// atomically; that is what lets a restarted group start with Applied set to
// its persisted commit index instead of re-reading its whole log.
type engine struct {
	nodeID        uint64
	db            *store.DB
	log           *slog.Logger
	tick          time.Duration
	maxWait       time.Duration
	maxRoundBytes int
	met           *metrics // registered by Node.New when it has a registry

	propc chan *proposal
	ctlc  chan func()
	recvc chan inbound     // raft messages from peers
	failc chan sendFailure // what the transport could not send
	tr    *transport       // set by Node.New
	// hosts says whether this node should open a shard it has no group
	// for, when a peer's message for it arrives first (the catalog watch
	// may not have told this node yet); set by Node.New.
	hosts   func(shard uint64) (ShardMeta, bool)
	started atomic.Bool
	stopc   chan struct{}
	donec   chan struct{}

	mu     sync.RWMutex
	groups map[uint64]*Shard // guarded by mu; changed only by the loop goroutine
	failed error             // guarded by mu; set once when a store write fails

	// Owned by the loop goroutine.
	waiting map[uint64]*proposal // by proposal id
	parked  []*proposal          // for groups with no leader yet
	// streamShards counts the open groups of each stream: a stream's
	// append series are dropped when its last group closes. Both happen on
	// the loop, so a stream deleted and created again under the same name
	// never gets series that a deletion is about to drop.
	streamShards map[string]int
	// nextID is the last proposal id handed out. It starts at a random
	// value in each incarnation of the engine: after a crash, entries that
	// were synced but not committed commit once the group re-elects
	// itself, and their ids must not match a proposal of the new
	// incarnation, whose appender would then be told the old entry's index.
	nextID uint64
}

// noLeaderWait bounds how long an append waits for its shard to have a
// leader before it fails with ErrNoLeader (which clients retry).
const noLeaderWait = 3 * time.Second

// maxYields bounds how often one round yields to gather more appends.
const maxYields = 8

// commitTimeout bounds how long a proposal waits for its commit. Raft drops
// proposals silently (a follower's forwarded proposal lost with a leader
// change, or an entry of a deposed leader overwritten), so a waiter that
// hears nothing this long is told to retry; the entry may still commit,
// which is why a retry can duplicate (at-least-once).
const commitTimeout = 10 * time.Second

type proposal struct {
	shard      *Shard
	data       []byte
	id         uint64
	records    int                 // the batch's batchSize, for the metrics
	queuedAt   time.Time           // when Propose was called
	proposedAt time.Time           // when the loop proposed it to raft
	parkedAt   time.Time           // when it was first held for want of a leader
	done       chan proposalResult // buffered: the loop never blocks on it
}

type proposalResult struct {
	index    uint64
	appendMs int64
	err      error
}

func newEngine(nodeID uint64, db *store.DB, log *slog.Logger, tick, maxWait time.Duration, maxRoundBytes, maxInflight int) *engine {
	return &engine{
		nodeID:        nodeID,
		db:            db,
		log:           log,
		tick:          tick,
		maxWait:       maxWait,
		maxRoundBytes: maxRoundBytes,
		met:           newMetrics(),
		propc:         make(chan *proposal, maxInflight),
		ctlc:          make(chan func()),
		recvc:         make(chan inbound, 64),
		failc:         make(chan sendFailure, 1024),
		stopc:         make(chan struct{}),
		donec:         make(chan struct{}),
		groups:        make(map[uint64]*Shard),
		waiting:       make(map[uint64]*proposal),
		streamShards:  make(map[string]int),
		nextID:        proposalIDBase(nodeID),
		hosts:         func(uint64) (ShardMeta, bool) { return ShardMeta{}, false },
	}
}

// proposalIDBase is where an engine's proposal ids start: the node id in the
// top 16 bits, so proposals of two nodes forwarded to one leader never share
// an id, and a random 48-bit start below, so an incarnation's ids do not
// match a previous one's (see nextID).
func proposalIDBase(nodeID uint64) uint64 {
	return nodeID<<48 | rand.Uint64()>>16
}

// reportFailure hands a transport failure to the loop, from a sender
// goroutine (never the loop: it may block), without blocking unless it
// concerns a snapshot: if the loop is that far behind, raft finds out by
// itself soon enough.
func (e *engine) reportFailure(f sendFailure) {
	if len(f.snapshots) > 0 {
		// Raft waits for a snapshot's outcome before it sends that
		// follower anything else: this report must arrive.
		select {
		case e.failc <- f:
		case <-e.donec:
		}
		return
	}
	select {
	case e.failc <- f:
	default:
	}
}

// do runs f on the loop goroutine and waits for it.
func (e *engine) do(f func() error) error {
	errc := make(chan error, 1)
	select {
	case e.ctlc <- func() { errc <- f() }:
		return <-errc
	case <-e.donec:
		return ErrClosed
	}
}

// shardIDs lists the open groups.
func (e *engine) shardIDs() []uint64 {
	e.mu.RLock()
	defer e.mu.RUnlock()
	out := make([]uint64, 0, len(e.groups))
	for id := range e.groups {
		out = append(out, id)
	}
	return out
}

func (e *engine) shard(id uint64) (*Shard, bool) {
	e.mu.RLock()
	defer e.mu.RUnlock()
	s, ok := e.groups[id]
	return s, ok
}

func (e *engine) err() error {
	e.mu.RLock()
	defer e.mu.RUnlock()
	return e.failed
}

func (e *engine) run() {
	defer close(e.donec)
	ticker := time.NewTicker(e.tick)
	defer ticker.Stop()
	var batch []*proposal
	stopping := false
	for {
		// Stopping finishes what is in flight first: rounds go on until no
		// append is queued and no group has work.
		if stopping && e.quiet() {
			e.failWaiting(ErrClosed)
			return
		}
		if stopping || (e.err() == nil && e.anyReady()) {
			select {
			case <-e.stopc:
				stopping = true
			case <-ticker.C:
				e.tickAll()
			case f := <-e.ctlc:
				f()
			case in := <-e.recvc:
				e.step(in)
			case f := <-e.failc:
				e.handleFailure(f)
			default:
			}
		} else {
			select {
			case <-e.stopc:
				stopping = true
			case <-ticker.C:
				e.tickAll()
			case f := <-e.ctlc:
				f()
			case in := <-e.recvc:
				e.step(in)
			case f := <-e.failc:
				e.handleFailure(f)
			case p := <-e.propc:
				batch = append(batch, p)
			}
		}
		e.drainInbound()
		batch = e.gather(batch, stopping)
		e.propose(batch)
		clear(batch)
		batch = batch[:0]
		e.handleReady()
	}
}

// start runs the loop in a goroutine.
func (e *engine) start() {
	e.started.Store(true)
	go e.run()
}

// stop makes the loop finish in-flight work and return; it waits for that.
// It returns at once if the loop never started.
func (e *engine) stop() {
	select {
	case <-e.stopc:
	default:
		close(e.stopc)
	}
	if e.started.Load() {
		<-e.donec
	}
}

// quiet reports whether nothing is queued or pending in any group.
func (e *engine) quiet() bool {
	// A failed engine has nothing more it can do; parked appends fail with
	// ErrClosed.
	return e.err() != nil || (len(e.propc) == 0 && !e.anyReady())
}

// gather adds to batch the proposals already queued, up to maxRoundBytes,
// waiting up to maxWait for more when maxWait is set.
func (e *engine) gather(batch []*proposal, stopping bool) []*proposal {
	size := 0
	for _, p := range batch {
		size += len(p.data)
	}
	// Appenders this loop woke at the end of the last round are runnable
	// but may not have run yet to queue their next append (on a small
	// machine the loop would beat them to the next sync every time and
	// seal rounds of one or two). So yield, and drain again, for as long
	// as yielding brings more: a lone appender costs one yield, many
	// appenders fill the round. Timers are no use here: they fire with
	// about a millisecond's granularity, far longer than a sync.
	drain := func() int {
		n := 0
		for size < e.maxRoundBytes {
			select {
			case p := <-e.propc:
				batch = append(batch, p)
				size += len(p.data)
				n++
				continue
			default:
			}
			break
		}
		return n
	}
	drain()
	for range maxYields {
		if len(batch) == 0 || stopping || size >= e.maxRoundBytes {
			break
		}
		runtime.Gosched()
		if drain() == 0 {
			break
		}
	}
	if e.maxWait > 0 && len(batch) > 0 && !stopping {
		deadline := time.After(e.maxWait)
		for size < e.maxRoundBytes {
			select {
			case p := <-e.propc:
				batch = append(batch, p)
				size += len(p.data)
			case <-deadline:
				return batch
			}
		}
	}
	return batch
}

func (e *engine) propose(batch []*proposal) {
	if len(e.parked) > 0 {
		batch = append(e.parked, batch...)
		e.parked = nil
	}
	if len(batch) == 0 {
		return
	}
	if err := e.err(); err != nil {
		for _, p := range batch {
			e.refuse(p, err)
		}
		return
	}
	now := time.Now()
	// A shard whose oldest parked append timed out refuses the rest of
	// this round's too: they are later appends, and one of them committing
	// ahead of the refused one (which its producer retries) would break
	// the producer's order.
	var timedOut map[*Shard]bool
	for _, p := range batch {
		s := p.shard
		if timedOut[s] {
			e.refuse(p, fmt.Errorf("%w: shard %d had none for %v when an earlier append timed out", ErrNoLeader, s.meta.ID, noLeaderWait))
			continue
		}
		if s.removed() {
			e.refuse(p, fmt.Errorf("%w: shard %d was deleted", ErrShardNotFound, s.meta.ID))
			continue
		}
		if s.rn.BasicStatus().Lead == raft.None {
			// A group just created or restarted elects itself within a
			// round or two: hold its appends until then, not longer than
			// noLeaderWait.
			if p.parkedAt.IsZero() {
				p.parkedAt = now
			}
			if now.Sub(p.parkedAt) < noLeaderWait {
				e.parked = append(e.parked, p)
				continue
			}
			if timedOut == nil {
				timedOut = make(map[*Shard]bool)
			}
			timedOut[s] = true
			e.refuse(p, fmt.Errorf("%w: shard %d has had none for %v", ErrNoLeader, s.meta.ID, noLeaderWait))
			continue
		}
		ms := max(now.UnixMilli(), s.lastStamp)
		e.nextID++
		p.id = e.nextID
		stampEntry(p.data, ms, p.id)
		if err := s.rn.Propose(p.data); err != nil {
			if errors.Is(err, raft.ErrProposalDropped) {
				err = fmt.Errorf("%w: shard %d has no leader yet", ErrNoLeader, s.meta.ID)
			}
			e.refuse(p, err)
			continue
		}
		s.lastStamp = ms
		p.proposedAt = now
		e.met.proposals.Inc()
		e.waiting[p.id] = p
	}
}

// refuse answers a proposal with an error, and counts it.
func (e *engine) refuse(p *proposal, err error) {
	e.met.proposalsFailed.Inc()
	p.done <- proposalResult{err: err}
}

func (e *engine) tickAll() {
	e.mu.RLock()
	for _, s := range e.groups {
		s.rn.Tick()
	}
	e.mu.RUnlock()
	now := time.Now()
	for id, p := range e.waiting {
		if now.Sub(p.proposedAt) >= commitTimeout {
			delete(e.waiting, id)
			e.refuse(p, fmt.Errorf("%w: shard %d did not commit the append within %v (its leader changed or is unreachable); it may still be committed", ErrNoLeader, p.shard.meta.ID, commitTimeout))
		}
	}
}

// drainInbound steps every raft message already received, so that the
// round's one sync covers all of them: a follower of shards led by several
// nodes gets their appends in separate batches, and a round (a sync) per
// batch would multiply its syncs by the number of leaders.
func (e *engine) drainInbound() {
	for range cap(e.recvc) {
		select {
		case in := <-e.recvc:
			e.step(in)
		case f := <-e.failc:
			e.handleFailure(f)
		default:
			return
		}
	}
}

// step hands received raft messages to their groups, on the loop. A message
// for a group this node has not opened opens it if the catalog places a
// replica here (a new stream or replica the catalog watch has not delivered
// yet); otherwise it is dropped, and raft sends again.
func (e *engine) step(in inbound) {
	for _, sm := range in.msgs {
		s, ok := e.shard(sm.shard)
		if !ok {
			meta, host := e.hosts(sm.shard)
			if !host {
				continue
			}
			var err error
			if s, err = e.addShard(meta); err != nil {
				e.log.Warn("opening a shard for a peer's message", "shard", sm.shard, "from", in.from, "err", err)
				continue
			}
		}
		if sm.msg.GetType() == raftpb.MsgProp {
			e.stampForwarded(s, sm.msg)
		}
		if err := s.rn.Step(sm.msg); err != nil && !errors.Is(err, raft.ErrProposalDropped) {
			e.log.Debug("raft step", "shard", sm.shard, "from", in.from, "type", sm.msg.GetType(), "err", err)
		}
	}
}

// stampForwarded gives the entries of a proposal a follower forwarded the
// leader's append time: stamps come from the leader's clock and never go
// back, whichever node took the append. The proposal id stays the
// follower's, so its waiter wakes when the follower applies the entry. A
// node that is not the leader leaves the stamp to the one it forwards to.
func (e *engine) stampForwarded(s *Shard, m *raftpb.Message) {
	if s.rn.BasicStatus().RaftState != raft.StateLeader {
		return
	}
	ms := max(time.Now().UnixMilli(), s.lastStamp)
	for _, ent := range m.Entries {
		if len(ent.Data) >= entryHeaderBytes && ent.Data[0] == entryRecords {
			stampTime(ent.Data, ms)
		}
	}
	s.lastStamp = ms
}

func (e *engine) anyReady() bool {
	e.mu.RLock()
	defer e.mu.RUnlock()
	for _, s := range e.groups {
		if s.rn.HasReady() {
			return true
		}
	}
	return false
}

type shardReady struct {
	s  *Shard
	rd raft.Ready
}

func (e *engine) handleReady() {
	if e.err() != nil {
		return
	}
	e.mu.RLock()
	var readies []shardReady
	b := e.db.NewBatch()
	mustSync := false
	var failed error
	for id, s := range e.groups {
		if !s.rn.HasReady() {
			continue
		}
		rd := s.rn.Ready()
		readies = append(readies, shardReady{s, rd})
		if rd.SoftState != nil {
			e.noteLeader(s, rd.SoftState.Lead)
		}
		if rd.SoftState != nil && rd.SoftState.Lead == e.nodeID && rd.SoftState.RaftState == raft.StateLeader {
			e.takeStamps(s)
		}
		if !raft.IsEmptySnap(rd.Snapshot) {
			if err := b.ApplySnapshot(id, rd.Snapshot); err != nil && failed == nil {
				failed = err
			}
			s.conf.Store(proto.CloneOf(rd.Snapshot.GetMetadata().GetConfState()))
		}
		if len(rd.Entries) > 0 {
			if err := b.Append(id, rd.Entries); err != nil && failed == nil {
				failed = err
			}
		}
		if !raft.IsEmptySnap(rd.Snapshot) {
			s.applied = max(s.applied, rd.Snapshot.GetMetadata().GetIndex())
		}
		if n := len(rd.CommittedEntries); n > 0 {
			s.applied = rd.CommittedEntries[n-1].GetIndex()
		}
		for _, ent := range rd.Entries {
			// Every replica follows the stamps of the log it holds, so
			// whichever becomes leader stamps on from the newest.
			if ms, _, _, ok, err := decodeEntry(ent.Data); err == nil && ok && ent.GetType() == raftpb.EntryNormal {
				s.lastStamp = max(s.lastStamp, ms)
			}
		}
		hs := s.hardState
		if rd.HardState != nil && !raft.IsEmptyHardState(rd.HardState) {
			// The commit index persisted is the one applied: a restarted
			// group starts with Applied at it, and raft hands out the
			// committed entries of one Ready only up to a size, so an
			// index committed but not applied yet (a configuration
			// change among them) must be handed out again after a crash.
			saved := proto.CloneOf(rd.HardState)
			saved.Commit = proto.Uint64(min(saved.GetCommit(), s.applied))
			b.SetHardState(id, saved)
			hs = rd.HardState
		}
		if raft.MustSync(hs, s.hardState, len(rd.Entries)) || !raft.IsEmptySnap(rd.Snapshot) {
			mustSync = true
		}
		s.hardState = hs
		for _, ent := range rd.CommittedEntries {
			if cs := e.applyConfChange(s, ent); cs != nil {
				b.SetConfState(id, cs)
				s.conf.Store(proto.CloneOf(cs))
			}
		}
	}
	e.mu.RUnlock()
	if len(readies) == 0 {
		return
	}
	if failed == nil && !b.Empty() {
		failed = b.Commit(mustSync)
	}
	if failed != nil {
		e.fail(fmt.Errorf("cluster: writing raft state: %w", failed))
		return
	}
	// Messages go out only now that the round is durable: a follower's
	// acknowledgement must never get ahead of its disk.
	var msgs map[uint64][]*raftpb.Message
	for _, r := range readies {
		if len(r.rd.Messages) > 0 {
			if msgs == nil {
				msgs = make(map[uint64][]*raftpb.Message)
			}
			msgs[r.s.meta.ID] = r.rd.Messages
		}
	}
	if msgs != nil && e.tr != nil {
		for _, f := range e.tr.send(msgs) {
			e.handleFailure(f)
		}
	}
	now := time.Now()
	for _, r := range readies {
		if !raft.IsEmptySnap(r.rd.Snapshot) {
			r.s.setCommitted(r.rd.Snapshot.GetMetadata().GetIndex())
		}
		// Readers see the new entries before their proposers hear they
		// are committed, so a read right after an append finds it.
		if n := len(r.rd.CommittedEntries); n > 0 {
			r.s.setCommitted(r.rd.CommittedEntries[n-1].GetIndex())
		}
		for _, ent := range r.rd.CommittedEntries {
			e.applyRecords(r.s, ent, now)
		}
		r.s.rn.Advance(r.rd)
	}
}

// applyConfChange applies a committed configuration change and returns the
// new ConfState to persist, or nil for any other entry.
func (e *engine) applyConfChange(s *Shard, ent *raftpb.Entry) *raftpb.ConfState {
	var cc raftpb.ConfChangeI
	switch ent.GetType() {
	case raftpb.EntryConfChange:
		var c raftpb.ConfChange
		if err := proto.Unmarshal(ent.Data, &c); err != nil {
			e.log.Error("corrupt configuration change", "shard", s.meta.ID, "index", ent.GetIndex(), "err", err)
			return nil
		}
		cc = &c
	case raftpb.EntryConfChangeV2:
		var c raftpb.ConfChangeV2
		if err := proto.Unmarshal(ent.Data, &c); err != nil {
			e.log.Error("corrupt configuration change", "shard", s.meta.ID, "index", ent.GetIndex(), "err", err)
			return nil
		}
		cc = &c
	default:
		return nil
	}
	return s.rn.ApplyConfChange(cc)
}

// noteLeader follows a group's leader as raft reports it. REQUIRES: the
// loop goroutine.
func (e *engine) noteLeader(s *Shard, lead uint64) {
	prev := s.leader.Swap(lead)
	if prev == lead {
		return
	}
	if lead != raft.None {
		e.met.leaderChanges.Inc()
		s.leaderless.Store(0)
	} else {
		s.leaderless.Store(time.Now().UnixNano())
	}
	switch e.nodeID {
	case prev:
		e.met.leading.Add(-1)
	case lead:
		e.met.leading.Add(1)
	}
	if prev != raft.None {
		e.failInFlight(s, fmt.Sprintf("the leader changed (node %d to %d) while it was in flight", prev, lead))
	}
}

// failInFlight answers the appends of a shard waiting on this node when they
// may have been lost without raft ever saying so: the leader changed (the old
// one had them, or this follower forwarded them to it), or the transport
// dropped the batch that forwarded them. Waiting out commitTimeout would
// stall their producers that long. They may still commit (if the old leader
// replicated them), so a producer that retries may store a record twice:
// at-least-once, as with any retried append. REQUIRES: the loop goroutine.
func (e *engine) failInFlight(s *Shard, why string) {
	for id, p := range e.waiting {
		if p.shard != s {
			continue
		}
		delete(e.waiting, id)
		e.refuse(p, fmt.Errorf("%w: shard %d: %s; the append may still be committed", ErrNoLeader, s.meta.ID, why))
	}
}

// applyRecords wakes the proposer of a committed record entry, if it is
// waiting on this node, and counts the append.
func (e *engine) applyRecords(s *Shard, ent *raftpb.Entry, now time.Time) {
	if ent.GetType() != raftpb.EntryNormal {
		return
	}
	if id, through, ok := decodeTrim(ent.Data); ok {
		e.applyTrim(s, ent.GetIndex(), through)
		if p, found := e.waiting[id]; found && p.shard == s {
			delete(e.waiting, id)
			e.met.commitLatency.Observe(now.Sub(p.proposedAt).Seconds())
			p.done <- proposalResult{index: ent.GetIndex()}
		}
		return
	}
	ms, id, _, ok, err := decodeEntry(ent.Data)
	if err != nil {
		e.log.Error("corrupt entry", "shard", s.meta.ID, "index", ent.GetIndex(), "err", err)
		return
	}
	if !ok {
		return
	}
	p, found := e.waiting[id]
	if !found || p.shard != s {
		return
	}
	delete(e.waiting, id)
	s.met.records.Add(float64(p.records))
	s.met.bytes.Add(float64(len(p.data) - entryHeaderBytes))
	s.met.latency.Observe(now.Sub(p.queuedAt).Seconds())
	e.met.commitLatency.Observe(now.Sub(p.proposedAt).Seconds())
	p.done <- proposalResult{index: ent.GetIndex(), appendMs: ms}
}

// applyTrim drops a shard's log through a committed trim entry's index
// (never the entry itself or anything after it), on every replica alike.
func (e *engine) applyTrim(s *Shard, index, through uint64) {
	through = min(through, index-1)
	if through < s.First() {
		return
	}
	if err := s.log.Compact(through); err != nil {
		e.log.Error("trimming a shard", "shard", s.meta.ID, "through", through, "err", err)
	}
}

// fail stops all writes after a store error: raft's in-memory state has moved
// past what is on disk, so the only safe course is to refuse further work
// until the process restarts from the disk.
func (e *engine) fail(err error) {
	e.log.Error("storage failed; this node refuses writes until restarted", "err", err)
	e.mu.Lock()
	if e.failed == nil {
		e.failed = err
	}
	e.mu.Unlock()
	e.failWaiting(err)
}

func (e *engine) failWaiting(err error) {
	for _, p := range e.parked {
		e.refuse(p, err)
	}
	e.parked = nil
	for id, p := range e.waiting {
		e.refuse(p, err)
		delete(e.waiting, id)
	}
	for {
		select {
		case p := <-e.propc:
			e.refuse(p, err)
		default:
			return
		}
	}
}

// takeStamps makes a node that has just become a shard's leader continue the
// append times of the log it leads, whoever stamped them. REQUIRES: the loop
// goroutine.
func (e *engine) takeStamps(s *Shard) {
	last, err := s.log.LastIndex()
	if err != nil {
		return
	}
	ent, ok, err := s.lastDataThrough(last)
	if err != nil {
		e.log.Warn("reading the newest entry of a shard this node now leads", "shard", s.meta.ID, "err", err)
		return
	}
	if ok {
		s.lastStamp = max(s.lastStamp, ent.AppendTime.UnixMilli())
	}
}

// addShard opens (or bootstraps) the raft group of a shard on the loop
// goroutine. A shard with nothing stored is bootstrapped as raft recommends:
// its storage starts at a snapshot at index 1 holding the replica set as the
// ConfState, identically on every replica.
func (e *engine) addShard(meta ShardMeta) (*Shard, error) {
	if err := e.err(); err != nil {
		return nil, err
	}
	if s, ok := e.shard(meta.ID); ok {
		return s, nil
	}
	l, err := e.db.Log(meta.ID)
	if err != nil {
		return nil, err
	}
	hs, cs, err := l.InitialState()
	if err != nil {
		return nil, err
	}
	last, err := l.LastIndex()
	if err != nil {
		return nil, err
	}
	fresh := raft.IsEmptyHardState(hs) && last == 0 && len(cs.GetVoters()) == 0
	if fresh && bootstraps(meta, e.nodeID) {
		b := e.db.NewBatch()
		snap := &raftpb.Snapshot{Metadata: &raftpb.SnapshotMetadata{
			Index:     proto.Uint64(1),
			Term:      proto.Uint64(1),
			ConfState: &raftpb.ConfState{Voters: slices.Clone(meta.Replicas)},
		}}
		if err := b.ApplySnapshot(meta.ID, snap); err != nil {
			return nil, err
		}
		b.SetHardState(meta.ID, &raftpb.HardState{Term: proto.Uint64(1), Commit: proto.Uint64(1)})
		if err := b.Commit(true); err != nil {
			return nil, err
		}
		if hs, cs, err = l.InitialState(); err != nil {
			return nil, err
		}
	}
	if last, err = l.LastIndex(); err != nil {
		return nil, err
	}
	rn, err := raft.NewRawNode(&raft.Config{
		ID:              e.nodeID,
		ElectionTick:    10,
		HeartbeatTick:   1,
		Storage:         l,
		Applied:         hs.GetCommit(),
		MaxSizePerMsg:   maxRaftBatchBytes / 2,
		MaxInflightMsgs: 256,
		CheckQuorum:     true,
		PreVote:         true,
		Logger:          raftLogger{e.log.With("shard", meta.ID)},
	})
	if err != nil {
		return nil, fmt.Errorf("cluster: starting raft for shard %d: %w", meta.ID, err)
	}
	s := &Shard{meta: meta, eng: e, log: l, rn: rn, hardState: hs, grown: make(chan struct{}), met: e.met.forStream(meta.Stream)}
	s.leaderless.Store(time.Now().UnixNano())
	s.committed = hs.GetCommit()
	s.applied = hs.GetCommit()
	s.conf.Store(proto.CloneOf(cs))
	// Stamps continue from the newest stored entry, committed or not: after
	// a crash, entries synced but not committed commit once the group has
	// re-elected itself, and new entries must not be stamped earlier.
	if ent, ok, err := s.lastDataThrough(last); err != nil {
		return nil, err
	} else if ok {
		s.lastStamp = ent.AppendTime.UnixMilli()
	}
	voters := cs.GetVoters()
	if (len(voters) == 1 && voters[0] == e.nodeID) || (fresh && len(voters) > 1 && meta.Replicas[0] == e.nodeID) {
		// The only voter, or the preferred leader of a new group, stands
		// for election at once instead of waiting out an election timeout.
		if err := rn.Campaign(); err != nil {
			return nil, fmt.Errorf("cluster: campaigning for shard %d: %w", meta.ID, err)
		}
	}
	e.mu.Lock()
	e.groups[meta.ID] = s
	e.mu.Unlock()
	e.met.shards.Add(1)
	e.streamShards[meta.Stream]++
	return s, nil
}

// bootstraps reports whether node id creates a shard's raft group from its
// initial configuration: it is one of the replicas the shard was created
// with, and that set has not changed since. A replica added later, or a
// replica of a set that changed since (an original one whose data was lost),
// starts empty and learns the group's state from its leader instead, so it
// never claims a configuration the group has left.
func bootstraps(m ShardMeta, id uint64) bool {
	initial := m.Initial
	if len(initial) == 0 {
		initial = m.Replicas
	}
	return slices.Contains(initial, id) && slices.Equal(initial, m.Replicas)
}

// removeShard stops a shard's raft group and deletes its data, on the loop
// goroutine; proposals still waiting for it fail. Closing a stream's last
// open group here drops the stream's append series.
func (e *engine) removeShard(id uint64) error {
	s, ok := e.shard(id)
	if ok {
		e.mu.Lock()
		delete(e.groups, id)
		e.mu.Unlock()
		e.met.shards.Add(-1)
		if e.streamShards[s.meta.Stream]--; e.streamShards[s.meta.Stream] <= 0 {
			delete(e.streamShards, s.meta.Stream)
			e.met.forget(s.meta.Stream)
		}
		// Its appends in flight fail as deleted, before noteLeader would
		// fail them as orphaned by a leader change.
		s.markRemoved()
		for pid, p := range e.waiting {
			if p.shard == s {
				e.refuse(p, fmt.Errorf("%w: shard %d was deleted", ErrShardNotFound, id))
				delete(e.waiting, pid)
			}
		}
		e.noteLeader(s, raft.None)
	}
	return e.db.DeleteShard(id)
}
