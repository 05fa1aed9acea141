package cluster

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	clientv3 "go.etcd.io/etcd/client/v3"
)

func states(ms []Member) map[uint64]NodeState {
	out := make(map[uint64]NodeState, len(ms))
	for _, m := range ms {
		out[m.ID] = m.State
	}
	return out
}

// A node sees another Starting then Running; once it closes (its lease is
// revoked) Unavailable, and Dead after DeadAfter, each change waking
// OnMembershipChange. The node stays in Cluster, and leaves Members.
func TestMembershipStates(t *testing.T) {
	te := startTestEtcd(t)
	const deadAfter = 700 * time.Millisecond
	short := func(o *Options) { o.DeadAfter = deadAfter }
	b := startTestNode(t, te, 2, short)
	a := startTestNode(t, te, 1, short)
	eventually(t, func() bool {
		return states(b.Cluster())[1] == NodeRunning
	}, "node 2 does not see node 1 running: %v", b.Cluster())

	cl := b.Cluster()
	require.Len(t, cl, 2)
	require.Equal(t, uint64(1), cl[0].ID)
	require.Equal(t, a.Self().GRPCAddr, cl[0].GRPCAddr)
	require.Equal(t, uint64(2), cl[1].ID)
	require.Equal(t, NodeRunning, cl[1].State)
	members, err := b.Members(t.Context())
	require.NoError(t, err)
	require.Len(t, members, 2)
	require.True(t, b.isLive(1))
	addr, ok := b.addrOf(1)
	require.True(t, ok)
	require.Equal(t, a.Self().GRPCAddr, addr)

	// nodes/<id> holds the NodeInfo and the state; members/<id> the
	// NodeInfo, without a lease.
	cli := te.dial(t)
	resp, err := cli.Get(t.Context(), a.cat.nodeKey(1))
	require.NoError(t, err)
	require.Len(t, resp.Kvs, 1)
	var rec liveRecord
	require.NoError(t, json.Unmarshal(resp.Kvs[0].Value, &rec))
	require.Equal(t, stateRunning, rec.State)
	require.True(t, a.Self().StartedAt.Equal(rec.StartedAt))
	rec.StartedAt = a.Self().StartedAt
	require.Equal(t, a.Self(), rec.NodeInfo)
	resp, err = cli.Get(t.Context(), a.cat.memberKey(1))
	require.NoError(t, err)
	require.Len(t, resp.Kvs, 1)
	require.Zero(t, resp.Kvs[0].Lease)

	changed := b.OnMembershipChange()
	closedAt := time.Now()
	require.NoError(t, a.Close())
	select {
	case <-changed:
	case <-time.After(10 * time.Second):
		t.Fatal("no membership change when node 1 left")
	}
	m, ok := b.member(1)
	require.True(t, ok)
	require.Equal(t, NodeUnavailable, m.State)
	require.WithinDuration(t, closedAt, m.Since, 5*time.Second)
	require.False(t, b.isLive(1))
	_, ok = b.addrOf(1)
	require.False(t, ok)
	members, err = b.Members(t.Context())
	require.NoError(t, err)
	require.Len(t, members, 1)
	require.Equal(t, uint64(2), members[0].ID)

	// Dead after DeadAfter, with a change to wake the re-placement loop.
	changed = b.OnMembershipChange()
	select {
	case <-changed:
	case <-time.After(10 * time.Second):
		t.Fatal("no membership change when node 1 turned dead")
	}
	m, _ = b.member(1)
	require.Equal(t, NodeDead, m.State)
	require.GreaterOrEqual(t, time.Since(closedAt), deadAfter)
	require.Equal(t, map[uint64]NodeState{1: NodeDead, 2: NodeRunning}, states(b.Cluster()))
}

// A node that was gone before this one started is Unavailable since this
// node's start.
func TestMembershipRemembersGoneNodes(t *testing.T) {
	te := startTestEtcd(t)
	a := startTestNode(t, te, 1)
	require.NoError(t, a.Close())
	b := startTestNode(t, te, 2)
	m, ok := b.member(1)
	require.True(t, ok)
	require.Equal(t, NodeUnavailable, m.State)
	require.Equal(t, b.StartedAt(), m.Since)
	require.Equal(t, []uint64{2}, ids(b.liveMembers()))
}

func ids(ns []NodeInfo) []uint64 {
	out := make([]uint64, len(ns))
	for i, n := range ns {
		out[i] = n.ID
	}
	return out
}

// A node whose lease expires (here: revoked behind its back) registers
// again under a new lease, in its state, and the others see it back.
func TestMembershipReRegistersAfterLeaseLoss(t *testing.T) {
	te := startTestEtcd(t)
	a := startTestNode(t, te, 1)
	b := startTestNode(t, te, 2)
	eventually(t, func() bool { return states(b.Cluster())[1] == NodeRunning }, "node 2 does not see node 1 running")

	old := a.leaseID()
	_, err := te.dial(t).Revoke(t.Context(), old)
	require.NoError(t, err)
	eventually(t, func() bool { return a.leaseID() != old }, "node 1 did not register again")
	eventually(t, func() bool { return states(b.Cluster())[1] == NodeRunning }, "node 2 does not see node 1 back: %v", b.Cluster())
	resp, err := te.dial(t).Get(t.Context(), a.cat.nodeKey(1))
	require.NoError(t, err)
	require.Len(t, resp.Kvs, 1)
	require.Equal(t, a.leaseID(), clientv3.LeaseID(resp.Kvs[0].Lease))
}
