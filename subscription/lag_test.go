package subscription

import (
	"context"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/stretchr/testify/require"
)

// The lag counts records delivered and unacked, exactly, plus an estimate
// of those not delivered: per shard, the entries from the oldest
// undelivered through the commit index times the average records per batch
// the owner has delivered (exact here: every batch holds 2). Acks lower
// it; deleting the subscription drops its series.
func TestLagCountsRecordsNotAcknowledged(t *testing.T) {
	src := newFakeSource()
	lg := src.addShard("s", 1)
	for range 100 {
		lg.append(t, 2)
	}
	src.addSub(sub("g", "s", 3, map[uint64]uint64{1: 1})) // a window of 3: one batch out at a time
	m := newTestManager(t, src)
	m.lagEvery = 5 * time.Millisecond
	c := attach(t, m, "g", "c")
	lagRecords := func() float64 { return gaugeValue(t, m.met.lagRecordsVec.WithLabelValues("g")) }
	lagSeconds := func() float64 { return gaugeValue(t, m.met.lagSecondsVec.WithLabelValues("g")) }

	// 2 delivered and unacked, 99 entries × 2 undelivered.
	require.Eventually(t, func() bool { return lagRecords() == 200 && lagSeconds() > 0 },
		5*time.Second, 5*time.Millisecond, "lag %v records, %v s", lagRecords(), lagSeconds())
	c.Ack(next(t, c).GetRecordIds())
	// 2 delivered and unacked, 98 × 2 undelivered.
	require.Eventually(t, func() bool { return lagRecords() == 198 }, 5*time.Second, 5*time.Millisecond,
		"lag %v records after acking 2", lagRecords())

	c.Close()
	require.NoError(t, m.DeleteSubscription(context.Background(), "g", true))
	require.Zero(t, series(m.met.lagRecordsVec))
	require.Zero(t, series(m.met.deliveredVec))
}

// The estimate uses the average batch the owner has delivered: after
// batches of 1 and 3 (average 2), 10 undelivered batches of 5 records count
// as 20, and with the first two acked, the delivered-unacked part is 0.
// Before the owner has delivered anything, the oldest undelivered batch's
// size stands for all.
func TestLagEstimatesFromTheAverageBatchDelivered(t *testing.T) {
	src := newFakeSource()
	lg := src.addShard("s", 1)
	lg.append(t, 1)
	lg.append(t, 3)
	for range 10 {
		lg.append(t, 5)
	}
	src.addSub(sub("g", "s", 4, map[uint64]uint64{1: 1})) // a window of 4: the 1 and the 3, then a 5 waits
	m := newTestManager(t, src)
	m.lagEvery = 5 * time.Millisecond
	c := attach(t, m, "g", "c")
	lagRecords := func() float64 { return gaugeValue(t, m.met.lagRecordsVec.WithLabelValues("g")) }

	// 4 delivered and unacked, 10 entries × 2 (the average of 1 and 3).
	require.Eventually(t, func() bool { return lagRecords() == 24 }, 5*time.Second, 5*time.Millisecond,
		"lag %v records", lagRecords())
	c.Close()

	// A new owner that has delivered nothing (no consumer takes records
	// here: its window holds none) uses the oldest undelivered batch.
	src2 := newFakeSource()
	lg2 := src2.addShard("s", 1)
	for range 7 {
		lg2.append(t, 5)
	}
	src2.addSub(sub("h", "s", 1, map[uint64]uint64{1: 1}))
	m2 := newTestManager(t, src2)
	m2.lagEvery = 5 * time.Millisecond
	o, err := m2.owner(context.Background(), "h", true) // running, no consumer
	require.NoError(t, err)
	require.NotNil(t, o)
	require.Eventually(t, func() bool { return gaugeValue(t, m2.met.lagRecordsVec.WithLabelValues("h")) == 35 },
		5*time.Second, 5*time.Millisecond, "lag %v records", gaugeValue(t, m2.met.lagRecordsVec.WithLabelValues("h")))
}

// An owner whose subscription was deleted behind its back (reconcile
// retires it) stops updating its lag and drops those series, though the
// Manager has not stopped it yet.
func TestRetiredOwnerDropsItsLag(t *testing.T) {
	src := newFakeSource()
	lg := src.addShard("s", 1)
	for range 5 {
		lg.append(t, 2)
	}
	src.addSub(sub("g", "s", 3, map[uint64]uint64{1: 1}))
	m := newTestManager(t, src)
	m.lagEvery = 5 * time.Millisecond
	c := attach(t, m, "g", "c")
	// 2 delivered, 4 entries × 2 undelivered: the owner is updating.
	require.Eventually(t, func() bool { return gaugeValue(t, m.met.lagRecordsVec.WithLabelValues("g")) == 10 },
		5*time.Second, 5*time.Millisecond)
	require.Equal(t, 1, series(m.met.lagSecondsVec))

	require.NoError(t, src.DeleteSubscription(context.Background(), "g")) // another node deleted it
	require.Eventually(t, func() bool { return series(m.met.lagRecordsVec) == 0 && series(m.met.lagSecondsVec) == 0 },
		5*time.Second, 5*time.Millisecond, "the retired owner kept its lag series") // at its next reconcile, ≤ 1 s
	for range 5 {
		lg.append(t, 2)
	}
	time.Sleep(50 * time.Millisecond) // ten lag updates, were it still updating
	require.Zero(t, series(m.met.lagRecordsVec))
	require.Zero(t, series(m.met.lagSecondsVec))
	c.Close()
}

func gaugeValue(t *testing.T, g prometheus.Gauge) float64 {
	t.Helper()
	var out dto.Metric
	require.NoError(t, g.Write(&out))
	return out.GetGauge().GetValue()
}

// series counts the series a collector has.
func series(c prometheus.Collector) int {
	ch := make(chan prometheus.Metric, 16)
	go func() { c.Collect(ch); close(ch) }()
	n := 0
	for range ch {
		n++
	}
	return n
}
