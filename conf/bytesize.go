package conf

import (
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
)

// ByteSize is a size in bytes. In YAML, env and flags it is an integer
// (bytes) or an integer with a unit: B, KB/MB/GB/TB (powers of 1000) or
// KiB/MiB/GiB/TiB (powers of 1024), case-insensitive, with optional space:
// "512KiB", "1 MiB", "8MB". Fractions ("1.5MiB") and bare K/M/G are
// refused: the first is rarely exact, the second ambiguous.
type ByteSize int64

// Binary and decimal size units.
const (
	B   ByteSize = 1
	KiB ByteSize = 1 << 10
	MiB ByteSize = 1 << 20
	GiB ByteSize = 1 << 30
	TiB ByteSize = 1 << 40
	KB  ByteSize = 1e3
	MB  ByteSize = 1e6
	GB  ByteSize = 1e9
	TB  ByteSize = 1e12
)

// sizeUnits is in the order String prefers on a tie in length: larger
// units first, binary before decimal, bare bytes last.
var sizeUnits = []struct {
	name string
	size ByteSize
}{
	{"TiB", TiB}, {"TB", TB},
	{"GiB", GiB}, {"GB", GB},
	{"MiB", MiB}, {"MB", MB},
	{"KiB", KiB}, {"KB", KB},
	{"B", B},
}

// ParseByteSize parses s as described on ByteSize.
func ParseByteSize(s string) (ByteSize, error) {
	t := strings.TrimSpace(s)
	i := 0
	for i < len(t) && t[i] >= '0' && t[i] <= '9' {
		i++
	}
	if i == 0 {
		return 0, fmt.Errorf("invalid size %q: want bytes or a whole number with a unit, like 512KiB or 8MB", s)
	}
	n, err := strconv.ParseInt(t[:i], 10, 64)
	if err != nil {
		return 0, fmt.Errorf("invalid size %q: too large", s)
	}
	unit := strings.TrimSpace(t[i:])
	if unit == "" {
		return ByteSize(n), nil
	}
	for _, u := range sizeUnits {
		if strings.EqualFold(unit, u.name) {
			if n > math.MaxInt64/int64(u.size) {
				return 0, fmt.Errorf("invalid size %q: too large", s)
			}
			return ByteSize(n) * u.size, nil
		}
	}
	return 0, fmt.Errorf("invalid size %q: unknown unit %q (want B, KiB, MiB, GiB, TiB, KB, MB, GB or TB)", s, unit)
}

// String prints b in its shortest exact form: "0", "512", "1KB", "1MiB",
// "1536". On a tie the larger, then the binary, unit wins ("1KiB", not
// "1024").
func (b ByteSize) String() string {
	if b <= 0 {
		return strconv.FormatInt(int64(b), 10)
	}
	best := ""
	for _, u := range sizeUnits {
		if b%u.size != 0 {
			continue
		}
		s := strconv.FormatInt(int64(b/u.size), 10)
		if u.size != B {
			s += u.name
		}
		if best == "" || len(s) < len(best) {
			best = s
		}
	}
	return best
}

// MarshalText implements encoding.TextMarshaler (so YAML and JSON print
// String's form).
func (b ByteSize) MarshalText() ([]byte, error) { return []byte(b.String()), nil }

// UnmarshalText implements encoding.TextUnmarshaler with ParseByteSize.
// yaml.v3 uses it for integers and strings alike.
func (b *ByteSize) UnmarshalText(text []byte) error {
	if b == nil {
		return errors.New("conf: UnmarshalText on nil *ByteSize")
	}
	v, err := ParseByteSize(string(text))
	if err != nil {
		return err
	}
	*b = v
	return nil
}
