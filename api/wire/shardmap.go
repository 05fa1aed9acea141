package wire

import (
	"cmp"
	"fmt"
	"math/big"
	"slices"
	"sort"

	"github.com/weir-log/weir/api/hstreampb"
)

// ShardMap routes partition keys to the shards of one stream. It is immutable
// after NewShardMap and safe for concurrent use.
type ShardMap struct {
	shards []*hstreampb.Shard // in range order
	starts []u128             // starts[i] is the first point of shards[i]; starts[0] is 0
}

// NewShardMap checks that the shards' hash ranges are canonical decimal text
// (ParseKey) and tile 0…2^128−1 exactly, with no gap, no overlap and no
// shard id listed twice, and returns a map over them. Errors wrap
// ErrInvalidShards (and ErrInvalidKey for bad text) and name the shard.
//
// Every shard given is used; callers that hold HStreamDB shard lists with
// inactive (split) shards drop those first, as the clients do. The map keeps
// the *Shard pointers it is given; callers must not modify them afterwards.
func NewShardMap(shards []*hstreampb.Shard) (*ShardMap, error) {
	if len(shards) == 0 {
		return nil, fmt.Errorf("%w: no shards", ErrInvalidShards)
	}
	type entry struct {
		shard      *hstreampb.Shard
		start, end *big.Int
	}
	entries := make([]entry, len(shards))
	seen := make(map[uint64]struct{}, len(shards))
	for i, s := range shards {
		if s == nil {
			return nil, fmt.Errorf("%w: shard at index %d is nil", ErrInvalidShards, i)
		}
		id := s.GetShardId()
		if _, dup := seen[id]; dup {
			return nil, fmt.Errorf("%w: shard %d listed twice", ErrInvalidShards, id)
		}
		seen[id] = struct{}{}
		start, err := ParseKey(s.GetStartHashRangeKey())
		if err != nil {
			return nil, fmt.Errorf("%w: shard %d startHashRangeKey: %w", ErrInvalidShards, id, err)
		}
		end, err := ParseKey(s.GetEndHashRangeKey())
		if err != nil {
			return nil, fmt.Errorf("%w: shard %d endHashRangeKey: %w", ErrInvalidShards, id, err)
		}
		if start.Cmp(end) > 0 {
			return nil, fmt.Errorf("%w: shard %d range [%s, %s] starts after it ends",
				ErrInvalidShards, id, start, end)
		}
		entries[i] = entry{s, start, end}
	}
	slices.SortFunc(entries, func(a, b entry) int {
		return cmp.Or(a.start.Cmp(b.start), a.end.Cmp(b.end))
	})

	if first := entries[0]; first.start.Sign() != 0 {
		return nil, fmt.Errorf("%w: no shard starts at 0 (lowest is shard %d at %s)",
			ErrInvalidShards, first.shard.GetShardId(), first.start)
	}
	m := &ShardMap{
		shards: make([]*hstreampb.Shard, len(entries)),
		starts: make([]u128, len(entries)),
	}
	one := big.NewInt(1)
	for i, e := range entries {
		if i > 0 {
			prev := entries[i-1]
			want := new(big.Int).Add(prev.end, one)
			switch c := e.start.Cmp(want); {
			case c < 0:
				return nil, fmt.Errorf("%w: shard %d [%s, %s] overlaps shard %d [%s, %s]",
					ErrInvalidShards, e.shard.GetShardId(), e.start, e.end,
					prev.shard.GetShardId(), prev.start, prev.end)
			case c > 0:
				return nil, fmt.Errorf("%w: gap [%s, %s] between shard %d (ends %s) and shard %d (starts %s)",
					ErrInvalidShards, want, new(big.Int).Sub(e.start, one),
					prev.shard.GetShardId(), prev.end, e.shard.GetShardId(), e.start)
			}
		}
		m.shards[i] = e.shard
		m.starts[i] = toU128(e.start)
	}
	if last := entries[len(entries)-1]; last.end.Cmp(maxKey) != 0 {
		return nil, fmt.Errorf("%w: last shard %d ends at %s, not 2^128-1 (%s)",
			ErrInvalidShards, last.shard.GetShardId(), last.end, maxKey)
	}
	return m, nil
}

// Lookup returns the id of the shard whose inclusive range contains
// HashKey(key). It does not allocate.
func (m *ShardMap) Lookup(key string) uint64 {
	h := hash128(key)
	// First shard starting after h; the one before it holds h. starts[0] is 0,
	// so i ≥ 1.
	i := sort.Search(len(m.starts), func(i int) bool { return h.less(m.starts[i]) })
	return m.shards[i-1].GetShardId()
}

// Shards returns the shards in range order. The slice is a copy; the *Shard
// values are shared and must not be modified.
func (m *ShardMap) Shards() []*hstreampb.Shard {
	return slices.Clone(m.shards)
}
