package chaos

import (
	"bytes"
	"cmp"
	"slices"
	"strconv"
	"time"
)

// Check compares what was written with what was read back, delivered and
// replicated, and measures throughput in each fault window. It does not
// modify h. The package documentation describes each check.
//
// Check takes time and memory linear in the size of h (plus sorting): about
// a hundred bytes per write and per record.
func Check(h History) Report {
	c := newChecker(&h)
	var r Report
	c.readRecords(&r)
	c.readDeliveries(&r)
	c.walkWrites(&r)
	r.Replicas = checkReplicas(h.Replicas)

	start, end := runBounds(&h)
	r.Faults = checkFaults(&h, start, end)
	r.Totals.Start, r.Totals.End = start, end
	r.Totals.Duration = Seconds(end.Sub(start))
	r.Totals.Writes = len(c.states)
	r.Totals.Unacked = r.Totals.Writes - r.Totals.Acked
	r.Totals.Lost = r.Lost.Count
	r.Totals.Records = len(h.Records)
	r.Totals.Deliveries = len(h.Deliveries)
	r.Delivery.Deliveries = len(h.Deliveries)
	return r
}

// wkey names one write.
type wkey struct {
	producer string
	seq      uint64
}

// wstate is what Check learns about one distinct write. Indexes are int32
// to keep it small: a history of two million writes needs 40 MB of these.
type wstate struct {
	// w is the index in History.Writes of the write's representative: if
	// the history lists a (producer, seq) more than once, the acked copy
	// with the earliest AckTime, else the first copy.
	w int32
	// attempts is Attempts summed over every copy in History.Writes.
	attempts int32
	// found and delivered count copies in Records and in Deliveries.
	found     int32
	delivered int32
	// stream is the first stream (key, shard) the order walk read the
	// write on, 0 before any; copies read on other streams are noted in
	// checker.elsewhere.
	stream int32
}

// checker holds Check's indexes over one history.
type checker struct {
	h      *History
	states []wstate
	index  map[wkey]int32 // into states
	// names interns producer names, so that a payload's name, a []byte,
	// is looked up without allocating.
	names map[string]string
	// producers lists producer names in order, and each one's states in
	// seq order.
	producers []string
	byName    map[string][]int32
}

func newChecker(h *History) *checker {
	c := &checker{
		h:      h,
		states: make([]wstate, 0, len(h.Writes)),
		index:  make(map[wkey]int32, len(h.Writes)),
		names:  make(map[string]string),
		byName: make(map[string][]int32),
	}
	for i := range h.Writes {
		w := &h.Writes[i]
		k := wkey{w.Producer, w.Seq}
		id, seen := c.index[k]
		if !seen {
			id = int32(len(c.states))
			c.index[k] = id
			c.states = append(c.states, wstate{w: int32(i)})
			if _, ok := c.names[w.Producer]; !ok {
				c.names[w.Producer] = w.Producer
				c.producers = append(c.producers, w.Producer)
			}
			c.byName[w.Producer] = append(c.byName[w.Producer], id)
		} else if rep := &h.Writes[c.states[id].w]; w.Acked && (!rep.Acked || w.AckTime.Before(rep.AckTime)) {
			c.states[id].w = int32(i)
		}
		c.states[id].attempts += int32(max(w.Attempts, 1))
	}
	slices.Sort(c.producers)
	for _, ids := range c.byName {
		slices.SortFunc(ids, func(a, b int32) int {
			return cmp.Compare(h.Writes[c.states[a].w].Seq, h.Writes[c.states[b].w].Seq)
		})
	}
	return c
}

// lookup returns the state of the write whose payload p is, if any, or
// why there is none: p names no write, or differs from the bytes written,
// or key (when not nil) is not the write's.
func (c *checker) lookup(p []byte, key *string) (int32, string) {
	name, seq, ok := parsePayload(p)
	if !ok {
		return 0, "not a value"
	}
	interned, ok := c.names[string(name)]
	if !ok {
		return 0, "unknown producer"
	}
	id, ok := c.index[wkey{interned, seq}]
	if !ok {
		return 0, "never written"
	}
	w := &c.h.Writes[c.states[id].w]
	if !bytes.Equal(p, Payload(w.Producer, w.Seq, c.h.Pad)) {
		return 0, "corrupt"
	}
	if key != nil && *key != w.Key {
		return 0, "key " + strconv.Quote(*key) + ", written with " + strconv.Quote(w.Key)
	}
	return id, ""
}

// streamKey names one stream of the order walk: a key within one shard.
type streamKey struct {
	key   string
	shard uint64
}

// streamProducer is one producer's values on one stream.
type streamProducer struct {
	stream   int32
	producer string
}

// readRecords counts the copies of each write in the final read, and
// reports unexpected records, order violations and split keys.
func (c *checker) readRecords(r *Report) {
	streams := make(map[streamKey]int32)
	keyShard := make(map[string]uint64)        // the first shard each key was read from
	splits := make(map[string][]uint64)        // every shard of keys read from more than one
	highest := make(map[streamProducer]uint64) // highest seq read so far
	elsewhere := make(map[[2]int32]struct{})   // (state, stream) read on a stream other than wstate.stream

	for i := range c.h.Records {
		rec := &c.h.Records[i]
		sk := streamKey{rec.Key, rec.Shard}
		sid, ok := streams[sk]
		if !ok {
			sid = int32(len(streams) + 1)
			streams[sk] = sid
		}
		if first, ok := keyShard[rec.Key]; !ok {
			keyShard[rec.Key] = rec.Shard
		} else if first != rec.Shard {
			shards := splits[rec.Key]
			if shards == nil {
				shards = []uint64{first}
			}
			if !slices.Contains(shards, rec.Shard) {
				splits[rec.Key] = append(shards, rec.Shard)
			}
		}

		id, why := c.lookup(rec.Payload, &rec.Key)
		if why != "" {
			r.Unexpected.Count++
			if len(r.Unexpected.Examples) < MaxExamples {
				r.Unexpected.Examples = append(r.Unexpected.Examples, UnexpectedRecord{
					Shard: rec.Shard, Index: rec.Index, Key: rec.Key, Payload: escape(rec.Payload), Why: why,
				})
			}
			continue
		}
		s := &c.states[id]
		s.found++
		var seen bool
		switch {
		case s.stream == 0:
			s.stream = sid
		case s.stream == sid:
			seen = true
		default:
			_, seen = elsewhere[[2]int32{id, sid}]
			elsewhere[[2]int32{id, sid}] = struct{}{}
		}

		w := &c.h.Writes[s.w]
		sp := streamProducer{sid, w.Producer}
		high, ok := highest[sp]
		if ok && w.Seq < high {
			o := &r.Order
			if seen {
				o.LateDuplicates++
			} else {
				o.Violations++
			}
			if len(o.Examples) < MaxExamples {
				o.Examples = append(o.Examples, OrderViolation{
					Key: rec.Key, Shard: rec.Shard, Index: rec.Index,
					Producer: w.Producer, Seq: w.Seq, After: high, LateDuplicate: seen,
				})
			}
		}
		if !ok || w.Seq > high {
			highest[sp] = w.Seq
		}
	}

	r.Order.SplitKeys = len(splits)
	keys := make([]string, 0, len(splits))
	for k := range splits {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys[:min(len(keys), MaxExamples)] {
		shards := splits[k]
		slices.Sort(shards)
		r.Order.SplitExamples = append(r.Order.SplitExamples, SplitKey{Key: k, Shards: shards})
	}
}

// readDeliveries counts the deliveries of each write and reports unexpected
// ones.
func (c *checker) readDeliveries(r *Report) {
	d := &r.Delivery
	for i := range c.h.Deliveries {
		p := c.h.Deliveries[i].Payload
		id, why := c.lookup(p, nil)
		if why != "" {
			d.Unexpected++
			if len(d.UnexpectedExamples) < MaxExamples {
				d.UnexpectedExamples = append(d.UnexpectedExamples, escape(p))
			}
			continue
		}
		c.states[id].delivered++
	}
}

// walkWrites goes through each producer's writes in seq order, after
// readRecords and readDeliveries have counted them, and reports the lost,
// the unacked found, the duplicates and the never delivered.
func (c *checker) walkWrites(r *Report) {
	for _, name := range c.producers {
		ids := c.byName[name]
		// The positions in ids of the first and last acked writes found:
		// lost writes before first are prefix, after last suffix.
		first, last := -1, -1
		for i, id := range ids {
			if s := &c.states[id]; s.found > 0 && c.h.Writes[s.w].Acked {
				if first < 0 {
					first = i
				}
				last = i
			}
		}
		for i, id := range ids {
			s := &c.states[id]
			w := &c.h.Writes[s.w]
			ref := WriteRef{Producer: w.Producer, Seq: w.Seq, AckTime: w.AckTime}
			if w.Acked {
				r.Totals.Acked++
			}
			switch {
			case w.Acked && s.found == 0:
				c.lost(r, ref, i, first, last)
			case !w.Acked && s.found > 0:
				r.Totals.UnackedFound++
			}
			if s.found > 1 {
				d := &r.Duplicates
				extra := int(s.found - 1)
				d.Extra += extra
				if s.attempts > 1 {
					d.Retried += extra
				} else {
					d.Unexplained += extra
					if len(d.Examples) < MaxExamples {
						d.Examples = append(d.Examples, Duplicate{
							Producer: w.Producer, Seq: w.Seq, Copies: int(s.found), Attempts: int(s.attempts),
						})
					}
				}
			}
			if w.Acked && s.delivered == 0 {
				d := &r.Delivery
				d.NeverDelivered++
				if len(d.Examples) < MaxExamples {
					d.Examples = append(d.Examples, ref)
				}
			}
			if s.delivered > 1 {
				r.Delivery.Redeliveries += int(s.delivered - 1)
			}
		}
	}
}

// lost reports the lost write at position i of its producer's writes,
// given the positions of the producer's first and last acked writes found
// (-1 if none was).
func (c *checker) lost(r *Report, ref WriteRef, i, first, last int) {
	l := &r.Lost
	l.Count++
	var class string
	switch {
	case first < 0 || i < first:
		class = LostPrefix
		l.Prefix++
	case i > last:
		class = LostSuffix
		l.Suffix++
	default:
		class = LostMiddle
		l.Middle++
	}
	if len(l.Examples) < MaxExamples {
		l.Examples = append(l.Examples, LostWrite{WriteRef: ref, Class: class})
	}
}

// runBounds returns h.Start and h.End, or when zero the earliest and the
// latest of the writes' Start and AckTime.
func runBounds(h *History) (start, end time.Time) {
	start, end = h.Start, h.End
	if !start.IsZero() && !end.IsZero() {
		return start, end
	}
	var lo, hi time.Time
	for i := range h.Writes {
		w := &h.Writes[i]
		for _, t := range [2]time.Time{w.Start, w.AckTime} {
			if t.IsZero() {
				continue
			}
			if lo.IsZero() || t.Before(lo) {
				lo = t
			}
			if t.After(hi) {
				hi = t
			}
		}
	}
	if start.IsZero() {
		start = lo
	}
	if end.IsZero() {
		end = hi
	}
	return start, end
}

// escape returns at most the first 64 bytes of p, escaped as in a Go
// string literal without the quotes.
func escape(p []byte) string {
	const limit = 64
	s := strconv.Quote(string(p[:min(len(p), limit)]))
	s = s[1 : len(s)-1]
	if len(p) > limit {
		s += "..."
	}
	return s
}
