package chaos

import (
	"cmp"
	"slices"
	"sort"
	"time"
)

// checkFaults measures acked throughput and unavailability in each fault
// window, per kind, and over the run [start, end] outside every window.
// Unavailability is measured twice: the longest time in which no producer
// got an ack (the whole cluster stood still), and the longest in which
// some producer got none (its key's shard, or its link, stood still).
func checkFaults(h *History, start, end time.Time) FaultReport {
	// The ack timeline, in Unix nanoseconds, and each producer's (a
	// producer never acked stalls throughout). Acked writes with a zero
	// AckTime have no place on it.
	var acks []int64
	byProducer := make(map[string][]int64)
	for i := range h.Writes {
		w := &h.Writes[i]
		a := byProducer[w.Producer]
		if w.Acked && !w.AckTime.IsZero() {
			acks = append(acks, w.AckTime.UnixNano())
			a = append(a, w.AckTime.UnixNano())
		}
		byProducer[w.Producer] = a
	}
	slices.Sort(acks)
	for _, a := range byProducer {
		slices.Sort(a)
	}

	r := FaultReport{Windows: make([]FaultWindow, 0, len(h.Faults))}
	kinds := make(map[string]*KindSummary)
	for _, f := range h.Faults {
		if f.End.IsZero() {
			f.End = end
		}
		if f.End.Before(f.Start) {
			f.End = f.Start
		}
		lo, hi := f.Start.UnixNano(), f.End.UnixNano()
		n, gap := ackedIn(acks, lo, hi)
		var stall int64
		for _, a := range byProducer {
			_, g := ackedIn(a, lo, hi)
			stall = max(stall, g)
		}
		fw := FaultWindow{
			Kind: f.Kind, Target: f.Target, Start: f.Start, End: f.End,
			Duration: Seconds(hi - lo), Acked: n, Rate: rate(n, hi-lo), LongestUnavailable: Seconds(gap),
			LongestStall: Seconds(stall),
		}
		r.Windows = append(r.Windows, fw)

		k := kinds[f.Kind]
		if k == nil {
			k = &KindSummary{Kind: f.Kind}
			kinds[f.Kind] = k
		}
		k.Faults++
		k.Duration += fw.Duration
		k.Acked += n
		k.LongestUnavailable = max(k.LongestUnavailable, fw.LongestUnavailable)
		k.LongestStall = max(k.LongestStall, fw.LongestStall)
	}
	for _, k := range kinds {
		k.Rate = rate(k.Acked, int64(k.Duration))
		r.Kinds = append(r.Kinds, *k)
	}
	slices.SortFunc(r.Kinds, func(a, b KindSummary) int { return cmp.Compare(a.Kind, b.Kind) })

	r.Baseline = baseline(acks, h.Faults, start, end)
	return r
}

// ackedIn returns how many acks lie in [lo, hi], and the longest interval
// within [lo, hi] without one: the whole window when there is none.
func ackedIn(acks []int64, lo, hi int64) (n int, longest int64) {
	from := sort.Search(len(acks), func(i int) bool { return acks[i] >= lo })
	to := sort.Search(len(acks), func(i int) bool { return acks[i] > hi })
	prev := lo
	for _, t := range acks[from:to] {
		longest = max(longest, t-prev)
		prev = t
	}
	return to - from, max(longest, hi-prev)
}

// baseline returns the ack rate over [start, end] outside every fault
// window.
func baseline(acks []int64, faults []Fault, start, end time.Time) Baseline {
	lo, hi := start.UnixNano(), end.UnixNano()
	if start.IsZero() || end.IsZero() || hi <= lo {
		return Baseline{}
	}
	// The fault windows clipped to the run, merged where they overlap.
	type span struct{ lo, hi int64 }
	var spans []span
	for _, f := range faults {
		s := span{max(f.Start.UnixNano(), lo), hi}
		if !f.End.IsZero() {
			s.hi = min(f.End.UnixNano(), hi)
		}
		if s.lo <= s.hi {
			spans = append(spans, s)
		}
	}
	slices.SortFunc(spans, func(a, b span) int { return cmp.Compare(a.lo, b.lo) })
	var merged []span
	for _, s := range spans {
		if n := len(merged); n > 0 && s.lo <= merged[n-1].hi {
			merged[n-1].hi = max(merged[n-1].hi, s.hi)
			continue
		}
		merged = append(merged, s)
	}

	outside := hi - lo
	acked, _ := ackedIn(acks, lo, hi)
	for _, s := range merged {
		outside -= s.hi - s.lo
		n, _ := ackedIn(acks, s.lo, s.hi)
		acked -= n
	}
	return Baseline{Duration: Seconds(outside), Acked: acked, Rate: rate(acked, outside)}
}

// rate returns n per second over d nanoseconds, 0 when d is not positive.
func rate(n int, d int64) float64 {
	if d <= 0 {
		return 0
	}
	return float64(n) / time.Duration(d).Seconds()
}
