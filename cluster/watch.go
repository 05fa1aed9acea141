package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"reflect"
	"strconv"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// shardChange is a shard created (Old nil), changed, or deleted (New nil).
type shardChange struct{ Old, New *ShardMeta }

// watchCatalog keeps the catalog cache in step with etcd from revision rev
// on (rev being what the cache was loaded at), calling n.shardChanged for
// every shard created, changed or deleted by any node (this one included).
// It returns once n.stop is closed; a second call while one runs returns at
// once.
//
// One watch covers the keys from readers/ to subs/ (readers, seq, shards,
// streams, subowners, subs), so every change arrives in revision order.
// While etcd is unreachable the client retries the watch on its own and
// the cache keeps its state; a watch that breaks is opened again from the
// last revision applied, and one that fell behind a compaction reloads the
// whole catalog, reporting what changed in between as shard changes.
func (n *Node) watchCatalog(rev int64) {
	if !n.cat.watching.CompareAndSwap(false, true) {
		return
	}
	defer n.cat.watching.Store(false)
	ctx, cancel := n.stopContext()
	defer cancel()
	view := n.cat.shardsAt(rev)
	from, to := n.cat.kindPrefix("readers"), clientv3.GetPrefixRangeEnd(n.cat.kindPrefix("subs"))
	wait := minBackoff
	for {
		wctx, wcancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
		wch := n.opts.Etcd.Watch(wctx, from, clientv3.WithRange(to), clientv3.WithRev(rev+1))
		compacted := false
		for resp := range wch {
			if resp.CompactRevision != 0 || errors.Is(resp.Err(), rpctypes.ErrCompacted) {
				compacted = true
				break
			}
			if err := resp.Err(); err != nil {
				n.log.Warn("the catalog watch failed; watching again", "err", err, "revision", rev)
				break
			}
			if len(resp.Events) == 0 {
				continue
			}
			changes := n.cat.applyEvents(resp.Events, view, n.log)
			rev = resp.Events[len(resp.Events)-1].Kv.ModRevision
			for _, ch := range changes {
				n.shardChanged(ch.Old, ch.New)
			}
			wait = minBackoff
		}
		wcancel()
		if ctx.Err() != nil {
			return
		}
		if compacted {
			n.log.Warn("the catalog watch fell behind an etcd compaction; reloading the catalog", "revision", rev)
			for {
				lctx, lcancel := context.WithTimeout(ctx, 10*time.Second)
				r, err := n.cat.loadRev(lctx)
				lcancel()
				if err == nil {
					rev = r
					break
				}
				n.log.Warn("reloading the catalog", "err", err)
				if !n.sleep(wait) {
					return
				}
				wait = nextBackoff(wait)
			}
			loaded := n.cat.shardsAt(rev)
			for _, ch := range diffShards(view, loaded) {
				n.shardChanged(ch.Old, ch.New)
			}
			view = loaded
			continue
		}
		if !n.sleep(wait) {
			return
		}
		wait = nextBackoff(wait)
	}
}

// shardsAt returns the shards as the last load saw them, if it loaded at
// rev, else the cached shards: the watch's starting view.
func (c *catalog) shardsAt(rev int64) map[uint64]ShardMeta {
	c.mu.RLock()
	defer c.mu.RUnlock()
	src := c.loaded
	if c.loadedRev != rev || src == nil {
		src = c.shards
	}
	out := make(map[uint64]ShardMeta, len(src))
	for id, m := range src {
		out[id] = m
	}
	return out
}

// diffShards lists the changes from the shards in old to those in new.
func diffShards(old, new map[uint64]ShardMeta) []shardChange {
	var out []shardChange
	for id, o := range old {
		if m, ok := new[id]; !ok {
			out = append(out, shardChange{Old: &o})
		} else if !reflect.DeepEqual(o, m) {
			out = append(out, shardChange{Old: &o, New: &m})
		}
	}
	for id, m := range new {
		if _, ok := old[id]; !ok {
			out = append(out, shardChange{New: &m})
		}
	}
	return out
}

// applyEvents applies watch events to the cache and to view, the watch's
// own copy of the shards, and returns the shard changes they make to view.
// The cache skips an event older than a write of this node it took already
// (revs); view takes every event, so a shard this node created or deleted
// is reported like anyone's. A value that does not decode is logged and
// skipped.
func (c *catalog) applyEvents(evs []*clientv3.Event, view map[uint64]ShardMeta, log *slog.Logger) []shardChange {
	var changes []shardChange
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, ev := range evs {
		key, rev := string(ev.Kv.Key), ev.Kv.ModRevision
		if rev > c.applied {
			c.applied = rev
		}
		kind, id, ok := c.splitKey(key)
		if !ok {
			continue
		}
		put := ev.Type == mvccpb.PUT
		take := rev > c.revs[key]
		if kind == "shards" {
			sid, err := strconv.ParseUint(id, 10, 64)
			if err != nil {
				continue
			}
			var m ShardMeta
			if put {
				if err := json.Unmarshal(ev.Kv.Value, &m); err != nil {
					log.Warn("the catalog watch skips a value that does not decode", "key", key, "err", err)
					continue
				}
			}
			old, had := view[sid]
			switch {
			case put && !had:
				view[sid] = m
				changes = append(changes, shardChange{New: &m})
			case put && !reflect.DeepEqual(old, m):
				view[sid] = m
				changes = append(changes, shardChange{Old: &old, New: &m})
			case !put && had:
				delete(view, sid)
				changes = append(changes, shardChange{Old: &old})
			}
			if take {
				if put {
					c.shards[sid] = m
				} else {
					delete(c.shards, sid)
				}
			}
			continue
		}
		if !take {
			continue
		}
		if err := c.applyLocked(kind, id, put, ev.Kv.Value); err != nil {
			log.Warn("the catalog watch skips a value that does not decode", "key", key, "err", err)
		}
	}
	for k, r := range c.revs {
		if r <= c.applied {
			delete(c.revs, k)
		}
	}
	return changes
}

// applyLocked puts (or deletes) one cached stream, reader, subscription or
// subscription owner; other kinds are ignored.
func (c *catalog) applyLocked(kind, id string, put bool, v []byte) error {
	switch kind {
	case "streams":
		return applyJSON(c.streams, id, put, v)
	case "readers":
		return applyJSON(c.readers, id, put, v)
	case "subs":
		return applyJSON(c.subs, id, put, v)
	case "subowners":
		if !put {
			delete(c.owners, id)
			return nil
		}
		owner, err := strconv.ParseUint(string(v), 10, 64)
		if err != nil {
			return fmt.Errorf("not a node id: %w", err)
		}
		c.owners[id] = owner
	}
	return nil
}

func applyJSON[V any](m map[string]V, id string, put bool, v []byte) error {
	if !put {
		delete(m, id)
		return nil
	}
	var val V
	if err := json.Unmarshal(v, &val); err != nil {
		return err
	}
	m[id] = val
	return nil
}

// SubscriptionOwnerID is the node that holds a subscription's ownership key,
// as the catalog cache knows it; ok is false if none does.
func (n *Node) SubscriptionOwnerID(id string) (uint64, bool) {
	n.cat.mu.RLock()
	defer n.cat.mu.RUnlock()
	owner, ok := n.cat.owners[id]
	return owner, ok
}

// SubscriptionOwner is the node a subscription's consumers should talk to:
// its owner if that node is live, else the live member placement picks for
// it, which claims it when a consumer arrives. It answers from the caches,
// without etcd. A subscription not in the catalog (yet) gets the node
// placement would pick once it exists: HStreamDB clients look a
// subscription up before they create it, and send the creation there.
// ErrNodeUnavailable if no member is live.
func (n *Node) SubscriptionOwner(ctx context.Context, id string) (NodeInfo, error) {
	if owner, ok := n.SubscriptionOwnerID(id); ok {
		if m, ok := n.member(owner); ok && m.live() {
			return m.NodeInfo, nil
		}
	}
	live := n.liveMembers()
	if len(live) == 0 {
		return NodeInfo{}, fmt.Errorf("%w: no live member to own subscription %q", ErrNodeUnavailable, id)
	}
	nodes := make([]placeNode, len(live))
	byID := make(map[uint64]NodeInfo, len(live))
	for i, m := range live {
		nodes[i] = placeNode{ID: m.ID, Weight: m.Weight}
		if nodes[i].Weight <= 0 {
			nodes[i].Weight = 1
		}
		byID[m.ID] = m
	}
	subs := n.cat.subscriptionList("")
	keys := make([]string, 0, len(subs)+1)
	known := false
	for _, s := range subs {
		keys = append(keys, s.ID)
		known = known || s.ID == id
	}
	if !known {
		keys = append(keys, id)
	}
	set := placeItems(nodes, keys, 1, n.opts.LoadBound, nil)[id]
	if len(set) == 0 {
		return NodeInfo{}, fmt.Errorf("%w: placement found no node for subscription %q", ErrNodeUnavailable, id)
	}
	return byID[set[0]], nil
}
