package test

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/types/known/emptypb"

	"github.com/weir-log/weir/api/hstreampb"
	"github.com/weir-log/weir/api/peerpb"
	"github.com/weir-log/weir/internal/etcdutil"
	"github.com/weir-log/weir/internal/nodetest"
)

// The cluster harness runs a real etcd (internal/cmd/testetcd) and several
// `weir server` processes registered in it, all on 127.0.0.1 with ports of
// their own, each in a directory that outlives kill -9 and restarts. The
// directories and the processes' logs are kept when a test fails, and the
// tail of every log is printed then.

// testetcdBinary is internal/cmd/testetcd, without -race: it is etcd, not
// weir's code, and the race detector would only slow the metadata path down.
func testetcdBinary(t *testing.T) string { return binary(t, "internal/cmd/testetcd", false) }

// keptDir makes a directory that is removed when the test passes and kept,
// with its path logged, when it fails, so the data and logs of a failed
// cluster test can be looked at.
func keptDir(t *testing.T, pattern string) string {
	t.Helper()
	dir, err := os.MkdirTemp("", pattern)
	require.NoError(t, err)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("kept %s: the data dirs and logs of the failed test", dir)
			return
		}
		os.RemoveAll(dir)
	})
	return dir
}

// process is a child process whose stdout and stderr go to a log file that
// every start appends to, so one file tells a node's whole story across
// kills and restarts.
type process struct {
	t       *testing.T
	name    string
	bin     string
	args    []string
	logPath string

	// Only the test goroutine touches these.
	cmd     *exec.Cmd
	waitc   chan error
	exitErr error // how the last run ended, once it has
	starts  int
}

func (p *process) start() {
	p.t.Helper()
	require.Nil(p.t, p.cmd, "%s is already running", p.name)
	f, err := os.OpenFile(p.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	require.NoError(p.t, err)
	p.starts++
	fmt.Fprintf(f, "==== harness: start %d of %s at %s: %s %s\n", p.starts, p.name,
		time.Now().Format(time.RFC3339Nano), filepath.Base(p.bin), strings.Join(p.args, " "))
	p.cmd = exec.Command(p.bin, p.args...)
	p.cmd.Stdout, p.cmd.Stderr = f, f
	err = p.cmd.Start()
	f.Close() // the child holds its own copy
	require.NoError(p.t, err, "starting %s", p.name)
	p.exitErr = nil
	p.waitc = make(chan error, 1)
	cmd, waitc := p.cmd, p.waitc
	go func() { waitc <- cmd.Wait() }()
}

// running reports whether the process runs, noting how it ended if it
// ended on its own.
func (p *process) running() bool {
	if p.cmd == nil {
		return false
	}
	select {
	case err := <-p.waitc:
		p.exitErr = err
		p.cmd = nil
		return false
	default:
		return true
	}
}

// kill sends SIGKILL: no shutdown code runs.
func (p *process) kill() {
	if p.cmd == nil {
		return
	}
	p.cmd.Process.Kill()
	p.exitErr = <-p.waitc
	p.cmd = nil
}

// stop sends SIGTERM and waits for a clean exit.
func (p *process) stop() {
	p.t.Helper()
	require.NotNil(p.t, p.cmd, "%s is not running", p.name)
	require.NoError(p.t, p.cmd.Process.Signal(syscall.SIGTERM))
	select {
	case err := <-p.waitc:
		p.cmd = nil
		p.exitErr = err
		require.NoError(p.t, err, "%s did not exit cleanly:\n%s", p.name, p.tail(40))
	case <-time.After(30 * time.Second):
		p.t.Fatalf("%s did not stop within 30s of SIGTERM:\n%s", p.name, p.tail(40))
	}
}

// tail returns the last n lines of the process's log.
func (p *process) tail(n int) string {
	b, err := os.ReadFile(p.logPath)
	if err != nil {
		return fmt.Sprintf("(no log: %v)", err)
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// logSince returns what the log holds after byte offset off.
func (p *process) logSince(off int64) string {
	f, err := os.Open(p.logPath)
	if err != nil {
		return ""
	}
	defer f.Close()
	if _, err := f.Seek(off, io.SeekStart); err != nil {
		return ""
	}
	b, _ := io.ReadAll(f)
	return string(b)
}

func (p *process) logSize() int64 {
	fi, err := os.Stat(p.logPath)
	if err != nil {
		return 0
	}
	return fi.Size()
}

// etcdProc is an etcd server process with fixed ports and data dir, so it
// can be stopped and started again under running nodes.
type etcdProc struct {
	process
	clientAddr, peerAddr string
}

func newEtcd(t *testing.T, root string) *etcdProc {
	e := &etcdProc{clientAddr: nodetest.FreeAddr(t), peerAddr: nodetest.FreeAddr(t)}
	e.process = process{t: t, name: "etcd", bin: testetcdBinary(t), logPath: filepath.Join(root, "etcd.log"),
		args: []string{"--data-dir", filepath.Join(root, "etcd"), "--client-addr", e.clientAddr, "--peer-addr", e.peerAddr}}
	return e
}

// start starts etcd and waits until it says it is ready.
func (e *etcdProc) start() {
	e.t.Helper()
	off := e.logSize()
	e.process.start()
	deadline := time.Now().Add(30 * time.Second)
	for !strings.Contains(e.logSince(off), "etcd ready ") {
		if !e.running() {
			e.t.Fatalf("etcd exited before it was ready: %v\n%s", e.exitErr, e.tail(40))
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("etcd was not ready within 30s:\n%s", e.tail(40))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// clusterOptions are the settings of a test cluster; zero fields take the
// defaults of newCluster.
type clusterOptions struct {
	nodes              int           // default 3
	bin                string        // the weir binary; default weirBinary (with -race)
	leaseTTL           time.Duration // etcd.lease-ttl; default 3s
	deadAfter          time.Duration // cluster.dead-after; default 5s
	metadataTimeout    time.Duration // cluster.metadata-timeout; default 2s
	checkpointInterval time.Duration // subscription.checkpoint-interval; default 100ms
	logLevel           string        // default info
	// wire, when set, runs once every node has its ports and before any
	// config is written: it may set each node's advertise, etcdEndpoint
	// and peerAddresses (to route links through proxies).
	wire func(c *testCluster)
}

// clusterNode is a `weir server` process of a test cluster. Its ports,
// data dir and gRPC connection stay the same across restarts; the
// connection reconnects by itself, so clients made once keep working after
// a restart.
type clusterNode struct {
	process
	id                           uint64
	dir                          string
	grpcAddr, mqttAddr, httpAddr string
	// Set by clusterOptions.wire, else empty: grpc.advertise (default
	// grpcAddr), the etcd endpoint (default the etcd's own address), and
	// cluster.peer-addresses.
	advertise, etcdEndpoint string
	peerAddresses           []string
	conn                    *grpc.ClientConn
	api                     hstreampb.HStreamApiClient
	peer                    peerpb.PeerClient
}

// testCluster is an etcd and the weir nodes registered in it.
type testCluster struct {
	t      *testing.T
	opts   clusterOptions
	root   string
	etcd   *etcdProc
	nodes  []*clusterNode // nodes[i].id == i+1
	prefix string

	etcdOnce sync.Once
	etcdCli  *clientv3.Client
}

// newCluster starts an etcd and opts.nodes weir nodes, and waits until every
// node is ready and lists all of them as Running.
func newCluster(t *testing.T, opts clusterOptions) *testCluster {
	t.Helper()
	if opts.nodes == 0 {
		opts.nodes = 3
	}
	if opts.bin == "" {
		opts.bin = weirBinary(t)
	}
	if opts.leaseTTL == 0 {
		opts.leaseTTL = 3 * time.Second
	}
	if opts.deadAfter == 0 {
		opts.deadAfter = 5 * time.Second
	}
	if opts.metadataTimeout == 0 {
		opts.metadataTimeout = 2 * time.Second
	}
	if opts.checkpointInterval == 0 {
		opts.checkpointInterval = 100 * time.Millisecond
	}
	if opts.logLevel == "" {
		opts.logLevel = "info"
	}
	c := &testCluster{t: t, opts: opts, root: keptDir(t, "weir-cluster-"), prefix: "/weir/"}
	c.etcd = newEtcd(t, c.root)
	t.Cleanup(c.cleanup)
	c.etcd.start()
	for i := range opts.nodes {
		c.nodes = append(c.nodes, c.newNode(uint64(i+1)))
	}
	if opts.wire != nil {
		opts.wire(c)
	}
	for _, n := range c.nodes {
		c.writeConfig(n)
		n.start()
	}
	for _, n := range c.nodes {
		c.waitReady(n, 90*time.Second)
	}
	c.waitStates(30*time.Second, c.nodes, func(id uint32, st hstreampb.NodeState, ok bool) bool {
		return ok && st == hstreampb.NodeState_Running
	}, "every node Running")
	return c
}

func (c *testCluster) newNode(id uint64) *clusterNode {
	t := c.t
	n := &clusterNode{id: id, dir: filepath.Join(c.root, fmt.Sprintf("node%d", id)),
		grpcAddr: nodetest.FreeAddr(t), mqttAddr: nodetest.FreeAddr(t), httpAddr: nodetest.FreeAddr(t)}
	require.NoError(t, os.MkdirAll(n.dir, 0o755))
	cfgPath := filepath.Join(n.dir, "weir.yaml")
	n.process = process{t: t, name: fmt.Sprintf("node %d", id), bin: c.opts.bin,
		logPath: filepath.Join(n.dir, "weir.log"), args: []string{"server", "--config", cfgPath}}
	conn, err := grpc.NewClient(n.grpcAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	require.NoError(t, err)
	n.conn, n.api, n.peer = conn, hstreampb.NewHStreamApiClient(conn), peerpb.NewPeerClient(conn)
	return n
}

// writeConfig writes the node's weir.yaml.
func (c *testCluster) writeConfig(n *clusterNode) {
	advertise := cmp.Or(n.advertise, n.grpcAddr)
	etcd := cmp.Or(n.etcdEndpoint, c.etcd.clientAddr)
	peers := ""
	if len(n.peerAddresses) > 0 {
		peers = "\n  peer-addresses: [" + strings.Join(n.peerAddresses, ", ") + "]"
	}
	cfg := fmt.Sprintf(`node-id: %d
data-dir: %s
grpc:
  listen: %s
  advertise: %s
mqtt:
  listen: %s
http:
  listen: %s
etcd:
  endpoints: [%s]
  prefix: %s
  lease-ttl: %s
cluster:
  dead-after: %s
  metadata-timeout: %s%s
subscription:
  checkpoint-interval: %s
stream:
  replication-factor: 3
log:
  level: %s
`, n.id, filepath.Join(n.dir, "data"), n.grpcAddr, advertise, n.mqttAddr, n.httpAddr, etcd, c.prefix,
		c.opts.leaseTTL, c.opts.deadAfter, c.opts.metadataTimeout, peers, c.opts.checkpointInterval, c.opts.logLevel)
	require.NoError(c.t, os.WriteFile(filepath.Join(n.dir, "weir.yaml"), []byte(cfg), 0o644))
}

// cleanup kills what still runs and, when the test failed, prints the tail
// of every log.
func (c *testCluster) cleanup() {
	for _, n := range c.nodes {
		n.kill()
		n.conn.Close()
	}
	if c.etcdCli != nil {
		c.etcdCli.Close()
	}
	c.etcd.kill()
	if !c.t.Failed() {
		return
	}
	for _, n := range c.nodes {
		c.t.Logf("---- last lines of %s (%s):\n%s", n.name, n.logPath, n.tail(60))
	}
	c.t.Logf("---- last lines of etcd (%s):\n%s", c.etcd.logPath, c.etcd.tail(20))
}

// node returns the node with an id.
func (c *testCluster) node(id uint64) *clusterNode {
	c.t.Helper()
	require.True(c.t, id >= 1 && int(id) <= len(c.nodes), "no node %d", id)
	return c.nodes[id-1]
}

// nodeAt returns the node serving gRPC at addr, or nil.
func (c *testCluster) nodeAt(addr string) *clusterNode {
	for _, n := range c.nodes {
		if n.grpcAddr == addr {
			return n
		}
	}
	return nil
}

// live returns the nodes whose process runs.
func (c *testCluster) live() []*clusterNode {
	var out []*clusterNode
	for _, n := range c.nodes {
		if n.running() {
			out = append(out, n)
		}
	}
	return out
}

// requireRunning fails the test if a process that should run has exited
// on its own (a crash).
func (c *testCluster) requireRunning(nodes ...*clusterNode) {
	c.t.Helper()
	for _, n := range nodes {
		if !n.running() {
			c.t.Fatalf("%s exited: %v\n%s", n.name, n.exitErr, n.tail(60))
		}
	}
}

// restart starts a stopped or killed node again on its data and ports and
// waits until it is ready.
func (c *testCluster) restart(n *clusterNode) {
	c.t.Helper()
	n.start()
	c.waitReady(n, 90*time.Second)
}

// waitReady polls the node's /readyz until it answers 200.
func (c *testCluster) waitReady(n *clusterNode, within time.Duration) {
	c.t.Helper()
	hc := &http.Client{Timeout: 2 * time.Second}
	deadline := time.Now().Add(within)
	last := ""
	for {
		resp, err := hc.Get("http://" + n.httpAddr + "/readyz")
		if err == nil {
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
			last = fmt.Sprintf("%d %s", resp.StatusCode, bytes.TrimSpace(body))
		} else {
			last = err.Error()
		}
		if !n.running() {
			c.t.Fatalf("%s exited before it was ready: %v\n%s", n.name, n.exitErr, n.tail(60))
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("%s was not ready within %s (last /readyz: %s):\n%s", n.name, within, last, n.tail(60))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// describe returns the node states a node reports in DescribeCluster, by
// node id.
func (c *testCluster) describe(n *clusterNode) (map[uint32]hstreampb.NodeState, *hstreampb.DescribeClusterResponse, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	resp, err := n.api.DescribeCluster(ctx, &emptypb.Empty{})
	if err != nil {
		return nil, nil, err
	}
	out := make(map[uint32]hstreampb.NodeState)
	for _, s := range resp.GetServerNodesStatus() {
		out[s.GetNode().GetId()] = s.GetState()
	}
	return out, resp, nil
}

// waitStates polls DescribeCluster on each of askers until, for every node
// of the cluster, ok(id, state, listed) holds.
func (c *testCluster) waitStates(within time.Duration, askers []*clusterNode, ok func(id uint32, st hstreampb.NodeState, listed bool) bool, what string) {
	c.t.Helper()
	deadline := time.Now().Add(within)
	for {
		var last string
		good := true
		for _, a := range askers {
			states, _, err := c.describe(a)
			if err != nil {
				good, last = false, fmt.Sprintf("%s: DescribeCluster: %v", a.name, err)
				break
			}
			for _, n := range c.nodes {
				st, listed := states[uint32(n.id)]
				if !ok(uint32(n.id), st, listed) {
					good, last = false, fmt.Sprintf("%s lists %v", a.name, states)
					break
				}
			}
			if !good {
				break
			}
		}
		if good {
			return
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("DescribeCluster did not show %s within %s: %s (etcd holds %s)", what, within, last, c.registered())
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// registered lists the node keys etcd holds, for failure messages.
func (c *testCluster) registered() string {
	if !c.etcd.running() {
		return "nothing: etcd is down"
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	var parts []string
	for _, kind := range []string{"nodes/", "members/"} {
		resp, err := c.etcdClient().Get(ctx, c.prefix+kind, clientv3.WithPrefix(), clientv3.WithKeysOnly())
		if err != nil {
			return err.Error()
		}
		keys := make([]string, len(resp.Kvs))
		for i, kv := range resp.Kvs {
			keys[i] = strings.TrimPrefix(string(kv.Key), c.prefix)
		}
		parts = append(parts, fmt.Sprintf("%v", keys))
	}
	return strings.Join(parts, " and ")
}

// createStream creates a stream through the first live node and returns
// its shards in hash-range order.
func (c *testCluster) createStream(name string, shards, rf uint32) []*hstreampb.Shard {
	c.t.Helper()
	n := c.live()[0]
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	_, err := n.api.CreateStream(ctx, &hstreampb.Stream{StreamName: name, ShardCount: shards, ReplicationFactor: rf, BacklogDuration: 3600})
	require.NoError(c.t, err, "CreateStream %s", name)
	resp, err := n.api.ListShards(ctx, &hstreampb.ListShardsRequest{StreamName: name})
	require.NoError(c.t, err)
	require.Len(c.t, resp.GetShards(), int(shards))
	return resp.GetShards()
}

// etcdClient is a client of the test's etcd, for reading weir's metadata
// straight from it.
func (c *testCluster) etcdClient() *clientv3.Client {
	c.t.Helper()
	c.etcdOnce.Do(func() {
		// A short reconnection back-off: the outage test restarts etcd.
		cli, err := etcdutil.Dial([]string{c.etcd.clientAddr}, 5*time.Second)
		require.NoError(c.t, err)
		c.etcdCli = cli
	})
	return c.etcdCli
}

// shardMeta is cluster.ShardMeta as stored in etcd (only the fields the
// tests look at).
type shardMeta struct {
	ID       uint64   `json:"id"`
	Stream   string   `json:"stream"`
	Epoch    uint64   `json:"epoch"`
	Replicas []uint64 `json:"replicas"`
}

// shardMetas reads the shards of a stream from etcd, by shard id.
func (c *testCluster) shardMetas(stream string) (map[uint64]shardMeta, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	resp, err := c.etcdClient().Get(ctx, c.prefix+"shards/", clientv3.WithPrefix())
	if err != nil {
		return nil, err
	}
	out := make(map[uint64]shardMeta)
	for _, kv := range resp.Kvs {
		var m shardMeta
		if err := json.Unmarshal(kv.Value, &m); err != nil {
			return nil, fmt.Errorf("%s: %w", kv.Key, err)
		}
		if m.Stream == stream {
			out[m.ID] = m
		}
	}
	return out, nil
}

func (c *testCluster) requireShardMetas(stream string) map[uint64]shardMeta {
	c.t.Helper()
	var metas map[uint64]shardMeta
	var err error
	for range 5 { // etcd may have just come back
		if metas, err = c.shardMetas(stream); err == nil {
			break
		}
		time.Sleep(time.Second)
	}
	require.NoError(c.t, err)
	require.NotEmpty(c.t, metas, "no shard of stream %s in etcd", stream)
	return metas
}

func sortedIDs[V any](m map[uint64]V) []uint64 {
	ids := make([]uint64, 0, len(m))
	for id := range m {
		ids = append(ids, id)
	}
	sort.Slice(ids, func(i, j int) bool { return ids[i] < ids[j] })
	return ids
}

// shardState asks a node about its replica of a shard.
func shardState(n *clusterNode, shard uint64) (*peerpb.ShardStateResponse, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	return n.peer.ShardState(ctx, &peerpb.ShardStateRequest{ShardId: shard})
}

// waitLeaders waits until every shard of a stream has a leader that all its
// live replicas agree on and that runs, and returns the leaders by shard.
func (c *testCluster) waitLeaders(stream string, within time.Duration) map[uint64]*clusterNode {
	c.t.Helper()
	deadline := time.Now().Add(within)
	for {
		leaders, why := c.leaders(stream)
		if why == "" {
			return leaders
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("the shards of %s had no agreed leader within %s: %s", stream, within, why)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// leaders returns the leader of every shard of a stream, or why it cannot.
func (c *testCluster) leaders(stream string) (map[uint64]*clusterNode, string) {
	metas, err := c.shardMetas(stream)
	if err != nil {
		return nil, err.Error()
	}
	if len(metas) == 0 {
		return nil, "no shard in etcd"
	}
	out := make(map[uint64]*clusterNode)
	for _, id := range sortedIDs(metas) {
		var leader uint64
		for _, r := range metas[id].Replicas {
			n := c.node(r)
			if !n.running() {
				continue
			}
			st, err := shardState(n, id)
			if err != nil {
				return nil, fmt.Sprintf("shard %d: %s: ShardState: %v", id, n.name, err)
			}
			if st.GetLeader() == 0 {
				return nil, fmt.Sprintf("shard %d: %s knows no leader", id, n.name)
			}
			if leader != 0 && st.GetLeader() != leader {
				return nil, fmt.Sprintf("shard %d: replicas disagree on the leader (%d, %d)", id, leader, st.GetLeader())
			}
			leader = st.GetLeader()
		}
		if leader == 0 {
			return nil, fmt.Sprintf("shard %d: no live replica among %v", id, metas[id].Replicas)
		}
		if !c.node(leader).running() {
			return nil, fmt.Sprintf("shard %d: the leader %d is not running", id, leader)
		}
		out[id] = c.node(leader)
	}
	return out, ""
}

// entries reads a replica's committed entries of a shard from index from
// through index to, with the Peer service.
func entries(n *clusterNode, shard, from, to uint64) ([]*peerpb.Entry, error) {
	var out []*peerpb.Entry
	for from <= to {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		resp, err := n.peer.Read(ctx, &peerpb.ReadRequest{ShardId: shard, From: from, MaxEntries: 1000, MaxBytes: 8 << 20})
		cancel()
		if err != nil {
			return nil, fmt.Errorf("%s: Read shard %d from %d: %w", n.name, shard, from, err)
		}
		got := resp.GetEntries()
		if len(got) == 0 {
			break
		}
		for _, e := range got {
			if e.GetIndex() > to {
				return out, nil
			}
			out = append(out, e)
		}
		from = got[len(got)-1].GetIndex() + 1
	}
	return out, nil
}

// awaitOneCommit polls ShardState on every replica of a shard until all of
// them answer with ref's commit index, or until within has passed. It returns the
// last states read and, when the replicas did not converge, why.
func (c *testCluster) awaitOneCommit(shard uint64, replicas []uint64, ref uint64, within time.Duration) (map[uint64]*peerpb.ShardStateResponse, string) {
	deadline := time.Now().Add(within)
	for {
		states := make(map[uint64]*peerpb.ShardStateResponse)
		why := ""
		for _, r := range replicas {
			st, err := shardState(c.node(r), shard)
			if err != nil {
				why = fmt.Sprintf("node %d: %v", r, err)
				break
			}
			states[r] = st
		}
		if why == "" {
			want := states[ref].GetCommitted()
			for r, st := range states {
				if st.GetCommitted() != want {
					why = fmt.Sprintf("node %d has committed %d, node %d has %d", r, st.GetCommitted(), ref, want)
					break
				}
			}
		}
		if why == "" || time.Now().After(deadline) {
			return states, why
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// requireReplicasMatch waits until the replicas of every shard of a stream
// (as etcd lists them; all must run) have the same committed index, then
// checks that each holds the leader's entries over the range all of them
// still hold: same indexes, same append times, same bytes. It returns the
// entries compared, over all shards.
func (c *testCluster) requireReplicasMatch(stream string, within time.Duration) int {
	c.t.Helper()
	leaders := c.waitLeaders(stream, within)
	metas := c.requireShardMetas(stream)
	compared := 0
	for _, id := range sortedIDs(metas) {
		m := metas[id]
		leader := leaders[id]
		states, why := c.awaitOneCommit(id, m.Replicas, leader.id, within)
		if why != "" {
			c.t.Fatalf("shard %d: the replicas %v did not converge within %s: %s", id, m.Replicas, within, why)
		}
		committed := states[leader.id].GetCommitted()
		first := uint64(1)
		for _, st := range states {
			first = max(first, st.GetFirst())
		}
		want, err := entries(leader, id, first, committed)
		require.NoError(c.t, err)
		for _, r := range m.Replicas {
			if r == leader.id {
				continue
			}
			got, err := entries(c.node(r), id, first, committed)
			require.NoError(c.t, err)
			require.Equal(c.t, len(want), len(got), "shard %d: node %d holds %d entries in [%d, %d], the leader %d holds %d",
				id, r, len(got), first, committed, leader.id, len(want))
			for i := range want {
				w, g := want[i], got[i]
				require.True(c.t, w.GetIndex() == g.GetIndex() && w.GetAppendTimeMs() == g.GetAppendTimeMs() && bytes.Equal(w.GetBatch(), g.GetBatch()),
					"shard %d: entry %d differs between the leader %d (index %d, %d bytes) and node %d (index %d, %d bytes)",
					id, i, leader.id, w.GetIndex(), len(w.GetBatch()), r, g.GetIndex(), len(g.GetBatch()))
			}
		}
		c.t.Logf("shard %d: replicas %v hold the same %d entries in [%d, %d] (leader %d)", id, m.Replicas, len(want), first, committed, leader.id)
		compared += len(want)
	}
	return compared
}

// router appends to shards the way a client does: it asks any node which
// node leads a shard (LookupShard), sends the append there, and on an
// error looks up again and retries the same batch, so that a key's batches
// are acknowledged in order. It is safe for concurrent use; it only reads
// what never changes on the cluster's nodes (addresses and connections).
type router struct {
	nodes []*clusterNode

	mu     sync.Mutex
	leader map[uint64]*clusterNode // guarded by mu: by shard id
}

func newRouter(c *testCluster) *router {
	return &router{nodes: c.nodes, leader: make(map[uint64]*clusterNode)}
}

// lookup asks the nodes in turn, from a random one, which node leads the
// shard.
func (r *router) lookup(ctx context.Context, shard uint64) (*clusterNode, error) {
	var lastErr error
	off := rand.IntN(len(r.nodes))
	for i := range r.nodes {
		n := r.nodes[(off+i)%len(r.nodes)]
		lctx, cancel := context.WithTimeout(ctx, time.Second)
		resp, err := n.api.LookupShard(lctx, &hstreampb.LookupShardRequest{ShardId: shard})
		cancel()
		if err != nil {
			lastErr = err
			continue
		}
		sn := resp.GetServerNode()
		addr := net.JoinHostPort(sn.GetHost(), strconv.FormatUint(uint64(sn.GetPort()), 10))
		for _, m := range r.nodes {
			if m.grpcAddr == addr {
				return m, nil
			}
		}
		return nil, fmt.Errorf("LookupShard(%d) from %s answered %s, which is no node of the cluster", shard, n.name, addr)
	}
	return nil, fmt.Errorf("LookupShard(%d): no node answered: %w", shard, lastErr)
}

// append appends one batch to a shard, retrying on any error with a fresh
// lookup until ctx ends. attempts counts the Append calls made.
func (r *router) append(ctx context.Context, stream string, shard uint64, batch *hstreampb.BatchedRecord) (resp *hstreampb.AppendResponse, attempts int, err error) {
	for {
		r.mu.Lock()
		n := r.leader[shard]
		r.mu.Unlock()
		if n == nil {
			n, err = r.lookup(ctx, shard)
			if err == nil {
				r.mu.Lock()
				r.leader[shard] = n
				r.mu.Unlock()
			}
		}
		if n != nil {
			actx, cancel := context.WithTimeout(ctx, 5*time.Second)
			attempts++
			resp, err = n.api.Append(actx, &hstreampb.AppendRequest{StreamName: stream, ShardId: shard, Records: batch})
			cancel()
			if err == nil {
				return resp, attempts, nil
			}
			r.mu.Lock()
			if r.leader[shard] == n {
				delete(r.leader, shard)
			}
			r.mu.Unlock()
		}
		select {
		case <-ctx.Done():
			return nil, attempts, fmt.Errorf("%w (last error: %v)", ctx.Err(), err)
		case <-time.After(100 * time.Millisecond):
		}
	}
}
