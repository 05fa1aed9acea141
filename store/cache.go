package store

import pb "go.etcd.io/raft/v3/raftpb"

// The tail cache keeps a Log's newest entries in memory. raft reads back the
// entries it has just written, to hand them out as committed (and, in a
// cluster, to send them to followers); without the cache every round would
// open a pebble iterator for them. It is bounded per Log in entries and
// bytes, drops the oldest first, and is guarded by the Log's mu. Entries in
// it are shared: callers of Entries must not modify them (raft does not).
const (
	cacheMaxEntries = 512
	cacheMaxBytes   = 1 << 20
)

type cachedEntry struct {
	e    *pb.Entry
	size int // marshaled size, as Entries counts maxSize
}

// tailCache holds consecutive entries; ents[0] has the lowest index.
type tailCache struct {
	ents  []cachedEntry
	bytes int
}

func (c *tailCache) reset() {
	clear(c.ents)
	c.ents, c.bytes = c.ents[:0], 0
}

func (c *tailCache) first() uint64 { return c.ents[0].e.GetIndex() }

// add appends consecutive entries, replacing any cached at or past the first
// of them (raft's conflicting suffix), then evicts down to the bounds.
func (c *tailCache) add(ents []cachedEntry) {
	if len(ents) == 0 {
		return
	}
	lo := ents[0].e.GetIndex()
	if len(c.ents) > 0 {
		last := c.ents[len(c.ents)-1].e.GetIndex()
		switch {
		case lo > last+1 || lo < c.first():
			c.reset() // not contiguous with what is cached
		case lo <= last:
			c.truncateFrom(lo)
		}
	}
	for _, e := range ents {
		c.ents = append(c.ents, e)
		c.bytes += e.size
	}
	n := 0
	for len(c.ents)-n > cacheMaxEntries || (c.bytes > cacheMaxBytes && len(c.ents)-n > 1) {
		c.bytes -= c.ents[n].size
		n++
	}
	if n > 0 {
		clear(c.ents[:n])
		c.ents = append(c.ents[:0], c.ents[n:]...)
	}
}

func (c *tailCache) truncateFrom(index uint64) {
	keep := int(index - c.first())
	for _, e := range c.ents[keep:] {
		c.bytes -= e.size
	}
	clear(c.ents[keep:])
	c.ents = c.ents[:keep]
}

// dropThrough forgets entries with index <= index (compaction).
func (c *tailCache) dropThrough(index uint64) {
	if len(c.ents) == 0 || index < c.first() {
		return
	}
	if index >= c.ents[len(c.ents)-1].e.GetIndex() {
		c.reset()
		return
	}
	n := int(index - c.first() + 1)
	for _, e := range c.ents[:n] {
		c.bytes -= e.size
	}
	clear(c.ents[:n])
	c.ents = append(c.ents[:0], c.ents[n:]...)
}

// get returns [lo, hi) limited to maxSize bytes (at least one entry), if the
// cache holds all of it.
func (c *tailCache) get(lo, hi, maxSize uint64) ([]*pb.Entry, bool) {
	if len(c.ents) == 0 || lo < c.first() || hi-1 > c.ents[len(c.ents)-1].e.GetIndex() {
		return nil, false
	}
	from := int(lo - c.first())
	out := make([]*pb.Entry, 0, hi-lo)
	var size uint64
	for _, ce := range c.ents[from : from+int(hi-lo)] {
		size += uint64(ce.size)
		if len(out) > 0 && size > maxSize {
			break
		}
		out = append(out, ce.e)
	}
	return out, true
}
