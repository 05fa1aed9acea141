package client

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/weir-log/weir/api/hstreampb"
	"github.com/weir-log/weir/api/wire"
	"github.com/weir-log/weir/internal/tlsfile"
)

// maxMessageBytes bounds one gRPC message either way. Read responses carry
// about 1 MiB of batches, but a single batch may be as large as the server's
// store.max-batch-size.
const maxMessageBytes = 256 << 20

// Client talks to a weir (or HStreamDB) cluster: one gRPC connection per
// node it has used, a server list from DescribeCluster, and a cache of which
// node serves which shard, subscription and reader (see route.go). It is
// safe for concurrent use. Close it when done.
type Client struct {
	cfg      clientConfig
	dialOpts []grpc.DialOption
	logger   *slog.Logger
	addr     string // the node that answered Dial

	closeOnce sync.Once
	closeErr  error

	// mu guards the fields below. It is never held across a call.
	mu             sync.Mutex
	shardMaps      map[string]*wire.ShardMap // per-stream routing tables Append uses
	conns          map[string]*grpc.ClientConn
	seeds          []string          // Dial's url: where a refresh goes when no listed node answers
	nodes          []string          // the server list, host:port
	preferred      int               // index in nodes of the node calls without a lookup go to
	stale          bool              // a node failed since the last refresh
	refreshedAt    time.Time         // when nodes was last refreshed
	refreshTriedAt time.Time         // when a refresh last started
	refreshing     bool              // a refresh is under way
	owners         map[target]string // lookups: the node serving a shard, subscription or reader
	closed         bool
}

// Dial connects to a cluster. url is one server address or several:
//
//	127.0.0.1:6570                  one server, plaintext
//	hstream://h1:6570,h2,h3:7000    several; a missing port is 6570
//	hstreams://h1:6570,h2:6570      TLS (see WithCACert, WithClientCert)
//
// Dial asks every server of url at once for the cluster's nodes
// (DescribeCluster), takes the first answer that comes within the dial
// timeout (WithDialTimeout) and ctx, and from then on sends its calls to
// the nodes the cluster reported (a server without DescribeCluster must
// answer Echo; the list stays url's then). A server that is still starting
// is waited for, up to the dial timeout.
func Dial(ctx context.Context, url string, opts ...Option) (*Client, error) {
	cfg := defaultClientConfig()
	for _, o := range opts {
		o.applyClient(&cfg)
	}
	seeds, useTLS, err := parseURL(url)
	if err != nil {
		return nil, err
	}
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	creds, err := cfg.transportCredentials(url, useTLS)
	if err != nil {
		return nil, err
	}
	dialOpts := []grpc.DialOption{
		grpc.WithTransportCredentials(creds),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(maxMessageBytes), grpc.MaxCallSendMsgSize(maxMessageBytes)),
	}
	if cfg.authToken != "" {
		dialOpts = append(dialOpts, grpc.WithPerRPCCredentials(basicAuth(cfg.authToken)))
	}
	dialOpts = append(dialOpts, cfg.grpcOpts...)
	c := &Client{
		cfg:       cfg,
		dialOpts:  dialOpts,
		logger:    cfg.logger,
		shardMaps: make(map[string]*wire.ShardMap),
		conns:     make(map[string]*grpc.ClientConn),
		seeds:     seeds,
		nodes:     seeds,
		owners:    make(map[target]string),
	}
	// Every seed is asked at once: a dead first seed must not use up the
	// time a live second one needs.
	type answer struct {
		seed  string
		nodes []string
		err   error
	}
	answers := make(chan answer, len(seeds))
	dctx, cancel := context.WithCancel(ctx)
	defer cancel()
	for _, seed := range seeds {
		go func() {
			nodes, err := c.describe(dctx, seed, true)
			answers <- answer{seed, nodes, err}
		}()
	}
	var errs []error
	for range seeds {
		a := <-answers
		if a.err == nil {
			c.addr = a.seed
			c.setNodes(a.nodes, a.seed)
			return c, nil
		}
		errs = append(errs, fmt.Errorf("client: dial %w", a.err))
	}
	_ = c.Close()
	return nil, errors.Join(errs...)
}

// serverList turns a DescribeCluster answer into addresses to dial. A node
// that advertises an unspecified host (0.0.0.0, ::) is reached on the host
// the answer came from.
func serverList(resp *hstreampb.DescribeClusterResponse, from string) []string {
	fromHost, _, _ := net.SplitHostPort(from)
	var nodes []string
	for _, n := range resp.GetServerNodes() {
		host := n.GetHost()
		if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
			host = fromHost
		}
		nodes = append(nodes, net.JoinHostPort(host, fmt.Sprint(n.GetPort())))
	}
	return nodes
}

// parseURL splits a Dial url into normalized host:port addresses and says
// whether it asks for TLS (hstreams://).
func parseURL(url string) (addrs []string, useTLS bool, err error) {
	rest := url
	if scheme, after, ok := strings.Cut(url, "://"); ok {
		switch scheme {
		case "hstream":
		case "hstreams":
			useTLS = true
		default:
			return nil, false, fmt.Errorf("%w: server url %q: scheme %q: want hstream:// or hstreams://", ErrInvalidArgument, url, scheme)
		}
		rest = strings.TrimSuffix(after, "/")
	}
	if rest == "" {
		return nil, false, fmt.Errorf("%w: server url %q: no server address", ErrInvalidArgument, url)
	}
	for _, a := range strings.Split(rest, ",") {
		addr, err := normalizeAddr(strings.TrimSpace(a))
		if err != nil {
			return nil, false, fmt.Errorf("server url %q: %w", url, err)
		}
		addrs = append(addrs, addr)
	}
	return addrs, useTLS, nil
}

// normalizeAddr checks addr and adds DefaultPort to a bare host.
func normalizeAddr(addr string) (string, error) {
	if addr == "" {
		return "", fmt.Errorf("%w: empty server address", ErrInvalidArgument)
	}
	if strings.ContainsAny(addr, "/?#@") {
		return "", fmt.Errorf("%w: server address %q: want host:port", ErrInvalidArgument, addr)
	}
	host, port, err := net.SplitHostPort(addr)
	switch {
	case err == nil:
		if host == "" || port == "" {
			return "", fmt.Errorf("%w: server address %q: want host:port", ErrInvalidArgument, addr)
		}
		return addr, nil
	case strings.HasPrefix(addr, "[") && strings.HasSuffix(addr, "]"): // "[::1]"
		return net.JoinHostPort(addr[1:len(addr)-1], DefaultPort), nil
	case strings.Count(addr, ":") == 0: // "localhost", "10.0.0.1"
		return net.JoinHostPort(addr, DefaultPort), nil
	case strings.Count(addr, ":") > 1 && net.ParseIP(addr) != nil: // "::1"
		return net.JoinHostPort(addr, DefaultPort), nil
	default:
		return "", fmt.Errorf("%w: server address %q: %v", ErrInvalidArgument, addr, err)
	}
}

// transportCredentials builds the connection security from the TLS options
// and the url's scheme. TLS options with a plaintext hstream:// url are a
// contradiction and refused; with a bare address they turn TLS on.
func (cfg *clientConfig) transportCredentials(url string, useTLS bool) (credentials.TransportCredentials, error) {
	var tlsOpts []string
	if cfg.caFile != "" {
		tlsOpts = append(tlsOpts, fmt.Sprintf("WithCACert(%q)", cfg.caFile))
	}
	if cfg.certFile != "" {
		tlsOpts = append(tlsOpts, fmt.Sprintf("WithClientCert(%q, %q)", cfg.certFile, cfg.keyFile))
	}
	if cfg.tlsConfig != nil {
		tlsOpts = append(tlsOpts, "WithTLSConfig")
	}
	hasTLSOpt := len(tlsOpts) > 0
	if !useTLS && hasTLSOpt && strings.HasPrefix(url, "hstream://") {
		return nil, fmt.Errorf("%w: server url %q is plaintext (hstream://) but %s asks for TLS: use hstreams://", ErrInvalidArgument, url, strings.Join(tlsOpts, ", "))
	}
	if !useTLS && !hasTLSOpt {
		return insecure.NewCredentials(), nil
	}
	tc := &tls.Config{MinVersion: tls.VersionTLS12}
	if cfg.tlsConfig != nil {
		tc = cfg.tlsConfig.Clone()
	}
	if cfg.caFile != "" {
		pool, err := tlsfile.CAPool(cfg.caFile)
		if err != nil {
			return nil, fmt.Errorf("%w: WithCACert(%q): %v", ErrInvalidArgument, cfg.caFile, err)
		}
		tc.RootCAs = pool
	}
	if cfg.certFile != "" {
		cert, err := tls.LoadX509KeyPair(cfg.certFile, cfg.keyFile)
		if err != nil {
			return nil, fmt.Errorf("%w: WithClientCert(%q, %q): %v", ErrInvalidArgument, cfg.certFile, cfg.keyFile, err)
		}
		tc.Certificates = []tls.Certificate{cert}
	}
	return credentials.NewTLS(tc), nil
}

// basicAuth sends an auth token as HStreamDB's clients do: metadata
// "authorization: Basic <token>" on every call, streams included.
type basicAuth string

func (t basicAuth) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{"authorization": "Basic " + string(t)}, nil
}

func (basicAuth) RequireTransportSecurity() bool { return false }

// Addr returns the address of the server that answered Dial, with the port.
func (c *Client) Addr() string { return c.addr }

// Nodes returns the client's server list: the cluster's nodes as the last
// DescribeCluster reported them.
func (c *Client) Nodes() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]string(nil), c.nodes...)
}

// API returns the raw generated client on the connection to the node the
// client currently prefers, for RPCs this package does not wrap. Calls made
// through it are not retried or routed.
func (c *Client) API() hstreampb.HStreamApiClient {
	api, err := c.apiAt(c.anyNode())
	if err != nil {
		return hstreampb.NewHStreamApiClient(closedConn{err})
	}
	return api
}

// Close closes every connection; calls in flight fail with codes.Canceled.
// Close is idempotent.
func (c *Client) Close() error {
	c.closeOnce.Do(func() {
		c.mu.Lock()
		c.closed = true
		conns := c.conns
		c.conns = nil
		c.mu.Unlock()
		var errs []error
		for _, conn := range conns {
			errs = append(errs, conn.Close())
		}
		c.closeErr = errors.Join(errs...)
	})
	return c.closeErr
}

// closedConn fails every call; API returns it after Close.
type closedConn struct{ err error }

func (cc closedConn) Invoke(context.Context, string, any, any, ...grpc.CallOption) error {
	return cc.err
}

func (cc closedConn) NewStream(context.Context, *grpc.StreamDesc, string, ...grpc.CallOption) (grpc.ClientStream, error) {
	return nil, cc.err
}
