package server

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// /readyz answers 503 until Start has finished (the flag it sets last) and
// once Close has begun; a failing etcd check is reported only once it has
// failed on every probe for etcdGrace, and one success starts the grace
// afresh; the node's own report is passed on.
func TestReadinessGraceAndStart(t *testing.T) {
	var started atomic.Bool
	var etcdErr, nodeErr error
	clock := time.Unix(1_000_000, 0)
	r := &readiness{
		started: &started,
		etcd:    func(context.Context) error { return etcdErr },
		node:    func() error { return nodeErr },
		now:     func() time.Time { return clock },
	}
	probe := func() (int, string) {
		w := httptest.NewRecorder()
		r.ServeHTTP(w, httptest.NewRequest(http.MethodGet, "/readyz", nil))
		return w.Code, w.Body.String()
	}

	code, body := probe()
	require.Equal(t, http.StatusServiceUnavailable, code)
	require.Contains(t, body, "starting")
	started.Store(true)
	code, body = probe()
	require.Equal(t, http.StatusOK, code, body)
	require.Equal(t, "ready\n", body)

	etcdErr = errors.New("no leader")
	for _, d := range []time.Duration{0, time.Second, etcdGrace - time.Millisecond} {
		clock = clock.Add(d)
		code, body = probe()
		require.Equal(t, http.StatusOK, code, "etcd failing for less than the grace: %s", body)
		clock = clock.Add(-d)
	}
	clock = clock.Add(etcdGrace)
	code, body = probe()
	require.Equal(t, http.StatusServiceUnavailable, code)
	require.Contains(t, body, "etcd unreachable: no leader (last answered 3s ago)")

	// One success, and the next failure has its grace again.
	etcdErr = nil
	clock = clock.Add(time.Second)
	code, _ = probe()
	require.Equal(t, http.StatusOK, code)
	etcdErr = errors.New("no leader")
	clock = clock.Add(time.Second)
	code, _ = probe()
	require.Equal(t, http.StatusOK, code)

	etcdErr, nodeErr = nil, errors.New(`shard 7 of stream "s" has not been open for 4s`)
	code, body = probe()
	require.Equal(t, http.StatusServiceUnavailable, code)
	require.Contains(t, body, `shards not ready: shard 7 of stream "s" has not been open for 4s`)

	nodeErr = nil
	started.Store(false) // Close began
	code, _ = probe()
	require.Equal(t, http.StatusServiceUnavailable, code)
}
