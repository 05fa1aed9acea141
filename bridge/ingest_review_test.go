package bridge_test

// Regression tests for the review of the ingest path: each fails without
// its fix.

import (
	"bufio"
	"bytes"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	"github.com/mochi-mqtt/server/v2/packets"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/weir-log/weir/api/hstreampb"
	"github.com/weir-log/weir/bridge"
)

// payloads lists the payloads of a stream's records.
func payloads(recs []*hstreampb.HStreamRecord) []string {
	var out []string
	for _, r := range recs {
		out = append(out, string(r.Payload))
	}
	return out
}

// A re-ack (PUBREC for a retransmitted QoS 2 PUBLISH already committed)
// still queued when the PUBREL ends the exchange must not leave a PUBREC
// in mochi's inflight map (nor on the wire after the PUBCOMP): mochi would
// answer the next message reusing the packet ID itself, without storing it.
func TestIngestReviewNoStrayPubrec(t *testing.T) {
	for _, version := range []byte{4, 5} {
		t.Run(fmt.Sprintf("v%d", version), func(t *testing.T) {
			g := newGate()
			r := startRig(t, func(rc *rigConfig) { rc.gate = g })
			r.createStream(t, "devs")
			c := dialRaw(t, r.addr, "stray", version, true)

			c.publish(7, 2, false, "dev/stray", "a")
			pk := c.recv()
			require.Equal(t, packets.Pubrec, pk.FixedHeader.Type)
			require.Equal(t, uint16(7), pk.PacketID)

			// A publish held back keeps the re-ack queued behind it.
			g.hold()
			c.publish(8, 1, false, "dev/stray", "held")
			c.publish(7, 2, true, "dev/stray", "a")
			c.pubrel(7)
			got := c.ping()
			require.Len(t, got, 1)
			require.Equal(t, packets.Pubcomp, got[0].FixedHeader.Type)
			require.Equal(t, uint16(7), got[0].PacketID)

			g.open()
			pk = c.recv()
			require.Equal(t, packets.Puback, pk.FixedHeader.Type)
			require.Equal(t, uint16(8), pk.PacketID)
			require.Empty(t, c.ping(), "no PUBREC after the exchange ended")

			// Packet ID 7 now carries a new message: acknowledged only once
			// stored.
			g.hold()
			c.publish(7, 2, false, "dev/stray", "b")
			require.Empty(t, c.ping(), "nothing is acknowledged before the commit")
			g.open()
			pk = c.recv()
			require.Equal(t, packets.Pubrec, pk.FixedHeader.Type)
			require.Equal(t, uint16(7), pk.PacketID)
			require.Equal(t, byte(0), pk.ReasonCode)
			c.pubrel(7)
			require.Equal(t, packets.Pubcomp, c.recv().FixedHeader.Type)
			assert.ElementsMatch(t, []string{"a", "held", "b"}, payloads(r.records(t, "devs")))
		})
	}
}

// A re-ack is never refused: a retransmitted QoS 2 PUBLISH already
// committed gets PUBREC success even while the session is at
// receive-maximum (a refusal left the ID marked committed, so the next
// message on it was acknowledged without being stored).
func TestIngestReviewReackNeverRefused(t *testing.T) {
	g := newGate()
	r := startRig(t, func(rc *rigConfig) {
		rc.gate = g
		rc.mqtt.ReceiveMaximum = 1
		rc.mqtt.Ingest.PublishTimeout = 200 * time.Millisecond
	})
	r.createStream(t, "devs")
	c := dialRaw(t, r.addr, "reack", 5, true)
	c.publish(7, 2, false, "dev/reack", "a")
	require.Equal(t, packets.Pubrec, c.recv().FixedHeader.Type)

	g.hold()
	c.publish(8, 1, false, "dev/reack", "held") // fills receive-maximum
	c.publish(7, 2, true, "dev/reack", "a")
	time.Sleep(400 * time.Millisecond) // past publish-timeout
	g.open()
	var pubrec *packets.Packet
	for pubrec == nil {
		pk := c.recv()
		if pk.FixedHeader.Type == packets.Pubrec {
			pubrec = &pk
		}
	}
	require.Equal(t, uint16(7), pubrec.PacketID)
	require.Equal(t, byte(0), pubrec.ReasonCode, "the re-ack is not refused")
	c.pubrel(7)
	require.Equal(t, packets.Pubcomp, c.recv().FixedHeader.Type)

	c.publish(7, 2, false, "dev/reack", "b")
	pk := c.recv()
	require.Equal(t, packets.Pubrec, pk.FixedHeader.Type)
	require.Equal(t, byte(0), pk.ReasonCode)
	assert.Contains(t, payloads(r.records(t, "devs")), "b")
}

// A QoS 2 publish stuck waiting for room on a connection whose session is
// taken over, and its retransmit on the new connection, are stored once.
func TestIngestReviewTakeoverStoresOnce(t *testing.T) {
	g := newGate()
	r := startRig(t, func(rc *rigConfig) {
		rc.gate = g
		rc.mqtt.Ingest.MaxPendingBytes = 2500
		rc.mqtt.Ingest.PublishTimeout = 5 * time.Second
	})
	r.createStream(t, "devs")
	g.hold()
	filler := dialRaw(t, r.addr, "filler", 5, true)
	filler.publish(1, 1, false, "dev/filler", strings.Repeat("f", 1500))
	require.Eventually(t, func() bool { now, _ := bridge.PendingBytes(r.ing); return now > 0 }, waitFor, time.Millisecond)

	a1 := dialRaw(t, r.addr, "mover", 5, false)
	a1.publish(7, 2, false, "dev/mover", strings.Repeat("m", 1000)) // waits for room
	time.Sleep(10 * time.Millisecond)
	a1.conn.Close()
	a2 := dialRaw(t, r.addr, "mover", 5, false)
	a2.publish(7, 2, true, "dev/mover", strings.Repeat("m", 1000))
	time.Sleep(10 * time.Millisecond)
	g.open()
	require.Equal(t, packets.Puback, filler.recv().FixedHeader.Type)
	pk := a2.recv()
	require.Equal(t, packets.Pubrec, pk.FixedHeader.Type)
	require.Equal(t, uint16(7), pk.PacketID)
	require.Equal(t, byte(0), pk.ReasonCode)
	require.Empty(t, a2.ping())
	time.Sleep(200 * time.Millisecond) // a second append would have committed by now
	n := 0
	for _, p := range payloads(r.records(t, "devs")) {
		if strings.HasPrefix(p, "m") {
			n++
		}
	}
	require.Equal(t, 1, n, "the QoS 2 message is stored once")
}

// A publish whose commit takes longer than publish-timeout once proposed
// is acknowledged when it commits, not refused (a refusal made the
// retransmit store it again).
func TestIngestReviewSlowCommitAcked(t *testing.T) {
	r := startRig(t, func(rc *rigConfig) { rc.mqtt.Ingest.PublishTimeout = 100 * time.Millisecond })
	r.createStream(t, "devs")
	bridge.SetBeforeWait(r.ing, func() { time.Sleep(150 * time.Millisecond) })
	c := dialRaw(t, r.addr, "slowcommit", 5, true)
	const n = 8
	for k := range n {
		c.publish(uint16(k+1), 2, false, "dev/slowcommit", fmt.Sprint(k))
		pk := c.recv()
		require.Equal(t, packets.Pubrec, pk.FixedHeader.Type)
		require.Equal(t, byte(0), pk.ReasonCode, "publish %d", k)
		c.pubrel(uint16(k + 1))
		require.Equal(t, packets.Pubcomp, c.recv().FixedHeader.Type)
	}
	require.Len(t, r.records(t, "devs"), n)
}

// Live-only publishes (unmatched topics under live) are charged to the
// pending budget until acknowledged, stored ones until committed.
func TestIngestReviewBudgetCharges(t *testing.T) {
	g := newGate()
	r := startRig(t, func(rc *rigConfig) { rc.gate = g })
	r.createStream(t, "devs")
	pending := func() int64 { now, _ := bridge.PendingBytes(r.ing); return now }
	c := dialRaw(t, r.addr, "charged", 5, true)
	g.hold()
	c.publish(1, 1, false, "dev/charged", "x")
	require.Eventually(t, func() bool { return pending() > 0 }, waitFor, time.Millisecond)
	before := pending()
	c.publish(2, 1, false, "loose/charged", strings.Repeat("l", 10000))
	require.Empty(t, c.ping())
	assert.GreaterOrEqual(t, pending()-before, int64(10000), "the live-only publish is charged")
	g.open()
	require.Equal(t, uint16(1), c.recv().PacketID)
	require.Equal(t, uint16(2), c.recv().PacketID)
	require.Eventually(t, func() bool { return pending() == 0 }, waitFor, time.Millisecond)
}

// A stream deleted while publishers use it stops all its batchers, not
// only the one whose append found its shard gone.
func TestIngestReviewDeletedStreamStopsBatchers(t *testing.T) {
	r := startRig(t)
	r.createStream(t, "keyed")
	c := dialRaw(t, r.addr, "deleter", 5, true)
	for k := range 32 {
		c.publish(uint16(k+1), 1, false, fmt.Sprintf("keyed/t%d", k), "x")
		require.Equal(t, byte(0), c.recv().ReasonCode)
	}
	require.Equal(t, 4, bridge.Batchers(r.ing))
	_, err := r.n.API.DeleteStream(ctxT(t), &hstreampb.DeleteStreamRequest{StreamName: "keyed", Force: true})
	require.NoError(t, err)
	c.publish(100, 1, false, "keyed/t0", "after")
	pk := c.recv()
	require.Equal(t, packets.Puback, pk.FixedHeader.Type)
	require.Eventually(t, func() bool { return bridge.Batchers(r.ing) == 0 }, waitFor, 10*time.Millisecond,
		"batchers left: %d", bridge.Batchers(r.ing))
}

// An MQTT 3.1.1 publish that cannot be stored disconnects the client in
// its turn: the acks of earlier publishes are written first, and the will
// is sent.
func TestIngestReviewV3FailureKeepsAcksAndWill(t *testing.T) {
	g := newGate()
	r := startRig(t, func(rc *rigConfig) { rc.gate = g })
	r.createStream(t, "devs")
	got := make(chan *paho.Publish, 10)
	sub := client5(t, r.addr, "will-watcher", func(p *paho.Publish) { got <- p })
	_, err := sub.Subscribe(ctxT(t), &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: "dev/v3fail/status", QoS: 0}}})
	require.NoError(t, err)

	conn, err := net.DialTimeout("tcp", r.addr, waitFor)
	require.NoError(t, err)
	t.Cleanup(func() { conn.Close() })
	c := &rawClient{t: t, conn: conn, r: bufio.NewReader(conn), version: 4}
	connect := packets.Packet{
		FixedHeader:     packets.FixedHeader{Type: packets.Connect},
		ProtocolVersion: 4,
		Connect: packets.ConnectParams{
			ProtocolName: []byte("MQTT"), Clean: true, Keepalive: 30, ClientIdentifier: "v3fail",
			WillFlag: true, WillTopic: "dev/v3fail/status", WillPayload: []byte("offline"),
		},
	}
	var buf bytes.Buffer
	require.NoError(t, connect.ConnectEncode(&buf))
	_, err = conn.Write(buf.Bytes())
	require.NoError(t, err)
	require.Equal(t, packets.Connack, c.recv().FixedHeader.Type)

	g.hold()
	c.publish(1, 1, false, "dev/v3fail", "ok")
	require.Empty(t, c.ping())
	c.publish(2, 1, false, "missing/x", "fails")
	time.Sleep(100 * time.Millisecond)
	g.open()
	pk, err := c.read()
	require.NoError(t, err, "the earlier publish is acknowledged before the disconnect")
	require.Equal(t, packets.Puback, pk.FixedHeader.Type)
	require.Equal(t, uint16(1), pk.PacketID)
	_, err = c.read()
	require.Error(t, err, "then the client is disconnected")
	select {
	case p := <-got:
		assert.Equal(t, "offline", string(p.Payload))
	case <-time.After(waitFor):
		t.Fatal("the will was not sent")
	}
}

// A publisher that does not read its socket blocks only its own acks: the
// bytes of its committed publishes leave the pending budget at the commit,
// so other clients' publishes are not refused for want of room.
func TestIngestNonReadingPublisherHoldsNoBudget(t *testing.T) {
	r := startRig(t, func(rc *rigConfig) {
		rc.mqtt.Ingest.MaxPendingBytes = 2 << 20
		rc.mqtt.Ingest.PublishTimeout = 2 * time.Second
	})
	r.createStream(t, "devs")
	hog := dialRaw(t, r.addr, "hog", 5, true)
	hog.send(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Subscribe}, PacketID: 1,
		Filters: packets.Subscriptions{{Filter: "dev/hog", Qos: 0}}})
	hog.expect(packets.Suback)
	big := strings.Repeat("h", 256<<10)
	for k := range 60 { // never reads again: its own deliveries and acks fill its socket
		hog.publish(uint16(k+2), 1, false, "dev/hog", big)
	}
	other := dialRaw(t, r.addr, "other", 5, true)
	other.publish(1, 1, false, "dev/other", strings.Repeat("o", 300<<10))
	ack := other.recv()
	require.Equal(t, packets.Puback, ack.FixedHeader.Type)
	require.Equal(t, byte(0), ack.ReasonCode, "refused: the non-reading publisher holds the budget")
}
