package api

import (
	"context"
	"fmt"
	"sync"

	"github.com/weir-log/weir/api/hstreampb"
	"github.com/weir-log/weir/cluster"
)

// The size of one read response: at most maxBatchesPerResponse batches and
// maxBytesPerResponse bytes of them, except that a response always carries
// the next batch if one is available, however large (up to MaxBatchSize).
// gRPC clients accept 4 MiB by default: a store.max-batch-size above ~3 MiB
// needs readers that raise their receive limit (weir's client does).
const (
	maxBatchesPerResponse = 64
	maxBytesPerResponse   = 1 << 20
)

// cursor is one shard being read: the next index to read and where to stop.
type cursor struct {
	sh   cluster.ShardLog
	id   uint64
	next uint64
	end  bound
	who  string // the reader, for logs
}

// poll reads up to maxEntries batches that are available now and advances
// the cursor past them (and past raft's own entries). With nothing to read,
// it returns the channel that is closed when the shard commits more; it
// reads through the shard's committed index as of the call, so an entry
// committed after it always closes that channel.
func (s *Service) poll(c *cursor, maxEntries int) ([]cluster.Entry, <-chan struct{}, error) {
	committed, grown := c.sh.Committed()
	if first := c.sh.First(); c.next < first {
		s.log.Warn("read gap: entries were trimmed before they were read",
			"reader", c.who, "shard", c.id, "from", c.next, "first", first)
		c.next = first
	}
	entries, err := c.sh.Read(c.next, maxEntries, maxBytesPerResponse)
	if err != nil {
		return nil, nil, fmt.Errorf("read shard %d from index %d: %w", c.id, c.next, err)
	}
	if c.end.bounded {
		for i, e := range entries {
			if e.Index > c.end.last {
				entries = entries[:i]
				break
			}
		}
	}
	if len(entries) == 0 {
		// Whatever lies between next and committed holds no records.
		c.next = max(c.next, committed+1)
		return nil, grown, nil
	}
	c.next = entries[len(entries)-1].Index + 1
	return entries, nil, nil
}

// waitMore blocks until the shard commits past what poll saw, the shard is
// deleted, or ctx or stop ends. It returns stopped = true if stop fired.
func (s *Service) waitMore(ctx context.Context, c *cursor, grown <-chan struct{}, stop <-chan struct{}) (stopped bool, err error) {
	select {
	case <-grown:
	case <-stop:
		return true, nil
	case <-ctx.Done():
		return false, ctx.Err()
	}
	// A deleted shard's channel stays closed; notice the deletion rather
	// than spin on it.
	if now, err := s.node.Shard(c.id); err != nil || now != c.sh {
		return false, errorf(cluster.ErrShardNotFound, "shard %d was deleted while %s was reading it", c.id, c.who)
	}
	return false, nil
}

func receivedAll(shardID uint64, entries []cluster.Entry) ([]*hstreampb.ReceivedRecord, error) {
	out := make([]*hstreampb.ReceivedRecord, 0, len(entries))
	for _, e := range entries {
		r, err := e.Received(shardID, nil)
		if err != nil {
			return nil, err
		}
		out = append(out, r)
	}
	return out, nil
}

// budget is the maxReadBatches of one streaming read, shared by its shards.
type budget struct {
	mu      sync.Mutex
	left    uint64 // guarded by mu
	limited bool
	spent   chan struct{} // closed when left reaches 0; nil if unlimited
}

func newBudget(maxBatches uint64) *budget {
	if maxBatches == 0 {
		return &budget{}
	}
	return &budget{left: maxBatches, limited: true, spent: make(chan struct{})}
}

// take grants up to n batches, 0 once the budget is spent.
func (b *budget) take(n int) int {
	if !b.limited {
		return n
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.left == 0 {
		return 0
	}
	got := min(uint64(n), b.left)
	b.left -= got
	if b.left == 0 {
		close(b.spent)
	}
	return int(got)
}

// follow streams every cursor's batches as they are committed, one
// goroutine per shard, until each has passed its end or the budget is spent
// (nil), or ctx ends or a send fails (the error). send is called under a
// mutex, so it may use a gRPC stream directly.
func (s *Service) follow(ctx context.Context, cursors []*cursor, b *budget,
	send func([]*hstreampb.ReceivedRecord) error) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		select {
		case <-s.shutdown:
			cancel()
		case <-ctx.Done():
		}
	}()
	var (
		sendMu   sync.Mutex
		errOnce  sync.Once
		firstErr error
		wg       sync.WaitGroup
	)
	locked := func(recs []*hstreampb.ReceivedRecord) error {
		sendMu.Lock()
		defer sendMu.Unlock()
		return send(recs)
	}
	for _, c := range cursors {
		wg.Go(func() {
			if err := s.followShard(ctx, c, b, locked); err != nil {
				errOnce.Do(func() { firstErr = err; cancel() })
			}
		})
	}
	wg.Wait()
	select {
	case <-s.shutdown:
		return errorf(cluster.ErrClosed, "the server is shutting down; read again to continue")
	default:
	}
	return firstErr
}

func (s *Service) followShard(ctx context.Context, c *cursor, b *budget,
	send func([]*hstreampb.ReceivedRecord) error) error {
	for !c.end.passed(c.next) {
		entries, grown, err := s.poll(c, maxBatchesPerResponse)
		if err != nil {
			return err
		}
		if len(entries) == 0 {
			if c.end.passed(c.next) {
				return nil
			}
			stopped, err := s.waitMore(ctx, c, grown, b.spent)
			if stopped || err != nil {
				return err
			}
			continue
		}
		n := b.take(len(entries))
		if n == 0 {
			return nil
		}
		recs, err := receivedAll(c.id, entries[:n])
		if err != nil {
			return err
		}
		if err := send(recs); err != nil {
			return err
		}
		if n < len(entries) {
			return nil // the budget is spent
		}
	}
	return nil
}

// ReadShardStream streams one shard's batches from `from` through `until`.
func (s *Service) ReadShardStream(req *hstreampb.ReadShardStreamRequest, ss hstreampb.HStreamApi_ReadShardStreamServer) error {
	return statusError(s.log, "ReadShardStream", s.readShardStream(req, ss))
}

func (s *Service) readShardStream(req *hstreampb.ReadShardStreamRequest, ss hstreampb.HStreamApi_ReadShardStreamServer) error {
	var (
		sh  cluster.ShardLog
		err error
	)
	if req.GetStreamName() != "" {
		sh, err = s.shardOf(req.GetStreamName(), req.GetShardId())
	} else { // clients of HStreamDB 0.16 do not send the stream
		sh, err = s.shard(req.GetShardId())
	}
	if err != nil {
		return err
	}
	return s.followShardRange(ss.Context(), sh, req.GetReaderId(), req.GetFrom(), req.GetUntil(), req.GetMaxReadBatches(),
		func(recs []*hstreampb.ReceivedRecord) error {
			return ss.Send(&hstreampb.ReadShardStreamResponse{ReceivedRecords: recs})
		})
}

// followShardRange streams one shard's batches from `from` through `until`
// (unbounded: follow), at most maxBatches of them (0: no limit).
func (s *Service) followShardRange(ctx context.Context, sh cluster.ShardLog, readerID string, from, until *hstreampb.ShardOffset,
	maxBatches uint64, send func([]*hstreampb.ReceivedRecord) error) error {
	c, err := shardCursor(sh, readerID, from, until)
	if err != nil {
		return err
	}
	return s.follow(ctx, []*cursor{c}, newBudget(maxBatches), send)
}

// ReadSingleShardStream streams the batches of a stream that has exactly
// one shard.
func (s *Service) ReadSingleShardStream(req *hstreampb.ReadSingleShardStreamRequest, ss hstreampb.HStreamApi_ReadSingleShardStreamServer) error {
	return statusError(s.log, "ReadSingleShardStream", s.readSingleShardStream(req, ss))
}

func (s *Service) readSingleShardStream(req *hstreampb.ReadSingleShardStreamRequest, ss hstreampb.HStreamApi_ReadSingleShardStreamServer) error {
	name := req.GetStreamName()
	ms, err := s.streamShards(name)
	if err != nil {
		return err
	}
	if len(ms) != 1 {
		return errorf(errTooManyShards, "stream %q has %d shards; ReadSingleShardStream reads only streams with exactly one", name, len(ms))
	}
	sh, err := s.shard(ms[0].ID)
	if err != nil {
		return err
	}
	return s.followShardRange(ss.Context(), sh, req.GetReaderId(), req.GetFrom(), req.GetUntil(), req.GetMaxReadBatches(),
		func(recs []*hstreampb.ReceivedRecord) error {
			return ss.Send(&hstreampb.ReadSingleShardStreamResponse{ReceivedRecords: recs})
		})
}

// ReadStream streams the batches of every shard of a stream, each shard in
// order, the shards interleaved as their batches become available.
func (s *Service) ReadStream(req *hstreampb.ReadStreamRequest, ss hstreampb.HStreamApi_ReadStreamServer) error {
	return statusError(s.log, "ReadStream", s.readStream(req, ss))
}

func (s *Service) readStream(req *hstreampb.ReadStreamRequest, ss hstreampb.HStreamApi_ReadStreamServer) error {
	ms, err := s.streamShards(req.GetStreamName())
	if err != nil {
		return err
	}
	cursors := make([]*cursor, 0, len(ms))
	for _, m := range ms {
		sh, err := s.shard(m.ID)
		if err != nil {
			return err
		}
		next, err := streamStart(sh, req.GetFrom())
		if err != nil {
			return err
		}
		end, err := streamEnd(sh, req.GetUntil())
		if err != nil {
			return err
		}
		cursors = append(cursors, &cursor{sh: sh, id: m.ID, next: next, end: end, who: readerLabel(req.GetReaderId())})
	}
	return s.follow(ss.Context(), cursors, newBudget(req.GetMaxReadBatches()),
		func(recs []*hstreampb.ReceivedRecord) error {
			return ss.Send(&hstreampb.ReadStreamResponse{ReceivedRecords: recs})
		})
}

// shardCursor resolves a start and an end on one shard.
func shardCursor(sh cluster.ShardLog, readerID string, from, until *hstreampb.ShardOffset) (*cursor, error) {
	next, err := shardStart(sh, from)
	if err != nil {
		return nil, err
	}
	end, err := shardEnd(sh, until)
	if err != nil {
		return nil, err
	}
	return &cursor{sh: sh, id: sh.Meta().ID, next: next, end: end, who: readerLabel(readerID)}, nil
}

func readerLabel(id string) string {
	if id == "" {
		return "an anonymous reader"
	}
	return fmt.Sprintf("reader %q", id)
}
