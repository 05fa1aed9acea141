package store

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/prometheus/client_golang/prometheus"
	pb "go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"

	"github.com/weir-log/weir/internal/latency"
)

// DefaultCacheSize is the pebble block cache size when Options.CacheSize is 0.
const DefaultCacheSize int64 = 64 << 20

// Options configures Open. The zero value is valid.
type Options struct {
	// FS is the filesystem pebble writes to. Default: vfs.Default. Tests pass
	// an in-memory FS (vfs.NewMem, or vfs.NewCrashableMem to simulate a crash
	// with CrashClone).
	FS vfs.FS
	// Logger receives the store's and pebble's log lines. Default: discard.
	Logger *slog.Logger
	// Metrics, if set, registers weir_store_syncs_total,
	// weir_store_commits_total, weir_store_bytes_written_total and
	// weir_store_trimmed_entries_total (Stats as counters) and the
	// weir_store_sync_latency_seconds histogram. They are unregistered by
	// Close. Default: none.
	Metrics prometheus.Registerer
	// CacheSize is the size of pebble's block cache in bytes. Default:
	// DefaultCacheSize (64 MiB).
	CacheSize int64
}

// Stats counts the writes of a DB since Open.
type Stats struct {
	Syncs          uint64 // pebble commits that waited for an fsync of the WAL
	Commits        uint64 // pebble batch commits, synced or not
	BytesWritten   uint64 // bytes of committed pebble batches
	TrimmedEntries uint64 // log entries dropped by Log.Compact (retention and trims)
}

// DB is one node's store: pebble holding the raft log and state of every
// shard the node hosts.
//
// Lock order: DB.mu, then Log.mu (several Logs: ascending shard id).
type DB struct {
	pdb     *pebble.DB
	log     *slog.Logger
	reg     prometheus.Registerer
	metrics []prometheus.Collector

	syncs, commits, bytes, trimmed atomic.Uint64
	syncLatency                    prometheus.Histogram // observed whether registered or not

	// closed mirrors "mu held for writing by Close" for the memory-only
	// reads of a Log, which take no DB lock.
	closed atomic.Bool

	// mu is held for reading by every pebble read or write and for writing by
	// Close and DeleteShard, which must not overlap them. Reads that keep a
	// pebble iterator past mu (Entries, Scan) are counted in readers instead,
	// so that Close can wait for them without blocking writers behind them.
	mu        sync.RWMutex
	logs      map[uint64]*Log // guarded by mu
	readers   sync.WaitGroup
	closeDone chan struct{} // closed when Close has finished
}

// Open opens (creating if needed) the store in dir.
func Open(dir string, opts Options) (*DB, error) {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if opts.CacheSize <= 0 {
		opts.CacheSize = DefaultCacheSize
	}
	cache := pebble.NewCache(opts.CacheSize)
	defer cache.Unref() // the DB holds its own reference
	popts := &pebble.Options{
		FS:                 opts.FS,
		Cache:              cache,
		Logger:             pebbleLogger{opts.Logger},
		FormatMajorVersion: pebble.FormatNewest,
	}
	pdb, err := pebble.Open(dir, popts)
	if err != nil {
		return nil, fmt.Errorf("store: open %s: %w", dir, err)
	}
	db := &DB{
		pdb:       pdb,
		log:       opts.Logger,
		reg:       opts.Metrics,
		logs:      make(map[uint64]*Log),
		closeDone: make(chan struct{}),
		syncLatency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "weir_store_sync_latency_seconds",
			Help:    "Time a synced store commit took, WAL fsync included (one per raft round that must sync, per trim and per shard deletion).",
			Buckets: latency.Buckets,
		}),
	}
	if err := db.registerMetrics(); err != nil {
		_ = pdb.Close()
		return nil, err
	}
	return db, nil
}

func (db *DB) registerMetrics() error {
	if db.reg == nil {
		return nil
	}
	counter := func(name, help string, v *atomic.Uint64) prometheus.Collector {
		return prometheus.NewCounterFunc(prometheus.CounterOpts{Name: name, Help: help},
			func() float64 { return float64(v.Load()) })
	}
	cs := []prometheus.Collector{
		counter("weir_store_syncs_total", "Store commits that waited for a WAL fsync.", &db.syncs),
		counter("weir_store_commits_total", "Store pebble batch commits, synced or not.", &db.commits),
		counter("weir_store_bytes_written_total", "Bytes of committed store batches (raft entries, hard states, trims).", &db.bytes),
		counter("weir_store_trimmed_entries_total", "Raft log entries dropped from the store by retention and trims (log compaction).", &db.trimmed),
		db.syncLatency,
	}
	for i, c := range cs {
		if err := db.reg.Register(c); err != nil {
			for _, r := range cs[:i] {
				db.reg.Unregister(r)
			}
			return fmt.Errorf("store: register metrics: %w", err)
		}
	}
	db.metrics = cs
	return nil
}

// Close closes the store. It waits for running commits and reads (a Scan
// callback included) to finish. It is idempotent: later calls wait for the
// first to finish and return nil.
func (db *DB) Close() error {
	db.mu.Lock()
	if db.closed.Load() {
		db.mu.Unlock()
		<-db.closeDone
		return nil
	}
	db.closed.Store(true)
	db.logs = nil
	db.mu.Unlock()

	defer close(db.closeDone)
	db.readers.Wait()
	for _, c := range db.metrics {
		db.reg.Unregister(c)
	}
	if err := db.pdb.Close(); err != nil {
		return fmt.Errorf("store: close: %w", err)
	}
	return nil
}

// Stats returns the write counters.
func (db *DB) Stats() Stats {
	return Stats{Syncs: db.syncs.Load(), Commits: db.commits.Load(), BytesWritten: db.bytes.Load(), TrimmedEntries: db.trimmed.Load()}
}

// Log returns the raft.Storage of shard, loading its state from disk on the
// first call. A shard with nothing stored has an empty log (FirstIndex 1,
// LastIndex 0) and empty HardState and ConfState.
func (db *DB) Log(shard uint64) (*Log, error) {
	db.mu.RLock()
	if db.closed.Load() {
		db.mu.RUnlock()
		return nil, ErrClosed
	}
	l := db.logs[shard]
	db.mu.RUnlock()
	if l != nil {
		return l, nil
	}

	db.mu.Lock()
	defer db.mu.Unlock()
	if db.closed.Load() {
		return nil, ErrClosed
	}
	if l := db.logs[shard]; l != nil {
		return l, nil
	}
	l, err := db.loadLog(shard)
	if err != nil {
		return nil, err
	}
	db.logs[shard] = l
	return l, nil
}

// loadLog reads a shard's state. REQUIRES: db.mu held.
func (db *DB) loadLog(shard uint64) (*Log, error) {
	l := &Log{db: db, shard: shard, hs: &pb.HardState{}, cs: &pb.ConfState{}}
	if err := db.getProto(shard, shardKey(shard, kindHardState), l.hs); err != nil {
		return nil, err
	}
	if err := db.getProto(shard, shardKey(shard, kindConfState), l.cs); err != nil {
		return nil, err
	}
	pb.EnsureConfState(l.cs) // raft's convention: no nil pointer fields
	var trunc truncState
	tkey := shardKey(shard, kindTruncated)
	v, closer, err := db.pdb.Get(tkey)
	switch {
	case errors.Is(err, pebble.ErrNotFound):
	case err != nil:
		return nil, fmt.Errorf("store: shard %d: %w", shard, err)
	default:
		trunc, err = decodeTruncState(v)
		closer.Close()
		if err != nil {
			return nil, corruptError(shard, tkey, "%v", err)
		}
	}
	l.first, l.truncTerm = trunc.index+1, trunc.term
	l.last, l.lastTerm = trunc.index, trunc.term

	// Entries are [first, last], contiguous: the first stored key must be
	// first (everything below was range-deleted with the truncated state).
	it, err := db.pdb.NewIter(&pebble.IterOptions{
		LowerBound: entryKey(shard, l.first),
		UpperBound: entriesEnd(shard),
	})
	if err != nil {
		return nil, fmt.Errorf("store: shard %d: %w", shard, err)
	}
	defer it.Close()
	if it.First() {
		_, idx, ok := decodeEntryKey(it.Key())
		if !ok || idx != l.first {
			return nil, corruptError(shard, it.Key(), "first entry is not at index %d after the truncated state", l.first)
		}
		if !it.Last() {
			return nil, fmt.Errorf("store: shard %d: %w", shard, it.Error())
		}
		key := it.Key()
		_, idx, ok = decodeEntryKey(key)
		if !ok {
			return nil, corruptError(shard, key, "bad entry key")
		}
		v, err := it.ValueAndErr()
		if err != nil {
			return nil, fmt.Errorf("store: shard %d: %w", shard, err)
		}
		term, eidx, err := entryTermIndex(v)
		if err != nil || eidx != idx {
			return nil, corruptError(shard, key, "bad entry (index %d, err %v)", eidx, err)
		}
		l.last, l.lastTerm = idx, term
	}
	if err := it.Error(); err != nil {
		return nil, fmt.Errorf("store: shard %d: %w", shard, err)
	}
	if c := l.hs.GetCommit(); c > l.last {
		return nil, corruptError(shard, shardKey(shard, kindHardState),
			"hard state commits %d past the last entry %d", c, l.last)
	}
	return l, nil
}

// getProto unmarshals key into m; m is left alone if key does not exist.
func (db *DB) getProto(shard uint64, key []byte, m proto.Message) error {
	v, closer, err := db.pdb.Get(key)
	if errors.Is(err, pebble.ErrNotFound) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("store: shard %d: %w", shard, err)
	}
	defer closer.Close()
	if err := proto.Unmarshal(v, m); err != nil {
		return corruptError(shard, key, "%v", err)
	}
	return nil
}

// Shards lists, in ascending order, the shards with anything stored.
func (db *DB) Shards() ([]uint64, error) {
	db.mu.RLock()
	defer db.mu.RUnlock()
	if db.closed.Load() {
		return nil, ErrClosed
	}
	it, err := db.pdb.NewIter(&pebble.IterOptions{
		LowerBound: []byte{shardPrefix},
		UpperBound: []byte{shardPrefix + 1},
	})
	if err != nil {
		return nil, fmt.Errorf("store: shards: %w", err)
	}
	defer it.Close()
	var shards []uint64
	for valid := it.First(); valid; {
		shard, ok := decodeShard(it.Key())
		if !ok {
			return nil, corruptError(0, it.Key(), "key too short for a shard key")
		}
		shards = append(shards, shard)
		// Skip the rest of the shard: one seek per shard.
		valid = shard != ^uint64(0) && it.SeekGE(shardStart(shard+1))
	}
	if err := it.Error(); err != nil {
		return nil, fmt.Errorf("store: shards: %w", err)
	}
	return shards, nil
}

// DeleteShard drops every key of shard with one synced range delete and
// forgets its Log: the old Log answers ErrShardDeleted from then on, and
// DB.Log returns a fresh, empty one. The caller stops the shard's raft group
// first; a Batch built for the shard before the delete fails to commit.
func (db *DB) DeleteShard(shard uint64) error {
	db.mu.Lock()
	defer db.mu.Unlock()
	if db.closed.Load() {
		return ErrClosed
	}
	if l := db.logs[shard]; l != nil {
		l.mu.Lock()
		l.deleted = true
		l.mu.Unlock()
		delete(db.logs, shard)
	}
	b := db.pdb.NewBatch()
	defer b.Close()
	if err := b.DeleteRange(shardStart(shard), shardEnd(shard), nil); err != nil {
		return fmt.Errorf("store: delete shard %d: %w", shard, err)
	}
	return db.apply(b, true)
}

// apply commits a pebble batch and counts it. REQUIRES: db.mu held.
func (db *DB) apply(b *pebble.Batch, sync bool) error {
	n := uint64(len(b.Repr()))
	wo := pebble.NoSync
	if sync {
		wo = pebble.Sync
	}
	var start time.Time
	if sync {
		start = time.Now()
	}
	if err := db.pdb.Apply(b, wo); err != nil {
		return fmt.Errorf("store: commit: %w", err)
	}
	db.commits.Add(1)
	db.bytes.Add(n)
	if sync {
		db.syncLatency.Observe(time.Since(start).Seconds())
		db.syncs.Add(1)
	}
	return nil
}

// acquireReader admits a read that keeps a pebble iterator open after
// releasing db.mu; Close waits for it. Call releaseReader when done.
func (db *DB) acquireReader() error {
	db.mu.RLock()
	defer db.mu.RUnlock()
	if db.closed.Load() {
		return ErrClosed
	}
	db.readers.Add(1)
	return nil
}

func (db *DB) releaseReader() { db.readers.Done() }

// sortedShards returns the keys of m in ascending order.
func sortedShards[V any](m map[uint64]V) []uint64 {
	ids := make([]uint64, 0, len(m))
	for id := range m {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	return ids
}

// pebbleLogger sends pebble's log lines to slog. pebble calls Fatalf on
// errors it cannot recover from (a failed WAL write or sync) and expects it
// not to return: it logs and panics, leaving the process to crash and
// recover from the synced state.
type pebbleLogger struct{ l *slog.Logger }

func (p pebbleLogger) Infof(format string, args ...any) {
	p.l.Info(fmt.Sprintf(format, args...), "component", "pebble")
}

func (p pebbleLogger) Errorf(format string, args ...any) {
	p.l.Error(fmt.Sprintf(format, args...), "component", "pebble")
}

func (p pebbleLogger) Fatalf(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	p.l.Error(msg, "component", "pebble", "fatal", true)
	panic("store: pebble: " + msg)
}
