package client

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/weir-log/weir/api/hstreampb"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/emptypb"
)

func TestParseURL(t *testing.T) {
	for in, want := range map[string]struct {
		addrs []string
		tls   bool
	}{
		"127.0.0.1:7000":              {[]string{"127.0.0.1:7000"}, false},
		"h1":                          {[]string{"h1:6570"}, false},
		"hstream://h1:1,h2,[::1]:3/":  {[]string{"h1:1", "h2:6570", "[::1]:3"}, false},
		"hstreams://h1:6570, h2:6571": {[]string{"h1:6570", "h2:6571"}, true},
		"h1:1,h2:2":                   {[]string{"h1:1", "h2:2"}, false},
	} {
		addrs, useTLS, err := parseURL(in)
		require.NoError(t, err, in)
		require.Equal(t, want.addrs, addrs, in)
		require.Equal(t, want.tls, useTLS, in)
	}
	for in, want := range map[string]string{
		"":                   "no server address",
		"http://h1:6570":     `scheme "http"`,
		"hstream://":         "no server address",
		"hstream://h1,,h2":   "empty server address",
		"hstream://h1/x":     `"h1/x"`,
		"hstream://u@h1:1":   `"u@h1:1"`,
		"hstream://h1:1:2":   `"h1:1:2"`,
		"hstreams://:6570,h": `":6570"`,
	} {
		_, _, err := parseURL(in)
		require.ErrorIs(t, err, ErrInvalidArgument, in)
		require.ErrorContains(t, err, want, in)
	}
}

func TestDialOptionErrors(t *testing.T) {
	dir := t.TempDir()
	notPEM := filepath.Join(dir, "ca.pem")
	require.NoError(t, os.WriteFile(notPEM, []byte("not a certificate"), 0o600))
	for _, tc := range []struct {
		url  string
		opt  Option
		want string
	}{
		{"h:1", WithMaxAttempts(0), "WithMaxAttempts(0)"},
		{"h:1", WithRetryBackoff(0, time.Second), "WithRetryBackoff(0s, 1s)"},
		{"h:1", WithRetryBackoff(time.Second, time.Millisecond), "WithRetryBackoff(1s, 1ms)"},
		{"h:1", WithClientCert("c.pem", ""), `WithClientCert("c.pem", "")`},
		{"hstream://h:1", WithCACert(notPEM), "but WithCACert(\"" + notPEM + "\") asks for TLS: use hstreams://"},
		{"hstreams://h:1", WithCACert(filepath.Join(dir, "missing.pem")), `WithCACert("` + dir},
		{"hstreams://h:1", WithCACert(notPEM), "no PEM certificate"},
		{"hstreams://h:1", WithClientCert(notPEM, notPEM), "WithClientCert("},
	} {
		_, err := Dial(t.Context(), tc.url, tc.opt)
		require.ErrorIs(t, err, ErrInvalidArgument, tc.want)
		require.ErrorContains(t, err, tc.want)
	}
}

// routeFake is a server whose answers the test scripts. It counts calls by
// method name.
type routeFake struct {
	hstreampb.UnimplementedHStreamApiServer
	addr string
	self hstreampb.HStreamApiServer // what is served, when a test embeds routeFake; nil: the routeFake

	mu       sync.Mutex
	calls    map[string]int
	nodes    []*hstreampb.ServerNode                  // DescribeCluster's answer
	lookup   func(shard uint64) *hstreampb.ServerNode // LookupShard's answer; nil: Unimplemented
	append   func(req *hstreampb.AppendRequest) error // Append's error, nil to accept
	list     func() error                             // ListStreams' error
	checkMD  func(md metadata.MD) error               // every call's metadata
	appended []*hstreampb.AppendRequest
}

func (f *routeFake) count(ctx context.Context, method string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.calls == nil {
		f.calls = make(map[string]int)
	}
	f.calls[method]++
	if f.checkMD != nil {
		md, _ := metadata.FromIncomingContext(ctx)
		return f.checkMD(md)
	}
	return nil
}

func (f *routeFake) callCount(method string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls[method]
}

func (f *routeFake) DescribeCluster(ctx context.Context, _ *emptypb.Empty) (*hstreampb.DescribeClusterResponse, error) {
	if err := f.count(ctx, "DescribeCluster"); err != nil {
		return nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	return &hstreampb.DescribeClusterResponse{ProtocolVersion: "0.1.0", ServerNodes: f.nodes}, nil
}

func (f *routeFake) LookupShard(ctx context.Context, req *hstreampb.LookupShardRequest) (*hstreampb.LookupShardResponse, error) {
	if err := f.count(ctx, "LookupShard"); err != nil {
		return nil, err
	}
	if f.lookup == nil {
		return nil, status.Error(codes.Unimplemented, "no LookupShard")
	}
	return &hstreampb.LookupShardResponse{ShardId: req.GetShardId(), ServerNode: f.lookup(req.GetShardId())}, nil
}

func (f *routeFake) ListStreams(ctx context.Context, _ *hstreampb.ListStreamsRequest) (*hstreampb.ListStreamsResponse, error) {
	if err := f.count(ctx, "ListStreams"); err != nil {
		return nil, err
	}
	if f.list != nil {
		if err := f.list(); err != nil {
			return nil, err
		}
	}
	return &hstreampb.ListStreamsResponse{Streams: []*hstreampb.Stream{{StreamName: f.addr}}}, nil
}

func (f *routeFake) ListShards(ctx context.Context, req *hstreampb.ListShardsRequest) (*hstreampb.ListShardsResponse, error) {
	if err := f.count(ctx, "ListShards"); err != nil {
		return nil, err
	}
	return &hstreampb.ListShardsResponse{Shards: []*hstreampb.Shard{{
		StreamName: req.GetStreamName(), ShardId: 7, IsActive: true,
		StartHashRangeKey: "0", EndHashRangeKey: "340282366920938463463374607431768211455",
	}}}, nil
}

func (f *routeFake) Append(ctx context.Context, req *hstreampb.AppendRequest) (*hstreampb.AppendResponse, error) {
	if err := f.count(ctx, "Append"); err != nil {
		return nil, err
	}
	if f.append != nil {
		if err := f.append(req); err != nil {
			return nil, err
		}
	}
	f.mu.Lock()
	f.appended = append(f.appended, req)
	f.mu.Unlock()
	ids := make([]*hstreampb.RecordId, req.GetRecords().GetBatchSize())
	for i := range ids {
		ids[i] = &hstreampb.RecordId{ShardId: req.GetShardId(), BatchId: 1, BatchIndex: uint32(i)}
	}
	return &hstreampb.AppendResponse{StreamName: req.GetStreamName(), ShardId: req.GetShardId(), RecordIds: ids}, nil
}

// serveRouteFake serves f on a fresh 127.0.0.1 port (or on lis) until the
// returned stop is called or the test ends.
func serveRouteFake(t *testing.T, f *routeFake, lis net.Listener, opts ...grpc.ServerOption) (stop func()) {
	t.Helper()
	if lis == nil {
		var err error
		lis, err = net.Listen("tcp", "127.0.0.1:0")
		require.NoError(t, err)
	}
	f.addr = lis.Addr().String()
	srv := grpc.NewServer(opts...)
	var impl hstreampb.HStreamApiServer = f
	if f.self != nil {
		impl = f.self
	}
	hstreampb.RegisterHStreamApiServer(srv, impl)
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = srv.Serve(lis)
	}()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			srv.Stop()
			<-done
		})
	}
	t.Cleanup(stop)
	return stop
}

func serverNodeOf(t *testing.T, id uint32, addr string) *hstreampb.ServerNode {
	host, port, err := net.SplitHostPort(addr)
	require.NoError(t, err)
	p, err := strconv.Atoi(port)
	require.NoError(t, err)
	return &hstreampb.ServerNode{Id: id, Host: host, Port: uint32(p)}
}

// twoNodes serves two fakes, a and b, that both report the pair as the
// cluster; stopA takes a down.
func twoNodes(t *testing.T) (a, b *routeFake, stopA func(), nodes []*hstreampb.ServerNode) {
	t.Helper()
	a, b = &routeFake{}, &routeFake{}
	stopA = serveRouteFake(t, a, nil)
	serveRouteFake(t, b, nil)
	nodes = []*hstreampb.ServerNode{serverNodeOf(t, 1, a.addr), serverNodeOf(t, 2, b.addr)}
	a.nodes, b.nodes = nodes, nodes
	return a, b, stopA, nodes
}

func fastRetries() Option { return WithRetryBackoff(time.Millisecond, 5*time.Millisecond) }

func TestDialTakesServerListFromDescribeCluster(t *testing.T) {
	a, b := &routeFake{}, &routeFake{}
	serveRouteFake(t, a, nil)
	serveRouteFake(t, b, nil)
	_, bPort, _ := net.SplitHostPort(b.addr)
	p, _ := strconv.Atoi(bPort)
	// b advertises 0.0.0.0: it is reached on the host the answer came from.
	a.nodes = []*hstreampb.ServerNode{serverNodeOf(t, 1, a.addr), {Id: 2, Host: "0.0.0.0", Port: uint32(p)}}

	// The first seed is down.
	dead, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	deadAddr := dead.Addr().String()
	require.NoError(t, dead.Close())
	// Dial asks both at once: the dead one does not use up the dial
	// timeout before the live one is asked.
	start := time.Now()
	c, err := Dial(t.Context(), "hstream://"+deadAddr+","+a.addr, WithDialTimeout(10*time.Second))
	require.NoError(t, err)
	require.Less(t, time.Since(start), 5*time.Second)
	defer c.Close()
	require.Equal(t, a.addr, c.Addr())
	require.Equal(t, []string{a.addr, "127.0.0.1:" + bPort}, c.Nodes())
}

func TestUnavailableNodeFailsOverToTheNext(t *testing.T) {
	a, b, stopA, _ := twoNodes(t)

	c, err := Dial(t.Context(), a.addr, fastRetries())
	require.NoError(t, err)
	defer c.Close()
	streams, err := c.ListStreams(t.Context(), "")
	require.NoError(t, err)
	require.Equal(t, a.addr, streams[0].GetStreamName(), "calls go to the node that answered Dial")

	stopA()
	streams, err = c.ListStreams(t.Context(), "")
	require.NoError(t, err)
	require.Equal(t, b.addr, streams[0].GetStreamName(), "a down node's calls go to the next")
	require.Equal(t, 1, b.callCount("ListStreams"))
}

func TestRetriesAreBounded(t *testing.T) {
	f := &routeFake{list: func() error { return status.Error(codes.Unavailable, "shutting down") }}
	serveRouteFake(t, f, nil)
	c, err := Dial(t.Context(), f.addr, fastRetries(), WithMaxAttempts(4))
	require.NoError(t, err)
	defer c.Close()
	_, err = c.ListStreams(t.Context(), "")
	require.Equal(t, codes.Unavailable, status.Code(err))
	require.Equal(t, 4, f.callCount("ListStreams"))

	// Errors other than Unavailable and WrongServer are not retried.
	for _, e := range []error{
		hstreamError(codes.FailedPrecondition, hstreampb.ErrorCode_StreamFoundSubscription, "has subscriptions"),
		status.Error(codes.NotFound, "no such stream"),
		status.Error(codes.Internal, "boom"),
	} {
		before := f.callCount("ListStreams")
		f.mu.Lock()
		f.list = func() error { return e }
		f.mu.Unlock()
		_, err = c.ListStreams(t.Context(), "")
		require.Equal(t, status.Code(e), status.Code(err))
		require.Equal(t, before+1, f.callCount("ListStreams"), "%v is not retried", e)
	}

	// A cancelled context stops the retries.
	f.mu.Lock()
	f.list = func() error { return status.Error(codes.Unavailable, "down") }
	f.mu.Unlock()
	c2, err := Dial(t.Context(), f.addr, WithRetryBackoff(time.Hour, time.Hour))
	require.NoError(t, err)
	defer c2.Close()
	ctx, cancel := context.WithTimeout(t.Context(), 100*time.Millisecond)
	defer cancel()
	_, err = c2.ListStreams(ctx, "")
	require.ErrorIs(t, err, context.DeadlineExceeded)
	require.Equal(t, codes.Unavailable, status.Code(err), "the last server error is kept")
}

func TestWrongServerLooksTheShardUpAgain(t *testing.T) {
	a, b, _, nodes := twoNodes(t)
	// The shard moves from a to b: a's first lookup still says a, a then
	// refuses the append as the wrong server, the next lookup says b.
	var lookups atomic.Int32
	a.lookup = func(uint64) *hstreampb.ServerNode {
		if lookups.Add(1) == 1 {
			return nodes[0]
		}
		return nodes[1]
	}
	a.append = func(*hstreampb.AppendRequest) error {
		return hstreamError(codes.FailedPrecondition, hstreampb.ErrorCode_WrongServer, "shard 7 moved")
	}

	c, err := Dial(t.Context(), a.addr, fastRetries())
	require.NoError(t, err)
	defer c.Close()
	ids, err := c.Append(t.Context(), "s", []Record{{Key: "k", Payload: []byte("v")}})
	require.NoError(t, err)
	require.Len(t, ids, 1)
	require.Equal(t, 1, a.callCount("Append"))
	require.Equal(t, 1, b.callCount("Append"))
	require.Equal(t, 2, a.callCount("LookupShard"))

	// The lookup is cached: the next append goes straight to b.
	_, err = c.Append(t.Context(), "s", []Record{{Key: "k", Payload: []byte("w")}})
	require.NoError(t, err)
	require.Equal(t, 2, b.callCount("Append"))
	require.Equal(t, 2, a.callCount("LookupShard"))
}

func TestLookupFailsOverToTheNext(t *testing.T) {
	a, b, stopA, nodes := twoNodes(t)
	b.lookup = func(uint64) *hstreampb.ServerNode { return nodes[1] }

	c, err := Dial(t.Context(), a.addr, fastRetries())
	require.NoError(t, err)
	defer c.Close()
	_, err = c.shardMap(t.Context(), "s", false) // the stream's shards, but no lookup yet
	require.NoError(t, err)
	stopA()
	// The shard's lookup goes to a, which is down: the lookup is retried
	// on b, which says b serves the shard.
	_, err = c.Append(t.Context(), "s", []Record{{Key: "k", Payload: []byte("v")}})
	require.NoError(t, err)
	require.Equal(t, 1, b.callCount("LookupShard"))
	require.Equal(t, 1, b.callCount("Append"))
	require.Zero(t, b.callCount("ListShards"))
}

func TestBackoffIsCappedWithoutOverflow(t *testing.T) {
	c := &Client{cfg: defaultClientConfig()}
	c.cfg.backoffBase, c.cfg.backoffMax = 10*time.Second, time.Minute
	for _, attempt := range []int{1, 2, 3, 31, 64, 1000} {
		d := c.backoff(attempt)
		want := min(c.cfg.backoffBase<<min(attempt-1, 3), c.cfg.backoffMax)
		require.GreaterOrEqual(t, d, want/2, "attempt %d", attempt)
		require.LessOrEqual(t, d, want, "attempt %d", attempt)
	}
}

func TestReadShardIsNotResentAfterUnavailable(t *testing.T) {
	// A shard reader is a cursor the server moves before it answers: a
	// resend after a lost answer would skip records without an error.
	f := &readerFake{}
	f.self = f
	serveRouteFake(t, &f.routeFake, nil)
	c, err := Dial(t.Context(), f.addr, fastRetries())
	require.NoError(t, err)
	defer c.Close()
	_, err = c.ReadShard(t.Context(), "r1", 1)
	require.Equal(t, codes.Unavailable, status.Code(err))
	require.Equal(t, int32(1), f.reads.Load())
}

// readerFake answers ReadShard with Unavailable, as a node that moved the
// reader and then lost the connection would.
type readerFake struct {
	routeFake
	reads atomic.Int32
}

func (f *readerFake) ReadShard(context.Context, *hstreampb.ReadShardRequest) (*hstreampb.ReadShardResponse, error) {
	f.reads.Add(1)
	return nil, status.Error(codes.Unavailable, "connection lost")
}

func TestOneOffReadersAreNotCached(t *testing.T) {
	f := &routeFake{}
	serveRouteFake(t, f, nil)
	c, err := Dial(t.Context(), f.addr)
	require.NoError(t, err)
	defer c.Close()
	for range 3 {
		_ = c.ReadStream(t.Context(), "s", nil, nil, 0, func(ReceivedRecord) error { return nil })
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	require.Empty(t, c.owners)
}

func TestALastFailedAttemptStillForgetsTheRoute(t *testing.T) {
	// With one attempt there is no retry, but the failure must still drop
	// the cached lookup and the dead node, or every later call goes there.
	a, b, stopA, nodes := twoNodes(t)
	a.lookup = func(uint64) *hstreampb.ServerNode { return nodes[0] }
	b.lookup = func(uint64) *hstreampb.ServerNode { return nodes[1] }

	c, err := Dial(t.Context(), a.addr, WithMaxAttempts(1))
	require.NoError(t, err)
	defer c.Close()
	_, err = c.Append(t.Context(), "s", []Record{{Key: "k", Payload: []byte("1")}})
	require.NoError(t, err)
	stopA() // the shard moves to b
	_, err = c.Append(t.Context(), "s", []Record{{Key: "k", Payload: []byte("2")}})
	require.Equal(t, codes.Unavailable, status.Code(err))
	_, err = c.Append(t.Context(), "s", []Record{{Key: "k", Payload: []byte("3")}})
	require.NoError(t, err)
	require.Equal(t, 1, b.callCount("Append"))
}

func TestTLSAndAuthToken(t *testing.T) {
	dir := t.TempDir()
	caFile, serverCert := writeTestCA(t, dir)
	f := &routeFake{checkMD: func(md metadata.MD) error {
		if got := md.Get("authorization"); len(got) != 1 || got[0] != "Basic dXNlcjpwdw==" {
			return status.Errorf(codes.Unauthenticated, "authorization %q", got)
		}
		return nil
	}}
	serveRouteFake(t, f, nil, grpc.Creds(credentials.NewTLS(&tls.Config{Certificates: []tls.Certificate{serverCert}})))
	f.nodes = []*hstreampb.ServerNode{serverNodeOf(t, 1, f.addr)}

	c, err := Dial(t.Context(), "hstreams://"+f.addr, WithCACert(caFile), WithAuthToken("dXNlcjpwdw=="))
	require.NoError(t, err)
	defer c.Close()
	_, err = c.ListStreams(t.Context(), "")
	require.NoError(t, err)

	// Without the token the server refuses; without TLS the handshake fails.
	c2, err := Dial(t.Context(), "hstreams://"+f.addr, WithCACert(caFile))
	require.Equal(t, codes.Unauthenticated, status.Code(err), "%v", err)
	require.Nil(t, c2)
	_, err = Dial(t.Context(), "hstream://"+f.addr, WithDialTimeout(300*time.Millisecond))
	require.Error(t, err)
	// A CA that did not sign the server's certificate is refused.
	otherCA, _ := writeTestCA(t, t.TempDir())
	_, err = Dial(t.Context(), "hstreams://"+f.addr, WithCACert(otherCA), WithAuthToken("dXNlcjpwdw=="), WithDialTimeout(300*time.Millisecond))
	require.ErrorContains(t, err, "certificate")
}

// writeTestCA writes a CA certificate to dir/ca.pem and returns its path
// and a server certificate for 127.0.0.1 signed by it.
func writeTestCA(t *testing.T, dir string) (string, tls.Certificate) {
	t.Helper()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	require.NoError(t, err)
	caCert, err := x509.ParseCertificate(caDER)
	require.NoError(t, err)
	caFile := filepath.Join(dir, "ca.pem")
	require.NoError(t, os.WriteFile(caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}), 0o600))

	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "server"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, KeyUsage: x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, &key.PublicKey, caKey)
	require.NoError(t, err)
	return caFile, tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}
