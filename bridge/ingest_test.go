package bridge_test

import (
	"context"
	"fmt"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	"github.com/mochi-mqtt/server/v2/packets"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/proto"

	"github.com/weir-log/weir/api/hstreampb"
	"github.com/weir-log/weir/api/wire"
	"github.com/weir-log/weir/bridge"
)

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	t.Cleanup(cancel)
	return ctx
}

// byPayload indexes records by payload.
func byPayload(recs []*hstreampb.HStreamRecord) map[string]*hstreampb.HStreamRecord {
	m := map[string]*hstreampb.HStreamRecord{}
	for _, r := range recs {
		m[string(r.Payload)] = r
	}
	return m
}

// QoS 0, 1 and 2 from MQTT 5 and 3.1.1 land in the routed stream, keyed by
// client ID, with the MQTT attributes; QoS 1 and 2 are readable as soon as
// they are acknowledged.
func TestIngestStoresAllQoS(t *testing.T) {
	r := startRig(t)
	ctx := ctxT(t)

	c5 := client5(t, r.addr, "dev5", nil)
	for qos := byte(0); qos <= 2; qos++ {
		pf := byte(1)
		_, err := c5.Publish(ctx, &paho.Publish{
			QoS: qos, Topic: "dev/dev5/temp", Payload: []byte("v5-qos" + strconv.Itoa(int(qos))),
			Properties: &paho.PublishProperties{
				ContentType: "text/plain", ResponseTopic: "reply/dev5", CorrelationData: []byte{1, 2},
				PayloadFormat: &pf, User: paho.UserProperties{{Key: "unit", Value: "C"}, {Key: "unit", Value: "K"}},
			},
		})
		require.NoError(t, err)
		if qos > 0 {
			// Acknowledged means committed: it is in the store now.
			assert.Contains(t, byPayload(r.records(t, "devs")), "v5-qos"+strconv.Itoa(int(qos)))
		}
	}
	c3, _ := client3(t, r.addr, "dev3")
	for qos := byte(0); qos <= 2; qos++ {
		waitToken(t, c3.Publish("dev/dev3/hum", qos, qos == 1, "v3-qos"+strconv.Itoa(int(qos))))
		if qos > 0 {
			assert.Contains(t, byPayload(r.records(t, "devs")), "v3-qos"+strconv.Itoa(int(qos)))
		}
	}

	var recs map[string]*hstreampb.HStreamRecord
	require.Eventually(t, func() bool { // QoS 0 is not waited for
		recs = byPayload(r.records(t, "devs"))
		return len(recs) == 6
	}, waitFor, 10*time.Millisecond)
	for qos := 0; qos <= 2; qos++ {
		q := strconv.Itoa(qos)
		rec := recs["v5-qos"+q]
		require.NotNil(t, rec)
		assert.Equal(t, hstreampb.HStreamRecordHeader_RAW, rec.Header.Flag)
		assert.Equal(t, "dev5", rec.Header.Key)
		a := rec.Header.Attributes
		assert.Equal(t, "dev/dev5/temp", a[bridge.AttrTopic])
		assert.Equal(t, q, a[bridge.AttrQoS])
		assert.Equal(t, "dev5", a[bridge.AttrClientID])
		assert.Equal(t, "text/plain", a[bridge.AttrContentType])
		assert.Equal(t, "reply/dev5", a[bridge.AttrResponseTopic])
		assert.Equal(t, "AQI=", a[bridge.AttrCorrelationData])
		assert.Equal(t, "1", a[bridge.AttrPayloadFormat])
		assert.Equal(t, `[["unit","C"],["unit","K"]]`, a[bridge.AttrUserProperties])

		rec = recs["v3-qos"+q]
		require.NotNil(t, rec)
		assert.Equal(t, "dev3", rec.Header.Key)
		assert.Equal(t, "dev/dev3/hum", rec.Header.Attributes[bridge.AttrTopic])
		assert.Equal(t, q, rec.Header.Attributes[bridge.AttrQoS])
		if qos == 1 {
			assert.Equal(t, "true", rec.Header.Attributes[bridge.AttrRetain])
		}
	}
}

// Many clients publishing concurrently, each with many QoS 1 publishes in
// flight: every publish is stored once, and each client's records are in
// publish order (its key maps to one shard).
func TestIngestPerClientOrder(t *testing.T) {
	r := startRig(t)
	const clients, perClient, window = 8, 300, 50
	var wg sync.WaitGroup
	for c := range clients {
		id := fmt.Sprintf("order%d", c)
		cl, _ := client3(t, r.addr, id)
		wg.Add(1)
		go func() {
			defer wg.Done()
			sem := make(chan struct{}, window)
			var inner sync.WaitGroup
			for k := range perClient {
				sem <- struct{}{}
				tok := cl.Publish("dev/"+id, 1, false, fmt.Sprintf("%s/%d", id, k))
				inner.Add(1)
				go func() {
					defer inner.Done()
					defer func() { <-sem }()
					if !tok.WaitTimeout(waitFor) || tok.Error() != nil {
						t.Errorf("publish %s/%d: %v", id, k, tok.Error())
					}
				}()
			}
			inner.Wait()
		}()
	}
	wg.Wait()
	recs := r.records(t, "devs")
	require.Len(t, recs, clients*perClient)
	next := map[string]int{}
	for _, rec := range recs {
		id := rec.Header.Key
		require.Equal(t, fmt.Sprintf("%s/%d", id, next[id]), string(rec.Payload), "client %s out of order", id)
		next[id]++
	}
}

// A client's acks come back in publish order even when its publishes go
// to different shards (keyed by topic) and commit in any order.
func TestIngestAckOrderAcrossShards(t *testing.T) {
	r := startRig(t)
	c := dialRaw(t, r.addr, "acker", 5, true)
	const n = 200
	for k := range n {
		c.publish(uint16(k+1), 1, false, fmt.Sprintf("keyed/t%d", k), "x")
	}
	for k := range n {
		pk := c.recv()
		require.Equal(t, packets.Puback, pk.FixedHeader.Type)
		require.Equal(t, uint16(k+1), pk.PacketID, "ack %d out of order", k)
		require.Equal(t, byte(0), pk.ReasonCode)
	}
	// The records went to the shard the key maps to, by the same mapping
	// gRPC clients use (ListShards + HashKey ranges).
	resp, err := r.n.API.ListShards(ctxT(t), &hstreampb.ListShardsRequest{StreamName: "keyed"})
	require.NoError(t, err)
	require.Len(t, resp.Shards, 4)
	sm, err := wire.NewShardMap(resp.Shards)
	require.NoError(t, err)
	node := r.n.Server.Node()
	seen := 0
	for _, s := range resp.Shards {
		sh, err := node.Shard(s.ShardId)
		require.NoError(t, err)
		ents, err := sh.Read(0, 1000, 64<<20)
		require.NoError(t, err)
		for _, e := range ents {
			recs := decodeEntry(t, e.Batch)
			for _, rec := range recs {
				assert.Equal(t, s.ShardId, sm.Lookup(rec.Header.Key), "key %q", rec.Header.Key)
				assert.Equal(t, rec.Header.Attributes[bridge.AttrTopic], rec.Header.Key)
				seen++
			}
		}
	}
	assert.Equal(t, n, seen)
}

// A QoS 2 PUBLISH retransmitted before PUBREL is stored once: a duplicate
// while the first is committing is dropped, one after the commit is
// answered PUBREC success (not mochi's 0x91), PUBREL gets PUBCOMP, and the
// packet ID is free for a new message afterwards.
func TestIngestQoS2StoredOnce(t *testing.T) {
	for _, version := range []byte{4, 5} {
		t.Run(fmt.Sprintf("v%d", version), func(t *testing.T) {
			g := newGate()
			r := startRig(t, func(rc *rigConfig) { rc.gate = g })
			c := dialRaw(t, r.addr, "q2", version, true)

			g.hold()
			c.publish(7, 2, false, "dev/q2", "once")
			c.publish(7, 2, true, "dev/q2", "once")
			require.Empty(t, c.ping(), "nothing is acknowledged before the commit")
			g.open()
			pk := c.recv()
			require.Equal(t, packets.Pubrec, pk.FixedHeader.Type)
			require.Equal(t, uint16(7), pk.PacketID)
			require.Equal(t, byte(0), pk.ReasonCode)
			require.Empty(t, c.ping(), "the duplicate got no PUBREC of its own")

			// Retransmitted after the commit: PUBREC success again.
			c.publish(7, 2, true, "dev/q2", "once")
			pk = c.recv()
			require.Equal(t, packets.Pubrec, pk.FixedHeader.Type)
			require.Equal(t, uint16(7), pk.PacketID)
			require.Equal(t, byte(0), pk.ReasonCode, "not 0x91 packet identifier in use")
			require.Empty(t, c.ping())

			c.pubrel(7)
			pk = c.recv()
			require.Equal(t, packets.Pubcomp, pk.FixedHeader.Type)
			require.Equal(t, uint16(7), pk.PacketID)
			require.Equal(t, byte(0), pk.ReasonCode)

			recs := r.records(t, "devs")
			require.Len(t, recs, 1)
			assert.Equal(t, "once", string(recs[0].Payload))
			assert.Equal(t, "2", recs[0].Header.Attributes[bridge.AttrQoS])

			// The exchange is over: packet ID 7 now carries a new message.
			c.publish(7, 2, false, "dev/q2", "twice")
			pk = c.recv()
			require.Equal(t, packets.Pubrec, pk.FixedHeader.Type)
			c.pubrel(7)
			require.Equal(t, packets.Pubcomp, c.recv().FixedHeader.Type)
			require.Len(t, r.records(t, "devs"), 2)
		})
	}
}

// A client that reconnects to its session while a QoS 1 publish commits
// gets the PUBACK on the new connection; the retransmit is not stored
// again.
func TestIngestAckAfterReconnect(t *testing.T) {
	g := newGate()
	r := startRig(t, func(rc *rigConfig) { rc.gate = g })
	c := dialRaw(t, r.addr, "roamer", 5, false)
	g.hold()
	c.publish(3, 1, false, "dev/roamer", "held")
	require.Empty(t, c.ping())
	c.conn.Close()

	c2 := dialRaw(t, r.addr, "roamer", 5, false)
	c2.publish(3, 1, true, "dev/roamer", "held")
	require.Empty(t, c2.ping(), "the retransmit is dropped while the original commits")
	g.open()
	pk := c2.recv()
	require.Equal(t, packets.Puback, pk.FixedHeader.Type)
	require.Equal(t, uint16(3), pk.PacketID)
	require.Equal(t, byte(0), pk.ReasonCode)
	require.Len(t, r.records(t, "devs"), 1)
}

// Live subscribers get QoS 1 publishes after the commit, with their
// properties; a QoS 1 publish no route matches (unmatched: live) is
// delivered and not stored; retained messages are kept.
func TestIngestLiveAndRetained(t *testing.T) {
	r := startRig(t)
	ctx := ctxT(t)
	got := make(chan *paho.Publish, 10)
	sub := client5(t, r.addr, "watcher", func(p *paho.Publish) { got <- p })
	_, err := sub.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{
		{Topic: "dev/#", QoS: 1}, {Topic: "loose/#", QoS: 1},
	}})
	require.NoError(t, err)
	next := func() *paho.Publish {
		select {
		case p := <-got:
			return p
		case <-time.After(waitFor):
			t.Fatal("the live subscriber got nothing")
			return nil
		}
	}

	pub := client5(t, r.addr, "talker", nil)
	_, err = pub.Publish(ctx, &paho.Publish{
		QoS: 1, Topic: "dev/talker/state", Payload: []byte("on"), Retain: true,
		Properties: &paho.PublishProperties{ContentType: "text/plain", User: paho.UserProperties{{Key: "k", Value: "v"}}},
	})
	require.NoError(t, err)
	p := next()
	assert.Equal(t, "dev/talker/state", p.Topic)
	assert.Equal(t, "on", string(p.Payload))
	assert.Equal(t, byte(1), p.QoS)
	require.NotNil(t, p.Properties)
	assert.Equal(t, "text/plain", p.Properties.ContentType)
	assert.Equal(t, "v", p.Properties.User.Get("k"))

	_, err = pub.Publish(ctx, &paho.Publish{QoS: 2, Topic: "loose/x", Payload: []byte("loose")})
	require.NoError(t, err)
	p = next()
	assert.Equal(t, "loose/x", p.Topic)
	assert.Equal(t, "loose", string(p.Payload))

	// A later subscriber gets the retained message.
	late := make(chan *paho.Publish, 10)
	sub2 := client5(t, r.addr, "latecomer", func(p *paho.Publish) { late <- p })
	_, err = sub2.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: "dev/talker/state", QoS: 1}}})
	require.NoError(t, err)
	select {
	case p := <-late:
		assert.Equal(t, "on", string(p.Payload))
		assert.True(t, p.Retain)
	case <-time.After(waitFor):
		t.Fatal("no retained message")
	}
	require.Len(t, r.records(t, "devs"), 1)
	_, err = r.n.Server.Node().Stream("loose")
	require.Error(t, err, "unmatched publishes create no stream")
}

// Publishes that cannot be stored: MQTT 5 gets the reason code in PUBACK
// or PUBREC, 3.1.1 is disconnected.
func TestIngestFailures(t *testing.T) {
	r := startRig(t, func(rc *rigConfig) {
		rc.unmatched = "reject"
		rc.maxRecord = 1000
	})
	ctx := ctxT(t)
	c5 := client5(t, r.addr, "fail5", nil)
	for _, tc := range []struct {
		topic   string
		payload int
		code    byte
	}{
		{"elsewhere/x", 1, packets.ErrTopicNameInvalid.Code},             // unmatched under reject
		{"missing/x", 1, packets.ErrUnspecifiedError.Code},               // stream missing, create false
		{"dev/fail5", 1001, packets.ErrImplementationSpecificError.Code}, // over max-record-size: 0x95 is not a PUBACK code
	} {
		for qos := byte(1); qos <= 2; qos++ {
			resp, _ := c5.Publish(ctx, &paho.Publish{QoS: qos, Topic: tc.topic, Payload: make([]byte, tc.payload)})
			require.NotNil(t, resp, "%s QoS %d", tc.topic, qos)
			assert.Equal(t, tc.code, resp.ReasonCode, "%s QoS %d", tc.topic, qos)
			if tc.payload > 1000 {
				require.NotNil(t, resp.Properties)
				assert.Contains(t, resp.Properties.ReasonString, "store.max-record-size")
			}
		}
	}
	// The client is still connected and can publish.
	_, err := c5.Publish(ctx, &paho.Publish{QoS: 1, Topic: "dev/fail5", Payload: []byte("ok")})
	require.NoError(t, err)
	_, err = r.n.Server.Node().Stream("nostream")
	require.Error(t, err, "a route without create does not create the stream")

	for _, topic := range []string{"elsewhere/x", "missing/x"} {
		c3, lost := client3(t, r.addr, "fail3")
		c3.Publish(topic, 1, false, "x")
		select {
		case <-lost:
		case <-time.After(waitFor):
			t.Fatalf("3.1.1 client publishing to %s was not disconnected", topic)
		}
	}
	// QoS 0 that cannot be stored is dropped; the client stays.
	c3, lost := client3(t, r.addr, "fail3q0")
	waitToken(t, c3.Publish("missing/x", 0, false, "x"))
	waitToken(t, c3.Publish("dev/fail3q0", 1, false, "after"))
	select {
	case <-lost:
		t.Fatal("QoS 0 failure disconnected the client")
	default:
	}
	require.Len(t, r.records(t, "devs"), 2)
}

// With a store that does not keep up, publishers wait once
// max-pending-bytes are pending (memory stays bounded): a slow store slows
// them and every publish is stored; a stalled one makes MQTT 5 publishers
// get quota exceeded after publish-timeout and 3.1.1 publishers be
// disconnected, and nothing refused is stored.
func TestIngestBackpressure(t *testing.T) {
	const payload, maxPending = 1000, 4096
	const timeout = 300 * time.Millisecond
	pending := func(r *rig) int64 { now, _ := bridge.PendingBytes(r.ing); return now }

	t.Run("slow", func(t *testing.T) {
		g := newGate()
		g.delay = 5 * time.Millisecond // per batch
		r := startRig(t, func(rc *rigConfig) {
			rc.gate = g
			rc.mqtt.Ingest.MaxPendingBytes = maxPending
		})
		const clients, perClient = 4, 40
		var wg sync.WaitGroup
		for c := range clients {
			cl, _ := client3(t, r.addr, fmt.Sprintf("slow%d", c))
			wg.Add(1)
			go func() {
				defer wg.Done()
				toks := make([]paho3Token, perClient)
				for k := range toks {
					toks[k] = cl.Publish("dev/slow", 1, false, make([]byte, payload))
				}
				for _, tok := range toks {
					if !tok.WaitTimeout(waitFor) || tok.Error() != nil {
						t.Errorf("publish: %v", tok.Error())
					}
				}
			}()
		}
		wg.Wait()
		require.Len(t, r.records(t, "devs"), clients*perClient)
		_, peak := bridge.PendingBytes(r.ing)
		assert.LessOrEqual(t, peak, int64(maxPending), "pending bytes stayed within max-pending-bytes")
		assert.Greater(t, peak, int64(maxPending/2), "the bound was reached")
	})

	t.Run("stalled", func(t *testing.T) {
		g := newGate()
		r := startRig(t, func(rc *rigConfig) {
			rc.gate = g
			rc.mqtt.Ingest.MaxPendingBytes = maxPending
			rc.mqtt.Ingest.PublishTimeout = timeout
		})
		r.createStream(t, "devs")
		ctx := ctxT(t)
		g.hold()

		// Client a fills the budget: three publishes charged ~2.3 KB each
		// (the record and the payload kept for live delivery).
		a := client5(t, r.addr, "filler", nil)
		answers := make(chan byte, 3)
		for range 3 {
			go func() {
				resp, _ := a.Publish(ctx, &paho.Publish{QoS: 1, Topic: "dev/filler", Payload: make([]byte, payload)})
				if resp == nil {
					answers <- 0xff
					return
				}
				answers <- resp.ReasonCode
			}()
		}
		require.Eventually(t, func() bool { return pending(r) > maxPending/2 }, waitFor, time.Millisecond)

		// Client b waits for room, then gets quota exceeded.
		b := client5(t, r.addr, "waiter", nil)
		start := time.Now()
		resp, err := b.Publish(ctx, &paho.Publish{QoS: 1, Topic: "dev/waiter", Payload: make([]byte, payload)})
		require.Error(t, err)
		require.NotNil(t, resp)
		assert.Equal(t, packets.ErrQuotaExceeded.Code, resp.ReasonCode)
		assert.GreaterOrEqual(t, time.Since(start), timeout, "the publisher was held back")
		assert.LessOrEqual(t, pending(r), int64(maxPending))

		// A 3.1.1 publisher is held back, then disconnected.
		c3, lost := client3(t, r.addr, "waiter3")
		c3.Publish("dev/waiter3", 1, false, make([]byte, payload))
		select {
		case <-lost:
		case <-time.After(waitFor):
			t.Fatal("3.1.1 publisher over the bound was not disconnected")
		}
		assert.LessOrEqual(t, pending(r), int64(maxPending))

		// Client a's publishes outlived their timeout queued behind the
		// stalled store: refused when it moves again, and not stored.
		g.open()
		for range 3 {
			select {
			case code := <-answers:
				assert.Equal(t, packets.ErrQuotaExceeded.Code, code)
			case <-time.After(waitFor):
				t.Fatal("no answer")
			}
		}
		assert.Zero(t, pending(r), "refused publishes release their bytes")
		_, err = b.Publish(ctx, &paho.Publish{QoS: 1, Topic: "dev/waiter", Payload: []byte("later")})
		require.NoError(t, err)
		recs := r.records(t, "devs")
		require.Len(t, recs, 1)
		assert.Equal(t, "later", string(recs[0].Payload))
	})
}

// At receive-maximum unacknowledged publishes a client's next publish
// waits (mochi's own quota is bypassed by the async acks).
func TestIngestReceiveMaximum(t *testing.T) {
	g := newGate()
	r := startRig(t, func(rc *rigConfig) {
		rc.gate = g
		rc.mqtt.ReceiveMaximum = 2
		rc.mqtt.Ingest.PublishTimeout = 300 * time.Millisecond
	})
	r.createStream(t, "devs")
	c := dialRaw(t, r.addr, "bounded", 5, true)
	g.hold()
	start := time.Now()
	for k := range 3 {
		c.publish(uint16(k+1), 1, false, "dev/bounded", strconv.Itoa(k))
	}
	// The third waits for room, then is refused, in order after the
	// first two (which expire queued behind the held store).
	got := c.ping()
	require.GreaterOrEqual(t, time.Since(start), 300*time.Millisecond, "the third publish waited")
	g.open()
	for len(got) < 3 {
		got = append(got, c.recv())
	}
	for k, pk := range got {
		require.Equal(t, packets.Puback, pk.FixedHeader.Type)
		require.Equal(t, uint16(k+1), pk.PacketID)
		require.Equal(t, packets.ErrQuotaExceeded.Code, pk.ReasonCode)
	}
	c.publish(9, 1, false, "dev/bounded", "ok")
	pk := c.recv()
	require.Equal(t, byte(0), pk.ReasonCode)
	require.Len(t, r.records(t, "devs"), 1)
}

func decodeEntry(t *testing.T, batch []byte) []*hstreampb.HStreamRecord {
	t.Helper()
	var br hstreampb.BatchedRecord
	require.NoError(t, proto.Unmarshal(batch, &br))
	require.Equal(t, hstreampb.CompressionType_None, br.CompressionType)
	require.NotNil(t, br.PublishTime)
	recs, err := wire.DecodeBatch(&br, wire.MaxDecodedBytes)
	require.NoError(t, err)
	return recs
}

// With a linger, publishes arriving together from several clients share
// appends.
func TestIngestLinger(t *testing.T) {
	r := startRig(t, func(rc *rigConfig) {
		rc.mqtt.Ingest.Linger = 20 * time.Millisecond
		rc.stream.ShardCount = 1
	})
	const clients, perClient = 4, 20
	var wg sync.WaitGroup
	for c := range clients {
		cl, _ := client3(t, r.addr, fmt.Sprintf("linger%d", c))
		wg.Add(1)
		go func() {
			defer wg.Done()
			toks := make([]paho3Token, perClient)
			for k := range toks {
				toks[k] = cl.Publish("dev/linger", 1, false, "x")
			}
			for _, tok := range toks {
				if !tok.WaitTimeout(waitFor) || tok.Error() != nil {
					t.Errorf("publish: %v", tok.Error())
				}
			}
		}()
	}
	wg.Wait()
	node := r.n.Server.Node()
	metas, err := node.StreamShards("devs")
	require.NoError(t, err)
	require.Len(t, metas, 1)
	sh, err := node.Shard(metas[0].ID)
	require.NoError(t, err)
	ents, err := sh.Read(0, 1000, 64<<20)
	require.NoError(t, err)
	records := 0
	for _, e := range ents {
		records += len(decodeEntry(t, e.Batch))
	}
	assert.Equal(t, clients*perClient, records)
	assert.LessOrEqual(t, len(ents), records/2, "publishes were batched")
}

// Close lets accepted publishes commit and acknowledges them; later
// publishes are refused; Close is idempotent.
func TestIngestClose(t *testing.T) {
	g := newGate()
	r := startRig(t, func(rc *rigConfig) { rc.gate = g })
	r.createStream(t, "devs")
	c := dialRaw(t, r.addr, "closer", 5, true)
	g.hold()
	for k := range 3 {
		c.publish(uint16(k+1), 1, false, "dev/closer", strconv.Itoa(k))
	}
	require.Empty(t, c.ping())
	closed := make(chan error, 1)
	go func() { closed <- r.ing.Close() }()
	g.open()
	for k := range 3 {
		pk := c.recv()
		require.Equal(t, packets.Puback, pk.FixedHeader.Type)
		require.Equal(t, uint16(k+1), pk.PacketID)
		require.Equal(t, byte(0), pk.ReasonCode)
	}
	select {
	case err := <-closed:
		require.NoError(t, err)
	case <-time.After(waitFor):
		t.Fatal("Close did not return")
	}
	require.NoError(t, r.ing.Close())
	require.Len(t, r.records(t, "devs"), 3)

	c.publish(9, 1, false, "dev/closer", "late")
	pk := c.recv()
	require.Equal(t, packets.Puback, pk.FixedHeader.Type)
	require.Equal(t, packets.ErrUnspecifiedError.Code, pk.ReasonCode)
	require.Len(t, r.records(t, "devs"), 3)
}

func TestIngestOptions(t *testing.T) {
	router, err := bridge.NewRouter(nil, "live")
	require.NoError(t, err)
	_, err = bridge.NewIngest(bridge.IngestOptions{Router: router})
	require.Error(t, err)
}
