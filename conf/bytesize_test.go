package conf

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"gopkg.in/yaml.v3"
)

func TestParseByteSize(t *testing.T) {
	for _, tc := range []struct {
		in      string
		want    ByteSize
		wantErr string
	}{
		{in: "0", want: 0},
		{in: "1048576", want: MiB},
		{in: "512KiB", want: 512 * KiB},
		{in: "1MiB", want: MiB},
		{in: " 1 MiB ", want: MiB},
		{in: "8MB", want: 8e6},
		{in: "8mb", want: 8e6},
		{in: "1kb", want: 1000},
		{in: "1GiB", want: GiB},
		{in: "2TiB", want: 2 * TiB},
		{in: "100B", want: 100},
		{in: "", wantErr: "invalid size"},
		{in: "MiB", wantErr: "invalid size"},
		{in: "-1", wantErr: "invalid size"},
		{in: "1.5MiB", wantErr: `unknown unit ".5MiB"`},
		{in: "12XB", wantErr: `unknown unit "XB"`},
		{in: "1M", wantErr: `unknown unit "M"`},
		{in: "99999999999999999999", wantErr: "too large"},
		{in: "9000000TiB", wantErr: "too large"},
	} {
		t.Run(tc.in, func(t *testing.T) {
			got, err := ParseByteSize(tc.in)
			if tc.wantErr != "" {
				require.ErrorContains(t, err, tc.wantErr)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tc.want, got)
		})
	}
}

func TestByteSizeString(t *testing.T) {
	for _, tc := range []struct {
		in   ByteSize
		want string
	}{
		{0, "0"},
		{1, "1"},
		{512, "512"},
		{1000, "1KB"},
		{1024, "1KiB"}, // tie with "1024": the unit wins
		{1536, "1536"},
		{512 * KiB, "512KiB"},
		{MiB, "1MiB"},
		{8 * MB, "8MB"},
		{8 * MiB, "8MiB"},
		{GiB, "1GiB"},
		{3 * TB, "3TB"},
		{MiB + 1, "1048577"},
	} {
		assert.Equal(t, tc.want, tc.in.String(), "ByteSize(%d)", int64(tc.in))
		back, err := ParseByteSize(tc.in.String())
		require.NoError(t, err)
		assert.Equal(t, tc.in, back, "round trip of %s", tc.in)
	}
}

func TestByteSizeYAML(t *testing.T) {
	var v struct {
		A ByteSize `yaml:"a"`
		B ByteSize `yaml:"b"`
	}
	require.NoError(t, yaml.Unmarshal([]byte("a: 4096\nb: 8MiB\n"), &v))
	assert.Equal(t, ByteSize(4096), v.A)
	assert.Equal(t, 8*MiB, v.B)

	out, err := yaml.Marshal(v)
	require.NoError(t, err)
	assert.Equal(t, "a: 4KiB\nb: 8MiB\n", string(out))

	require.ErrorContains(t, yaml.Unmarshal([]byte("a: lots\n"), &v), "invalid size")
}
