package test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/weir-log/weir/api/hstreampb"
	"github.com/weir-log/weir/internal/nodetest"
)

// builds caches the binaries built for this test binary, by package and
// flags: each is built once, whichever tests ask.
var builds sync.Map // buildKey → *build

type buildKey struct {
	pkg  string
	race bool
}

type build struct {
	once sync.Once
	path string
	err  error
}

// binary builds a main package of this module once for the whole test
// binary, with the race detector if race is set, and returns its path.
func binary(t *testing.T, pkg string, race bool) string {
	t.Helper()
	v, _ := builds.LoadOrStore(buildKey{pkg, race}, &build{})
	b := v.(*build)
	b.once.Do(func() {
		dir, err := os.MkdirTemp("", "weir-bin-")
		if err != nil {
			b.err = err
			return
		}
		b.path = filepath.Join(dir, filepath.Base(pkg))
		args := []string{"build", "-o", b.path}
		if race {
			args = append(args, "-race")
		}
		out, err := exec.Command("go", append(args, "github.com/weir-log/weir/"+pkg)...).CombinedOutput()
		if err != nil {
			b.err = fmt.Errorf("go build %s: %v\n%s", pkg, err, out)
		}
	})
	require.NoError(t, b.err)
	return b.path
}

// weirBinary is cmd/weir with the race detector, as the tests run weir.
func weirBinary(t *testing.T) string { return binary(t, "cmd/weir", true) }

// proc is a `weir server` child process with fixed ports and data dir, so it
// can be killed and started again on the same state.
type proc struct {
	t     *testing.T
	args  []string
	addr  string
	cmd   *exec.Cmd
	log   *nodetest.SyncBuffer
	waitc chan error
}

func newProc(t *testing.T) *proc {
	addr := nodetest.FreeAddr(t)
	data := t.TempDir()
	return &proc{t: t, addr: addr, args: []string{"server",
		"--data-dir", data,
		"--grpc-listen", addr,
		"--http-listen", nodetest.FreeAddr(t),
		"--mqtt-listen", "",
		"--etcd-embedded-client-listen", nodetest.FreeAddr(t),
		"--etcd-embedded-peer-listen", nodetest.FreeAddr(t),
		"--etcd-lease-ttl", "3s",
		"--log-level", "info",
	}}
}

func (p *proc) start() {
	p.t.Helper()
	p.log = new(nodetest.SyncBuffer)
	p.cmd = exec.Command(weirBinary(p.t), p.args...)
	p.cmd.Stdout, p.cmd.Stderr = p.log, p.log
	require.NoError(p.t, p.cmd.Start())
	p.waitc = make(chan error, 1)
	go func() { p.waitc <- p.cmd.Wait() }()
	p.t.Cleanup(func() { p.kill() })
}

// client waits until the node answers Echo and returns a client for it.
func (p *proc) client() hstreampb.HStreamApiClient {
	p.t.Helper()
	conn, err := grpc.NewClient(p.addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	require.NoError(p.t, err)
	p.t.Cleanup(func() { conn.Close() })
	api := hstreampb.NewHStreamApiClient(conn)
	deadline := time.Now().Add(90 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		_, err := api.Echo(ctx, &hstreampb.EchoRequest{Msg: "hello"})
		cancel()
		if err == nil {
			return api
		}
		select {
		case werr := <-p.waitc:
			p.t.Fatalf("weir server exited before serving: %v\n%s", werr, p.log)
		default:
		}
		if time.Now().After(deadline) {
			p.t.Fatalf("weir server did not answer within 90s: %v\n%s", err, p.log)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// kill sends SIGKILL: no shutdown code runs.
func (p *proc) kill() {
	if p.cmd == nil || p.cmd.ProcessState != nil {
		return
	}
	p.cmd.Process.Kill()
	<-p.waitc
	p.cmd = nil
}

// stop sends SIGTERM and waits for a clean exit.
func (p *proc) stop() {
	p.t.Helper()
	require.NoError(p.t, p.cmd.Process.Signal(syscall.SIGTERM))
	select {
	case err := <-p.waitc:
		require.NoError(p.t, err, "weir server did not exit cleanly:\n%s", p.log)
	case <-time.After(30 * time.Second):
		p.t.Fatalf("weir server did not stop within 30s of SIGTERM:\n%s", p.log)
	}
	p.cmd = nil
}
