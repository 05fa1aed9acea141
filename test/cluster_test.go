package test

import (
	"context"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/weir-log/weir/api/hstreampb"
	"github.com/weir-log/weir/api/wire"
)

// The cluster tests run three (or four) `weir server` processes and an
// etcd process on 127.0.0.1 (cluster_harness_test.go), create streams of
// replication factor 3, and kill, stop and restart processes under load.

// ackedRec is a record whose append was acknowledged: by Append (id set) or
// by an MQTT PUBACK (id nil). Payloads are "<key>/<seq %08d>", unique per
// record, so a record can be found again by its payload.
type ackedRec struct {
	key, payload string
	id           *hstreampb.RecordId
	at           time.Time // when the acknowledgement arrived
}

// grpcLoad appends batches for a set of keys, one goroutine per key, each
// key's batches one after the other to the shard its key hashes to,
// through a router that follows the shard leaders. A batch that fails is
// retried (after a fresh lookup) until it is acknowledged, so the acked
// records of a key are in the order of their sequence numbers; a retry may
// store a batch twice, which the read-back counts.
type grpcLoad struct {
	stream string
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	appends  atomic.Int64 // batches acknowledged
	attempts atomic.Int64 // Append calls made
	ackLog

	mu   sync.Mutex
	errs []error // guarded by mu: batches given up on
}

// ackLog is what a load had acknowledged, in the order the acks arrived;
// safe for concurrent use.
type ackLog struct {
	mu   sync.Mutex
	acks []ackedRec // guarded by mu
}

func (a *ackLog) add(recs ...ackedRec) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.acks = append(a.acks, recs...)
}

func (a *ackLog) count() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return len(a.acks)
}

func (a *ackLog) acked() []ackedRec {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]ackedRec(nil), a.acks...)
}

// startGRPCLoad starts one writer per key appending batches of batch
// records every pace, until stop or, when perKey > 0, perKey records per key.
// A batch not acknowledged within 30s ends its writer with an error.
func startGRPCLoad(c *testCluster, stream string, smap *wire.ShardMap, keys []string, batch, perKey int, pace time.Duration) *grpcLoad {
	ctx, cancel := context.WithCancel(context.Background())
	l := &grpcLoad{stream: stream, ctx: ctx, cancel: cancel}
	r := newRouter(c)
	for _, key := range keys {
		shard := smap.Lookup(key)
		l.wg.Go(func() {
			for seq := 0; perKey == 0 || seq < perKey; seq += batch {
				if ctx.Err() != nil {
					return
				}
				recs := keyedRecords(key, seq, batch)
				br, err := wire.EncodeBatch(recs, hstreampb.CompressionType_None)
				if err != nil {
					panic(err)
				}
				actx, acancel := context.WithTimeout(ctx, 30*time.Second)
				resp, attempts, err := r.append(actx, stream, shard, br)
				acancel()
				l.attempts.Add(int64(attempts))
				if err != nil {
					if ctx.Err() == nil {
						l.mu.Lock()
						l.errs = append(l.errs, fmt.Errorf("key %s, records %d..%d, shard %d: %w", key, seq, seq+batch-1, shard, err))
						l.mu.Unlock()
					}
					return
				}
				if len(resp.GetRecordIds()) != batch {
					l.mu.Lock()
					l.errs = append(l.errs, fmt.Errorf("key %s: append returned %d ids for %d records", key, len(resp.GetRecordIds()), batch))
					l.mu.Unlock()
					return
				}
				now := time.Now()
				acks := make([]ackedRec, len(recs))
				for i, id := range resp.GetRecordIds() {
					acks[i] = ackedRec{key: key, payload: string(recs[i].GetPayload()), id: id, at: now}
				}
				l.add(acks...)
				l.appends.Add(1)
				if pace > 0 {
					select {
					case <-ctx.Done():
						return
					case <-time.After(pace):
					}
				}
			}
		})
	}
	return l
}

// stop ends the writers, abandoning the batches in flight (they are not
// acknowledged), and returns the batches given up on before.
func (l *grpcLoad) stop() []error {
	l.cancel()
	l.wg.Wait()
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.errs
}

// wait waits for writers bounded by perKey to finish.
func (l *grpcLoad) wait() []error {
	l.wg.Wait()
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.errs
}

// mqttLoad has MQTT clients publish at QoS 1 to topics <stream>/<client id>,
// which the default route appends to the stream keyed by client id. Each
// client keeps up to window publishes in flight; a publish without PUBACK
// within 15s (the node died, or forwarding failed) drops the connection
// and the client connects again, to the same node, and goes on with its
// next sequence number.
type mqttLoad struct {
	stop       chan struct{}
	wg         sync.WaitGroup
	reconnects atomic.Int64
	ackLog
}

// startMQTTLoad starts one client per id, client i connected to addrs[i].
func startMQTTLoad(t *testing.T, stream string, addrs, ids []string, window int, pace time.Duration) *mqttLoad {
	l := &mqttLoad{stop: make(chan struct{})}
	for i, addr := range addrs {
		id := ids[i]
		l.wg.Go(func() { l.publish(addr, id, stream+"/"+id, window, pace) })
	}
	t.Cleanup(l.halt)
	return l
}

type pendingPub struct {
	tok     paho.Token
	payload string
}

func (l *mqttLoad) publish(addr, id, topic string, window int, pace time.Duration) {
	var cl paho.Client
	var inflight []pendingPub
	drop := func() {
		if cl != nil {
			cl.Disconnect(0)
			cl = nil
		}
		inflight = nil
	}
	defer drop()
	// settle records the acks that arrived; with block it waits for the
	// oldest publish. It reports false when the connection must be dropped.
	settle := func(block bool) bool {
		for len(inflight) > 0 {
			p := inflight[0]
			if !block {
				select {
				case <-p.tok.Done():
				default:
					return true
				}
			}
			if !p.tok.WaitTimeout(15*time.Second) || p.tok.Error() != nil {
				return false
			}
			l.add(ackedRec{key: id, payload: p.payload, at: time.Now()})
			inflight = inflight[1:]
			block = false
		}
		return true
	}
	for seq := 0; ; {
		select {
		case <-l.stop:
			if cl != nil {
				// The publishes in flight get their chance to be acked.
				for len(inflight) > 0 && settle(true) {
				}
			}
			return
		default:
		}
		if cl == nil {
			cl = paho.NewClient(paho.NewClientOptions().AddBroker("tcp://" + addr).SetClientID(id).
				SetCleanSession(true).SetAutoReconnect(false).SetConnectRetry(false).SetConnectTimeout(3 * time.Second))
			tok := cl.Connect()
			if !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
				cl = nil
				select {
				case <-l.stop:
					return
				case <-time.After(200 * time.Millisecond):
				}
				continue
			}
		}
		payload := fmt.Sprintf("%s/%08d", id, seq)
		seq++
		inflight = append(inflight, pendingPub{cl.Publish(topic, 1, false, payload), payload})
		if !settle(len(inflight) >= window) {
			drop()
			l.reconnects.Add(1)
			continue
		}
		if pace > 0 {
			time.Sleep(pace)
		}
	}
}

// halt stops the publishers; idempotent.
func (l *mqttLoad) halt() {
	select {
	case <-l.stop:
	default:
		close(l.stop)
	}
	l.wg.Wait()
}

// firstAckAfter returns the earliest acknowledgement at or after t among
// the acks match accepts (nil: all).
func firstAckAfter(acks []ackedRec, t time.Time, match func(ackedRec) bool) (time.Time, bool) {
	var first time.Time
	for _, a := range acks {
		if a.at.Before(t) || (match != nil && !match(a)) {
			continue
		}
		if first.IsZero() || a.at.Before(first) {
			first = a.at
		}
	}
	return first, !first.IsZero()
}

// checkReadBack checks what a read of the stream returned against the
// acknowledged records: every one is there, those with an id hold their
// payload under it, and per key their first appearances come in the order
// of their sequence numbers. It returns how many records were read more
// than once (a retried append whose first try was stored after all).
func checkReadBack(t *testing.T, got []acked, acks []ackedRec) (dups int) {
	t.Helper()
	count := make(map[string]int, len(got))
	first := make(map[string]int, len(got))
	byID := make(map[string]string, len(got))
	for i, r := range got {
		if count[r.payload] == 0 {
			first[r.payload] = i
		}
		count[r.payload]++
		byID[wire.FormatRecordID(r.id)] = r.payload
	}
	for _, n := range count {
		dups += n - 1
	}
	var missing []string
	byKey := make(map[string][]ackedRec)
	for _, a := range acks {
		if count[a.payload] == 0 {
			missing = append(missing, a.payload)
			continue
		}
		if a.id != nil {
			require.Equal(t, a.payload, byID[wire.FormatRecordID(a.id)], "record %s was acknowledged with another payload", wire.FormatRecordID(a.id))
		}
		byKey[a.key] = append(byKey[a.key], a)
	}
	sort.Strings(missing)
	require.Empty(t, missing, "%d acknowledged records are missing (of %d acknowledged, %d read)", len(missing), len(acks), len(got))
	for key, as := range byKey {
		sort.Slice(as, func(i, j int) bool { return as[i].payload < as[j].payload })
		for i := 1; i < len(as); i++ {
			require.Less(t, first[as[i-1].payload], first[as[i].payload],
				"key %s: %s is read before %s, which was acknowledged before it", key, as[i].payload, as[i-1].payload)
		}
	}
	return dups
}

// converge waits until the running replicas of every shard of a stream
// have the same committed index, so a read through any of them sees all
// that is committed.
func (c *testCluster) converge(stream string, within time.Duration) {
	c.t.Helper()
	deadline := time.Now().Add(within)
	for {
		why := ""
		metas, err := c.shardMetas(stream)
		if err != nil {
			why = err.Error()
		}
		for _, id := range sortedIDs(metas) {
			committed := map[uint64]uint64{}
			for _, r := range metas[id].Replicas {
				n := c.node(r)
				if !n.running() {
					continue
				}
				st, err := shardState(n, id)
				if err != nil {
					why = fmt.Sprintf("shard %d: %s: %v", id, n.name, err)
					break
				}
				committed[r] = st.GetCommitted()
			}
			vals := map[uint64]bool{}
			for _, v := range committed {
				vals[v] = true
			}
			if why == "" && len(vals) != 1 {
				why = fmt.Sprintf("shard %d: committed indexes by node %v", id, committed)
			}
			if why != "" {
				break
			}
		}
		if why == "" {
			return
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("the replicas of %s did not converge within %s: %s", stream, within, why)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// spreadKeys returns n keys named prefix<number> that hash to the shards
// of smap in turn, so every shard gets keys however the hash falls.
func spreadKeys(t *testing.T, smap *wire.ShardMap, prefix string, n int) []string {
	t.Helper()
	shards := smap.Shards()
	var keys []string
	for i := 0; len(keys) < n; i++ {
		require.Less(t, i, 100000, "no key of prefix %s hashes to shard %d", prefix, shards[len(keys)%len(shards)].GetShardId())
		key := fmt.Sprintf("%s%d", prefix, i)
		if smap.Lookup(key) == shards[len(keys)%len(shards)].GetShardId() {
			keys = append(keys, key)
		}
	}
	return keys
}

// eventually polls cond every 50ms until it holds, failing with msg() when
// within has passed.
func eventually(t *testing.T, within time.Duration, cond func() bool, msg func() string) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal(msg())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestClusterKillLeaderAppendsResume appends to an RF 3 stream over gRPC
// (to the shard leaders, following them) and MQTT QoS 1 (to the two nodes
// that stay up, which forward to the leaders), kills the leader of a shard
// with SIGKILL, and measures how long the appends to the shards it led
// took to resume. It then reads the stream back: every acknowledged record
// is there, each key's records in the order they were acknowledged.
func TestClusterKillLeaderAppendsResume(t *testing.T) {
	const stream = "orders"
	c := newCluster(t, clusterOptions{})
	shards := c.createStream(stream, 3, 3)
	smap, err := wire.NewShardMap(shards)
	require.NoError(t, err)
	leaders := c.waitLeaders(stream, 30*time.Second)
	victim := leaders[shards[0].GetShardId()]
	led := map[uint64]bool{}
	for id, n := range leaders {
		if n == victim {
			led[id] = true
		}
	}
	var survivors []*clusterNode
	for _, n := range c.nodes {
		if n != victim {
			survivors = append(survivors, n)
		}
	}
	t.Logf("leaders: %v; the victim is %s, which leads shards %v", leaderIDs(leaders), victim.name, sortedIDs(led))

	gl := startGRPCLoad(c, stream, smap, spreadKeys(t, smap, "key", 12), 5, 0, 20*time.Millisecond)
	defer gl.stop()
	var mqttAddrs []string
	for i := range 4 {
		mqttAddrs = append(mqttAddrs, survivors[i%len(survivors)].mqttAddr)
	}
	ml := startMQTTLoad(t, stream, mqttAddrs, spreadKeys(t, smap, "mq", 4), 10, 5*time.Millisecond)
	eventually(t, 60*time.Second, func() bool { return gl.count() >= 600 && ml.count() >= 200 }, func() string {
		return fmt.Sprintf("appends did not get going: %d over gRPC, %d over MQTT acknowledged", gl.count(), ml.count())
	})

	// The clock starts once the process is gone: an ack recorded after
	// that came from a new leader.
	victim.kill()
	killed := time.Now()
	grpcBefore, mqttBefore := gl.count(), ml.count()
	onVictimShards := func(a ackedRec) bool { return led[smap.Lookup(a.key)] }
	var grpcResumed, mqttResumed time.Time
	eventually(t, 30*time.Second, func() bool {
		var ok1, ok2 bool
		grpcResumed, ok1 = firstAckAfter(gl.acked(), killed, onVictimShards)
		mqttResumed, ok2 = firstAckAfter(ml.acked(), killed, onVictimShards)
		return ok1 && ok2
	}, func() string {
		return fmt.Sprintf("appends to the shards %v led by the killed %s did not resume within 30s (gRPC resumed: %v, MQTT resumed: %v); leaders now: %s",
			sortedIDs(led), victim.name, !grpcResumed.IsZero(), !mqttResumed.IsZero(), c.leadersText(stream))
	})
	t.Logf("after kill -9 of %s: gRPC appends to its shards resumed in %s, MQTT publishes in %s",
		victim.name, grpcResumed.Sub(killed).Round(time.Millisecond), mqttResumed.Sub(killed).Round(time.Millisecond))

	// A few more seconds of load on the new leaders, then stop.
	time.Sleep(3 * time.Second)
	errs := gl.stop()
	ml.halt()
	require.Empty(t, errs, "gRPC writers gave up")
	c.requireRunning(survivors...)
	t.Logf("acknowledged: %d records over gRPC (%d before the kill; %d Append calls for %d batches), %d over MQTT (%d before; %d reconnects)",
		gl.count(), grpcBefore, gl.attempts.Load(), gl.appends.Load(), ml.count(), mqttBefore, ml.reconnects.Load())

	c.converge(stream, 30*time.Second)
	got := readAll(t, survivors[0].api, stream)
	dups := checkReadBack(t, got, append(gl.acked(), ml.acked()...))
	t.Logf("read back %d records: every acknowledged record present, per-key order kept, %d duplicates", len(got), dups)
}

// TestClusterRestartedNodeCatchesUp kills the leader of a shard while
// appends run, lets the others go on without it, restarts it on its data
// and checks that, for every shard, each replica holds the leader's
// committed entries: same indexes, times and bytes.
func TestClusterRestartedNodeCatchesUp(t *testing.T) {
	const stream = "ledger"
	c := newCluster(t, clusterOptions{})
	shards := c.createStream(stream, 3, 3)
	smap, err := wire.NewShardMap(shards)
	require.NoError(t, err)
	leaders := c.waitLeaders(stream, 30*time.Second)
	victim := leaders[shards[0].GetShardId()]

	load := startGRPCLoad(c, stream, smap, spreadKeys(t, smap, "acct", 6), 10, 0, 10*time.Millisecond)
	defer load.stop()
	eventually(t, 60*time.Second, func() bool { return load.count() >= 500 }, func() string {
		return fmt.Sprintf("appends did not get going: %d acknowledged", load.count())
	})
	victim.kill()
	atKill := load.count()
	eventually(t, 40*time.Second, func() bool { return load.count() >= atKill+1000 }, func() string {
		return fmt.Sprintf("appends did not go on after the kill of %s: %d acknowledged since; leaders: %s",
			victim.name, load.count()-atKill, c.leadersText(stream))
	})
	require.Empty(t, load.stop(), "writers gave up")
	t.Logf("%d records acknowledged before the kill of %s, %d while it was down", atKill, victim.name, load.count()-atKill)

	restarted := time.Now()
	c.restart(victim)
	n := c.requireReplicasMatch(stream, 60*time.Second)
	require.NotZero(t, n)
	t.Logf("%s caught up within %s: %d entries compared over %d shards", victim.name, time.Since(restarted).Round(time.Millisecond), n, len(shards))
	got := readAll(t, victim.api, stream)
	dups := checkReadBack(t, got, load.acked())
	t.Logf("read back %d records through the restarted node, %d duplicates", len(got), dups)
}

// TestClusterDeadNodeReplicasReplaced runs four nodes, kills one for good
// and checks that once cluster.dead-after has passed its replicas are
// re-placed: every shard lists three running replicas in etcd again, and
// they hold the same entries.
func TestClusterDeadNodeReplicasReplaced(t *testing.T) {
	const stream = "fleet"
	c := newCluster(t, clusterOptions{nodes: 4})
	shards := c.createStream(stream, 4, 3)
	smap, err := wire.NewShardMap(shards)
	require.NoError(t, err)
	c.waitLeaders(stream, 30*time.Second)
	metas := c.requireShardMetas(stream)
	hosted := map[uint64][]uint64{} // node -> shards
	for _, id := range sortedIDs(metas) {
		require.Len(t, metas[id].Replicas, 3, "shard %d at creation", id)
		for _, r := range metas[id].Replicas {
			hosted[r] = append(hosted[r], id)
		}
	}
	var victim *clusterNode
	for _, n := range c.nodes {
		if victim == nil || len(hosted[n.id]) > len(hosted[victim.id]) {
			victim = n
		}
	}
	t.Logf("replicas at creation: %v; killing %s for good (it hosts shards %v)", replicaText(metas), victim.name, hosted[victim.id])

	load := startGRPCLoad(c, stream, smap, spreadKeys(t, smap, "truck", 8), 5, 0, 20*time.Millisecond)
	defer load.stop()
	eventually(t, 60*time.Second, func() bool { return load.count() >= 400 }, func() string {
		return fmt.Sprintf("appends did not get going: %d acknowledged", load.count())
	})
	killed := time.Now()
	victim.kill()

	var last map[uint64]shardMeta
	eventually(t, c.opts.deadAfter+60*time.Second, func() bool {
		m, err := c.shardMetas(stream)
		if err != nil {
			return false
		}
		last = m
		for _, id := range sortedIDs(m) {
			seen := map[uint64]bool{}
			for _, r := range m[id].Replicas {
				if r == victim.id || seen[r] {
					return false
				}
				seen[r] = true
			}
			if len(seen) != 3 {
				return false
			}
		}
		return len(m) == len(shards)
	}, func() string {
		return fmt.Sprintf("the replicas of the dead %s were not re-placed within dead-after (%s) + 60s: %s",
			victim.name, c.opts.deadAfter, replicaText(last))
	})
	t.Logf("every shard back to 3 replicas %s after the kill (dead-after %s): %s",
		time.Since(killed).Round(time.Millisecond), c.opts.deadAfter, replicaText(last))

	// Appends go on to the end, then the new replicas must hold what the
	// others hold.
	time.Sleep(time.Second)
	require.Empty(t, load.stop(), "writers gave up")
	n := c.requireReplicasMatch(stream, 60*time.Second)
	require.NotZero(t, n)
	got := readAll(t, c.live()[0].api, stream)
	dups := checkReadBack(t, got, load.acked())
	t.Logf("read back %d records (%d acknowledged), %d duplicates", len(got), load.count(), dups)
}

// TestClusterSubscriptionOwnerKilled has a consumer receive and ack
// through the node that owns a subscription, kills that node with SIGKILL,
// finds the new owner with LookupSubscription and consumes from it: the
// new owner resumes from the checkpoint, so nothing acked up to the
// offsets read before the kill comes again, and nothing is lost.
func TestClusterSubscriptionOwnerKilled(t *testing.T) {
	const (
		stream, sub = "payments", "audit"
		initial     = 800 // records before the consumer attaches
	)
	c := newCluster(t, clusterOptions{})
	shards := c.createStream(stream, 3, 3)
	smap, err := wire.NewShardMap(shards)
	require.NoError(t, err)
	c.waitLeaders(stream, 30*time.Second)
	ctx := context.Background()
	_, err = c.nodes[0].api.CreateSubscription(ctx, &hstreampb.Subscription{SubscriptionId: sub, StreamName: stream,
		AckTimeoutSeconds: 60, MaxUnackedRecords: 1000, Offset: hstreampb.SpecialOffset_EARLIEST})
	require.NoError(t, err)

	first := startGRPCLoad(c, stream, smap, spreadKeys(t, smap, "card", 8), 5, initial/8, 0)
	require.Empty(t, first.wait())
	require.Equal(t, initial, first.count())

	owner := c.lookupSubscription(sub, nil, 30*time.Second)
	var other *clusterNode
	for _, n := range c.nodes {
		if n != owner {
			other = n
			break
		}
	}
	t.Logf("%s owns subscription %s", owner.name, sub)
	more := startGRPCLoad(c, stream, smap, spreadKeys(t, smap, "late", 4), 5, 0, 25*time.Millisecond)
	defer more.stop()
	before := startConsumer(t, owner.api, sub, "c1", 2, false)
	allAcked := func() []ackedRec { return append(first.acked(), more.acked()...) }

	// Offsets O that cover at least half of the initial records, then more
	// acks, so the kill lands while the consumer acks past O.
	var o map[uint64]uint64
	waitFor(t, 40*time.Second, []*subConsumer{before}, func() bool {
		if before.ackedCount() < initial {
			return false
		}
		o = subOffsets(t, other.api, sub)
		return coveredBy(allAcked(), o) >= initial/2
	}, func() string {
		return fmt.Sprintf("the consumer did not ack %d records with a checkpoint covering half of them (acked %d, offsets %v)",
			initial, before.ackedCount(), o)
	})
	ackedAtO := before.ackedCount()
	waitFor(t, 20*time.Second, []*subConsumer{before}, func() bool { return before.ackedCount() >= ackedAtO+100 }, func() string {
		return fmt.Sprintf("the consumer stopped acking after the offsets were read (%d acks)", before.ackedCount())
	})

	killed := time.Now()
	owner.kill()
	before.stop()
	persisted := subOffsets(t, other.api, sub)
	for id, b := range o {
		require.GreaterOrEqual(t, persisted[id], b, "shard %d: the checkpoint went back", id)
	}
	// Writers go on through the failover for a moment, then stop: what
	// they got acknowledged must all be delivered.
	time.Sleep(2 * time.Second)
	require.Empty(t, more.stop(), "writers gave up")
	appended := allAcked()

	var after *subConsumer
	var newOwner *clusterNode
	deadline := time.Now().Add(40 * time.Second)
	for {
		newOwner = c.lookupSubscription(sub, owner, time.Until(deadline))
		after = startConsumer(t, newOwner.api, sub, "c1", 2, false)
		time.Sleep(2 * time.Second)
		err := after.failed()
		if err == nil {
			break
		}
		after.stop()
		require.True(t, time.Now().Before(deadline), "no node took the subscription over within 40s of the kill: last fetch from %s: %v", newOwner.name, err)
		t.Logf("fetch from %s ended (%v); looking up again", newOwner.name, err)
	}
	t.Logf("%s owns %s %s after the kill", newOwner.name, sub, time.Since(killed).Round(time.Millisecond))

	// What must come: every record acknowledged by Append and never
	// delivered, and every record delivered before the kill that the
	// checkpoint does not cover (its ack may not have been persisted).
	gotBefore := map[string]bool{}
	var mustAgain []string
	for _, r := range before.records() {
		id := wire.FormatRecordID(r.id)
		gotBefore[id] = true
		if r.id.GetBatchId() > persisted[r.id.GetShardId()] {
			mustAgain = append(mustAgain, id)
		}
	}
	missing := func() (lost, notAgain int) {
		gotAfter := map[string]bool{}
		for _, r := range after.records() {
			gotAfter[wire.FormatRecordID(r.id)] = true
		}
		for _, a := range appended {
			id := wire.FormatRecordID(a.id)
			if !gotBefore[id] && !gotAfter[id] {
				lost++
			}
		}
		for _, id := range mustAgain {
			if !gotAfter[id] {
				notAgain++
			}
		}
		return lost, notAgain
	}
	waitFor(t, 40*time.Second, []*subConsumer{after}, func() bool {
		lost, notAgain := missing()
		return lost == 0 && notAgain == 0
	}, func() string {
		lost, notAgain := missing()
		return fmt.Sprintf("%d of %d acknowledged records were never delivered, and %d of %d records delivered before the kill "+
			"above the checkpoint %v were not delivered again", lost, len(appended), notAgain, len(mustAgain), persisted)
	})

	redelivered := 0
	seen := map[string]bool{}
	for _, r := range after.records() {
		id := wire.FormatRecordID(r.id)
		shard, b := r.id.GetShardId(), r.id.GetBatchId()
		require.Greater(t, b, o[shard], "record %s was acked up to O=%d before the kill and delivered again", id, o[shard])
		require.Greater(t, b, persisted[shard], "record %s is below the checkpoint %d and delivered again", id, persisted[shard])
		require.False(t, seen[id], "record %s delivered twice by the new owner", id)
		seen[id] = true
		if gotBefore[id] {
			redelivered++
		}
	}
	// Only what was delivered after the checkpoint can come again: at most
	// the acks sent after it plus the unacked window.
	require.LessOrEqual(t, redelivered, before.ackedCount()-coveredBy(appended, persisted)+1000,
		"more records came again than were acked after the checkpoint plus the unacked window")
	t.Logf("new owner: %d records delivered, %d of them delivered before the kill too (acked after the checkpoint %v or unacked)",
		len(seen), redelivered, persisted)
}

// TestClusterEtcdOutage stops etcd for 20s under load: appends to the
// existing shards go on, CreateStream fails with Unavailable on every node,
// no node exits, and once etcd is back CreateStream works again and the
// nodes are Running and ready.
func TestClusterEtcdOutage(t *testing.T) {
	const stream = "metrics"
	// dead-after is longer than the outage: a node's registration lapses
	// while etcd is down, which must not make it dead.
	c := newCluster(t, clusterOptions{deadAfter: time.Minute})
	shards := c.createStream(stream, 3, 3)
	smap, err := wire.NewShardMap(shards)
	require.NoError(t, err)
	c.waitLeaders(stream, 30*time.Second)
	load := startGRPCLoad(c, stream, smap, spreadKeys(t, smap, "sensor", 6), 5, 0, 20*time.Millisecond)
	defer load.stop()
	eventually(t, 60*time.Second, func() bool { return load.count() >= 300 }, func() string {
		return fmt.Sprintf("appends did not get going: %d acknowledged", load.count())
	})

	c.etcd.stop()
	down := time.Now()
	atStop := load.count()
	for _, n := range c.nodes {
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		began := time.Now()
		_, err := n.api.CreateStream(ctx, &hstreampb.Stream{StreamName: fmt.Sprintf("outage-%d", n.id), ShardCount: 1, ReplicationFactor: 3})
		cancel()
		require.Error(t, err, "CreateStream on %s succeeded with etcd down", n.name)
		require.Equal(t, codes.Unavailable, status.Code(err), "CreateStream on %s with etcd down: %v", n.name, err)
		t.Logf("CreateStream on %s with etcd down failed in %s: %v", n.name, time.Since(began).Round(time.Millisecond), err)
	}
	for time.Since(down) < 20*time.Second {
		c.requireRunning(c.nodes...)
		time.Sleep(500 * time.Millisecond)
	}
	during := load.count() - atStop
	t.Logf("%d records acknowledged during the %s etcd outage", during, time.Since(down).Round(time.Millisecond))
	require.Positive(t, during, "no append was acknowledged while etcd was down")

	c.etcd.start()
	up := time.Now()
	deadline := up.Add(30 * time.Second)
	var failures []error
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_, err := c.nodes[0].api.CreateStream(ctx, &hstreampb.Stream{StreamName: "after-outage", ShardCount: 1, ReplicationFactor: 3})
		cancel()
		if err == nil || status.Code(err) == codes.AlreadyExists {
			break
		}
		failures = append(failures, err)
		require.True(t, time.Now().Before(deadline), "CreateStream still fails 30s after etcd came back: %v", err)
		time.Sleep(250 * time.Millisecond)
	}
	t.Logf("CreateStream works again %s after etcd came back (%d failed tries before)", time.Since(up).Round(time.Millisecond), len(failures))
	if len(failures) > 0 {
		t.Logf("the last failure: %v", failures[len(failures)-1])
	}
	atUp := load.count()
	eventually(t, 20*time.Second, func() bool { return load.count() >= atUp+100 }, func() string {
		return fmt.Sprintf("appends stalled after etcd came back: %d since", load.count()-atUp)
	})
	require.Empty(t, load.stop(), "writers gave up")
	c.requireRunning(c.nodes...)
	for _, n := range c.nodes {
		c.waitReady(n, 30*time.Second)
	}
	c.waitStates(30*time.Second, c.nodes, func(_ uint32, st hstreampb.NodeState, listed bool) bool {
		return listed && st == hstreampb.NodeState_Running
	}, "every node Running after the outage")
	for id, m := range c.requireShardMetas(stream) {
		require.Len(t, m.Replicas, 3, "shard %d lost replicas over the outage", id)
	}
	c.converge(stream, 30*time.Second)
	got := readAll(t, c.nodes[0].api, stream)
	dups := checkReadBack(t, got, load.acked())
	t.Logf("read back %d records (%d acknowledged), %d duplicates", len(got), load.count(), dups)
}

// TestClusterDescribeCluster asks every node for DescribeCluster: all three
// are listed, Running, at their gRPC addresses. After a kill -9 the others
// show the node Unavailable, then Dead once cluster.dead-after has passed,
// and Running again when it restarts.
func TestClusterDescribeCluster(t *testing.T) {
	c := newCluster(t, clusterOptions{})
	for _, asker := range c.nodes {
		states, resp, err := c.describe(asker)
		require.NoError(t, err)
		require.Len(t, resp.GetServerNodes(), 3, "%s lists %v", asker.name, resp.GetServerNodes())
		for _, sn := range resp.GetServerNodes() {
			n := c.node(uint64(sn.GetId()))
			require.Equal(t, n.grpcAddr, fmt.Sprintf("%s:%d", sn.GetHost(), sn.GetPort()), "%s lists node %d at another address", asker.name, sn.GetId())
			require.Equal(t, hstreampb.NodeState_Running, states[sn.GetId()], "%s: state of node %d", asker.name, sn.GetId())
		}
	}

	victim := c.nodes[2]
	askers := c.nodes[:2]
	killed := time.Now()
	victim.kill()
	c.waitStates(3*c.opts.leaseTTL+5*time.Second, askers, func(id uint32, st hstreampb.NodeState, listed bool) bool {
		if uint64(id) == victim.id {
			return listed && st == hstreampb.NodeState_Unavailable
		}
		return listed && st == hstreampb.NodeState_Running
	}, fmt.Sprintf("%s Unavailable and the others Running", victim.name))
	t.Logf("%s shows Unavailable %s after kill -9 (lease TTL %s)", victim.name, time.Since(killed).Round(time.Millisecond), c.opts.leaseTTL)
	c.waitStates(c.opts.deadAfter+3*c.opts.leaseTTL+5*time.Second, askers, func(id uint32, st hstreampb.NodeState, listed bool) bool {
		if uint64(id) == victim.id {
			return listed && st == hstreampb.NodeState_Dead
		}
		return listed && st == hstreampb.NodeState_Running
	}, fmt.Sprintf("%s Dead and the others Running", victim.name))
	deadAt := time.Since(killed)
	t.Logf("%s shows Dead %s after kill -9 (dead-after %s)", victim.name, deadAt.Round(time.Millisecond), c.opts.deadAfter)
	require.GreaterOrEqual(t, deadAt, c.opts.deadAfter, "a node was Dead before dead-after had passed")

	c.restart(victim)
	c.waitStates(30*time.Second, c.nodes, func(_ uint32, st hstreampb.NodeState, listed bool) bool {
		return listed && st == hstreampb.NodeState_Running
	}, "every node Running after the restart")
}

// lookupSubscription asks the running nodes which node owns a
// subscription until one answers a running node other than not.
func (c *testCluster) lookupSubscription(sub string, not *clusterNode, within time.Duration) *clusterNode {
	c.t.Helper()
	deadline := time.Now().Add(within)
	var last string
	for {
		for _, n := range c.live() {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			resp, err := n.api.LookupSubscription(ctx, &hstreampb.LookupSubscriptionRequest{SubscriptionId: sub})
			cancel()
			if err != nil {
				last = fmt.Sprintf("%s: %v", n.name, err)
				continue
			}
			sn := resp.GetServerNode()
			owner := c.nodeAt(fmt.Sprintf("%s:%d", sn.GetHost(), sn.GetPort()))
			switch {
			case owner == nil:
				last = fmt.Sprintf("%s answered %s:%d, no node of the cluster", n.name, sn.GetHost(), sn.GetPort())
			case owner == not || !owner.running():
				last = fmt.Sprintf("%s answered %s, which is down", n.name, owner.name)
			default:
				return owner
			}
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("LookupSubscription(%s) found no running owner within %s: %s", sub, within, last)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// coveredBy counts the acknowledged records at or below offsets (per shard,
// a batch id).
func coveredBy(acks []ackedRec, offsets map[uint64]uint64) int {
	n := 0
	for _, a := range acks {
		if a.id != nil && a.id.GetBatchId() <= offsets[a.id.GetShardId()] {
			n++
		}
	}
	return n
}

func leaderIDs(leaders map[uint64]*clusterNode) map[uint64]uint64 {
	out := make(map[uint64]uint64, len(leaders))
	for id, n := range leaders {
		out[id] = n.id
	}
	return out
}

// leadersText describes the shard leaders as the replicas see them, for
// failure messages.
func (c *testCluster) leadersText(stream string) string {
	leaders, why := c.leaders(stream)
	if why != "" {
		return why
	}
	return fmt.Sprint(leaderIDs(leaders))
}

func replicaText(metas map[uint64]shardMeta) string {
	var b strings.Builder
	for _, id := range sortedIDs(metas) {
		if b.Len() > 0 {
			b.WriteString(" ")
		}
		parts := make([]string, len(metas[id].Replicas))
		for i, r := range metas[id].Replicas {
			parts[i] = strconv.FormatUint(r, 10)
		}
		fmt.Fprintf(&b, "%d:[%s]", id, strings.Join(parts, ","))
	}
	return b.String()
}
