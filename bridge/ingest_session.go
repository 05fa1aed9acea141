package bridge

import (
	"sync"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
)

// entry is one publish on its way through the ingest path.
type entry struct {
	sess     *session     // nil for QoS 0, which nobody acknowledges
	cl       *mqtt.Client // the connection that published it
	id       uint16       // its packet ID
	qos      byte
	pk       packets.Packet // kept for the live delivery after the commit (live); else zero
	rec      []byte         // the marshaled HStreamRecord; nil once encoded into a batch
	cost     int64          // charged to the pending budget: until acknowledged (QoS 1/2), until settled (QoS 0)
	stream   string
	deadline time.Time // publish-timeout from when it was read: bounds its queueing, not its commit
	live     bool      // deliver to live subscribers once committed
	orig     *entry    // a re-ack: the committed publish it answers again

	// Guarded by sess.mu.
	queued  bool // on the session's FIFO
	done    bool
	code    packets.Code // the outcome, once done
	unknown bool         // done, but the outcome is unknown (the Ingest closed while its commit was awaited)
	reack   bool         // of a committed QoS 2 publish: a re-ack of it is queued and not yet written
}

// session is the ingest state of one MQTT session (a client ID): the FIFO
// that orders its acks, the bound on its unacknowledged publishes and its
// QoS 2 exactly-once state.
type session struct {
	ing  *Ingest
	room notifier // notified when outstanding falls
	// wmu is held by the writer while it checks and writes a PUBREC
	// success, and by a PUBREL while it ends the exchange, so that no
	// PUBREC of the exchange is written after mochi's PUBCOMP. It is
	// taken before mu.
	wmu sync.Mutex

	mu          sync.Mutex
	cl          *mqtt.Client // guarded by mu: the current connection
	fifo        []*entry     // guarded by mu: not yet handed to the writer, in read order, from head
	head        int          // guarded by mu
	ready       []*entry     // guarded by mu: done, in order, for the writer
	writing     bool         // guarded by mu: a writer goroutine is running
	outstanding int          // guarded by mu: pushed and not yet written
	// qos1 and qos2 hold the publish that claimed a packet ID, from the
	// moment it is read (before any wait), guarded by mu. A QoS 1 claim
	// ends when the publish is done; a QoS 2 claim ends when the publish
	// fails, or at PUBREL once committed (done with success).
	qos1 map[uint16]*entry
	qos2 map[uint16]*entry
}

func newSession(i *Ingest, cl *mqtt.Client) *session {
	return &session{ing: i, cl: cl, qos1: map[uint16]*entry{}, qos2: map[uint16]*entry{}}
}

// What to do with a QoS 1/2 publish.
const (
	pubNew       = iota // store it (it holds the packet ID's claim)
	pubDuplicate        // a retransmit of one still pending: drop it, its ack comes
	pubReack            // a QoS 2 retransmit of one committed: PUBREC again
	pubGone             // read on a connection that is no longer the session's: drop it
)

// classify decides what to do with a QoS 1/2 publish read on cl and
// returns its entry (for pubNew, holding the packet ID's claim; for
// pubReack, done).
func (s *session) classify(cl *mqtt.Client, pk packets.Packet) (*entry, int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cl != cl {
		// The session was taken over (or is another one now): the client
		// retransmits on its current connection what it did not get acks
		// for.
		return nil, pubGone
	}
	e := &entry{sess: s, cl: cl, id: pk.PacketID, qos: pk.FixedHeader.Qos, pk: pk}
	if e.qos == 2 {
		if c := s.qos2[e.id]; c != nil {
			switch {
			case c.done && !c.unknown && c.code == packets.CodeSuccess:
				if c.reack {
					return nil, pubDuplicate // one re-ack queued answers both
				}
				c.reack = true
				e.pk, e.orig, e.done, e.code = packets.Packet{}, c, true, packets.CodeSuccess
				return e, pubReack
			case c.queued:
				return nil, pubDuplicate
			}
			// c is still waiting for room on an earlier connection (a
			// connection's publishes are read one at a time): this
			// retransmit takes its claim over, and c gives up at push.
		}
		s.qos2[e.id] = e
		return e, pubNew
	}
	if c := s.qos1[e.id]; pk.FixedHeader.Dup && c != nil && c.queued {
		return nil, pubDuplicate
	}
	s.qos1[e.id] = e
	return e, pubNew
}

// resumes reports whether the new connection cl inherits this session, by
// mochi's rule (inheritClientSession), and if so makes it the current one.
func (s *session) resumes(cl *mqtt.Client, pk packets.Packet) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	prev := s.cl
	if pk.Connect.Clean || prev == nil || (prev.Properties.Clean && prev.Properties.ProtocolVersion < 5) {
		return false
	}
	s.cl = cl
	return true
}

func (s *session) current() *mqtt.Client {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cl
}

// release ends the exactly-once state of a committed QoS 2 publish at its
// PUBREL; it reports whether there was one.
func (s *session) release(id uint16) bool {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	s.mu.Lock()
	defer s.mu.Unlock()
	if c := s.qos2[id]; c != nil && c.done && !c.unknown && c.code == packets.CodeSuccess {
		delete(s.qos2, id)
		return true
	}
	return false
}

// unclaim ends e's claim of its packet ID, if it still holds it. Call with
// mu held.
func (s *session) unclaim(e *entry) {
	m := s.qos1
	if e.qos == 2 {
		m = s.qos2
	}
	if m[e.id] == e {
		delete(m, e.id)
	}
	if e.orig != nil {
		e.orig.reack = false
	}
}

// settle records that e is done. A QoS 1 claim ends there, a QoS 2 one
// when it failed (its negative PUBREC ends the exchange, and a retransmit
// is a new attempt); an unknown outcome keeps the QoS 2 claim. Call with
// mu held.
func (s *session) settle(e *entry, code packets.Code, unknown bool) {
	e.done, e.code, e.unknown = true, code, unknown
	if e.qos != 2 || (!unknown && code != packets.CodeSuccess) {
		s.unclaim(e)
	}
}

// drop gives up a publish that is not answered (its connection is gone):
// its claim ends, so the retransmit is stored.
func (s *session) drop(e *entry) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.unclaim(e)
}

// waitRoom blocks while the session has receive-maximum publishes
// outstanding.
func (s *session) waitRoom(i *Ingest, cl *mqtt.Client, deadline time.Time) error {
	return i.waitUntil(cl, deadline, s.room.wait, func() bool {
		s.mu.Lock()
		defer s.mu.Unlock()
		return s.outstanding < i.receiveMax
	})
}

// push appends a QoS 1/2 publish to the FIFO, in read order, pending or
// (done) with its outcome code; a done one is acknowledged in its turn.
// It returns false, dropping the publish and its claim, when the
// publish's connection is no longer the session's current one or is
// closed, or when a retransmit on a newer connection took its claim over:
// the client retransmits (or did) on its current connection.
func (s *session) push(e *entry, done bool, code packets.Code) bool {
	s.mu.Lock()
	claimed := e.orig != nil || (e.qos == 2 && s.qos2[e.id] == e) || (e.qos != 2 && s.qos1[e.id] == e)
	if s.cl != e.cl || e.cl.Closed() || !claimed {
		s.unclaim(e)
		s.mu.Unlock()
		return false
	}
	e.queued = true
	if done && !e.done {
		s.settle(e, code, false)
	}
	s.outstanding++
	s.fifo = append(s.fifo, e)
	start := s.advance()
	s.mu.Unlock()
	if start {
		s.ing.startWriter(s)
	}
	return true
}

// finish records an entry's outcome and releases the acks it unblocks.
// The entry's bytes leave the pending budget now, at its commit, not when
// its ack is written: a client that does not read its socket blocks its
// own ack writer, and would otherwise hold the budget of every publisher.
// What a session holds past its commits is bounded by receive-maximum.
func (s *session) finish(e *entry, code packets.Code, unknown bool) {
	s.mu.Lock()
	s.settle(e, code, unknown)
	cost := e.cost
	e.cost = 0
	start := s.advance()
	s.mu.Unlock()
	if cost > 0 {
		s.ing.budget.release(cost)
	}
	if start {
		s.ing.startWriter(s)
	}
}

// advance moves the done entries at the head of the FIFO to the writer's
// list and reports whether a writer must be started. Call with mu held.
func (s *session) advance() bool {
	for s.head < len(s.fifo) && s.fifo[s.head].done {
		s.ready = append(s.ready, s.fifo[s.head])
		s.fifo[s.head] = nil
		s.head++
	}
	if s.head == len(s.fifo) {
		s.fifo, s.head = s.fifo[:0], 0
	} else if s.head > 64 && s.head > len(s.fifo)/2 {
		n := copy(s.fifo, s.fifo[s.head:])
		clear(s.fifo[n:])
		s.fifo, s.head = s.fifo[:n], 0
	}
	if len(s.ready) == 0 || s.writing {
		return false
	}
	s.writing = true
	return true
}

// startWriter runs a writer for the session's ready acks: in a goroutine
// of its own, or in the caller once the Ingest is closing (when no new
// goroutine may join the wait group).
func (i *Ingest) startWriter(s *session) {
	i.mu.Lock()
	if i.closed {
		i.mu.Unlock()
		i.writeAcks(s)
		return
	}
	i.wg.Add(1)
	i.mu.Unlock()
	go func() {
		defer i.wg.Done()
		i.writeAcks(s)
	}()
}

// writeAcks writes the session's ready acks, in order, until there are
// none; it is the session's only writer while it runs.
func (i *Ingest) writeAcks(s *session) {
	for {
		s.mu.Lock()
		batch := s.ready
		s.ready = nil
		if len(batch) == 0 {
			s.writing = false
			s.mu.Unlock()
			return
		}
		cl := s.cl
		s.mu.Unlock()
		for _, e := range batch {
			i.ack(s, cl, e)
		}
		s.mu.Lock()
		s.outstanding -= len(batch)
		s.mu.Unlock()
		s.room.notify()
	}
}

// ack answers one publish on the session's current connection cl and,
// once committed, delivers it live first. The bytes of a publish that was
// not appended (delivered live only, or refused) leave the pending budget
// here; an appended one's left at its commit (session.finish).
func (i *Ingest) ack(s *session, cl *mqtt.Client, e *entry) {
	ok := e.code == packets.CodeSuccess && !e.unknown
	if ok && e.live {
		i.deliver(e.cl, e.pk)
	}
	e.pk, e.live = packets.Packet{}, false // a committed QoS 2 entry stays claimed until PUBREL
	if e.cost > 0 {
		i.budget.release(e.cost)
		e.cost = 0
	}
	switch {
	case e.unknown:
		// Not known to be stored (the Ingest closed first): no ack, and
		// the client retransmits what it has no ack for on reconnect.
		disconnect(cl)
		return
	case !ok && cl.Properties.ProtocolVersion < 5:
		disconnect(cl) // 3.1.1 has no negative ack: disconnect, so it retransmits
		return
	case e.qos == 2 && ok:
		// Only while the exchange is still on (no PUBREL ended it, the ID
		// not claimed again since): a PUBREC after mochi's PUBCOMP would
		// acknowledge the next message on the ID.
		s.wmu.Lock()
		defer s.wmu.Unlock()
		orig := e
		if e.orig != nil {
			orig = e.orig
		}
		s.mu.Lock()
		on := s.qos2[e.id] == orig
		if e.orig != nil {
			e.orig.reack = false
		}
		s.mu.Unlock()
		if on {
			i.writeAck(cl, packets.Pubrec, e.id, e.code)
		}
	case e.qos == 2:
		i.writeAck(cl, packets.Pubrec, e.id, e.code)
	default:
		i.writeAck(cl, packets.Puback, e.id, e.code)
	}
}

func (i *Ingest) writeAck(cl *mqtt.Client, typ byte, id uint16, code packets.Code) {
	ack := packets.Packet{FixedHeader: packets.FixedHeader{Type: typ}, PacketID: id}
	if code != packets.CodeSuccess {
		ack.ReasonCode = code.Code
		ack.Properties.ReasonString = code.Reason
	}
	if err := cl.WritePacket(ack); err != nil {
		i.log.Debug("ack not written", "client", cl.ID, "packet_id", id, "error", err)
	}
}

// disconnect ends cl's connection, so that its client retransmits what it
// has no ack for. It closes the network connection rather than calling
// cl.Stop: mochi's read loop then fails on its next read, sends the will
// and stops the client, whereas a Stop from here that a read loop between
// two packets noticed first would end the connection without the will
// (attachClient, server.go:476).
func disconnect(cl *mqtt.Client) {
	if cl.Net.Conn != nil {
		_ = cl.Net.Conn.Close()
		return
	}
	cl.Stop(packets.ErrUnspecifiedError)
}

// deliver publishes a committed message to live subscribers and the
// retained store, as mochi would have had the hook not rejected it: it is
// injected through an inline client bearing the publisher's ID, so the
// delivered packet's origin is the publisher (NoLocal holds). At most
// inlinePool inline clients exist; a delivery waits for a free one (each
// is busy only for one synchronous InjectPacket).
func (i *Ingest) deliver(from *mqtt.Client, pk packets.Packet) {
	var ic *mqtt.Client
	select {
	case ic = <-i.inline:
	default:
		if i.inlineMade.Add(1) <= inlinePool {
			ic = i.srv.NewClient(nil, mqtt.LocalListener, "", true)
		} else {
			i.inlineMade.Add(-1)
			ic = <-i.inline
		}
	}
	defer func() { i.inline <- ic }()
	ic.ID = from.ID
	ic.Properties.ProtocolVersion = from.Properties.ProtocolVersion
	ic.Properties.Username = from.Properties.Username
	pk.FixedHeader.Dup = false // [MQTT-3.3.1-3]: not propagated
	pk.Properties.TopicAlias, pk.Properties.TopicAliasFlag = 0, false
	if err := i.srv.InjectPacket(ic, pk); err != nil {
		i.log.Warn("live delivery failed", "client", from.ID, "topic", pk.TopicName, "error", err)
	}
}

// notifier wakes every waiter when something changed: wait returns a
// channel that notify closes.
type notifier struct {
	mu sync.Mutex
	ch chan struct{} // guarded by mu; nil when nobody waits
}

func (n *notifier) wait() <-chan struct{} {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.ch == nil {
		n.ch = make(chan struct{})
	}
	return n.ch
}

func (n *notifier) notify() {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.ch != nil {
		close(n.ch)
		n.ch = nil
	}
}
