package wire

import (
	"errors"
	"math/big"
	"strconv"
	"strings"
	"testing"
)

func mustBig(t testing.TB, s string) *big.Int {
	t.Helper()
	v, ok := new(big.Int).SetString(s, 10)
	if !ok {
		t.Fatalf("bad literal %q", s)
	}
	return v
}

func TestHashKey(t *testing.T) {
	for _, tc := range []struct{ key, want string }{
		{"", "281949768489412648962353822266799178366"},
		{"key-1", "44775357070821016797045618461742138278"},
	} {
		if got := FormatKey(HashKey(tc.key)); got != tc.want {
			t.Errorf("HashKey(%q) = %s, want %s", tc.key, got, tc.want)
		}
	}
}

// The literals were computed independently (python3 integer arithmetic), so
// this checks devideKeySpace, not a restatement of ShardRanges.
func TestShardRangesLiterals(t *testing.T) {
	const max = "340282366920938463463374607431768211455"
	want := map[uint32][][2]string{
		1: {{"0", max}},
		2: {
			{"0", "170141183460469231731687303715884105726"},
			{"170141183460469231731687303715884105727", max},
		},
		3: {
			{"0", "113427455640312821154458202477256070484"},
			{"113427455640312821154458202477256070485", "226854911280625642308916404954512140969"},
			{"226854911280625642308916404954512140970", max},
		},
		4: {
			{"0", "85070591730234615865843651857942052862"},
			{"85070591730234615865843651857942052863", "170141183460469231731687303715884105725"},
			{"170141183460469231731687303715884105726", "255211775190703847597530955573826158588"},
			{"255211775190703847597530955573826158589", max},
		},
	}
	for n := uint32(1); n <= 4; n++ {
		got := ShardRanges(n)
		if len(got) != len(want[n]) {
			t.Fatalf("ShardRanges(%d) has %d ranges, want %d", n, len(got), len(want[n]))
		}
		for i, r := range got {
			if FormatKey(r.Start) != want[n][i][0] || FormatKey(r.End) != want[n][i][1] {
				t.Errorf("ShardRanges(%d)[%d] = %s, want [%s, %s]", n, i, r, want[n][i][0], want[n][i][1])
			}
		}
	}
}

func TestShardRangesTile(t *testing.T) {
	one := big.NewInt(1)
	for n := uint32(1); n <= 64; n++ {
		rs := ShardRanges(n)
		if uint32(len(rs)) != n {
			t.Fatalf("ShardRanges(%d) has %d ranges", n, len(rs))
		}
		if rs[0].Start.Sign() != 0 {
			t.Errorf("n=%d: first range starts at %s", n, rs[0].Start)
		}
		if rs[n-1].End.Cmp(maxKey) != 0 {
			t.Errorf("n=%d: last range ends at %s", n, rs[n-1].End)
		}
		for i, r := range rs {
			if r.Start.Cmp(r.End) > 0 {
				t.Errorf("n=%d: range %d %s is empty", n, i, r)
			}
			if i > 0 && new(big.Int).Add(rs[i-1].End, one).Cmp(r.Start) != 0 {
				t.Errorf("n=%d: range %d %s does not follow range %d %s", n, i, r, i-1, rs[i-1])
			}
		}
		// Each range must be fresh memory: a caller may mutate one.
		rs[0].End.SetInt64(-1)
		if again := ShardRanges(n); again[0].End.Sign() < 0 || maxKey.Sign() <= 0 {
			t.Fatalf("n=%d: ShardRanges shares big.Int values", n)
		}
	}
}

func TestShardRangesZero(t *testing.T) {
	if rs := ShardRanges(0); rs != nil {
		t.Fatalf("ShardRanges(0) = %v, want nil", rs)
	}
}

func TestRangeContains(t *testing.T) {
	r := Range{Start: big.NewInt(10), End: big.NewInt(20)}
	for _, tc := range []struct {
		h    *big.Int
		want bool
	}{
		{big.NewInt(9), false}, {big.NewInt(10), true}, {big.NewInt(15), true},
		{big.NewInt(20), true}, {big.NewInt(21), false}, {nil, false},
	} {
		if got := r.Contains(tc.h); got != tc.want {
			t.Errorf("%s.Contains(%v) = %v, want %v", r, tc.h, got, tc.want)
		}
	}
}

func TestParseKeyValid(t *testing.T) {
	for _, s := range []string{"0", "1", "10", "170141183460469231731687303715884105727", FormatKey(maxKey)} {
		k, err := ParseKey(s)
		if err != nil {
			t.Fatalf("ParseKey(%q): %v", s, err)
		}
		if FormatKey(k) != s {
			t.Errorf("ParseKey(%q) round-trips to %q", s, FormatKey(k))
		}
	}
}

func TestParseKeyInvalid(t *testing.T) {
	for _, s := range []string{
		"", "-1", "+1", "01", "00", " 1", "1 ", "1_000", "0x10", "1e3", "١", "abc",
		"340282366920938463463374607431768211456",  // 2^128
		"999999999999999999999999999999999999999",  // 39 digits, too big
		"1000000000000000000000000000000000000000", // 40 digits
	} {
		_, err := ParseKey(s)
		if !errors.Is(err, ErrInvalidKey) {
			t.Errorf("ParseKey(%q) error = %v, want ErrInvalidKey", s, err)
			continue
		}
		if !strings.Contains(err.Error(), strconv.Quote(s)) {
			t.Errorf("ParseKey(%q) error %q does not quote the text", s, err)
		}
	}
}

func TestFormatKeyCanonical(t *testing.T) {
	for _, s := range []string{"0", "7", "281949768489412648962353822266799178366"} {
		if got := FormatKey(mustBig(t, s)); got != s {
			t.Errorf("FormatKey(%s) = %q", s, got)
		}
	}
}

func TestHashKeyMatchesHash128(t *testing.T) {
	for i := range 1000 {
		key := "k" + strings.Repeat("x", i%7) + string(rune('a'+i%26)) + FormatKey(big.NewInt(int64(i)))
		if toU128(HashKey(key)) != hash128(key) {
			t.Fatalf("hash128(%q) disagrees with HashKey", key)
		}
	}
}
