package cluster

// Placement: consistent hashing with bounded loads, weighted.
//
// This file decides which nodes carry a shard's replicas (element 0 being the
// preferred leader) and which node owns a subscription. It follows Mirrokni,
// Thorup and Zadimoghaddam, "Consistent Hashing with Bounded Loads" (SODA
// 2018; arXiv 2017), with node weights.
//
// The ring. Every node puts round(pointsPerWeight × weight) virtual points
// (at least one) on a 64-bit ring; a key hashes to a position and walks
// clockwise. All hashes are fixed functions (FNV-1a and the splitmix64
// finalizer, never maphash), so every process computes the same placement.
//
// The bound. Let T be the total load after placement (the replicas the nodes
// carry already, given by load, plus replicas × len(keys)) and W the sum of
// the weights. Node i's capacity is ceil(c × T × w_i / W): a walk skips a node
// at capacity, so no node ends above c times its weighted fair share. The sum
// of the capacities is at least c × T ≥ T, so a node with spare capacity
// always exists. c ≤ 1 (or NaN) means the default 1.25: c = 1 would leave no
// slack and turn every small imbalance of the ring into a cascade of moves.
//
// The fair share above is the plain weighted share when it is achievable,
// which is the common case. Two facts can make it unachievable, and then the
// share is water-filled instead (clamp(λ × w_i, lo_i, hi_i), with λ chosen so
// the shares sum to T; see fairCaps): a node cannot hold two replicas of one
// key, so it gains at most len(keys) (hi_i = load_i + len(keys); this binds
// for a heavy node when replicas is close to the number of nodes), and a node
// that already carries more than its share gains nothing (lo_i = load_i).
//
// Preferred leaders are placed first, in a pass of their own, with the same
// rule: node i may lead at most ceil(c × len(keys) × w_i / W) keys (again
// water-filled when a node's spare load capacity is smaller than its share).
// Followers are placed afterwards, one pass per replica rank, each key's walk
// continuing clockwise from where its previous replica was found. Keys are
// processed in an order given by a hash of the key, so neither the order of
// the arguments nor the key names bias who fills up first.
//
// Movement. Without the bound a ring moves only the keys whose arc changes
// owner: about 1/n of them when a node of n is added or removed. The bound
// adds moves only where a node reaches capacity and its overflow spills to
// the next node clockwise; with c = 1.25 and enough virtual points the arcs
// are even enough that this is rare (placement_test.go measures it: see
// TestPlaceMovement). For replicas > 1 a key's set changes when the added or
// removed node is among its first distinct successors, about replicas/n of
// the keys, which is also the minimum: the removed node held that fraction.
//
// A follower walk can find every node with spare capacity already in its
// key's set (rare: small clusters, heavy nodes). Then a full node joins the
// set and one follower of another key moves from that node to a node with
// spare capacity, which keeps every load within its capacity (swapFollower).
// Only if no such swap exists, or no leader fits, does the least loaded node
// relative to its weight take the replica, so every key always gets its
// replicas; a stress run of 6,000 random cases (1..12 nodes of weight 1..4,
// replicas 1 and 3, with and without initial load) never reached it.

import (
	"hash/fnv"
	"math"
	"sort"
)

// placeDefaultC is c when the caller passes c ≤ 1.
const placeDefaultC = 1.25

// pointsPerWeight is how many virtual points a node of weight 1 puts on the
// ring. More points make arcs more even (the spread of a node's share falls
// as 1/sqrt(points)), so fewer nodes reach capacity and fewer keys cascade;
// 160 keeps a ring of tens of nodes at a few thousand points.
const pointsPerWeight = 160

// placeNode is a node as placement sees it.
type placeNode struct {
	ID     uint64
	Weight float64 // > 0; 1 unless configured (≤ 0 is treated as 1)
}

// mix64 is the splitmix64 finalizer: a bijection on uint64 that spreads
// every input bit over the whole output.
func mix64(x uint64) uint64 {
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	x ^= x >> 31
	return x
}

// keyHash is a key's position on the ring.
func keyHash(key string) uint64 {
	h := fnv.New64a()
	h.Write([]byte(key))
	return mix64(h.Sum64())
}

// pointHash is the position of virtual point i of node id.
func pointHash(id uint64, i int) uint64 {
	return mix64(mix64(id) ^ uint64(i)*0x9e3779b97f4a7c15)
}

// orderHash orders keys for the greedy passes; it is independent of the ring
// position so that the keys who choose first are spread around the ring.
func orderHash(h uint64) uint64 {
	return mix64(h ^ 0x5851f42d4c957f2d)
}

// ring is the nodes of one placement, sorted by ID, and their virtual points.
type ring struct {
	nodes  []placeNode // sorted by ID, no duplicates, weights > 0
	weight float64     // sum of the weights
	points []ringPoint // sorted clockwise
}

type ringPoint struct {
	hash uint64
	node int // index into nodes
}

// newRing builds the ring. Duplicate IDs keep the largest weight, so the
// result does not depend on the order of nodes.
func newRing(in []placeNode) *ring {
	nodes := make([]placeNode, 0, len(in))
	for _, n := range in {
		if !(n.Weight > 0) || math.IsInf(n.Weight, 0) {
			n.Weight = 1
		}
		nodes = append(nodes, n)
	}
	sort.Slice(nodes, func(i, j int) bool {
		if nodes[i].ID != nodes[j].ID {
			return nodes[i].ID < nodes[j].ID
		}
		return nodes[i].Weight > nodes[j].Weight
	})
	r := &ring{}
	for _, n := range nodes {
		if len(r.nodes) > 0 && r.nodes[len(r.nodes)-1].ID == n.ID {
			continue
		}
		r.nodes = append(r.nodes, n)
		r.weight += n.Weight
	}
	for i, n := range r.nodes {
		p := int(math.Round(pointsPerWeight * n.Weight))
		if p < 1 {
			p = 1
		}
		for j := 0; j < p; j++ {
			r.points = append(r.points, ringPoint{hash: pointHash(n.ID, j), node: i})
		}
	}
	sort.Slice(r.points, func(i, j int) bool {
		a, b := r.points[i], r.points[j]
		if a.hash != b.hash {
			return a.hash < b.hash
		}
		return r.nodes[a.node].ID < r.nodes[b.node].ID
	})
	return r
}

// start is the index of the first point at or clockwise after h.
func (r *ring) start(h uint64) int {
	i := sort.Search(len(r.points), func(i int) bool { return r.points[i].hash >= h })
	if i == len(r.points) {
		i = 0
	}
	return i
}

// walk returns the first node clockwise from point index from (inclusive)
// for which ok is true, and the point index where it was found; found is
// false after a full turn without one.
func (r *ring) walk(from int, ok func(node int) bool) (node, at int, found bool) {
	for k := 0; k < len(r.points); k++ {
		at = (from + k) % len(r.points)
		if n := r.points[at].node; ok(n) {
			return n, at, true
		}
	}
	return 0, 0, false
}

// leastLoaded returns the node minimizing (load+1)/weight among those for
// which ok is true (ties: lowest ID), or false if there is none. It is the
// fallback when no node has spare capacity.
func (r *ring) leastLoaded(load []int, ok func(node int) bool) (int, bool) {
	best, found := 0, false
	var bestScore float64
	for i, n := range r.nodes {
		if !ok(i) {
			continue
		}
		s := float64(load[i]+1) / n.Weight
		if !found || s < bestScore {
			best, bestScore, found = i, s, true
		}
	}
	return best, found
}

// normalizeC returns the load bound to use for c.
func normalizeC(c float64) float64 {
	if !(c > 1) || math.IsInf(c, 0) {
		return placeDefaultC
	}
	return c
}

// fairCaps returns each node's capacity for a total of total units spread by
// weight, where node i must keep at least lo[i] and can take at most hi[i]
// (sum(lo) ≤ total ≤ sum(hi)). When the plain weighted shares total×w_i/W all
// lie within [lo, hi] the capacity is exactly ceil(c × total × w_i / W).
// Otherwise the shares are water-filled, s_i = clamp(λ × w_i, lo_i, hi_i)
// with sum(s) = total, and the capacity is ceil(c × λ × w_i) clamped to
// [lo_i, hi_i]: the capacities still sum to at least total, so a placement
// within them exists as far as counts go.
func fairCaps(nodes []placeNode, weight float64, total int, lo, hi []int, c float64) []int {
	caps := make([]int, len(nodes))
	plain := true
	for i, n := range nodes {
		s := float64(total) * n.Weight / weight
		if s < float64(lo[i]) || s > float64(hi[i]) {
			plain = false
			break
		}
	}
	if plain {
		for i, n := range nodes {
			caps[i] = min(hi[i], int(math.Ceil(c*float64(total)*n.Weight/weight)))
		}
		return caps
	}
	// sum(clamp(λ w_i, lo_i, hi_i)) is continuous and nondecreasing in λ;
	// bisect for the smallest λ where it reaches total.
	sum := func(l float64) float64 {
		var s float64
		for i, n := range nodes {
			s += math.Min(math.Max(l*n.Weight, float64(lo[i])), float64(hi[i]))
		}
		return s
	}
	a, b := 0.0, 1.0
	for sum(b) < float64(total) && b < math.MaxFloat64/4 {
		b *= 2
	}
	for k := 0; k < 200 && a < b; k++ {
		m := (a + b) / 2
		if m == a || m == b {
			break
		}
		if sum(m) < float64(total) {
			a = m
		} else {
			b = m
		}
	}
	for i, n := range nodes {
		caps[i] = min(hi[i], max(lo[i], int(math.Ceil(c*b*n.Weight))))
	}
	return caps
}

// placeItem is a key during placement.
type placeItem struct {
	key   string
	hash  uint64 // position on the ring
	order uint64 // position in the greedy passes
	pos   int    // ring point where the key's last replica was found
	set   []int  // node indexes, element 0 the leader
}

func (it *placeItem) has(node int) bool {
	for _, s := range it.set {
		if s == node {
			return true
		}
	}
	return false
}

// swapFollower finds a node for it when every node with spare capacity is
// in it.set already: a full node a outside it.set, and another key holding a
// as a follower (never as leader, so leader counts stay put) whose set lacks
// some node b with spare capacity. That follower moves from a to b and a is
// returned for it; cur is updated for the move (a -1, b +1), the caller
// counts a's new replica. Candidates are tried clockwise from it's position
// and keys in pass order, so the choice is deterministic.
func swapFollower(r *ring, items []placeItem, it *placeItem, cur, caps []int) (int, bool) {
	var spare []int
	for nd := range r.nodes {
		if cur[nd] < caps[nd] {
			spare = append(spare, nd)
		}
	}
	if len(spare) == 0 {
		return 0, false
	}
	tried := make([]bool, len(r.nodes))
	for k := 0; k < len(r.points); k++ {
		a := r.points[(it.pos+1+k)%len(r.points)].node
		if tried[a] || it.has(a) {
			continue
		}
		tried[a] = true
		for y := range items {
			other := &items[y]
			for j := 1; j < len(other.set); j++ {
				if other.set[j] != a {
					continue
				}
				for _, b := range spare {
					if !other.has(b) {
						other.set[j] = b
						cur[a]--
						cur[b]++
						return a, true
					}
				}
			}
		}
	}
	return 0, false
}

// placeItems assigns each key min(replicas, len(nodes)) distinct nodes,
// element 0 being the preferred leader (for a shard) or the owner (for a
// subscription, with replicas = 1). replicas < 1 counts as 1. load is how
// many replicas each node carries already (nil: none; IDs not in nodes are
// ignored); it counts toward the bound. c ≤ 1 means the default 1.25. The
// result depends only on the sets of nodes and keys, not on their order.
//
// Bound, when achievable (see the comment at the top of this file): each
// node's load plus its new replicas is at most ceil(c × T × w_i / W) with T
// the total of both, and each node is element 0 of at most
// ceil(c × len(keys) × w_i / W) keys.
func placeItems(nodes []placeNode, keys []string, replicas int, c float64, load map[uint64]int) map[string][]uint64 {
	c = normalizeC(c)
	if replicas < 1 {
		replicas = 1
	}
	out := make(map[string][]uint64, len(keys))
	r := newRing(nodes)
	if replicas > len(r.nodes) {
		replicas = len(r.nodes)
	}

	// Keys, deduplicated, in the order of the greedy passes.
	items := make([]placeItem, 0, len(keys))
	for _, k := range keys {
		if _, dup := out[k]; dup {
			continue
		}
		out[k] = nil
		h := keyHash(k)
		items = append(items, placeItem{key: k, hash: h, order: orderHash(h)})
	}
	if replicas == 0 || len(items) == 0 {
		return out
	}
	sort.Slice(items, func(i, j int) bool {
		if items[i].order != items[j].order {
			return items[i].order < items[j].order
		}
		return items[i].key < items[j].key
	})

	// Load capacities.
	n, k := len(r.nodes), len(items)
	cur := make([]int, n)
	lo := make([]int, n)
	hi := make([]int, n)
	total := replicas * k
	for i, nd := range r.nodes {
		cur[i] = load[nd.ID]
		if cur[i] < 0 {
			cur[i] = 0
		}
		lo[i], hi[i] = cur[i], cur[i]+k
		total += cur[i]
	}
	caps := fairCaps(r.nodes, r.weight, total, lo, hi, c)

	// Leader capacities: a node can lead no more keys than its spare load
	// capacity allows.
	leaders := make([]int, n)
	llo := make([]int, n)
	lhi := make([]int, n)
	for i := range r.nodes {
		lhi[i] = min(k, caps[i]-cur[i])
	}
	lcaps := fairCaps(r.nodes, r.weight, k, llo, lhi, c)

	take := func(it *placeItem, node, at int) {
		it.set = append(it.set, node)
		it.pos = at
		cur[node]++
	}

	// Leaders first, so that preferred leaders are spread by their own
	// bound and not by whatever the followers left over.
	for i := range items {
		it := &items[i]
		from := r.start(it.hash)
		node, at, ok := r.walk(from, func(nd int) bool {
			return leaders[nd] < lcaps[nd] && cur[nd] < caps[nd]
		})
		if !ok {
			// Every node with spare load capacity leads its share already:
			// the one leading least relative to its weight takes the key.
			node, ok = r.leastLoaded(leaders, func(nd int) bool { return cur[nd] < caps[nd] })
			if !ok {
				node, _ = r.leastLoaded(cur, func(int) bool { return true })
			}
			at = from
		}
		leaders[node]++
		take(it, node, at)
	}

	// Then one pass per follower rank, each walk continuing clockwise after
	// the key's previous replica.
	for rank := 1; rank < replicas; rank++ {
		for i := range items {
			it := &items[i]
			node, at, ok := r.walk((it.pos+1)%len(r.points), func(nd int) bool {
				return cur[nd] < caps[nd] && !it.has(nd)
			})
			if !ok {
				// Every node with spare capacity is in this key's set
				// already. Free a full node by moving one follower of
				// another key onto a node with spare capacity (load
				// unchanged for the full node, +1 within capacity for the
				// other); only if no such swap exists does the bound give.
				at = it.pos
				if node, ok = swapFollower(r, items, it, cur, caps); !ok {
					node, _ = r.leastLoaded(cur, func(nd int) bool { return !it.has(nd) })
				}
			}
			take(it, node, at)
		}
	}

	for _, it := range items {
		ids := make([]uint64, len(it.set))
		for j, nd := range it.set {
			ids[j] = r.nodes[nd].ID
		}
		out[it.key] = ids
	}
	return out
}

// replaceReplica picks the node that should take over a replica of key from
// a node that left its set: the first node clockwise from the key's position
// that is not in have and has spare capacity, capacity being
// ceil(c × T × w_i / W) with T the load of the candidate nodes plus one (load
// of IDs not in nodes, such as the dead node, is not counted). If every node
// outside have is at capacity, the least loaded relative to its weight takes
// it. ok is false only when every node is in have. c ≤ 1 means 1.25.
func replaceReplica(nodes []placeNode, key string, have []uint64, c float64, load map[uint64]int) (uint64, bool) {
	c = normalizeC(c)
	r := newRing(nodes)
	if len(r.nodes) == 0 {
		return 0, false
	}
	excluded := make([]bool, len(r.nodes))
	cur := make([]int, len(r.nodes))
	total := 1
	for i, nd := range r.nodes {
		for _, h := range have {
			if h == nd.ID {
				excluded[i] = true
			}
		}
		cur[i] = max(0, load[nd.ID])
		total += cur[i]
	}
	node, _, ok := r.walk(r.start(keyHash(key)), func(nd int) bool {
		capacity := int(math.Ceil(c * float64(total) * r.nodes[nd].Weight / r.weight))
		return !excluded[nd] && cur[nd] < capacity
	})
	if !ok {
		node, ok = r.leastLoaded(cur, func(nd int) bool { return !excluded[nd] })
	}
	if !ok {
		return 0, false
	}
	return r.nodes[node].ID, true
}
