package conf

import (
	"os"
	"reflect"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"gopkg.in/yaml.v3"
)

const sample = "weir.yaml"

// The sample sets every key to its default, so loading it changes nothing.
func TestSampleEqualsDefault(t *testing.T) {
	data, err := os.ReadFile(sample)
	require.NoError(t, err)

	// The file alone, before derived defaults: exactly Default().
	l := loader{c: Default(), from: map[string]string{}, failed: map[string]bool{}}
	l.yaml(sample, data)
	require.NoError(t, l.probs.err())
	assert.Equal(t, Default(), l.c)
	assert.Len(t, l.from, len(keys), "the sample sets every key")

	// Loaded, with no env or flags.
	c, err := Load(sample, nil, nil)
	require.NoError(t, err)
	assert.Equal(t, Default().WithDefaults(), c)
}

// Every key appears in the sample, in the struct's order, with a comment
// that states its default.
func TestSampleHasEveryKey(t *testing.T) {
	data, err := os.ReadFile(sample)
	require.NoError(t, err)
	var doc yaml.Node
	require.NoError(t, yaml.Unmarshal(data, &doc))

	var paths []string
	var walk func(m *yaml.Node, prefix string)
	walk = func(m *yaml.Node, prefix string) {
		for i := 0; i+1 < len(m.Content); i += 2 {
			k, v := m.Content[i], m.Content[i+1]
			path := prefix + k.Value
			if v.Kind == yaml.MappingNode {
				walk(v, path+".")
				continue
			}
			paths = append(paths, path)
			comment := k.HeadComment + v.LineComment
			assert.NotEmpty(t, comment, "%s has no comment in %s", path, sample)
			assert.Contains(t, comment, "Default ", "%s: comment should state the default", path)
			if kk := keyByPath[path]; kk != nil {
				if def := kk.field(Default()); !def.IsZero() && kk.typ.Kind() != reflect.Slice {
					assert.Contains(t, comment, "Default "+kk.format(def), "%s: comment's default", path)
				}
			}
		}
	}
	walk(doc.Content[0], "")

	want := make([]string, len(keys))
	for i, k := range keys {
		want[i] = k.path
	}
	assert.Equal(t, want, paths)
	assert.Contains(t, string(data), "advertise: <reachable-host>:6570", "header explains listening on all interfaces")
	assert.True(t, strings.Contains(string(data), "WEIR_"), "header explains env vars")
}
