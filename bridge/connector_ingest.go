package bridge

// The ingest connector: an external broker's messages appended to streams.
//
// The connector is a paho (MQTT 3.1.1) client with a persistent session
// (clean session off) subscribed at QoS 1 to its filters. What arrives goes
// through the connector's routes, as a publish to the embedded broker goes
// through mqtt.routes, and is acknowledged to the broker (PUBACK) only once
// its record is committed. The broker keeps every message it has not had a
// PUBACK for in the session and delivers it again on the next connection,
// so a weir crash loses nothing the broker holds; what was committed and
// not yet acknowledged is stored twice (at least once).
//
//	paho router goroutine (arrival order)          settler goroutine (same order)
//	─────────────────────────────────────          ──────────────────────────────
//	handle: take a slot (max-pending), route,  ──► fifo ──► wait for the commit ──► PUBACK
//	check the size, resolve the stream's                   failed: propose again (back-off)
//	shards, Propose a one-record batch                     refused: PUBACK (dropped, logged)
//
// Construction checks that one route covers each filter (every topic the
// filter matches matches that route's filter), so what the broker sends
// has a route; a filter no route covers fails it, naming the filter.
//
// The handler runs on paho's one router goroutine (order matters is on),
// so messages are routed and proposed in arrival order, and proposals to
// one shard commit in that order. It blocks while max-pending messages are
// unsettled: that is the bound, and paho then stops reading the socket
// (past keepalive the connection fails its ping and is made again; the
// broker keeps the messages). The settler takes the FIFO in order and
// acknowledges each message once it is settled, so PUBACKs go out in
// arrival order as MQTT requires [MQTT-4.6.0-2]:
//
//   - committed: PUBACK, counted stored.
//   - a transient failure (no leader, a timeout, a shard moved or deleted,
//     a stream that could not be resolved or created): proposed again, in
//     place, counted retried. The first retry after a success goes at once,
//     later ones back off from reconnect-min doubling to reconnect-max.
//     Nothing after it is acknowledged meanwhile; each retry that backs
//     off logs a warning. A stream that does not exist and that its route
//     may not create is such a failure too (an operator's mistake, which
//     creating the stream fixes): its warning names the stream and says
//     the route does not create it, and the broker keeps the message and
//     those after it until the stream is created. A message whose
//     connection was lost before it could be appended is not retried: it
//     could not be acknowledged, and the broker delivers it again.
//   - refused, because it can never be stored: no route gives its topic a
//     valid stream name (the filters are covered, but a route whose stream
//     template renders no valid name for a topic does not match it), or a
//     payload over store.max-record-size. PUBACK, counted refused, logged
//     at warn with the topic and the reason: holding it would stall the
//     connector forever.
//
// ${clientid} and ${username} in routes stand for the connector's own
// client ID and username: MQTT does not tell a subscriber who published.
// To key by device, use a topic level (${topic[1]} for dev/<id>/temp). A
// record carries the attributes NewRecord gives a publish (mqtt.topic,
// mqtt.qos, mqtt.retain; no MQTT 5 properties, as the connector speaks
// 3.1.1), with mqtt.clientid the connector's client ID and mqtt.connector
// its name.
//
// Order: while nothing fails, a key's records are in the log in the order
// the broker delivered them. A retried message is appended after messages
// that arrived later and committed at the first attempt, and a message
// committed but not acknowledged before a crash or a lost connection is
// appended again when the broker delivers it again: at least once with
// redelivery reorders, as in the ingest hook (ingest.go). Every subscribe
// (on each connection, since the broker's session may have lost it or the
// filters may have changed) makes the broker send its retained messages
// for the filters again: MQTT 3.1.1 has no "only if new" option.
//
// Close (run's ctx ends): the handler takes no more messages (they stay
// with the broker); the settler waits at most drainTimeout for the commits
// of what is pending and acknowledges them in order, up to the first it
// cannot settle; then the connection is closed. Whatever was not
// acknowledged is delivered again on the next connection.
//
// # No PUBACK for a message not committed
//
// How paho v1.5.1 handles inbound QoS 1 PUBLISHes (read in its source):
//
//   - It puts each one in its Store on arrival (net.go, startIncomingComms
//     → persistInbound, key "i.<id>") and deletes it when the PUBACK is
//     queued (ackFunc → persistOutbound). With clean session off the store
//     lives across connections. On a reconnect resume() (client.go) hands
//     only inbound PUBRELs to the new connection; an inbound PUBLISH found
//     there is discarded, so no stale copy reaches the handler again. The
//     connector goes further: its store (noPublishStore) keeps no PUBLISH
//     at all (the connector publishes nothing), so that holds whatever a
//     later paho does with its store, and entries of messages never
//     acknowledged do not pile up.
//   - A message's Ack sends through the router of the connection it
//     arrived on (router.go matchAndDispatch, sendAck); once that
//     connection is lost the router stops and later acks are dropped
//     ("not ideal", paho issue #726, which a later paho may change). The
//     connector does not rely on it: every message carries the generation
//     of its connection (bumped by the connection-attempt handler, which
//     paho calls before each dial, after the previous connection's router
//     has stopped), and the settler acknowledges only messages of the
//     current generation. One of an earlier connection is left unacked,
//     even when committed: the broker delivers it again, with its packet ID
//     of that session, which may meanwhile name another message.
//   - On one connection, a broker that retransmits unacknowledged messages
//     (EMQX 4's retry interval does, over 3.1.1) sends a DUP copy with the
//     same packet ID. If that copy were stored and acknowledged again, its
//     second PUBACK could reach the broker after it had reused the ID for
//     the next message, acknowledging one not yet committed. So a DUP
//     PUBLISH whose packet ID was already received on the same connection
//     is dropped: the first copy's PUBACK (sent, or to be sent once it is
//     committed) settles it. A broker may not reuse an ID before its
//     PUBACK, and it sends a new message with DUP 0.

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"sync"
	"sync/atomic"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	pahopackets "github.com/eclipse/paho.mqtt.golang/packets"
	"github.com/mochi-mqtt/server/v2/packets"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/weir-log/weir/api/hstreampb"
	"github.com/weir-log/weir/api/wire"
	"github.com/weir-log/weir/cluster"
	"github.com/weir-log/weir/conf"
)

const (
	// drainTimeout bounds how long Close waits for the commits of the
	// messages pending when it is called.
	drainTimeout = 5 * time.Second
	// subscribeTimeout bounds the wait for the SUBACK when the connector's
	// connect-timeout is longer.
	subscribeTimeout = 30 * time.Second
)

// ingestConnector subscribes on an external broker and appends what
// arrives; see the comment at the top of this file.
type ingestConnector struct {
	cs        *Connectors
	key       string // connectors.ingest[i] (name), for messages
	name      string
	cfg       conf.IngestConnector
	node      *cluster.Node
	router    *Router
	remote    *remote
	log       *slog.Logger
	maxRecord int

	// ctx is run's: set before the first connection, read by the handler.
	ctx context.Context
	// gen is the generation of the connection: bumped before each
	// connection attempt.
	gen atomic.Uint64
	// slots holds a token per message taken and not yet settled: at most
	// cfg.MaxPending.
	slots chan struct{}
	// fifo carries the messages taken, in arrival order, to the settler;
	// its capacity is cfg.MaxPending, so a handler holding a slot never
	// blocks on it.
	fifo chan *inbound

	// Owned by the handler (paho's router goroutine).
	seenGen uint64
	seen    map[uint16]struct{} // packet IDs of QoS 1 messages received on connection seenGen

	// Owned by the settler.
	retryDelay time.Duration // 0 while appends succeed; the back-off after a failed retry
	lostAcks   int           // committed messages of a lost connection not acknowledged yet reported
	// commitWait waits for a proposed append's commit (Pending.Wait); a
	// test stands in for it to hold commits back (export_connector_test.go).
	commitWait func(ctx context.Context, p *cluster.Pending) error

	streamsMu sync.Mutex
	streams   map[string]*connectorStream // guarded by streamsMu: resolved streams
}

// connectorStream is a stream's shards, resolved once.
type connectorStream struct {
	sm     *wire.ShardMap
	shards map[uint64]cluster.ShardLog
}

// inbound is a message taken from the broker, on its way to a PUBACK.
type inbound struct {
	msg     paho.Message
	gen     uint64 // the generation of the connection it arrived on
	tgt     Target
	refused string           // why it can never be stored; "" when it can
	pending *cluster.Pending // its proposed append
	err     error            // why it is not proposed: to be proposed again
}

// newIngestConnector compiles an ingest connector: its routes, filters and
// paho client. It connects nowhere.
func newIngestConnector(cs *Connectors, key string, cfg conf.IngestConnector) (*ingestConnector, error) {
	router, err := newRouter(key+".routes", cfg.Routes, "reject")
	if err != nil {
		return nil, err
	}
	if len(cfg.Filters) == 0 {
		return nil, fmt.Errorf("%s.filters: must name at least one topic filter to subscribe to", key)
	}
	for j, f := range cfg.Filters {
		if err := checkFilter(f); err != nil {
			return nil, fmt.Errorf("%s.filters[%d] (%q): %w", key, j, f, err)
		}
		if err := router.coverFilter(f); err != nil {
			return nil, fmt.Errorf("%s.filters[%d] (%q): %w", key, j, f, err)
		}
	}
	if cfg.MaxPending < 1 {
		return nil, fmt.Errorf("%s.max-pending: must be at least 1, not %d", key, cfg.MaxPending)
	}
	if cfg.ReconnectMin <= 0 || cfg.ReconnectMax < cfg.ReconnectMin || cfg.ConnectTimeout <= 0 {
		return nil, fmt.Errorf("%s: reconnect-min, reconnect-max and connect-timeout are not set (fill the defaults with conf.Load or WithDefaults)", key)
	}
	maxRecord := cs.opts.MaxRecordSize
	if maxRecord <= 0 {
		maxRecord = int(conf.Default().Store.MaxRecordSize)
	}
	c := &ingestConnector{
		cs:        cs,
		key:       key,
		name:      cfg.Name,
		cfg:       cfg,
		node:      cs.opts.Node,
		router:    router,
		maxRecord: maxRecord,
		slots:     make(chan struct{}, cfg.MaxPending),
		fifo:      make(chan *inbound, cfg.MaxPending),
		seen:      map[uint16]struct{}{},
		streams:   map[string]*connectorStream{},
		commitWait: func(ctx context.Context, p *cluster.Pending) error {
			_, _, err := p.Wait(ctx)
			return err
		},
	}
	c.remote, err = newRemote(cs, key, cfg.Name, "ingest", cfg.Remote, false, func(o *paho.ClientOptions) {
		o.SetAutoAckDisabled(true).
			SetDefaultPublishHandler(c.handle).
			SetStore(noPublishStore{paho.NewMemoryStore()}).
			SetConnectionAttemptHandler(func(_ *url.URL, tc *tls.Config) *tls.Config {
				c.gen.Add(1)
				return tc
			})
	})
	if err != nil {
		return nil, err
	}
	c.log = c.remote.log
	return c, nil
}

// run connects, subscribes and appends until ctx ends, then settles what
// it can (for at most drainTimeout) and disconnects.
func (c *ingestConnector) run(ctx context.Context) {
	c.ctx = ctx
	// The connection outlives ctx by the drain, so the last PUBACKs go out.
	rctx, disconnect := context.WithCancel(context.WithoutCancel(ctx))
	defer disconnect()
	settled := make(chan struct{})
	go func() {
		defer close(settled)
		defer disconnect()
		c.settle(ctx)
	}()
	c.remote.run(rctx, c.connected)
	<-settled
}

// connected subscribes to the filters at QoS 1; a refused filter is an
// error (remote.run then drops the connection and retries).
func (c *ingestConnector) connected(ctx context.Context, cl paho.Client) error {
	filters := make(map[string]byte, len(c.cfg.Filters))
	for _, f := range c.cfg.Filters {
		filters[f] = 1
	}
	tok := cl.SubscribeMultiple(filters, nil) // nil: messages go to the default handler
	t := time.NewTimer(min(c.cfg.ConnectTimeout, subscribeTimeout))
	defer t.Stop()
	select {
	case <-tok.Done():
	case <-t.C:
		return fmt.Errorf("no SUBACK for %q within %s", c.cfg.Filters, min(c.cfg.ConnectTimeout, subscribeTimeout))
	case <-ctx.Done():
		return ctx.Err()
	}
	if err := tok.Error(); err != nil {
		return fmt.Errorf("subscribing to %q: %w", c.cfg.Filters, err)
	}
	granted := tok.(*paho.SubscribeToken).Result()
	for j, f := range c.cfg.Filters {
		switch code, ok := granted[f]; {
		case !ok:
			return fmt.Errorf("the broker's SUBACK has no result for %s.filters[%d] (%q)", c.key, j, f)
		case code == 0x80:
			return fmt.Errorf("the broker refused the subscription to %s.filters[%d] (%q) (SUBACK 0x80: not authorized, or a filter it does not support)", c.key, j, f)
		case code == 0:
			c.log.Warn("the broker granted QoS 0 only: its messages are not acknowledged after the commit, and a crash may lose them", "filter", f)
		}
	}
	c.log.Info("connector subscribed", "filters", c.cfg.Filters)
	return nil
}

// handle takes a message from the broker (paho's router goroutine, in
// arrival order): it waits for a slot, routes and proposes the message and
// queues it for the settler. A message not taken (Close, or the connection
// was lost while waiting) is left to the broker, which delivers it again.
func (c *ingestConnector) handle(cl paho.Client, m paho.Message) {
	if c.ctx.Err() != nil {
		return
	}
	gen := c.gen.Load()
	if gen != c.seenGen {
		clear(c.seen)
		c.seenGen = gen
	}
	if m.Qos() > 0 {
		id := m.MessageID()
		if _, ok := c.seen[id]; ok && m.Duplicate() {
			c.log.Debug("retransmitted message dropped: its first copy's PUBACK settles it", "topic", m.Topic(), "packet_id", id)
			return
		}
		c.seen[id] = struct{}{}
	}
	if !c.takeSlot(cl) {
		return
	}
	e := &inbound{msg: m, gen: gen}
	tgt, ok := c.router.Route(m.Topic(), c.cfg.ClientID, c.cfg.Username)
	e.tgt = tgt
	switch {
	case !ok:
		e.refused = "no route matches its topic with a valid stream name"
	case len(m.Payload()) > c.maxRecord:
		e.refused = fmt.Sprintf("its payload of %d bytes is over store.max-record-size (%d)", len(m.Payload()), c.maxRecord)
	default:
		c.propose(c.ctx, e)
	}
	c.fifo <- e
}

// takeSlot waits for room among the max-pending messages; false when ctx
// ends or the connection is lost first.
func (c *ingestConnector) takeSlot(cl paho.Client) bool {
	select {
	case c.slots <- struct{}{}:
		return true
	default:
	}
	poll := time.NewTicker(closedPoll)
	defer poll.Stop()
	for {
		select {
		case c.slots <- struct{}{}:
			return true
		case <-c.ctx.Done():
			return false
		case <-poll.C:
			if !cl.IsConnectionOpen() {
				return false
			}
		}
	}
}

// propose appends e's record to its shard, without waiting for the commit:
// it sets e.pending, e.err (try again: a missing stream too, see
// streamMissing) or e.refused (never).
func (c *ingestConnector) propose(ctx context.Context, e *inbound) {
	e.pending, e.err = nil, nil
	sh, err := c.shardFor(ctx, e.tgt)
	if err != nil {
		e.err = err
		return
	}
	data, err := c.encode(e)
	if err != nil {
		e.refused = fmt.Sprintf("it does not encode as a record: %v", err)
		return
	}
	if e.pending, e.err = sh.Propose(ctx, data); e.err != nil {
		c.forgetIfGone(e.tgt.Stream, e.err)
	}
}

// encode returns the one-record batch of e (uncompressed).
func (c *ingestConnector) encode(e *inbound) ([]byte, error) {
	m := e.msg
	rec := NewRecord(nil, packets.Packet{
		FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: m.Qos(), Retain: m.Retained()},
		TopicName:   m.Topic(),
		Payload:     m.Payload(),
	}, e.tgt.Key)
	attrs := rec.Header.Attributes
	setUTF8(attrs, AttrClientID, c.cfg.ClientID)
	attrs[AttrConnector] = c.name
	br, err := wire.EncodeBatch([]*hstreampb.HStreamRecord{rec}, hstreampb.CompressionType_None)
	if err != nil {
		return nil, err
	}
	br.PublishTime = timestamppb.Now()
	return proto.Marshal(br)
}

// shardFor returns the shard tgt.Key maps to in tgt.Stream, resolving (and
// when the route says so, creating) the stream on first use.
func (c *ingestConnector) shardFor(ctx context.Context, tgt Target) (cluster.ShardLog, error) {
	c.streamsMu.Lock()
	s := c.streams[tgt.Stream]
	c.streamsMu.Unlock()
	if s == nil {
		metas, sm, err := resolveStream(ctx, c.node, c.cs.opts.Stream, c.log, tgt)
		if err != nil {
			return nil, err
		}
		s = &connectorStream{sm: sm, shards: make(map[uint64]cluster.ShardLog, len(metas))}
		for _, m := range metas {
			if s.shards[m.ID], err = c.node.Shard(m.ID); err != nil {
				return nil, err
			}
		}
		c.streamsMu.Lock()
		c.streams[tgt.Stream] = s
		c.streamsMu.Unlock()
	}
	return s.shards[s.sm.Lookup(tgt.Key)], nil
}

// forgetIfGone drops a stream's resolved shards when err says a shard or
// the stream is gone, so the next message resolves it again.
func (c *ingestConnector) forgetIfGone(stream string, err error) {
	if errors.Is(err, cluster.ErrShardNotFound) || errors.Is(err, cluster.ErrStreamNotFound) {
		c.streamsMu.Lock()
		delete(c.streams, stream)
		c.streamsMu.Unlock()
	}
}

// settle settles the messages of the FIFO in order until ctx ends, then
// those still pending, for at most drainTimeout, up to the first it
// cannot settle.
func (c *ingestConnector) settle(ctx context.Context) {
	wctx, giveUp := context.WithCancel(context.Background())
	defer giveUp()
	stop := context.AfterFunc(ctx, func() { time.AfterFunc(drainTimeout, giveUp) })
	defer stop()
	defer c.reportLostAcks()
	for {
		var e *inbound
		select {
		case e = <-c.fifo:
		case <-ctx.Done():
			select {
			case e = <-c.fifo:
			default:
				return
			}
		}
		if !c.settleOne(ctx, wctx, e) {
			c.log.Info("connector closing: messages left unacknowledged (the broker delivers them again)", "messages", 1+len(c.fifo))
			return
		}
		<-c.slots
	}
}

// settleOne waits for e's commit, proposing it again after transient
// failures, and acknowledges it; a message not appended whose connection
// is lost is given up (left to the broker). It returns false when ctx
// ended (or, past it, wctx) first.
func (c *ingestConnector) settleOne(ctx, wctx context.Context, e *inbound) bool {
	for {
		if e.refused != "" {
			c.cs.metrics.count(c.name, "ingest", "refused", 1)
			c.log.Warn("message refused: it cannot be stored, so it is acknowledged and dropped",
				"topic", e.msg.Topic(), "stream", e.tgt.Stream, "reason", e.refused)
			c.ack(e)
			return true
		}
		if e.pending != nil {
			err := c.commitWait(wctx, e.pending)
			e.pending = nil
			if err == nil {
				c.retryDelay = 0
				c.cs.metrics.count(c.name, "ingest", "stored", 1)
				c.ack(e)
				return true
			}
			if wctx.Err() != nil {
				return false // it may commit yet: the broker delivers it again
			}
			e.err = err
			c.forgetIfGone(e.tgt.Stream, err)
		}
		if ctx.Err() != nil {
			return false
		}
		if e.gen != c.gen.Load() {
			c.log.Debug("message not stored and its connection is lost: left to the broker, which delivers it again",
				"topic", e.msg.Topic(), "stream", e.tgt.Stream, "error", e.err)
			return true
		}
		c.cs.metrics.count(c.name, "ingest", "retried", 1)
		// The first retry after a success goes at once, logged at debug:
		// its error may date from before that success (the proposal in
		// handle), and be over by now (the stream created meanwhile).
		d := c.retryDelay
		switch {
		case d > 0 && c.streamMissing(e):
			c.log.Warn("message not stored: its stream does not exist and its route does not create it; retrying until the stream is created (the broker keeps the messages)",
				"stream", e.tgt.Stream, "topic", e.msg.Topic(), "retry_in", d.Round(time.Millisecond))
		case d > 0:
			c.log.Warn("message not stored; retrying", "topic", e.msg.Topic(), "stream", e.tgt.Stream,
				"retry_in", d.Round(time.Millisecond), "error", e.err)
		default:
			c.log.Debug("message not stored; retrying", "topic", e.msg.Topic(), "stream", e.tgt.Stream, "error", e.err)
		}
		if d > 0 {
			if !sleepCtx(ctx, jitter(d)) {
				return false
			}
			c.retryDelay = min(2*d, c.cfg.ReconnectMax)
		} else {
			c.retryDelay = c.cfg.ReconnectMin
		}
		c.propose(ctx, e)
	}
}

// streamMissing reports whether e failed because its stream does not
// exist and its route may not create it: an operator's mistake, retried
// until someone creates the stream.
func (c *ingestConnector) streamMissing(e *inbound) bool {
	return !e.tgt.Create && errors.Is(e.err, cluster.ErrStreamNotFound)
}

// ack acknowledges a settled message to the broker, unless it arrived on
// an earlier connection (see the top of the file).
func (c *ingestConnector) ack(e *inbound) {
	if e.gen != c.gen.Load() {
		if e.refused == "" {
			c.lostAcks++
		}
		return
	}
	c.reportLostAcks()
	e.msg.Ack()
}

// reportLostAcks logs the messages committed after their connection was
// lost: the broker delivers them again, and they are stored twice.
func (c *ingestConnector) reportLostAcks() {
	if c.lostAcks > 0 {
		c.log.Info("messages committed after their connection was lost were not acknowledged: the broker delivers them again (duplicates)",
			"messages", c.lostAcks)
		c.lostAcks = 0
	}
}

// noPublishStore is paho's memory store keeping no PUBLISH packet: an
// ingest connector publishes nothing, and an inbound PUBLISH kept across
// connections could only be a stale copy (see the top of the file).
type noPublishStore struct{ *paho.MemoryStore }

// Put stores m unless it is a PUBLISH.
func (s noPublishStore) Put(key string, m pahopackets.ControlPacket) {
	if _, ok := m.(*pahopackets.PublishPacket); ok {
		return
	}
	s.MemoryStore.Put(key, m)
}
