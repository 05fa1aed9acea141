package cluster

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"

	"github.com/weir-log/weir/internal/etcdutil"
	"github.com/weir-log/weir/internal/syncbuf"
	"github.com/weir-log/weir/store"
)

// testEtcd is a one-member embedded etcd that a test can stop and start
// again on the same directory and ports.
type testEtcd struct {
	dir, client, peer string
	e                 *embed.Etcd
}

func startTestEtcd(t *testing.T) *testEtcd {
	t.Helper()
	te := &testEtcd{dir: t.TempDir(), client: freeAddr(t), peer: freeAddr(t)}
	te.start(t)
	t.Cleanup(te.stop)
	return te
}

func (te *testEtcd) start(t *testing.T) {
	t.Helper()
	ec := etcdutil.Config("test", te.dir, te.client, te.peer, zap.NewNop())
	ec.LogLevel = "error"
	e, err := embed.StartEtcd(ec)
	require.NoError(t, err)
	select {
	case <-e.Server.ReadyNotify():
	case <-time.After(20 * time.Second):
		e.Close()
		t.Fatal("the embedded etcd did not start")
	}
	te.e = e
}

func (te *testEtcd) stop() {
	if te.e != nil {
		te.e.Close()
		te.e = nil
	}
}

func (te *testEtcd) dial(t *testing.T) *clientv3.Client {
	t.Helper()
	// A short reconnection back-off: a test restarts etcd.
	cli, err := etcdutil.Dial([]string{te.client}, 5*time.Second)
	require.NoError(t, err)
	t.Cleanup(func() { cli.Close() })
	return cli
}

func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer l.Close()
	return l.Addr().String()
}

// startTestNode starts node id on etcd, with its own store and client, and
// makes sure its membership cache and catalog watch run (Start may start
// them already; a second start is a no-op). It is marked running.
func startTestNode(t *testing.T, te *testEtcd, id uint64, mutate ...func(*Options)) *Node {
	t.Helper()
	db, err := store.Open(t.TempDir(), store.Options{})
	require.NoError(t, err)
	opts := Options{
		Self:     NodeInfo{ID: id, GRPCAddr: fmt.Sprintf("127.0.0.1:%d", 1000+id)},
		DataDir:  t.TempDir(),
		Etcd:     te.dial(t),
		LeaseTTL: 5 * time.Second,
		Store:    db,
		Tick:     10 * time.Millisecond,
	}
	for _, m := range mutate {
		m(&opts)
	}
	n, err := New(opts)
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	require.NoError(t, n.Start(ctx))
	t.Cleanup(func() {
		n.Close()
		db.Close()
	})
	require.NoError(t, n.startMembership(ctx))
	n.cat.mu.RLock()
	rev := n.cat.loadedRev
	n.cat.mu.RUnlock()
	n.goAttach(func() { n.watchCatalog(rev) })
	require.NoError(t, n.markRunning(ctx))
	return n
}

// eventually polls cond every 10ms until it holds, failing the test after
// 10s with msg.
func eventually(t *testing.T, cond func() bool, msg string, args ...any) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out: "+msg, args...)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// A node sees through the watch the streams, shards, readers,
// subscriptions and subscription owners another node writes, and their
// deletion; a shard placed on it by another node is opened here
// (shardChanged).
func TestWatchSeesOtherNodesCatalog(t *testing.T) {
	te := startTestEtcd(t)
	a := startTestNode(t, te, 1)
	b := startTestNode(t, te, 2)
	eventually(t, func() bool { return len(a.liveMembers()) == 2 }, "node 1 does not see node 2")
	ctx := t.Context()

	m, shards, err := a.CreateStream(ctx, StreamMeta{Name: "s", ShardCount: 4, ReplicationFactor: 1})
	require.NoError(t, err)
	eventually(t, func() bool { got, err := b.Stream("s"); return err == nil && got.Name == m.Name }, "node 2 does not see stream s")
	got, err := b.StreamShards("s")
	require.NoError(t, err)
	require.Equal(t, shards, got)
	for _, s := range shards {
		if s.Replicas[0] == 2 {
			eventually(t, func() bool { _, err := b.LocalShard(s.ID); return err == nil }, "node 2 did not open shard %d placed on it", s.ID)
		}
	}

	require.NoError(t, a.CreateReader(ctx, ReaderMeta{ID: "r", Stream: "s", ShardID: shards[0].ID}))
	eventually(t, func() bool { _, err := b.Reader("r"); return err == nil }, "node 2 does not see reader r")
	require.NoError(t, a.SaveReader(ctx, ReaderMeta{ID: "r", Stream: "s", ShardID: shards[0].ID, Next: 7}))
	eventually(t, func() bool { r, _ := b.Reader("r"); return r.Next == 7 }, "node 2 does not see reader r move")
	require.NoError(t, a.DeleteReader(ctx, "r"))
	eventually(t, func() bool { _, err := b.Reader("r"); return err != nil }, "node 2 still sees reader r")

	// CreateSubscription resolves its start on the shards' leaders, which
	// may be on either node: ask the node hosting them all locally, or
	// skip the offset part by writing the subscription straight.
	sub := SubscriptionMeta{ID: "sub", Stream: "s", Offset: OffsetEarliest}
	_, err = a.cat.createSubscription(ctx, sub, func(StreamMeta) (map[uint64]uint64, error) { return map[uint64]uint64{}, nil })
	require.NoError(t, err)
	eventually(t, func() bool { _, err := b.Subscription("sub"); return err == nil }, "node 2 does not see subscription sub")
	_, ok := b.SubscriptionOwnerID("sub")
	require.False(t, ok)
	owner, err := b.SubscriptionOwner(ctx, "sub")
	require.NoError(t, err)
	require.Contains(t, []uint64{1, 2}, owner.ID)
	// One not created yet gets a node too (clients look it up first).
	_, err = b.SubscriptionOwner(ctx, "not-yet")
	require.NoError(t, err)

	require.NoError(t, a.ClaimSubscription(ctx, "sub"))
	eventually(t, func() bool { id, ok := b.SubscriptionOwnerID("sub"); return ok && id == 1 }, "node 2 does not see node 1 own sub")
	owner, err = b.SubscriptionOwner(ctx, "sub")
	require.NoError(t, err)
	require.Equal(t, uint64(1), owner.ID)
	require.Equal(t, a.Self().GRPCAddr, owner.GRPCAddr)

	_, err = a.DeleteStream(ctx, "s", true)
	require.NoError(t, err)
	eventually(t, func() bool { _, err := b.Stream("s"); return err != nil }, "node 2 still sees stream s")
	eventually(t, func() bool { _, err := b.Subscription("sub"); return err != nil }, "node 2 still sees subscription sub")
	eventually(t, func() bool { _, ok := b.SubscriptionOwnerID("sub"); return !ok }, "node 2 still sees an owner of sub")
	for _, s := range shards {
		eventually(t, func() bool { _, ok := b.cat.shard(s.ID); return !ok }, "node 2 still has shard %d", s.ID)
		eventually(t, func() bool { _, err := b.LocalShard(s.ID); return err != nil }, "node 2 still hosts shard %d", s.ID)
	}
	// The node that deleted it does not bring it back from the watch's
	// older events.
	_, err = a.Stream("s")
	require.ErrorIs(t, err, ErrStreamNotFound)
}

// A watch event older than a write the cache already took is not applied,
// and shard changes are reported from the watch's own view.
func TestWatchSkipsEventsOlderThanLocalWrites(t *testing.T) {
	c := newCatalog(nil, "/t/")
	c.mu.Lock()
	require.True(t, c.wroteLocked(11, c.streamKey("s")))
	c.mu.Unlock() // the local delete at 11 left no stream
	view := map[uint64]ShardMeta{}
	put := func(key, val string, rev int64) *clientv3.Event {
		ev := &clientv3.Event{Type: clientv3.EventTypePut}
		ev.Kv = &mvccpb.KeyValue{Key: []byte(key), Value: []byte(val), ModRevision: rev}
		return ev
	}
	changes := c.applyEvents([]*clientv3.Event{
		put("/t/streams/s", `{"name":"s","shardIds":[1]}`, 10),
		put(c.shardKey(1), `{"id":1,"stream":"s","replicas":[1]}`, 10),
	}, view, testLogger())
	_, err := c.stream("s")
	require.ErrorIs(t, err, ErrStreamNotFound, "an event older than the local delete came back")
	require.Len(t, changes, 1)
	require.Nil(t, changes[0].Old)
	require.Equal(t, uint64(1), changes[0].New.ID)
	_, ok := c.shard(1)
	require.True(t, ok)

	// Once the watch passes the local write, revs forgets it and later
	// events apply.
	c.applyEvents([]*clientv3.Event{put("/t/streams/s", `{"name":"s"}`, 12)}, view, testLogger())
	_, err = c.stream("s")
	require.NoError(t, err)
	c.mu.Lock()
	require.Empty(t, c.revs)
	require.False(t, c.wroteLocked(12, c.streamKey("s")), "a write the watch passed must not be taken")
	c.mu.Unlock()
}

// Restarting etcd does not break the watches: a stream created after the
// restart is seen by the other node, and members stay Running. The outage
// outlasts the lease TTL, so the clients give up renewing the nodes'
// leases; the nodes take them up again (or register anew) once etcd is
// back.
func TestWatchSurvivesEtcdRestart(t *testing.T) {
	te := startTestEtcd(t)
	shortLease := func(o *Options) { o.LeaseTTL = 2 * time.Second }
	a := startTestNode(t, te, 1, shortLease)
	b := startTestNode(t, te, 2, shortLease)
	eventually(t, func() bool { m, ok := b.member(1); return ok && m.State == NodeRunning }, "node 2 does not see node 1 running")

	// Stopping takes a while (etcd lets its clients' streams go on);
	// the outage then lasts longer than the lease TTL.
	te.stop()
	time.Sleep(3 * time.Second)
	m, ok := b.member(1)
	require.True(t, ok)
	require.Equal(t, NodeRunning, m.State, "an etcd outage is not a node outage")
	te.start(t)

	deadline := time.Now().Add(20 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(t.Context(), 2*time.Second)
		_, _, err := a.CreateStream(ctx, StreamMeta{Name: "after", ShardCount: 1, ReplicationFactor: 1})
		cancel()
		if err == nil {
			break
		}
		require.True(t, time.Now().Before(deadline), "creating a stream after the etcd restart: %v", err)
		time.Sleep(100 * time.Millisecond)
	}
	eventually(t, func() bool { _, err := b.Stream("after"); return err == nil }, "node 2 does not see the stream created after the restart")
	cli := te.dial(t)
	for _, n := range []*Node{a, b} {
		id := n.Self().ID
		eventually(t, func() bool {
			resp, err := cli.Get(t.Context(), n.cat.nodeKey(id))
			return err == nil && len(resp.Kvs) == 1 && clientv3.LeaseID(resp.Kvs[0].Lease) == n.leaseID()
		}, "node %d is not registered under its current lease", id)
		eventually(t, func() bool { return states(b.Cluster())[id] == NodeRunning }, "node %d is not running: %v", id, b.Cluster())
		eventually(t, func() bool { return states(a.Cluster())[id] == NodeRunning }, "node %d is not running: %v", id, a.Cluster())
	}
	// The leases are renewed again: they outlive their TTL.
	time.Sleep(3 * time.Second)
	for _, n := range []*Node{a, b} {
		ttl, err := cli.TimeToLive(t.Context(), n.leaseID())
		require.NoError(t, err)
		require.Greater(t, ttl.TTL, int64(0), "the lease of node %d", n.Self().ID)
	}
}

func testLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// A watch that starts behind a compaction reloads the catalog: what was
// created and deleted in between shows in the cache.
func TestWatchReloadsAfterCompaction(t *testing.T) {
	te := startTestEtcd(t)
	a := startTestNode(t, te, 1)
	ctx := t.Context()
	_, _, err := a.CreateStream(ctx, StreamMeta{Name: "old", ShardCount: 1, ReplicationFactor: 1})
	require.NoError(t, err)

	// Node 9 is not started (its engine would open nothing: no shard is
	// placed on it); only its catalog and watch run.
	db, err := store.Open(t.TempDir(), store.Options{})
	require.NoError(t, err)
	t.Cleanup(func() { db.Close() })
	var logs syncbuf.Buffer
	c, err := New(Options{Self: NodeInfo{ID: 9, GRPCAddr: "127.0.0.1:9"}, DataDir: t.TempDir(), Etcd: te.dial(t), Store: db,
		Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	require.NoError(t, err)
	t.Cleanup(func() { c.Close() })
	rev, err := c.cat.loadRev(ctx)
	require.NoError(t, err)
	_, err = c.Stream("old")
	require.NoError(t, err)

	_, err = a.DeleteStream(ctx, "old", false)
	require.NoError(t, err)
	_, shards, err := a.CreateStream(ctx, StreamMeta{Name: "new", ShardCount: 2, ReplicationFactor: 1})
	require.NoError(t, err)
	cli := te.dial(t)
	now, err := cli.Get(ctx, "anything")
	require.NoError(t, err)
	_, err = cli.Compact(ctx, now.Header.Revision)
	require.NoError(t, err)

	c.goAttach(func() { c.watchCatalog(rev) })
	eventually(t, func() bool { _, err := c.Stream("new"); return err == nil }, "node 9 does not see stream new")
	require.Contains(t, logs.String(), "reloading the catalog")
	_, err = c.Stream("old")
	require.ErrorIs(t, err, ErrStreamNotFound)
	got, err := c.StreamShards("new")
	require.NoError(t, err)
	require.Equal(t, shards, got)

	// And it keeps watching from the reload on.
	_, err = a.DeleteStream(ctx, "new", false)
	require.NoError(t, err)
	eventually(t, func() bool { _, err := c.Stream("new"); return err != nil }, "node 9 still sees stream new")
}

func TestDiffShards(t *testing.T) {
	old := map[uint64]ShardMeta{1: {ID: 1, Replicas: []uint64{1}}, 2: {ID: 2, Replicas: []uint64{1}}, 3: {ID: 3}}
	cur := map[uint64]ShardMeta{2: {ID: 2, Replicas: []uint64{2}}, 3: {ID: 3}, 4: {ID: 4}}
	got := map[uint64][2]*ShardMeta{}
	for _, ch := range diffShards(old, cur) {
		id := uint64(0)
		if ch.Old != nil {
			id = ch.Old.ID
		} else {
			id = ch.New.ID
		}
		got[id] = [2]*ShardMeta{ch.Old, ch.New}
	}
	require.Len(t, got, 3)
	require.Nil(t, got[1][1])
	require.Equal(t, uint64(1), got[1][0].ID)
	require.Equal(t, []uint64{1}, got[2][0].Replicas)
	require.Equal(t, []uint64{2}, got[2][1].Replicas)
	require.Nil(t, got[4][0])
	require.Equal(t, uint64(4), got[4][1].ID)
}
