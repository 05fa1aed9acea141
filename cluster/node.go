package cluster

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc"

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

	// Placement and membership.
	LoadBound       float64       // c of bounded-load placement; default 1.25
	DeadAfter       time.Duration // a node unavailable this long is Dead and its replicas re-placed; default 5m
	MetadataTimeout time.Duration // how long a metadata operation waits for etcd; default 5s
	// PeerDialOptions dial other nodes' peer service; default: plaintext.
	PeerDialOptions []grpc.DialOption
	// PeerAddresses are the addresses to dial other nodes' peer service at
	// instead of the GRPCAddr they registered, by node id: nodes reach each
	// other at internal addresses (or through proxies) while clients use
	// the advertised ones. A node missing from it is dialed at its GRPCAddr;
	// either way only live members are dialed. Over TLS the dialed host is
	// the one the certificate is verified against. Default: none.
	PeerAddresses map[uint64]string

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
	if o.LoadBound <= 1 {
		o.LoadBound = 1.25
	}
	if o.DeadAfter <= 0 {
		o.DeadAfter = 5 * time.Minute
	}
	if o.MetadataTimeout <= 0 {
		o.MetadataTimeout = 5 * time.Second
	}
	if o.Self.Weight <= 0 {
		o.Self.Weight = 1
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	return o
}

// MaxNodeID is the largest node id: proposal ids carry the proposer's id in
// 16 bits, so the proposals two nodes forward to one leader never collide.
const MaxNodeID = 1<<16 - 1

// Node is one weir node's share of the cluster: its registration in etcd, the
// metadata catalog, and the raft groups of the shards it hosts.
type Node struct {
	opts Options
	log  *slog.Logger
	cat  *catalog
	eng  *engine

	startedAt time.Time
	peers     *peers
	remote    remoteCache // handles of shards hosted elsewhere

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
	case opts.Self.ID > MaxNodeID:
		return nil, fmt.Errorf("cluster: node id %d is above the largest, %d", opts.Self.ID, MaxNodeID)
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
	n.peers = newPeers(opts.Self.ID, n.addrOf, opts.PeerAddresses, opts.PeerDialOptions)
	n.eng.tr = newTransport(opts.Self.ID, n.peers, opts.Logger, n.eng.reportFailure)
	n.eng.hosts = func(id uint64) (ShardMeta, bool) {
		m, ok := n.cat.shard(id)
		return m, ok && slices.Contains(m.Replicas, opts.Self.ID)
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
	if err := n.startMembership(ctx); err != nil {
		return err
	}
	rev, err := n.cat.loadRev(ctx)
	if err != nil {
		return err
	}
	stored, err := n.dropOrphans()
	if err != nil {
		return err
	}
	n.eng.start()
	for _, s := range n.cat.allShards() {
		// A replica the catalog moved off this node while it was down
		// opens too: it may still vote in its group, until the group's
		// leader removes it (reconcile drops it then).
		if !n.hosts(s) && !stored[s.ID] {
			continue
		}
		if err := n.eng.do(func() error { _, err := n.eng.addShard(s); return err }); err != nil {
			return err
		}
	}
	n.goAttach(func() { n.watchCatalog(rev) })
	n.every(n.opts.RetentionInterval, func() { n.enforceRetention(time.Now()) })
	n.every(reconcileInterval, n.reconcile)
	if err := n.markRunning(ctx); err != nil {
		return err
	}
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
		n.eng.tr.close()
		n.remote.closeAll()
		n.peers.close()
		if lease := n.leaseID(); lease != 0 {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			if _, err := n.opts.Etcd.Revoke(ctx, lease); err != nil {
				n.log.Warn("revoking the node lease", "err", err)
			}
			cancel()
		}
	})
	return nil
}

// every runs f every d, in a goroutine that Close waits for, until the node
// stops.
func (n *Node) every(d time.Duration, f func()) {
	n.goAttach(func() {
		t := time.NewTicker(d)
		defer t.Stop()
		for {
			select {
			case <-n.stop:
				return
			case <-t.C:
				f()
			}
		}
	})
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
// It returns the shards that stay stored here.
func (n *Node) dropOrphans() (map[uint64]bool, error) {
	stored, err := n.opts.Store.Shards()
	if err != nil {
		return nil, err
	}
	kept := make(map[uint64]bool)
	for _, id := range stored {
		if _, known := n.cat.shard(id); known {
			kept[id] = true
			continue
		}
		n.log.Info("deleting the data of a shard whose stream is gone", "shard", id)
		if err := n.opts.Store.DeleteShard(id); err != nil {
			return nil, err
		}
	}
	return kept, nil
}

func (n *Node) hosts(s ShardMeta) bool { return slices.Contains(s.Replicas, n.opts.Self.ID) }

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

// CreateStream creates a stream and its shards (ranges as HStreamDB computes
// them). Name, ShardCount, ReplicationFactor and BacklogSeconds come from m;
// the node fills CreatedAt and ShardIDs. ErrStreamExists, ErrTooFewNodes.
func (n *Node) CreateStream(ctx context.Context, m StreamMeta) (StreamMeta, []ShardMeta, error) {
	if m.ShardCount == 0 {
		return StreamMeta{}, nil, fmt.Errorf("cluster: stream %q needs at least one shard", m.Name)
	}
	members := n.liveMembers()
	rf := max(int(m.ReplicationFactor), 1)
	if rf > len(members) {
		return StreamMeta{}, nil, fmt.Errorf("%w: replication factor %d, but the cluster has %d live node(s)", ErrTooFewNodes, rf, len(members))
	}
	ranges := wire.ShardRanges(m.ShardCount)
	texts := make([][2]string, len(ranges))
	keys := make([]string, len(ranges))
	for i, r := range ranges {
		texts[i] = [2]string{wire.FormatKey(r.Start), wire.FormatKey(r.End)}
		keys[i] = fmt.Sprintf("%s/%d", m.Name, i)
	}
	placed := placeItems(placeNodesOf(members), keys, rf, n.opts.LoadBound, n.replicaLoad())
	sets := make([][]uint64, len(keys))
	for i, k := range keys {
		sets[i] = placed[k]
	}
	m.CreatedAt = time.Now().UTC().Truncate(time.Millisecond)
	ctx, cancel := n.metaCtx(ctx)
	defer cancel()
	m, shards, err := n.cat.createStream(ctx, m, texts, sets)
	if err != nil {
		return StreamMeta{}, nil, n.metaErr(err)
	}
	for _, s := range shards {
		if !n.hosts(s) {
			continue // its replicas open it when the catalog watch tells them
		}
		open := func() error {
			if _, ok := n.cat.shard(s.ID); !ok {
				return nil // deleted meanwhile by a DeleteStream
			}
			_, err := n.eng.addShard(s)
			return err
		}
		if err := n.eng.do(open); err != nil {
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
	ctx, cancel := n.metaCtx(ctx)
	defer cancel()
	_, shards, subs, err := n.cat.deleteStream(ctx, name, force)
	if err != nil {
		return nil, n.metaErr(err)
	}
	for _, s := range shards {
		// The catalog watch may be removing the same shard (replicas.go).
		// Both run on the engine loop, so checking there, rather than
		// before, means a removal already under way has finished when this
		// returns: the shard is marked removed and its data is gone.
		remove := func() error {
			if _, ok := n.eng.shard(s.ID); !ok {
				return nil
			}
			return n.eng.removeShard(s.ID)
		}
		if err := n.eng.do(remove); err != nil {
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

// Shard returns a shard of any stream: this node's replica when it hosts
// one, else a handle that reaches a node that does (remote.go).
// ErrShardNotFound.
func (n *Node) Shard(id uint64) (ShardLog, error) {
	if s, ok := n.eng.shard(id); ok {
		return s, nil
	}
	m, ok := n.cat.shard(id)
	if !ok {
		return nil, fmt.Errorf("%w: %d", ErrShardNotFound, id)
	}
	if !n.hosts(m) {
		return n.remote.get(n, m), nil
	}
	// Placed here but not open yet: the stream is being created, or the
	// catalog watch has just placed a replica here. The group opens within
	// moments; a handle to another node would be wrong for good.
	for deadline := time.Now().Add(noLeaderWait); time.Now().Before(deadline); {
		time.Sleep(5 * time.Millisecond)
		if s, ok := n.eng.shard(id); ok {
			return s, nil
		}
		if m, ok = n.cat.shard(id); !ok {
			return nil, fmt.Errorf("%w: %d", ErrShardNotFound, id)
		}
	}
	return nil, fmt.Errorf("%w: shard %d is placed on node %d but has not opened there in %v", ErrNoLeader, id, n.opts.Self.ID, noLeaderWait)
}

// LocalShard returns this node's replica of a shard. ErrShardNotFound if
// this node hosts none.
func (n *Node) LocalShard(id uint64) (*Shard, error) {
	s, ok := n.eng.shard(id)
	if !ok {
		return nil, fmt.Errorf("%w: %d is not hosted on node %d", ErrShardNotFound, id, n.opts.Self.ID)
	}
	return s, nil
}

// CreateReader persists a new shard reader. ErrReaderExists.
func (n *Node) CreateReader(ctx context.Context, r ReaderMeta) error {
	if _, err := n.cat.stream(r.Stream); err != nil {
		return err
	}
	ctx, cancel := n.metaCtx(ctx)
	defer cancel()
	return n.metaErr(n.cat.createReader(ctx, r))
}

// Reader returns one shard reader. ErrReaderNotFound.
func (n *Node) Reader(id string) (ReaderMeta, error) { return n.cat.reader(id) }

// Readers lists every shard reader, by id.
func (n *Node) Readers() []ReaderMeta { return n.cat.readerList() }

// SaveReader persists a reader's new position. ErrReaderNotFound.
func (n *Node) SaveReader(ctx context.Context, r ReaderMeta) error {
	ctx, cancel := n.metaCtx(ctx)
	defer cancel()
	return n.metaErr(n.cat.saveReader(ctx, r))
}

// DeleteReader removes a reader. ErrReaderNotFound.
func (n *Node) DeleteReader(ctx context.Context, id string) error {
	ctx, cancel := n.metaCtx(ctx)
	defer cancel()
	return n.metaErr(n.cat.deleteReader(ctx, id))
}
