package client

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strconv"
	"time"

	"github.com/weir-log/weir/api/hstreampb"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/emptypb"
)

// Routing and retries.
//
// Every call names a target: any node (metadata calls), or the node serving
// a shard, a subscription or a shard reader, found with LookupShard,
// LookupSubscription or LookupShardReader (asked of any node) and cached.
// do runs a call against its target and classifies a failure:
//
//	Unavailable          the node is down or shutting down: forget the
//	                     lookup, prefer the next node of the server list,
//	                     mark the list stale, back off, try again
//	FailedPrecondition   WrongServer (800): the resource moved; forget the
//	  + WrongServer      lookup, look it up again and resend (no back-off
//	                     for the first resend)
//	anything else        returned as received
//
// Attempts are bounded (WithMaxAttempts) and back-off grows exponentially
// with jitter up to a cap (WithRetryBackoff). A call retried after
// Unavailable may have been carried out already (an Append whose answer
// was lost), so retries give at-least-once, never at-most-once. They never
// reorder one key's records: a caller sends one request per shard at a
// time and retries it before it sends the next.
//
// The server list comes from DescribeCluster; it is refreshed when it is
// older than serverListTTL or after a node failed, on the next call to any
// node. A server that does not implement a lookup is taken to serve
// everything itself.

// serverListTTL is how long a server list is used before it is refreshed
// (the HStreamDB Go client's UpdateServerInfoDuration).
const serverListTTL = 30 * time.Second

type targetKind uint8

const (
	kindAny targetKind = iota
	kindShard
	kindSubscription
	kindReader
)

// target names what a call is about, and so which node it goes to.
type target struct {
	kind targetKind
	id   string
}

func anyNode() target                 { return target{kind: kindAny} }
func shardOf(id uint64) target        { return target{kindShard, strconv.FormatUint(id, 10)} }
func subscriptionOf(id string) target { return target{kindSubscription, id} }
func readerOf(id string) target       { return target{kindReader, id} }

func (t target) String() string {
	switch t.kind {
	case kindShard:
		return "shard " + t.id
	case kindSubscription:
		return "subscription " + strconv.Quote(t.id)
	case kindReader:
		return "reader " + strconv.Quote(t.id)
	}
	return "any node"
}

// do runs call against the node serving t, retrying as the comment at the
// top of this file says. Each attempt (its lookup included) gets the
// client's attempt timeout. call may run more than once; it gets the API
// of the node to use.
func (c *Client) do(ctx context.Context, t target, call func(ctx context.Context, api hstreampb.HStreamApiClient) error) error {
	return c.try(ctx, t, retryable, c.cfg.attemptTimeout, call)
}

// try is do with the choice of errors that are tried again (retryable, or
// wrongServer alone for a call that must not be sent twice once the server
// may have carried it out) and of the attempt timeout (0: none). An attempt
// that times out while ctx is still live counts as Unavailable: the node
// does not answer.
func (c *Client) try(ctx context.Context, t target, again func(error) bool, timeout time.Duration, call func(ctx context.Context, api hstreampb.HStreamApiClient) error) error {
	unavailableBefore := false // an earlier attempt may have been carried out
	for attempt := 1; ; attempt++ {
		addr, err := c.attempt(ctx, t, timeout, call)
		if err == nil {
			return nil
		}
		if retryable(err) {
			c.failed(t, addr, err) // even on the last attempt: the next call must not trust the route
		}
		if !again(err) || attempt >= c.cfg.maxAttempts || ctx.Err() != nil {
			if code := status.Code(err); unavailableBefore && (code == codes.AlreadyExists || code == codes.NotFound) {
				// A create that answers AlreadyExists, or a delete NotFound,
				// may be this call's own earlier attempt, whose answer was lost.
				err = fmt.Errorf("%w (an earlier attempt of this call failed with Unavailable and may have been carried out)", err)
			}
			return err
		}
		unavailableBefore = unavailableBefore || status.Code(err) == codes.Unavailable
		wait := c.backoff(attempt)
		if wrongServer(err) && attempt == 1 {
			wait = 0 // the lookup is stale; resend at once
		}
		c.logger.Debug("retrying", "target", t.String(), "node", addr, "attempt", attempt, "wait", wait, "err", err)
		if serr := sleep(ctx, wait); serr != nil {
			return fmt.Errorf("%w (while retrying after: %w)", serr, err)
		}
	}
}

// attempt routes and runs call once, within timeout (0: none), and returns
// the node it went to (or asked, for a failed lookup).
func (c *Client) attempt(ctx context.Context, t target, timeout time.Duration, call func(ctx context.Context, api hstreampb.HStreamApiClient) error) (string, error) {
	actx := ctx
	if timeout > 0 {
		var cancel context.CancelFunc
		actx, cancel = context.WithTimeout(ctx, timeout)
		defer cancel()
	}
	addr, err := c.route(actx, t)
	if err == nil {
		var api hstreampb.HStreamApiClient
		if api, err = c.apiAt(addr); err == nil {
			err = call(actx, api)
		}
	}
	if err != nil && ctx.Err() == nil && errors.Is(actx.Err(), context.DeadlineExceeded) {
		err = status.Errorf(codes.Unavailable, "client: %s (%s) did not answer within %s (WithAttemptTimeout): %v", addr, t, timeout, err)
	}
	return addr, err
}

// retryable reports whether a call that failed with err may succeed on
// another try, on another node or after a fresh lookup.
func retryable(err error) bool {
	return status.Code(err) == codes.Unavailable || wrongServer(err)
}

// wrongServer reports whether err is HStreamDB's WrongServer: the node no
// longer serves the resource.
func wrongServer(err error) bool {
	if status.Code(err) != codes.FailedPrecondition {
		return false
	}
	code, ok := ErrorCode(err)
	return ok && code == hstreampb.ErrorCode_WrongServer
}

// backoff returns how long to wait after the given failed attempt (1 for
// the first): the base doubled per attempt up to the cap, with the upper
// half jittered so clients that failed together do not retry together.
func (c *Client) backoff(attempt int) time.Duration {
	d := c.cfg.backoffBase
	for i := 1; i < attempt && d < c.cfg.backoffMax; i++ {
		if d > c.cfg.backoffMax/2 {
			d = c.cfg.backoffMax // doubling would pass the cap, or overflow
			break
		}
		d *= 2
	}
	return d/2 + rand.N(d/2+1)
}

// sleep waits d or until ctx is done.
func sleep(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// route returns the address of the node serving t: for any node the
// preferred one (refreshing a stale server list first), else the cached
// lookup or a new one. When the lookup fails, it returns the address of the
// node asked with the error, for c.failed.
func (c *Client) route(ctx context.Context, t target) (string, error) {
	if t.kind == kindAny {
		c.refreshNodesIfStale(ctx)
		return c.anyNode(), nil
	}
	c.mu.Lock()
	addr, ok := c.owners[t]
	c.mu.Unlock()
	if ok {
		return addr, nil
	}
	addr, err := c.lookup(ctx, t)
	if err != nil {
		return addr, err
	}
	c.mu.Lock()
	c.owners[t] = addr
	c.mu.Unlock()
	return addr, nil
}

// lookup asks any node which node serves t. A server without the lookup
// RPC serves everything itself. On error it returns the node it asked.
func (c *Client) lookup(ctx context.Context, t target) (string, error) {
	c.refreshNodesIfStale(ctx)
	addr := c.anyNode()
	api, err := c.apiAt(addr)
	if err != nil {
		return addr, err
	}
	var node *hstreampb.ServerNode
	switch t.kind {
	case kindShard:
		id, _ := strconv.ParseUint(t.id, 10, 64)
		var resp *hstreampb.LookupShardResponse
		resp, err = api.LookupShard(ctx, &hstreampb.LookupShardRequest{ShardId: id})
		node = resp.GetServerNode()
	case kindSubscription:
		var resp *hstreampb.LookupSubscriptionResponse
		resp, err = api.LookupSubscription(ctx, &hstreampb.LookupSubscriptionRequest{SubscriptionId: t.id})
		node = resp.GetServerNode()
	case kindReader:
		var resp *hstreampb.LookupShardReaderResponse
		resp, err = api.LookupShardReader(ctx, &hstreampb.LookupShardReaderRequest{ReaderId: t.id})
		node = resp.GetServerNode()
	}
	switch {
	case status.Code(err) == codes.Unimplemented:
		return addr, nil
	case err != nil:
		return addr, err
	case node == nil:
		return addr, fmt.Errorf("%w: lookup of %s at %s: no server node in the answer", ErrBadResponse, t, addr)
	}
	nodes := serverList(&hstreampb.DescribeClusterResponse{ServerNodes: []*hstreampb.ServerNode{node}}, addr)
	return nodes[0], nil
}

// failed records that a call for t to addr failed with a retryable err:
// the lookup of t is forgotten, and when the node is unavailable so is
// every lookup that named it, the next node of the server list becomes the
// preferred one, and the list is refreshed before the next call to any
// node.
func (c *Client) failed(t target, addr string, err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if t.kind != kindAny {
		delete(c.owners, t)
	}
	if status.Code(err) != codes.Unavailable {
		return
	}
	for tt, a := range c.owners {
		if a == addr {
			delete(c.owners, tt)
		}
	}
	if len(c.nodes) > 0 && c.nodes[c.preferred] == addr {
		c.preferred = (c.preferred + 1) % len(c.nodes)
	}
	c.stale = true
}

// forget drops the cached lookup of t, once t is gone or not needed again.
func (c *Client) forget(t target) {
	c.mu.Lock()
	delete(c.owners, t)
	c.mu.Unlock()
}

// anyNode returns the preferred node of the server list.
func (c *Client) anyNode() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.nodes[c.preferred]
}

// refreshRetryAfter spaces refreshes of a stale server list that failed:
// during an outage every call would otherwise ask every node first.
const refreshRetryAfter = time.Second

// refreshNodesIfStale replaces the server list by a fresh DescribeCluster
// when it is older than serverListTTL or a node failed since, asking the
// listed nodes and then Dial's seeds (a client whose nodes advertise
// addresses it cannot reach falls back to the seeds). One refresh runs at a
// time, a failed one is not tried again for refreshRetryAfter, and each
// node gets the dial timeout. Failures keep the old list: the call that
// follows reports what is wrong.
func (c *Client) refreshNodesIfStale(ctx context.Context) {
	c.mu.Lock()
	due := (c.stale || time.Since(c.refreshedAt) >= serverListTTL) &&
		time.Since(c.refreshTriedAt) >= refreshRetryAfter && !c.refreshing
	if !due {
		c.mu.Unlock()
		return
	}
	c.refreshing = true
	c.refreshTriedAt = time.Now()
	var ask []string
	for i := range c.nodes {
		ask = append(ask, c.nodes[(c.preferred+i)%len(c.nodes)])
	}
	for _, seed := range c.seeds {
		if !slices.Contains(ask, seed) {
			ask = append(ask, seed)
		}
	}
	c.mu.Unlock()
	defer func() {
		c.mu.Lock()
		c.refreshing = false
		c.mu.Unlock()
	}()

	for _, addr := range ask {
		nodes, err := c.describe(ctx, addr, false)
		if err == nil {
			c.setNodes(nodes, addr)
			return
		}
		c.logger.Debug("server list refresh failed", "node", addr, "err", err)
		if ctx.Err() != nil {
			return
		}
	}
}

// describe asks addr for the cluster's nodes within the dial timeout (and
// ctx). With waitReady it rides out a node that is still starting. A
// server without DescribeCluster must answer Echo; it returns no nodes
// then.
func (c *Client) describe(ctx context.Context, addr string, waitReady bool) ([]string, error) {
	api, err := c.apiAt(addr)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, c.cfg.dialTimeout)
	defer cancel()
	resp, err := api.DescribeCluster(ctx, &emptypb.Empty{}, grpc.WaitForReady(waitReady))
	if status.Code(err) == codes.Unimplemented {
		const hello = "hello"
		var echo *hstreampb.EchoResponse
		echo, err = api.Echo(ctx, &hstreampb.EchoRequest{Msg: hello}, grpc.WaitForReady(waitReady))
		if err == nil && echo.GetMsg() != hello {
			return nil, fmt.Errorf("%s: %w: Echo(%q) answered %q", addr, ErrBadResponse, hello, echo.GetMsg())
		}
	}
	if status.Code(err) == codes.DeadlineExceeded && ctx.Err() != nil {
		return nil, fmt.Errorf("%s: no answer within %s: %w", addr, c.cfg.dialTimeout, err)
	}
	if err != nil {
		return nil, fmt.Errorf("%s: %w", addr, err)
	}
	return serverList(resp, addr), nil
}

// setNodes installs a new server list (none: keep the current one) and
// prefers the node that gave it, if it is on it.
func (c *Client) setNodes(nodes []string, from string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.refreshedAt = time.Now()
	c.stale = false
	if len(nodes) > 0 && !slices.Equal(nodes, c.nodes) {
		c.logger.Debug("server list", "nodes", nodes)
		c.nodes = nodes
	}
	c.preferred = max(slices.Index(c.nodes, from), 0)
}

// apiAt returns the API of the node at addr, connecting on first use. The
// connection reconnects by itself; it is closed with the client.
func (c *Client) apiAt(addr string) (hstreampb.HStreamApiClient, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil, status.Error(codes.Canceled, "client: closed")
	}
	conn := c.conns[addr]
	if conn == nil {
		var err error
		if conn, err = grpc.NewClient(addr, c.dialOpts...); err != nil {
			return nil, fmt.Errorf("client: connect to %s: %w", addr, err)
		}
		c.conns[addr] = conn
	}
	return hstreampb.NewHStreamApiClient(conn), nil
}

// call runs one unary RPC through do: rpc is the method of
// hstreampb.HStreamApiClient, as in
//
//	call(ctx, c, anyNode(), hstreampb.HStreamApiClient.GetStream, req)
func call[Req, Resp any](ctx context.Context, c *Client, t target, rpc func(hstreampb.HStreamApiClient, context.Context, Req, ...grpc.CallOption) (Resp, error), req Req) (Resp, error) {
	var resp Resp
	err := c.do(ctx, t, func(ctx context.Context, api hstreampb.HStreamApiClient) error {
		var err error
		resp, err = rpc(api, ctx, req)
		return err
	})
	return resp, err
}

// apiFor returns the API of the node serving t and its address, for a
// streaming call the caller drives itself. A caller whose stream (or
// lookup: addr is then the node asked) fails with a retryable error
// reports it with c.failed(t, addr, err).
func (c *Client) apiFor(ctx context.Context, t target) (hstreampb.HStreamApiClient, string, error) {
	addr, err := c.route(ctx, t)
	if err != nil {
		return nil, addr, err
	}
	api, err := c.apiAt(addr)
	return api, addr, err
}
