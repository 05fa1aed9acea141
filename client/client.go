package client

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"

	"github.com/weir-log/weir/api/hstreampb"
	"github.com/weir-log/weir/api/wire"
	"google.golang.org/grpc"
)

// maxMessageBytes bounds one gRPC message either way. Read responses carry
// about 1 MiB of batches, but a single batch may be as large as the server's
// store.max-batch-size.
const maxMessageBytes = 256 << 20

// Client talks to one weir (or HStreamDB) server over one gRPC connection.
// It is safe for concurrent use. Close it when done.
type Client struct {
	addr   string
	conn   *grpc.ClientConn
	api    hstreampb.HStreamApiClient
	logger *slog.Logger

	closeOnce sync.Once
	closeErr  error

	// mu guards shardMaps, the per-stream routing tables Append uses.
	mu        sync.Mutex
	shardMaps map[string]*wire.ShardMap
}

// Dial connects to the server at addr ("host:port"; a bare host gets port
// 6570) and checks that it answers an Echo within the dial timeout (see
// WithDialTimeout) and ctx. The connection is plaintext HTTP/2 (h2c).
func Dial(ctx context.Context, addr string, opts ...Option) (*Client, error) {
	cfg := defaultClientConfig()
	for _, o := range opts {
		o.applyClient(&cfg)
	}
	target, err := normalizeAddr(addr)
	if err != nil {
		return nil, err
	}
	conn, err := grpc.NewClient(target, grpc.WithTransportCredentials(cfg.creds),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(maxMessageBytes), grpc.MaxCallSendMsgSize(maxMessageBytes)))
	if err != nil {
		return nil, fmt.Errorf("client: dial %s: %w", target, err)
	}
	c := &Client{
		addr:      target,
		conn:      conn,
		api:       hstreampb.NewHStreamApiClient(conn),
		logger:    cfg.logger.With("server", target),
		shardMaps: make(map[string]*wire.ShardMap),
	}

	// Echo with WaitForReady rides out a server that is still starting;
	// when the deadline passes, gRPC's error carries the last connection
	// error ("connection refused"), which is what a user needs to see.
	dctx, cancel := context.WithTimeout(ctx, cfg.dialTimeout)
	defer cancel()
	const hello = "hello"
	resp, err := c.api.Echo(dctx, &hstreampb.EchoRequest{Msg: hello}, grpc.WaitForReady(true))
	if err != nil {
		_ = conn.Close()
		return nil, fmt.Errorf("client: dial %s: no answer within %s: %w", target, cfg.dialTimeout, err)
	}
	if resp.GetMsg() != hello {
		_ = conn.Close()
		return nil, fmt.Errorf("%w: dial %s: Echo(%q) answered %q", ErrBadResponse, target, hello, resp.GetMsg())
	}
	return c, nil
}

// normalizeAddr checks addr and adds DefaultPort to a bare host.
func normalizeAddr(addr string) (string, error) {
	if addr == "" {
		return "", fmt.Errorf("%w: empty server address", ErrInvalidArgument)
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

// Addr returns the address the client is connected to, with the port.
func (c *Client) Addr() string { return c.addr }

// API returns the raw generated client on the same connection, for RPCs this
// package does not wrap.
func (c *Client) API() hstreampb.HStreamApiClient { return c.api }

// Close closes the connection; calls in flight fail with codes.Canceled.
// Close is idempotent.
func (c *Client) Close() error {
	c.closeOnce.Do(func() { c.closeErr = c.conn.Close() })
	return c.closeErr
}
