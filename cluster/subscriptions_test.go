package cluster_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/weir-log/weir/cluster"
	"github.com/weir-log/weir/internal/nodetest"
)

// TestSubscriptionsNeverOutliveTheirStream races subscription creations
// against a forced stream delete: afterwards etcd holds no subscription
// whose stream is gone, and every creation either failed with
// ErrStreamNotFound or left a subscription the delete reported.
func TestSubscriptionsNeverOutliveTheirStream(t *testing.T) {
	n := nodetest.Start(t)
	node := n.Server.Node()
	for round := range 5 {
		createStream(t, node, "s", 2, 0)
		var (
			wg      sync.WaitGroup
			mu      sync.Mutex
			created []string
			deleted []string
		)
		for i := range 8 {
			wg.Go(func() {
				id := fmt.Sprintf("sub-%d-%d", round, i)
				_, err := node.CreateSubscription(context.Background(), cluster.SubscriptionMeta{
					ID: id, Stream: "s", AckTimeoutSeconds: 1, MaxUnackedRecords: 1, Offset: cluster.OffsetLatest,
				})
				if err == nil {
					mu.Lock()
					created = append(created, id)
					mu.Unlock()
					return
				}
				assert.ErrorIs(t, err, cluster.ErrStreamNotFound)
			})
		}
		wg.Go(func() {
			gone, err := node.DeleteStream(context.Background(), "s", true)
			assert.NoError(t, err)
			mu.Lock()
			deleted = gone
			mu.Unlock()
		})
		wg.Wait()
		left := node.Subscriptions("")
		ids := make([]string, len(left))
		for i, m := range left {
			ids[i] = m.ID
		}
		// Created before the delete: deleted with the stream. After it:
		// they found no stream. Either way none is left.
		assert.Empty(t, ids, "round %d: subscriptions left on a deleted stream", round)
		assert.ElementsMatch(t, created, deleted, "round %d", round)
	}
}

// TestCheckpointNeedsOwnership: a checkpoint is written only by the node
// that claimed the subscription, and never for a deleted one.
func TestCheckpointNeedsOwnership(t *testing.T) {
	n := nodetest.Start(t)
	node := n.Server.Node()
	ctx := context.Background()
	createStream(t, node, "s", 1, 0)
	_, err := node.CreateSubscription(ctx, cluster.SubscriptionMeta{ID: "g", Stream: "s", AckTimeoutSeconds: 1, MaxUnackedRecords: 1, Offset: cluster.OffsetEarliest})
	require.NoError(t, err)
	cp := cluster.Checkpoint{Next: map[uint64]uint64{1: 7}}
	require.ErrorIs(t, node.SaveCheckpoint(ctx, "g", cp), cluster.ErrNotOwner, "not claimed yet")

	require.NoError(t, node.ClaimSubscription(ctx, "g"))
	require.NoError(t, node.ClaimSubscription(ctx, "g"), "claiming again is fine")
	require.NoError(t, node.SaveCheckpoint(ctx, "g", cp))
	got, ok, err := node.Checkpoint(ctx, "g")
	require.NoError(t, err)
	require.True(t, ok)
	assert.Equal(t, cp.Next, got.Next)

	// Another node holds it: this one can neither claim nor save.
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{n.Cfg.Etcd.Embedded.ClientListen}})
	require.NoError(t, err)
	defer cli.Close()
	_, err = cli.Put(ctx, n.Cfg.Etcd.Prefix+"subowners/g", "99")
	require.NoError(t, err)
	require.ErrorIs(t, node.ClaimSubscription(ctx, "g"), cluster.ErrNotOwner)
	err = node.SaveCheckpoint(ctx, "g", cp)
	require.ErrorIs(t, err, cluster.ErrNotOwner)

	require.NoError(t, node.DeleteSubscription(ctx, "g"))
	err = node.SaveCheckpoint(ctx, "g", cp)
	require.True(t, errors.Is(err, cluster.ErrSubscriptionNotFound), "%v", err)
	_, ok, err = node.Checkpoint(ctx, "g")
	require.NoError(t, err)
	assert.False(t, ok, "the checkpoint went with the subscription")
	require.ErrorIs(t, node.ClaimSubscription(ctx, "g"), cluster.ErrSubscriptionNotFound)
}
