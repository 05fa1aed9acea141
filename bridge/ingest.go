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
// The log's order of one client's records is its publish order while
// nothing fails. After a failure it may not be: when an entry fails (a
// timeout, no leader) and later ones, in later batches, commit, the
// client's retransmit of the failed one lands after them. At-least-once
// with retransmission reorders, as Kafka producers do without
// idempotence; the bridge does not hold later publishes back for it.
//
// # Bounds (backpressure)
//
//   - Per session, at most mqtt.receive-maximum QoS 1/2 publishes not yet
//     acknowledged. mochi's own receive quota is never spent on a rejected
//     publish, so it never disconnects for it; OnPublish blocks instead,
//     which stops mochi reading the socket (3.1.1 has no receive maximum;
//     an MQTT 5 client over the maximum it was told is slowed the same way).
//   - Over all clients, at most mqtt.ingest.max-pending-bytes of publishes
//     held, each charged what the bridge holds for it: its marshaled
//     record, the payload kept for the live delivery (QoS 1/2) and a fixed
//     overhead (so empty payloads are bounded too). A stored publish is
//     charged until it is committed or failed, a live-only one (QoS 1/2)
//     until its ack is written; a single publish larger than the whole
//     budget is let in alone. A re-ack or a refusal holds no payload and
//     is not charged. Past its commit a publish waits only for its
//     client's ack writer, which a client that does not read its socket
//     blocks: releasing the budget at the commit keeps such a client from
//     holding every publisher's room; what it holds itself is bounded by
//     mqtt.receive-maximum (and its connection's write deadline).
//   - mqtt.ingest.publish-timeout, from the moment the publish is read,
//     bounds its queueing: the waits for room and for the stream's route,
//     and the time until its batch is proposed. Past it, a QoS 1/2 publish
//     is refused with quota exceeded (0x97) on MQTT 5, its client
//     disconnected on 3.1.1, and a QoS 0 publish is dropped (counted);
//     none of them was stored. Once proposed, a batch waits for its commit
//     with no deadline but Close's, and is acknowledged when it commits: a
//     refusal there could not tell a retransmit that the first attempt
//     committed. When Close gives up waiting, the outcome is unknown: no
//     ack is written, the QoS 2 state is kept, and the client is
//     disconnected.
//   - Every wait in OnPublish also ends when the client disconnects (polled,
//     since mochi offers no channel for it) or the Ingest closes, so mochi's
//     Close, which waits for its client goroutines, is never held up long.
//
// # Failures
//
// MQTT 5 clients get the reason code in their PUBACK or PUBREC: 0x83
// (implementation specific, with a reason string naming
// store.max-record-size; 0x95 is not a PUBACK code) for a payload over
// store.max-record-size, 0x90 for a topic no route matches
// under mqtt.unmatched: reject, 0x97 for overload and transient errors (no
// leader, timeouts), 0x80 for anything else (a missing stream the route may
// not create, a deleted shard, the node closing). MQTT 3.1.1 has no
// negative ack: the client is disconnected, so it retransmits. The refusal
// takes its turn in the session's FIFO like an ack, so the acks of earlier
// publishes are written first, and the writer disconnects by closing the
// network connection: mochi's read loop then fails and sends the will
// (a Stop from OnPublish would make mochi drop it). (mochi's own Code path
// would answer QoS 2 with a PUBACK, server.go:921; the bridge writes PUBREC
// itself.) A stream or shard that is gone is dropped from the route cache,
// so the retransmit looks it up again, and all the stream's batchers stop.
//
// # QoS 2 exactly once
//
// Each session maps the packet ID of a QoS 2 publish to the publish that
// claimed it: pending, then committed. The claim is taken as the PUBLISH is
// read, before any wait, so a retransmit is recognized whatever the first
// attempt is waiting for. A retransmitted PUBLISH while pending is dropped
// (its PUBREC goes out at the commit); one after the commit is answered
// with PUBREC success (a re-ack, never refused) without a second append.
// The claim ends at PUBREL, when the publish fails (its negative PUBREC,
// or the 3.1.1 disconnect, ends the exchange; the retransmit is a new
// attempt), and with the session. A QoS 1 retransmit (DUP) whose original
// is still pending is dropped too; one after the original was done is
// stored again (at-least-once).
//
// The bridge keeps mochi's inflight map free of the PUBRECs it writes:
// mochi answers a PUBLISH whose ID has a PUBREC inflight itself, without
// OnPublish (server.go:896), so a stray one would acknowledge a message
// never stored. OnPacketRead takes any such entry out before a QoS 2
// PUBLISH reaches mochi, and puts the PUBREC in only when a PUBREL for a
// committed publish arrives, so that processPubrel (server.go:1196), which
// runs right after on the same goroutine, answers PUBCOMP and takes it out
// (OnPacketRead cannot drop a packet: its ErrRejectPacket ends the
// connection, clients.go:521). A PUBREC success is written only while the
// exchange is on (checked under the session's wmu, which the PUBREL's
// release takes too), so none follows mochi's PUBCOMP.
//
// # Sessions
//
// Session state is keyed by client ID and follows mochi's session rules
// (inheritClientSession, server.go:562): a reconnect that resumes the
// session keeps it, and acks go to the current connection; a clean start
// (or the takeover of a 3.1.1 clean session) starts a new one, and the old
// session's acks are dropped (its publishes still commit). A publish read
// on a connection that is no longer its session's current one is dropped
// (the client retransmits on the current one); one that waited for room
// while its connection was taken over, or closed, is dropped when it would
// join the FIFO, and a retransmit on the new connection takes its claim
// over. The state ends when mochi ends the session (OnDisconnect with
// expire, OnClientExpired).
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
	inlineMade  atomic.Int64      // inline clients made (at most inlinePool)
	quit        chan struct{}     // closed by Close: publishers stop waiting, batchers drain
	ctx         context.Context   // canceled when Close gives up waiting for commits
	cancel      context.CancelFunc
	closeOnce   sync.Once
	wg          sync.WaitGroup // batchers, waiters, ack writers
	beforeBatch func()         // test seam: called by a batcher before it takes a batch
	beforeWait  func()         // test seam: called by a waiter before it waits for a commit

	// No lock below (nor a session's mu, the budget's or a batcher's) is
	// held while another is taken; a session's wmu is taken before its mu.
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
	// inlinePool is how many inline clients live delivery uses at most
	// (one per concurrent delivery; each has a large outbound channel).
	inlinePool = 16
)

// Errors behind the reason codes.
var (
	errClosed  = errors.New("bridge: ingest is closed")
	errTimeout = errors.New("bridge: publish timeout")
	errGone    = errors.New("bridge: client disconnected")
	errUnknown = errors.New("bridge: commit outcome unknown")
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
// most mqtt.ingest.publish-timeout; those still queued then fail, and the
// clients of those still committing, whose outcome is unknown, are
// disconnected without an ack) and acknowledges them where their clients
// are still connected, then stops every goroutine. Call it once the broker
// has disconnected its clients (mochi's Server.Close does, then calls it
// through Stop): an ack writer blocked writing to a connected client that
// does not read its socket holds Close up until the connection's write
// deadline. It is idempotent.
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
	e := &entry{cl: cl, id: pk.PacketID, deadline: time.Now().Add(i.timeout)}
	if code := i.record(e, pk, tgt); code != packets.CodeSuccess {
		i.metrics.refused.Inc()
		i.log.Warn("QoS 0 publish dropped", "client", cl.ID, "topic", pk.TopicName, "stream", tgt.Stream, "reason", code.Reason)
		return pk, packets.ErrRejectPacket
	}
	if err := i.enqueue(e, tgt); err != nil {
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
	e, kind := s.classify(cl, pk)
	switch kind {
	case pubGone:
		return
	case pubDuplicate:
		i.metrics.duplicates.Inc()
		return
	case pubReack:
		// Committed before: PUBREC again, in order, without a second
		// append or delivery. It is never refused (a refusal would end the
		// exchange while the ID stays committed) and does not wait: it
		// carries no payload, and at most one per committed ID is queued.
		i.metrics.duplicates.Inc()
		s.push(e, true, packets.CodeSuccess)
		return
	}
	if err := s.waitRoom(i, cl, deadline); err != nil {
		i.refuse(e, err)
		return
	}
	tgt, ok := i.router.Route(pk.TopicName, cl.ID, string(cl.Properties.Username))
	if !ok {
		if i.router.RejectUnmatched() {
			i.metrics.refused.Inc()
			i.log.Debug("publish refused: no route matches its topic", "client", cl.ID, "topic", pk.TopicName)
			i.fail(e, packets.ErrTopicNameInvalid)
			return
		}
		// Delivered live, not stored; acknowledged in order, its bytes
		// charged until then.
		cost := int64(len(pk.Payload) + len(pk.TopicName) + entryOverhead)
		if err := i.budget.acquire(i, cl, cost, deadline); err != nil {
			i.refuse(e, err)
			return
		}
		e.cost, e.live = cost, true
		if !s.push(e, true, packets.CodeSuccess) {
			i.budget.release(cost)
			return
		}
		i.metrics.live.Inc()
		return
	}
	e.deadline = deadline
	if code := i.record(e, pk, tgt); code != packets.CodeSuccess {
		i.metrics.refused.Inc()
		i.log.Debug("publish refused", "client", cl.ID, "topic", pk.TopicName, "stream", tgt.Stream, "reason", code.Reason)
		i.fail(e, code)
		return
	}
	// The payload is kept for the live delivery after the commit, and
	// charged with the record.
	e.cost += int64(len(pk.Payload))
	e.live = true
	if err := i.enqueue(e, tgt); err != nil {
		i.refuse(e, err)
	}
}

// errTooLarge refuses a payload over store.max-record-size. 0x95 (packet
// too large) is no PUBACK or PUBREC reason code [MQTT-3.4.2-1].
var errTooLarge = packets.Code{Code: packets.ErrImplementationSpecificError.Code, Reason: "payload over store.max-record-size"}

// record marshals the record of a routed publish into e and charges it
// (with a fixed overhead, so empty payloads are bounded too), or returns
// the code refusing it.
func (i *Ingest) record(e *entry, pk packets.Packet, tgt Target) packets.Code {
	if len(pk.Payload) > i.maxRecord {
		return errTooLarge
	}
	rec, err := proto.Marshal(NewRecord(e.cl, pk, tgt.Key))
	if err != nil || len(rec)+recordFraming > i.maxBatch {
		return errTooLarge
	}
	e.rec = rec
	e.cost = int64(len(rec) + entryOverhead)
	return packets.CodeSuccess
}

// enqueue finds the batcher of the publish's shard, waits for room in the
// pending budget and queues the entry, pushing it on its session's FIFO
// first (QoS 1/2) so its completion finds it there. Waits end at the
// entry's deadline.
func (i *Ingest) enqueue(e *entry, tgt Target) error {
	ctx, cancel := context.WithDeadline(i.ctx, e.deadline)
	b, err := i.batcherFor(ctx, tgt)
	cancel()
	if err != nil {
		return err
	}
	if err := i.budget.acquire(i, e.cl, e.cost, e.deadline); err != nil {
		return err
	}
	e.stream = tgt.Stream
	if e.sess != nil && !e.sess.push(e, false, packets.CodeSuccess) {
		i.budget.release(e.cost)
		return errGone
	}
	if !b.enqueue(e) {
		// The batcher stopped (shard gone, or closing) after we found it.
		i.complete([]*entry{e}, fmt.Errorf("%w: shard %d stopped taking appends", cluster.ErrShardNotFound, b.id))
	}
	return nil
}

// refuse answers a QoS 1/2 publish that could not be queued because of
// err.
func (i *Ingest) refuse(e *entry, err error) {
	switch {
	case errors.Is(err, errGone):
		e.sess.drop(e) // nobody to answer; the client retransmits on reconnect
	case errors.Is(err, errTimeout), errors.Is(err, context.DeadlineExceeded), errors.Is(err, cluster.ErrNoLeader):
		i.metrics.overload.Inc()
		i.log.Debug("publish refused: overloaded", "client", e.cl.ID, "topic", e.pk.TopicName, "error", err)
		i.fail(e, packets.ErrQuotaExceeded)
	default:
		i.metrics.failed.Inc()
		i.log.Warn("publish refused", "client", e.cl.ID, "topic", e.pk.TopicName, "error", err)
		i.fail(e, codeOf(err))
	}
}

// fail answers a QoS 1/2 publish refused before it was queued, in order:
// an MQTT 5 client gets code, a 3.1.1 client is disconnected (by the
// writer, once the acks before it are written).
func (i *Ingest) fail(e *entry, code packets.Code) {
	e.pk, e.rec, e.cost, e.live = packets.Packet{}, nil, 0, false
	e.sess.push(e, true, code)
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

// OnPacketRead prepares two QoS 2 exchanges before mochi sees them. A
// QoS 2 PUBLISH: any PUBREC in mochi's inflight map for its ID is taken
// out, or mochi would answer the publish itself (0x91, or a bare PUBREC
// on 3.1.1, server.go:896) without OnPublish storing it. A PUBREL, which
// ends the bridge's exactly-once state of a committed publish: the PUBREC
// is put in mochi's inflight map just then, so processPubrel (which runs
// next, on this goroutine) answers PUBCOMP and takes it out again. The
// bridge puts nothing else in mochi's inflight map.
func (i *Ingest) OnPacketRead(cl *mqtt.Client, pk packets.Packet) (packets.Packet, error) {
	if cl.Net.Inline {
		return pk, nil
	}
	switch {
	case pk.FixedHeader.Type == packets.Publish && pk.FixedHeader.Qos == 2:
		if in, ok := cl.State.Inflight.Get(pk.PacketID); ok && in.FixedHeader.Type == packets.Pubrec {
			if cl.State.Inflight.Delete(pk.PacketID) {
				atomic.AddInt64(&i.srv.Info.Inflight, -1)
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
func (i *Ingest) setInflightPubrec(cl *mqtt.Client, id uint16) {
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
