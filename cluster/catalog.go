package cluster

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// The catalog keeps weir's metadata in etcd, under the configured prefix P:
//
//	P members/<id>        NodeInfo of every node that ever registered (no lease)
//	P nodes/<id>          NodeInfo and state, under the node's lease
//	P streams/<name>      StreamMeta
//	P shards/<id %020d>   ShardMeta
//	P readers/<id>        ReaderMeta
//	P subs/<id>           SubscriptionMeta
//	P checkpoints/<id>    Checkpoint of a subscription
//	P subowners/<id>      the id of the node that owns a subscription, under its lease
//	P seq/shard           the last shard id handed out (decimal)
//
// Values are JSON. Every change is one etcd transaction with a guard, so a
// stream and its shards appear and disappear together. The catalog also
// caches the metadata, for the append and read paths, which must not ask
// etcd: it takes its own writes at once, and every node's (its own
// included) through a watch (watch.go). Both feed the cache, in either
// order, so each key remembers the revision of the write the cache took
// last (revs) until the watch has gone past it: an event older than that
// is not applied, and neither is a local write the watch already passed.
type catalog struct {
	cli    *clientv3.Client
	prefix string

	mu      sync.RWMutex
	streams map[string]StreamMeta       // guarded by mu
	shards  map[uint64]ShardMeta        // guarded by mu
	readers map[string]ReaderMeta       // guarded by mu
	subs    map[string]SubscriptionMeta // guarded by mu
	owners  map[string]uint64           // guarded by mu: subscription id -> owning node
	// revs holds, per etcd key written by this node and not yet seen by
	// the watch, the revision of that write (guarded by mu).
	revs map[string]int64
	// applied is the revision the cache reflects every change up to: the
	// last load's, then the last event the watch applied (guarded by mu).
	applied int64
	// loaded is the shards as of the last load, at revision applied then,
	// from which the watch computes the shard changes it reports
	// (guarded by mu).
	loaded    map[uint64]ShardMeta
	loadedRev int64
	watching  atomic.Bool // watchCatalog runs

	mem membership // the cluster's members (members.go)
}

func newCatalog(cli *clientv3.Client, prefix string) *catalog {
	return &catalog{
		cli:     cli,
		prefix:  prefix,
		streams: make(map[string]StreamMeta),
		shards:  make(map[uint64]ShardMeta),
		readers: make(map[string]ReaderMeta),
		subs:    make(map[string]SubscriptionMeta),
		owners:  make(map[string]uint64),
		revs:    make(map[string]int64),
		mem:     newMembership(),
	}
}

func (c *catalog) nodeKey(id uint64) string       { return c.prefix + "nodes/" + strconv.FormatUint(id, 10) }
func (c *catalog) streamKey(name string) string   { return c.prefix + "streams/" + name }
func (c *catalog) shardKey(id uint64) string      { return fmt.Sprintf("%sshards/%020d", c.prefix, id) }
func (c *catalog) readerKey(id string) string     { return c.prefix + "readers/" + id }
func (c *catalog) subKey(id string) string        { return c.prefix + "subs/" + id }
func (c *catalog) checkpointKey(id string) string { return c.prefix + "checkpoints/" + id }
func (c *catalog) subOwnerKey(id string) string   { return c.prefix + "subowners/" + id }
func (c *catalog) shardSeqKey() string            { return c.prefix + "seq/shard" }
func (c *catalog) nodesPrefix() string            { return c.prefix + "nodes/" }
func (c *catalog) memberKey(id uint64) string {
	return c.prefix + "members/" + strconv.FormatUint(id, 10)
}
func (c *catalog) membersPrefix() string         { return c.prefix + "members/" }
func (c *catalog) kindPrefix(kind string) string { return c.prefix + kind + "/" }

// load reads every stream, shard, reader, subscription and subscription
// owner into the cache.
func (c *catalog) load(ctx context.Context) error {
	_, err := c.loadRev(ctx)
	return err
}

// loadRev is load, returning the etcd revision it read at: every kind is read
// at the same revision, and a watch from the next one misses nothing. A key
// this node wrote after that revision keeps its cached value (the load
// would set it back).
func (c *catalog) loadRev(ctx context.Context) (int64, error) {
	streams := make(map[string]StreamMeta)
	shards := make(map[uint64]ShardMeta)
	readers := make(map[string]ReaderMeta)
	subs := make(map[string]SubscriptionMeta)
	owners := make(map[string]uint64)
	var rev int64
	load := func(kind string, decode func(key string, v []byte) error) error {
		opts := []clientv3.OpOption{clientv3.WithPrefix()}
		if rev != 0 {
			opts = append(opts, clientv3.WithRev(rev))
		}
		resp, err := c.cli.Get(ctx, c.kindPrefix(kind), opts...)
		if err != nil {
			return fmt.Errorf("cluster: loading %s from etcd: %w", kind, err)
		}
		if rev == 0 {
			rev = resp.Header.Revision
		}
		for _, kv := range resp.Kvs {
			if err := decode(string(kv.Key), kv.Value); err != nil {
				return fmt.Errorf("cluster: decoding etcd key %q: %w", kv.Key, err)
			}
		}
		return nil
	}
	if err := load("streams", func(_ string, v []byte) error {
		var m StreamMeta
		if err := json.Unmarshal(v, &m); err != nil {
			return err
		}
		streams[m.Name] = m
		return nil
	}); err != nil {
		return 0, err
	}
	if err := load("shards", func(_ string, v []byte) error {
		var m ShardMeta
		if err := json.Unmarshal(v, &m); err != nil {
			return err
		}
		shards[m.ID] = m
		return nil
	}); err != nil {
		return 0, err
	}
	if err := load("readers", func(_ string, v []byte) error {
		var m ReaderMeta
		if err := json.Unmarshal(v, &m); err != nil {
			return err
		}
		readers[m.ID] = m
		return nil
	}); err != nil {
		return 0, err
	}
	if err := load("subs", func(_ string, v []byte) error {
		var m SubscriptionMeta
		if err := json.Unmarshal(v, &m); err != nil {
			return err
		}
		subs[m.ID] = m
		return nil
	}); err != nil {
		return 0, err
	}
	if err := load("subowners", func(key string, v []byte) error {
		id, err := strconv.ParseUint(string(v), 10, 64)
		if err != nil {
			return err
		}
		owners[strings.TrimPrefix(key, c.kindPrefix("subowners"))] = id
		return nil
	}); err != nil {
		return 0, err
	}
	snapshot := make(map[uint64]ShardMeta, len(shards))
	for id, m := range shards {
		snapshot[id] = m
	}
	c.mu.Lock()
	old := &catalog{prefix: c.prefix, streams: c.streams, shards: c.shards, readers: c.readers, subs: c.subs, owners: c.owners}
	c.streams, c.shards, c.readers, c.subs, c.owners = streams, shards, readers, subs, owners
	for key, r := range c.revs {
		if r <= rev {
			delete(c.revs, key)
			continue
		}
		c.carryLocked(old, key)
	}
	if rev > c.applied {
		c.applied = rev
	}
	c.loaded, c.loadedRev = snapshot, rev
	c.mu.Unlock()
	return rev, nil
}

// carryLocked copies key's cached value (or its absence) from old to c.
func (c *catalog) carryLocked(old *catalog, key string) {
	kind, id, ok := c.splitKey(key)
	if !ok {
		return
	}
	switch kind {
	case "streams":
		carry(old.streams, c.streams, id)
	case "readers":
		carry(old.readers, c.readers, id)
	case "subs":
		carry(old.subs, c.subs, id)
	case "subowners":
		carry(old.owners, c.owners, id)
	case "shards":
		if n, err := strconv.ParseUint(id, 10, 64); err == nil {
			carry(old.shards, c.shards, n)
		}
	}
}

func carry[K comparable, V any](from, to map[K]V, k K) {
	if v, ok := from[k]; ok {
		to[k] = v
	} else {
		delete(to, k)
	}
}

// splitKey splits an etcd key under the prefix into its kind and id.
func (c *catalog) splitKey(key string) (kind, id string, ok bool) {
	rest, ok := strings.CutPrefix(key, c.prefix)
	if !ok {
		return "", "", false
	}
	return strings.Cut(rest, "/")
}

// wroteLocked records that this node wrote keys at revision rev, and
// reports whether the cache should take that write: not if the watch has
// already applied it (the cache may hold a newer value since), nor if a
// newer write to one of the keys was taken. c.mu must be held for writing.
func (c *catalog) wroteLocked(rev int64, keys ...string) bool {
	if rev <= c.applied {
		return false
	}
	for _, k := range keys {
		if c.revs[k] > rev {
			return false
		}
	}
	for _, k := range keys {
		c.revs[k] = rev
	}
	return true
}

func (c *catalog) loadKind(ctx context.Context, kind string, decode func([]byte) error) error {
	resp, err := c.cli.Get(ctx, c.kindPrefix(kind), clientv3.WithPrefix())
	if err != nil {
		return fmt.Errorf("cluster: loading %s from etcd: %w", kind, err)
	}
	for _, kv := range resp.Kvs {
		if err := decode(kv.Value); err != nil {
			return fmt.Errorf("cluster: decoding etcd key %q: %w", kv.Key, err)
		}
	}
	return nil
}

// createStream writes a stream and its shards in one transaction, handing out
// shard ids from the sequence key. ranges gives each shard's [start, end] and
// replicas its replica set (the first being its preferred leader).
func (c *catalog) createStream(ctx context.Context, m StreamMeta, ranges [][2]string, replicas [][]uint64) (StreamMeta, []ShardMeta, error) {
	for {
		seqResp, err := c.cli.Get(ctx, c.shardSeqKey())
		if err != nil {
			return StreamMeta{}, nil, fmt.Errorf("cluster: reading the shard id sequence: %w", err)
		}
		var last uint64
		var seqRev int64
		if len(seqResp.Kvs) == 1 {
			seqRev = seqResp.Kvs[0].ModRevision
			if last, err = strconv.ParseUint(string(seqResp.Kvs[0].Value), 10, 64); err != nil {
				return StreamMeta{}, nil, fmt.Errorf("cluster: etcd key %q holds %q, not a shard id", c.shardSeqKey(), seqResp.Kvs[0].Value)
			}
		}
		shards := make([]ShardMeta, len(ranges))
		m.ShardIDs = make([]uint64, len(ranges))
		ops := make([]clientv3.Op, 0, len(ranges)+2)
		for i, r := range ranges {
			id := last + 1 + uint64(i)
			shards[i] = ShardMeta{ID: id, Stream: m.Name, Start: r[0], End: r[1], Epoch: uint64(len(ranges)),
				Replicas: replicas[i], Initial: replicas[i]}
			m.ShardIDs[i] = id
			v, _ := json.Marshal(shards[i])
			ops = append(ops, clientv3.OpPut(c.shardKey(id), string(v)))
		}
		v, _ := json.Marshal(m)
		ops = append(ops,
			clientv3.OpPut(c.streamKey(m.Name), string(v)),
			clientv3.OpPut(c.shardSeqKey(), strconv.FormatUint(last+uint64(len(ranges)), 10)))
		resp, err := c.cli.Txn(ctx).If(
			clientv3.Compare(clientv3.Version(c.streamKey(m.Name)), "=", 0),
			clientv3.Compare(clientv3.ModRevision(c.shardSeqKey()), "=", seqRev),
		).Then(ops...).Commit()
		if err != nil {
			return StreamMeta{}, nil, fmt.Errorf("cluster: creating stream %q in etcd: %w", m.Name, err)
		}
		if !resp.Succeeded {
			exists, err := c.cli.Get(ctx, c.streamKey(m.Name), clientv3.WithCountOnly())
			if err != nil {
				return StreamMeta{}, nil, fmt.Errorf("cluster: creating stream %q in etcd: %w", m.Name, err)
			}
			if exists.Count > 0 {
				return StreamMeta{}, nil, fmt.Errorf("%w: %q", ErrStreamExists, m.Name)
			}
			continue // another creation took the ids first: retry
		}
		keys := []string{c.streamKey(m.Name)}
		for _, s := range shards {
			keys = append(keys, c.shardKey(s.ID))
		}
		c.mu.Lock()
		if c.wroteLocked(resp.Header.Revision, keys...) {
			c.streams[m.Name] = m
			for _, s := range shards {
				c.shards[s.ID] = s
			}
		}
		c.mu.Unlock()
		return m, shards, nil
	}
}

func (c *catalog) stream(name string) (StreamMeta, error) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	m, ok := c.streams[name]
	if !ok {
		return StreamMeta{}, fmt.Errorf("%w: %q", ErrStreamNotFound, name)
	}
	return m, nil
}

func (c *catalog) streamList(prefix string) []StreamMeta {
	c.mu.RLock()
	out := make([]StreamMeta, 0, len(c.streams))
	for name, m := range c.streams {
		if strings.HasPrefix(name, prefix) {
			out = append(out, m)
		}
	}
	c.mu.RUnlock()
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

func (c *catalog) streamShards(name string) ([]ShardMeta, error) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	m, ok := c.streams[name]
	if !ok {
		return nil, fmt.Errorf("%w: %q", ErrStreamNotFound, name)
	}
	out := make([]ShardMeta, 0, len(m.ShardIDs))
	for _, id := range m.ShardIDs {
		out = append(out, c.shards[id])
	}
	return out, nil
}

func (c *catalog) shard(id uint64) (ShardMeta, bool) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	m, ok := c.shards[id]
	return m, ok
}

func (c *catalog) allShards() []ShardMeta {
	c.mu.RLock()
	defer c.mu.RUnlock()
	out := make([]ShardMeta, 0, len(c.shards))
	for _, s := range c.shards {
		out = append(out, s)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

func (c *catalog) createReader(ctx context.Context, r ReaderMeta) error {
	v, _ := json.Marshal(r)
	key := c.readerKey(r.ID)
	resp, err := c.cli.Txn(ctx).If(clientv3.Compare(clientv3.Version(key), "=", 0)).
		Then(clientv3.OpPut(key, string(v))).Commit()
	if err != nil {
		return fmt.Errorf("cluster: creating reader %q in etcd: %w", r.ID, err)
	}
	if !resp.Succeeded {
		return fmt.Errorf("%w: %q", ErrReaderExists, r.ID)
	}
	c.mu.Lock()
	if c.wroteLocked(resp.Header.Revision, key) {
		c.readers[r.ID] = r
	}
	c.mu.Unlock()
	return nil
}

func (c *catalog) saveReader(ctx context.Context, r ReaderMeta) error {
	v, _ := json.Marshal(r)
	key := c.readerKey(r.ID)
	resp, err := c.cli.Txn(ctx).If(clientv3.Compare(clientv3.Version(key), ">", 0)).
		Then(clientv3.OpPut(key, string(v))).Commit()
	if err != nil {
		return fmt.Errorf("cluster: saving reader %q in etcd: %w", r.ID, err)
	}
	if !resp.Succeeded {
		return fmt.Errorf("%w: %q", ErrReaderNotFound, r.ID)
	}
	c.mu.Lock()
	if c.wroteLocked(resp.Header.Revision, key) {
		c.readers[r.ID] = r
	}
	c.mu.Unlock()
	return nil
}

func (c *catalog) deleteReader(ctx context.Context, id string) error {
	key := c.readerKey(id)
	resp, err := c.cli.Txn(ctx).If(clientv3.Compare(clientv3.Version(key), ">", 0)).
		Then(clientv3.OpDelete(key)).Commit()
	if err != nil {
		return fmt.Errorf("cluster: deleting reader %q in etcd: %w", id, err)
	}
	c.mu.Lock()
	if !resp.Succeeded || c.wroteLocked(resp.Header.Revision, key) {
		delete(c.readers, id)
	}
	c.mu.Unlock()
	if !resp.Succeeded {
		return fmt.Errorf("%w: %q", ErrReaderNotFound, id)
	}
	return nil
}

func (c *catalog) reader(id string) (ReaderMeta, error) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	r, ok := c.readers[id]
	if !ok {
		return ReaderMeta{}, fmt.Errorf("%w: %q", ErrReaderNotFound, id)
	}
	return r, nil
}

func (c *catalog) readerList() []ReaderMeta {
	c.mu.RLock()
	out := make([]ReaderMeta, 0, len(c.readers))
	for _, r := range c.readers {
		out = append(out, r)
	}
	c.mu.RUnlock()
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}
