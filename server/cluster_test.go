package server_test

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/proto"

	"github.com/weir-log/weir/api/hstreampb"
	"github.com/weir-log/weir/api/wire"
	"github.com/weir-log/weir/cluster"
	"github.com/weir-log/weir/conf"
	"github.com/weir-log/weir/internal/nodetest"
)

// startCluster starts n nodes in this process: node 1 runs the embedded
// etcd, the others join it with etcd.endpoints. Closing node 1 stops the
// etcd, so tests kill other nodes.
func startCluster(t *testing.T, n int, mutate ...func(*conf.Config)) []*nodetest.Node {
	t.Helper()
	short := func(c *conf.Config) {
		c.Etcd.LeaseTTL = 2 * time.Second
		c.Cluster.DeadAfter = 3 * time.Second
	}
	first := nodetest.Start(t, append([]func(*conf.Config){short, func(c *conf.Config) { c.NodeID = 1 }}, mutate...)...)
	nodes := []*nodetest.Node{first}
	for i := 2; i <= n; i++ {
		nodes = append(nodes, nodetest.Start(t, append([]func(*conf.Config){short, func(c *conf.Config) {
			c.NodeID = uint64(i)
			c.Etcd.Endpoints = []string{first.Cfg.Etcd.Embedded.ClientListen}
		}}, mutate...)...))
	}
	// Every node sees every other before the test goes on.
	require.Eventually(t, func() bool {
		for _, nd := range nodes {
			ms, err := nd.Server.Node().Members(t.Context())
			if err != nil || len(ms) != n {
				return false
			}
		}
		return true
	}, 10*time.Second, 20*time.Millisecond, "the nodes never all saw each other")
	return nodes
}

// replicaEntries reads a node's own replica of a shard; nil if it has none.
func replicaEntries(t *testing.T, nd *nodetest.Node, shard uint64) []cluster.Entry {
	t.Helper()
	sh, err := nd.Server.Node().LocalShard(shard)
	if err != nil {
		return nil // not (yet) hosted there: callers poll
	}
	var out []cluster.Entry
	for from := uint64(0); ; {
		ents, err := sh.Read(from, 1000, 64<<20)
		require.NoError(t, err)
		if len(ents) == 0 {
			return out
		}
		out = append(out, ents...)
		from = ents[len(ents)-1].Index + 1
	}
}

// appendVia appends through one node's gRPC API, retrying what the cluster
// answers Unavailable (no leader yet, a leader change).
func appendVia(t *testing.T, nd *nodetest.Node, stream string, shard uint64, key string, i int) *hstreampb.RecordId {
	t.Helper()
	b, err := wire.EncodeBatch([]*hstreampb.HStreamRecord{{
		Header:  &hstreampb.HStreamRecordHeader{Flag: hstreampb.HStreamRecordHeader_RAW, Key: key},
		Payload: fmt.Appendf(nil, "%s-%d", key, i),
	}}, hstreampb.CompressionType_None)
	require.NoError(t, err)
	deadline := time.Now().Add(20 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
		resp, err := nd.API.Append(ctx, &hstreampb.AppendRequest{StreamName: stream, ShardId: shard, Records: b})
		cancel()
		if err == nil {
			return resp.GetRecordIds()[0]
		}
		if time.Now().After(deadline) {
			t.Fatalf("append %s-%d through %s: %v", key, i, nd.Addr, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestClusterReplicatesEveryAppend(t *testing.T) {
	nodes := startCluster(t, 3)
	ctx := t.Context()
	_, err := nodes[1].API.CreateStream(ctx, &hstreampb.Stream{StreamName: "rf3", ShardCount: 2, ReplicationFactor: 3})
	require.NoError(t, err)
	metas, err := nodes[1].Server.Node().StreamShards("rf3")
	require.NoError(t, err)
	for _, m := range metas {
		require.Len(t, m.Replicas, 3, "shard %d", m.ID)
	}
	// Every node takes appends for every shard, whoever leads it.
	const per = 30
	for i := range per {
		for _, nd := range nodes {
			for _, m := range metas {
				appendVia(t, nd, "rf3", m.ID, fmt.Sprintf("n%d", nd.Cfg.NodeID), i)
			}
		}
	}
	// Every replica ends up with the same entries.
	for _, m := range metas {
		require.Eventually(t, func() bool {
			want := replicaEntries(t, nodes[0], m.ID)
			if len(want) != per*len(nodes) {
				return false
			}
			for _, nd := range nodes[1:] {
				if !sameEntries(want, replicaEntries(t, nd, m.ID)) {
					return false
				}
			}
			return true
		}, 10*time.Second, 50*time.Millisecond, "shard %d's replicas differ", m.ID)
	}
}

func sameEntries(a, b []cluster.Entry) bool {
	return slices.EqualFunc(a, b, func(x, y cluster.Entry) bool {
		return x.Index == y.Index && x.AppendTime.Equal(y.AppendTime) && proto.Equal(batchOf(x), batchOf(y))
	})
}

func batchOf(e cluster.Entry) *hstreampb.BatchedRecord {
	var br hstreampb.BatchedRecord
	_ = proto.Unmarshal(e.Batch, &br)
	return &br
}

// leaderOf waits for a shard to have a leader every node agrees on.
func leaderOf(t *testing.T, nodes []*nodetest.Node, shard uint64) uint64 {
	t.Helper()
	var lead uint64
	require.Eventually(t, func() bool {
		lead = 0
		for _, nd := range nodes {
			sh, err := nd.Server.Node().LocalShard(shard)
			if err != nil {
				continue
			}
			l, ok := shardLeader(sh)
			if !ok || (lead != 0 && l != lead) {
				return false
			}
			lead = l
		}
		return lead != 0
	}, 10*time.Second, 20*time.Millisecond, "shard %d has no agreed leader", shard)
	return lead
}

func shardLeader(sh *cluster.Shard) (uint64, bool) {
	l := sh.Leader()
	return l, l != 0
}

func TestClusterFailoverAndCatchUp(t *testing.T) {
	nodes := startCluster(t, 3)
	_, err := nodes[0].API.CreateStream(t.Context(), &hstreampb.Stream{StreamName: "fo", ShardCount: 6, ReplicationFactor: 3})
	require.NoError(t, err)
	metas, err := nodes[0].Server.Node().StreamShards("fo")
	require.NoError(t, err)
	// Node 1 holds the etcd, so the victim is node 3; pick a shard it
	// leads (preferred leaders spread over the nodes).
	victim := nodes[2]
	var shard uint64
	require.Eventually(t, func() bool {
		for _, m := range metas {
			if leaderOf(t, nodes, m.ID) == victim.Cfg.NodeID {
				shard = m.ID
				return true
			}
		}
		return false
	}, 15*time.Second, 100*time.Millisecond, "node 3 leads none of the 6 shards")
	for i := range 20 {
		appendVia(t, nodes[1], "fo", shard, "k", i)
	}
	victim.Close()
	start := time.Now()
	appendVia(t, nodes[1], "fo", shard, "k", 20)
	t.Logf("appends resumed %v after the leader stopped", time.Since(start).Round(time.Millisecond))
	for i := 21; i < 40; i++ {
		appendVia(t, nodes[1], "fo", shard, "k", i)
	}
	// The stopped node comes back and catches up with what it missed.
	victim.Reopen(t)
	require.Eventually(t, func() bool {
		want := replicaEntries(t, nodes[0], shard)
		return len(want) == 40 && sameEntries(want, replicaEntries(t, nodes[1], shard)) &&
			sameEntries(want, replicaEntries(t, victim, shard))
	}, 15*time.Second, 100*time.Millisecond, "the restarted replica did not catch up")
}

func TestClusterReplacesADeadNodesReplicas(t *testing.T) {
	nodes := startCluster(t, 4)
	_, err := nodes[0].API.CreateStream(t.Context(), &hstreampb.Stream{StreamName: "rp", ShardCount: 4, ReplicationFactor: 3})
	require.NoError(t, err)
	metas, err := nodes[0].Server.Node().StreamShards("rp")
	require.NoError(t, err)
	for _, m := range metas {
		for i := range 10 {
			appendVia(t, nodes[1], "rp", m.ID, "k", i)
		}
	}
	dead := nodes[3]
	deadID := dead.Cfg.NodeID
	dead.Close()
	live := nodes[:3]
	node := nodes[0].Server.Node()
	require.Eventually(t, func() bool {
		ms, err := node.StreamShards("rp")
		if err != nil {
			return false
		}
		for _, m := range ms {
			if len(m.Replicas) != 3 || slices.Contains(m.Replicas, deadID) {
				return false
			}
		}
		return true
	}, 30*time.Second, 100*time.Millisecond, "node %d's replicas were not re-placed", deadID)
	ms, err := node.StreamShards("rp")
	require.NoError(t, err)
	for _, m := range ms {
		appendVia(t, nodes[1], "rp", m.ID, "k", 10)
		require.Eventually(t, func() bool {
			var want []cluster.Entry
			for _, id := range m.Replicas {
				got := replicaEntries(t, live[id-1], m.ID)
				if want == nil {
					want = got
				}
				if len(got) != 11 || !sameEntries(want, got) {
					return false
				}
			}
			return true
		}, 20*time.Second, 100*time.Millisecond, "shard %d's new replica set %v does not hold the same entries", m.ID, m.Replicas)
	}
}

func TestClusterTrimReachesEveryReplica(t *testing.T) {
	nodes := startCluster(t, 3)
	_, err := nodes[0].API.CreateStream(t.Context(), &hstreampb.Stream{StreamName: "tr", ShardCount: 1, ReplicationFactor: 3})
	require.NoError(t, err)
	metas, err := nodes[0].Server.Node().StreamShards("tr")
	require.NoError(t, err)
	id := metas[0].ID
	var ids []*hstreampb.RecordId
	for i := range 10 {
		ids = append(ids, appendVia(t, nodes[0], "tr", id, "k", i))
	}
	// Trim through the fifth record from whichever replica is not the
	// leader: the trim goes through raft, so every replica drops the same
	// prefix.
	lead := leaderOf(t, nodes, id)
	follower := nodes[lead%3]
	sh, err := follower.Server.Node().LocalShard(id)
	require.NoError(t, err)
	through := ids[4].GetBatchId()
	require.NoError(t, sh.Trim(t.Context(), through))
	for _, nd := range nodes {
		require.Eventually(t, func() bool {
			ents := replicaEntries(t, nd, id)
			return len(ents) == 5 && ents[0].Index == ids[5].GetBatchId()
		}, 10*time.Second, 20*time.Millisecond, "node %d did not trim through %d", nd.Cfg.NodeID, through)
	}
}
