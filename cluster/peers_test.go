package cluster

import (
	"context"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"

	"github.com/weir-log/weir/api/peerpb"
)

// countingPeer is a peer service that counts its ShardState calls.
type countingPeer struct {
	peerpb.UnimplementedPeerServer
	calls atomic.Int64
}

func (c *countingPeer) ShardState(context.Context, *peerpb.ShardStateRequest) (*peerpb.ShardStateResponse, error) {
	c.calls.Add(1)
	return &peerpb.ShardStateResponse{}, nil
}

// servePeer serves a countingPeer on a 127.0.0.1 port and returns it and
// its address.
func servePeer(t *testing.T) (*countingPeer, string) {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	srv := grpc.NewServer()
	cp := &countingPeer{}
	peerpb.RegisterPeerServer(srv, cp)
	go srv.Serve(lis)
	t.Cleanup(srv.Stop)
	return cp, lis.Addr().String()
}

// fakeMembers is a membership for peers: the advertised address of each
// live member.
type fakeMembers struct {
	mu   sync.Mutex
	addr map[uint64]string
}

func (f *fakeMembers) addrOf(id uint64) (string, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	a, ok := f.addr[id]
	return a, ok
}

func (f *fakeMembers) set(id uint64, addr string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.addr[id] = addr
}

func (f *fakeMembers) remove(id uint64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.addr, id)
}

// callPeer makes one ShardState call to node id through p.
func callPeer(t *testing.T, p *peers, id uint64) {
	t.Helper()
	cli, err := p.client(id)
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err = cli.ShardState(ctx, &peerpb.ShardStateRequest{})
	require.NoError(t, err)
}

// dialed is the address p's connection to node id dials.
func dialed(p *peers, id uint64) string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.conns[id].cc.Target()
}

// A node with a PeerAddresses entry is dialed there, not at its advertised
// address; the others still are dialed at theirs.
func TestPeerAddressesOverride(t *testing.T) {
	adv2, adv2Addr := servePeer(t)
	proxy2, proxy2Addr := servePeer(t)
	adv3, adv3Addr := servePeer(t)
	mem := &fakeMembers{addr: map[uint64]string{2: adv2Addr, 3: adv3Addr}}
	override := map[uint64]string{2: proxy2Addr}
	p := newPeers(1, mem.addrOf, override, nil)
	t.Cleanup(p.close)
	override[2] = "127.0.0.1:1" // newPeers keeps its own copy

	callPeer(t, p, 2)
	callPeer(t, p, 3)
	assert.Equal(t, int64(1), proxy2.calls.Load(), "node 2 through its peer address")
	assert.Zero(t, adv2.calls.Load(), "node 2's advertised address is not dialed")
	assert.Equal(t, int64(1), adv3.calls.Load(), "node 3 at its advertised address")
	assert.Equal(t, proxy2Addr, dialed(p, 2))
	assert.Equal(t, adv3Addr, dialed(p, 3))
}

// The override replaces the address only: a node that is not a live
// member is not dialed, and it is no dial of this node itself.
func TestPeerAddressesOnlyLiveMembers(t *testing.T) {
	_, proxyAddr := servePeer(t)
	mem := &fakeMembers{addr: map[uint64]string{}}
	p := newPeers(1, mem.addrOf, map[uint64]string{2: proxyAddr, 1: proxyAddr}, nil)
	t.Cleanup(p.close)

	_, err := p.client(2)
	require.ErrorIs(t, err, ErrNodeUnavailable)
	_, err = p.client(1)
	require.ErrorContains(t, err, "dialing itself")

	mem.set(2, "127.0.0.1:1")
	callPeer(t, p, 2)
	mem.remove(2)
	_, err = p.client(2)
	require.ErrorIs(t, err, ErrNodeUnavailable, "a node that left is not dialed, even with a connection open")
}

// A node that comes back at another advertised address is redialed there,
// unless it has a peer address, which did not change.
func TestPeerAddressesRedial(t *testing.T) {
	_, proxy2Addr := servePeer(t)
	_, old3Addr := servePeer(t)
	new3, new3Addr := servePeer(t)
	mem := &fakeMembers{addr: map[uint64]string{2: "127.0.0.1:1", 3: old3Addr}}
	p := newPeers(1, mem.addrOf, map[uint64]string{2: proxy2Addr}, nil)
	t.Cleanup(p.close)

	callPeer(t, p, 2)
	callPeer(t, p, 3)
	p.mu.Lock()
	cc2 := p.conns[2].cc
	p.mu.Unlock()

	mem.set(2, "127.0.0.1:2")
	mem.set(3, new3Addr)
	callPeer(t, p, 2)
	callPeer(t, p, 3)
	p.mu.Lock()
	assert.Same(t, cc2, p.conns[2].cc, "node 2's peer address is unchanged: no redial")
	p.mu.Unlock()
	assert.Equal(t, proxy2Addr, dialed(p, 2))
	assert.Equal(t, new3Addr, dialed(p, 3))
	assert.Equal(t, int64(1), new3.calls.Load())
}
