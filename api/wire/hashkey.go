package wire

import (
	"crypto/md5"
	"encoding/binary"
	"fmt"
	"math/big"
)

// maxKeyDigits is the length of 2^128−1 in base 10.
const maxKeyDigits = 39

// maxKey is 2^128−1, the last point of the key space. Never mutate it.
var maxKey = new(big.Int).Sub(new(big.Int).Lsh(big.NewInt(1), 128), big.NewInt(1))

// HashKey returns the point of the key space a partition key maps to: the MD5
// digest of the key's bytes read as a big-endian unsigned 128-bit integer
// (HStreamDB hashShardKey). The empty key is legal.
func HashKey(key string) *big.Int {
	sum := md5.Sum([]byte(key))
	return new(big.Int).SetBytes(sum[:])
}

// Range is an inclusive range [Start, End] of the key space.
type Range struct {
	Start, End *big.Int
}

// Contains reports whether Start ≤ h ≤ End. A nil h is in no range.
func (r Range) Contains(h *big.Int) bool {
	return h != nil && r.Start.Cmp(h) <= 0 && h.Cmp(r.End) <= 0
}

// String returns "[start, end]" in base 10.
func (r Range) String() string {
	return "[" + FormatKey(r.Start) + ", " + FormatKey(r.End) + "]"
}

// ShardRanges splits the key space 0…2^128−1 into n contiguous inclusive
// ranges exactly as HStreamDB's devideKeySpace does for CreateStream: with
// cnt = (2^128−1) div n, range i is [i·cnt, i·cnt+cnt−1], except the last,
// which ends at 2^128−1 and so absorbs the remainder.
//
// ShardRanges(0) returns nil; callers validate shardCount > 0 (InvalidArgument)
// before asking for ranges.
func ShardRanges(n uint32) []Range {
	if n == 0 {
		return nil
	}
	cnt := new(big.Int).Div(maxKey, new(big.Int).SetUint64(uint64(n)))
	out := make([]Range, n)
	for i := range out {
		start := new(big.Int).Mul(cnt, new(big.Int).SetUint64(uint64(i)))
		var end *big.Int
		if i == len(out)-1 {
			end = new(big.Int).Set(maxKey)
		} else {
			end = new(big.Int).Add(start, cnt)
			end.Sub(end, big.NewInt(1))
		}
		out[i] = Range{Start: start, End: end}
	}
	return out
}

// FormatKey returns the canonical text of a key-space point: base 10, no sign,
// no leading zeros (Haskell show), as carried in Shard.startHashRangeKey and
// Shard.endHashRangeKey. Only values in 0…2^128−1 are meaningful;
// FormatKey(nil) is "<nil>".
func FormatKey(k *big.Int) string {
	return k.String()
}

// ParseKey parses canonical base-10 text of a value in 0…2^128−1. It rejects
// the empty string, signs, spaces, leading zeros and values above 2^128−1:
// HStreamDB's Go client orders shards by comparing this text as bytes, which
// equals numeric order only for canonical text.
func ParseKey(s string) (*big.Int, error) {
	if s == "" {
		return nil, fmt.Errorf("%w %q: empty", ErrInvalidKey, s)
	}
	if len(s) > maxKeyDigits {
		return nil, fmt.Errorf("%w %q: more than %d digits", ErrInvalidKey, s, maxKeyDigits)
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return nil, fmt.Errorf("%w %q: byte %d is not a decimal digit", ErrInvalidKey, s, i)
		}
	}
	if len(s) > 1 && s[0] == '0' {
		return nil, fmt.Errorf("%w %q: leading zero", ErrInvalidKey, s)
	}
	k, ok := new(big.Int).SetString(s, 10)
	if !ok { // unreachable after the checks above; kept so a change there cannot return nil silently
		return nil, fmt.Errorf("%w %q: not base 10", ErrInvalidKey, s)
	}
	if k.Cmp(maxKey) > 0 {
		return nil, fmt.Errorf("%w %q: above 2^128-1", ErrInvalidKey, s)
	}
	return k, nil
}

// u128 is a key-space point as two machine words, used where big.Int would
// allocate (ShardMap.Lookup).
type u128 struct{ hi, lo uint64 }

func (a u128) less(b u128) bool {
	return a.hi < b.hi || (a.hi == b.hi && a.lo < b.lo)
}

// next returns a+1 and whether it wrapped past 2^128−1.
func (a u128) next() (u128, bool) {
	lo := a.lo + 1
	hi := a.hi
	if lo == 0 {
		hi++
	}
	return u128{hi, lo}, hi == 0 && lo == 0
}

func hash128(key string) u128 {
	sum := md5.Sum([]byte(key))
	return u128{binary.BigEndian.Uint64(sum[:8]), binary.BigEndian.Uint64(sum[8:])}
}

// toU128 converts k, which must be in 0…2^128−1.
func toU128(k *big.Int) u128 {
	var b [16]byte
	k.FillBytes(b[:])
	return u128{binary.BigEndian.Uint64(b[:8]), binary.BigEndian.Uint64(b[8:])}
}
