package api

import (
	"context"
	"errors"
	"sync"
	"time"

	"google.golang.org/protobuf/types/known/emptypb"

	"github.com/weir-log/weir/api/hstreampb"
	"github.com/weir-log/weir/cluster"
)

// Shard readers are server-side cursors over one shard (CreateShardReader).
// The cluster persists each reader's next index; ReadShard reads from it and
// saves the advanced position before it returns, so a reader resumes where
// it stopped across restarts. Reads of one reader are serialized.

// CreateShardReader creates a reader positioned at the resolved offset.
func (s *Service) CreateShardReader(ctx context.Context, req *hstreampb.CreateShardReaderRequest) (*hstreampb.CreateShardReaderResponse, error) {
	return unary(ctx, s, "CreateShardReader", req, s.createShardReader)
}

func (s *Service) createShardReader(ctx context.Context, req *hstreampb.CreateShardReaderRequest) (*hstreampb.CreateShardReaderResponse, error) {
	id := req.GetReaderId()
	if err := checkReaderID(id); err != nil {
		return nil, err
	}
	sh, err := s.shardOf(req.GetStreamName(), req.GetShardId())
	if err != nil {
		return nil, err
	}
	next, err := shardStart(sh, req.GetShardOffset())
	if err != nil {
		return nil, err
	}
	err = s.node.CreateReader(ctx, cluster.ReaderMeta{
		ID:        id,
		Stream:    req.GetStreamName(),
		ShardID:   req.GetShardId(),
		Next:      next,
		TimeoutMs: req.GetTimeout(),
		CreatedAt: time.Now(),
	})
	if errors.Is(err, cluster.ErrReaderExists) {
		return nil, errorf(err, "shard reader %q already exists", id)
	}
	if err != nil {
		return nil, err
	}
	return &hstreampb.CreateShardReaderResponse{
		StreamName:  req.GetStreamName(),
		ShardId:     req.GetShardId(),
		ShardOffset: req.GetShardOffset(),
		ReaderId:    id,
		Timeout:     req.GetTimeout(),
	}, nil
}

// ReadShard returns up to maxRecords batches (0 means 1) from the reader's
// position, waiting up to the reader's timeout for the first one. The new
// position is saved before the reply goes out, as a server-side cursor read
// by unary calls must: a reply lost on the way is not read again by this
// reader (at-most-once). Readers that need at-least-once use a subscription,
// or ReadShardStream from their own last record id.
func (s *Service) ReadShard(ctx context.Context, req *hstreampb.ReadShardRequest) (*hstreampb.ReadShardResponse, error) {
	return unary(ctx, s, "ReadShard", req, s.readShard)
}

func (s *Service) readShard(ctx context.Context, req *hstreampb.ReadShardRequest) (*hstreampb.ReadShardResponse, error) {
	id := req.GetReaderId()
	unlock, err := s.readers.lock(ctx, id)
	if err != nil {
		return nil, err
	}
	defer unlock()

	r, err := s.reader(id)
	if err != nil {
		return nil, err
	}
	sh, err := s.shard(r.ShardID)
	if err != nil {
		return nil, err
	}
	maxBatches := int(max(req.GetMaxRecords(), 1))
	c := &cursor{sh: sh, id: r.ShardID, next: r.Next, who: readerLabel(id)}
	var (
		entries []cluster.Entry
		waitCtx context.Context // ctx bounded by the reader's timeout
	)
	for {
		var grown <-chan struct{}
		entries, grown, err = s.poll(c, maxBatches)
		if err != nil {
			return nil, err
		}
		if len(entries) > 0 || r.TimeoutMs == 0 {
			break
		}
		if waitCtx == nil {
			var cancel context.CancelFunc
			waitCtx, cancel = context.WithTimeout(ctx, time.Duration(r.TimeoutMs)*time.Millisecond)
			defer cancel()
		}
		if _, err := s.waitMore(waitCtx, c, grown, nil); err != nil {
			if ctx.Err() == nil && waitCtx.Err() != nil {
				break // the reader's timeout: answer with nothing
			}
			return nil, err
		}
	}
	recs, err := receivedAll(r.ShardID, entries)
	if err != nil {
		return nil, err
	}
	if c.next != r.Next {
		r.Next = c.next
		if err := s.node.SaveReader(ctx, r); err != nil {
			if errors.Is(err, cluster.ErrReaderNotFound) {
				return nil, errorf(err, "shard reader %q was deleted while it was reading", id)
			}
			return nil, err
		}
	}
	return &hstreampb.ReadShardResponse{ReceivedRecords: recs}, nil
}

// ListShardReaders lists the ids of every shard reader.
func (s *Service) ListShardReaders(_ context.Context, _ *hstreampb.ListShardReadersRequest) (*hstreampb.ListShardReadersResponse, error) {
	rs := s.node.Readers()
	resp := &hstreampb.ListShardReadersResponse{ReaderId: make([]string, 0, len(rs))}
	for _, r := range rs {
		resp.ReaderId = append(resp.ReaderId, r.ID)
	}
	return resp, nil
}

// DeleteShardReader removes a reader.
func (s *Service) DeleteShardReader(ctx context.Context, req *hstreampb.DeleteShardReaderRequest) (*emptypb.Empty, error) {
	return unary(ctx, s, "DeleteShardReader", req, s.deleteShardReader)
}

func (s *Service) deleteShardReader(ctx context.Context, req *hstreampb.DeleteShardReaderRequest) (*emptypb.Empty, error) {
	id := req.GetReaderId()
	err := s.node.DeleteReader(ctx, id)
	if errors.Is(err, cluster.ErrReaderNotFound) {
		return nil, readerNotFound(id)
	}
	if err != nil {
		return nil, err
	}
	return &emptypb.Empty{}, nil
}

// reader returns a reader's state, or a NotFound naming it.
func (s *Service) reader(id string) (cluster.ReaderMeta, error) {
	r, err := s.node.Reader(id)
	if errors.Is(err, cluster.ErrReaderNotFound) {
		return r, readerNotFound(id)
	}
	return r, err
}

func readerNotFound(id string) error {
	return errorf(cluster.ErrReaderNotFound, "shard reader %q not found", id)
}

// keyedLocks is a mutex per key that waits with a context; a key's entry
// lives only while someone holds or waits for it.
type keyedLocks struct {
	mu    sync.Mutex
	locks map[string]*keyedLock // guarded by mu
}

type keyedLock struct {
	token chan struct{} // holds one value while the lock is held
	refs  int           // holders and waiters; guarded by keyedLocks.mu
}

// lock takes key's lock, or returns ctx's error if ctx ends first.
func (k *keyedLocks) lock(ctx context.Context, key string) (unlock func(), err error) {
	k.mu.Lock()
	if k.locks == nil {
		k.locks = make(map[string]*keyedLock)
	}
	l := k.locks[key]
	if l == nil {
		l = &keyedLock{token: make(chan struct{}, 1)}
		k.locks[key] = l
	}
	l.refs++
	k.mu.Unlock()

	release := func() {
		k.mu.Lock()
		defer k.mu.Unlock()
		if l.refs--; l.refs == 0 {
			delete(k.locks, key)
		}
	}
	select {
	case l.token <- struct{}{}:
		return func() { <-l.token; release() }, nil
	case <-ctx.Done():
		release()
		return nil, ctx.Err()
	}
}
