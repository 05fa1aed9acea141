package bridge_test

import (
	"fmt"
	"testing"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
	"github.com/stretchr/testify/require"

	"github.com/weir-log/weir/conf"
	"github.com/weir-log/weir/internal/nodetest"
)

// A group's members on a node subscribe with one filter, the first
// member's: a record goes to the member holding its shard, which would ack
// it unseen if it did not match that member's filter. Once the last
// member has left, the group takes any filter.
func TestSharedGroupHasOneFilter(t *testing.T) {
	n := nodetest.Start(t)
	shards := createGroupStream(t, n.API, "sensors", 1)
	b := startGroupBroker(t, n, nil, conf.MQTTShared{Offset: "earliest"})
	other := connectMember5(t, b.addr, "other", false)
	require.Equal(t, []byte{1}, other.subscribe(t, 1, "$share/g/sensors/1/#"))
	mine := connectMember5(t, b.addr, "mine", false)
	require.Equal(t, []byte{packets.ErrImplementationSpecificError.Code}, mine.subscribe(t, 1, "$share/g/sensors/0/#"))
	v3 := connectMember3(t, b.addr, "v3", true, false)
	require.Equal(t, packets.ErrUnspecifiedError.Code, v3.subscribe(t, "$share/g/sensors/0/#", 1))
	require.Equal(t, byte(1), v3.subscribe(t, "$share/g/sensors/1/#", 1))
	// Both filters at once: one member, one filter.
	require.Equal(t, []byte{packets.ErrImplementationSpecificError.Code}, other.subscribe(t, 1, "$share/g/sensors/+/temp"))
	consumers, err := n.Server.Subscriptions().Consumers("g")
	require.NoError(t, err)
	require.Len(t, consumers, 2)

	other.close(t)
	v3.Disconnect(0)
	require.Eventually(t, func() bool {
		cs, err := n.Server.Subscriptions().Consumers("g")
		return err == nil && len(cs) == 0
	}, groupWait, groupTick)
	appendGroupRecords(t, n.API, "sensors", shards, groupRecord("k", "sensors/0/temp", "zero"))
	require.Equal(t, []byte{1}, mine.subscribe(t, 1, "$share/g/sensors/0/#"))
	require.Eventually(t, func() bool { return deliveredAll([]string{"zero"}, mine.in) }, groupWait, groupTick)
}

// A SUBSCRIBE that a connection taken over gets to process late (mochi
// read it before the takeover closed the socket) neither makes the dead
// connection a member nor ends the live connection's membership.
func TestSharedLateSubscribeOfTakenOverConnection(t *testing.T) {
	n := nodetest.Start(t)
	shards := createGroupStream(t, n.API, "sensors", 1)
	b := startGroupBroker(t, n, nil, conf.MQTTShared{})
	old := connectMember5(t, b.addr, "dev", false)
	require.Equal(t, []byte{1}, old.subscribe(t, 1, "$share/g/sensors/#"))
	oldCl, ok := b.srv.Clients.Get("dev")
	require.True(t, ok)
	renewed := connectMember3(t, b.addr, "dev", true, false)
	require.Equal(t, byte(1), renewed.subscribe(t, "$share/g/sensors/#", 1))
	require.True(t, oldCl.Closed())

	codes := []byte{1}
	b.shared.OnSubscribed(oldCl, packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Subscribe},
		Filters: packets.Subscriptions{{Filter: "$share/g/sensors/#", Qos: 1}}}, codes)
	require.Equal(t, packets.ErrUnspecifiedError.Code, codes[0])

	recs, payloads := sensorRecords("p", 5)
	appendGroupRecords(t, n.API, "sensors", shards, recs...)
	require.Eventually(t, func() bool { return deliveredAll(payloads, renewed.in) }, groupWait, groupTick)
	live, ok := b.srv.Clients.Get("dev")
	require.True(t, ok)
	_, ok = live.State.Subscriptions.Get("$share/g/sensors/#")
	require.True(t, ok, "the live connection's subscription was removed")
	require.Contains(t, b.srv.Topics.Subscribers("sensors/0/temp").Shared, "$share/g/sensors/#")
}

// Group deliveries take at most half of mochi's MaximumInflight on a
// connection: a 3.1.1 member holding them unacked still gets its plain
// QoS 1 messages (mochi drops those once Inflight is full).
func TestSharedLeavesInflightToMochi(t *testing.T) {
	n := nodetest.Start(t)
	shards := createGroupStream(t, n.API, "sensors", 1)
	b := startGroupBrokerCaps(t, n, nil, conf.MQTTShared{}, func(c *mqtt.Capabilities) { c.MaximumInflight = 8 })
	dev := connectMember3(t, b.addr, "dev", true, true)
	require.Equal(t, byte(1), dev.subscribe(t, "$share/g/sensors/#", 1))
	require.Equal(t, byte(1), dev.subscribe(t, "plain/#", 1))
	recs, _ := sensorRecords("p", 20)
	appendGroupRecords(t, n.API, "sensors", shards, recs...)
	require.Eventually(t, func() bool { return len(dev.in.all()) >= 4 }, groupWait, groupTick)
	time.Sleep(300 * time.Millisecond) // the window fills
	require.Len(t, dev.in.all(), 4)

	require.NoError(t, b.srv.Publish("plain/x", []byte("native"), false, 1))
	require.Eventually(t, func() bool { return deliveredAll([]string{"native"}, dev.in) }, groupWait, groupTick)
}

// An MQTT 5 member is never sent more unacknowledged QoS 1 PUBLISHes than
// its receive maximum, mochi's own deliveries included.
func TestSharedRespectsReceiveMaximum(t *testing.T) {
	n := nodetest.Start(t)
	shards := createGroupStream(t, n.API, "sensors", 1)
	b := startGroupBroker(t, n, nil, conf.MQTTShared{})
	dev := connectMember5RM(t, b.addr, "dev", 4)
	require.Equal(t, []byte{1, 1}, dev.subscribe(t, 1, "plain/#", "$share/g/sensors/#"))
	for i := range 3 {
		require.NoError(t, b.srv.Publish("plain/x", fmt.Appendf(nil, "native-%d", i), false, 1))
	}
	require.Eventually(t, func() bool { return len(dev.in.all()) == 3 }, groupWait, groupTick)

	recs, payloads := sensorRecords("p", 10)
	appendGroupRecords(t, n.API, "sensors", shards, recs...)
	require.Eventually(t, func() bool { return len(dev.in.all()) == 4 }, groupWait, groupTick)
	time.Sleep(500 * time.Millisecond)
	require.Len(t, dev.in.all(), 4, "more than the receive maximum unacknowledged")

	require.Eventually(t, func() bool {
		dev.in.ackAll()
		return deliveredAll(payloads, dev.in)
	}, groupWait, groupTick)
}

// mochi's own deliveries queued for want of send quota (not sent, so never
// acknowledged) do not count against the receive maximum: a member whose
// group filled the window while mochi queued native messages behind it
// goes on delivering once the client acks.
func TestSharedNotStalledByQueuedNativeDeliveries(t *testing.T) {
	n := nodetest.Start(t)
	shards := createGroupStream(t, n.API, "sensors", 1)
	b := startGroupBroker(t, n, nil, conf.MQTTShared{})
	dev := connectMember5RM(t, b.addr, "dev", 2)
	require.Equal(t, []byte{1, 1}, dev.subscribe(t, 1, "plain/#", "$share/g/sensors/#"))
	recs, payloads := sensorRecords("p", 10)
	appendGroupRecords(t, n.API, "sensors", shards, recs...)
	require.Eventually(t, func() bool { return len(dev.in.all()) == 2 }, groupWait, groupTick)
	for i := range 6 {
		require.NoError(t, b.srv.Publish("plain/x", fmt.Appendf(nil, "native-%d", i), false, 1))
	}
	require.Eventually(t, func() bool {
		dev.in.ackAll()
		return deliveredAll(payloads, dev.in)
	}, groupWait, groupTick, "the group's deliveries stalled behind mochi's queued ones")
}

// A delivery's packet ID that the client reused for a QoS 2 PUBLISH of its
// own belongs to mochi's PUBREC until the PUBREL: neither the delivery's
// PUBACK nor the member leaving takes it out of Inflight.
func TestSharedPacketIDReusedByQoS2Publish(t *testing.T) {
	n := nodetest.Start(t)
	shards := createGroupStream(t, n.API, "sensors", 1)
	b := startGroupBroker(t, n, nil, conf.MQTTShared{})
	raw := dialRaw(t, b.addr, "raw", 4, true)
	raw.send(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Subscribe}, PacketID: 1000,
		Filters: packets.Subscriptions{{Filter: "$share/g/sensors/#", Qos: 1}}})
	raw.expect(packets.Suback)
	cl, ok := b.srv.Clients.Get("raw")
	require.True(t, ok)
	heldPubrec := func(pid uint16) bool {
		e, ok := cl.State.Inflight.Get(pid)
		return ok && e.FixedHeader.Type == packets.Pubrec
	}

	// The PUBACK of the delivery.
	appendGroupRecords(t, n.API, "sensors", shards, groupRecord("k", "sensors/a", "one"))
	pid := raw.expect(packets.Publish).PacketID
	raw.send(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: 2}, PacketID: pid, TopicName: "x", Payload: []byte("y")})
	require.Equal(t, pid, raw.expect(packets.Pubrec).PacketID)
	raw.send(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Puback}, PacketID: pid})
	require.Empty(t, raw.ping())
	require.True(t, heldPubrec(pid), "the PUBACK of the delivery deleted mochi's PUBREC")
	require.Eventually(t, func() bool { return n.Server.Subscriptions().Stats().AckedRecords == 1 }, groupWait, groupTick)
	raw.send(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Pubrel}, PacketID: pid})
	raw.expect(packets.Pubcomp)

	// The member leaving with the delivery unacked.
	appendGroupRecords(t, n.API, "sensors", shards, groupRecord("k", "sensors/a", "two"))
	pid = raw.expect(packets.Publish).PacketID
	raw.send(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: 2}, PacketID: pid, TopicName: "x", Payload: []byte("y")})
	raw.expect(packets.Pubrec)
	raw.send(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Unsubscribe}, PacketID: 1001,
		Filters: packets.Subscriptions{{Filter: "$share/g/sensors/#"}}})
	raw.expect(packets.Unsuback)
	require.Eventually(t, func() bool {
		cs, err := n.Server.Subscriptions().Consumers("g")
		return err == nil && len(cs) == 0
	}, groupWait, groupTick)
	require.True(t, heldPubrec(pid), "leaving the group deleted mochi's PUBREC")
}
