package test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"maps"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	pahov3 "github.com/eclipse/paho.mqtt.golang"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/status"

	"github.com/weir-log/weir/api/hstreampb"
	"github.com/weir-log/weir/client"
	"github.com/weir-log/weir/internal/chaos"
)

// The chaos test, in the manner of Jepsen: producers append unique values
// while a nemesis injects faults, then every fault is healed, everything
// is read back and internal/chaos checks that nothing acknowledged was
// lost, duplicated without a retry, reordered within a key, or left
// undelivered, and that the replicas agree.
//
// make test runs a short schedule (about a minute of faults); make chaos
// runs a long randomized one:
//
//	go test ./test -run TestChaos -timeout 0 -v -args -chaos.duration 20m -chaos.seed 7 -chaos.report /tmp/chaos
var (
	chaosDuration = flag.Duration("chaos.duration", 0, "how long the workload runs under faults; 0 runs the short schedule of make test")
	chaosSeed     = flag.Uint64("chaos.seed", 0, "seed of the fault schedule; 0 picks one from the clock (the log and report name it)")
	chaosReport   = flag.String("chaos.report", "", "directory to write report.txt, report.json and acks.jsonl to (default: the run's kept directory, on failure)")
	chaosKinds    = flag.String("chaos.faults", "", "comma-separated fault kinds to draw from (default: every kind, or the short set for the short run)")
)

// Fault kinds. Each fault is injected alone, held for its duration, then
// healed; the next comes after a quiet gap.
const (
	faultKillLeader     = "kill-leader"     // kill -9 a shard's leader, restart it
	faultKillFollower   = "kill-follower"   // kill -9 a replica that does not lead the shard
	faultKillAll        = "kill-all"        // kill -9 every node at once, restart them
	faultPause          = "pause"           // SIGSTOP a node, SIGCONT it
	faultIsolateNode    = "isolate-node"    // every link of a node stalls: peers, clients, etcd
	faultIsolateLeader  = "isolate-leader"  // the same for a shard's leader
	faultSplit          = "split"           // a node's node-to-node links stall; clients and etcd still reach it (minority of 1, majority of 2)
	faultLatency        = "latency"         // every link: 50 ms ± 50 ms each way
	faultBandwidth      = "bandwidth"       // every link: 64 KB/s each way
	faultLoss           = "loss"            // every link: connections reset or dropped at random
	faultEtcdRestart    = "etcd-restart"    // kill -9 etcd, restart it
	faultRollingRestart = "rolling-restart" // SIGTERM and restart the nodes one by one
)

var allFaults = []string{faultKillLeader, faultKillFollower, faultKillAll, faultPause, faultIsolateNode,
	faultIsolateLeader, faultSplit, faultLatency, faultBandwidth, faultLoss, faultEtcdRestart, faultRollingRestart}

// shortFaults run in make test: one of each family, in under 3 minutes.
var shortFaults = []string{faultKillLeader, faultIsolateLeader, faultPause, faultSplit, faultLoss, faultEtcdRestart}

const (
	chaosStream   = "chaos"
	chaosShards   = 3
	chaosSub      = "chaos-sub"
	payloadPad    = 64 // bytes of padding after each value's "p=… s=…"
	grpcProducers = 4
	mqttProducers = 2
	consumers     = 2
)

// chaosSchedule is how long faults and the gaps between them last.
type chaosSchedule struct {
	run                  time.Duration
	faultMin, faultMax   time.Duration
	gapMin, gapMax       time.Duration
	kinds                []string
	drain, deliverWithin time.Duration
}

func TestChaos(t *testing.T) {
	sched := chaosSchedule{run: 60 * time.Second, faultMin: 3 * time.Second, faultMax: 6 * time.Second,
		gapMin: 2 * time.Second, gapMax: 4 * time.Second, kinds: shortFaults, drain: 60 * time.Second, deliverWithin: 90 * time.Second}
	if *chaosDuration > 0 {
		sched = chaosSchedule{run: *chaosDuration, faultMin: 5 * time.Second, faultMax: 20 * time.Second,
			gapMin: 5 * time.Second, gapMax: 15 * time.Second, kinds: allFaults, drain: 2 * time.Minute, deliverWithin: 3 * time.Minute}
	}
	if *chaosKinds != "" {
		sched.kinds = strings.Split(*chaosKinds, ",")
		for _, k := range sched.kinds {
			require.Contains(t, allFaults, k, "-chaos.faults: unknown fault kind (known: %s)", strings.Join(allFaults, ", "))
		}
	}
	seed := *chaosSeed
	if seed == 0 {
		seed = uint64(time.Now().UnixNano())
	}
	t.Logf("chaos: seed %d, %s of faults drawn from %s", seed, sched.run, strings.Join(sched.kinds, ", "))

	run := newChaosRun(t, seed)
	run.start()
	until := time.Now().Add(sched.run)
	run.nemesis(sched, until)
	run.healAll()
	h := run.finish(sched)
	rep := chaos.Check(h)
	rep.Seed = seed
	run.writeReport(&rep)
	t.Logf("chaos report (seed %d):\n%s", seed, rep.Text())
	if !rep.OK() {
		t.Fatalf("chaos run with seed %d found problems:\n  %s\n(rerun: go test ./test -run '^TestChaos$' -timeout 0 -v -args -chaos.seed %d -chaos.duration %s -chaos.faults %s)",
			seed, strings.Join(rep.Problems(), "\n  "), seed, *chaosDuration, strings.Join(sched.kinds, ","))
	}
}

// chaosRun is one run: the cluster, its network, the workload's history.
type chaosRun struct {
	t   *testing.T
	t0  time.Time // the history's times are t0 plus the monotonic time since (see now)
	rng *rand.Rand
	c   *testCluster
	net *chaosNet

	grpcLinks, mqttLinks map[uint64]*link // client links by node id

	stopNew   context.CancelFunc // producers start no new write
	stopNewCh context.Context
	hardStop  context.CancelFunc // everything stops
	hardCtx   context.Context
	producers sync.WaitGroup
	consumers sync.WaitGroup
	stopCons  context.CancelFunc

	mu         sync.Mutex
	writes     []*chaos.Write
	deliveries []chaos.Delivery
	faults     []chaos.Fault
	errs       map[string]*errCount // producer and consumer errors by kind, for the log
	ackLog     *bufio.Writer
	ackFile    *os.File
}

func newChaosRun(t *testing.T, seed uint64) *chaosRun {
	r := &chaosRun{t: t, t0: time.Now(), rng: rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15)), net: newChaosNet(),
		grpcLinks: make(map[uint64]*link), mqttLinks: make(map[uint64]*link), errs: make(map[string]*errCount)}
	r.c = newCluster(t, clusterOptions{leaseTTL: 3 * time.Second, deadAfter: 10 * time.Minute, wire: r.wire})
	return r
}

// wire puts a proxy on every link before the nodes' configs are written.
func (r *chaosRun) wire(c *testCluster) {
	for _, n := range c.nodes {
		name := nodeName(n)
		r.grpcLinks[n.id] = r.net.add(r.t, "client", name, "grpc", n.grpcAddr)
		n.advertise = r.grpcLinks[n.id].addr()
		r.mqttLinks[n.id] = r.net.add(r.t, "client", name, "mqtt", n.mqttAddr)
		n.etcdEndpoint = r.net.add(r.t, name, "etcd", "etcd", c.etcd.clientAddr).addr()
	}
	for _, a := range c.nodes {
		for _, b := range c.nodes {
			if a != b {
				l := r.net.add(r.t, nodeName(a), nodeName(b), "peer", b.grpcAddr)
				a.peerAddresses = append(a.peerAddresses, fmt.Sprintf("%d=%s", b.id, l.addr()))
			}
		}
	}
}

// now is the time for the history: t0 plus the monotonic clock's time
// since t0. This machine's wall clock has been seen to jump by 20 s in a
// run, which would show as a 20 s unavailability.
func (r *chaosRun) now() time.Time { return r.t0.Add(time.Since(r.t0)).Round(0) }

func nodeName(n *clusterNode) string { return fmt.Sprintf("n%d", n.id) }

// url is an hstream:// url of every node's client link.
func (r *chaosRun) url() string {
	var addrs []string
	for _, n := range r.c.nodes {
		addrs = append(addrs, r.grpcLinks[n.id].addr())
	}
	return "hstream://" + strings.Join(addrs, ",")
}

// dial connects a client through the client links. attempts bounds the
// client's own retries of a call: producers use 1, so that every send is
// one they count (a retried value may be stored twice, a value sent once
// never).
func (r *chaosRun) dial(ctx context.Context, attempts int) (*client.Client, error) {
	return client.Dial(ctx, r.url(), client.WithMaxAttempts(attempts), client.WithAttemptTimeout(5*time.Second),
		client.WithDialTimeout(5*time.Second))
}

// start creates the stream and the subscription and starts the producers
// and consumers.
func (r *chaosRun) start() {
	t := r.t
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cl, err := r.dial(ctx, 3)
	require.NoError(t, err)
	defer cl.Close()
	_, err = cl.CreateStream(ctx, chaosStream, client.ShardCount(chaosShards), client.ReplicationFactor(3))
	require.NoError(t, err)
	_, err = cl.CreateSubscription(ctx, chaosSub, chaosStream, client.WithSubscriptionOffset(hstreampb.SpecialOffset_EARLIEST),
		client.WithAckTimeout(10*time.Second))
	require.NoError(t, err)
	r.c.waitLeaders(chaosStream, time.Minute)

	require.NoError(t, os.MkdirAll(r.dir(), 0o755))
	r.ackFile, err = os.Create(filepath.Join(r.dir(), "acks.jsonl"))
	require.NoError(t, err)
	r.ackLog = bufio.NewWriter(r.ackFile)

	var consCtx context.Context
	consCtx, r.stopCons = context.WithCancel(context.Background())
	r.stopNewCh, r.stopNew = context.WithCancel(context.Background())
	r.hardCtx, r.hardStop = context.WithCancel(context.Background())
	t.Cleanup(func() {
		// A failed test stops its workload before the cluster goes.
		r.stopNew()
		r.hardStop()
		r.stopCons()
		r.producers.Wait()
		r.consumers.Wait()
		r.ackFile.Close()
	})
	for i := range grpcProducers {
		r.producers.Go(func() { r.grpcProducer(fmt.Sprintf("g%d", i+1)) })
	}
	for i := range mqttProducers {
		r.producers.Go(func() { r.mqttProducer(fmt.Sprintf("m%d", i+1), i) })
	}
	for i := range consumers {
		r.consumers.Go(func() { r.consume(consCtx, fmt.Sprintf("c%d", i+1)) })
	}
}

// errCount counts the errors of one kind, keeping the first one's text.
type errCount struct {
	n     int
	first string
}

// count notes an error of the workload by its kind (its gRPC code).
func (r *chaosRun) count(who string, err error) {
	kind := "other"
	if s, ok := status.FromError(err); ok {
		kind = s.Code().String()
	} else if errors.Is(err, context.DeadlineExceeded) {
		kind = "deadline exceeded"
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	e := r.errs[who+": "+kind]
	if e == nil {
		e = &errCount{first: err.Error()}
		r.errs[who+": "+kind] = e
	}
	e.n++
}

// acked records an acknowledged write and logs it with its time.
func (r *chaosRun) acked(w *chaos.Write) {
	w.Acked, w.AckTime = true, r.now()
	line, _ := json.Marshal(map[string]any{"producer": w.Producer, "seq": w.Seq, "via": w.Via,
		"attempts": w.Attempts, "start": w.Start, "ack": w.AckTime})
	r.mu.Lock()
	r.ackLog.Write(append(line, '\n'))
	r.mu.Unlock()
}

func (r *chaosRun) newWrite(producer, via string, seq uint64) *chaos.Write {
	w := &chaos.Write{Producer: producer, Seq: seq, Key: producer, Via: via, Start: r.now()}
	r.mu.Lock()
	r.writes = append(r.writes, w)
	r.mu.Unlock()
	return w
}

// grpcProducer appends its values one at a time with the client library
// (key = producer id), retrying a value until it is acknowledged, so a
// key's values are acknowledged in order; a retried value may be stored
// twice.
func (r *chaosRun) grpcProducer(id string) {
	var cl *client.Client
	defer func() {
		if cl != nil {
			cl.Close()
		}
	}()
	for seq := uint64(1); r.stopNewCh.Err() == nil; seq++ {
		w := r.newWrite(id, "grpc", seq)
		payload := chaos.Payload(id, seq, payloadPad)
		for !w.Acked && r.hardCtx.Err() == nil {
			if cl == nil {
				ctx, cancel := context.WithTimeout(r.hardCtx, 10*time.Second)
				c, err := r.dial(ctx, 1)
				cancel()
				if err != nil {
					r.count(id, err)
					sleepCtx(r.hardCtx, 200*time.Millisecond)
					continue
				}
				cl = c
			}
			w.Attempts++
			ctx, cancel := context.WithTimeout(r.hardCtx, 15*time.Second)
			_, err := cl.Append(ctx, chaosStream, []client.Record{{Key: id, Payload: payload}})
			cancel()
			if err == nil {
				r.acked(w)
				break
			}
			r.count(id, err)
			sleepCtx(r.hardCtx, 50*time.Millisecond)
		}
		if !w.Acked {
			return
		}
	}
}

// mqttProducer publishes its values at QoS 1 (client id = key = producer
// id) to a node's MQTT listener, from node index first on, one at a
// time; when no PUBACK comes it reconnects, to the next node, and
// publishes the value again.
func (r *chaosRun) mqttProducer(id string, first int) {
	node := first - 1 // the first connection goes to first
	var cl pahov3.Client
	defer func() {
		if cl != nil {
			cl.Disconnect(0)
		}
	}()
	for seq := uint64(1); r.stopNewCh.Err() == nil; seq++ {
		w := r.newWrite(id, "mqtt", seq)
		payload := chaos.Payload(id, seq, payloadPad)
		for !w.Acked && r.hardCtx.Err() == nil {
			if cl == nil || !cl.IsConnectionOpen() {
				if cl != nil {
					cl.Disconnect(0)
				}
				node = (node + 1 + len(r.c.nodes)) % len(r.c.nodes)
				o := pahov3.NewClientOptions().AddBroker("tcp://" + r.mqttLinks[r.c.nodes[node].id].addr()).
					SetClientID(id).SetCleanSession(true).SetAutoReconnect(false).SetConnectRetry(false).
					SetConnectTimeout(5 * time.Second).SetKeepAlive(5 * time.Second).SetWriteTimeout(5 * time.Second)
				cl = pahov3.NewClient(o)
				tok := cl.Connect()
				if !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
					r.count(id, fmt.Errorf("connect: %v", tok.Error()))
					cl.Disconnect(0)
					cl = nil
					sleepCtx(r.hardCtx, 200*time.Millisecond)
					continue
				}
			}
			w.Attempts++
			tok := cl.Publish(chaosStream+"/"+id, 1, false, payload)
			if tok.WaitTimeout(5*time.Second) && tok.Error() == nil { // as the gRPC producers' attempts
				r.acked(w)
				break
			}
			r.count(id, fmt.Errorf("publish: %v", tok.Error()))
			cl.Disconnect(0)
			cl = nil
		}
		if !w.Acked {
			return
		}
	}
}

// consume reads the subscription and acks every record, attaching again
// (under a new consumer name) whenever Consume gives up.
func (r *chaosRun) consume(ctx context.Context, id string) {
	for attempt := 1; ctx.Err() == nil; attempt++ {
		dctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		cl, err := r.dial(dctx, 3)
		cancel()
		if err != nil {
			r.count(id, err)
			sleepCtx(ctx, 200*time.Millisecond)
			continue
		}
		err = cl.Consume(ctx, chaosSub, fmt.Sprintf("%s-%d", id, attempt), func(_ context.Context, m *client.Message) error {
			r.mu.Lock()
			r.deliveries = append(r.deliveries, chaos.Delivery{Payload: m.Record.Payload, Time: r.now()})
			r.mu.Unlock()
			m.Ack()
			return nil
		})
		cl.Close()
		if err != nil && ctx.Err() == nil {
			r.count(id, err)
			sleepCtx(ctx, 200*time.Millisecond)
		}
	}
}

func sleepCtx(ctx context.Context, d time.Duration) {
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
}

// between returns a random duration in [lo, hi].
func (r *chaosRun) between(lo, hi time.Duration) time.Duration {
	return lo + time.Duration(r.rng.Int64N(int64(hi-lo)+1))
}

// nemesis injects faults one after another until until: kinds in a
// shuffled order, every kind once before any comes again.
func (r *chaosRun) nemesis(s chaosSchedule, until time.Time) {
	var bag []string
	sleepUntil(time.Now().Add(r.between(s.gapMin, s.gapMax)), until)
	for time.Now().Before(until) {
		if len(bag) == 0 {
			bag = slices.Clone(s.kinds)
			r.rng.Shuffle(len(bag), func(i, j int) { bag[i], bag[j] = bag[j], bag[i] })
		}
		kind := bag[0]
		bag = bag[1:]
		r.inject(kind, r.between(s.faultMin, s.faultMax))
		r.c.requireRunning(r.c.nodes...) // every fault restarts what it killed
		sleepUntil(time.Now().Add(r.between(s.gapMin, s.gapMax)), until)
	}
}

func sleepUntil(t, limit time.Time) {
	if limit.Before(t) {
		t = limit
	}
	time.Sleep(time.Until(t))
}

// leaderOrAny returns the leader of a random shard, or a random node when
// the leaders are not known now.
func (r *chaosRun) leaderOrAny() *clusterNode {
	leaders, why := r.c.leaders(chaosStream)
	if why != "" {
		r.t.Logf("chaos: no leaders known (%s); picking any node", why)
		return r.c.nodes[r.rng.IntN(len(r.c.nodes))]
	}
	ids := sortedIDs(leaders)
	return leaders[ids[r.rng.IntN(len(ids))]]
}

// follower returns a node that leads no shard, or, when every node leads
// one, a node that does not lead a random shard.
func (r *chaosRun) follower() *clusterNode {
	leaders, _ := r.c.leaders(chaosStream)
	var free, others []*clusterNode
	leader := r.leaderOrAny()
	for _, n := range r.c.nodes {
		if !slices.Contains(slices.Collect(maps.Values(leaders)), n) {
			free = append(free, n)
		}
		if n != leader {
			others = append(others, n)
		}
	}
	if len(free) > 0 {
		return free[r.rng.IntN(len(free))]
	}
	return others[r.rng.IntN(len(others))]
}

// inject runs one fault: it breaks something, holds it for d, heals it
// (restarting what it killed and waiting until it is ready), and records
// the window from the break to the end of the heal.
func (r *chaosRun) inject(kind string, d time.Duration) {
	t := r.t
	f := chaos.Fault{Kind: kind, Start: r.now()}
	switch kind {
	case faultKillLeader, faultKillFollower:
		n := r.follower()
		if kind == faultKillLeader {
			n = r.leaderOrAny()
		}
		f.Target, f.Start = nodeName(n), r.now()
		n.kill()
		time.Sleep(d)
		r.c.restart(n)
	case faultKillAll:
		f.Target, f.Start = "all", r.now()
		for _, n := range r.c.nodes {
			n.kill()
		}
		time.Sleep(d)
		for _, n := range r.c.nodes {
			n.start()
		}
		for _, n := range r.c.nodes {
			r.c.waitReady(n, 90*time.Second)
		}
	case faultPause:
		n := r.c.nodes[r.rng.IntN(len(r.c.nodes))]
		f.Target, f.Start = nodeName(n), r.now()
		require.NoError(t, n.cmd.Process.Signal(syscall.SIGSTOP))
		time.Sleep(d)
		require.NoError(t, n.cmd.Process.Signal(syscall.SIGCONT))
	case faultIsolateNode, faultIsolateLeader, faultSplit:
		n := r.c.nodes[r.rng.IntN(len(r.c.nodes))]
		if kind == faultIsolateLeader {
			n = r.leaderOrAny()
		}
		links := r.net.touching(nodeName(n))
		if kind == faultSplit {
			links = r.net.peerLinks(nodeName(n))
		}
		f.Target, f.Start = nodeName(n), r.now()
		require.NoError(t, stall(links))
		time.Sleep(d)
		r.net.heal()
	case faultLatency, faultBandwidth, faultLoss:
		f.Target, f.Start = "all links", r.now()
		for _, l := range r.net.all() {
			var err error
			switch kind {
			case faultLatency:
				err = l.toxic("latency", 1, map[string]any{"latency": 50, "jitter": 50})
			case faultBandwidth:
				err = l.toxic("bandwidth", 1, map[string]any{"rate": 64})
			case faultLoss:
				if err = l.toxic("reset_peer", 0.2, map[string]any{"timeout": r.rng.IntN(1000)}); err == nil {
					err = l.toxic("timeout", 0.1, map[string]any{"timeout": 1000})
				}
			}
			require.NoError(t, err)
		}
		time.Sleep(d)
		r.net.heal()
	case faultEtcdRestart:
		f.Target, f.Start = "etcd", r.now()
		r.c.etcd.kill()
		time.Sleep(d)
		r.c.etcd.start()
	case faultRollingRestart:
		f.Target, f.Start = "all", r.now()
		for _, n := range r.c.nodes {
			n.stop()
			r.c.restart(n)
			time.Sleep(d / time.Duration(len(r.c.nodes)))
		}
	default:
		t.Fatalf("unknown fault kind %q", kind)
	}
	f.End = r.now()
	t.Logf("chaos: %s on %s for %s (window %.1fs)", kind, f.Target, d, f.End.Sub(f.Start).Seconds())
	r.mu.Lock()
	r.faults = append(r.faults, f)
	r.mu.Unlock()
}

// healAll makes sure nothing of a fault is left (the nemesis heals each
// fault itself) and that every process runs: one that is not has crashed.
func (r *chaosRun) healAll() {
	r.net.heal()
	r.c.requireRunning(r.c.nodes...)
	require.True(r.t, r.c.etcd.running(), "etcd exited: %v\n%s", r.c.etcd.exitErr, r.c.etcd.tail(40))
}

// requireCleanLogs fails the test when a node's log reports a data race, a
// panic or a fatal error: a node killed by the nemesis loses its exit
// status, so its log is the only witness.
func (r *chaosRun) requireCleanLogs() {
	for _, n := range r.c.nodes {
		b, err := os.ReadFile(n.logPath)
		require.NoError(r.t, err)
		for _, bad := range []string{"WARNING: DATA RACE", "panic:", "fatal error:"} {
			if i := bytes.Index(b, []byte(bad)); i >= 0 {
				r.t.Errorf("%s's log (%s) reports %q:\n%s", n.name, n.logPath, bad, b[i:min(len(b), i+4000)])
			}
		}
	}
}

// finish stops the workload (producers finish the value they are on),
// waits until the subscription delivered what was acknowledged, reads
// every shard back and every replica, and returns the history.
func (r *chaosRun) finish(s chaosSchedule) chaos.History {
	t := r.t
	end := r.now()
	r.stopNew()
	drained := make(chan struct{})
	go func() { r.producers.Wait(); close(drained) }()
	select {
	case <-drained:
	case <-time.After(s.drain):
		t.Logf("chaos: producers still retrying %s after the run; stopping them (their last values count as unacknowledged)", s.drain)
		r.hardStop()
		<-drained
	}
	r.hardStop()
	r.c.waitLeaders(chaosStream, 2*time.Minute)

	// Wait for the subscription to deliver every acknowledged value.
	acked := make(map[string]bool)
	r.mu.Lock()
	for _, w := range r.writes {
		if w.Acked {
			acked[string(chaos.Payload(w.Producer, w.Seq, payloadPad))] = true
		}
	}
	r.mu.Unlock()
	deadline := time.Now().Add(s.deliverWithin)
	seen := 0
	for time.Now().Before(deadline) {
		r.mu.Lock()
		for _, d := range r.deliveries[seen:] {
			delete(acked, string(d.Payload))
		}
		seen = len(r.deliveries)
		r.mu.Unlock()
		if len(acked) == 0 {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	if len(acked) > 0 {
		t.Logf("chaos: %d acknowledged values not delivered within %s", len(acked), s.deliverWithin)
	}
	r.stopCons()
	r.consumers.Wait()

	h := chaos.History{Start: end.Add(-time.Hour), End: end, Pad: payloadPad}
	r.mu.Lock()
	for _, w := range r.writes {
		h.Writes = append(h.Writes, *w)
	}
	h.Deliveries = slices.Clone(r.deliveries)
	h.Faults = slices.Clone(r.faults)
	var errs []string
	for k, e := range r.errs {
		errs = append(errs, fmt.Sprintf("%-22s %6d, the first: %.200s", k, e.n, e.first))
	}
	require.NoError(t, r.ackLog.Flush())
	require.NoError(t, r.ackFile.Close())
	r.mu.Unlock()
	r.writeDeliveries(h.Deliveries)
	r.requireCleanLogs()
	if len(h.Writes) > 0 {
		h.Start = h.Writes[0].Start
		for _, w := range h.Writes {
			if w.Start.Before(h.Start) {
				h.Start = w.Start
			}
		}
	}
	slices.Sort(errs)
	t.Logf("chaos: workload errors (retried):\n%s", strings.Join(errs, "\n"))
	h.Records = r.readBack()
	h.Replicas = r.replicas()
	return h
}

// writeDeliveries logs every delivery the consumers acked, with its time,
// to deliveries.jsonl next to acks.jsonl.
func (r *chaosRun) writeDeliveries(ds []chaos.Delivery) {
	f, err := os.Create(filepath.Join(r.dir(), "deliveries.jsonl"))
	require.NoError(r.t, err)
	w := bufio.NewWriter(f)
	for _, d := range ds {
		line, _ := json.Marshal(map[string]any{"payload": string(d.Payload), "delivered": d.Time})
		w.Write(append(line, '\n'))
	}
	require.NoError(r.t, w.Flush())
	require.NoError(r.t, f.Close())
}

// dir is where the run's logs and report go: -chaos.report, or the
// cluster's directory (kept when the test fails).
func (r *chaosRun) dir() string {
	if *chaosReport != "" {
		return *chaosReport
	}
	return r.c.root
}

// readBack reads every shard of the stream from its start to its end, as
// a client does (through the healed proxies).
func (r *chaosRun) readBack() []chaos.Record {
	t := r.t
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cl, err := r.dial(ctx, 3)
	require.NoError(t, err)
	defer cl.Close()
	shards, err := cl.ListShards(ctx, chaosStream)
	require.NoError(t, err)
	var out []chaos.Record
	for _, sh := range shards {
		var idx uint64
		err := cl.ReadShardStream(ctx, chaosStream, sh.GetShardId(), client.ShardEarliest(), client.ShardLatest(), 0, func(rec client.ReceivedRecord) error {
			idx++
			out = append(out, chaos.Record{Shard: sh.GetShardId(), Index: idx, Key: rec.Key, Payload: rec.Payload})
			return nil
		})
		require.NoError(t, err, "reading shard %d back", sh.GetShardId())
	}
	return out
}

// replicas reads every replica's committed entries of every shard straight
// from its node (not through the proxies), once the replicas have caught
// up with their leader, and digests them for the divergence check.
func (r *chaosRun) replicas() []chaos.Replica {
	t := r.t
	metas := r.c.requireShardMetas(chaosStream)
	var out []chaos.Replica
	for _, id := range sortedIDs(metas) {
		m := metas[id]
		// Wait (bounded) until every replica has the same commit index; the
		// checker compares what they hold either way.
		states, why := r.c.awaitOneCommit(id, m.Replicas, m.Replicas[0], time.Minute)
		if why != "" {
			t.Errorf("shard %d: the replicas %v did not reach one commit index within a minute of the heal: %s", id, m.Replicas, why)
		}
		for _, rid := range m.Replicas {
			n := r.c.node(rid)
			st := states[rid]
			require.NotNil(t, st, "shard %d on %s: %s", id, n.name, why)
			ents, err := entries(n, id, max(st.GetFirst(), 1), st.GetCommitted())
			require.NoError(t, err)
			rep := chaos.Replica{Shard: id, Node: rid}
			for _, e := range ents {
				h := sha256.New()
				fmt.Fprintf(h, "%d %d ", e.GetIndex(), e.GetAppendTimeMs())
				h.Write(e.GetBatch())
				rep.Entries = append(rep.Entries, chaos.ReplicaEntry{Index: e.GetIndex(), Digest: hex.EncodeToString(h.Sum(nil))})
			}
			out = append(out, rep)
		}
	}
	return out
}

// writeReport writes report.txt and report.json to the run's dir.
func (r *chaosRun) writeReport(rep *chaos.Report) {
	dir := r.dir()
	b, err := json.MarshalIndent(rep, "", "  ")
	require.NoError(r.t, err)
	require.NoError(r.t, os.WriteFile(filepath.Join(dir, "report.json"), b, 0o644))
	require.NoError(r.t, os.WriteFile(filepath.Join(dir, "report.txt"), []byte(rep.Text()), 0o644))
	r.t.Logf("chaos: report in %s", dir)
}
