package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// NodeState is a member's state as DescribeCluster reports it.
type NodeState int

const (
	NodeStarting    NodeState = iota // registered, still opening its shards
	NodeRunning                      // serving
	NodeUnavailable                  // its lease expired; not yet Dead
	NodeDead                         // unavailable for longer than Options.DeadAfter
)

func (s NodeState) String() string {
	switch s {
	case NodeStarting:
		return "Starting"
	case NodeRunning:
		return "Running"
	case NodeUnavailable:
		return "Unavailable"
	case NodeDead:
		return "Dead"
	}
	return "NodeState(" + strconv.Itoa(int(s)) + ")"
}

// Member is one node known to the cluster, live or not.
type Member struct {
	NodeInfo
	State NodeState
	Since time.Time // when it entered State (as this node saw it)
}

func (m Member) live() bool { return m.State == NodeStarting || m.State == NodeRunning }

// The states a node writes in its live key (nodes/<id>).
const (
	stateStarting = "starting"
	stateRunning  = "running"
)

// liveRecord is the value of nodes/<id>: the node's registration and how
// far it got. NodeInfo is embedded, so the JSON is NodeInfo's plus "state"
// and decodes as a NodeInfo too.
type liveRecord struct {
	NodeInfo
	State string `json:"state,omitempty"`
}

// membership is the node's cache of the cluster's members, fed by a watch
// on members/ (every node that ever registered) and nodes/ (those whose
// lease is alive). A member whose live key goes is Unavailable from then
// on, and Dead once that lasts longer than DeadAfter. While etcd is
// unreachable nothing changes here: an outage of etcd is not an outage of
// the nodes.
type membership struct {
	started atomic.Bool  // startMembership ran
	lease   atomic.Int64 // this node's current lease (a re-registration replaces it)

	mu      sync.Mutex
	loaded  bool                  // the first load is done
	known   map[uint64]NodeInfo   // members/
	live    map[uint64]liveRecord // nodes/
	since   map[uint64]time.Time  // when each live member took its state
	gone    map[uint64]time.Time  // when each known member's live key went
	changed chan struct{}         // closed (and replaced) on every change
	state   string                // this node's own state, as written in nodes/<id>
}

func newMembership() membership {
	return membership{
		known:   make(map[uint64]NodeInfo),
		live:    make(map[uint64]liveRecord),
		since:   make(map[uint64]time.Time),
		gone:    make(map[uint64]time.Time),
		changed: make(chan struct{}),
		state:   stateStarting,
	}
}

func (n *Node) deadAfter() time.Duration { return n.opts.DeadAfter }

// leaseID is this node's current lease: the one register granted, or the
// one a re-registration after it expired did.
func (n *Node) leaseID() clientv3.LeaseID { return clientv3.LeaseID(n.cat.mem.lease.Load()) }

// register puts this node under a fresh lease at nodes/<id>, in state
// starting, and records it at members/<id> for good. The key may still be
// held by this node's previous incarnation (a crash leaves its lease alive
// for up to its TTL): the lease id kept in the data directory says so, and
// that lease is revoked. A key held by any other lease means another live
// node has this id, and start-up fails.
//
// The lease is kept alive until Close. If it expires all the same (etcd was
// unreachable for longer than its TTL), the node registers again under a new
// lease once etcd is back.
func (n *Node) register(ctx context.Context) error {
	cli, key := n.opts.Etcd, n.cat.nodeKey(n.opts.Self.ID)
	resp, err := cli.Get(ctx, key)
	if err != nil {
		return fmt.Errorf("cluster: reading node registration: %w", err)
	}
	if len(resp.Kvs) == 1 {
		held := clientv3.LeaseID(resp.Kvs[0].Lease)
		prev, _ := os.ReadFile(n.leaseFile())
		if strconv.FormatInt(int64(held), 16) != strings.TrimSpace(string(prev)) {
			return fmt.Errorf("cluster: node id %d is already registered by a live node (%s); give this node another node-id", n.opts.Self.ID, resp.Kvs[0].Value)
		}
		if _, err := cli.Revoke(ctx, held); err != nil {
			return fmt.Errorf("cluster: revoking this node's previous lease: %w", err)
		}
	}
	lease, err := n.putRegistration(ctx)
	if err != nil {
		return err
	}
	keepCtx, cancel := context.WithCancel(context.Background())
	ka, err := cli.KeepAlive(keepCtx, lease)
	if err != nil {
		cancel()
		return fmt.Errorf("cluster: keeping the node lease alive: %w", err)
	}
	n.goAttach(func() { n.keepLease(ka, cancel) })
	return nil
}

func (n *Node) leaseFile() string { return filepath.Join(n.opts.DataDir, "node.lease") }

// putRegistration grants a lease, keeps its id in the data directory and
// writes nodes/<id> (under it, with the node's current state) and
// members/<id>, if no lease holds nodes/<id>.
func (n *Node) putRegistration(ctx context.Context) (clientv3.LeaseID, error) {
	cli, key := n.opts.Etcd, n.cat.nodeKey(n.opts.Self.ID)
	grant, err := cli.Grant(ctx, int64(n.opts.LeaseTTL/time.Second))
	if err != nil {
		return 0, fmt.Errorf("cluster: granting the node lease: %w", err)
	}
	if err := writeFileSync(n.leaseFile(), []byte(strconv.FormatInt(int64(grant.ID), 16))); err != nil {
		return 0, err
	}
	n.cat.mem.mu.Lock()
	live, _ := json.Marshal(liveRecord{NodeInfo: n.opts.Self, State: n.cat.mem.state})
	n.cat.mem.mu.Unlock()
	info, _ := json.Marshal(n.opts.Self)
	txn, err := cli.Txn(ctx).If(clientv3.Compare(clientv3.Version(key), "=", 0)).
		Then(clientv3.OpPut(key, string(live), clientv3.WithLease(grant.ID)),
			clientv3.OpPut(n.cat.memberKey(n.opts.Self.ID), string(info))).Commit()
	if err != nil {
		return 0, fmt.Errorf("cluster: registering node %d: %w", n.opts.Self.ID, err)
	}
	if !txn.Succeeded {
		return 0, fmt.Errorf("cluster: node id %d was registered by another node while this one started", n.opts.Self.ID)
	}
	n.cat.mem.lease.Store(int64(grant.ID))
	return grant.ID, nil
}

// keepLease watches the lease's keep-alive responses until Close. When
// they stop (the lease expired, or etcd could not be reached for a TTL), it
// registers the node again under a new lease, trying until etcd answers.
func (n *Node) keepLease(ka <-chan *clientv3.LeaseKeepAliveResponse, cancel context.CancelFunc) {
	for {
		select {
		case <-n.stop:
			cancel()
			return
		case _, ok := <-ka:
			if ok {
				continue
			}
			cancel()
			n.log.Warn("the node lease could not be renewed (etcd unreachable for longer than its TTL?); renewing it, or registering again, once etcd answers",
				"lease", fmt.Sprintf("%x", n.leaseID()))
			if ka, cancel = n.reregister(); ka == nil {
				return
			}
		}
	}
}

// reregister registers the node under a new lease and keeps that alive,
// retrying with back-off; it returns nil once n.stop is closed.
func (n *Node) reregister() (<-chan *clientv3.LeaseKeepAliveResponse, context.CancelFunc) {
	cli := n.opts.Etcd
	for wait := minBackoff; ; wait = nextBackoff(wait) {
		ctx, cancel := n.stopContext()
		ka, err := func() (<-chan *clientv3.LeaseKeepAliveResponse, error) {
			opCtx, opCancel := context.WithTimeout(ctx, 5*time.Second)
			defer opCancel()
			// The client gives up on a lease it could not renew for a
			// TTL, but etcd may not have expired it (a restarted etcd
			// gives its leases a fresh TTL): then the node keeps it,
			// and with it its subscription ownerships.
			if old := n.leaseID(); old != 0 {
				resp, err := cli.KeepAliveOnce(opCtx, old)
				if err == nil && resp.TTL > 0 {
					n.log.Warn("the node lease is alive after all; keeping it", "lease", fmt.Sprintf("%x", old))
					return cli.KeepAlive(ctx, old)
				}
				if err != nil && !errors.Is(err, rpctypes.ErrLeaseNotFound) {
					return nil, fmt.Errorf("renewing the node lease: %w", err)
				}
			}
			lease, err := n.putRegistration(opCtx)
			if err != nil {
				return nil, err
			}
			n.log.Warn("the node registered again under a new lease", "lease", fmt.Sprintf("%x", lease))
			return cli.KeepAlive(ctx, lease)
		}()
		if err == nil {
			return ka, cancel
		}
		stopped := ctx.Err() != nil
		cancel()
		if stopped {
			return nil, nil
		}
		n.log.Warn("registering the node again", "err", err, "retry_in", wait)
		if !n.sleep(wait) {
			return nil, nil
		}
	}
}

// markRunning rewrites nodes/<id> in state running, under the node's lease:
// the node has opened its shards and serves.
func (n *Node) markRunning(ctx context.Context) error {
	n.cat.mem.mu.Lock()
	n.cat.mem.state = stateRunning
	v, _ := json.Marshal(liveRecord{NodeInfo: n.opts.Self, State: stateRunning})
	n.cat.mem.mu.Unlock()
	if _, err := n.opts.Etcd.Put(ctx, n.cat.nodeKey(n.opts.Self.ID), string(v), clientv3.WithLease(n.leaseID())); err != nil {
		return fmt.Errorf("cluster: marking node %d running: %w", n.opts.Self.ID, err)
	}
	return nil
}

// startMembership loads the members and starts the watch that keeps the
// cache of them fresh. A second call does nothing.
func (n *Node) startMembership(ctx context.Context) error {
	if !n.cat.mem.started.CompareAndSwap(false, true) {
		return nil
	}
	rev, err := n.loadMembers(ctx)
	if err != nil {
		n.cat.mem.started.Store(false)
		return err
	}
	n.goAttach(func() { n.watchMembers(rev) })
	return nil
}

// membersRange is the key range of members/ and nodes/ (nothing else lies
// between them), watched as one so events arrive in revision order.
func (n *Node) membersRange() (from, to string) {
	return n.cat.membersPrefix(), clientv3.GetPrefixRangeEnd(n.cat.nodesPrefix())
}

// loadMembers reads members/ and nodes/ into the cache and returns the
// revision it read at. A member that was live and is not any more is
// Unavailable from now; one that was never seen live, from this node's
// start.
func (n *Node) loadMembers(ctx context.Context) (int64, error) {
	from, to := n.membersRange()
	resp, err := n.opts.Etcd.Get(ctx, from, clientv3.WithRange(to))
	if err != nil {
		return 0, fmt.Errorf("cluster: loading the members from etcd: %w", err)
	}
	known := make(map[uint64]NodeInfo)
	live := make(map[uint64]liveRecord)
	for _, kv := range resp.Kvs {
		if err := n.decodeMemberKey(kv, known, live); err != nil {
			n.log.Warn("skipping a membership key that does not decode", "key", string(kv.Key), "err", err)
		}
	}
	now := time.Now()
	m := &n.cat.mem
	m.mu.Lock()
	defer m.mu.Unlock()
	for id := range m.live {
		if _, ok := live[id]; !ok {
			m.gone[id] = now
			delete(m.since, id)
		}
	}
	for id, rec := range live {
		delete(m.gone, id)
		if old, ok := m.live[id]; !ok || old.State != rec.State || m.since[id].IsZero() {
			m.since[id] = now
			if !m.loaded {
				m.since[id] = rec.StartedAt
			}
		}
	}
	for id := range known {
		if _, ok := live[id]; !ok && m.gone[id].IsZero() {
			m.gone[id] = n.startedAt
			if n.startedAt.IsZero() {
				m.gone[id] = now
			}
		}
	}
	m.known, m.live, m.loaded = known, live, true
	m.notifyLocked()
	return resp.Header.Revision, nil
}

// decodeMemberKey decodes a members/ or nodes/ key into known or live.
func (n *Node) decodeMemberKey(kv *mvccpb.KeyValue, known map[uint64]NodeInfo, live map[uint64]liveRecord) error {
	kind, _, ok := n.cat.splitKey(string(kv.Key))
	if !ok {
		return nil
	}
	switch kind {
	case "members":
		var ni NodeInfo
		if err := json.Unmarshal(kv.Value, &ni); err != nil {
			return err
		}
		known[ni.ID] = ni
	case "nodes":
		var rec liveRecord
		if err := json.Unmarshal(kv.Value, &rec); err != nil {
			return err
		}
		live[rec.ID] = rec
	}
	return nil
}

// watchMembers applies the changes to members/ and nodes/ from revision
// rev+1 on, until Close. A broken watch is opened again from the last
// revision seen; one that fell behind a compaction reloads. It also wakes
// OnMembershipChange's waiters when an Unavailable member turns Dead.
func (n *Node) watchMembers(rev int64) {
	ctx, cancel := n.stopContext()
	defer cancel()
	from, to := n.membersRange()
	dead := time.NewTimer(time.Hour)
	defer dead.Stop()
	wait := minBackoff
	for {
		n.armDeadTimer(dead)
		wctx, wcancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
		wch := n.opts.Etcd.Watch(wctx, from, clientv3.WithRange(to), clientv3.WithRev(rev+1))
		compacted, broken := false, false
		for !compacted && !broken {
			select {
			case <-dead.C:
				n.cat.mem.mu.Lock()
				n.cat.mem.notifyLocked()
				n.cat.mem.mu.Unlock()
				n.armDeadTimer(dead)
			case resp, ok := <-wch:
				switch {
				case !ok:
					broken = true
				case resp.CompactRevision != 0 || errors.Is(resp.Err(), rpctypes.ErrCompacted):
					compacted = true
				case resp.Err() != nil:
					n.log.Warn("the membership watch failed; watching again", "err", resp.Err(), "revision", rev)
					broken = true
				case len(resp.Events) > 0:
					n.applyMemberEvents(resp.Events)
					rev = resp.Events[len(resp.Events)-1].Kv.ModRevision
					n.armDeadTimer(dead)
					wait = minBackoff
				}
			}
		}
		wcancel()
		if ctx.Err() != nil {
			return
		}
		if compacted {
			n.log.Warn("the membership watch fell behind an etcd compaction; reloading the members", "revision", rev)
			for {
				lctx, lcancel := context.WithTimeout(ctx, 10*time.Second)
				r, err := n.loadMembers(lctx)
				lcancel()
				if err == nil {
					rev = r
					break
				}
				n.log.Warn("reloading the members", "err", err)
				if !n.sleep(wait) {
					return
				}
				wait = nextBackoff(wait)
			}
			continue
		}
		if !n.sleep(wait) {
			return
		}
		wait = nextBackoff(wait)
	}
}

// applyMemberEvents applies watch events on members/ and nodes/.
func (n *Node) applyMemberEvents(evs []*clientv3.Event) {
	now := time.Now()
	m := &n.cat.mem
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, ev := range evs {
		kind, idText, ok := n.cat.splitKey(string(ev.Kv.Key))
		if !ok {
			continue
		}
		id, err := strconv.ParseUint(idText, 10, 64)
		if err != nil {
			continue
		}
		if ev.Type == mvccpb.DELETE {
			switch kind {
			case "members":
				delete(m.known, id)
				delete(m.gone, id)
			case "nodes":
				if _, ok := m.live[id]; ok {
					delete(m.live, id)
					delete(m.since, id)
					m.gone[id] = now
				}
			}
			continue
		}
		known, live := map[uint64]NodeInfo{}, map[uint64]liveRecord{}
		if err := n.decodeMemberKey(ev.Kv, known, live); err != nil {
			n.log.Warn("skipping a membership key that does not decode", "key", string(ev.Kv.Key), "err", err)
			continue
		}
		for id, ni := range known {
			m.known[id] = ni
		}
		for id, rec := range live {
			if old, ok := m.live[id]; !ok || old.State != rec.State {
				m.since[id] = now
			}
			m.live[id] = rec
			delete(m.gone, id)
		}
	}
	// A member recorded without a live key is Unavailable from now.
	for id := range m.known {
		if _, ok := m.live[id]; !ok && m.gone[id].IsZero() {
			m.gone[id] = now
		}
	}
	m.notifyLocked()
}

// armDeadTimer sets t to fire when the next Unavailable member turns Dead.
func (n *Node) armDeadTimer(t *time.Timer) {
	after := n.deadAfter()
	m := &n.cat.mem
	m.mu.Lock()
	next := time.Duration(-1)
	now := time.Now()
	for id, since := range m.gone {
		if _, ok := m.known[id]; !ok {
			continue
		}
		if d := since.Add(after).Sub(now); d >= 0 && (next < 0 || d < next) {
			next = d
		}
	}
	m.mu.Unlock()
	if !t.Stop() {
		select {
		case <-t.C:
		default:
		}
	}
	if next >= 0 {
		t.Reset(next + time.Millisecond)
	} else {
		t.Reset(time.Hour)
	}
}

func (m *membership) notifyLocked() {
	close(m.changed)
	m.changed = make(chan struct{})
}

// memberLocked is member id's state at now.
func (m *membership) memberLocked(id uint64, now time.Time, deadAfter time.Duration) (Member, bool) {
	if rec, ok := m.live[id]; ok {
		st := NodeStarting
		if rec.State == stateRunning {
			st = NodeRunning
		}
		return Member{NodeInfo: rec.NodeInfo, State: st, Since: m.since[id]}, true
	}
	ni, ok := m.known[id]
	if !ok {
		return Member{}, false
	}
	since := m.gone[id]
	if now.Sub(since) >= deadAfter {
		return Member{NodeInfo: ni, State: NodeDead, Since: since.Add(deadAfter)}, true
	}
	return Member{NodeInfo: ni, State: NodeUnavailable, Since: since}, true
}

// member returns a member from the node's cache of the membership.
func (n *Node) member(id uint64) (Member, bool) {
	after := n.deadAfter()
	m := &n.cat.mem
	m.mu.Lock()
	if !m.loaded {
		m.mu.Unlock()
		for _, ni := range n.uncachedMembers() {
			if ni.ID == id {
				return Member{NodeInfo: ni, State: NodeRunning, Since: ni.StartedAt}, true
			}
		}
		return Member{}, false
	}
	defer m.mu.Unlock()
	return m.memberLocked(id, time.Now(), after)
}

// uncachedMembers lists the live nodes from etcd, for the short while
// before startMembership loads the cache (early in Start); it returns none
// if etcd does not answer within the metadata timeout.
func (n *Node) uncachedMembers() []NodeInfo {
	ctx, cancel := context.WithTimeout(context.Background(), n.opts.MetadataTimeout)
	defer cancel()
	ms, _ := n.etcdMembers(ctx)
	return ms
}

// Cluster lists every node that ever joined the cluster, by id, with its
// state, from the node's cache of the membership.
func (n *Node) Cluster() []Member {
	after := n.deadAfter()
	m := &n.cat.mem
	m.mu.Lock()
	defer m.mu.Unlock()
	now := time.Now()
	out := make([]Member, 0, len(m.known))
	for id := range m.known {
		mb, _ := m.memberLocked(id, now, after)
		out = append(out, mb)
	}
	for id := range m.live {
		if _, ok := m.known[id]; !ok {
			mb, _ := m.memberLocked(id, now, after)
			out = append(out, mb)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

// OnMembershipChange returns a channel closed at the next change of the
// membership: a member joining, changing state, leaving or turning Dead.
// Take the channel before reading the state (Cluster, liveMembers), then
// wait on it, so that no change slips in between.
func (n *Node) OnMembershipChange() <-chan struct{} {
	n.cat.mem.mu.Lock()
	defer n.cat.mem.mu.Unlock()
	return n.cat.mem.changed
}

// liveMembers lists the Starting and Running members, by id, from the cache.
func (n *Node) liveMembers() []NodeInfo {
	m := &n.cat.mem
	m.mu.Lock()
	if !m.loaded {
		m.mu.Unlock()
		return n.uncachedMembers()
	}
	out := make([]NodeInfo, 0, len(m.live))
	for _, rec := range m.live {
		out = append(out, rec.NodeInfo)
	}
	m.mu.Unlock()
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

// isLive reports whether a node is Starting or Running.
func (n *Node) isLive(id uint64) bool {
	m, ok := n.member(id)
	return ok && m.live()
}

// addrOf is the advertised gRPC address of a live member.
func (n *Node) addrOf(id uint64) (string, bool) {
	m, ok := n.member(id)
	if !ok || !m.live() {
		return "", false
	}
	return m.GRPCAddr, true
}

// Members lists the live nodes (those whose lease is alive), sorted by id,
// from the membership cache; before the cache is loaded (early in Start) it
// asks etcd.
func (n *Node) Members(ctx context.Context) ([]NodeInfo, error) {
	n.cat.mem.mu.Lock()
	loaded := n.cat.mem.loaded
	n.cat.mem.mu.Unlock()
	if loaded {
		return n.liveMembers(), nil
	}
	return n.etcdMembers(ctx)
}

func (n *Node) etcdMembers(ctx context.Context) ([]NodeInfo, error) {
	resp, err := n.opts.Etcd.Get(ctx, n.cat.nodesPrefix(), clientv3.WithPrefix())
	if err != nil {
		return nil, fmt.Errorf("cluster: listing nodes: %w", err)
	}
	out := make([]NodeInfo, 0, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		var ni NodeInfo
		if err := json.Unmarshal(kv.Value, &ni); err != nil {
			return nil, fmt.Errorf("cluster: decoding etcd key %q: %w", kv.Key, err)
		}
		out = append(out, ni)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out, nil
}

// Back-off between attempts to reach etcd again.
const (
	minBackoff = 200 * time.Millisecond
	maxBackoff = 5 * time.Second
)

func nextBackoff(d time.Duration) time.Duration { return min(2*d, maxBackoff) }

// sleep waits for d; false if n.stop closed first.
func (n *Node) sleep(d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-n.stop:
		return false
	case <-t.C:
		return true
	}
}

// stopContext is a context canceled when n.stop closes (or cancel is
// called).
func (n *Node) stopContext() (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		select {
		case <-n.stop:
		case <-ctx.Done():
		}
		cancel()
	}()
	return ctx, cancel
}
