package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/weir-log/weir/api/wire"
	"github.com/weir-log/weir/store"
)

// Options configure a Node. Zero values take the documented defaults.
type Options struct {
	Self     NodeInfo         // required: ID >= 1 and the advertised GRPCAddr
	DataDir  string           // required: where the node keeps its lease id
	Etcd     *clientv3.Client // required
	Prefix   string           // etcd key prefix; default "/weir/"
	LeaseTTL time.Duration    // registration lease; default 10s
	Store    *store.DB        // required; the caller closes it after the node

	Tick              time.Duration // raft tick; default 100ms
	RetentionInterval time.Duration // how often backlog durations are enforced; default 10s
	MaxWait           time.Duration // extra time a round waits for appends; default 0
	MaxRoundBytes     int           // the most bytes of appends in one round; default 4 MiB
	MaxInflight       int           // appends queued before Append blocks; default 4096

	Logger *slog.Logger // default: discard
	// Metrics, when set, gets the append series per stream
	// (weir_stream_append_*) and the raft series (weir_raft_*); see
	// metrics.go. Default: none.
	Metrics prometheus.Registerer
}

func (o Options) withDefaults() Options {
	if o.Prefix == "" {
		o.Prefix = "/weir/"
	}
	if o.LeaseTTL <= 0 {
		o.LeaseTTL = 10 * time.Second
	}
	if o.Tick <= 0 {
		o.Tick = 100 * time.Millisecond
	}
	if o.RetentionInterval <= 0 {
		o.RetentionInterval = 10 * time.Second
	}
	if o.MaxRoundBytes <= 0 {
		o.MaxRoundBytes = 4 << 20
	}
	if o.MaxInflight <= 0 {
		o.MaxInflight = 4096
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	return o
}

// Node is one weir node's share of the cluster: its registration in etcd, the
// metadata catalog, and the raft groups of the shards it hosts.
type Node struct {
	opts Options
	log  *slog.Logger
	cat  *catalog
	eng  *engine

	startedAt time.Time
	lease     clientv3.LeaseID

	// readyMu guards notOpen: when Ready first saw each shard placed here
	// in the catalog and not open (Ready's grace).
	readyMu sync.Mutex
	notOpen map[uint64]time.Time

	stop      chan struct{}
	wg        sync.WaitGroup
	closeOnce sync.Once
}

// New checks the options and builds a Node; it does no I/O.
func New(opts Options) (*Node, error) {
	opts = opts.withDefaults()
	switch {
	case opts.Self.ID == 0:
		return nil, errors.New("cluster: node id must be at least 1")
	case opts.Self.GRPCAddr == "":
		return nil, errors.New("cluster: the node's advertised gRPC address is required")
	case opts.Etcd == nil:
		return nil, errors.New("cluster: an etcd client is required")
	case opts.Store == nil:
		return nil, errors.New("cluster: a store is required")
	case opts.DataDir == "":
		return nil, errors.New("cluster: a data directory is required")
	case !strings.HasPrefix(opts.Prefix, "/") || !strings.HasSuffix(opts.Prefix, "/"):
		return nil, fmt.Errorf("cluster: etcd prefix %q must start and end with /", opts.Prefix)
	}
	n := &Node{
		opts: opts,
		log:  opts.Logger,
		cat:  newCatalog(opts.Etcd, opts.Prefix),
		eng:  newEngine(opts.Self.ID, opts.Store, opts.Logger, opts.Tick, opts.MaxWait, opts.MaxRoundBytes, opts.MaxInflight),
		stop: make(chan struct{}),
	}
	if opts.Metrics != nil {
		if err := n.eng.met.register(opts.Metrics); err != nil {
			return nil, err
		}
	}
	return n, nil
}

// Start registers the node, loads the catalog, opens the raft group of every
// shard this node hosts and starts the background work.
func (n *Node) Start(ctx context.Context) error {
	n.startedAt = time.Now()
	n.opts.Self.StartedAt = n.startedAt
	if err := n.register(ctx); err != nil {
		return err
	}
	if err := n.cat.load(ctx); err != nil {
		return err
	}
	if err := n.dropOrphans(); err != nil {
		return err
	}
	n.eng.start()
	for _, s := range n.cat.allShards() {
		if !n.hosts(s) {
			continue
		}
		if err := n.eng.do(func() error { _, err := n.eng.addShard(s); return err }); err != nil {
			return err
		}
	}
	n.goAttach(n.retentionLoop)
	n.log.Info("node started", "id", n.opts.Self.ID, "grpc", n.opts.Self.GRPCAddr, "shards", len(n.cat.allShards()))
	return nil
}

// Close stops accepting appends, finishes those in flight, stops the raft
// loop and revokes the node's lease. The store stays open: its owner closes
// it afterwards. Close is idempotent.
func (n *Node) Close() error {
	n.closeOnce.Do(func() {
		close(n.stop)
		n.wg.Wait()
		n.eng.stop()
		if n.lease != 0 {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			if _, err := n.opts.Etcd.Revoke(ctx, n.lease); err != nil {
				n.log.Warn("revoking the node lease", "err", err)
			}
			cancel()
		}
	})
	return nil
}

// goAttach runs f in a goroutine that Close waits for; f must return once
// n.stop is closed.
func (n *Node) goAttach(f func()) {
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		f()
	}()
}

// register puts this node under a fresh lease at nodes/<id>. The key may
// still be held by this node's previous incarnation (a crash leaves its lease
// alive for up to its TTL): the lease id kept in the data directory says so,
// and that lease is revoked. A key held by any other lease means another live
// node has this id, and start-up fails.
func (n *Node) register(ctx context.Context) error {
	cli, key := n.opts.Etcd, n.cat.nodeKey(n.opts.Self.ID)
	leaseFile := filepath.Join(n.opts.DataDir, "node.lease")
	resp, err := cli.Get(ctx, key)
	if err != nil {
		return fmt.Errorf("cluster: reading node registration: %w", err)
	}
	if len(resp.Kvs) == 1 {
		held := clientv3.LeaseID(resp.Kvs[0].Lease)
		prev, _ := os.ReadFile(leaseFile)
		if strconv.FormatInt(int64(held), 16) != strings.TrimSpace(string(prev)) {
			return fmt.Errorf("cluster: node id %d is already registered by a live node (%s); give this node another node-id", n.opts.Self.ID, resp.Kvs[0].Value)
		}
		if _, err := cli.Revoke(ctx, held); err != nil {
			return fmt.Errorf("cluster: revoking this node's previous lease: %w", err)
		}
	}
	grant, err := cli.Grant(ctx, int64(n.opts.LeaseTTL/time.Second))
	if err != nil {
		return fmt.Errorf("cluster: granting the node lease: %w", err)
	}
	if err := writeFileSync(leaseFile, []byte(strconv.FormatInt(int64(grant.ID), 16))); err != nil {
		return err
	}
	v, _ := json.Marshal(n.opts.Self)
	txn, err := cli.Txn(ctx).If(clientv3.Compare(clientv3.Version(key), "=", 0)).
		Then(clientv3.OpPut(key, string(v), clientv3.WithLease(grant.ID))).Commit()
	if err != nil {
		return fmt.Errorf("cluster: registering node %d: %w", n.opts.Self.ID, err)
	}
	if !txn.Succeeded {
		return fmt.Errorf("cluster: node id %d was registered by another node while this one started", n.opts.Self.ID)
	}
	n.lease = grant.ID
	keepCtx, cancel := context.WithCancel(context.Background())
	ka, err := cli.KeepAlive(keepCtx, grant.ID)
	if err != nil {
		cancel()
		return fmt.Errorf("cluster: keeping the node lease alive: %w", err)
	}
	n.goAttach(func() {
		defer cancel()
		for {
			select {
			case <-n.stop:
				return
			case _, ok := <-ka:
				if !ok {
					n.log.Error("the node lease expired; this node no longer shows as a member")
					return
				}
			}
		}
	})
	return nil
}

func writeFileSync(path string, data []byte) error {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o644)
	if err != nil {
		return fmt.Errorf("cluster: %w", err)
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return fmt.Errorf("cluster: writing %s: %w", path, err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("cluster: syncing %s: %w", path, err)
	}
	return f.Close()
}

// dropOrphans deletes stored shards the catalog no longer has: a crash
// between deleting a stream in etcd and deleting its data leaves them.
func (n *Node) dropOrphans() error {
	stored, err := n.opts.Store.Shards()
	if err != nil {
		return err
	}
	known := make(map[uint64]bool)
	for _, s := range n.cat.allShards() {
		known[s.ID] = true
	}
	for _, id := range stored {
		if !known[id] {
			n.log.Info("deleting the data of a shard whose stream is gone", "shard", id)
			if err := n.opts.Store.DeleteShard(id); err != nil {
				return err
			}
		}
	}
	return nil
}

func (n *Node) hosts(s ShardMeta) bool {
	for _, r := range s.Replicas {
		if r == n.opts.Self.ID {
			return true
		}
	}
	return false
}

// Ready reports whether the node serves the shards placed on it: it has
// started and is not closing, its store has not failed, and every shard the
// catalog places here has its raft group open and a leader. A shard not
// open yet, or without a leader, is a fault only once it has been so for
// noLeaderWait (as long as an append waits for a leader): a stream being
// created is in the catalog before its groups open, and a shard just
// opened or between leaders elects one within that. The error names what
// is not ready (the first few shards, and how many more).
func (n *Node) Ready() error { return n.ready(time.Now()) }

func (n *Node) ready(now time.Time) error {
	select {
	case <-n.stop:
		return errors.New("the node is shutting down")
	default:
	}
	if !n.eng.started.Load() {
		return errors.New("the node has not started")
	}
	if err := n.eng.err(); err != nil {
		return fmt.Errorf("the store failed, writes are refused until a restart: %w", err)
	}
	const named = 3
	var bad []string
	count := 0
	n.readyMu.Lock()
	defer n.readyMu.Unlock()
	missing := make(map[uint64]time.Time)
	for _, m := range n.cat.allShards() {
		if !n.hosts(m) {
			continue
		}
		why := ""
		if s, ok := n.eng.shard(m.ID); !ok {
			since, seen := n.notOpen[m.ID]
			if !seen {
				since = now
			}
			missing[m.ID] = since
			if d := now.Sub(since); d >= noLeaderWait {
				why = fmt.Sprintf("has not been open for %v", d.Round(time.Second))
			}
		} else if since := s.leaderless.Load(); since != 0 && now.Sub(time.Unix(0, since)) >= noLeaderWait {
			why = fmt.Sprintf("has had no raft leader for %v", now.Sub(time.Unix(0, since)).Round(time.Second))
		}
		if why == "" {
			continue
		}
		if count++; count <= named {
			bad = append(bad, fmt.Sprintf("shard %d of stream %q %s", m.ID, m.Stream, why))
		}
	}
	n.notOpen = missing // forgets the shards open (or gone) since
	if count == 0 {
		return nil
	}
	msg := strings.Join(bad, "; ")
	if count > named {
		msg += fmt.Sprintf("; and %d more shard(s)", count-named)
	}
	return errors.New(msg)
}

// Self is this node's registration.
func (n *Node) Self() NodeInfo { return n.opts.Self }

// StartedAt is when this node started serving.
func (n *Node) StartedAt() time.Time { return n.startedAt }

// Members lists the live nodes (those whose lease is alive), sorted by id.
func (n *Node) Members(ctx context.Context) ([]NodeInfo, error) {
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

// CreateStream creates a stream and its shards (ranges as HStreamDB computes
// them). Name, ShardCount, ReplicationFactor and BacklogSeconds come from m;
// the node fills CreatedAt and ShardIDs. ErrStreamExists, ErrTooFewNodes.
func (n *Node) CreateStream(ctx context.Context, m StreamMeta) (StreamMeta, []ShardMeta, error) {
	if m.ShardCount == 0 {
		return StreamMeta{}, nil, fmt.Errorf("cluster: stream %q needs at least one shard", m.Name)
	}
	members, err := n.Members(ctx)
	if err != nil {
		return StreamMeta{}, nil, err
	}
	if int(m.ReplicationFactor) > len(members) {
		return StreamMeta{}, nil, fmt.Errorf("%w: replication factor %d, but the cluster has %d node(s)", ErrTooFewNodes, m.ReplicationFactor, len(members))
	}
	if m.ReplicationFactor > 1 {
		// Placement across nodes arrives with the cluster issue.
		return StreamMeta{}, nil, fmt.Errorf("%w: replication factor %d, but this weir version replicates shards on one node only", ErrTooFewNodes, m.ReplicationFactor)
	}
	ranges := wire.ShardRanges(m.ShardCount)
	texts := make([][2]string, len(ranges))
	for i, r := range ranges {
		texts[i] = [2]string{wire.FormatKey(r.Start), wire.FormatKey(r.End)}
	}
	m.CreatedAt = time.Now().UTC().Truncate(time.Millisecond)
	m, shards, err := n.cat.createStream(ctx, m, texts, []uint64{n.opts.Self.ID})
	if err != nil {
		return StreamMeta{}, nil, err
	}
	for _, s := range shards {
		if err := n.eng.do(func() error { _, err := n.eng.addShard(s); return err }); err != nil {
			return StreamMeta{}, nil, fmt.Errorf("cluster: starting shard %d of stream %q: %w", s.ID, m.Name, err)
		}
	}
	n.log.Info("stream created", "stream", m.Name, "shards", m.ShardCount, "backlog_s", m.BacklogSeconds)
	return m, shards, nil
}

// DeleteStream removes a stream, its shards' data and its readers and, with
// force, its subscriptions, whose ids it returns; without force a stream
// with subscriptions is refused. ErrStreamNotFound,
// ErrStreamHasSubscriptions.
func (n *Node) DeleteStream(ctx context.Context, name string, force bool) (deletedSubs []string, err error) {
	_, shards, subs, err := n.cat.deleteStream(ctx, name, force)
	if err != nil {
		return nil, err
	}
	for _, s := range shards {
		if err := n.eng.do(func() error { return n.eng.removeShard(s.ID) }); err != nil {
			return subs, fmt.Errorf("cluster: deleting the data of shard %d: %w", s.ID, err)
		}
	}
	n.log.Info("stream deleted", "stream", name, "subscriptions_deleted", len(subs))
	return subs, nil
}

// Stream returns one stream. ErrStreamNotFound.
func (n *Node) Stream(name string) (StreamMeta, error) { return n.cat.stream(name) }

// Streams lists streams whose name starts with prefix ("" = all), by name.
func (n *Node) Streams(prefix string) []StreamMeta { return n.cat.streamList(prefix) }

// StreamShards lists a stream's shards in hash-range order. ErrStreamNotFound.
func (n *Node) StreamShards(name string) ([]ShardMeta, error) { return n.cat.streamShards(name) }

// Shard returns the local replica of a shard. ErrShardNotFound.
func (n *Node) Shard(id uint64) (*Shard, error) {
	s, ok := n.eng.shard(id)
	if !ok {
		return nil, fmt.Errorf("%w: %d", ErrShardNotFound, id)
	}
	return s, nil
}

// CreateReader persists a new shard reader. ErrReaderExists.
func (n *Node) CreateReader(ctx context.Context, r ReaderMeta) error {
	if _, err := n.cat.stream(r.Stream); err != nil {
		return err
	}
	return n.cat.createReader(ctx, r)
}

// Reader returns one shard reader. ErrReaderNotFound.
func (n *Node) Reader(id string) (ReaderMeta, error) { return n.cat.reader(id) }

// Readers lists every shard reader, by id.
func (n *Node) Readers() []ReaderMeta { return n.cat.readerList() }

// SaveReader persists a reader's new position. ErrReaderNotFound.
func (n *Node) SaveReader(ctx context.Context, r ReaderMeta) error { return n.cat.saveReader(ctx, r) }

// DeleteReader removes a reader. ErrReaderNotFound.
func (n *Node) DeleteReader(ctx context.Context, id string) error { return n.cat.deleteReader(ctx, id) }
