package bridge

// The ingest path: from an MQTT PUBLISH to a committed record.
//
// The Ingest hook sits in mochi's OnPublish, on the publishing client's own
// goroutine. Blocking there until the commit would leave one publish in
// flight per connection (about 6k msgs/s on 2 cores; see
// shared/reference/mochi.md), so QoS 1 and 2 are acknowledged
// asynchronously:
//
//	client goroutine (mochi)        per shard                     per session, on demand
//	────────────────────────        ─────────                     ──────────────────────
//	OnPublish: route, build the ──► batcher: take what is     ──► writer: PUBACK / PUBREC in
//	record, wait for room,          queued (plus Linger),         publish order, then the live
//	queue it, push it on the        encode one BatchedRecord,     fan-out (retain and
//	session's FIFO, return          Shard.Propose              ─┐ subscribers) through an
//	ErrRejectPacket                 waiter: Pending.Wait, in  ◄─┘ inline client
//	                                order; mark the entries done
//
// mochi sends nothing for a publish its hook rejects (server.go:916: no ack,
// no retain, no fan-out, no receive-quota bookkeeping), so after the commit
// the bridge writes the ack itself with Client.WritePacket (which locks the
// client, clients.go:526) and delivers the message live by injecting it
// through an inline client (Server.InjectPacket, server.go:841, which runs
// retainMessage and publishToSubscribers and skips ACL and inflight for
// inline clients). The inline client carries the publisher's ID, so the
// delivered packet's Origin is the publisher's (NoLocal works) and our own
// OnPublish lets inline clients through untouched.
//
// QoS 0 is queued the same way but mochi is left to deliver it (OnPublish
// returns nil): it is stored best effort, nobody waits for its commit.
//
// # Ordering
//
// One batcher goroutine per shard proposes its batches one after another
// (Shard.Propose keeps that order in the log) and hands each Pending to the
// shard's waiter goroutine, which waits for them in the same order; at most
// pipelineDepth batches per shard are proposed and not yet committed, so a
// new batch forms while the previous ones commit. A client's publishes may
// go to different shards and commit out of order, so each session keeps a
// FIFO of its QoS 1 and 2 publishes in the order they were read: an entry
// is acknowledged only when it and every entry before it is done
// [MQTT-4.6.0-2]. At most one writer goroutine per session writes its acks,
// so a client that does not read its socket stalls only its own acks, not
// a shard's waiter.
//
// # Bounds (backpressure)
//
//   - Per session, at most mqtt.receive-maximum QoS 1/2 publishes not yet
//     acknowledged. mochi's own receive quota is never spent on a rejected
//     publish, so it never disconnects for it; OnPublish blocks instead,
//     which stops mochi reading the socket (3.1.1 has no receive maximum;
//     an MQTT 5 client over the maximum it was told is slowed the same way).
//   - Over all clients, at most mqtt.ingest.max-pending-bytes of publishes
//     queued or committing, each charged its payload and topic plus a fixed
//     overhead (so empty payloads are bounded too); a single publish larger
//     than the whole budget is let in alone.
//   - Waits are bounded by mqtt.ingest.publish-timeout from the moment the
//     publish is read: past it, a QoS 1/2 publish is refused with quota
//     exceeded (0x97) on MQTT 5, its client disconnected on 3.1.1, and a
//     QoS 0 publish is dropped (counted). The same deadline bounds the
//     proposal and the commit wait: a publish still queued when it expires
//     is refused without being stored; one whose commit outlives it is
//     refused too, although it may still commit (a retransmit then stores
//     it twice, which at-least-once allows).
//   - Every wait in OnPublish also ends when the client disconnects (polled,
//     since mochi offers no channel for it) or the Ingest closes, so mochi's
//     Close, which waits for its client goroutines, is never held up long.
//
// # Failures
//
// MQTT 5 clients get the reason code in their PUBACK or PUBREC: 0x95 for a
// payload over store.max-record-size, 0x90 for a topic no route matches
// under mqtt.unmatched: reject, 0x97 for overload and transient errors (no
// leader, timeouts), 0x80 for anything else (a missing stream the route may
// not create, a deleted shard, the node closing). MQTT 3.1.1 has no
// negative ack: the client is disconnected, so it retransmits. (mochi's
// own Code path would answer QoS 2 with a PUBACK, server.go:921; the bridge
// writes PUBREC itself.) A stream or shard that is gone is dropped from the
// route cache, so the retransmit looks it up again.
//
// # QoS 2 exactly once
//
// Each session maps packet IDs of QoS 2 publishes to pending or committed.
// A retransmitted PUBLISH while pending is dropped (its PUBREC goes out at
// the commit); one after the commit is answered with PUBREC success without
// a second append. On success the PUBREC is also put in the client's mochi
// inflight map, as mochi itself does (server.go:947), so mochi's
// processPubrel (server.go:1196) finds it and answers PUBCOMP; mochi would
// answer a retransmit whose PUBREC is inflight with 0x91 (server.go:896),
// so OnPacketRead takes that entry out first and OnPublish re-acks
// (OnPacketRead cannot drop the packet: its ErrRejectPacket ends the
// connection, clients.go:521). The
// state is cleared at PUBREL, on a failed commit (the retransmit is then a
// new attempt), and with the session. A QoS 1 retransmit (DUP) whose
// original is still pending is dropped too; one after the original was
// acknowledged is stored again (at-least-once).
//
// # Sessions
//
// Session state is keyed by client ID and follows mochi's session rules
// (inheritClientSession, server.go:562): a reconnect that resumes the
// session keeps it, and acks go to the current connection; a clean start
// (or the takeover of a 3.1.1 clean session) starts a new one, and the old
// session's acks are dropped (its publishes still commit). The state ends
// when mochi ends the session (OnDisconnect with expire, OnClientExpired).
//
// # Routing
//
// The Router picks the stream and key. A stream's shard map (wire.ShardMap
// over the stream's shards: HashKey ranges, as the gRPC clients route) and
// its shards' batchers are cached; the first publish to a stream resolves it
// (creating it with the stream defaults when the route says create), and
// concurrent publishes wait for that one resolution. Unmatched topics are
// delivered live and not stored (mqtt.unmatched: live), or refused.
// Inline clients and $SYS topics are left to mochi.

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/protobuf/proto"

	"github.com/weir-log/weir/cluster"
	"github.com/weir-log/weir/conf"
)

// IngestOptions configure the ingest hook.
type IngestOptions struct {
	Node   *cluster.Node
	Server *mqtt.Server // the broker the hook is added to
	Router *Router
	// MQTT supplies Ingest.Linger, Ingest.MaxPendingBytes,
	// Ingest.PublishTimeout and ReceiveMaximum.
	MQTT conf.MQTT
	// Stream supplies ShardCount, ReplicationFactor and BacklogDuration
	// of streams created by a route's create.
	Stream conf.StreamDefaults
	// MaxRecordSize is store.max-record-size: a larger payload is refused.
	MaxRecordSize int
	// MaxBatchSize is store.max-batch-size: the most bytes of records one
	// append carries.
	MaxBatchSize int
	Logger       *slog.Logger // default: discard
	// Metrics, when set, gets the ingest counters (weir_mqtt_ingest_*).
	Metrics prometheus.Registerer
}

// Ingest is the mochi hook that stores every routed publish in its stream
// and acknowledges QoS 1 and 2 only once the record is committed. See the
// comment at the top of ingest.go for the design.
type Ingest struct {
	mqtt.HookBase

	opts        IngestOptions
	log         *slog.Logger
	srv         *mqtt.Server
	node        *cluster.Node
	router      *Router
	linger      time.Duration
	timeout     time.Duration
	receiveMax  int
	maxRecord   int
	maxBatch    int
	budget      *budget
	metrics     *ingestMetrics
	inline      chan *mqtt.Client // free inline clients for live delivery
	quit        chan struct{}     // closed by Close: publishers stop waiting, batchers drain
	ctx         context.Context   // canceled when Close gives up waiting for commits
	cancel      context.CancelFunc
	closeOnce   sync.Once
	wg          sync.WaitGroup // batchers, waiters, ack writers
	beforeBatch func()         // test seam: called by a batcher before it takes a batch

	// No lock below (nor a session's, the budget's or a batcher's) is
	// held while another is taken.
	streamsMu sync.RWMutex
	streams   map[string]*streamRoute // guarded by streamsMu: resolved (or resolving) streams

	mu       sync.Mutex
	closed   bool                // guarded by mu
	batchers map[uint64]*batcher // guarded by mu: by shard id

	sessMu   sync.RWMutex
	sessions map[string]*session // guarded by sessMu: by client ID
}

const (
	// pipelineDepth is how many batches per shard may be proposed and not
	// yet committed. Two keep one batch forming while one commits without
	// splitting a commit round's records into many small entries.
	pipelineDepth = 2
	// entryOverhead is charged to the pending budget per publish besides
	// its payload and topic: what the bridge holds for it otherwise.
	entryOverhead = 256
	// closedPoll is how often a blocked publisher checks that its client
	// is still connected.
	closedPoll = 100 * time.Millisecond
	// inlinePool is how many idle inline clients are kept for live
	// delivery.
	inlinePool = 8
)

// Errors behind the reason codes.
var (
	errClosed  = errors.New("bridge: ingest is closed")
	errTimeout = errors.New("bridge: publish timeout")
	errGone    = errors.New("bridge: client disconnected")
)

// NewIngest checks opts and returns the hook; it starts no goroutines until
// the first publish to a shard.
func NewIngest(opts IngestOptions) (*Ingest, error) {
	switch {
	case opts.Node == nil:
		return nil, errors.New("bridge: IngestOptions.Node is nil")
	case opts.Server == nil:
		return nil, errors.New("bridge: IngestOptions.Server is nil")
	case opts.Router == nil:
		return nil, errors.New("bridge: IngestOptions.Router is nil")
	case opts.MaxRecordSize <= 0 || opts.MaxBatchSize < opts.MaxRecordSize:
		return nil, fmt.Errorf("bridge: MaxRecordSize %d and MaxBatchSize %d: want 0 < MaxRecordSize <= MaxBatchSize",
			opts.MaxRecordSize, opts.MaxBatchSize)
	case opts.MQTT.Ingest.PublishTimeout <= 0:
		return nil, errors.New("bridge: mqtt.ingest.publish-timeout must be positive")
	case opts.MQTT.Ingest.MaxPendingBytes <= 0:
		return nil, errors.New("bridge: mqtt.ingest.max-pending-bytes must be positive")
	case opts.MQTT.ReceiveMaximum <= 0:
		return nil, errors.New("bridge: mqtt.receive-maximum must be positive")
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	ctx, cancel := context.WithCancel(context.Background())
	i := &Ingest{
		opts:       opts,
		log:        log.With("component", "mqtt-ingest"),
		srv:        opts.Server,
		node:       opts.Node,
		router:     opts.Router,
		linger:     opts.MQTT.Ingest.Linger,
		timeout:    opts.MQTT.Ingest.PublishTimeout,
		receiveMax: opts.MQTT.ReceiveMaximum,
		maxRecord:  opts.MaxRecordSize,
		maxBatch:   opts.MaxBatchSize,
		budget:     newBudget(int64(opts.MQTT.Ingest.MaxPendingBytes)),
		inline:     make(chan *mqtt.Client, inlinePool),
		quit:       make(chan struct{}),
		ctx:        ctx,
		cancel:     cancel,
		streams:    map[string]*streamRoute{},
		batchers:   map[uint64]*batcher{},
		sessions:   map[string]*session{},
	}
	i.metrics = newIngestMetrics(i.budget)
	if opts.Metrics != nil {
		if err := i.metrics.register(opts.Metrics); err != nil {
			cancel()
			return nil, err
		}
	}
	return i, nil
}

// ID names the hook.
func (i *Ingest) ID() string { return "weir-ingest" }

// Provides reports the events the hook handles.
func (i *Ingest) Provides(b byte) bool {
	switch b {
	case mqtt.OnPublish, mqtt.OnPacketRead, mqtt.OnSessionEstablished, mqtt.OnDisconnect, mqtt.OnClientExpired, mqtt.OnWillSent:
		return true
	}
	return false
}

// Stop is called by mochi's Server.Close once its clients are gone; it
// closes the Ingest.
func (i *Ingest) Stop() error { return i.Close() }

// Close stops taking publishes, lets those already accepted commit (for at
// most mqtt.ingest.publish-timeout; the rest fail) and acknowledges them
// where their clients are still connected, then stops every goroutine.
// Call it after the broker stopped accepting; it is idempotent, and mochi's
// Server.Close calls it through Stop.
func (i *Ingest) Close() error {
	i.closeOnce.Do(func() {
		i.mu.Lock()
		i.closed = true
		i.mu.Unlock()
		close(i.quit)
		giveUp := time.AfterFunc(i.timeout, i.cancel)
		i.wg.Wait()
		giveUp.Stop()
		i.cancel()
	})
	return nil
}

// OnPublish stores a publish; see the file comment.
func (i *Ingest) OnPublish(cl *mqtt.Client, pk packets.Packet) (packets.Packet, error) {
	if cl.Net.Inline || strings.HasPrefix(pk.TopicName, "$SYS") {
		return pk, nil
	}
	if pk.FixedHeader.Qos == 0 {
		return i.publishQoS0(cl, pk)
	}
	i.publishQoS12(cl, pk)
	return pk, packets.ErrRejectPacket
}

// OnWillSent stores a will once mochi has delivered it (mochi sends wills
// without OnPublish), as a QoS 0 publish of the departed client: nobody
// waits for its commit, and one that cannot be stored is dropped (counted
// and logged). Under overload it waits for room like any publish; a
// delayed will (MQTT 5) is sent from mochi's event loop, which then waits
// too, at most mqtt.ingest.publish-timeout.
func (i *Ingest) OnWillSent(cl *mqtt.Client, pk packets.Packet) {
	if cl.Net.Inline || strings.HasPrefix(pk.TopicName, "$SYS") {
		return
	}
	i.publishQoS0(cl, pk)
}

// publishQoS0 queues a QoS 0 publish and lets mochi deliver it; nothing
// waits for its commit. A publish that cannot be stored is dropped
// (counted and logged) rather than delivered.
func (i *Ingest) publishQoS0(cl *mqtt.Client, pk packets.Packet) (packets.Packet, error) {
	tgt, ok := i.router.Route(pk.TopicName, cl.ID, string(cl.Properties.Username))
	if !ok {
		if i.router.RejectUnmatched() {
			i.metrics.refused.Inc()
			return pk, packets.ErrRejectPacket
		}
		i.metrics.live.Inc()
		return pk, nil
	}
	deadline := time.Now().Add(i.timeout)
	e, code := i.newEntry(cl, pk, tgt, deadline)
	if code != packets.CodeSuccess {
		i.metrics.refused.Inc()
		i.log.Warn("QoS 0 publish dropped", "client", cl.ID, "topic", pk.TopicName, "stream", tgt.Stream, "reason", code.Reason)
		return pk, packets.ErrRejectPacket
	}
	if err := i.enqueue(cl, e, tgt); err != nil {
		i.metrics.failed.Inc()
		i.log.Warn("QoS 0 publish dropped", "client", cl.ID, "topic", pk.TopicName, "stream", tgt.Stream, "error", err)
		return pk, packets.ErrRejectPacket
	}
	return pk, nil
}

// publishQoS12 accepts a QoS 1 or 2 publish: it is acknowledged by the
// session's writer, in order, once committed or failed.
func (i *Ingest) publishQoS12(cl *mqtt.Client, pk packets.Packet) {
	deadline := time.Now().Add(i.timeout)
	s := i.session(cl)
	switch s.classify(pk) {
	case pubDuplicate:
		i.metrics.duplicates.Inc()
		return
	case pubReack:
		// Committed before; PUBREC again, in order, without a second
		// append or delivery.
		if err := s.waitRoom(i, cl, deadline); err != nil {
			i.refuse(cl, s, pk, err)
			return
		}
		i.metrics.duplicates.Inc()
		s.push(&entry{sess: s, cl: cl, pk: ackInfo(pk), done: true, code: packets.CodeSuccess})
		return
	}
	if err := s.waitRoom(i, cl, deadline); err != nil {
		i.refuse(cl, s, pk, err)
		return
	}
	tgt, ok := i.router.Route(pk.TopicName, cl.ID, string(cl.Properties.Username))
	if !ok {
		if i.router.RejectUnmatched() {
			i.metrics.refused.Inc()
			i.log.Debug("publish refused: no route matches its topic", "client", cl.ID, "topic", pk.TopicName)
			i.fail(cl, s, pk, packets.ErrTopicNameInvalid)
			return
		}
		// Delivered live, not stored; acknowledged in order.
		i.metrics.live.Inc()
		s.push(&entry{sess: s, cl: cl, pk: pk, live: true, done: true, code: packets.CodeSuccess})
		return
	}
	e, code := i.newEntry(cl, pk, tgt, deadline)
	if code != packets.CodeSuccess {
		i.metrics.refused.Inc()
		i.log.Debug("publish refused", "client", cl.ID, "topic", pk.TopicName, "stream", tgt.Stream, "reason", code.Reason)
		i.fail(cl, s, pk, code)
		return
	}
	e.sess, e.live = s, true
	if err := i.enqueue(cl, e, tgt); err != nil {
		i.refuse(cl, s, pk, err)
	}
}

// newEntry builds the record of a routed publish, or the code refusing it.
func (i *Ingest) newEntry(cl *mqtt.Client, pk packets.Packet, tgt Target, deadline time.Time) (*entry, packets.Code) {
	if len(pk.Payload) > i.maxRecord {
		return nil, packets.ErrPacketTooLarge
	}
	rec, err := proto.Marshal(NewRecord(cl, pk, tgt.Key))
	if err != nil || len(rec)+recordFraming > i.maxBatch {
		return nil, packets.ErrPacketTooLarge
	}
	return &entry{
		cl:       cl,
		pk:       pk,
		rec:      rec,
		cost:     int64(len(pk.Payload) + len(pk.TopicName) + entryOverhead),
		deadline: deadline,
	}, packets.CodeSuccess
}

// enqueue finds the batcher of the publish's shard, waits for room in the
// pending budget and queues the entry, pushing it on its session's FIFO
// first (QoS 1/2) so its completion finds it there.
func (i *Ingest) enqueue(cl *mqtt.Client, e *entry, tgt Target) error {
	ctx, cancel := context.WithDeadline(i.ctx, e.deadline)
	b, err := i.batcherFor(ctx, tgt)
	cancel()
	if err != nil {
		return err
	}
	if err := i.budget.acquire(i, cl, e.cost, e.deadline); err != nil {
		return err
	}
	e.stream = tgt.Stream
	if e.sess != nil {
		e.sess.push(e)
	}
	if !b.enqueue(e) {
		// The batcher stopped (shard gone, or closing) after we found it.
		i.complete([]*entry{e}, fmt.Errorf("%w: shard %d stopped taking appends", cluster.ErrShardNotFound, b.id))
	}
	return nil
}

// refuse answers a publish that could not be queued because of err.
func (i *Ingest) refuse(cl *mqtt.Client, s *session, pk packets.Packet, err error) {
	switch {
	case errors.Is(err, errGone):
		return // nobody to answer; the client retransmits on reconnect
	case errors.Is(err, errTimeout), errors.Is(err, context.DeadlineExceeded), errors.Is(err, cluster.ErrNoLeader):
		i.metrics.overload.Inc()
		i.log.Debug("publish refused: overloaded", "client", cl.ID, "topic", pk.TopicName, "error", err)
		i.fail(cl, s, pk, packets.ErrQuotaExceeded)
	default:
		i.metrics.failed.Inc()
		i.log.Warn("publish refused", "client", cl.ID, "topic", pk.TopicName, "error", err)
		i.fail(cl, s, pk, codeOf(err))
	}
}

// fail answers a QoS 1/2 publish refused before it was queued: an MQTT 5
// client gets code, in order; a 3.1.1 client is disconnected.
func (i *Ingest) fail(cl *mqtt.Client, s *session, pk packets.Packet, code packets.Code) {
	if cl.Properties.ProtocolVersion < 5 {
		s.forget(pk)
		cl.Stop(code)
		return
	}
	s.push(&entry{sess: s, cl: cl, pk: ackInfo(pk), done: true, code: code})
}

// codeOf maps an append error to the reason code MQTT 5 clients get.
func codeOf(err error) packets.Code {
	switch {
	case err == nil:
		return packets.CodeSuccess
	case errors.Is(err, errTimeout), errors.Is(err, context.DeadlineExceeded), errors.Is(err, cluster.ErrNoLeader):
		return packets.ErrQuotaExceeded
	default:
		return packets.ErrUnspecifiedError
	}
}

// ackInfo keeps what an ack needs of a publish (no payload).
func ackInfo(pk packets.Packet) packets.Packet {
	return packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: pk.FixedHeader.Qos}, PacketID: pk.PacketID, TopicName: pk.TopicName}
}

// OnPacketRead prepares two QoS 2 exchanges before mochi sees them: a
// retransmitted PUBLISH the bridge already knows (mochi would answer 0x91
// if its PUBREC is inflight), and a PUBREL, which ends the exactly-once
// state (making sure mochi has the PUBREC inflight, so it answers PUBCOMP).
func (i *Ingest) OnPacketRead(cl *mqtt.Client, pk packets.Packet) (packets.Packet, error) {
	if cl.Net.Inline {
		return pk, nil
	}
	switch {
	case pk.FixedHeader.Type == packets.Publish && pk.FixedHeader.Qos == 2:
		if s := i.lookupSession(cl.ID); s != nil && s.knowsQoS2(pk.PacketID) {
			if in, ok := cl.State.Inflight.Get(pk.PacketID); ok && in.FixedHeader.Type == packets.Pubrec {
				if cl.State.Inflight.Delete(pk.PacketID) {
					atomic.AddInt64(&i.srv.Info.Inflight, -1)
				}
			}
		}
	case pk.FixedHeader.Type == packets.Pubrel:
		if s := i.lookupSession(cl.ID); s != nil && s.release(pk.PacketID) {
			if _, ok := cl.State.Inflight.Get(pk.PacketID); !ok {
				i.setInflightPubrec(cl, pk.PacketID)
			}
		}
	}
	return pk, nil
}

// OnSessionEstablished starts or resumes the client's session state,
// following mochi's rule for when a session is inherited.
func (i *Ingest) OnSessionEstablished(cl *mqtt.Client, pk packets.Packet) {
	if cl.Net.Inline {
		return
	}
	i.sessMu.Lock()
	defer i.sessMu.Unlock()
	s := i.sessions[cl.ID]
	if s != nil && s.resumes(cl, pk) {
		return
	}
	i.sessions[cl.ID] = newSession(i, cl)
}

// OnDisconnect ends the session state when mochi ends the session.
func (i *Ingest) OnDisconnect(cl *mqtt.Client, err error, expire bool) {
	if expire && !cl.IsTakenOver() {
		i.dropSession(cl)
	}
}

// OnClientExpired ends the state of an expired session.
func (i *Ingest) OnClientExpired(cl *mqtt.Client) { i.dropSession(cl) }

func (i *Ingest) dropSession(cl *mqtt.Client) {
	i.sessMu.Lock()
	defer i.sessMu.Unlock()
	if s := i.sessions[cl.ID]; s != nil && s.current() == cl {
		delete(i.sessions, cl.ID)
	}
}

func (i *Ingest) lookupSession(id string) *session {
	i.sessMu.RLock()
	defer i.sessMu.RUnlock()
	return i.sessions[id]
}

// session returns the client's session state, creating it for a client
// connected before the hook saw its session start.
func (i *Ingest) session(cl *mqtt.Client) *session {
	if s := i.lookupSession(cl.ID); s != nil {
		return s
	}
	i.sessMu.Lock()
	defer i.sessMu.Unlock()
	s := i.sessions[cl.ID]
	if s == nil {
		s = newSession(i, cl)
		i.sessions[cl.ID] = s
	}
	return s
}

// setInflightPubrec records a QoS 2 publish's PUBREC in mochi's inflight
// map, as processPublish does, so processPubrel answers PUBCOMP.
func (i *Ingest) setInflightPubrec(cl *mqtt.Client, id uint16) packets.Packet {
	now := time.Now().Unix()
	ack := packets.Packet{
		FixedHeader: packets.FixedHeader{Type: packets.Pubrec},
		PacketID:    id,
		Created:     now,
		Expiry:      now + i.srv.Options.Capabilities.MaximumMessageExpiryInterval,
	}
	if cl.State.Inflight.Set(ack) {
		atomic.AddInt64(&i.srv.Info.Inflight, 1)
	}
	return ack
}

// waitUntil blocks until ready() holds, re-checking it whenever the
// channel from changed() is closed; it gives up at deadline (errTimeout),
// when cl disconnects (errGone) or when the Ingest closes (errClosed).
// changed must be called before ready is checked, so no change is missed.
func (i *Ingest) waitUntil(cl *mqtt.Client, deadline time.Time, changed func() <-chan struct{}, ready func() bool) error {
	var timer, poll *time.Timer
	defer func() {
		if timer != nil {
			timer.Stop()
			poll.Stop()
		}
	}()
	for {
		ch := changed()
		if ready() {
			return nil
		}
		if timer == nil {
			timer = time.NewTimer(time.Until(deadline))
			poll = time.NewTimer(closedPoll)
		}
		select {
		case <-ch:
		case <-timer.C:
			return errTimeout
		case <-poll.C:
			if cl.Closed() {
				return errGone
			}
			poll.Reset(closedPoll)
		case <-i.quit:
			return errClosed
		}
	}
}
