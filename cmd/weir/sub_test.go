package main

import (
	"encoding/json"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/weir-log/weir/api/wire"
	"github.com/weir-log/weir/internal/nodetest"
)

// TestSubscriptionCommandsEndToEnd drives a real node through the command
// line: create a subscription, append, consume with --max, see the
// committed offsets, delete.
func TestSubscriptionCommandsEndToEnd(t *testing.T) {
	node := nodetest.Start(t)
	weir := func(stdin string, args ...string) string {
		t.Helper()
		out, err := runWeir(t.Context(), stdin, append(args, "--addr", node.Addr)...)
		require.NoError(t, err, "weir %s\n%s", strings.Join(args, " "), out)
		return out
	}

	weir("", "stream", "create", "sensors", "--shards", "2")
	out := weir("", "sub", "create", "alerts", "--stream", "sensors", "--offset", "earliest", "--ack-timeout", "30s", "--max-unacked", "100")
	require.Regexp(t, `(?m)^alerts +sensors +30s +100 +earliest +\S+$`, out)
	require.Contains(t, weir("", "sub", "list"), "alerts")
	require.NotContains(t, weir("", "sub", "list", "--prefix", "other"), "alerts")

	// 20 records over both shards, in batches of 7 per call.
	const n = 20
	appended := strings.Fields(weir("", "append", "sensors", "--count", strconv.Itoa(n), "--keys", "5", "--batch", "7", "--ids"))
	require.Len(t, appended, n)
	lastBatch := make(map[uint64]uint64) // shard → its last batch id
	for _, s := range appended {
		id, err := wire.ParseRecordID(s)
		require.NoError(t, err)
		lastBatch[id.GetShardId()] = max(lastBatch[id.GetShardId()], id.GetBatchId())
	}
	require.Len(t, lastBatch, 2, "5 keys reach both shards")

	out = weir("", "consume", "alerts", "--consumer", "c1", "--max", strconv.Itoa(n), "--format", "json")
	lines := strings.Split(strings.TrimSpace(out), "\n")
	require.Len(t, lines, n)
	var consumed []string
	perShard := make(map[uint64][]string)
	for _, l := range lines {
		var j jsonRecord
		require.NoError(t, json.Unmarshal([]byte(l), &j), l)
		require.True(t, strings.HasPrefix(j.Key, "key-"), l)
		consumed = append(consumed, j.ID)
		id, err := wire.ParseRecordID(j.ID)
		require.NoError(t, err)
		perShard[id.GetShardId()] = append(perShard[id.GetShardId()], j.ID)
	}
	require.ElementsMatch(t, appended, consumed, "every record once")
	for shard, ids := range perShard {
		require.True(t, slices.IsSortedFunc(ids, func(a, b string) int {
			x, _ := wire.ParseRecordID(a)
			y, _ := wire.ParseRecordID(b)
			return wire.CompareRecordID(x, y)
		}), "shard %d delivered in order: %v", shard, ids)
	}

	// The acks were sent before consume exited; the committed offsets
	// reach each shard's last batch once the server has applied them.
	require.EventuallyWithT(t, func(c *assert.CollectT) {
		out, err := runWeir(t.Context(), "", "sub", "get", "alerts", "--addr", node.Addr)
		if !assert.NoError(c, err) {
			return
		}
		for shard, batch := range lastBatch {
			m := regexp.MustCompile(`(?m)^` + strconv.FormatUint(shard, 10) + ` +(\d+)$`).FindStringSubmatch(out)
			if !assert.NotNil(c, m, "no offset for shard %d in:\n%s", shard, out) {
				return
			}
			committed, err := strconv.ParseUint(m[1], 10, 64)
			assert.NoError(c, err)
			assert.GreaterOrEqual(c, committed, batch, "shard %d's offset is at its last batch:\n%s", shard, out)
		}
	}, 30*time.Second, 100*time.Millisecond, "sub get shows the committed offsets")

	consumerRow := regexp.MustCompile(`(?m)^c1\s`)
	require.Eventually(t, func() bool {
		out, err := runWeir(t.Context(), "", "sub", "consumers", "alerts", "--addr", node.Addr)
		return err == nil && !consumerRow.MatchString(out)
	}, 30*time.Second, 100*time.Millisecond, "the consumer left when consume exited")

	weir("", "sub", "delete", "alerts")
	require.NotContains(t, weir("", "sub", "list"), "alerts")
	_, err := runWeir(t.Context(), "", "sub", "get", "alerts", "--addr", node.Addr)
	require.Error(t, err)
	weir("", "stream", "delete", "sensors")
}
