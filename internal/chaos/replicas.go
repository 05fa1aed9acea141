package chaos

import (
	"cmp"
	"slices"
	"sort"
)

// checkReplicas compares, shard by shard, the replicas of every node over
// the range of indexes they all hold.
func checkReplicas(replicas []Replica) ReplicaReport {
	var r ReplicaReport
	byShard := make(map[uint64][]*Replica)
	for i := range replicas {
		rep := &replicas[i]
		byShard[rep.Shard] = append(byShard[rep.Shard], rep)
	}
	shards := make([]uint64, 0, len(byShard))
	for s := range byShard {
		shards = append(shards, s)
	}
	slices.Sort(shards)

	for _, shard := range shards {
		reps := byShard[shard]
		if len(reps) < 2 {
			continue // nothing to compare with
		}
		r.Shards++
		slices.SortStableFunc(reps, func(a, b *Replica) int { return cmp.Compare(a.Node, b.Node) })
		compareShard(&r, shard, reps)
	}
	return r
}

// compareShard compares the replicas, sorted by node, of one shard.
func compareShard(r *ReplicaReport, shard uint64, reps []*Replica) {
	ranges := make([]NodeRange, len(reps))
	var held []*Replica // the replicas holding any entry
	for i, rep := range reps {
		ranges[i].Node = rep.Node
		if n := len(rep.Entries); n > 0 {
			ranges[i].First, ranges[i].Last = rep.Entries[0].Index, rep.Entries[n-1].Index
			held = append(held, rep)
		}
	}
	if slices.ContainsFunc(ranges, func(nr NodeRange) bool { return nr.Last != ranges[0].Last }) {
		r.Lagging++
		if len(r.LaggingExamples) < MaxExamples {
			r.LaggingExamples = append(r.LaggingExamples, Lagging{Shard: shard, Nodes: ranges})
		}
	}
	if len(held) < 2 {
		return
	}

	// The common range [lo, hi]: every replica holding entries holds
	// indexes up to hi, and from lo on.
	lo, hi := held[0].Entries[0].Index, held[0].Entries[len(held[0].Entries)-1].Index
	for _, rep := range held[1:] {
		lo = max(lo, rep.Entries[0].Index)
		hi = min(hi, rep.Entries[len(rep.Entries)-1].Index)
	}
	if lo > hi {
		return // the replicas share no index: nothing to compare
	}
	within := make([][]ReplicaEntry, len(held))
	for i, rep := range held {
		e := rep.Entries
		from := sort.Search(len(e), func(j int) bool { return e[j].Index >= lo })
		to := sort.Search(len(e), func(j int) bool { return e[j].Index > hi })
		within[i] = e[from:to]
	}

	// Merge the replicas' entries by index: an index that some replica
	// lacks, or whose digests differ, is divergent.
	divergent := 0
	var example *Divergence
	pos := make([]int, len(within))
	at := make([]bool, len(within)) // which replicas hold cur
	for {
		cur, found := uint64(0), false
		for i, e := range within {
			if pos[i] < len(e) && (!found || e[pos[i]].Index < cur) {
				cur, found = e[pos[i]].Index, true
			}
		}
		if !found {
			break
		}
		same := true
		var digest string // of the first replica holding cur
		for i, e := range within {
			at[i] = pos[i] < len(e) && e[pos[i]].Index == cur
			switch {
			case !at[i]:
				same = false
			case i == 0:
				digest = e[pos[i]].Digest
			case e[pos[i]].Digest != digest:
				same = false
			}
		}
		if !same {
			divergent++
			if example == nil {
				example = &Divergence{Shard: shard, First: lo, Last: hi, Index: cur}
				for i, e := range within {
					nd := NodeDigest{Node: held[i].Node}
					if at[i] {
						nd.Digest = e[pos[i]].Digest
					}
					example.Digests = append(example.Digests, nd)
				}
			}
		}
		for i := range within {
			if at[i] {
				pos[i]++
			}
		}
	}
	if divergent == 0 {
		return
	}
	r.Divergent++
	r.DivergentIndexes += divergent
	if len(r.Examples) < MaxExamples {
		example.Indexes = divergent
		r.Examples = append(r.Examples, *example)
	}
}
