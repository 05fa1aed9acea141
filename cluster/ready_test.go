package cluster_test

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/weir-log/weir/internal/nodetest"
)

// Ready is nil on a started node, with its shards open and led, and says
// so once the node is shutting down.
func TestReadyFollowsTheNode(t *testing.T) {
	node := nodetest.Start(t).Server.Node()
	require.NoError(t, node.Ready())
	createStream(t, node, "ready", 3, 0)
	require.NoError(t, node.Ready())
	require.NoError(t, node.Close())
	require.ErrorContains(t, node.Ready(), "shutting down")
}
