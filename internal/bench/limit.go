package bench

import (
	"context"
	"math"
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"
)

// Limit decides, for workers sharing it, whether one more operation may
// start: at most Count operations in all (0: no limit), none after the
// deadline (zero: none), paced to Rate per second across the workers (0:
// as fast as they go). It is safe for concurrent use.
type Limit struct {
	count    int64
	deadline time.Time
	pace     *rate.Limiter // nil: unpaced

	taken atomic.Int64
}

// NewLimit returns a Limit of count operations (0: any number), until d
// from now (0: no time limit), at perSecond operations a second (0: no
// pacing).
func NewLimit(count int64, d time.Duration, perSecond float64) *Limit {
	l := &Limit{count: count}
	if d > 0 {
		l.deadline = time.Now().Add(d)
	}
	if perSecond > 0 {
		// A burst of a millisecond's worth lets fast rates through
		// without a wait per operation, and keeps slow ones smooth.
		burst := max(1, int(math.Ceil(perSecond/1000)))
		l.pace = rate.NewLimiter(rate.Limit(perSecond), burst)
	}
	return l
}

// Next waits for the pace and reports whether one more operation may
// start; false once the count is used up, the deadline passed or ctx is
// done.
func (l *Limit) Next(ctx context.Context) bool {
	if ctx.Err() != nil || l.expired() {
		return false
	}
	if l.count > 0 && l.taken.Add(1) > l.count {
		return false
	}
	if l.pace != nil {
		wctx := ctx
		if !l.deadline.IsZero() {
			var cancel context.CancelFunc
			wctx, cancel = context.WithDeadline(ctx, l.deadline)
			defer cancel()
		}
		if l.pace.Wait(wctx) != nil {
			l.giveBack()
			return false
		}
	}
	if l.expired() {
		l.giveBack()
		return false
	}
	return true
}

func (l *Limit) giveBack() {
	if l.count > 0 {
		l.taken.Add(-1)
	}
}

func (l *Limit) expired() bool {
	return !l.deadline.IsZero() && !time.Now().Before(l.deadline)
}
