package bridge

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/weir-log/weir/api/hstreampb"
	"github.com/weir-log/weir/api/wire"
	"github.com/weir-log/weir/subscription"
)

// conn is one MQTT connection's part in shared subscriptions: its
// memberships, and the group deliveries in flight to it.
type conn struct {
	cl *mqtt.Client
	// slots holds one token per QoS 1 delivery awaiting its PUBACK, over
	// all the connection's groups: its capacity is the window.
	slots chan struct{}
	// receiveMax is the MQTT 5 client's receive maximum: no delivery is
	// sent while that many QoS 1 and 2 PUBLISHes (mochi's too) await its
	// acknowledgement. 0 for 3.1.1 clients.
	receiveMax int

	members map[string]*member // by group; guarded by Shared.mu

	mu      sync.Mutex
	pending map[uint16]pendingPub // guarded by mu: our QoS 1 deliveries awaiting their PUBACK, by packet ID
}

// pendingPub is a QoS 1 delivery awaiting its PUBACK.
type pendingPub struct {
	m  *member
	id *hstreampb.RecordId
}

func newConn(cl *mqtt.Client, window, receiveMax int) *conn {
	return &conn{
		cl:         cl,
		slots:      make(chan struct{}, window),
		receiveMax: receiveMax,
		members:    make(map[string]*member),
		pending:    make(map[uint16]pendingPub),
	}
}

// gone reports whether a connection has ended or been taken over: it must
// not become (or stay) a member.
func gone(cl *mqtt.Client) bool { return cl.Closed() || cl.IsTakenOver() }

// takeMembers empties the connection's memberships and returns them, to be
// stopped. Called with Shared.mu held.
func (c *conn) takeMembers() []*member {
	ms := make([]*member, 0, len(c.members))
	for _, m := range c.members {
		ms = append(ms, m)
	}
	c.members = nil
	return ms
}

// member returns the connection's member of group, if any. c may be nil.
// Called with Shared.mu held.
func (c *conn) member(group string) *member {
	if c == nil {
		return nil
	}
	return c.members[group]
}

// errNoPacketID: every packet ID is in use towards the client.
var errNoPacketID = errors.New("bridge: no free packet ID")

// track gives a QoS 1 delivery of the member a packet ID from mochi's
// allocator and registers it under that ID in the client's Inflight (as
// mochi's publishToClient does, server.go:1083-1087) and in pending.
// mochi's allocator skips the IDs in Inflight, but a delivery of ours may
// have left Inflight (an inbound PUBLISH with its ID deletes it,
// server.go:899-903) while its PUBACK is still due: those IDs are skipped
// here, so a pending delivery is never overwritten. It returns errStopped
// if the member has stopped meanwhile.
func (c *conn) track(m *member, pk *packets.Packet, id *hstreampb.RecordId, info *int64) error {
	for range cap(c.slots) + 1 { // pending holds fewer IDs than that
		pid, err := c.cl.NextPacketID()
		if err != nil {
			return errNoPacketID
		}
		c.mu.Lock()
		if m.stopped {
			c.mu.Unlock()
			return errStopped
		}
		if _, used := c.pending[uint16(pid)]; used {
			c.mu.Unlock()
			continue
		}
		pk.PacketID = uint16(pid)
		if c.cl.State.Inflight.Set(*pk) {
			atomic.AddInt64(info, 1)
			c.cl.State.Inflight.DecreaseSendQuota()
		}
		c.pending[pk.PacketID] = pendingPub{m: m, id: id}
		c.mu.Unlock()
		return nil
	}
	return errNoPacketID
}

// untrack forgets a delivery that was never written, freeing its slot.
func (c *conn) untrack(pid uint16, info *int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.pending[pid]; !ok {
		return
	}
	delete(c.pending, pid)
	c.forgetInflight(pid, info)
	<-c.slots
}

// ours reports whether the client's Inflight entry under pid, one of
// pending's IDs, is still our PUBLISH: mochi may have replaced it (see
// track), for example with the PUBREC of an inbound QoS 2 PUBLISH, which
// is not ours to touch. Called with c.mu held.
func (c *conn) ours(pid uint16) (ours, held bool) {
	e, held := c.cl.State.Inflight.Get(pid)
	return held && e.FixedHeader.Type == packets.Publish, held
}

// forgetInflight takes one of our PUBLISHes out of the client's Inflight,
// restoring what track took. Called with c.mu held, for an ID in pending.
func (c *conn) forgetInflight(pid uint16, info *int64) {
	if ours, _ := c.ours(pid); ours && c.cl.State.Inflight.Delete(pid) {
		atomic.AddInt64(info, -1)
	}
	c.cl.State.Inflight.IncreaseSendQuota()
}

// puback takes a delivery the client acknowledged out of pending, frees
// its slot and returns it (ok false: no delivery of ours has that ID).
// mochi's processPuback then clears our Inflight entry and restores the
// send quota; if the entry is no longer ours (see track), the quota is
// restored here and foreign is true: mochi must not see the PUBACK, or it
// would delete the entry that is there now.
func (c *conn) puback(pid uint16) (p pendingPub, ok, foreign bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if p, ok = c.pending[pid]; !ok {
		return p, false, false
	}
	delete(c.pending, pid)
	<-c.slots
	if ours, held := c.ours(pid); !ours {
		c.cl.State.Inflight.IncreaseSendQuota()
		foreign = held
	}
	return p, true, foreign
}

// A member is one connection's membership of one group: a consumer of the
// group's subscription and the goroutine that delivers what it is given.
type member struct {
	s             *Shared
	c             *conn
	group, stream string
	filter        string // the group's filter, fixed
	consumer      *subscription.Consumer
	ctx           context.Context
	cancel        context.CancelFunc

	qos      atomic.Uint32 // granted: 0 or 1 (a SUBSCRIBE again may change it)
	stopped  bool          // guarded by c.mu: no new deliveries are tracked
	ended    atomic.Bool   // its deliveries ended on their own; it is being dropped
	stopOnce sync.Once
}

func newMember(s *Shared, c *conn, group, stream, filter string, qos byte, consumer *subscription.Consumer) *member {
	ctx, cancel := context.WithCancel(s.ctx)
	m := &member{s: s, c: c, group: group, stream: stream, filter: filter, consumer: consumer, ctx: ctx, cancel: cancel}
	m.qos.Store(uint32(min(qos, 1)))
	return m
}

// match returns the QoS a record on topic is delivered at, or false if the
// member's filter does not match it.
func (m *member) match(topic string) (byte, bool) {
	return byte(m.qos.Load()), Match(m.filter, topic)
}

// stop ends the membership: no new deliveries, those in flight forgotten
// (taken out of the client's Inflight, so a session taking over does not
// resend them), and the consumer closed, so the owner delivers what it
// held unacked again. It does not wait for the goroutine. Idempotent.
func (m *member) stop() {
	m.stopOnce.Do(func() {
		m.cancel()
		m.s.memberLeft(m.group)
		c := m.c
		c.mu.Lock()
		m.stopped = true
		for pid, p := range c.pending {
			if p.m == m {
				delete(c.pending, pid)
				c.forgetInflight(pid, &m.s.server.Info.Inflight)
				<-c.slots
			}
		}
		c.mu.Unlock()
		m.consumer.Close()
	})
}

// errStopped: the member stopped while delivering.
var errStopped = errors.New("bridge: member stopped")

// run delivers the consumer's batches until the member stops. If the
// deliveries end on their own (the consumer was dropped, the connection
// failed), the member leaves its group.
func (m *member) run() {
	defer m.s.wg.Done()
	for {
		rr, err := m.consumer.Next(m.ctx)
		if err == nil {
			err = m.send(rr)
		}
		if err == nil {
			continue
		}
		if m.ctx.Err() == nil {
			m.ended.Store(true)
			lvl := m.s.log.Debug
			if !errors.Is(err, mqtt.ErrConnectionClosed) {
				lvl = m.s.log.Warn
			}
			lvl("shared subscription member stopped receiving", "client", m.c.cl.ID, "group", m.group, "error", err)
			m.s.drop(m)
		}
		return
	}
}

// send delivers one batch: records the member's filters do not match, and
// QoS 0 deliveries, are acked at once; QoS 1 deliveries when their PUBACK
// comes. An error means the member cannot go on.
func (m *member) send(rr *hstreampb.ReceivedRecord) error {
	ids := rr.GetRecordIds()
	recs, err := wire.DecodeBatch(rr.GetRecord(), 0)
	if err == nil && len(recs) != len(ids) {
		err = fmt.Errorf("%d records for %d record ids", len(recs), len(ids))
	}
	if err != nil {
		// It would come back forever: skip it, as the owner skips a
		// corrupt entry.
		m.s.log.Warn("shared subscription: skipping a batch that does not decode", "group", m.group, "records", len(ids), "error", err)
		m.consumer.Ack(ids)
		return nil
	}
	var done []*hstreampb.RecordId // acked without a PUBACK
	flush := func() {
		if len(done) > 0 {
			m.consumer.Ack(done)
			done = nil
		}
	}
	defer flush()
	info := &m.s.server.Info.Inflight
	for i, rec := range recs {
		pk := PublishPacket(rec, m.stream)
		qos, ok := m.match(pk.TopicName)
		if !ok {
			done = append(done, ids[i])
			continue
		}
		pk.FixedHeader.Qos = qos
		pk.Created = time.Now().Unix() // mochi expires Inflight entries by it
		if qos == 0 {
			if err := m.write(pk, ids[i]); err != nil {
				return err
			}
			done = append(done, ids[i])
			continue
		}
		select {
		case m.c.slots <- struct{}{}:
		default:
			flush() // the window is full: do not hold acks while waiting
			select {
			case m.c.slots <- struct{}{}:
			case <-m.ctx.Done():
				return m.ctx.Err()
			}
		}
		if err := m.waitClientRoom(flush); err != nil {
			<-m.c.slots
			return err
		}
		switch err := m.c.track(m, &pk, ids[i], info); {
		case errors.Is(err, errNoPacketID):
			// Every packet ID is in flight to this client: leave the
			// record unacked, the owner sends it again after its ack
			// timeout.
			<-m.c.slots
			m.s.log.Warn("shared subscription: no free packet ID for a delivery", "client", m.c.cl.ID, "group", m.group)
			continue
		case err != nil:
			<-m.c.slots
			return err
		}
		if err := m.write(pk, ids[i]); err != nil {
			m.c.untrack(pk.PacketID, info)
			return err
		}
	}
	return nil
}

// clientRoomPoll is how often a delivery waiting for an MQTT 5 client's
// receive maximum looks again (mochi's acks are not signalled to the hook).
const clientRoomPoll = 20 * time.Millisecond

// waitClientRoom waits until an MQTT 5 client has fewer QoS 1 and 2
// PUBLISHes unacknowledged (ours and mochi's) than its receive maximum,
// calling flush first if it has to wait. It ends when the member stops.
func (m *member) waitClientRoom(flush func()) error {
	rm := m.c.receiveMax
	if rm == 0 || sentInflight(m.c.cl) < rm {
		return nil
	}
	flush()
	t := time.NewTicker(clientRoomPoll)
	defer t.Stop()
	for sentInflight(m.c.cl) >= rm {
		select {
		case <-t.C:
		case <-m.ctx.Done():
			return m.ctx.Err()
		}
	}
	return nil
}

// sentInflight is how many QoS 1 and 2 PUBLISHes the client has been sent
// and not acknowledged. mochi's Inflight also holds its own deliveries
// queued for want of send quota (Expiry < 0, server.go:1089): they wait
// for quota, not for the client, and counting them would stall a member
// behind them for good.
func sentInflight(cl *mqtt.Client) int {
	n := cl.State.Inflight.Len()
	if n == 0 {
		return 0
	}
	return n - len(cl.State.Inflight.GetAll(true))
}

// write sends a PUBLISH. A PUBLISH this client can never take (larger
// than its maximum packet size, or not encodable) is acked and skipped,
// for QoS 1 too (its slot freed), and nil returned; any other error is the
// connection's.
func (m *member) write(pk packets.Packet, id *hstreampb.RecordId) error {
	err := m.c.cl.WritePacket(pk)
	var code packets.Code
	if err == nil || !errors.As(err, &code) {
		return err
	}
	m.s.log.Warn("shared subscription: a record cannot be sent to this client; it is acked and skipped",
		"client", m.c.cl.ID, "group", m.group, "topic", pk.TopicName, "bytes", len(pk.Payload), "error", err)
	if pk.FixedHeader.Qos > 0 {
		m.c.untrack(pk.PacketID, &m.s.server.Info.Inflight)
	}
	m.consumer.Ack([]*hstreampb.RecordId{id})
	return nil
}

// keyedLocks is a mutex per key, held only while in use.
type keyedLocks struct {
	mu sync.Mutex
	m  map[string]*keyedLock
}

type keyedLock struct {
	sync.Mutex
	refs int // guarded by keyedLocks.mu
}

// lock locks key and returns its unlock.
func (k *keyedLocks) lock(key string) (unlock func()) {
	k.mu.Lock()
	if k.m == nil {
		k.m = make(map[string]*keyedLock)
	}
	l := k.m[key]
	if l == nil {
		l = &keyedLock{}
		k.m[key] = l
	}
	l.refs++
	k.mu.Unlock()
	l.Lock()
	return func() {
		l.Unlock()
		k.mu.Lock()
		if l.refs--; l.refs == 0 {
			delete(k.m, key)
		}
		k.mu.Unlock()
	}
}
