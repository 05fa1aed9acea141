package cluster

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"sync"
	"time"

	"go.etcd.io/raft/v3"
	"go.etcd.io/raft/v3/raftpb"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/weir-log/weir/api/peerpb"
)

// The transport carries raft messages between nodes over the peer service's
// Raft stream. Each round of the engine's loop hands it the messages of every
// group, after the round's sync (so a follower never acknowledges entries it
// has not persisted); the transport sorts them by destination and queues one
// batch per peer. One goroutine per peer keeps a stream open and sends the
// batches in order, so the messages of a group reach a peer in the order raft
// produced them, as raft expects of a transport.
//
// A peer that is down or slow must not stall the loop: the queue per peer is
// bounded and a batch that does not fit is dropped, and so are the batches of
// a stream that fails. Raft copes with lost messages (it retransmits from the
// leader's view of each follower's progress); the transport tells it which
// peer was unreachable, so the leader probes instead of streaming into the
// void, and whether a snapshot message went out.
type transport struct {
	self  uint64
	peers *peers
	log   *slog.Logger
	// report hands a send failure back to the engine's loop (which alone
	// may touch the raft groups).
	report func(failure sendFailure)

	mu     sync.Mutex
	queues map[uint64]*peerQueue // guarded by mu
	closed bool                  // guarded by mu
	wg     sync.WaitGroup
}

// sendFailure is what the loop learns when a batch could not be sent: the
// peer, and the groups that had a message in it (snapshots separately, which
// raft needs to hear about to stop waiting for them).
type sendFailure struct {
	to        uint64
	shards    []uint64
	snapshots []uint64
	proposals []uint64 // groups with a proposal this node forwarded to the peer
	sent      bool     // the batch went out: only snapshots to confirm
}

// maxRaftBatchBytes splits a round's messages to one peer into batches of
// about this size. With raft's MaxSizePerMsg of half this, one message (which
// holds at least one entry, so up to one record batch more) stays within the
// gRPC server's receive limit, which is the largest record batch plus 1 MiB.
const maxRaftBatchBytes = 1 << 20

// peerQueueLen bounds the batches queued for one peer. A round makes one
// batch per peer, so this is rounds of messages a slow peer may lag by.
const peerQueueLen = 256

type peerQueue struct {
	to    uint64
	c     chan *outBatch
	stopc chan struct{}
	// ctx is the streams': cancelled by close, so a send stuck on a peer
	// that stopped reading ends too.
	ctx    context.Context
	cancel context.CancelFunc
}

func newTransport(self uint64, p *peers, log *slog.Logger, report func(sendFailure)) *transport {
	return &transport{self: self, peers: p, log: log, report: report, queues: make(map[uint64]*peerQueue)}
}

// send queues msgs (of any groups, keyed by the group's shard id) to their
// destinations. It never blocks: the batches that do not fit a peer's queue
// are dropped and returned, for the caller (the loop) to tell raft.
func (t *transport) send(msgs map[uint64][]*raftpb.Message) (dropped []sendFailure) {
	type pending struct {
		batches []*outBatch
		size    int // of the last batch
	}
	byPeer := make(map[uint64]*pending)
	for shard, ms := range msgs {
		for _, m := range ms {
			data, err := proto.Marshal(m)
			if err != nil {
				t.log.Error("encoding a raft message", "shard", shard, "err", err)
				continue
			}
			to := m.GetTo()
			p := byPeer[to]
			if p == nil {
				p = &pending{}
				byPeer[to] = p
			}
			if len(p.batches) == 0 || p.size+len(data) > maxRaftBatchBytes {
				p.batches = append(p.batches, &outBatch{RaftBatch: &peerpb.RaftBatch{From: t.self}})
				p.size = 0
			}
			b := p.batches[len(p.batches)-1]
			b.Messages = append(b.Messages, &peerpb.RaftMessage{ShardId: shard, Message: data})
			if !slices.Contains(b.shards, shard) {
				b.shards = append(b.shards, shard)
			}
			switch m.GetType() {
			case raftpb.MsgSnap:
				b.snapshots = append(b.snapshots, shard)
			case raftpb.MsgProp:
				b.proposals = append(b.proposals, shard)
			}
			p.size += len(data)
		}
	}
	for to, p := range byPeer {
		q := t.queue(to)
		if q == nil {
			return dropped // closed
		}
		for _, b := range p.batches {
			select {
			case q.c <- b:
			default:
				dropped = append(dropped, failureOf(to, b, false))
			}
		}
	}
	return dropped
}

// outBatch is a batch for one peer with what its failure would concern: the
// groups with a message in it, and those whose message is a snapshot.
type outBatch struct {
	*peerpb.RaftBatch
	shards    []uint64
	snapshots []uint64
	proposals []uint64
}

// failureOf reports a batch's fate.
func failureOf(to uint64, b *outBatch, sent bool) sendFailure {
	return sendFailure{to: to, sent: sent, shards: b.shards, snapshots: b.snapshots, proposals: b.proposals}
}

func (t *transport) queue(to uint64) *peerQueue {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return nil
	}
	q, ok := t.queues[to]
	if !ok {
		q = &peerQueue{to: to, c: make(chan *outBatch, peerQueueLen), stopc: make(chan struct{})}
		q.ctx, q.cancel = context.WithCancel(context.Background())
		t.queues[to] = q
		t.wg.Add(1)
		go func() {
			defer t.wg.Done()
			t.run(q)
		}()
	}
	return q
}

// run sends one peer's batches over a Raft stream, opening it again after a
// failure with a back-off. Batches that arrive while the peer is unreachable
// are dropped and reported: raft will send again.
func (t *transport) run(q *peerQueue) {
	var stream peerpb.Peer_RaftClient
	var cancel context.CancelFunc
	// A stream is dropped by cancelling it, never by waiting for the
	// peer's answer, which a stuck peer would never give.
	closeStream := func() {
		if stream != nil {
			cancel()
			stream = nil
		}
	}
	defer closeStream()
	backoff := time.Duration(0)
	var retryAt time.Time
	for {
		var b *outBatch
		select {
		case <-q.stopc:
			return
		case b = <-q.c:
		}
		if stream == nil && time.Now().Before(retryAt) {
			t.report(failureOf(q.to, b, false))
			continue
		}
		if stream == nil {
			var err error
			if stream, cancel, err = t.open(q.ctx, q.to); err != nil {
				backoff = min(max(2*backoff, 50*time.Millisecond), time.Second)
				retryAt = time.Now().Add(backoff)
				t.log.Debug("raft transport: peer unreachable", "peer", q.to, "err", err)
				t.report(failureOf(q.to, b, false))
				continue
			}
		}
		if err := stream.Send(b.RaftBatch); err != nil {
			t.log.Debug("raft transport: send failed", "peer", q.to, "err", err)
			closeStream()
			backoff = min(max(2*backoff, 50*time.Millisecond), time.Second)
			retryAt = time.Now().Add(backoff)
			t.report(failureOf(q.to, b, false))
			continue
		}
		backoff = 0
		if len(b.snapshots) > 0 {
			t.report(failureOf(q.to, b, true))
		}
	}
}

// open starts a Raft stream to a peer.
func (t *transport) open(parent context.Context, to uint64) (peerpb.Peer_RaftClient, context.CancelFunc, error) {
	cli, err := t.peers.client(to)
	if err != nil {
		return nil, nil, err
	}
	ctx, cancel := context.WithCancel(parent)
	stream, err := cli.Raft(ctx)
	if err != nil {
		cancel()
		return nil, nil, err
	}
	return stream, cancel, nil
}

func (t *transport) close() {
	t.mu.Lock()
	t.closed = true
	for _, q := range t.queues {
		close(q.stopc)
		q.cancel()
	}
	t.mu.Unlock()
	t.wg.Wait()
}

// handleFailure runs on the loop: raft learns that a peer did not get its
// messages, and how snapshots fared.
func (e *engine) handleFailure(f sendFailure) {
	for _, id := range f.shards {
		s, ok := e.groups[id]
		if !ok {
			continue
		}
		if !f.sent {
			s.rn.ReportUnreachable(f.to)
		}
	}
	if !f.sent {
		// Raft does not resend a proposal a follower forwards: its
		// appender would wait out commitTimeout, while its later
		// appends, in later batches, commit first.
		for _, id := range f.proposals {
			if s, ok := e.groups[id]; ok {
				e.failInFlight(s, fmt.Sprintf("it was forwarded to the leader (node %d), which did not get it", f.to))
			}
		}
	}
	for _, id := range f.snapshots {
		s, ok := e.groups[id]
		if !ok {
			continue
		}
		st := raft.SnapshotFinish
		if !f.sent {
			st = raft.SnapshotFailure
		}
		s.rn.ReportSnapshot(f.to, st)
	}
}

// serveRaft receives a peer's raft messages (the peer service's Raft) and
// hands them to the engine's loop. It blocks while the loop's inbox is full,
// which slows the sender's stream (backpressure) instead of buffering without
// bound.
func (n *Node) serveRaft(stream peerpb.Peer_RaftServer) error {
	e := n.eng
	for {
		b, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return stream.SendAndClose(&peerpb.RaftDone{})
		}
		if err != nil {
			return err
		}
		in := inbound{from: b.From, msgs: make([]shardMessage, 0, len(b.Messages))}
		for _, m := range b.Messages {
			msg := new(raftpb.Message)
			if err := proto.Unmarshal(m.Message, msg); err != nil {
				return status.Errorf(codes.InvalidArgument, "raft message for shard %d from node %d does not decode: %v", m.ShardId, b.From, err)
			}
			in.msgs = append(in.msgs, shardMessage{shard: m.ShardId, msg: msg})
		}
		select {
		case e.recvc <- in:
		case <-e.donec:
			return status.Error(codes.Unavailable, fmt.Sprintf("node %d is shutting down", e.nodeID))
		case <-stream.Context().Done():
			return stream.Context().Err()
		}
	}
}

// inbound is one batch of raft messages received from a peer.
type inbound struct {
	from uint64
	msgs []shardMessage
}

type shardMessage struct {
	shard uint64
	msg   *raftpb.Message
}

// Raft is the peer service's Raft: see Node.serveRaft.
func (p *peerServer) Raft(stream peerpb.Peer_RaftServer) error { return p.n.serveRaft(stream) }
