package cluster

import (
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/weir-log/weir/api/peerpb"
)

// A shard this node does not host is reached through a remote handle: a
// ShardLog whose calls go over the peer service (peer_server.go) to a node
// that hosts a replica, preferably the shard's raft leader. Appends travel
// on one Appends stream per handle, so a caller that pipelines them keeps
// their order; the other calls are unary. The handle learns of commits by
// long-polling ShardState in the background, so Committed never waits for
// the network once the handle knows the shard.

const (
	// maxRemoteAppends bounds a handle's proposals sent and not yet
	// answered; past it Propose blocks (backpressure, as a local shard's
	// append queue does).
	maxRemoteAppends = 4096
	// remoteCallTimeout bounds one unary call to the hosting node.
	remoteCallTimeout = 5 * time.Second
	// remotePollWait is how long one ShardState long poll waits for a
	// commit; the callee caps it at maxStateWait.
	remotePollWait = 5 * time.Second
	// A poll that failed is tried again after a backoff between these.
	remoteBackoffMin = 100 * time.Millisecond
	remoteBackoffMax = 2 * time.Second
	// remoteFirstState bounds the one wait for the shard's state when a
	// handle's Committed is first called.
	remoteFirstState = 2 * time.Second
)

// remoteCache keeps one handle per shard hosted elsewhere, so a caller that
// compares handles (api/read.go) sees the same one until it is dropped. Its
// zero value is ready to use.
type remoteCache struct {
	mu     sync.Mutex
	shards map[uint64]*remoteShard // guarded by mu
	closed bool                    // guarded by mu: closeAll was called
}

// get returns the handle for shard m, the same one on every call until it
// reports Removed, and a fresh one after that.
func (rc *remoteCache) get(n *Node, m ShardMeta) ShardLog {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	if r, ok := rc.shards[m.ID]; ok && !r.Removed() {
		return r
	}
	if rc.shards == nil {
		rc.shards = make(map[uint64]*remoteShard)
	}
	r := newRemoteShard(n, m)
	if rc.closed {
		r.close(errHandleNodeClosed) // the node is closing: the handle fails every call
	}
	rc.shards[m.ID] = r
	return r
}

// closeAll closes every handle (their streams and polls end, their waiters
// wake); the node calls it when it closes.
func (rc *remoteCache) closeAll() {
	rc.mu.Lock()
	rc.closed = true
	shards := rc.shards
	rc.shards = nil
	rc.mu.Unlock()
	for _, r := range shards {
		r.close(errHandleNodeClosed)
	}
}

// routeShard picks the node to send a request for shard m to: the hinted
// leader if it is a live replica, else the preferred leader
// (m.Replicas[0]) if live, else the first live replica. This node is never
// picked: a remote handle is for shards it does not host.
func (n *Node) routeShard(m ShardMeta, hint uint64) (uint64, error) {
	self := n.opts.Self.ID
	if hint != 0 && hint != self && slices.Contains(m.Replicas, hint) && n.isLive(hint) {
		return hint, nil
	}
	for _, r := range m.Replicas {
		if r != self && n.isLive(r) {
			return r, nil
		}
	}
	return 0, fmt.Errorf("%w: no live node hosts shard %d of stream %q (replicas %v)", ErrNodeUnavailable, m.ID, m.Stream, m.Replicas)
}

// remoteShard is a ShardLog for a shard hosted on other nodes.
type remoteShard struct {
	n    *Node
	id   uint64
	meta ShardMeta // as given when the handle was made; Meta prefers the catalog's

	// hint is the shard's raft leader as a hosting node last reported it
	// (0: unknown).
	hint atomic.Uint64
	// slots holds a token per proposal sent and not yet answered.
	slots chan struct{}
	// stop is closed, and ctx canceled, by close: the poll, the append
	// stream and the calls in flight end.
	stop      chan struct{}
	ctx       context.Context
	cancel    context.CancelFunc
	closeOnce sync.Once
	pollOnce  sync.Once
	// firstState makes the first Committed ask for the shard's state;
	// later calls answer from what the handle knows.
	firstState sync.Once

	// smu serializes proposals: a stream is opened, and a request sent on
	// it, by one Propose at a time, which keeps their order.
	smu sync.Mutex
	as  *appendStream // guarded by smu; nil until the first Propose

	mu        sync.Mutex
	known     bool          // guarded by mu: committed and first came from the shard
	committed uint64        // guarded by mu: the highest committed index seen
	first     uint64        // guarded by mu: the first index last seen
	grown     chan struct{} // guarded by mu: closed when committed grows, or at close
	closed    error         // guarded by mu: why the handle was closed; nil while open
}

func newRemoteShard(n *Node, m ShardMeta) *remoteShard {
	ctx, cancel := context.WithCancel(context.Background())
	return &remoteShard{
		ctx:    ctx,
		cancel: cancel,
		n:      n,
		id:     m.ID,
		meta:   m,
		slots:  make(chan struct{}, maxRemoteAppends),
		stop:   make(chan struct{}),
		first:  1,
		grown:  make(chan struct{}),
	}
}

// errHandleNodeClosed is why closeAll closes the handles.
var errHandleNodeClosed = fmt.Errorf("%w: remote shard handles are closed", ErrClosed)

// close ends the handle: its append stream and poll stop, outstanding
// proposals and calls in flight fail, later calls fail with why, and
// Committed's channel is closed for good.
func (r *remoteShard) close(why error) {
	r.closeOnce.Do(func() {
		r.mu.Lock()
		r.closed = why
		close(r.grown)
		r.mu.Unlock()
		close(r.stop)
		r.cancel()
		r.smu.Lock()
		if r.as != nil {
			r.as.fail(why)
		}
		r.smu.Unlock()
	})
}

// closedErr is why the handle was closed, or nil while it is open.
func (r *remoteShard) closedErr() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.closed
}

func (r *remoteShard) isClosed() bool { return r.closedErr() != nil }

// Meta is the shard's metadata, from the catalog while it lists the shard.
func (r *remoteShard) Meta() ShardMeta {
	if m, ok := r.n.cat.shard(r.id); ok {
		return m
	}
	return r.meta
}

// Removed reports whether the handle is done: the shard left the catalog,
// this node now hosts a replica itself (Node.Shard returns that one), or
// the node closed the handle.
func (r *remoteShard) Removed() bool { return r.done() != nil }

// done says why the handle is done, or nil while it serves: closed, the
// shard left the catalog, or this node hosts a replica now.
func (r *remoteShard) done() error {
	if err := r.closedErr(); err != nil {
		return err
	}
	if _, ok := r.n.cat.shard(r.id); !ok {
		return fmt.Errorf("%w: shard %d was deleted", ErrShardNotFound, r.id)
	}
	if _, local := r.n.eng.shard(r.id); local {
		return fmt.Errorf("%w: node %d hosts a replica of shard %d now; get the shard again", ErrNodeUnavailable, r.n.opts.Self.ID, r.id)
	}
	return nil
}

// check refuses a call on a handle that was closed or whose shard left the
// catalog. A handle superseded by a local replica still works: it reaches
// the other replicas, and its caller moves to the local one when it sees
// Removed.
func (r *remoteShard) check() error {
	if err := r.closedErr(); err != nil {
		return err
	}
	if _, ok := r.n.cat.shard(r.id); !ok {
		return fmt.Errorf("%w: shard %d was deleted", ErrShardNotFound, r.id)
	}
	return nil
}

// Append proposes one batch on the shard's leader and waits for its commit.
func (r *remoteShard) Append(ctx context.Context, batch []byte) (uint64, time.Time, error) {
	p, err := r.Propose(ctx, batch)
	if err != nil {
		return 0, time.Time{}, err
	}
	return p.Wait(ctx)
}

// appendStream is one Appends stream to a hosting node, and the proposals
// sent on it and not yet answered.
type appendStream struct {
	r      *remoteShard
	node   uint64
	stream grpc.BidiStreamingClient[peerpb.AppendRequest, peerpb.AppendResponse]
	cancel context.CancelFunc
	seq    uint64 // guarded by r.smu: the last seq sent

	mu    sync.Mutex
	waits map[uint64]chan appendResult // guarded by mu: by seq
	err   error                        // guarded by mu: why the stream broke
	stale bool                         // guarded by mu: the callee said to route again
}

type appendResult struct {
	index uint64
	at    time.Time
	err   error
}

// usable reports whether Propose may send on the stream.
func (s *appendStream) usable() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.err == nil && !s.stale
}

// idle reports whether no proposal on the stream is unanswered: only then
// may Propose move to another stream without risking the order.
func (s *appendStream) idle() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.waits) == 0
}

// fail ends the stream: every unanswered proposal fails with err.
func (s *appendStream) fail(err error) {
	s.mu.Lock()
	if s.err == nil {
		s.err = err
	}
	waits := s.waits
	s.waits = make(map[uint64]chan appendResult)
	s.mu.Unlock()
	s.cancel()
	for _, ch := range waits {
		ch <- appendResult{err: err}
		<-s.r.slots
	}
}

// receive delivers the stream's answers until it breaks.
func (s *appendStream) receive() {
	for {
		resp, err := s.stream.Recv()
		if err != nil {
			s.fail(fmt.Errorf("%w: the append stream of shard %d to node %d broke: %v", ErrNodeUnavailable, s.r.id, s.node, err))
			return
		}
		res := s.r.appendResult(s.node, resp)
		if code := resp.GetCode(); code == peerpb.ErrorCode_NOT_HOSTED || code == peerpb.ErrorCode_CLOSED {
			s.mu.Lock()
			s.stale = true
			s.mu.Unlock()
			s.r.dropHint(s.node)
		}
		s.mu.Lock()
		ch, ok := s.waits[resp.GetSeq()]
		delete(s.waits, resp.GetSeq())
		s.mu.Unlock()
		if ok {
			ch <- res
			<-s.r.slots
		}
	}
}

// appendResult turns an answer into what Pending.Wait returns; a committed
// append also tells the handle the shard's committed index reached it.
func (r *remoteShard) appendResult(node uint64, resp *peerpb.AppendResponse) appendResult {
	msg := resp.GetMessage()
	switch resp.GetCode() {
	case peerpb.ErrorCode_OK:
		r.noteCommitted(resp.GetIndex())
		return appendResult{index: resp.GetIndex(), at: msTime(resp.GetAppendTimeMs())}
	case peerpb.ErrorCode_NO_LEADER:
		return appendResult{err: fmt.Errorf("%w: shard %d on node %d: %s", ErrNoLeader, r.id, node, msg)}
	case peerpb.ErrorCode_SHARD_NOT_FOUND:
		return appendResult{err: fmt.Errorf("%w: shard %d on node %d: %s", ErrShardNotFound, r.id, node, msg)}
	case peerpb.ErrorCode_NOT_HOSTED:
		return appendResult{err: fmt.Errorf("%w: %s; try again", ErrNodeUnavailable, msg)}
	case peerpb.ErrorCode_CLOSED:
		return appendResult{err: fmt.Errorf("%w: node %d, which hosts shard %d, is shutting down: %s", ErrNodeUnavailable, node, r.id, msg)}
	default:
		return appendResult{err: fmt.Errorf("cluster: appending to shard %d on node %d: %s", r.id, node, msg)}
	}
}

// Propose sends one batch on the handle's append stream and returns once it
// is sent; Pending.Wait waits for the answer. The stream is opened on first
// use, to the node routeShard picks, and again after it broke or its node
// stopped hosting the shard. It moves to a newly reported leader only when
// nothing sent on it is unanswered, so proposals keep their order.
func (r *remoteShard) Propose(ctx context.Context, batch []byte) (*Pending, error) {
	if err := r.check(); err != nil {
		return nil, err
	}
	r.startPoll()
	select {
	case r.slots <- struct{}{}:
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-r.stop:
		return nil, r.closedErr()
	}
	r.smu.Lock()
	defer r.smu.Unlock()
	s, err := r.appendStream(ctx)
	if err != nil {
		<-r.slots
		return nil, err
	}
	s.seq++
	seq := s.seq
	ch := make(chan appendResult, 1)
	s.mu.Lock()
	if s.err != nil { // broke after appendStream looked
		err := s.err
		s.mu.Unlock()
		<-r.slots
		return nil, err
	}
	s.waits[seq] = ch
	s.mu.Unlock()
	if err := s.stream.Send(&peerpb.AppendRequest{Seq: seq, ShardId: r.id, Batch: batch}); err != nil {
		// The stream is broken; receive learns why and fails every
		// proposal on it, this one included.
		s.fail(fmt.Errorf("%w: sending to node %d for shard %d: %v", ErrNodeUnavailable, s.node, r.id, err))
	}
	return &Pending{wait: func(ctx context.Context) (uint64, time.Time, error) {
		select {
		case res := <-ch:
			return res.index, res.at, res.err
		case <-ctx.Done():
			return 0, time.Time{}, ctx.Err()
		}
	}}, nil
}

// appendStream returns the stream to send on, opening a new one if there is
// none, the current one is broken or stale, its node left the cluster, or a
// leader other than its node was reported and the stream is idle. Called
// with smu held.
func (r *remoteShard) appendStream(ctx context.Context) (*appendStream, error) {
	// close marks the handle closed before it takes smu to fail r.as: a
	// stream opened after this check is failed by it.
	if err := r.closedErr(); err != nil {
		return nil, err
	}
	if s := r.as; s != nil && s.usable() && r.n.isLive(s.node) {
		hint := r.hint.Load()
		if hint == 0 || hint == s.node || !s.idle() {
			return s, nil
		}
		if node, err := r.n.routeShard(r.Meta(), hint); err != nil || node == s.node {
			return s, nil
		}
	}
	if old := r.as; old != nil {
		// Answers still due on the old stream are delivered before it
		// ends: only the send side closes.
		_ = old.stream.CloseSend()
	}
	r.as = nil
	node, err := r.n.routeShard(r.Meta(), r.hint.Load())
	if err != nil {
		return nil, err
	}
	cli, err := r.n.peers.client(node)
	if err != nil {
		return nil, fmt.Errorf("%w: node %d for shard %d: %v", ErrNodeUnavailable, node, r.id, err)
	}
	// The stream outlives this call's ctx, which only bounds the opening;
	// it ends with the handle (close cancels r.ctx), which also unblocks a
	// Send waiting for the callee to read.
	sctx, cancelStream := context.WithCancel(context.Background())
	stopClosed := context.AfterFunc(r.ctx, cancelStream)
	cancel := func() {
		stopClosed()
		cancelStream()
	}
	stopOpening := context.AfterFunc(ctx, cancelStream)
	stream, err := cli.Appends(sctx)
	if !stopOpening() && err == nil {
		// ctx ended while the stream opened, and canceled it.
		cancel()
		return nil, ctx.Err()
	}
	if err != nil {
		cancel()
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		r.dropHint(node)
		return nil, fmt.Errorf("%w: opening an append stream to node %d for shard %d: %v", ErrNodeUnavailable, node, r.id, err)
	}
	s := &appendStream{r: r, node: node, stream: stream, cancel: cancel, waits: make(map[uint64]chan appendResult)}
	r.as = s
	go s.receive()
	return s, nil
}

// dropHint forgets node as the leader hint, after it failed us.
func (r *remoteShard) dropHint(node uint64) { r.hint.CompareAndSwap(node, 0) }

// call runs one unary call against a node hosting the shard, with a
// timeout. If that node cannot serve it (down, or no longer hosting the
// shard), the call is tried once more on the next node routeShard picks.
func (r *remoteShard) call(ctx context.Context, timeout time.Duration, what string, f func(context.Context, peerpb.PeerClient) error) error {
	if err := r.check(); err != nil {
		return err
	}
	var last error
	tried := uint64(0)
	for range 2 {
		node, err := r.n.routeShard(r.Meta(), r.hint.Load())
		if err != nil {
			if last != nil {
				return last
			}
			return err
		}
		if node == tried {
			return last
		}
		tried = node
		last = r.callNode(ctx, node, timeout, what, f)
		if last == nil || !errors.Is(last, ErrNodeUnavailable) || ctx.Err() != nil {
			return last
		}
		r.dropHint(node)
	}
	return last
}

func (r *remoteShard) callNode(ctx context.Context, node uint64, timeout time.Duration, what string, f func(context.Context, peerpb.PeerClient) error) error {
	cli, err := r.n.peers.client(node)
	if err != nil {
		return fmt.Errorf("%w: node %d for shard %d: %v", ErrNodeUnavailable, node, r.id, err)
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	stopClosed := context.AfterFunc(r.ctx, cancel)
	defer stopClosed()
	return r.fromStatus(node, what, f(ctx, cli))
}

// fromStatus maps a peer call's gRPC error back to the cluster's errors
// (peerServer.statusErr makes them).
func (r *remoteShard) fromStatus(node uint64, what string, err error) error {
	if err == nil {
		return nil
	}
	st, _ := status.FromError(err)
	msg := st.Message()
	switch st.Code() {
	case codes.NotFound:
		// A node that hosted the shard says it is deleted (out of its
		// catalog); this node's catalog follows shortly.
		return fmt.Errorf("%w: %s shard %d on node %d: %s", ErrShardNotFound, what, r.id, node, msg)
	case codes.FailedPrecondition, codes.Unavailable, codes.DeadlineExceeded, codes.Aborted:
		if err := r.closedErr(); err != nil && st.Code() == codes.DeadlineExceeded {
			return err
		}
		return fmt.Errorf("%w: %s shard %d on node %d: %s", ErrNodeUnavailable, what, r.id, node, msg)
	case codes.Canceled:
		if err := r.closedErr(); err != nil {
			return err
		}
		return context.Canceled
	case codes.DataLoss:
		var shard, index uint64
		if _, perr := fmt.Sscanf(msg, "shard %d index %d:", &shard, &index); perr == nil {
			return &CorruptEntryError{Shard: shard, Index: index, Err: fmt.Errorf("%w: %s (on node %d)", ErrCorruptEntry, msg, node)}
		}
		return fmt.Errorf("%w: %s (on node %d)", ErrCorruptEntry, msg, node)
	default:
		return fmt.Errorf("cluster: %s shard %d on node %d: %s", what, r.id, node, msg)
	}
}

// Read returns committed data entries from the hosting node (see
// Shard.Read).
func (r *remoteShard) Read(from uint64, maxEntries, maxBytes int) ([]Entry, error) {
	if maxEntries <= 0 {
		return nil, nil
	}
	req := &peerpb.ReadRequest{ShardId: r.id, From: from,
		MaxEntries: uint32(min(maxEntries, math.MaxUint32)), MaxBytes: uint32(min(max(maxBytes, 0), math.MaxUint32))}
	var resp *peerpb.ReadResponse
	err := r.call(r.ctx, remoteCallTimeout, "reading", func(ctx context.Context, cli peerpb.PeerClient) error {
		var err error
		resp, err = cli.Read(ctx, req, grpc.MaxCallRecvMsgSize(math.MaxInt32))
		return err
	})
	if err != nil {
		return nil, err
	}
	out := make([]Entry, len(resp.GetEntries()))
	for i, e := range resp.GetEntries() {
		out[i] = entryFromPB(e)
	}
	if len(out) > 0 {
		r.noteCommitted(out[len(out)-1].Index)
	}
	return out, nil
}

func entryFromPB(e *peerpb.Entry) Entry {
	return Entry{Index: e.GetIndex(), AppendTime: msTime(e.GetAppendTimeMs()), Batch: e.GetBatch()}
}

// state asks a hosting node for the shard's state, without waiting.
func (r *remoteShard) state(ctx context.Context) (*peerpb.ShardStateResponse, error) {
	var resp *peerpb.ShardStateResponse
	err := r.call(ctx, remoteCallTimeout, "reading the state of", func(ctx context.Context, cli peerpb.PeerClient) error {
		var err error
		resp, err = cli.ShardState(ctx, &peerpb.ShardStateRequest{ShardId: r.id})
		return err
	})
	if err != nil {
		return nil, err
	}
	r.noteState(resp)
	return resp, nil
}

// First is the lowest index the hosting node still stores; if it cannot be
// asked, the last one seen.
func (r *remoteShard) First() uint64 {
	if resp, err := r.state(r.ctx); err == nil {
		return resp.GetFirst()
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.first
}

// Committed is the highest committed index the handle knows, with a channel
// closed when it learns of a higher one (or the handle is done). The
// background poll keeps it current, so this does not wait for the network,
// except on a handle's first call, which asks for the shard's state (for at
// most remoteFirstState, once) so that it does not answer 0 for a shard
// with entries.
func (r *remoteShard) Committed() (uint64, <-chan struct{}) {
	r.startPoll()
	r.firstState.Do(func() {
		r.mu.Lock()
		known := r.known
		r.mu.Unlock()
		if !known && !r.isClosed() {
			ctx, cancel := context.WithTimeout(r.ctx, remoteFirstState)
			_, _ = r.state(ctx) // on failure the poll keeps trying
			cancel()
		}
	})
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.committed, r.grown
}

// LastData is the newest committed data entry, from the hosting node.
func (r *remoteShard) LastData() (Entry, bool, error) {
	resp, err := r.state(r.ctx)
	if err != nil {
		return Entry{}, false, err
	}
	if resp.GetLastData() == nil {
		return Entry{}, false, nil
	}
	return entryFromPB(resp.GetLastData()), true, nil
}

// IndexAtTime asks the hosting node (see Shard.IndexAtTime).
func (r *remoteShard) IndexAtTime(t time.Time) (uint64, error) {
	var index uint64
	err := r.call(r.ctx, remoteCallTimeout, "searching by time in", func(ctx context.Context, cli peerpb.PeerClient) error {
		resp, err := cli.IndexAtTime(ctx, &peerpb.IndexAtTimeRequest{ShardId: r.id, TimeMs: t.UnixMilli()})
		index = resp.GetIndex()
		return err
	})
	return index, err
}

// Trim asks the hosting node to drop every entry with index <= through.
func (r *remoteShard) Trim(ctx context.Context, through uint64) error {
	return r.call(ctx, remoteCallTimeout, "trimming", func(ctx context.Context, cli peerpb.PeerClient) error {
		_, err := cli.Trim(ctx, &peerpb.TrimRequest{ShardId: r.id, Through: through})
		return err
	})
}

// noteState records what a hosting node reported.
func (r *remoteShard) noteState(resp *peerpb.ShardStateResponse) {
	if l := resp.GetLeader(); l != 0 {
		r.hint.Store(l)
	}
	r.mu.Lock()
	r.known = true
	r.first = max(resp.GetFirst(), 1)
	r.mu.Unlock()
	r.noteCommitted(resp.GetCommitted())
}

// noteCommitted raises the known committed index, waking Committed's
// waiters.
func (r *remoteShard) noteCommitted(index uint64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if index <= r.committed || r.closed != nil {
		return
	}
	r.committed = index
	close(r.grown)
	r.grown = make(chan struct{})
}

func (r *remoteShard) startPoll() { r.pollOnce.Do(func() { go r.poll() }) }

// poll long-polls the shard's state so that Committed's channel closes soon
// after a commit, until the handle is done: closed by the node, or the shard
// gone from the catalog or hosted here now (the handle is closed then, which
// wakes its waiters; they get a fresh handle from Node.Shard). A failed poll
// is tried again, routed again, after a growing backoff.
func (r *remoteShard) poll() {
	backoff := remoteBackoffMin
	for {
		if r.isClosed() {
			return
		}
		if err := r.done(); err != nil {
			r.close(err)
			return
		}
		r.mu.Lock()
		above := r.committed
		r.mu.Unlock()
		var resp *peerpb.ShardStateResponse
		err := r.call(r.ctx, remotePollWait+remoteCallTimeout, "waiting for commits of", func(ctx context.Context, cli peerpb.PeerClient) error {
			var err error
			resp, err = cli.ShardState(ctx, &peerpb.ShardStateRequest{ShardId: r.id, WaitAbove: above, WaitMs: uint32(remotePollWait / time.Millisecond)})
			return err
		})
		if err == nil {
			r.noteState(resp)
		}
		if err == nil && !resp.GetRemoved() {
			backoff = remoteBackoffMin
			continue
		}
		// Failed, or the node says the shard is deleted while this node's
		// catalog still lists it: look again after a while.
		t := time.NewTimer(backoff)
		select {
		case <-t.C:
		case <-r.stop:
			t.Stop()
			return
		}
		backoff = min(2*backoff, remoteBackoffMax)
	}
}
