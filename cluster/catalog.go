package cluster

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"sync"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// The catalog keeps weir's metadata in etcd, under the configured prefix P:
//
//	P nodes/<id>          NodeInfo, under the node's lease
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
// caches what it wrote, for the append and read paths, which must not ask
// etcd; a later issue (cluster) keeps the cache fresh with a watch.
type catalog struct {
	cli    *clientv3.Client
	prefix string

	mu      sync.RWMutex
	streams map[string]StreamMeta       // guarded by mu
	shards  map[uint64]ShardMeta        // guarded by mu
	readers map[string]ReaderMeta       // guarded by mu
	subs    map[string]SubscriptionMeta // guarded by mu
}

func newCatalog(cli *clientv3.Client, prefix string) *catalog {
	return &catalog{
		cli:     cli,
		prefix:  prefix,
		streams: make(map[string]StreamMeta),
		shards:  make(map[uint64]ShardMeta),
		readers: make(map[string]ReaderMeta),
		subs:    make(map[string]SubscriptionMeta),
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
func (c *catalog) kindPrefix(kind string) string  { return c.prefix + kind + "/" }

// load reads every stream, shard, reader and subscription into the cache.
func (c *catalog) load(ctx context.Context) error {
	streams := make(map[string]StreamMeta)
	shards := make(map[uint64]ShardMeta)
	readers := make(map[string]ReaderMeta)
	subs := make(map[string]SubscriptionMeta)
	if err := c.loadKind(ctx, "streams", func(v []byte) error {
		var m StreamMeta
		if err := json.Unmarshal(v, &m); err != nil {
			return err
		}
		streams[m.Name] = m
		return nil
	}); err != nil {
		return err
	}
	if err := c.loadKind(ctx, "shards", func(v []byte) error {
		var m ShardMeta
		if err := json.Unmarshal(v, &m); err != nil {
			return err
		}
		shards[m.ID] = m
		return nil
	}); err != nil {
		return err
	}
	if err := c.loadKind(ctx, "readers", func(v []byte) error {
		var m ReaderMeta
		if err := json.Unmarshal(v, &m); err != nil {
			return err
		}
		readers[m.ID] = m
		return nil
	}); err != nil {
		return err
	}
	if err := c.loadKind(ctx, "subs", func(v []byte) error {
		var m SubscriptionMeta
		if err := json.Unmarshal(v, &m); err != nil {
			return err
		}
		subs[m.ID] = m
		return nil
	}); err != nil {
		return err
	}
	c.mu.Lock()
	c.streams, c.shards, c.readers, c.subs = streams, shards, readers, subs
	c.mu.Unlock()
	return nil
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
// replicas its replica set.
func (c *catalog) createStream(ctx context.Context, m StreamMeta, ranges [][2]string, replicas []uint64) (StreamMeta, []ShardMeta, error) {
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
			shards[i] = ShardMeta{ID: id, Stream: m.Name, Start: r[0], End: r[1], Epoch: uint64(len(ranges)), Replicas: replicas}
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
		c.mu.Lock()
		c.streams[m.Name] = m
		for _, s := range shards {
			c.shards[s.ID] = s
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
	c.readers[r.ID] = r
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
	c.readers[r.ID] = r
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
	delete(c.readers, id)
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
