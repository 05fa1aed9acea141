package cluster

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// Subscriptions and streams guard each other in etcd. Creating a
// subscription rewrites its stream's key (same value), so the stream's
// ModRevision moves; deleting a stream is guarded by the revision it read
// and lists the stream's subscriptions after that read. A subscription
// created meanwhile therefore fails the delete's guard, and the delete looks
// again: a stream is never deleted under a subscription it did not see, and
// no subscription is left on a deleted stream.

// deleteStream removes a stream, its shards and readers and, with force, its
// subscriptions (their checkpoints and ownership keys too), in one
// transaction, and returns what it removed. Without force a stream that has
// subscriptions is refused (ErrStreamHasSubscriptions). It deletes the stream
// as etcd holds it, guarded by that key's revision, so two deletes racing a
// re-creation of the same name never remove the new stream with the old
// one's shards.
func (c *catalog) deleteStream(ctx context.Context, name string, force bool) (StreamMeta, []ShardMeta, []string, error) {
	key := c.streamKey(name)
	for {
		got, err := c.cli.Get(ctx, key)
		if err != nil {
			return StreamMeta{}, nil, nil, fmt.Errorf("cluster: deleting stream %q in etcd: %w", name, err)
		}
		if len(got.Kvs) == 0 {
			return StreamMeta{}, nil, nil, fmt.Errorf("%w: %q", ErrStreamNotFound, name)
		}
		var m StreamMeta
		if err := json.Unmarshal(got.Kvs[0].Value, &m); err != nil {
			return StreamMeta{}, nil, nil, fmt.Errorf("cluster: decoding etcd key %q: %w", key, err)
		}
		subs, err := c.streamSubscriptions(ctx, name)
		if err != nil {
			return StreamMeta{}, nil, nil, err
		}
		if len(subs) > 0 && !force {
			return StreamMeta{}, nil, nil, fmt.Errorf("%w: stream %q has %d subscription(s) (%s); delete them first, or delete the stream with force",
				ErrStreamHasSubscriptions, name, len(subs), strings.Join(subs, ", "))
		}
		c.mu.RLock()
		shards := make([]ShardMeta, 0, len(m.ShardIDs))
		for _, id := range m.ShardIDs {
			sm, ok := c.shards[id]
			if !ok {
				sm = ShardMeta{ID: id, Stream: name}
			}
			shards = append(shards, sm)
		}
		var readers []string
		for id, r := range c.readers {
			if r.Stream == name {
				readers = append(readers, id)
			}
		}
		c.mu.RUnlock()
		ops := []clientv3.Op{clientv3.OpDelete(key)}
		for _, id := range m.ShardIDs {
			ops = append(ops, clientv3.OpDelete(c.shardKey(id)))
		}
		for _, id := range readers {
			ops = append(ops, clientv3.OpDelete(c.readerKey(id)))
		}
		for _, id := range subs {
			ops = append(ops, clientv3.OpDelete(c.subKey(id)), clientv3.OpDelete(c.checkpointKey(id)), clientv3.OpDelete(c.subOwnerKey(id)))
		}
		resp, err := c.cli.Txn(ctx).If(clientv3.Compare(clientv3.ModRevision(key), "=", got.Kvs[0].ModRevision)).
			Then(ops...).Commit()
		if err != nil {
			return StreamMeta{}, nil, nil, fmt.Errorf("cluster: deleting stream %q in etcd: %w", name, err)
		}
		if !resp.Succeeded {
			continue // deleted, re-created or subscribed meanwhile: look again
		}
		keys := []string{key}
		for _, id := range m.ShardIDs {
			keys = append(keys, c.shardKey(id))
		}
		for _, id := range readers {
			keys = append(keys, c.readerKey(id))
		}
		for _, id := range subs {
			keys = append(keys, c.subKey(id), c.subOwnerKey(id))
		}
		c.mu.Lock()
		if c.wroteLocked(resp.Header.Revision, keys...) {
			if cached, ok := c.streams[name]; ok && slices.Equal(cached.ShardIDs, m.ShardIDs) {
				delete(c.streams, name)
			}
			for _, id := range m.ShardIDs {
				delete(c.shards, id)
			}
			for _, id := range readers {
				delete(c.readers, id)
			}
			for _, id := range subs {
				delete(c.subs, id)
				delete(c.owners, id)
			}
		}
		c.mu.Unlock()
		return m, shards, subs, nil
	}
}

// streamSubscriptions lists, from etcd, the ids of the subscriptions on a
// stream.
func (c *catalog) streamSubscriptions(ctx context.Context, stream string) ([]string, error) {
	var ids []string
	err := c.loadKind(ctx, "subs", func(v []byte) error {
		var m SubscriptionMeta
		if err := json.Unmarshal(v, &m); err != nil {
			return err
		}
		if m.Stream == stream {
			ids = append(ids, m.ID)
		}
		return nil
	})
	return ids, err
}

// createSubscription stores a subscription whose Start is resolved by
// resolve from the stream as etcd holds it. It rewrites the stream's key in
// the same transaction (see above).
func (c *catalog) createSubscription(ctx context.Context, m SubscriptionMeta,
	resolve func(StreamMeta) (map[uint64]uint64, error)) (SubscriptionMeta, error) {
	skey, key := c.streamKey(m.Stream), c.subKey(m.ID)
	for {
		got, err := c.cli.Get(ctx, skey)
		if err != nil {
			return SubscriptionMeta{}, fmt.Errorf("cluster: creating subscription %q in etcd: %w", m.ID, err)
		}
		if len(got.Kvs) == 0 {
			return SubscriptionMeta{}, fmt.Errorf("%w: %q", ErrStreamNotFound, m.Stream)
		}
		var sm StreamMeta
		if err := json.Unmarshal(got.Kvs[0].Value, &sm); err != nil {
			return SubscriptionMeta{}, fmt.Errorf("cluster: decoding etcd key %q: %w", skey, err)
		}
		if m.Start, err = resolve(sm); err != nil {
			// A stream deleted meanwhile takes its shards along: look
			// at the stream again rather than report a missing shard.
			now, gerr := c.cli.Get(ctx, skey)
			if gerr == nil && (len(now.Kvs) == 0 || now.Kvs[0].ModRevision != got.Kvs[0].ModRevision) {
				continue
			}
			return SubscriptionMeta{}, err
		}
		v, _ := json.Marshal(m)
		resp, err := c.cli.Txn(ctx).If(
			clientv3.Compare(clientv3.Version(key), "=", 0),
			clientv3.Compare(clientv3.ModRevision(skey), "=", got.Kvs[0].ModRevision),
		).Then(
			clientv3.OpPut(key, string(v)),
			clientv3.OpPut(skey, string(got.Kvs[0].Value)),
		).Commit()
		if err != nil {
			return SubscriptionMeta{}, fmt.Errorf("cluster: creating subscription %q in etcd: %w", m.ID, err)
		}
		if !resp.Succeeded {
			exists, err := c.cli.Get(ctx, key, clientv3.WithCountOnly())
			if err != nil {
				return SubscriptionMeta{}, fmt.Errorf("cluster: creating subscription %q in etcd: %w", m.ID, err)
			}
			if exists.Count > 0 {
				return SubscriptionMeta{}, fmt.Errorf("%w: %q", ErrSubscriptionExists, m.ID)
			}
			continue // the stream changed meanwhile: resolve again
		}
		c.mu.Lock()
		if c.wroteLocked(resp.Header.Revision, key) {
			c.subs[m.ID] = m
		}
		c.mu.Unlock()
		return m, nil
	}
}

// deleteSubscription removes a subscription, its checkpoint and its
// ownership key.
func (c *catalog) deleteSubscription(ctx context.Context, id string) error {
	key := c.subKey(id)
	resp, err := c.cli.Txn(ctx).If(clientv3.Compare(clientv3.Version(key), ">", 0)).
		Then(clientv3.OpDelete(key), clientv3.OpDelete(c.checkpointKey(id)), clientv3.OpDelete(c.subOwnerKey(id))).Commit()
	if err != nil {
		return fmt.Errorf("cluster: deleting subscription %q in etcd: %w", id, err)
	}
	c.mu.Lock()
	if !resp.Succeeded || c.wroteLocked(resp.Header.Revision, key, c.subOwnerKey(id)) {
		delete(c.subs, id)
		delete(c.owners, id)
	}
	c.mu.Unlock()
	if !resp.Succeeded {
		return fmt.Errorf("%w: %q", ErrSubscriptionNotFound, id)
	}
	return nil
}

func (c *catalog) subscription(id string) (SubscriptionMeta, error) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	m, ok := c.subs[id]
	if !ok {
		return SubscriptionMeta{}, fmt.Errorf("%w: %q", ErrSubscriptionNotFound, id)
	}
	return m, nil
}

func (c *catalog) subscriptionList(prefix string) []SubscriptionMeta {
	c.mu.RLock()
	out := make([]SubscriptionMeta, 0, len(c.subs))
	for id, m := range c.subs {
		if strings.HasPrefix(id, prefix) {
			out = append(out, m)
		}
	}
	c.mu.RUnlock()
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

// claimSubscription makes node self (under lease) the owner of a
// subscription, unless another node holds it.
func (c *catalog) claimSubscription(ctx context.Context, id string, self uint64, lease clientv3.LeaseID) error {
	okey, me := c.subOwnerKey(id), strconv.FormatUint(self, 10)
	resp, err := c.cli.Txn(ctx).If(
		clientv3.Compare(clientv3.Version(c.subKey(id)), ">", 0),
		clientv3.Compare(clientv3.Version(okey), "=", 0),
	).Then(clientv3.OpPut(okey, me, clientv3.WithLease(lease))).
		Else(clientv3.OpGet(c.subKey(id), clientv3.WithCountOnly()), clientv3.OpGet(okey)).Commit()
	if err != nil {
		return fmt.Errorf("cluster: claiming subscription %q in etcd: %w", id, err)
	}
	if resp.Succeeded {
		return nil
	}
	if resp.Responses[0].GetResponseRange().GetCount() == 0 {
		return fmt.Errorf("%w: %q", ErrSubscriptionNotFound, id)
	}
	kvs := resp.Responses[1].GetResponseRange().GetKvs()
	if len(kvs) == 1 && string(kvs[0].Value) == me && clientv3.LeaseID(kvs[0].Lease) == lease {
		return nil // already ours
	}
	holder := "?"
	if len(kvs) == 1 {
		holder = string(kvs[0].Value)
	}
	return fmt.Errorf("%w: subscription %q is owned by node %s", ErrNotOwner, id, holder)
}

// releaseSubscription gives up ownership, if this node (under lease) holds it.
func (c *catalog) releaseSubscription(ctx context.Context, id string, self uint64, lease clientv3.LeaseID) error {
	okey := c.subOwnerKey(id)
	_, err := c.cli.Txn(ctx).If(
		clientv3.Compare(clientv3.Value(okey), "=", strconv.FormatUint(self, 10)),
		clientv3.Compare(clientv3.LeaseValue(okey), "=", lease),
	).Then(clientv3.OpDelete(okey)).Commit()
	if err != nil {
		return fmt.Errorf("cluster: releasing subscription %q in etcd: %w", id, err)
	}
	return nil
}

// checkpoint reads a subscription's checkpoint; ok is false if none was
// saved yet.
func (c *catalog) checkpoint(ctx context.Context, id string) (cp Checkpoint, ok bool, err error) {
	resp, err := c.cli.Get(ctx, c.checkpointKey(id))
	if err != nil {
		return Checkpoint{}, false, fmt.Errorf("cluster: reading the checkpoint of subscription %q: %w", id, err)
	}
	if len(resp.Kvs) == 0 {
		return Checkpoint{}, false, nil
	}
	if err := json.Unmarshal(resp.Kvs[0].Value, &cp); err != nil {
		return Checkpoint{}, false, fmt.Errorf("cluster: decoding etcd key %q: %w", resp.Kvs[0].Key, err)
	}
	return cp, true, nil
}

// saveCheckpoint writes a checkpoint if the subscription exists and node
// self, under lease, owns it.
func (c *catalog) saveCheckpoint(ctx context.Context, id string, cp Checkpoint, self uint64, lease clientv3.LeaseID) error {
	okey := c.subOwnerKey(id)
	v, _ := json.Marshal(cp)
	resp, err := c.cli.Txn(ctx).If(
		clientv3.Compare(clientv3.Version(c.subKey(id)), ">", 0),
		clientv3.Compare(clientv3.Value(okey), "=", strconv.FormatUint(self, 10)),
		clientv3.Compare(clientv3.LeaseValue(okey), "=", lease),
	).Then(clientv3.OpPut(c.checkpointKey(id), string(v))).
		Else(clientv3.OpGet(c.subKey(id), clientv3.WithCountOnly())).Commit()
	if err != nil {
		return fmt.Errorf("cluster: saving the checkpoint of subscription %q: %w", id, err)
	}
	if resp.Succeeded {
		return nil
	}
	if resp.Responses[0].GetResponseRange().GetCount() == 0 {
		return fmt.Errorf("%w: %q", ErrSubscriptionNotFound, id)
	}
	return fmt.Errorf("%w: node %d no longer holds subscription %q", ErrNotOwner, self, id)
}

// CreateSubscription stores a new subscription on m.Stream, resolving its
// start per shard now: OffsetEarliest is each shard's first stored entry,
// OffsetLatest the index after its last committed one. ID, Stream,
// AckTimeoutSeconds, MaxUnackedRecords and Offset come from m; the node fills
// CreatedAt and Start. ErrStreamNotFound, ErrSubscriptionExists.
func (n *Node) CreateSubscription(ctx context.Context, m SubscriptionMeta) (SubscriptionMeta, error) {
	if m.Offset != OffsetEarliest && m.Offset != OffsetLatest {
		return SubscriptionMeta{}, fmt.Errorf("cluster: subscription %q: offset %q is neither %q nor %q", m.ID, m.Offset, OffsetEarliest, OffsetLatest)
	}
	m.CreatedAt = time.Now().UTC().Truncate(time.Millisecond)
	ctx, cancel := n.metaCtx(ctx)
	defer cancel()
	m, err := n.cat.createSubscription(ctx, m, func(sm StreamMeta) (map[uint64]uint64, error) {
		start := make(map[uint64]uint64, len(sm.ShardIDs))
		for _, id := range sm.ShardIDs {
			sh, err := n.Shard(id)
			if err != nil {
				return nil, fmt.Errorf("cluster: resolving the start of subscription %q: %w", m.ID, err)
			}
			if m.Offset == OffsetEarliest {
				start[id] = sh.First()
			} else {
				committed, _ := sh.Committed()
				start[id] = committed + 1
			}
		}
		return start, nil
	})
	if err != nil {
		return SubscriptionMeta{}, n.metaErr(err)
	}
	n.log.Info("subscription created", "subscription", m.ID, "stream", m.Stream, "offset", m.Offset)
	return m, nil
}

// DeleteSubscription removes a subscription with its checkpoint.
// ErrSubscriptionNotFound. Stopping its consumers is the caller's business.
func (n *Node) DeleteSubscription(ctx context.Context, id string) error {
	ctx, cancel := n.metaCtx(ctx)
	defer cancel()
	if err := n.cat.deleteSubscription(ctx, id); err != nil {
		return n.metaErr(err)
	}
	n.log.Info("subscription deleted", "subscription", id)
	return nil
}

// Subscription returns one subscription. ErrSubscriptionNotFound.
func (n *Node) Subscription(id string) (SubscriptionMeta, error) { return n.cat.subscription(id) }

// Subscriptions lists the subscriptions whose id starts with prefix ("" =
// all), by id.
func (n *Node) Subscriptions(prefix string) []SubscriptionMeta { return n.cat.subscriptionList(prefix) }

// ClaimSubscription makes this node the subscription's owner, under the
// node's lease: the key goes when the node does. ErrNotOwner if another node
// holds it, ErrSubscriptionNotFound.
func (n *Node) ClaimSubscription(ctx context.Context, id string) error {
	ctx, cancel := n.metaCtx(ctx)
	defer cancel()
	return n.metaErr(n.cat.claimSubscription(ctx, id, n.opts.Self.ID, n.leaseID()))
}

// ReleaseSubscription gives up this node's ownership of a subscription.
func (n *Node) ReleaseSubscription(ctx context.Context, id string) error {
	ctx, cancel := n.metaCtx(ctx)
	defer cancel()
	return n.metaErr(n.cat.releaseSubscription(ctx, id, n.opts.Self.ID, n.leaseID()))
}

// Checkpoint reads a subscription's persisted progress; ok is false if none
// was saved yet.
func (n *Node) Checkpoint(ctx context.Context, id string) (Checkpoint, bool, error) {
	ctx, cancel := n.metaCtx(ctx)
	defer cancel()
	cp, ok, err := n.cat.checkpoint(ctx, id)
	return cp, ok, n.metaErr(err)
}

// SaveCheckpoint persists a subscription's progress, if this node still
// owns it. ErrNotOwner, ErrSubscriptionNotFound.
func (n *Node) SaveCheckpoint(ctx context.Context, id string, cp Checkpoint) error {
	ctx, cancel := n.metaCtx(ctx)
	defer cancel()
	return n.metaErr(n.cat.saveCheckpoint(ctx, id, cp, n.opts.Self.ID, n.leaseID()))
}
