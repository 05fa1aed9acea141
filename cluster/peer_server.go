package cluster

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"sync"
	"time"

	"go.etcd.io/raft/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/weir-log/weir/api/peerpb"
)

// peerServer answers the peer service (api/proto/peer.proto) for the shards
// this node hosts: appends and reads forwarded by nodes that do not host the
// shard (remote.go). Raft messages are the transport's (transport.go). A
// handler never forwards again: a request for a shard this node does not
// host is refused, and the caller routes it again, so a stale catalog on
// either side cannot make a request loop between nodes.
type peerServer struct {
	peerpb.UnimplementedPeerServer
	n *Node
}

// PeerServer is the node's peer service, to register on its gRPC server.
func (n *Node) PeerServer() peerpb.PeerServer { return &peerServer{n: n} }

// maxPeerAppends bounds the appends of one Appends stream that are proposed
// and not yet answered. Past it the handler stops reading the stream, so a
// shard slower than its callers pushes back on them through gRPC's flow
// control instead of queueing without bound.
const maxPeerAppends = 4096

// maxStateWait caps ShardState's wait_ms, so a long poll ends even if the
// caller asked for longer.
const maxStateWait = 10 * time.Second

// local returns this node's replica of a shard for a unary call, or the
// gRPC status telling the caller why not: NotFound if the shard is not in
// this node's catalog, FailedPrecondition if it is but this node hosts no
// replica of it (the caller routes again).
func (p *peerServer) local(id uint64) (*Shard, error) {
	sh, ok := p.n.eng.shard(id)
	if ok && !sh.Removed() {
		return sh, nil
	}
	if _, known := p.n.cat.shard(id); !known {
		return nil, status.Errorf(codes.NotFound, "%v: shard %d is not in node %d's catalog", ErrShardNotFound, id, p.n.opts.Self.ID)
	}
	return nil, status.Error(codes.FailedPrecondition, p.notHostedMsg(id))
}

func (p *peerServer) notHostedMsg(id uint64) string {
	return fmt.Sprintf("node %d hosts no replica of shard %d", p.n.opts.Self.ID, id)
}

// Appends proposes the stream's batches in the order they arrive and answers
// each once it is committed or failed. Proposing is sequential (each Propose
// returns before the next request is read), which is what keeps a
// pipelining caller's order; the waits for the commits run concurrently, so
// answers may come out of order, tagged with their seq.
func (p *peerServer) Appends(stream grpc.BidiStreamingServer[peerpb.AppendRequest, peerpb.AppendResponse]) error {
	ctx := stream.Context()
	var (
		sendMu  sync.Mutex
		sendErr error // guarded by sendMu: the first failed Send; later ones are skipped
	)
	send := func(r *peerpb.AppendResponse) {
		sendMu.Lock()
		defer sendMu.Unlock()
		if sendErr == nil {
			sendErr = stream.Send(r)
		}
	}
	slots := make(chan struct{}, maxPeerAppends)
	var wg sync.WaitGroup
	// Answers still due go out before the handler returns (a caller that
	// closed its side still reads them); with the stream's context ended,
	// the waits end at once.
	defer wg.Wait()
	for {
		req, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		select {
		case slots <- struct{}{}:
		case <-ctx.Done():
			return ctx.Err()
		}
		seq, id := req.GetSeq(), req.GetShardId()
		sh, ok := p.n.eng.shard(id)
		if !ok {
			send(p.appendFailure(seq, id, fmt.Errorf("%w: shard %d is not on node %d", ErrShardNotFound, id, p.n.opts.Self.ID)))
			<-slots
			continue
		}
		pd, err := sh.Propose(ctx, req.GetBatch())
		if err != nil {
			send(p.appendFailure(seq, id, err))
			<-slots
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-slots }()
			index, at, err := pd.Wait(ctx)
			if err != nil {
				send(p.appendFailure(seq, id, err))
				return
			}
			send(&peerpb.AppendResponse{Seq: seq, Index: index, AppendTimeMs: at.UnixMilli()})
		}()
	}
}

// appendFailure is the answer to an append that failed. A shard this node
// does not (or no longer) host is NOT_HOSTED while the catalog still lists
// it (a replica moved, or the group is not open yet), and SHARD_NOT_FOUND
// only once the shard left the catalog (its stream was deleted).
func (p *peerServer) appendFailure(seq, id uint64, err error) *peerpb.AppendResponse {
	r := &peerpb.AppendResponse{Seq: seq, Message: err.Error()}
	switch {
	case errors.Is(err, ErrShardNotFound):
		if _, known := p.n.cat.shard(id); known {
			r.Code, r.Message = peerpb.ErrorCode_NOT_HOSTED, p.notHostedMsg(id)
		} else {
			r.Code = peerpb.ErrorCode_SHARD_NOT_FOUND
		}
	case errors.Is(err, ErrNoLeader):
		r.Code = peerpb.ErrorCode_NO_LEADER
	case errors.Is(err, ErrClosed):
		r.Code = peerpb.ErrorCode_CLOSED
	default:
		r.Code = peerpb.ErrorCode_OTHER
	}
	return r
}

// Read returns committed entries. An entry that does not decode is reported
// as DataLoss with the CorruptEntryError's text ("shard S index I: ..."),
// which the caller parses back; the good entries before it are returned
// alone, so the caller's next read meets it with nothing before it.
func (p *peerServer) Read(_ context.Context, req *peerpb.ReadRequest) (*peerpb.ReadResponse, error) {
	sh, err := p.local(req.GetShardId())
	if err != nil {
		return nil, err
	}
	ents, err := sh.Read(req.GetFrom(), int(req.GetMaxEntries()), int(req.GetMaxBytes()))
	var corrupt *CorruptEntryError
	switch {
	case errors.As(err, &corrupt) && len(ents) > 0:
	case errors.As(err, &corrupt):
		return nil, status.Error(codes.DataLoss, corrupt.Error())
	case err != nil:
		return nil, p.statusErr(req.GetShardId(), "reading", err)
	}
	resp := &peerpb.ReadResponse{Entries: make([]*peerpb.Entry, len(ents))}
	for i, e := range ents {
		resp.Entries[i] = entryPB(e)
	}
	return resp, nil
}

// ShardState describes this node's replica. With wait_ms it first waits (up
// to wait_ms, at most maxStateWait) for the committed index to pass
// wait_above: a long poll, so a remote handle learns of commits without
// asking again and again. The wait also ends when the shard is removed or
// the node closes.
func (p *peerServer) ShardState(ctx context.Context, req *peerpb.ShardStateRequest) (*peerpb.ShardStateResponse, error) {
	id := req.GetShardId()
	sh, err := p.local(id)
	if err != nil {
		return nil, err
	}
	if req.GetWaitMs() > 0 {
		timer := time.NewTimer(min(time.Duration(req.GetWaitMs())*time.Millisecond, maxStateWait))
		defer timer.Stop()
	wait:
		for {
			c, grown := sh.Committed()
			if c > req.GetWaitAbove() || sh.Removed() {
				break
			}
			select {
			case <-grown:
			case <-timer.C:
				break wait
			case <-p.n.stop:
				break wait
			case <-ctx.Done():
				return nil, status.FromContextError(ctx.Err()).Err()
			}
		}
	}
	committed, _ := sh.Committed()
	resp := &peerpb.ShardStateResponse{
		First:     sh.First(),
		Committed: committed,
		Leader:    sh.leader.Load(),
		Removed:   sh.Removed(),
	}
	if cs := sh.conf.Load(); cs != nil {
		resp.Voters = append(slices.Clone(cs.GetVoters()), cs.GetVotersOutgoing()...)
		resp.Learners = append(slices.Clone(cs.GetLearners()), cs.GetLearnersNext()...)
	}
	if resp.Removed {
		if _, known := p.n.cat.shard(id); known {
			// This replica went away but the shard did not: the caller
			// must look for another one.
			return nil, status.Error(codes.FailedPrecondition, p.notHostedMsg(id))
		}
		return resp, nil
	}
	last, ok, err := sh.LastData()
	if err != nil {
		return nil, p.statusErr(id, "reading the last entry of", err)
	}
	if ok {
		resp.LastData = entryPB(last)
	}
	return resp, nil
}

// IndexAtTime answers Shard.IndexAtTime.
func (p *peerServer) IndexAtTime(_ context.Context, req *peerpb.IndexAtTimeRequest) (*peerpb.IndexAtTimeResponse, error) {
	sh, err := p.local(req.GetShardId())
	if err != nil {
		return nil, err
	}
	index, err := sh.IndexAtTime(time.UnixMilli(req.GetTimeMs()))
	if err != nil {
		return nil, p.statusErr(req.GetShardId(), "searching by time in", err)
	}
	return &peerpb.IndexAtTimeResponse{Index: index}, nil
}

// Trim answers Shard.Trim.
func (p *peerServer) Trim(ctx context.Context, req *peerpb.TrimRequest) (*peerpb.TrimResponse, error) {
	sh, err := p.local(req.GetShardId())
	if err != nil {
		return nil, err
	}
	if err := sh.Trim(ctx, req.GetThrough()); err != nil {
		return nil, p.statusErr(req.GetShardId(), "trimming", err)
	}
	return &peerpb.TrimResponse{}, nil
}

// statusErr maps a cluster error to the gRPC status remote.go maps back,
// naming the shard and what was being done.
func (p *peerServer) statusErr(id uint64, doing string, err error) error {
	msg := fmt.Sprintf("node %d %s shard %d: %v", p.n.opts.Self.ID, doing, id, err)
	var corrupt *CorruptEntryError
	switch {
	case errors.As(err, &corrupt):
		return status.Error(codes.DataLoss, corrupt.Error())
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return status.FromContextError(err).Err()
	case errors.Is(err, ErrShardNotFound):
		if _, known := p.n.cat.shard(id); known {
			return status.Error(codes.FailedPrecondition, p.notHostedMsg(id))
		}
		return status.Error(codes.NotFound, msg)
	case errors.Is(err, ErrNoLeader), errors.Is(err, ErrClosed):
		return status.Error(codes.Unavailable, msg)
	case errors.Is(err, raft.ErrCompacted):
		return status.Error(codes.OutOfRange, msg)
	default:
		return status.Error(codes.Internal, msg)
	}
}

func entryPB(e Entry) *peerpb.Entry {
	return &peerpb.Entry{Index: e.Index, AppendTimeMs: e.AppendTime.UnixMilli(), Batch: e.Batch}
}
