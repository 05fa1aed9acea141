package bridge_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/weir-log/weir/api/hstreampb"
	"github.com/weir-log/weir/conf"
	"github.com/weir-log/weir/internal/nodetest"
)

const groupTick = 20 * time.Millisecond

// Two members of one group split the stream's records: each gets some,
// none twice, and together all of them, at QoS 1; their PUBACKs ack them.
func TestSharedSplitsGroup(t *testing.T) {
	n := nodetest.Start(t)
	shards := createGroupStream(t, n.API, "sensors", 4)
	b := startGroupBroker(t, n, nil, conf.MQTTShared{})
	a := connectMember3(t, b.addr, "a", true, false)
	c := connectMember5(t, b.addr, "c", false)
	require.Equal(t, byte(1), a.subscribe(t, "$share/g/sensors/#", 1))
	require.Equal(t, []byte{1}, c.subscribe(t, 2, "$share/g/sensors/#"), "QoS 2 is granted as 1")
	consumers, err := n.Server.Subscriptions().Consumers("g")
	require.NoError(t, err)
	require.Len(t, consumers, 2)

	recs, payloads := sensorRecords("p", 200)
	appendGroupRecords(t, n.API, "sensors", shards, recs...)
	require.Eventually(t, func() bool { return deliveredAll(payloads, a.in, c.in) }, groupWait, groupTick)

	ca, cc := a.in.counts(), c.in.counts()
	assert.NotEmpty(t, ca)
	assert.NotEmpty(t, cc)
	for _, p := range payloads {
		assert.Equal(t, 1, ca[p]+cc[p], "deliveries of %s", p)
	}
	for _, m := range append(a.in.all(), c.in.all()...) {
		assert.Equal(t, byte(1), m.qos)
		assert.Regexp(t, `^sensors/\d/temp$`, m.topic)
	}
	require.Eventually(t, func() bool { return n.Server.Subscriptions().Stats().AckedRecords >= 200 }, groupWait, groupTick)
}

// A member that leaves with records unacked (it never sends PUBACK) hands
// them to the other member.
func TestSharedRedeliversWhenMemberLeaves(t *testing.T) {
	n := nodetest.Start(t)
	shards := createGroupStream(t, n.API, "sensors", 1)
	b := startGroupBroker(t, n, nil, conf.MQTTShared{Offset: "earliest"})
	lazy := connectMember5(t, b.addr, "lazy", true)
	require.Equal(t, []byte{1}, lazy.subscribe(t, 1, "$share/g/sensors/#"))

	recs, payloads := sensorRecords("p", 20)
	appendGroupRecords(t, n.API, "sensors", shards, recs...)
	require.Eventually(t, func() bool { return deliveredAll(payloads, lazy.in) }, groupWait, groupTick)

	// The one shard stays with lazy while it is a member.
	busy := connectMember3(t, b.addr, "busy", true, false)
	require.Equal(t, byte(1), busy.subscribe(t, "$share/g/sensors/#", 1))
	require.Zero(t, n.Server.Subscriptions().Stats().AckedRecords)
	require.Empty(t, busy.in.all())

	lazy.close(t)
	require.Eventually(t, func() bool { return deliveredAll(payloads, busy.in) }, groupWait, groupTick)
	require.Eventually(t, func() bool { return n.Server.Subscriptions().Stats().AckedRecords >= 20 }, groupWait, groupTick)
}

// A member that unsubscribes leaves: what it held unacked goes to the
// other member.
func TestSharedRedeliversWhenMemberUnsubscribes(t *testing.T) {
	n := nodetest.Start(t)
	shards := createGroupStream(t, n.API, "sensors", 1)
	b := startGroupBroker(t, n, nil, conf.MQTTShared{})
	lazy := connectMember3(t, b.addr, "lazy", true, true)
	require.Equal(t, byte(1), lazy.subscribe(t, "$share/g/sensors/#", 1))
	// Move the client's packet IDs past those of the deliveries to come
	// (mochi refuses an UNSUBSCRIBE whose ID is in flight the other way).
	for i := range 10 {
		tok := lazy.Publish("elsewhere", 1, false, fmt.Sprint(i))
		require.True(t, tok.WaitTimeout(groupWait))
		require.NoError(t, tok.Error())
	}
	recs, payloads := sensorRecords("p", 5)
	appendGroupRecords(t, n.API, "sensors", shards, recs...)
	require.Eventually(t, func() bool { return deliveredAll(payloads, lazy.in) }, groupWait, groupTick)

	busy := connectMember3(t, b.addr, "busy", true, false)
	require.Equal(t, byte(1), busy.subscribe(t, "$share/g/sensors/#", 1))
	tok := lazy.Unsubscribe("$share/g/sensors/#")
	require.True(t, tok.WaitTimeout(groupWait))
	require.NoError(t, tok.Error())
	require.Eventually(t, func() bool { return deliveredAll(payloads, busy.in) }, groupWait, groupTick)
	consumers, err := n.Server.Subscriptions().Consumers("g")
	require.NoError(t, err)
	require.Len(t, consumers, 1)
	require.Equal(t, "busy", consumers[0].Name)
}

// A record whose PUBACK does not come within the ack timeout is sent again.
func TestSharedRedeliversOnAckTimeout(t *testing.T) {
	n := nodetest.Start(t)
	shards := createGroupStream(t, n.API, "sensors", 1)
	b := startGroupBroker(t, n, nil, conf.MQTTShared{AckTimeout: time.Second})
	lazy := connectMember3(t, b.addr, "lazy", true, true)
	require.Equal(t, byte(1), lazy.subscribe(t, "$share/g/sensors/#", 1))

	recs, payloads := sensorRecords("p", 3)
	appendGroupRecords(t, n.API, "sensors", shards, recs...)
	require.Eventually(t, func() bool {
		c := lazy.in.counts()
		for _, p := range payloads {
			if c[p] < 2 {
				return false
			}
		}
		return true
	}, groupWait, groupTick)
	require.Positive(t, n.Server.Subscriptions().Stats().RedeliveredRecords)
}

// A member's own QoS 1 publishes reuse the packet IDs of deliveries in
// flight to it (each side numbers its own): they ack nothing, and the
// deliveries' PUBACKs still do.
func TestSharedPacketIDsOfPublishesAckNothing(t *testing.T) {
	n := nodetest.Start(t)
	shards := createGroupStream(t, n.API, "sensors", 1)
	b := startGroupBroker(t, n, nil, conf.MQTTShared{})
	dev := connectMember3(t, b.addr, "dev", true, true)
	require.Equal(t, byte(1), dev.subscribe(t, "$share/g/sensors/#", 1))
	recs, payloads := sensorRecords("p", 10)
	appendGroupRecords(t, n.API, "sensors", shards, recs...)
	require.Eventually(t, func() bool { return deliveredAll(payloads, dev.in) }, groupWait, groupTick)

	for i := range 10 {
		tok := dev.Publish("elsewhere", 1, false, fmt.Sprint(i)) // packet IDs 2..11
		require.True(t, tok.WaitTimeout(groupWait))
		require.NoError(t, tok.Error())
	}
	require.Zero(t, n.Server.Subscriptions().Stats().AckedRecords)

	dev.in.ackAll()
	require.Eventually(t, func() bool { return n.Server.Subscriptions().Stats().AckedRecords == 10 }, groupWait, groupTick)
}

// A new connection with a member's client ID takes its place: the old
// connection's unacked records go to the new one once it subscribes.
func TestSharedSessionTakeover(t *testing.T) {
	n := nodetest.Start(t)
	shards := createGroupStream(t, n.API, "sensors", 1)
	b := startGroupBroker(t, n, nil, conf.MQTTShared{})
	old := connectMember5(t, b.addr, "dev", true)
	require.Equal(t, []byte{1}, old.subscribe(t, 1, "$share/g/sensors/#"))
	recs, payloads := sensorRecords("p", 5)
	appendGroupRecords(t, n.API, "sensors", shards, recs...)
	require.Eventually(t, func() bool { return deliveredAll(payloads, old.in) }, groupWait, groupTick)

	renewed := connectMember3(t, b.addr, "dev", true, false)
	require.Equal(t, byte(1), renewed.subscribe(t, "$share/g/sensors/#", 1))
	require.Eventually(t, func() bool { return deliveredAll(payloads, renewed.in) }, groupWait, groupTick)
	consumers, err := n.Server.Subscriptions().Consumers("g")
	require.NoError(t, err)
	require.Len(t, consumers, 1)
	require.Equal(t, "dev", consumers[0].Name)
}

// Taking over a persistent session does not make mochi resend the old
// connection's group deliveries: the group delivers them again, once.
func TestSharedPersistentTakeoverDoesNotResend(t *testing.T) {
	n := nodetest.Start(t)
	shards := createGroupStream(t, n.API, "sensors", 1)
	b := startGroupBroker(t, n, nil, conf.MQTTShared{})
	old := connectMember3(t, b.addr, "dev", false, true)
	require.Equal(t, byte(1), old.subscribe(t, "$share/g/sensors/#", 1))
	recs, payloads := sensorRecords("p", 5)
	appendGroupRecords(t, n.API, "sensors", shards, recs...)
	require.Eventually(t, func() bool { return deliveredAll(payloads, old.in) }, groupWait, groupTick)

	renewed := connectMember3(t, b.addr, "dev", false, false) // resumes the session: no SUBSCRIBE
	require.Eventually(t, func() bool { return deliveredAll(payloads, renewed.in) }, groupWait, groupTick)
	require.Eventually(t, func() bool { return n.Server.Subscriptions().Stats().AckedRecords >= 5 }, groupWait, groupTick)
	for _, p := range payloads {
		assert.Equal(t, 1, renewed.in.counts()[p], p)
	}
}

// A client with a persistent session leaves its groups when it
// disconnects, and joins them again when it resumes the session, without
// subscribing again.
func TestSharedPersistentSessionRejoins(t *testing.T) {
	n := nodetest.Start(t)
	shards := createGroupStream(t, n.API, "sensors", 1)
	b := startGroupBroker(t, n, nil, conf.MQTTShared{})
	dev := connectMember3(t, b.addr, "dev", false, false)
	require.Equal(t, byte(1), dev.subscribe(t, "$share/g/sensors/#", 1))
	dev.Disconnect(0)
	require.Eventually(t, func() bool {
		cs, err := n.Server.Subscriptions().Consumers("g")
		return err == nil && len(cs) == 0
	}, groupWait, groupTick)

	recs, payloads := sensorRecords("p", 5)
	appendGroupRecords(t, n.API, "sensors", shards, recs...)
	back := connectMember3(t, b.addr, "dev", false, false)
	require.Eventually(t, func() bool { return deliveredAll(payloads, back.in) }, groupWait, groupTick)
}

// After a restart, members that subscribe again continue where the group
// stopped: what was acked is not delivered again, and what was appended
// meanwhile is.
func TestSharedResumesAfterRestart(t *testing.T) {
	n := nodetest.Start(t)
	shards := createGroupStream(t, n.API, "sensors", 2)
	b := startGroupBroker(t, n, nil, conf.MQTTShared{})
	a := connectMember3(t, b.addr, "a", true, false)
	c := connectMember3(t, b.addr, "c", true, false)
	require.Equal(t, byte(1), a.subscribe(t, "$share/g/sensors/#", 1))
	require.Equal(t, byte(1), c.subscribe(t, "$share/g/sensors/#", 1))

	before, beforePayloads := sensorRecords("before", 50)
	appendGroupRecords(t, n.API, "sensors", shards, before...)
	require.Eventually(t, func() bool { return deliveredAll(beforePayloads, a.in, c.in) }, groupWait, groupTick)
	require.Eventually(t, func() bool { return n.Server.Subscriptions().Stats().AckedRecords >= 50 }, groupWait, groupTick)

	a.Disconnect(0)
	c.Disconnect(0)
	b.close()
	n.Restart(t)

	after, afterPayloads := sensorRecords("after", 50)
	appendGroupRecords(t, n.API, "sensors", shards, after...) // before the members are back
	b = startGroupBroker(t, n, nil, conf.MQTTShared{})
	a = connectMember3(t, b.addr, "a", true, false)
	c = connectMember3(t, b.addr, "c", true, false)
	require.Equal(t, byte(1), a.subscribe(t, "$share/g/sensors/#", 1))
	require.Equal(t, byte(1), c.subscribe(t, "$share/g/sensors/#", 1))
	require.Eventually(t, func() bool { return deliveredAll(afterPayloads, a.in, c.in) }, groupWait, groupTick)

	// The acks were applied, and the checkpoint saved when the node
	// stopped: nothing from before comes again.
	for _, m := range append(a.in.all(), c.in.all()...) {
		assert.NotContains(t, beforePayloads, m.payload)
	}
}

// Records appended over gRPC without the mqtt.topic attribute are
// delivered on the stream's name; records no filter of the member matches
// are acked without being delivered.
func TestSharedTopicsAndFilters(t *testing.T) {
	n := nodetest.Start(t)
	shards := createGroupStream(t, n.API, "sensors", 1)
	b := startGroupBroker(t, n, nil, conf.MQTTShared{})
	all := connectMember3(t, b.addr, "all", true, false)
	temps := connectMember5(t, b.addr, "temps", false)
	require.Equal(t, byte(1), all.subscribe(t, "$share/everything/sensors/#", 1))
	require.Equal(t, []byte{0}, temps.subscribe(t, 0, "$share/temps/sensors/+/temp"))

	appendGroupRecords(t, n.API, "sensors", shards,
		groupRecord("k1", "", "plain"),
		groupRecord("k2", "sensors/1/temp", "temp"),
		groupRecord("k3", "sensors/1/hum", "hum"),
		groupRecord("k4", "other/x", "other"),
	)
	require.Eventually(t, func() bool { return deliveredAll([]string{"plain", "temp", "hum"}, all.in) }, groupWait, groupTick)
	require.Eventually(t, func() bool { return deliveredAll([]string{"temp"}, temps.in) }, groupWait, groupTick)
	// Each group acks all four: delivered, or not its filter's.
	require.Eventually(t, func() bool { return n.Server.Subscriptions().Stats().AckedRecords >= 8 }, groupWait, groupTick)

	got := map[string]string{}
	for _, m := range all.in.all() {
		got[m.payload] = m.topic
	}
	assert.Equal(t, map[string]string{"plain": "sensors", "temp": "sensors/1/temp", "hum": "sensors/1/hum"}, got)
	require.Len(t, temps.in.all(), 1)
	assert.Equal(t, delivery{topic: "sensors/1/temp", payload: "temp", qos: 0}, temps.in.all()[0])
}

// A live publish (not stored) reaches plain subscribers but not group
// members: mochi's own shared subscriptions deliver nothing.
func TestSharedNoLiveDeliveries(t *testing.T) {
	n := nodetest.Start(t)
	shards := createGroupStream(t, n.API, "sensors", 1)
	b := startGroupBroker(t, n, nil, conf.MQTTShared{})
	member := connectMember3(t, b.addr, "member", true, false)
	plain := connectMember3(t, b.addr, "plain", true, false)
	require.Equal(t, byte(1), member.subscribe(t, "$share/g/sensors/#", 1))
	require.Equal(t, byte(1), plain.subscribe(t, "sensors/#", 1))

	require.NoError(t, b.srv.Publish("sensors/live", []byte("live"), false, 1))
	require.Eventually(t, func() bool { return deliveredAll([]string{"live"}, plain.in) }, groupWait, groupTick)
	appendGroupRecords(t, n.API, "sensors", shards, groupRecord("k", "sensors/logged", "logged"))
	require.Eventually(t, func() bool { return deliveredAll([]string{"logged"}, member.in) }, groupWait, groupTick)
	assert.Equal(t, map[string]int{"logged": 1}, member.in.counts())
	assert.Equal(t, map[string]int{"live": 1}, plain.in.counts())
}

// SUBACK failures: an invalid group name, a filter routing to no stream or
// to several, and a group whose subscription is on another stream. The
// failed filters leave no subscription behind.
func TestSharedSubackFailures(t *testing.T) {
	n := nodetest.Start(t)
	createGroupStream(t, n.API, "sensors", 1)
	createGroupStream(t, n.API, "other", 1)
	_, err := n.API.CreateSubscription(groupCtx(t), &hstreampb.Subscription{
		SubscriptionId: "taken", StreamName: "other", AckTimeoutSeconds: 30, MaxUnackedRecords: 100,
	})
	require.NoError(t, err)
	routes := []conf.Route{
		{Filter: "sensors/#", Stream: "sensors"},
		{Filter: "other/#", Stream: "other"},
		{Filter: "split/a/#", Stream: "sensors"},
		{Filter: "split/#", Stream: "other"},
		{Filter: "byclient/#", Stream: "${clientid}"},
	}
	b := startGroupBroker(t, n, routes, conf.MQTTShared{})
	bad, failed := packets.ErrTopicFilterInvalid.Code, packets.ErrImplementationSpecificError.Code

	v5 := connectMember5(t, b.addr, "v5", false)
	for _, tc := range []struct {
		filter string
		want   byte
	}{
		{"$share/1bad/sensors/#", bad},     // group name must start with a letter
		{"$share/g.x/sensors/#", bad},      // '.' is not allowed
		{"$share/g/nowhere/#", bad},        // no route
		{"$share/g/split/#", bad},          // two streams
		{"$share/g/byclient/x", bad},       // a stream per publisher
		{"$share/taken/sensors/#", failed}, // the group reads "other"
		{"$share/g/sensors/#", 1},          // a good one still works
		{"$share/taken/other/#", 1},        // the group on its own stream
		{"$share/splits/split/a/b", 1},     // split/a/# covers it
	} {
		assert.Equal(t, []byte{tc.want}, v5.subscribe(t, 1, tc.filter), tc.filter)
	}
	// Several filters in one SUBSCRIBE keep their positions; a group's
	// members subscribe with one filter.
	assert.Equal(t, []byte{failed, bad, 1}, v5.subscribe(t, 1, "$share/g/sensors/+", "$share/1bad/sensors/#", "sensors/plain"))

	v3 := connectMember3(t, b.addr, "v3", true, false)
	assert.Equal(t, packets.ErrUnspecifiedError.Code, v3.subscribe(t, "$share/1bad/sensors/#", 1))
	assert.Equal(t, packets.ErrUnspecifiedError.Code, v3.subscribe(t, "$share/taken/sensors/#", 1))
	assert.Equal(t, byte(1), v3.subscribe(t, "$share/g/sensors/#", 1))

	cl, ok := b.srv.Clients.Get("v5")
	require.True(t, ok)
	var filters []string
	for f := range cl.State.Subscriptions.GetAll() {
		filters = append(filters, f)
	}
	assert.ElementsMatch(t, []string{
		"$share/g/sensors/#", "$share/taken/other/#", "$share/splits/split/a/b", "sensors/plain",
	}, filters)
	consumers, err := n.Server.Subscriptions().Consumers("g")
	require.NoError(t, err)
	require.Len(t, consumers, 2, fmt.Sprint(consumers))
}
