package wire

import (
	"errors"
	"fmt"
	"math/big"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/weir-log/weir/api/hstreampb"
)

// streamShards returns the shards CreateStream(shardCount=n) would make, with
// ids 1000+i so that ids and positions differ.
func streamShards(n uint32) []*hstreampb.Shard {
	var out []*hstreampb.Shard
	for i, r := range ShardRanges(n) {
		out = append(out, &hstreampb.Shard{
			StreamName:        "s",
			ShardId:           uint64(1000 + i),
			StartHashRangeKey: FormatKey(r.Start),
			EndHashRangeKey:   FormatKey(r.End),
			Epoch:             uint64(n),
			IsActive:          true,
		})
	}
	return out
}

func linearLookup(t *testing.T, shards []*hstreampb.Shard, key string) uint64 {
	t.Helper()
	h := HashKey(key)
	for _, s := range shards {
		r := Range{Start: mustBig(t, s.StartHashRangeKey), End: mustBig(t, s.EndHashRangeKey)}
		if r.Contains(h) {
			return s.ShardId
		}
	}
	t.Fatalf("no shard holds key %q", key)
	return 0
}

func TestShardMapLookupMatchesLinearScan(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for _, n := range []uint32{1, 2, 3, 4, 7, 16, 64} {
		shards := streamShards(n)
		shuffled := append([]*hstreampb.Shard(nil), shards...)
		rng.Shuffle(len(shuffled), func(i, j int) { shuffled[i], shuffled[j] = shuffled[j], shuffled[i] })
		m, err := NewShardMap(shuffled)
		if err != nil {
			t.Fatalf("n=%d: %v", n, err)
		}
		hits := map[uint64]int{}
		for i := range 5000 {
			key := fmt.Sprintf("key-%d-%x", i, rng.Uint64())
			if i == 0 {
				key = ""
			}
			got, want := m.Lookup(key), linearLookup(t, shards, key)
			if got != want {
				t.Fatalf("n=%d: Lookup(%q) = %d, linear scan says %d", n, key, got, want)
			}
			hits[got]++
		}
		if n <= 16 && len(hits) != int(n) {
			t.Errorf("n=%d: 5000 keys reached only %d shards", n, len(hits))
		}
	}
}

// Keys whose hash is exactly a range boundary go to the range that includes it.
func TestShardMapLookupBoundaries(t *testing.T) {
	const key = "key-1"
	h := HashKey(key)
	one := big.NewInt(1)
	max := FormatKey(maxKey)
	for _, tc := range []struct {
		name    string
		splitAt *big.Int // second shard starts here
		want    uint64
	}{
		{"hash is the first key of shard 2", h, 2},
		{"hash is the last key of shard 1", new(big.Int).Add(h, one), 1},
	} {
		m, err := NewShardMap([]*hstreampb.Shard{
			{ShardId: 1, StartHashRangeKey: "0", EndHashRangeKey: FormatKey(new(big.Int).Sub(tc.splitAt, one))},
			{ShardId: 2, StartHashRangeKey: FormatKey(tc.splitAt), EndHashRangeKey: max},
		})
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if got := m.Lookup(key); got != tc.want {
			t.Errorf("%s: Lookup = %d, want %d", tc.name, got, tc.want)
		}
	}
	// Single-point shards at both ends of the key space.
	m, err := NewShardMap([]*hstreampb.Shard{
		{ShardId: 7, StartHashRangeKey: "0", EndHashRangeKey: "0"},
		{ShardId: 8, StartHashRangeKey: "1", EndHashRangeKey: FormatKey(new(big.Int).Sub(maxKey, one))},
		{ShardId: 9, StartHashRangeKey: max, EndHashRangeKey: max},
	})
	if err != nil {
		t.Fatal(err)
	}
	if got := m.Lookup(key); got != 8 {
		t.Errorf("Lookup = %d, want 8", got)
	}
}

func TestShardMapShardsInRangeOrder(t *testing.T) {
	shards := streamShards(5)
	rev := []*hstreampb.Shard{shards[4], shards[2], shards[0], shards[3], shards[1]}
	m, err := NewShardMap(rev)
	if err != nil {
		t.Fatal(err)
	}
	got := m.Shards()
	for i := range shards {
		if got[i] != shards[i] {
			t.Fatalf("Shards()[%d] = shard %d, want shard %d", i, got[i].ShardId, shards[i].ShardId)
		}
	}
	got[0] = nil
	if m.Shards()[0] == nil {
		t.Fatal("Shards() returned the map's own slice")
	}
}

func TestNewShardMapRejects(t *testing.T) {
	max := FormatKey(maxKey)
	maxMinus1 := FormatKey(new(big.Int).Sub(maxKey, big.NewInt(1)))
	sh := func(id uint64, start, end string) *hstreampb.Shard {
		return &hstreampb.Shard{ShardId: id, StartHashRangeKey: start, EndHashRangeKey: end, IsActive: true}
	}
	for _, tc := range []struct {
		name   string
		shards []*hstreampb.Shard
		is     error
		want   string // substring of the error
	}{
		{"no shards", nil, ErrInvalidShards, "no shards"},
		{"nil shard", []*hstreampb.Shard{sh(1, "0", max), nil}, ErrInvalidShards, "index 1 is nil"},
		{"duplicate id", []*hstreampb.Shard{sh(1, "0", "9"), sh(1, "10", max)}, ErrInvalidShards, "shard 1 listed twice"},
		{"leading zero", []*hstreampb.Shard{sh(1, "0", "09"), sh(2, "10", max)}, ErrInvalidKey, `wire: invalid shard ranges: shard 1 endHashRangeKey: wire: invalid hash range key "09": leading zero`},
		{"empty start", []*hstreampb.Shard{sh(3, "", max)}, ErrInvalidKey, "shard 3 startHashRangeKey"},
		{"negative", []*hstreampb.Shard{sh(3, "-1", max)}, ErrInvalidKey, `"-1"`},
		{"hex", []*hstreampb.Shard{sh(3, "0", "0xff"), sh(4, "256", max)}, ErrInvalidKey, `"0xff"`},
		{"past 2^128-1", []*hstreampb.Shard{sh(3, "0", "340282366920938463463374607431768211456")}, ErrInvalidKey, "above 2^128-1"},
		{"start after end", []*hstreampb.Shard{sh(1, "0", "9"), sh(2, "20", "10"), sh(3, "11", max)}, ErrInvalidShards, "shard 2 range [20, 10] starts after it ends"},
		{"gap", []*hstreampb.Shard{sh(1, "0", "9"), sh(2, "11", max)}, ErrInvalidShards, "gap [10, 10] between shard 1 (ends 9) and shard 2 (starts 11)"},
		{"overlap", []*hstreampb.Shard{sh(1, "0", "10"), sh(2, "10", max)}, ErrInvalidShards, "shard 2 [10, " + max + "] overlaps shard 1 [0, 10]"},
		{"same range twice", []*hstreampb.Shard{sh(1, "0", max), sh(2, "0", max)}, ErrInvalidShards, "overlaps"},
		{"nested", []*hstreampb.Shard{sh(1, "0", max), sh(2, "5", "6")}, ErrInvalidShards, "shard 2 [5, 6] overlaps shard 1"},
		{"no start at 0", []*hstreampb.Shard{sh(4, "1", max)}, ErrInvalidShards, "no shard starts at 0 (lowest is shard 4 at 1)"},
		{"short of the end", []*hstreampb.Shard{sh(1, "0", "9"), sh(2, "10", maxMinus1)}, ErrInvalidShards, "last shard 2 ends at " + maxMinus1},
	} {
		m, err := NewShardMap(tc.shards)
		if m != nil || !errors.Is(err, tc.is) || !errors.Is(err, ErrInvalidShards) {
			t.Errorf("%s: NewShardMap = %v, %v; want error %v", tc.name, m, err, tc.is)
			continue
		}
		if !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: error %q does not mention %q", tc.name, err, tc.want)
		}
	}
}

func BenchmarkShardMapLookup(b *testing.B) {
	m, err := NewShardMap(streamShards(64))
	if err != nil {
		b.Fatal(err)
	}
	keys := make([]string, 1024)
	for i := range keys {
		keys[i] = fmt.Sprintf("device-%d", i)
	}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		m.Lookup(keys[i%len(keys)])
		i++
	}
}
