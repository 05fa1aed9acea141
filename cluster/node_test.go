package cluster_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"runtime"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/weir-log/weir/api/wire"
	"github.com/weir-log/weir/cluster"
	"github.com/weir-log/weir/internal/nodetest"
)

// The shard's log is opaque to this package: any bytes make a batch.

type appended struct {
	index uint64
	at    time.Time
	data  []byte
}

func createStream(t *testing.T, node *cluster.Node, name string, shards, backlogSeconds uint32) (cluster.StreamMeta, []cluster.ShardMeta) {
	t.Helper()
	m, metas, err := node.CreateStream(t.Context(), cluster.StreamMeta{
		Name: name, ShardCount: shards, ReplicationFactor: 1, BacklogSeconds: backlogSeconds,
	})
	require.NoError(t, err)
	require.Len(t, metas, int(shards))
	return m, metas
}

func shardOf(t *testing.T, node *cluster.Node, id uint64) *cluster.Shard {
	t.Helper()
	sh, err := node.LocalShard(id)
	require.NoError(t, err)
	return sh
}

// appendSeq appends count batches named prefix-i, one after another.
func appendSeq(t *testing.T, sh *cluster.Shard, prefix string, count int) []appended {
	t.Helper()
	out := make([]appended, 0, count)
	for i := range count {
		data := []byte(fmt.Sprintf("%s-%d-%s", prefix, i, bytes.Repeat([]byte{'x'}, i)))
		idx, at, err := sh.Append(t.Context(), data)
		require.NoError(t, err)
		out = append(out, appended{idx, at, data})
	}
	return out
}

func readAll(t *testing.T, sh *cluster.Shard) []cluster.Entry {
	t.Helper()
	ents, err := sh.Read(0, 1<<20, 1<<30)
	require.NoError(t, err)
	return ents
}

func committed(sh *cluster.Shard) uint64 {
	c, _ := sh.Committed()
	return c
}

func indexes(ents []cluster.Entry) []uint64 {
	out := make([]uint64, len(ents))
	for i, e := range ents {
		out[i] = e.Index
	}
	return out
}

func TestCreateStreamShardIDsAndRanges(t *testing.T) {
	n := nodetest.Start(t)
	node := n.Server.Node()

	a, aShards := createStream(t, node, "a", 2, 0)
	b, bShards := createStream(t, node, "b", 3, 0)
	assert.Equal(t, []uint64{1, 2}, a.ShardIDs)
	assert.Equal(t, []uint64{3, 4, 5}, b.ShardIDs)
	assert.Equal(t, "b", b.Name)
	assert.Equal(t, uint32(3), b.ShardCount)
	assert.Equal(t, uint32(1), b.ReplicationFactor)
	assert.WithinDuration(t, time.Now(), b.CreatedAt, time.Minute)
	assert.Equal(t, b.CreatedAt.Truncate(time.Millisecond), b.CreatedAt)

	for _, tc := range []struct {
		m      cluster.StreamMeta
		shards []cluster.ShardMeta
	}{{a, aShards}, {b, bShards}} {
		ranges := wire.ShardRanges(tc.m.ShardCount)
		for i, s := range tc.shards {
			assert.Equal(t, tc.m.ShardIDs[i], s.ID)
			assert.Equal(t, tc.m.Name, s.Stream)
			assert.Equal(t, wire.FormatKey(ranges[i].Start), s.Start, "shard %d start", s.ID)
			assert.Equal(t, wire.FormatKey(ranges[i].End), s.End, "shard %d end", s.ID)
			assert.Equal(t, uint64(tc.m.ShardCount), s.Epoch)
			assert.Equal(t, []uint64{1}, s.Replicas)
			sh := shardOf(t, node, s.ID)
			assert.Equal(t, s, sh.Meta())
		}
		got, err := node.StreamShards(tc.m.Name)
		require.NoError(t, err)
		assert.Equal(t, tc.shards, got)
		got1, err := node.Stream(tc.m.Name)
		require.NoError(t, err)
		assert.Equal(t, tc.m, got1)
	}
	// The last range ends at 2^128-1 and the first starts at 0.
	assert.Equal(t, "0", bShards[0].Start)
	assert.Equal(t, "340282366920938463463374607431768211455", bShards[2].End)

	// Ids are never reused: not after a delete, not after a restart.
	_, err := node.DeleteStream(t.Context(), "b", false)
	require.NoError(t, err)
	n.Restart(t)
	node = n.Server.Node()
	c, _ := createStream(t, node, "c", 1, 0)
	assert.Equal(t, []uint64{6}, c.ShardIDs)
	b2, _ := createStream(t, node, "b", 2, 0)
	assert.Equal(t, []uint64{7, 8}, b2.ShardIDs)

	// The catalog survives the restart as written.
	gotA, err := node.Stream("a")
	require.NoError(t, err)
	assert.Equal(t, a, gotA)
	assert.Equal(t, []string{"a", "b", "c"}, streamNames(node.Streams("")))
	assert.Equal(t, []string{"b"}, streamNames(node.Streams("b")))
	for _, id := range []uint64{1, 2, 6, 7, 8} {
		_, err := node.Shard(id)
		assert.NoError(t, err, "shard %d", id)
	}
	for _, id := range []uint64{3, 4, 5} {
		_, err := node.Shard(id)
		assert.ErrorIs(t, err, cluster.ErrShardNotFound, "deleted shard %d came back", id)
	}
}

func streamNames(ms []cluster.StreamMeta) []string {
	out := make([]string, len(ms))
	for i, m := range ms {
		out[i] = m.Name
	}
	return out
}

func TestCreateStreamErrors(t *testing.T) {
	n := nodetest.Start(t)
	node := n.Server.Node()
	ctx := t.Context()

	first, _ := createStream(t, node, "s", 1, 0)
	_, _, err := node.CreateStream(ctx, cluster.StreamMeta{Name: "s", ShardCount: 2, ReplicationFactor: 1})
	assert.ErrorIs(t, err, cluster.ErrStreamExists)

	_, _, err = node.CreateStream(ctx, cluster.StreamMeta{Name: "rf2", ShardCount: 1, ReplicationFactor: 2})
	assert.ErrorIs(t, err, cluster.ErrTooFewNodes)
	_, err = node.Stream("rf2")
	assert.ErrorIs(t, err, cluster.ErrStreamNotFound)

	_, _, err = node.CreateStream(ctx, cluster.StreamMeta{Name: "zero", ShardCount: 0, ReplicationFactor: 1})
	assert.Error(t, err)

	_, err = node.DeleteStream(ctx, "nope", false)
	assert.ErrorIs(t, err, cluster.ErrStreamNotFound)
	_, err = node.StreamShards("nope")
	assert.ErrorIs(t, err, cluster.ErrStreamNotFound)
	_, err = node.Shard(999)
	assert.ErrorIs(t, err, cluster.ErrShardNotFound)

	// The failed creations handed out no ids and left "s" as it was.
	got, err := node.Stream("s")
	require.NoError(t, err)
	assert.Equal(t, first, got)
	next, _ := createStream(t, node, "t", 1, 0)
	assert.Equal(t, []uint64{2}, next.ShardIDs)
}

func TestDeleteStream(t *testing.T) {
	n := nodetest.Start(t)
	node := n.Server.Node()
	ctx := t.Context()

	_, metas := createStream(t, node, "gone", 2, 0)
	_, keepMetas := createStream(t, node, "kept", 1, 0)
	var old []*cluster.Shard
	for _, m := range metas {
		sh := shardOf(t, node, m.ID)
		appendSeq(t, sh, "x", 3)
		old = append(old, sh)
	}
	stored, err := n.Server.Store().Shards()
	require.NoError(t, err)
	assert.Equal(t, []uint64{1, 2, 3}, stored)

	_, err = node.DeleteStream(ctx, "gone", false)
	require.NoError(t, err)

	for _, sh := range old {
		id := sh.Meta().ID
		_, err := node.Shard(id)
		assert.ErrorIs(t, err, cluster.ErrShardNotFound, "shard %d", id)
		assert.True(t, sh.Removed(), "shard %d", id)
		_, grown := sh.Committed()
		select {
		case <-grown:
		default:
			t.Errorf("shard %d: Committed's channel is not closed after the delete", id)
		}
		_, _, err = sh.Append(ctx, []byte("late"))
		assert.ErrorIs(t, err, cluster.ErrShardNotFound, "shard %d", id)
		_, err = sh.Read(0, 10, 1<<20)
		assert.ErrorIs(t, err, cluster.ErrShardNotFound, "reading deleted shard %d", id)
	}
	stored, err = n.Server.Store().Shards()
	require.NoError(t, err)
	assert.Equal(t, []uint64{keepMetas[0].ID}, stored)
	_, err = node.Stream("gone")
	assert.ErrorIs(t, err, cluster.ErrStreamNotFound)
	_, err = node.DeleteStream(ctx, "gone", false)
	assert.ErrorIs(t, err, cluster.ErrStreamNotFound)
	assert.False(t, shardOf(t, node, keepMetas[0].ID).Removed())

	// The name can be used again, with new shards and an empty log.
	again, _ := createStream(t, node, "gone", 1, 0)
	assert.Equal(t, []uint64{4}, again.ShardIDs)
	assert.Empty(t, readAll(t, shardOf(t, node, 4)))
}

// TestDeleteStreamWaitsForTheCatalogWatch deletes streams while the
// catalog watch is removing the same shards: DeleteStream must not return
// before every shard is marked removed and its data gone, whichever of the
// two began the removal. CI once saw a shard still open after the delete.
func TestDeleteStreamWaitsForTheCatalogWatch(t *testing.T) {
	n := nodetest.Start(t)
	node := n.Server.Node()
	ctx := t.Context()

	for round := range 20 {
		name := fmt.Sprintf("s%d", round)
		_, metas := createStream(t, node, name, 4, 0)
		var shards []*cluster.Shard
		for _, m := range metas {
			shards = append(shards, shardOf(t, node, m.ID))
		}
		_, err := node.DeleteStream(ctx, name, false)
		require.NoError(t, err)
		for _, sh := range shards {
			require.True(t, sh.Removed(), "round %d: shard %d is not marked removed after the delete", round, sh.Meta().ID)
		}
		stored, err := n.Server.Store().Shards()
		require.NoError(t, err)
		require.Empty(t, stored, "round %d: shards with data after the delete", round)
	}
}

// TestDeleteStreamRacingItsCreation deletes each stream while it is being
// created: the delete may land between CreateStream's write to etcd and
// the opening of its shards, and no shard of the deleted stream may stay
// open or keep data afterwards.
func TestDeleteStreamRacingItsCreation(t *testing.T) {
	n := nodetest.Start(t)
	node := n.Server.Node()
	ctx := t.Context()

	var ids []uint64
	for round := range 20 {
		name := fmt.Sprintf("s%d", round)
		deleted := make(chan error, 1)
		go func() {
			for {
				_, err := node.DeleteStream(ctx, name, false)
				if !errors.Is(err, cluster.ErrStreamNotFound) {
					deleted <- err
					return
				}
				runtime.Gosched()
			}
		}()
		m, _, err := node.CreateStream(ctx, cluster.StreamMeta{Name: name, ShardCount: 4, ReplicationFactor: 1})
		require.NoError(t, err)
		require.NoError(t, <-deleted)
		ids = append(ids, m.ShardIDs...)
	}
	require.EventuallyWithT(t, func(c *assert.CollectT) {
		for _, id := range ids {
			_, err := node.LocalShard(id)
			assert.ErrorIs(c, err, cluster.ErrShardNotFound, "shard %d of a deleted stream is open", id)
		}
		stored, err := n.Server.Store().Shards()
		assert.NoError(c, err)
		assert.Empty(c, stored, "shards of deleted streams with data")
	}, 5*time.Second, 50*time.Millisecond)
}

func TestRestartKeepsData(t *testing.T) {
	n := nodetest.Start(t)
	node := n.Server.Node()
	_, metas := createStream(t, node, "s", 2, 0)
	type state struct {
		committed uint64
		ents      []cluster.Entry
	}
	before := make(map[uint64]state)
	for i, m := range metas {
		sh := shardOf(t, node, m.ID)
		appendSeq(t, sh, fmt.Sprint("s", i), 5+i)
		before[m.ID] = state{committed(sh), readAll(t, sh)}
	}

	n.Restart(t)
	node = n.Server.Node()
	for i, m := range metas {
		sh := shardOf(t, node, m.ID)
		b := before[m.ID]
		// Committed is where it was, or one past when the group's
		// re-election entry (raft's own, no data) already committed.
		c := committed(sh)
		assert.GreaterOrEqual(t, c, b.committed, "shard %d", m.ID)
		assert.LessOrEqual(t, c, b.committed+1, "shard %d", m.ID)
		assert.Equal(t, b.ents, readAll(t, sh), "shard %d", m.ID)
		last, ok, err := sh.LastData()
		require.NoError(t, err)
		require.True(t, ok)
		assert.Equal(t, b.ents[len(b.ents)-1], last)

		// Appends right away: held while the group elects itself.
		data := []byte(fmt.Sprint("after-restart-", i))
		idx, at, err := sh.Append(t.Context(), data)
		require.NoError(t, err, "shard %d", m.ID)
		assert.Greater(t, idx, b.committed)
		assert.False(t, at.Before(last.AppendTime), "append time went back across the restart")
		ents, err := sh.Read(b.committed+1, 10, 1<<20)
		require.NoError(t, err)
		require.Len(t, ents, 1)
		assert.Equal(t, cluster.Entry{Index: idx, AppendTime: at, Batch: data}, ents[0])
	}
}

func TestCloseWhileAppending(t *testing.T) {
	n := nodetest.Start(t)
	node := n.Server.Node()
	_, metas := createStream(t, node, "s", 4, 0)

	type result struct {
		shard uint64
		a     appended
	}
	const appenders = 16
	var (
		mu     sync.Mutex
		ok     []result
		errs   []error
		wg     sync.WaitGroup
		closed = make(chan struct{})
	)
	for g := range appenders {
		sh := shardOf(t, node, metas[g%4].ID)
		wg.Go(func() {
			for i := 0; ; i++ {
				data := []byte(fmt.Sprintf("g%02d-%06d", g, i))
				idx, at, err := sh.Append(context.Background(), data)
				mu.Lock()
				if err != nil {
					errs = append(errs, err)
					mu.Unlock()
					return
				}
				ok = append(ok, result{sh.Meta().ID, appended{idx, at, data}})
				mu.Unlock()
			}
		})
	}
	require.Eventually(t, func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(ok) >= 200
	}, 10*time.Second, 5*time.Millisecond)

	go func() {
		assert.NoError(t, n.Server.Close())
		wg.Wait()
		close(closed)
	}()
	select {
	case <-closed:
	case <-time.After(20 * time.Second):
		t.Fatal("Close or an Append hangs")
	}

	require.Len(t, errs, appenders, "every appender stops with an error")
	for _, err := range errs {
		assert.ErrorIs(t, err, cluster.ErrClosed)
	}

	n.Restart(t)
	node = n.Server.Node()
	byShard := make(map[uint64]map[uint64]bool)
	for _, r := range ok {
		if byShard[r.shard] == nil {
			byShard[r.shard] = make(map[uint64]bool)
		}
		require.False(t, byShard[r.shard][r.a.index], "shard %d index %d acknowledged twice", r.shard, r.a.index)
		byShard[r.shard][r.a.index] = true
		sh := shardOf(t, node, r.shard)
		ents, err := sh.Read(r.a.index, 1, 1<<20)
		require.NoError(t, err)
		require.NotEmpty(t, ents, "shard %d index %d lost", r.shard, r.a.index)
		assert.Equal(t, cluster.Entry{Index: r.a.index, AppendTime: r.a.at, Batch: r.a.data}, ents[0])
	}
}

func TestRegistration(t *testing.T) {
	n := nodetest.Start(t)
	node := n.Server.Node()
	key := n.Cfg.Etcd.Prefix + "nodes/1"
	require.Equal(t, "/weir/nodes/1", key)

	readKey := func() (clientv3.LeaseID, cluster.NodeInfo) {
		t.Helper()
		cli, err := clientv3.New(clientv3.Config{
			Endpoints:   []string{n.Cfg.Etcd.Embedded.ClientListen},
			DialTimeout: 5 * time.Second,
		})
		require.NoError(t, err)
		defer cli.Close()
		resp, err := cli.Get(t.Context(), key)
		require.NoError(t, err)
		require.Len(t, resp.Kvs, 1, "%s is not registered", key)
		kv := resp.Kvs[0]
		require.NotZero(t, kv.Lease, "the registration must be under a lease")
		ttl, err := cli.TimeToLive(t.Context(), clientv3.LeaseID(kv.Lease))
		require.NoError(t, err)
		assert.Greater(t, ttl.TTL, int64(0), "lease %x is not alive", kv.Lease)
		assert.Equal(t, int64(n.Cfg.Etcd.LeaseTTL/time.Second), ttl.GrantedTTL)
		var ni cluster.NodeInfo
		require.NoError(t, json.Unmarshal(kv.Value, &ni))
		return clientv3.LeaseID(kv.Lease), ni
	}

	lease, ni := readKey()
	assert.Equal(t, uint64(1), ni.ID)
	assert.Equal(t, n.Cfg.GRPC.Advertise, ni.GRPCAddr)
	assert.Equal(t, n.Addr, ni.GRPCAddr)
	assert.True(t, ni.StartedAt.Equal(node.StartedAt()), "startedAt %s, want %s", ni.StartedAt, node.StartedAt())

	members, err := node.Members(t.Context())
	require.NoError(t, err)
	require.Len(t, members, 1)
	assert.Equal(t, uint64(1), members[0].ID)
	assert.Equal(t, n.Addr, members[0].GRPCAddr)
	assert.Equal(t, node.Self().ID, members[0].ID)
	assert.Equal(t, node.Self().GRPCAddr, members[0].GRPCAddr)

	// A restart registers again under a new lease.
	n.Restart(t)
	lease2, ni2 := readKey()
	assert.NotEqual(t, lease, lease2)
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{n.Cfg.Etcd.Embedded.ClientListen}, DialTimeout: 5 * time.Second})
	require.NoError(t, err)
	defer cli.Close()
	ttl, err := cli.TimeToLive(t.Context(), lease)
	require.NoError(t, err)
	assert.Equal(t, int64(-1), ttl.TTL, "the previous incarnation's lease %x was not revoked", lease)
	assert.Equal(t, n.Addr, ni2.GRPCAddr)
	members, err = n.Server.Node().Members(t.Context())
	require.NoError(t, err)
	require.Len(t, members, 1)
	assert.Equal(t, uint64(1), members[0].ID)
	assert.Equal(t, n.Addr, members[0].GRPCAddr)
}

func TestCreateStreamConcurrent(t *testing.T) {
	n := nodetest.Start(t)
	node := n.Server.Node()

	const creators = 8
	ids := make([][]uint64, creators)
	errs := make([]error, 2*creators)
	var wg sync.WaitGroup
	for i := range creators {
		wg.Go(func() {
			m, _, err := node.CreateStream(context.Background(), cluster.StreamMeta{Name: fmt.Sprint("s", i), ShardCount: 2, ReplicationFactor: 1})
			errs[i] = err
			ids[i] = m.ShardIDs
		})
		wg.Go(func() {
			_, _, errs[creators+i] = node.CreateStream(context.Background(), cluster.StreamMeta{Name: "same", ShardCount: 1, ReplicationFactor: 1})
		})
	}
	wg.Wait()
	var all []uint64
	for i := range creators {
		require.NoError(t, errs[i], "stream s%d", i)
		all = append(all, ids[i]...)
	}
	created := 0
	for _, err := range errs[creators:] {
		if err == nil {
			created++
		} else {
			assert.ErrorIs(t, err, cluster.ErrStreamExists)
		}
	}
	assert.Equal(t, 1, created, "exactly one creation of the same name succeeds")
	same, err := node.Stream("same")
	require.NoError(t, err)
	all = append(all, same.ShardIDs...)
	slices.Sort(all)
	want := make([]uint64, 2*creators+1)
	for i := range want {
		want[i] = uint64(i + 1)
	}
	assert.Equal(t, want, all, "shard ids are unique and leave no holes")
	for _, id := range all {
		_, err := node.Shard(id)
		assert.NoError(t, err, "shard %d", id)
	}
}

func TestDeleteStreamWhileAppending(t *testing.T) {
	n := nodetest.Start(t)
	node := n.Server.Node()
	_, metas := createStream(t, node, "s", 1, 0)
	sh := shardOf(t, node, metas[0].ID)

	const appenders = 8
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		count int
		errs  []error
	)
	for g := range appenders {
		wg.Go(func() {
			for i := 0; ; i++ {
				_, _, err := sh.Append(context.Background(), []byte(fmt.Sprint(g, "-", i)))
				mu.Lock()
				if err != nil {
					errs = append(errs, err)
					mu.Unlock()
					return
				}
				count++
				mu.Unlock()
			}
		})
	}
	require.Eventually(t, func() bool {
		mu.Lock()
		defer mu.Unlock()
		return count >= 100
	}, 10*time.Second, 5*time.Millisecond)
	_, err := node.DeleteStream(t.Context(), "s", false)
	require.NoError(t, err)
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("an Append hangs after its shard was deleted")
	}
	require.Len(t, errs, appenders)
	for _, err := range errs {
		assert.ErrorIs(t, err, cluster.ErrShardNotFound)
	}
	stored, err := n.Server.Store().Shards()
	require.NoError(t, err)
	assert.Empty(t, stored)
}
