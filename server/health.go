package server

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
)

const (
	// readyTimeout bounds the etcd round trip of one /readyz.
	readyTimeout = time.Second
	// etcdGrace is how long the etcd check must fail, every time, before
	// /readyz says so: an etcd leader election (a second or two) must not
	// take every node out of its load balancer at once.
	etcdGrace = 3 * time.Second
)

// readiness serves /readyz: 200 "ready" once Start has finished (every
// listener is up), while etcd answers and the node serves its shards
// (cluster.Node.Ready), else 503 with one line per thing not ready.
// /healthz only says the process is up; /readyz says whether it can take
// writes.
//
// The etcd check is a serializable read (the member the client talks to
// answers from its own copy, no quorum round trip): it tells whether etcd
// is reachable, and stays cheap and up through an etcd leader election. It
// counts as failed only once it has failed on every /readyz for at least
// etcdGrace.
//
// It holds its own copies of what it checks: Close clears the Server's
// fields.
type readiness struct {
	started *atomic.Bool                    // set at the end of Start, cleared by Close
	etcd    func(ctx context.Context) error // the etcd read
	node    func() error                    // cluster.Node.Ready
	now     func() time.Time

	mu           sync.Mutex
	lastOK       time.Time // the last etcd check that succeeded
	failingSince time.Time // the first failed check since lastOK; zero while it succeeds
}

func newReadiness(started *atomic.Bool, cli *clientv3.Client, nodeReady func() error) *readiness {
	return &readiness{
		started: started,
		etcd: func(ctx context.Context) error {
			// Permission denied is an answer.
			if _, err := cli.Get(ctx, "health", clientv3.WithSerializable()); err != nil && !errors.Is(err, rpctypes.ErrPermissionDenied) {
				return err
			}
			return nil
		},
		node: nodeReady,
		now:  time.Now,
	}
}

// etcdProblem runs the etcd check and says what is wrong, if it has been
// wrong for etcdGrace.
func (r *readiness) etcdProblem(ctx context.Context) string {
	ctx, cancel := context.WithTimeout(ctx, readyTimeout)
	defer cancel()
	err := r.etcd(ctx)
	now := r.now()
	r.mu.Lock()
	defer r.mu.Unlock()
	if err == nil {
		r.lastOK, r.failingSince = now, time.Time{}
		return ""
	}
	if r.failingSince.IsZero() {
		r.failingSince = now
	}
	if d := now.Sub(r.failingSince); d < etcdGrace {
		return ""
	}
	since := "never answered"
	if !r.lastOK.IsZero() {
		since = fmt.Sprintf("last answered %v ago", now.Sub(r.lastOK).Round(time.Second))
	}
	return fmt.Sprintf("etcd unreachable: %v (%s)", err, since)
}

func (r *readiness) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	var problems []string
	if !r.started.Load() {
		problems = append(problems, "the node is starting or stopping")
	} else {
		if p := r.etcdProblem(req.Context()); p != "" {
			problems = append(problems, p)
		}
		if err := r.node(); err != nil {
			problems = append(problems, fmt.Sprintf("shards not ready: %v", err))
		}
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	if len(problems) > 0 {
		w.WriteHeader(http.StatusServiceUnavailable)
		fmt.Fprintf(w, "not ready\n%s\n", strings.Join(problems, "\n"))
		return
	}
	fmt.Fprintln(w, "ready")
}
