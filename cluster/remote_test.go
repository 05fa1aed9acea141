package cluster

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/weir-log/weir/api/peerpb"
	"github.com/weir-log/weir/store"
)

// These tests run two nodes in one process on one embedded etcd, each with
// its own store and its peer service on a 127.0.0.1 port. Their shards have
// one replica (RF 1), so one node hosts each and the other reaches it
// through a remote handle.

// rtEtcd starts a one-member etcd for the test and returns a client.
func rtEtcd(t *testing.T) *clientv3.Client { return startTestEtcd(t).dial(t) }

// rtNode is a node and the gRPC server of its peer service, which a test
// can stop and serve again on the same address.
type rtNode struct {
	n    *Node
	addr string
	peer peerpb.PeerServer // what serve registers; a test may wrap it

	mu  sync.Mutex
	srv *grpc.Server
}

func rtStart(t *testing.T, cli *clientv3.Client, id uint64) *rtNode {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	db, err := store.Open(t.TempDir(), store.Options{})
	require.NoError(t, err)
	n, err := New(Options{
		Self:     NodeInfo{ID: id, GRPCAddr: lis.Addr().String()},
		DataDir:  t.TempDir(),
		Etcd:     cli,
		Store:    db,
		Prefix:   "/rt/",
		LeaseTTL: 5 * time.Second,
		Tick:     20 * time.Millisecond,
		Logger:   slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	require.NoError(t, err)
	rn := &rtNode{n: n, addr: lis.Addr().String(), peer: n.PeerServer()}
	rn.serve(lis)
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	require.NoError(t, n.Start(ctx))
	// The membership cache routing relies on; Start may already have
	// started it, and a second call does nothing.
	require.NoError(t, n.startMembership(ctx))
	t.Cleanup(func() {
		n.Close()
		rn.stop()
		db.Close()
	})
	return rn
}

func (rn *rtNode) serve(lis net.Listener) {
	srv := grpc.NewServer()
	peerpb.RegisterPeerServer(srv, rn.peer)
	rn.mu.Lock()
	rn.srv = srv
	rn.mu.Unlock()
	go srv.Serve(lis)
}

// stop ends the peer service abruptly: its streams break.
func (rn *rtNode) stop() {
	rn.mu.Lock()
	srv := rn.srv
	rn.srv = nil
	rn.mu.Unlock()
	if srv != nil {
		srv.Stop()
	}
}

// restart serves the peer service again on its address.
func (rn *rtNode) restart(t *testing.T) {
	t.Helper()
	var lis net.Listener
	require.Eventually(t, func() bool {
		var err error
		lis, err = net.Listen("tcp", rn.addr)
		return err == nil
	}, 10*time.Second, 50*time.Millisecond, "listening on %s again", rn.addr)
	rn.serve(lis)
}

// rtPair starts two nodes and a stream whose shards have one replica each,
// and returns the nodes with one shard of that stream that the first node
// hosts (placement may put the rest on the second; without the catalog
// watch that node would not open them).
func rtPair(t *testing.T, cli *clientv3.Client) (host, other *rtNode, m ShardMeta) {
	t.Helper()
	a, b := rtStart(t, cli, 1), rtStart(t, cli, 2)
	require.Eventually(t, func() bool { return len(a.n.liveMembers()) == 2 }, 10*time.Second, 20*time.Millisecond)
	_, shards, err := a.n.CreateStream(t.Context(), StreamMeta{Name: "s", ShardCount: 4, ReplicationFactor: 1})
	require.NoError(t, err)
	for _, s := range shards {
		if s.Replicas[0] == a.n.opts.Self.ID {
			m = s
			break
		}
	}
	require.NotZero(t, m.ID, "no shard placed on node 1: %v", shards)
	rtLearn(b.n, m)
	rtWaitLeader(t, a.n, m.ID)
	return a, b, m
}

// rtLearn puts a shard in a node's catalog cache, as the catalog watch
// would.
func rtLearn(n *Node, m ShardMeta) {
	n.cat.mu.Lock()
	defer n.cat.mu.Unlock()
	n.cat.shards[m.ID] = m
}

// rtForget drops a shard from a node's catalog cache, as the watch does
// when its stream is deleted.
func rtForget(n *Node, id uint64) {
	n.cat.mu.Lock()
	defer n.cat.mu.Unlock()
	delete(n.cat.shards, id)
}

func rtWaitLeader(t *testing.T, n *Node, id uint64) {
	t.Helper()
	require.Eventually(t, func() bool {
		sh, ok := n.eng.shard(id)
		return ok && sh.leader.Load() != 0
	}, 10*time.Second, 10*time.Millisecond, "shard %d has no leader", id)
}

// rtRemote returns other's handle of shard id, checking it is remote.
func rtRemote(t *testing.T, n *Node, id uint64) *remoteShard {
	t.Helper()
	sl, err := n.Shard(id)
	require.NoError(t, err)
	r, ok := sl.(*remoteShard)
	require.True(t, ok, "node %d's handle of shard %d is a %T", n.opts.Self.ID, id, sl)
	return r
}

// Proposals pipelined through a remote handle commit in the order they were
// proposed, and every one is answered.
func TestRemoteProposeKeepsOrder(t *testing.T) {
	host, other, m := rtPair(t, rtEtcd(t))
	r := rtRemote(t, other.n, m.ID)
	again, err := other.n.Shard(m.ID)
	require.NoError(t, err)
	assert.Same(t, r, again, "Node.Shard made a second handle for the same shard")

	const count = 3000
	pending := make([]*Pending, count)
	for i := range count {
		pending[i], err = r.Propose(t.Context(), []byte(fmt.Sprintf("b-%d", i)))
		require.NoError(t, err)
	}
	var last uint64
	for i, p := range pending {
		idx, at, err := p.Wait(t.Context())
		require.NoError(t, err, "proposal %d", i)
		require.Greater(t, idx, last, "proposal %d committed before its predecessor", i)
		require.WithinDuration(t, time.Now(), at, time.Minute)
		last = idx
	}
	sh, err := host.n.LocalShard(m.ID)
	require.NoError(t, err)
	ents, err := sh.Read(0, 2*count, 1<<30)
	require.NoError(t, err)
	require.Len(t, ents, count)
	for i, e := range ents {
		require.Equal(t, fmt.Sprintf("b-%d", i), string(e.Batch))
	}

	// Concurrent proposers through one handle: each one's own order holds.
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	for g := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var prev uint64
			for i := range 200 {
				idx, _, err := r.Append(t.Context(), []byte(fmt.Sprintf("g%d-%d", g, i)))
				if err != nil {
					errs <- err
					return
				}
				if idx <= prev {
					errs <- fmt.Errorf("goroutine %d: index %d after %d", g, idx, prev)
					return
				}
				prev = idx
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
}

// Every read of a remote handle answers what the hosting replica answers.
func TestRemoteReadsMatchTheHost(t *testing.T) {
	host, other, m := rtPair(t, rtEtcd(t))
	r := rtRemote(t, other.n, m.ID)
	sh, err := host.n.LocalShard(m.ID)
	require.NoError(t, err)

	c0, grown := r.Committed()
	local0, _ := sh.Committed()
	assert.Equal(t, local0, c0, "a handle's first Committed asks the host")
	_, ok, err := r.LastData()
	require.NoError(t, err)
	assert.False(t, ok, "an empty shard has no last entry")

	// An append on the host wakes the handle's waiters.
	idx, _, err := sh.Append(t.Context(), []byte("first"))
	require.NoError(t, err)
	deadline := time.After(5 * time.Second)
	for c := c0; c < idx; c, grown = r.Committed() {
		select {
		case <-grown:
		case <-deadline:
			t.Fatalf("Committed's channel did not close after a commit on the host (committed %d, appended %d)", c, idx)
		}
	}

	var times []time.Time
	for i := range 5 {
		_, at, err := r.Append(t.Context(), []byte(fmt.Sprintf("rec-%d", i)))
		require.NoError(t, err)
		times = append(times, at)
		time.Sleep(3 * time.Millisecond) // distinct append times
	}
	want, err := sh.Read(0, 100, 1<<20)
	require.NoError(t, err)
	got, err := r.Read(0, 100, 1<<20)
	require.NoError(t, err)
	require.Equal(t, want, got)
	got, err = r.Read(want[2].Index, 2, 1<<20)
	require.NoError(t, err)
	require.Equal(t, want[2:4], got)
	got, err = r.Read(want[len(want)-1].Index+1, 10, 1<<20)
	require.NoError(t, err)
	assert.Empty(t, got)

	c, _ := r.Committed()
	lc, _ := sh.Committed()
	assert.Equal(t, lc, c, "the handle saw its own appends commit")
	ld, ok, err := r.LastData()
	require.NoError(t, err)
	require.True(t, ok)
	assert.Equal(t, want[len(want)-1], ld)

	for _, at := range append([]time.Time{time.Unix(0, 0), time.Now().Add(time.Hour)}, times...) {
		wantIdx, err := sh.IndexAtTime(at)
		require.NoError(t, err)
		gotIdx, err := r.IndexAtTime(at)
		require.NoError(t, err)
		assert.Equal(t, wantIdx, gotIdx, "IndexAtTime(%v)", at)
	}

	require.NoError(t, r.Trim(t.Context(), want[2].Index))
	assert.Equal(t, want[2].Index+1, sh.First())
	assert.Equal(t, sh.First(), r.First())
	got, err = r.Read(0, 100, 1<<20)
	require.NoError(t, err)
	assert.Equal(t, want[3:], got)
	assert.False(t, r.Removed())
	assert.Equal(t, m, r.Meta())
}

// A deleted shard is ErrShardNotFound through the wire and in the handle
// once this node's catalog drops it; the handle then reports Removed, its
// Committed channel closes, and Node.Shard makes no new one.
func TestRemoteShardDeleted(t *testing.T) {
	host, other, m := rtPair(t, rtEtcd(t))
	r := rtRemote(t, other.n, m.ID)
	_, _, err := r.Append(t.Context(), []byte("x"))
	require.NoError(t, err)
	_, grown := r.Committed()

	_, err = host.n.DeleteStream(t.Context(), "s", true)
	require.NoError(t, err)
	// Whether the host answers or this node's catalog watch has already
	// dropped the shard, it is gone.
	_, _, err = r.Append(t.Context(), []byte("y"))
	require.ErrorIs(t, err, ErrShardNotFound)
	_, err = r.Read(0, 10, 1<<20)
	require.ErrorIs(t, err, ErrShardNotFound)
	_, err = r.IndexAtTime(time.Now())
	require.ErrorIs(t, err, ErrShardNotFound)

	rtForget(other.n, m.ID)
	assert.True(t, r.Removed())
	_, err = r.Propose(t.Context(), []byte("z"))
	require.ErrorIs(t, err, ErrShardNotFound)
	require.ErrorIs(t, r.Trim(t.Context(), 1), ErrShardNotFound)
	select {
	case <-grown:
	case <-time.After(10 * time.Second):
		t.Fatal("Committed's channel did not close when the shard was deleted")
	}
	_, err = other.n.Shard(m.ID)
	require.ErrorIs(t, err, ErrShardNotFound)

	// A shard back in the catalog gets a fresh handle, not the removed one.
	rtLearn(other.n, m)
	fresh := rtRemote(t, other.n, m.ID)
	assert.NotSame(t, r, fresh)
	assert.False(t, fresh.Removed())
}

// blackhole wraps a peer server whose Appends, while hold is set, read
// requests and never answer them.
type blackhole struct {
	peerpb.PeerServer
	hold atomic.Bool
	got  atomic.Int64
}

func (b *blackhole) Appends(stream grpc.BidiStreamingServer[peerpb.AppendRequest, peerpb.AppendResponse]) error {
	if !b.hold.Load() {
		return b.PeerServer.Appends(stream)
	}
	for {
		if _, err := stream.Recv(); err != nil {
			return err
		}
		b.got.Add(1)
	}
}

// When the append stream breaks, every proposal waiting on it fails with
// ErrNodeUnavailable; while the host is unreachable Propose fails the same
// way; once it is back, the next Propose opens a new stream and works.
func TestRemoteBrokenStream(t *testing.T) {
	host, other, m := rtPair(t, rtEtcd(t))
	bh := &blackhole{PeerServer: host.peer}
	host.stop()
	host.peer = bh
	host.restart(t)
	bh.hold.Store(true)

	r := rtRemote(t, other.n, m.ID)
	var pending []*Pending
	for i := range 20 {
		p, err := r.Propose(t.Context(), []byte(fmt.Sprintf("lost-%d", i)))
		require.NoError(t, err)
		pending = append(pending, p)
	}
	require.Eventually(t, func() bool { return bh.got.Load() == 20 }, 5*time.Second, 5*time.Millisecond)
	// With as many proposals unanswered as the handle allows, Propose
	// waits (backpressure) until its ctx ends.
	for range cap(r.slots) - 20 {
		r.slots <- struct{}{}
	}
	ctx, cancel := context.WithTimeout(t.Context(), 50*time.Millisecond)
	_, err := r.Propose(ctx, []byte("one too many"))
	cancel()
	require.ErrorIs(t, err, context.DeadlineExceeded)
	for range cap(r.slots) - 20 {
		<-r.slots
	}
	host.stop()
	for i, p := range pending {
		ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
		_, _, err := p.Wait(ctx)
		cancel()
		require.ErrorIs(t, err, ErrNodeUnavailable, "proposal %d", i)
		assert.Contains(t, err.Error(), "node 1")
	}
	_, _, err = r.Append(t.Context(), []byte("refused"))
	require.ErrorIs(t, err, ErrNodeUnavailable)
	_, err = r.Read(0, 10, 1<<20)
	require.ErrorIs(t, err, ErrNodeUnavailable)

	bh.hold.Store(false)
	host.restart(t)
	var idx uint64
	require.Eventually(t, func() bool {
		idx, _, err = r.Append(t.Context(), []byte("back"))
		return err == nil
	}, 20*time.Second, 50*time.Millisecond, "appending after the host came back: %v", err)
	ents, err := r.Read(0, 100, 1<<20)
	require.NoError(t, err)
	require.Len(t, ents, 1, "only the append after the break committed")
	assert.Equal(t, idx, ents[0].Index)
}

// A host that left the cluster (its lease is gone) is not routed to: the
// handle fails with ErrNodeUnavailable naming the shard, without waiting.
func TestRemoteHostDown(t *testing.T) {
	host, other, m := rtPair(t, rtEtcd(t))
	r := rtRemote(t, other.n, m.ID)
	_, _, err := r.Append(t.Context(), []byte("x"))
	require.NoError(t, err)
	require.NoError(t, host.n.Close())
	require.Eventually(t, func() bool { return !other.n.isLive(1) }, 10*time.Second, 20*time.Millisecond)
	start := time.Now()
	_, _, err = r.Append(t.Context(), []byte("y"))
	require.ErrorIs(t, err, ErrNodeUnavailable)
	assert.Contains(t, err.Error(), fmt.Sprintf("shard %d", m.ID))
	_, err = r.Read(0, 10, 1<<20)
	require.ErrorIs(t, err, ErrNodeUnavailable)
	_, _, err = r.LastData()
	require.ErrorIs(t, err, ErrNodeUnavailable)
	assert.Less(t, time.Since(start), 2*time.Second)

	// Closing the node closes its handles: waiters wake, calls fail.
	_, grown := r.Committed()
	require.NoError(t, other.n.Close())
	select {
	case <-grown:
	default:
		t.Fatal("closing the node did not close its handles' Committed channels")
	}
	assert.True(t, r.Removed())
	_, err = r.Propose(t.Context(), []byte("z"))
	require.ErrorIs(t, err, ErrClosed)
}

// The peer service refuses shards this node does not host, so the caller
// routes again, and never forwards them itself.
func TestPeerServerRefusesShardsHostedElsewhere(t *testing.T) {
	host, other, m := rtPair(t, rtEtcd(t))
	// A shard the catalog places on the other node, and one it lacks.
	elsewhere := ShardMeta{ID: 999, Stream: "s", Replicas: []uint64{other.n.opts.Self.ID}}
	rtLearn(host.n, elsewhere)

	cc, err := grpc.NewClient(host.addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	require.NoError(t, err)
	defer cc.Close()
	cli := peerpb.NewPeerClient(cc)

	_, err = cli.Read(t.Context(), &peerpb.ReadRequest{ShardId: 999, MaxEntries: 1, MaxBytes: 1})
	require.Equal(t, codes.FailedPrecondition, status.Code(err), "%v", err)
	assert.Contains(t, err.Error(), "node 1 hosts no replica of shard 999")
	_, err = cli.ShardState(t.Context(), &peerpb.ShardStateRequest{ShardId: 1234})
	require.Equal(t, codes.NotFound, status.Code(err), "%v", err)

	st, err := cli.Appends(t.Context())
	require.NoError(t, err)
	for seq, id := range []uint64{999, 1234, m.ID} {
		require.NoError(t, st.Send(&peerpb.AppendRequest{Seq: uint64(seq), ShardId: id, Batch: []byte("b")}))
	}
	require.NoError(t, st.CloseSend())
	codesBySeq := map[uint64]peerpb.ErrorCode{}
	for {
		resp, err := st.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		require.NoError(t, err)
		codesBySeq[resp.GetSeq()] = resp.GetCode()
	}
	assert.Equal(t, map[uint64]peerpb.ErrorCode{
		0: peerpb.ErrorCode_NOT_HOSTED,
		1: peerpb.ErrorCode_SHARD_NOT_FOUND,
		2: peerpb.ErrorCode_OK,
	}, codesBySeq)

	// ShardState's long poll: it waits for a commit, and no longer than
	// asked.
	sh, err := host.n.LocalShard(m.ID)
	require.NoError(t, err)
	c, _ := sh.Committed()
	start := time.Now()
	resp, err := cli.ShardState(t.Context(), &peerpb.ShardStateRequest{ShardId: m.ID, WaitAbove: c, WaitMs: 200})
	require.NoError(t, err)
	assert.Equal(t, c, resp.GetCommitted())
	assert.GreaterOrEqual(t, time.Since(start), 200*time.Millisecond)
	assert.Equal(t, uint64(1), resp.GetLeader())
	go func() {
		time.Sleep(50 * time.Millisecond)
		sh.Append(context.Background(), []byte("wake"))
	}()
	start = time.Now()
	resp, err = cli.ShardState(t.Context(), &peerpb.ShardStateRequest{ShardId: m.ID, WaitAbove: c, WaitMs: 5000})
	require.NoError(t, err)
	assert.Greater(t, resp.GetCommitted(), c)
	assert.Less(t, time.Since(start), 3*time.Second)
	require.NotNil(t, resp.GetLastData())
	assert.Equal(t, "wake", string(resp.GetLastData().GetBatch()))
}

// The codes of the peer service map back to the cluster's errors.
func TestRemoteErrorMapping(t *testing.T) {
	n := &Node{opts: Options{Self: NodeInfo{ID: 2}}, cat: newCatalog(nil, "/t/")}
	r := newRemoteShard(n, ShardMeta{ID: 7})
	defer r.close(ErrClosed)
	for code, want := range map[peerpb.ErrorCode]error{
		peerpb.ErrorCode_NO_LEADER:       ErrNoLeader,
		peerpb.ErrorCode_SHARD_NOT_FOUND: ErrShardNotFound,
		peerpb.ErrorCode_NOT_HOSTED:      ErrNodeUnavailable,
		peerpb.ErrorCode_CLOSED:          ErrNodeUnavailable,
	} {
		res := r.appendResult(3, &peerpb.AppendResponse{Code: code, Message: "why"})
		assert.ErrorIs(t, res.err, want, "code %v", code)
		assert.Contains(t, res.err.Error(), "why")
	}
	res := r.appendResult(3, &peerpb.AppendResponse{Code: peerpb.ErrorCode_OTHER, Message: "disk on fire"})
	require.Error(t, res.err)
	assert.Contains(t, res.err.Error(), "disk on fire")

	for code, want := range map[codes.Code]error{
		codes.NotFound:           ErrShardNotFound,
		codes.FailedPrecondition: ErrNodeUnavailable,
		codes.Unavailable:        ErrNodeUnavailable,
		codes.DeadlineExceeded:   ErrNodeUnavailable,
	} {
		err := r.fromStatus(3, "reading", status.Error(code, "why"))
		assert.ErrorIs(t, err, want, "code %v", code)
		assert.Contains(t, err.Error(), "node 3")
	}
	err := r.fromStatus(3, "reading", status.Error(codes.DataLoss, (&CorruptEntryError{Shard: 7, Index: 42, Err: ErrCorruptEntry}).Error()))
	var corrupt *CorruptEntryError
	require.ErrorAs(t, err, &corrupt)
	assert.Equal(t, uint64(42), corrupt.Index)
	assert.ErrorIs(t, err, ErrCorruptEntry)
}
