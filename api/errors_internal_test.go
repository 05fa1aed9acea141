package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"testing"

	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/weir-log/weir/api/hstreampb"
	"github.com/weir-log/weir/cluster"
)

// TestStatusErrorUnavailable checks that the cluster's outage errors reach
// the client as Unavailable, keeping the whole message, however they are
// wrapped and whatever else they wrap: an etcd call that ran out of time is
// an outage of etcd (retry), not the caller's deadline, and a lookup that
// found nothing because etcd did not answer is not a NotFound.
func TestStatusErrorUnavailable(t *testing.T) {
	log := slog.New(slog.DiscardHandler)
	for _, tc := range []struct {
		name string
		err  error
		code codes.Code
		msg  string
	}{
		{"metadata, deadline",
			fmt.Errorf("%w: creating stream %q: %w", cluster.ErrMetadataUnavailable, "s", context.DeadlineExceeded),
			codes.Unavailable, `cluster: metadata store (etcd) unavailable: creating stream "s": context deadline exceeded`},
		{"metadata, wrapped twice",
			fmt.Errorf("creating subscription %q: %w", "sub", fmt.Errorf("%w: etcdserver: request timed out", cluster.ErrMetadataUnavailable)),
			codes.Unavailable, `creating subscription "sub": cluster: metadata store (etcd) unavailable: etcdserver: request timed out`},
		{"metadata, with another class",
			fmt.Errorf("%w: stream %q: %w", cluster.ErrMetadataUnavailable, "s", cluster.ErrStreamNotFound),
			codes.Unavailable, `cluster: metadata store (etcd) unavailable: stream "s": cluster: stream not found`},
		{"metadata, joined",
			errors.Join(cluster.ErrMetadataUnavailable, context.DeadlineExceeded),
			codes.Unavailable, "cluster: metadata store (etcd) unavailable\ncontext deadline exceeded"},
		{"node",
			fmt.Errorf("forwarding an append to shard 7: %w: node 2 is not a live member", cluster.ErrNodeUnavailable),
			codes.Unavailable, "forwarding an append to shard 7: cluster: node unavailable: node 2 is not a live member"},
		{"node, deadline",
			fmt.Errorf("%w: node 2: %w", cluster.ErrNodeUnavailable, context.DeadlineExceeded),
			codes.Unavailable, "cluster: node unavailable: node 2: context deadline exceeded"},
		{"no leader",
			fmt.Errorf("appending to shard 7: %w", cluster.ErrNoLeader),
			codes.Unavailable, "appending to shard 7: cluster: shard has no leader"},
		{"the caller's own deadline stays DeadlineExceeded",
			fmt.Errorf("reading shard 7: %w", context.DeadlineExceeded),
			codes.DeadlineExceeded, "reading shard 7: context deadline exceeded"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := statusError(log, "Test", tc.err)
			st, ok := status.FromError(err)
			require.True(t, ok, "not a status: %v", err)
			require.Equal(t, tc.code, st.Code(), st.Message())
			var body errorBody
			require.NoError(t, json.Unmarshal([]byte(st.Message()), &body))
			require.Equal(t, int32(hstreampb.ErrorCode_InternalError), body.Error)
			require.Equal(t, tc.msg, body.Message)
			require.Nil(t, body.Extra)
		})
	}
}

// TestNodeStatePB maps every cluster state to HStreamDB's of the same name.
func TestNodeStatePB(t *testing.T) {
	for st, want := range map[cluster.NodeState]hstreampb.NodeState{
		cluster.NodeStarting:    hstreampb.NodeState_Starting,
		cluster.NodeRunning:     hstreampb.NodeState_Running,
		cluster.NodeUnavailable: hstreampb.NodeState_Unavailable,
		cluster.NodeDead:        hstreampb.NodeState_Dead,
		cluster.NodeState(99):   hstreampb.NodeState_Unavailable,
	} {
		require.Equal(t, want, nodeStatePB(st), "state %d", st)
	}
}
