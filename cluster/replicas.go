package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/raft/v3"
	"go.etcd.io/raft/v3/raftpb"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/weir-log/weir/api/peerpb"
)

// This file keeps every shard's replicas where the catalog says they are:
//
//   - shardChanged (called by the catalog watch for every shard created,
//     changed or deleted, by any node) opens the raft group of a replica
//     placed here and closes, deleting its data, one that is no longer;
//   - the reconcile loop, on the leader of each group, replaces a Dead
//     node's replicas in the catalog (placement picks the new node), then
//     walks raft's configuration towards the catalog's replica set one
//     change at a time: add the new node as a learner, promote it once it
//     has caught up, and only then remove the node it replaces, so the
//     group never has fewer voters than it started with; and it hands
//     leadership to the preferred leader (the first replica) when that node
//     is live and caught up, which spreads leaders as placement intended.
//
// The catalog is the source of truth for where replicas should be, raft for
// who votes; a leader that dies halfway leaves a state the next leader
// continues from, since every step is decided from the two alone.

// reconcileInterval is how often leaders compare raft with the catalog.
const reconcileInterval = time.Second

// confChangeBackoff spaces one group's configuration changes: raft accepts
// one pending change at a time and silently replaces another with an empty
// entry, so a change is proposed again only if it has not shown up by then.
const confChangeBackoff = 2 * time.Second

// transferBackoff spaces leadership transfers of one group, so a preferred
// leader that keeps failing to take over does not cost an election a second.
const transferBackoff = 10 * time.Second

// shardChanged applies a shard's new placement to this node. old is nil for
// a new shard, cur nil for a deleted one.
func (n *Node) shardChanged(old, cur *ShardMeta) {
	var id uint64
	switch {
	case cur != nil:
		id = cur.ID
	case old != nil:
		id = old.ID
	default:
		return
	}
	// The cache, not the event, says what the shard is now: it takes this
	// node's own writes before the watch delivers them, so a late create
	// event of a shard deleted here since finds it gone. Most events need
	// nothing here; the others are decided again on the engine loop, where
	// CreateStream and DeleteStream open and remove groups too, so that
	// none of them acts on what another has just changed.
	act := func() (m ShardMeta, open, remove bool) {
		_, isOpen := n.eng.shard(id)
		m, cached := n.cat.shard(id)
		return m, cur != nil && cached && n.hosts(m) && !isOpen, cur == nil && isOpen
	}
	if _, open, remove := act(); !open && !remove {
		return
	}
	err := n.eng.do(func() error {
		switch m, open, remove := act(); {
		case open:
			_, err := n.eng.addShard(m)
			return err
		case remove:
			// The stream was deleted: the group goes with it.
			return n.eng.removeShard(id)
		}
		return nil
	})
	if err != nil && !errors.Is(err, ErrClosed) {
		n.log.Error("applying the catalog's placement of a shard to this node", "shard", id, "err", err)
	}
	// A replica moved off this node stays until its group has removed it
	// from its configuration (dropMovedReplicas): until then it may still
	// be one of the votes the group needs.
}

// dropMovedReplicas deletes the replicas the catalog moved off this node
// once their group no longer counts them: this replica has applied its own
// removal, or a live replica of the new set has applied a configuration
// without this node. Until then the replica keeps its data and its vote, so
// a group whose new replicas are still catching up never loses the quorum
// of its old ones.
func (n *Node) dropMovedReplicas() {
	self := n.opts.Self.ID
	for _, id := range n.eng.shardIDs() {
		m, ok := n.cat.shard(id)
		if !ok || n.hosts(m) {
			continue
		}
		s, ok := n.eng.shard(id)
		if !ok {
			continue
		}
		if s.member(self) && !n.removedBy(m) {
			continue
		}
		// removedBy may have taken seconds: the catalog may have placed the
		// replica here again, or the stream gone, meanwhile.
		dropped := false
		err := n.eng.do(func() error {
			if m, ok := n.cat.shard(id); !ok || n.hosts(m) {
				return nil
			}
			dropped = true
			return n.eng.removeShard(id)
		})
		if err != nil && !errors.Is(err, ErrClosed) {
			n.log.Error("deleting a replica moved off this node", "shard", id, "err", err)
			continue
		}
		if dropped {
			n.log.Info("deleted a replica moved off this node", "shard", id, "replicas", m.Replicas)
		}
	}
}

// removedBy asks a replica of m's current set whether its applied
// configuration leaves this node out.
func (n *Node) removedBy(m ShardMeta) bool {
	for _, r := range m.Replicas {
		if r == n.opts.Self.ID || !n.isLive(r) {
			continue
		}
		cli, err := n.peers.client(r)
		if err != nil {
			continue
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		resp, err := cli.ShardState(ctx, &peerpb.ShardStateRequest{ShardId: m.ID})
		cancel()
		if err != nil || (len(resp.GetVoters()) == 0 && len(resp.GetLearners()) == 0) {
			continue
		}
		self := n.opts.Self.ID
		return !slices.Contains(resp.GetVoters(), self) && !slices.Contains(resp.GetLearners(), self)
	}
	return false
}

// reconcile does one pass over the groups this node leads, and drops the
// replicas moved off it.
func (n *Node) reconcile() {
	n.dropMovedReplicas()
	var led []ShardMeta
	for _, m := range n.cat.allShards() {
		if s, ok := n.eng.shard(m.ID); ok && s.leader.Load() == n.opts.Self.ID {
			led = append(led, m)
		}
	}
	for _, m := range led {
		if dead := n.deadReplicas(m); len(dead) > 0 {
			if err := n.replaceDead(m, dead); err != nil {
				n.log.Warn("re-placing the replicas of a dead node", "shard", m.ID, "dead", dead, "err", err)
			}
			continue // the catalog watch brings the new set; act on it next pass
		}
		_ = n.eng.do(func() error {
			if s, ok := n.eng.shard(m.ID); ok {
				n.eng.reconfigure(s, m, n.isLive)
			}
			return nil
		})
	}
}

// deadReplicas lists the replicas of m on Dead nodes.
func (n *Node) deadReplicas(m ShardMeta) []uint64 {
	var dead []uint64
	for _, r := range m.Replicas {
		if mem, ok := n.member(r); ok && mem.State == NodeDead {
			dead = append(dead, r)
		}
	}
	return dead
}

// replaceDead puts a live node in place of each dead replica of m in the
// catalog, guarded by m's revision so two leaders (an old one unaware it was
// deposed) cannot both rewrite it. The preferred leader keeps its position,
// so a dead preferred leader's replacement becomes preferred.
func (n *Node) replaceDead(m ShardMeta, dead []uint64) error {
	nodes := placeNodesOf(n.liveMembers())
	load := n.replicaLoad()
	have := slices.Clone(m.Replicas)
	next := slices.Clone(m.Replicas)
	for i, r := range next {
		if !slices.Contains(dead, r) {
			continue
		}
		pick, ok := replaceReplica(nodes, fmt.Sprintf("%s/%d", m.Stream, m.ID), have, n.opts.LoadBound, load)
		if !ok {
			return fmt.Errorf("no live node outside the replica set %v to take node %d's replica", m.Replicas, r)
		}
		next[i] = pick
		have = append(have, pick)
		load[pick]++
	}
	ctx, cancel := n.metaCtx(context.Background())
	defer cancel()
	if err := n.cat.setReplicas(ctx, m, next); err != nil {
		return n.metaErr(err)
	}
	n.log.Info("re-placed the replicas of a dead node", "shard", m.ID, "stream", m.Stream, "dead", dead, "from", m.Replicas, "to", next)
	return nil
}

// reconfigure moves one group's raft configuration a step towards the
// catalog's replica set m.Replicas, and its leadership towards the preferred
// leader. REQUIRES: the loop goroutine; this node leads the group.
func (e *engine) reconfigure(s *Shard, m ShardMeta, live func(uint64) bool) {
	st := s.rn.Status()
	if st.RaftState != raft.StateLeader {
		return
	}
	now := time.Now()
	voters := st.Config.Voters.IDs()
	learners := st.Config.Learners
	self := e.nodeID
	caughtUp := func(id uint64) bool {
		pr, ok := st.Progress[id]
		return ok && pr.Match >= st.GetCommit() && pr.RecentActive
	}
	var cc *raftpb.ConfChange
	for _, r := range m.Replicas {
		_, isVoter := voters[r]
		_, isLearner := learners[r]
		switch {
		case !isVoter && !isLearner:
			cc = &raftpb.ConfChange{Type: raftpb.ConfChangeAddLearnerNode.Enum(), NodeId: &r}
		case isLearner && caughtUp(r):
			cc = &raftpb.ConfChange{Type: raftpb.ConfChangeAddNode.Enum(), NodeId: &r}
		}
		if cc != nil {
			break
		}
	}
	if cc == nil {
		allVoting := true
		for _, r := range m.Replicas {
			if _, ok := voters[r]; !ok {
				allVoting = false
			}
		}
		for v := range voters {
			if !allVoting || slices.Contains(m.Replicas, v) {
				continue
			}
			if v == self {
				// The leader leaves last: hand over to a caught-up
				// replica first; the new leader removes this node.
				for _, r := range m.Replicas {
					if caughtUp(r) && live(r) && now.Sub(s.transferAt) >= transferBackoff {
						s.transferAt = now
						s.rn.TransferLeader(r)
						return
					}
				}
				continue
			}
			cc = &raftpb.ConfChange{Type: raftpb.ConfChangeRemoveNode.Enum(), NodeId: &v}
			break
		}
	}
	if cc == nil {
		// A learner the catalog gave up on (it died before it caught
		// up, and was replaced) leaves too.
		for l := range learners {
			if !slices.Contains(m.Replicas, l) {
				cc = &raftpb.ConfChange{Type: raftpb.ConfChangeRemoveNode.Enum(), NodeId: &l}
				break
			}
		}
	}
	if cc != nil {
		if now.Sub(s.confAt) < confChangeBackoff {
			return
		}
		s.confAt = now
		if err := s.rn.ProposeConfChange(cc); err != nil {
			e.log.Warn("proposing a configuration change", "shard", s.meta.ID, "change", cc.GetType().String(), "node", cc.GetNodeId(), "err", err)
			return
		}
		e.log.Info("configuration change proposed", "shard", s.meta.ID, "change", cc.GetType().String(), "node", cc.GetNodeId())
		return
	}
	if pref := m.Replicas[0]; pref != self && live(pref) && now.Sub(s.transferAt) >= transferBackoff {
		if _, ok := voters[pref]; ok {
			if pr, ok := st.Progress[pref]; ok && pr.RecentActive && pr.Match == st.Progress[self].Match {
				s.transferAt = now
				e.log.Info("handing leadership to the preferred leader", "shard", s.meta.ID, "to", pref)
				s.rn.TransferLeader(pref)
			}
		}
	}
}

// PlaceKey picks the node for a resource that any node can serve and no
// placement tracks (a partition key, a shard reader not created yet): the
// key's place on the ring of the Running members (Starting ones if none
// runs), weighted, so every node answers the same and a member joining or
// leaving moves few keys. This node if it knows no member.
func (n *Node) PlaceKey(key string) NodeInfo {
	var running, starting []NodeInfo
	for _, m := range n.Cluster() {
		switch m.State {
		case NodeRunning:
			running = append(running, m.NodeInfo)
		case NodeStarting:
			starting = append(starting, m.NodeInfo)
		}
	}
	if len(running) == 0 {
		running = starting
	}
	set := placeItems(placeNodesOf(running), []string{key}, 1, n.opts.LoadBound, nil)[key]
	for _, m := range running {
		if len(set) > 0 && m.ID == set[0] {
			return m
		}
	}
	return n.opts.Self
}

// placeNodesOf is the placement view of live members.
func placeNodesOf(members []NodeInfo) []placeNode {
	out := make([]placeNode, len(members))
	for i, m := range members {
		out[i] = placeNode{ID: m.ID, Weight: m.Weight}
	}
	return out
}

// replicaLoad counts the replicas each node carries, from the catalog.
func (n *Node) replicaLoad() map[uint64]int {
	load := make(map[uint64]int)
	for _, m := range n.cat.allShards() {
		for _, r := range m.Replicas {
			load[r]++
		}
	}
	return load
}

// ShardLeader is the node that serves a shard: its raft leader as this node
// knows it (from its own replica, or from a node it forwards to), else its
// first live replica. ErrShardNotFound, ErrNodeUnavailable.
func (n *Node) ShardLeader(id uint64) (NodeInfo, error) {
	m, ok := n.cat.shard(id)
	if !ok {
		return NodeInfo{}, fmt.Errorf("%w: %d", ErrShardNotFound, id)
	}
	if s, ok := n.eng.shard(id); ok {
		if lead := s.leader.Load(); lead != 0 {
			if mem, ok := n.member(lead); ok && n.isLive(lead) {
				return mem.NodeInfo, nil
			}
		}
	}
	for _, r := range m.Replicas {
		if mem, ok := n.member(r); ok && n.isLive(r) {
			return mem.NodeInfo, nil
		}
	}
	return NodeInfo{}, fmt.Errorf("%w: no replica of shard %d (nodes %v) is live", ErrNodeUnavailable, id, m.Replicas)
}

// metaCtx bounds a metadata operation by Options.MetadataTimeout, so a call
// made while etcd is unreachable fails instead of hanging.
func (n *Node) metaCtx(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, n.opts.MetadataTimeout)
}

// metaErr classifies a failed metadata operation: etcd unreachable (or too
// slow to answer within the timeout) becomes ErrMetadataUnavailable, which
// clients see as Unavailable; anything else is returned as is.
func (n *Node) metaErr(err error) error {
	if err == nil || errors.Is(err, ErrMetadataUnavailable) {
		return err
	}
	switch {
	case errors.Is(err, context.DeadlineExceeded),
		errors.Is(err, rpctypes.ErrTimeout),
		errors.Is(err, rpctypes.ErrTimeoutDueToLeaderFail),
		errors.Is(err, rpctypes.ErrTimeoutDueToConnectionLost),
		errors.Is(err, rpctypes.ErrNoLeader),
		errors.Is(err, clientv3.ErrNoAvailableEndpoints),
		status.Code(errors.Unwrap(err)) == codes.Unavailable:
		return fmt.Errorf("%w (waited %v): %w", ErrMetadataUnavailable, n.opts.MetadataTimeout, err)
	}
	return err
}

// setReplicas rewrites a shard's replica set, if the shard is unchanged in
// etcd since m was read.
func (c *catalog) setReplicas(ctx context.Context, m ShardMeta, replicas []uint64) error {
	key := c.shardKey(m.ID)
	resp, err := c.cli.Get(ctx, key)
	if err != nil {
		return fmt.Errorf("cluster: reading shard %d: %w", m.ID, err)
	}
	if len(resp.Kvs) != 1 {
		return fmt.Errorf("%w: %d", ErrShardNotFound, m.ID)
	}
	var cur ShardMeta
	if err := json.Unmarshal(resp.Kvs[0].Value, &cur); err != nil {
		return fmt.Errorf("cluster: decoding etcd key %q: %w", key, err)
	}
	if !slices.Equal(cur.Replicas, m.Replicas) {
		return fmt.Errorf("cluster: shard %d's replicas changed meanwhile (%v, not %v)", m.ID, cur.Replicas, m.Replicas)
	}
	cur.Replicas = replicas
	if len(cur.Initial) == 0 {
		cur.Initial = m.Replicas
	}
	v, _ := json.Marshal(cur)
	txn, err := c.cli.Txn(ctx).If(clientv3.Compare(clientv3.ModRevision(key), "=", resp.Kvs[0].ModRevision)).
		Then(clientv3.OpPut(key, string(v))).Commit()
	if err != nil {
		return fmt.Errorf("cluster: updating shard %d: %w", m.ID, err)
	}
	if !txn.Succeeded {
		return fmt.Errorf("cluster: shard %d changed meanwhile", m.ID)
	}
	return nil // the catalog watch brings the change to every node, this one too
}
