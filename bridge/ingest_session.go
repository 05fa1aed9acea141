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
	pk       packets.Packet
	rec      []byte // the marshaled HStreamRecord; nil once proposed
	cost     int64  // charged to the pending budget while queued or committing
	stream   string
	deadline time.Time // publish-timeout from when it was read
	live     bool      // deliver to live subscribers once committed

	// Guarded by sess.mu.
	done bool
	code packets.Code // the outcome, once done
}

// session is the ingest state of one MQTT session (a client ID): the FIFO
// that orders its acks, the bound on its unacknowledged publishes and its
// QoS 2 exactly-once state.
type session struct {
	ing  *Ingest
	room notifier // notified when outstanding falls

	mu          sync.Mutex
	cl          *mqtt.Client      // guarded by mu: the current connection
	fifo        []*entry          // guarded by mu: not yet handed to the writer, in read order, from head
	head        int               // guarded by mu
	ready       []*entry          // guarded by mu: done, in order, for the writer
	writing     bool              // guarded by mu: a writer goroutine is running
	outstanding int               // guarded by mu: pushed and not yet written
	qos1        map[uint16]*entry // guarded by mu: QoS 1 publishes pending, by packet ID
	qos2        map[uint16]bool   // guarded by mu: QoS 2 publishes not yet released, true once committed
}

func newSession(i *Ingest, cl *mqtt.Client) *session {
	return &session{ing: i, cl: cl, qos1: map[uint16]*entry{}, qos2: map[uint16]bool{}}
}

// What to do with a QoS 1/2 publish.
const (
	pubNew       = iota // store it
	pubDuplicate        // a retransmit of one still pending: drop it, its ack comes
	pubReack            // a QoS 2 retransmit of one committed: PUBREC again
)

func (s *session) classify(pk packets.Packet) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	if pk.FixedHeader.Qos == 2 {
		committed, known := s.qos2[pk.PacketID]
		switch {
		case !known:
			return pubNew
		case committed:
			return pubReack
		default:
			return pubDuplicate
		}
	}
	if e := s.qos1[pk.PacketID]; pk.FixedHeader.Dup && e != nil && !e.done {
		return pubDuplicate
	}
	return pubNew
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

// knowsQoS2 reports whether a QoS 2 publish with this packet ID is pending
// or committed and not yet released.
func (s *session) knowsQoS2(id uint16) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, ok := s.qos2[id]
	return ok
}

// release ends the exactly-once state of a committed QoS 2 publish at its
// PUBREL; it reports whether there was one.
func (s *session) release(id uint16) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if committed := s.qos2[id]; committed {
		delete(s.qos2, id)
		return true
	}
	return false
}

// forget drops any state of a publish refused without an ack.
func (s *session) forget(pk packets.Packet) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if pk.FixedHeader.Qos == 2 {
		if committed := s.qos2[pk.PacketID]; !committed {
			delete(s.qos2, pk.PacketID)
		}
	}
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

// push appends a QoS 1/2 publish to the FIFO, in read order; an entry
// pushed done (refused, live only, re-ack) is acknowledged in its turn.
func (s *session) push(e *entry) {
	s.mu.Lock()
	s.outstanding++
	s.fifo = append(s.fifo, e)
	id := e.pk.PacketID
	if e.pk.FixedHeader.Qos == 2 {
		switch {
		case !e.done:
			s.qos2[id] = false
		case e.code == packets.CodeSuccess:
			s.qos2[id] = true
		}
	} else if !e.done {
		s.qos1[id] = e
	}
	start := s.advance()
	s.mu.Unlock()
	if start {
		s.ing.startWriter(s)
	}
}

// finish records an entry's outcome and releases the acks it unblocks.
func (s *session) finish(e *entry, code packets.Code) {
	s.mu.Lock()
	e.done, e.code = true, code
	id := e.pk.PacketID
	if e.pk.FixedHeader.Qos == 2 {
		if code == packets.CodeSuccess {
			s.qos2[id] = true
		} else if committed, ok := s.qos2[id]; ok && !committed {
			delete(s.qos2, id) // a retransmit is a new attempt
		}
	} else if s.qos1[id] == e {
		delete(s.qos1, id)
	}
	start := s.advance()
	s.mu.Unlock()
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
			i.ack(cl, e)
		}
		s.mu.Lock()
		s.outstanding -= len(batch)
		s.mu.Unlock()
		s.room.notify()
	}
}

// ack answers one publish on the session's current connection cl and,
// once committed, delivers it live.
func (i *Ingest) ack(cl *mqtt.Client, e *entry) {
	ok := e.code == packets.CodeSuccess
	if ok && e.live {
		i.deliver(e.cl, e.pk)
		e.pk.Payload = nil
	}
	if !ok && cl.Properties.ProtocolVersion < 5 {
		cl.Stop(e.code) // 3.1.1 has no negative ack: disconnect, so it retransmits
		return
	}
	var ack packets.Packet
	switch {
	case e.pk.FixedHeader.Qos == 2 && ok:
		ack = i.setInflightPubrec(cl, e.pk.PacketID)
	case e.pk.FixedHeader.Qos == 2:
		ack = packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Pubrec}, PacketID: e.pk.PacketID}
	default:
		ack = packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Puback}, PacketID: e.pk.PacketID}
	}
	if !ok {
		ack.ReasonCode = e.code.Code
		ack.Properties.ReasonString = e.code.Reason
	}
	if err := cl.WritePacket(ack); err != nil {
		i.log.Debug("ack not written", "client", cl.ID, "packet_id", e.pk.PacketID, "error", err)
	}
}

// deliver publishes a committed message to live subscribers and the
// retained store, as mochi would have had the hook not rejected it: it is
// injected through an inline client bearing the publisher's ID, so the
// delivered packet's origin is the publisher (NoLocal holds).
func (i *Ingest) deliver(from *mqtt.Client, pk packets.Packet) {
	var ic *mqtt.Client
	select {
	case ic = <-i.inline:
	default:
		ic = i.srv.NewClient(nil, mqtt.LocalListener, "", true)
	}
	ic.ID = from.ID
	ic.Properties.ProtocolVersion = from.Properties.ProtocolVersion
	ic.Properties.Username = from.Properties.Username
	pk.FixedHeader.Dup = false // [MQTT-3.3.1-3]: not propagated
	pk.Properties.TopicAlias, pk.Properties.TopicAliasFlag = 0, false
	if err := i.srv.InjectPacket(ic, pk); err != nil {
		i.log.Warn("live delivery failed", "client", from.ID, "topic", pk.TopicName, "error", err)
	}
	select {
	case i.inline <- ic:
	default:
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
