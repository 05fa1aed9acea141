package cluster

import (
	"fmt"
	"maps"
	"sync"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/weir-log/weir/api/peerpb"
)

// peers keeps one gRPC connection per other node, for the peer service
// (raft messages, forwarded appends and reads). A connection is dialed on
// first use to the address the node registered, or to its entry in
// override when it has one, and redialed if the address to dial changes.
// Only live members are dialed, override or not.
type peers struct {
	self     uint64
	addrOf   func(id uint64) (string, bool)
	override map[uint64]string // read-only after newPeers
	opts     []grpc.DialOption

	mu    sync.Mutex
	conns map[uint64]peerConn // guarded by mu
}

type peerConn struct {
	addr string
	cc   *grpc.ClientConn
}

func newPeers(self uint64, addrOf func(uint64) (string, bool), override map[uint64]string, opts []grpc.DialOption) *peers {
	if len(opts) == 0 {
		opts = []grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}
	}
	return &peers{self: self, addrOf: addrOf, override: maps.Clone(override), opts: opts, conns: make(map[uint64]peerConn)}
}

// client returns a peer service client for node id.
func (p *peers) client(id uint64) (peerpb.PeerClient, error) {
	if id == p.self {
		return nil, fmt.Errorf("cluster: node %d dialing itself", id)
	}
	addr, ok := p.addrOf(id)
	if !ok {
		return nil, fmt.Errorf("%w: node %d is not a live member", ErrNodeUnavailable, id)
	}
	if o, ok := p.override[id]; ok {
		addr = o
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if c, ok := p.conns[id]; ok {
		if c.addr == addr {
			return peerpb.NewPeerClient(c.cc), nil
		}
		c.cc.Close()
		delete(p.conns, id)
	}
	cc, err := grpc.NewClient(addr, p.opts...)
	if err != nil {
		return nil, fmt.Errorf("cluster: dialing node %d at %s: %w", id, addr, err)
	}
	p.conns[id] = peerConn{addr: addr, cc: cc}
	return peerpb.NewPeerClient(cc), nil
}

func (p *peers) close() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for id, c := range p.conns {
		c.cc.Close()
		delete(p.conns, id)
	}
}
