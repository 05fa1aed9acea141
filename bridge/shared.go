package bridge

// # Durable MQTT shared subscriptions
//
// A SUBSCRIBE to $share/{group}/{filter} makes the client a member of the
// subscription (consumer group) named {group}, on the one stream the
// router sends the filter's topics to (Router.StreamFor). The subscription
// is created on first use (mqtt.shared.offset, ack-timeout, max-unacked);
// after that its settings are the subscription's own. Each member is a
// subscription.Consumer named after the client ID; the subscription's owner
// (package subscription) does the rest: it assigns each shard to one
// member, bounds the unacked records, redelivers what times out or what a
// leaving member held, and checkpoints the acknowledged prefix, so a group
// resumes after a restart where it stopped.
//
//	SUBSCRIBE $share/g/f ─► mochi: validity, ACL on the whole filter, records
//	  │                     a native shared subscription (a placeholder)
//	  └─► OnSubscribed: create subscription g ─► Manager.Attach(g, clientID)
//	        └─► reason code rewritten in place (failure: placeholder removed)
//	member goroutine: Consumer.Next ─► DecodeBatch ─► per record:
//	    topic (mqtt.topic, else the stream name) matches f? ─ no ─► ack now
//	    QoS 0 grant: PUBLISH, ack
//	    QoS 1 grant: window slot ─► (MQTT 5) client below its receive
//	      maximum ─► packet ID from mochi (cl.NextPacketID), registered in
//	      cl.State.Inflight ─► PUBLISH
//	PUBACK ─► OnPacketRead: record acked (Consumer.Ack), slot freed;
//	          mochi's processPuback then clears its Inflight entry
//	UNSUBSCRIBE, disconnect, session takeover, Close ─► member leaves:
//	    its in-flight PUBLISHes are forgotten and the consumer closed, so
//	    the owner redelivers them to the other members (or to the next one)
//
// # Why these hooks (mochi v2.7.9)
//
// SUBSCRIBE. mochi's processSubscribe (server.go:1241) checks the filter,
// then the ACL (the broker's ACL hook judges $share filters by their inner
// filter), then registers the subscription and calls OnSubscribed with the
// very slice it then writes as the SUBACK's reason codes (server.go:1298-
// 1299). OnSubscribe cannot drop a filter (the SUBACK would lose its
// position) and rewriting it would skip the ACL, so the hook leaves the
// filter alone (it only caps the QoS at 1) and lets mochi register its
// native shared subscription as a placeholder: OnSelectSubscribers empties
// every publish's shared subscribers (server.go:1002-1007), so mochi never
// delivers to a placeholder and members get each record once, from the
// log. OnSubscribed joins the group and, on failure, rewrites the reason
// code in place and removes the placeholder. The placeholder is also what
// keeps a persistent session's shared subscription: inheritClientSession
// (server.go:562) copies it to the new connection, and OnSessionEstablished
// joins the group again for it.
//
// PUBACK. Deliveries take their packet IDs from mochi's allocator
// (clients.go:276) and are registered in cl.State.Inflight, so mochi never
// gives the same ID to one of its own deliveries, its processPuback
// (server.go:1161) clears them and restores the send quota, and the
// counters stay right. The PUBACK itself is recognised in OnPacketRead,
// not OnQosComplete: mochi keeps the client's and the server's packet IDs
// in one map, and a QoS 1 PUBLISH from the client with an ID equal to one
// of ours deletes ours and calls OnQosComplete with that ID (server.go:
// 897-903, 962), which would ack a record the client never acknowledged
// (TestSharedPacketIDsOfPublishesAckNothing). OnPacketRead sees only
// packets from the wire, and the member's own table of IDs decides. Once
// an inbound PUBLISH has dropped one of our entries, the ID may be mochi's
// again (the PUBREC of an inbound QoS 2 PUBLISH, say): the hook then
// touches only Inflight entries that are still its PUBLISHes, zeroes the
// packet ID of such a PUBACK before mochi processes it (mochi never has ID
// 0 in flight), and never reuses an ID whose PUBACK is still due
// (TestSharedPacketIDReusedByQoS2Publish).
//
// Takeover. A new connection with a client ID that is still connected, or
// holds a persistent session, inherits the old one's Inflight and resends
// it (server.go:574, 468). OnSessionEstablish runs just before that
// (server.go:455): the old connection's memberships leave there and take
// their PUBLISHes out of its Inflight, so nothing of the group is resent
// outside the group. The old connection's OnDisconnect comes later and
// finds nothing of its own, and a SUBSCRIBE it still processes late joins
// nothing: a connection that is closed or taken over never becomes a
// member, and only such a connection's memberships are evicted by a
// newer one of the same client ID. Who may take a session over is the
// broker's business (package broker refuses a CONNECT whose client ID is
// held under another username, so the ACL granted the inherited $share
// subscriptions to the same user).
//
// # Decisions
//
//   - Group = subscription id, so it must be a valid name
//     (cluster.NameProblem); a filter whose topics may route to several
//     streams, or to none, is refused, and so is a group whose existing
//     subscription is on another stream. SUBACK reason codes (MQTT 5;
//     3.1.1 clients get 0x80 for every failure): 0x8F topic filter invalid
//     for an invalid group or filter, a filter routing to no single stream,
//     or a stream that does not exist (and that its route does not create);
//     0x83 implementation specific error for a group on another stream,
//     a group whose members here have another filter, a consumer of that
//     name already attached (a gRPC consumer, say), or a subscription
//     owned by another node; 0x80 otherwise (etcd, timeouts,
//     shutting down). A route with create: true creates its missing stream
//     (SharedOptions.Streams) when a group subscribes first.
//   - One member per (group, client ID); a client may be in several groups.
//   - One filter per group while it has members on this node: the first
//     member's. A group is one cursor over its stream, and a record goes to
//     the member holding its shard, which acks it without delivering it if
//     its filter does not match: with different filters, a member would
//     lose records meant for another. So a SUBSCRIBE to a group with
//     another filter than its members' here is refused (0x83; 0x80 on
//     3.1.1), and logged; once the last member has left, the group may be
//     joined with any filter. Records that do not match the group's filter
//     are acked without being delivered. (Members on other nodes are not
//     compared; group names are not covered by the ACL.)
//   - QoS: granted min(requested, 1). QoS 1 records are acked by their
//     PUBACK; QoS 0 records once written to the connection.
//   - Redelivery is the owner's: a record whose ack times out comes back
//     from Consumer.Next and is sent again under a new packet ID, without
//     DUP (it is a new PUBLISH). Duplicates are possible (at least once).
//   - In flight per connection (the window), over all the client's groups:
//     at most the client's receive maximum (MQTT 5; 128 for 3.1.1) and
//     half of mochi's MaximumInflight (mqtt.max-inflight) QoS 1 PUBLISHes,
//     so that mochi, which drops its own QoS 1 deliveries once Inflight
//     holds MaximumInflight, keeps the other half. For an MQTT 5 client,
//     nothing is sent either while its Inflight (mochi's deliveries too)
//     holds its receive maximum (checked every 20ms while waiting). The
//     member's goroutine waits beyond that, until it stops. The
//     subscription's max-unacked bounds the group as a whole.
//   - A resumed session's shared subscription that cannot rejoin its group
//     is dropped if the group or filter is refused (0x8F, 0x83), and kept
//     otherwise (etcd, timeouts), the client being disconnected (0x89
//     server busy on MQTT 5) to retry when it reconnects. A SUBSCRIBE again
//     to a filter the client had that fails leaves the group.
//   - An MQTT 5 PUBACK with a reason code of 0x80 or more acks the record
//     all the same: the client said it will not process it, and sending
//     it again would loop.
//   - Any client the ACL allows to subscribe to a filter may create a
//     durable subscription (a group) on it; there is no quota yet.
//   - A disconnected client is no member: it leaves its groups on
//     disconnect (its unacked records go to the other members, or wait for
//     one), also with a persistent session, since the group has others to
//     serve and a device may stay away for long. When it comes back with
//     its session, it joins again without subscribing again.
//   - A record that cannot be sent to this client at all (larger than its
//     maximum packet size, or a batch that does not decode) is acked and
//     logged, or it would come back forever.
//
// # Caveats
//
//   - mochi shares one packet-ID map between both directions: while one of
//     our PUBLISHes is in flight under ID n, a SUBSCRIBE or UNSUBSCRIBE
//     from the same client with ID n is refused with 0x91, as it is for
//     mochi's own deliveries (server.go:1245, 1319); the client then stays
//     a member (or does not become one).
//   - The ACL is checked once, on the $share filter at SUBSCRIBE, not per
//     delivered topic.
//   - Deliveries bypass mochi's outbound queue (cl.WritePacket writes to
//     the socket): a client that stops reading blocks its member's
//     goroutine until mochi's write deadline closes the connection.
//   - Subscription identifiers and No Local are not applied to group
//     deliveries (mochi refuses No Local on shared filters anyway).
//   - When a group's subscription is deleted (or the subscription manager
//     closes) its members stop receiving; clients must subscribe again.

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/weir-log/weir/api/hstreampb"
	"github.com/weir-log/weir/cluster"
	"github.com/weir-log/weir/conf"
	"github.com/weir-log/weir/subscription"
)

// Bounds of joining a group.
const (
	// joinTimeout bounds a SUBSCRIBE's work on a group: creating its
	// stream and subscription, and attaching (which may start the owner).
	joinTimeout = 10 * time.Second
	// attachRetry is how long a join retries an attach refused because a
	// consumer of the same name is still attached (one leaving).
	attachRetry = time.Second
)

// SharedOptions configure the shared subscriptions hook.
type SharedOptions struct {
	Node          *cluster.Node         // required
	Subscriptions *subscription.Manager // required
	Server        *mqtt.Server          // required: the broker the hook is added to
	Router        *Router               // required
	// Shared are the settings of the subscriptions groups create. Zero
	// fields take conf.Default()'s.
	Shared conf.MQTTShared
	// Streams are the settings of a stream created because a group
	// subscribed first to a route with create: true. Zero ShardCount or
	// ReplicationFactor takes conf.Default()'s (all three then do).
	Streams conf.StreamDefaults
	Logger  *slog.Logger // default: discard
}

// Shared is the mochi hook that serves $share/{group}/{filter}
// subscriptions from the log as durable consumer groups. Add it to the
// broker with AddHook; Close it before the subscription manager closes.
type Shared struct {
	mqtt.HookBase

	node    *cluster.Node
	subs    *subscription.Manager
	server  *mqtt.Server
	router  *Router
	cfg     conf.MQTTShared
	streams conf.StreamDefaults
	log     *slog.Logger

	ctx    context.Context // ends joins and deliveries on Close
	cancel context.CancelFunc
	wg     sync.WaitGroup // the members' delivery goroutines
	locks  keyedLocks     // serialize joins and leaves per client ID

	// mu guards closed, conns, every conn's members, and groups. Lock
	// order: a client ID's lock (locks), then mu, then a conn's mu.
	mu     sync.Mutex
	closed bool
	conns  map[string]*conn        // by client ID: the connection whose memberships are live
	groups map[string]*groupFilter // by group: the filter of the groups with members here
}

// groupFilter is the filter of a group while it has members on this node.
type groupFilter struct {
	filter  string
	members int
}

// NewShared builds the hook; it does no I/O.
func NewShared(opts SharedOptions) (*Shared, error) {
	if opts.Node == nil || opts.Subscriptions == nil || opts.Server == nil || opts.Router == nil {
		return nil, errors.New("bridge: shared subscriptions need a node, a subscription manager, a server and a router")
	}
	d := conf.Default()
	cfg := opts.Shared
	if cfg.Offset == "" {
		cfg.Offset = d.MQTT.Shared.Offset
	}
	if cfg.AckTimeout <= 0 {
		cfg.AckTimeout = d.MQTT.Shared.AckTimeout
	}
	if cfg.MaxUnacked <= 0 {
		cfg.MaxUnacked = d.MQTT.Shared.MaxUnacked
	}
	if cfg.Offset != cluster.OffsetEarliest && cfg.Offset != cluster.OffsetLatest {
		return nil, fmt.Errorf("mqtt.shared.offset: %q is not one of earliest, latest", cfg.Offset)
	}
	streams := opts.Streams
	if streams.ShardCount == 0 || streams.ReplicationFactor == 0 {
		streams = d.Stream
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &Shared{
		node: opts.Node, subs: opts.Subscriptions, server: opts.Server, router: opts.Router,
		cfg: cfg, streams: streams, log: log.With("component", "mqtt-shared"),
		ctx: ctx, cancel: cancel, conns: make(map[string]*conn), groups: make(map[string]*groupFilter),
	}, nil
}

// ID names the hook.
func (s *Shared) ID() string { return "weir-shared" }

// Provides lists the events the hook handles.
func (s *Shared) Provides(b byte) bool {
	return bytes.IndexByte([]byte{
		mqtt.OnSubscribe, mqtt.OnSubscribed, mqtt.OnUnsubscribed, mqtt.OnSelectSubscribers,
		mqtt.OnPacketRead, mqtt.OnSessionEstablish, mqtt.OnSessionEstablished, mqtt.OnDisconnect,
		mqtt.OnStopped,
	}, b) >= 0
}

// Close makes every member leave its group (consumers closed, so what they
// held unacked is delivered again later) and waits for the delivery
// goroutines. Later subscriptions to groups fail. Idempotent.
func (s *Shared) Close() error {
	s.mu.Lock()
	var ms []*member
	if !s.closed {
		s.closed = true
		for id, c := range s.conns {
			for _, m := range c.members {
				ms = append(ms, m)
			}
			c.members = nil
			delete(s.conns, id)
		}
	}
	s.mu.Unlock()
	s.cancel()
	for _, m := range ms {
		m.stop()
	}
	s.wg.Wait()
	return nil
}

// OnStopped closes the hook when the broker stops, in case it was not
// closed before.
func (s *Shared) OnStopped() { _ = s.Close() }

// OnSubscribe caps the QoS of shared subscriptions at 1, so mochi grants
// (and stores in the placeholder) what the group delivers at.
func (s *Shared) OnSubscribe(cl *mqtt.Client, pk packets.Packet) packets.Packet {
	cloned := false
	for i, sub := range pk.Filters {
		if sub.Qos > 1 && mqtt.IsSharedFilter(sub.Filter) {
			if !cloned { // the packet as read stays as it was
				pk.Filters, cloned = slices.Clone(pk.Filters), true
			}
			pk.Filters[i].Qos = 1
		}
	}
	return pk
}

// OnSubscribed joins the groups of the shared filters mochi accepted, and
// turns the reason code of those it cannot join into a failure.
func (s *Shared) OnSubscribed(cl *mqtt.Client, pk packets.Packet, reasonCodes []byte) {
	for i, sub := range pk.Filters {
		if i >= len(reasonCodes) || reasonCodes[i] >= packets.ErrUnspecifiedError.Code {
			continue // refused by mochi already (invalid, not authorized, ...)
		}
		group, filter, ok := parseShared(sub.Filter)
		if !ok {
			continue
		}
		if code := s.join(cl, group, filter, reasonCodes[i]); code != packets.CodeSuccess {
			reasonCodes[i] = failureCode(cl, code)
			s.removePlaceholder(cl, sub.Filter)
			s.leave(cl, group, filter) // a SUBSCRIBE again to a filter it had
		}
	}
}

// OnUnsubscribed leaves the groups of the shared filters unsubscribed (by
// UNSUBSCRIBE, or by mochi ending the session). mochi calls it even when it
// refused the UNSUBSCRIBE (packet ID in use, server.go:1319, 1355) and kept
// the subscription: then the client stays a member.
func (s *Shared) OnUnsubscribed(cl *mqtt.Client, pk packets.Packet) {
	for _, sub := range pk.Filters {
		group, filter, ok := parseShared(sub.Filter)
		if !ok {
			continue
		}
		if _, kept := cl.State.Subscriptions.Get(sub.Filter); kept {
			continue
		}
		s.leave(cl, group, filter)
	}
}

// OnSelectSubscribers removes every shared subscriber from a publish's
// fan-out: shared subscriptions are served from the log, and mochi's
// native ones are only placeholders.
func (s *Shared) OnSelectSubscribers(subs *mqtt.Subscribers, _ packets.Packet) *mqtt.Subscribers {
	clear(subs.Shared)
	clear(subs.SharedSelected)
	return subs
}

// OnPacketRead acks the record behind a PUBACK of one of the group
// deliveries in flight to the client. The packet goes on to mochi, which
// clears its Inflight entry; if that entry is no longer ours (see
// conn.track), the packet ID is zeroed, which mochi never has in flight,
// so that it leaves the entry alone.
func (s *Shared) OnPacketRead(cl *mqtt.Client, pk packets.Packet) (packets.Packet, error) {
	if pk.FixedHeader.Type != packets.Puback {
		return pk, nil
	}
	s.mu.Lock()
	c := s.conns[cl.ID]
	s.mu.Unlock()
	if c == nil || c.cl != cl {
		return pk, nil
	}
	p, ok, foreign := c.puback(pk.PacketID)
	if ok {
		p.m.consumer.Ack([]*hstreampb.RecordId{p.id})
	}
	if foreign {
		pk.PacketID = 0
	}
	return pk, nil
}

// OnSessionEstablish runs before mochi takes over an existing session of
// the same client ID: the old connection's memberships leave now, taking
// their PUBLISHes out of its Inflight before mochi copies and resends it.
func (s *Shared) OnSessionEstablish(cl *mqtt.Client, _ packets.Packet) {
	s.leaveAll(cl.ID, func(held *mqtt.Client) bool { return held != cl })
}

// OnSessionEstablished joins the groups of the shared subscriptions the
// client's session already had (a persistent session resumed): they were
// left when the previous connection ended. A subscription that can no
// longer join (its group or filter refused) is dropped; on any other
// failure (etcd, a timeout) the client is disconnected with its session
// kept, to try again when it reconnects.
func (s *Shared) OnSessionEstablished(cl *mqtt.Client, _ packets.Packet) {
	for _, sub := range cl.State.Subscriptions.GetAll() {
		group, filter, ok := parseShared(sub.Filter)
		if !ok {
			continue
		}
		code := s.join(cl, group, filter, min(sub.Qos, 1))
		switch code {
		case packets.CodeSuccess:
		case packets.ErrUnspecifiedError:
			if !gone(cl) {
				s.log.Warn("a resumed session's shared subscription could not rejoin its group; disconnecting the client, to retry",
					"client", cl.ID, "filter", sub.Filter)
				if cl.Properties.ProtocolVersion >= 5 {
					_ = s.server.DisconnectClient(cl, packets.ErrServerBusy)
				} else {
					cl.Stop(packets.ErrServerBusy) // 3.1.1 has no DISCONNECT from the server
				}
			}
			return
		default:
			s.log.Warn("a resumed session's shared subscription could not rejoin its group; it is dropped",
				"client", cl.ID, "filter", sub.Filter, "reason", code.Reason)
			s.removePlaceholder(cl, sub.Filter)
		}
	}
}

// OnDisconnect makes the connection leave its groups.
func (s *Shared) OnDisconnect(cl *mqtt.Client, _ error, _ bool) {
	s.leaveAll(cl.ID, func(held *mqtt.Client) bool { return held == cl })
}

// leaveAll makes the connection held for a client ID leave all its groups,
// if leave says so of the client it holds.
func (s *Shared) leaveAll(id string, leave func(held *mqtt.Client) bool) {
	unlock := s.locks.lock(id)
	defer unlock()
	s.mu.Lock()
	c := s.conns[id]
	if c == nil || !leave(c.cl) {
		s.mu.Unlock()
		return
	}
	delete(s.conns, id)
	ms := c.takeMembers()
	s.mu.Unlock()
	for _, m := range ms {
		m.stop()
	}
}

// parseShared splits $share/{group}/{filter} (the prefix in any case, as
// mochi takes it).
func parseShared(f string) (group, filter string, ok bool) {
	if !mqtt.IsSharedFilter(f) {
		return "", "", false
	}
	_, rest, _ := strings.Cut(f, "/")
	return strings.Cut(rest, "/")
}

// failureCode is code as the client's protocol version can say it: 3.1.1
// has only 0x80 for a refused filter.
func failureCode(cl *mqtt.Client, code packets.Code) byte {
	if cl.Properties.ProtocolVersion < 5 {
		return packets.ErrUnspecifiedError.Code
	}
	return code.Code
}

// removePlaceholder undoes mochi's registration of a shared filter whose
// group the client could not join (processSubscribe registered it). The
// topic index is by client ID: its entry is left to a newer connection of
// the client ID that has the filter too.
func (s *Shared) removePlaceholder(cl *mqtt.Client, filter string) {
	cl.State.Subscriptions.Delete(filter)
	if live, ok := s.server.Clients.Get(cl.ID); ok && live != cl {
		if _, has := live.State.Subscriptions.Get(filter); has {
			return
		}
	}
	if s.server.Topics.Unsubscribe(filter, cl.ID) {
		atomic.AddInt64(&s.server.Info.Subscriptions, -1)
	}
}

// errWrongStream: the group's subscription exists on another stream.
var errWrongStream = errors.New("bridge: the group's subscription is on another stream")

// join makes the client a member of group for filter, granted qos, and
// says why not otherwise.
func (s *Shared) join(cl *mqtt.Client, group, filter string, qos byte) packets.Code {
	log := s.log.With("client", cl.ID, "group", group, "filter", filter)
	if gone(cl) { // a late SUBSCRIBE of a connection taken over
		return packets.ErrUnspecifiedError
	}
	if p := cluster.NameProblem(group); p != "" {
		log.Info("shared subscription refused: invalid group name", "problem", p)
		return packets.ErrTopicFilterInvalid
	}
	t, err := s.router.StreamFor(filter)
	if err != nil {
		log.Info("shared subscription refused: its filter routes to no single stream", "error", err)
		return packets.ErrTopicFilterInvalid
	}
	ctx, cancel := context.WithTimeout(s.ctx, joinTimeout)
	defer cancel()

	unlock := s.locks.lock(cl.ID)
	defer unlock()
	s.mu.Lock()
	if s.closed || gone(cl) {
		s.mu.Unlock()
		return packets.ErrUnspecifiedError
	}
	c, stale, ok := s.connOf(cl)
	if !ok {
		s.mu.Unlock()
		log.Warn("shared subscription refused: another connection of the client ID is live")
		return packets.ErrUnspecifiedError
	}
	if m := c.member(group); m != nil {
		if !m.ended.Load() && m.filter == filter { // a SUBSCRIBE again
			m.qos.Store(uint32(min(qos, 1)))
			s.mu.Unlock()
			return packets.CodeSuccess
		}
		if m.ended.Load() { // on its way out: replace it
			delete(c.members, group)
			stale = append(stale, m)
		}
	}
	s.mu.Unlock()
	for _, m := range stale {
		m.stop()
	}
	s.mu.Lock()
	other := s.otherFilter(group, filter)
	s.mu.Unlock()
	if other != "" {
		log.Info("shared subscription refused: the group's members here subscribe with another filter", "group_filter", other)
		return packets.ErrImplementationSpecificError
	}

	if err := s.ensureSubscription(ctx, group, t); err != nil {
		code := packets.ErrUnspecifiedError
		switch {
		case errors.Is(err, cluster.ErrStreamNotFound):
			code = packets.ErrTopicFilterInvalid
		case errors.Is(err, errWrongStream):
			code = packets.ErrImplementationSpecificError
		}
		log.Warn("shared subscription refused: no subscription for the group", "stream", t.Stream, "error", err)
		return code
	}

	consumer, err := s.attach(ctx, group, cl)
	if err != nil {
		code := packets.ErrUnspecifiedError
		if errors.Is(err, subscription.ErrConsumerExists) || errors.Is(err, cluster.ErrNotOwner) {
			code = packets.ErrImplementationSpecificError
		}
		log.Warn("shared subscription refused: attaching to the group failed", "error", err)
		return code
	}
	s.mu.Lock()
	code := packets.CodeSuccess
	c, stale, ok = s.connOf(cl) // finds nothing new: joins of cl.ID wait for the lock
	switch {
	case s.closed || gone(cl) || !ok:
		code = packets.ErrUnspecifiedError
	case s.otherFilter(group, filter) != "": // another client joined meanwhile
		log.Info("shared subscription refused: the group's members here subscribe with another filter")
		code = packets.ErrImplementationSpecificError
	}
	if code != packets.CodeSuccess {
		s.mu.Unlock()
		for _, m := range stale {
			m.stop()
		}
		consumer.Close()
		return code
	}
	if c == nil {
		window, receiveMax := s.window(cl)
		c = newConn(cl, window, receiveMax)
		s.conns[cl.ID] = c
	}
	m := newMember(s, c, group, t.Stream, filter, qos, consumer)
	c.members[group] = m
	g := s.groups[group]
	if g == nil {
		g = &groupFilter{filter: filter}
		s.groups[group] = g
	}
	g.members++
	s.wg.Add(1)
	s.mu.Unlock()
	for _, m := range stale {
		m.stop()
	}
	log.Info("joined shared subscription group", "stream", t.Stream, "qos", qos)
	go m.run()
	return packets.CodeSuccess
}

// otherFilter returns the group's filter if the group has members here and
// it is not filter: a group is one cursor over its stream, so its members
// (on one node) all take the same records. Called with s.mu held.
func (s *Shared) otherFilter(group, filter string) string {
	if g := s.groups[group]; g != nil && g.filter != filter {
		return g.filter
	}
	return ""
}

// memberLeft counts a member of group out; the last one leaving frees the
// group's filter.
func (s *Shared) memberLeft(group string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if g := s.groups[group]; g != nil {
		if g.members--; g.members <= 0 {
			delete(s.groups, group)
		}
	}
}

// connOf returns the client's conn (nil if none yet). A conn of another
// connection with the same client ID is evicted when that connection has
// ended or been taken over (its members are returned, to be stopped once
// s.mu is released); if it is live, ok is false: cl is the stale one.
// Called with s.mu held.
func (s *Shared) connOf(cl *mqtt.Client) (c *conn, stale []*member, ok bool) {
	c = s.conns[cl.ID]
	if c == nil || c.cl == cl {
		return c, nil, true
	}
	if !gone(c.cl) {
		return nil, nil, false
	}
	delete(s.conns, cl.ID)
	return nil, c.takeMembers(), true
}

// leave makes the client leave group if it is a member for filter.
func (s *Shared) leave(cl *mqtt.Client, group, filter string) {
	unlock := s.locks.lock(cl.ID)
	defer unlock()
	s.mu.Lock()
	c := s.conns[cl.ID]
	if c == nil || c.cl != cl {
		s.mu.Unlock()
		return
	}
	m := c.members[group]
	if m == nil || m.filter != filter {
		s.mu.Unlock()
		return
	}
	delete(c.members, group)
	s.mu.Unlock()
	m.stop()
	s.log.Info("left shared subscription group", "client", cl.ID, "group", group)
}

// drop removes a member whose deliveries ended on their own (its consumer
// was dropped, or its connection failed).
func (s *Shared) drop(m *member) {
	unlock := s.locks.lock(m.c.cl.ID)
	defer unlock()
	s.mu.Lock()
	if m.c.members[m.group] == m {
		delete(m.c.members, m.group)
	}
	s.mu.Unlock()
	m.stop()
}

// ensureSubscription finds the group's subscription, creating it (and its
// stream, if the route creates streams) when missing, and checks that it
// is on the filter's stream.
func (s *Shared) ensureSubscription(ctx context.Context, group string, t Target) error {
	meta, err := s.node.Subscription(group)
	if errors.Is(err, cluster.ErrSubscriptionNotFound) {
		meta, err = s.createSubscription(ctx, group, t)
	}
	if err != nil {
		return err
	}
	if meta.Stream != t.Stream {
		return fmt.Errorf("%w: subscription %q reads stream %q, the filter routes to %q", errWrongStream, group, meta.Stream, t.Stream)
	}
	return nil
}

func (s *Shared) createSubscription(ctx context.Context, group string, t Target) (cluster.SubscriptionMeta, error) {
	if t.Create {
		if _, err := s.node.Stream(t.Stream); errors.Is(err, cluster.ErrStreamNotFound) {
			_, _, err := s.node.CreateStream(ctx, cluster.StreamMeta{
				Name:              t.Stream,
				ReplicationFactor: s.streams.ReplicationFactor,
				ShardCount:        s.streams.ShardCount,
				BacklogSeconds:    uint32(s.streams.BacklogDuration / time.Second),
			})
			if err != nil && !errors.Is(err, cluster.ErrStreamExists) {
				return cluster.SubscriptionMeta{}, fmt.Errorf("creating stream %q: %w", t.Stream, err)
			}
		}
	}
	ackTimeout := max(int32(s.cfg.AckTimeout/time.Second), 1)
	meta, err := s.node.CreateSubscription(ctx, cluster.SubscriptionMeta{
		ID:                group,
		Stream:            t.Stream,
		AckTimeoutSeconds: ackTimeout,
		MaxUnackedRecords: int32(s.cfg.MaxUnacked),
		Offset:            s.cfg.Offset,
	})
	if errors.Is(err, cluster.ErrSubscriptionExists) { // created meanwhile
		return s.node.Subscription(group)
	}
	if err == nil {
		s.log.Info("created the subscription of a shared subscription group", "group", group, "stream", t.Stream, "offset", s.cfg.Offset)
	}
	return meta, err
}

// attach attaches the client as a consumer of group, retrying briefly while
// a consumer of its name is still attached.
func (s *Shared) attach(ctx context.Context, group string, cl *mqtt.Client) (*subscription.Consumer, error) {
	info := subscription.ConsumerInfo{Name: cl.ID, URI: cl.Net.Remote, UserAgent: fmt.Sprintf("mqtt/%d", cl.Properties.ProtocolVersion)}
	deadline := time.Now().Add(attachRetry)
	for {
		c, err := s.subs.Attach(ctx, group, info)
		if !errors.Is(err, subscription.ErrConsumerExists) || time.Now().After(deadline) {
			return c, err
		}
		t := time.NewTimer(50 * time.Millisecond)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, err
		case <-t.C:
		}
	}
}

// window311 is the window of an MQTT 3.1.1 client, which does not say how
// many PUBLISHes it takes at once.
const window311 = 128

// window returns how many QoS 1 group deliveries may await their PUBACK on
// the connection, over all its groups: the client's receive maximum (MQTT
// 5) or window311, within half of mochi's MaximumInflight, so mochi's own
// deliveries (which it drops when Inflight holds MaximumInflight) keep
// the other half. It also returns the receive maximum of an MQTT 5 client
// (0 for 3.1.1), which bounds ours and mochi's together.
func (s *Shared) window(cl *mqtt.Client) (window, receiveMax int) {
	window = window311
	if cl.Properties.ProtocolVersion >= 5 {
		receiveMax = int(cl.Properties.Props.ReceiveMaximum)
		if receiveMax == 0 {
			receiveMax = 65535 // absent: the MQTT 5 default
		}
		window = receiveMax
	}
	if n := int(s.server.Options.Capabilities.MaximumInflight) / 2; n < window {
		window = n
	}
	return max(window, 1), receiveMax
}
