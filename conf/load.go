package conf

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"reflect"
	"strings"

	"github.com/spf13/pflag"
	"gopkg.in/yaml.v3"
)

// Load builds a validated Config: Default(), then the YAML file at path
// ("" for none), then the WEIR_* variables in env (formatted like
// os.Environ), then the flags BindFlags registered on fs that were set
// (fs may be nil). Every problem found on the way is returned at once, in
// a Problems error; a file that cannot be read is an error of its own.
func Load(path string, env []string, fs *pflag.FlagSet) (*Config, error) {
	l := loader{c: Default(), from: map[string]string{}, failed: map[string]bool{}}
	if path != "" {
		data, err := os.ReadFile(path)
		if err != nil {
			return nil, fmt.Errorf("conf: read config file: %w", err)
		}
		l.yaml(path, data)
	}
	l.env(env)
	l.flags(fs)
	l.c.fillDerived()
	for _, p := range l.c.problems() {
		if l.failed[p.Key] {
			continue // its value did not parse; that problem is reported already
		}
		p.Source = l.from[p.Key]
		l.probs = append(l.probs, p)
	}
	if err := l.probs.err(); err != nil {
		return nil, err
	}
	return l.c, nil
}

// loader layers sources onto c, remembering where each key's value came
// from so problems found later can say.
type loader struct {
	c      *Config
	from   map[string]string // key path → source of its value
	failed map[string]bool   // key paths whose value did not parse
	probs  Problems
}

func (l *loader) problem(k *key, source string, err error) {
	path := ""
	if k != nil {
		path = k.path
		l.failed[path] = true
	}
	l.probs = append(l.probs, &KeyError{Key: path, Source: source, Err: err})
}

func (l *loader) set(k *key, source string, v reflect.Value) {
	k.field(l.c).Set(v)
	l.from[k.path] = source
	delete(l.failed, k.path) // a later layer's good value replaces a bad one
}

// yaml decodes a config file onto l.c. It walks the YAML tree itself,
// rather than letting yaml.v3 decode into the struct, so that every
// unknown key and bad value is reported (not just the first), by its key
// path, and values parse exactly as env and flags do.
func (l *loader) yaml(name string, data []byte) {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil {
		if !errors.Is(err, io.EOF) { // EOF: an empty file sets nothing
			l.problem(nil, name, err)
		}
		return
	}
	if err := dec.Decode(new(yaml.Node)); !errors.Is(err, io.EOF) {
		l.problem(nil, name, errors.New("want one YAML document, found more"))
		return
	}
	root := resolve(doc.Content[0])
	if isNull(root) {
		return
	}
	if root.Kind != yaml.MappingNode {
		l.problem(nil, fmt.Sprintf("%s:%d", name, root.Line), errors.New("the top level must be a mapping of keys to values"))
		return
	}
	l.mapping(name, root, reflect.TypeFor[Config](), "")
}

func (l *loader) mapping(name string, m *yaml.Node, t reflect.Type, prefix string) {
	seen := map[string]int{} // key → line
	for i := 0; i+1 < len(m.Content); i += 2 {
		kn, vn := resolve(m.Content[i]), resolve(m.Content[i+1])
		src := fmt.Sprintf("%s:%d", name, kn.Line)
		if kn.Kind != yaml.ScalarNode {
			l.problem(nil, src, errors.New("keys must be strings"))
			continue
		}
		path := prefix + kn.Value
		if line, dup := seen[kn.Value]; dup {
			l.probs = append(l.probs, &KeyError{Key: path, Source: src, Err: fmt.Errorf("set twice (first on line %d)", line)})
			continue
		}
		seen[kn.Value] = kn.Line
		f, ok := fieldByYAMLName(t, kn.Value)
		if !ok {
			l.probs = append(l.probs, &KeyError{Key: path, Source: src,
				Err: errors.New("unknown key" + suggest(path, append(siblingPaths(t, prefix), allPaths()...), "."+kn.Value))})
			continue
		}
		if f.Type.Kind() == reflect.Struct {
			switch {
			case isNull(vn): // "grpc:" with nothing under it sets nothing
			case vn.Kind != yaml.MappingNode:
				l.probs = append(l.probs, &KeyError{Key: path, Source: src, Err: errors.New("must be a mapping of keys to values")})
			default:
				l.mapping(name, vn, f.Type, path+".")
			}
			continue
		}
		k := keyByPath[path]
		v, err := k.decode(vn)
		if err != nil {
			l.problem(k, src, err)
			continue
		}
		l.set(k, src, v)
	}
}

func fieldByYAMLName(t reflect.Type, name string) (reflect.StructField, bool) {
	for i := range t.NumField() {
		f := t.Field(i)
		if n, _, _ := strings.Cut(f.Tag.Get("yaml"), ","); n == name {
			return f, true
		}
	}
	return reflect.StructField{}, false
}

func allPaths() []string {
	ps := make([]string, len(keys))
	for i, k := range keys {
		ps[i] = k.path
	}
	return ps
}

func siblingPaths(t reflect.Type, prefix string) []string {
	var ps []string
	for i := range t.NumField() {
		n, _, _ := strings.Cut(t.Field(i).Tag.Get("yaml"), ",")
		ps = append(ps, prefix+n)
	}
	return ps
}

// env applies the WEIR_* variables in env. Later entries win.
func (l *loader) env(env []string) {
	for _, kv := range env {
		name, val, _ := strings.Cut(kv, "=")
		if !strings.HasPrefix(name, envPrefix) || envReserved[name] {
			continue
		}
		src := "env " + name
		k := keyByEnv[name]
		if k == nil {
			envs := make([]string, len(keys))
			for i, k := range keys {
				envs[i] = k.env
			}
			// WEIR_SHARD_COUNT finds WEIR_STREAM_SHARD_COUNT by its suffix.
			l.problem(nil, src, errors.New("matches no config key"+suggest(name, envs, "_"+strings.TrimPrefix(name, envPrefix))))
			continue
		}
		v, err := k.parse(val)
		if err != nil {
			l.problem(k, src, err)
			continue
		}
		l.set(k, src, v)
	}
}

// flags applies the flags of fs that were set. It reads flags BindFlags
// registered, and copes with a same-named flag registered otherwise (a
// pflag.SliceValue gives its items, anything else its String()).
func (l *loader) flags(fs *pflag.FlagSet) {
	if fs == nil {
		return
	}
	for _, k := range keys {
		f := fs.Lookup(k.flag)
		if f == nil || !f.Changed {
			continue
		}
		src := "flag --" + k.flag
		var v reflect.Value
		var err error
		if sv, ok := f.Value.(pflag.SliceValue); ok && k.isList() {
			v = k.list(trimItems(sv.GetSlice()))
		} else {
			v, err = k.parse(f.Value.String())
		}
		if err != nil {
			l.problem(k, src, err)
			continue
		}
		l.set(k, src, v)
	}
}

func trimItems(items []string) []string {
	var out []string
	for _, it := range items {
		if it = strings.TrimSpace(it); it != "" {
			out = append(out, it)
		}
	}
	return out
}

// BindFlags registers one flag per config key on fs: the key path with "."
// replaced by "-" (--grpc-listen, --store-max-record-size), usage text the
// field's doc. Values are checked as they are parsed, and Load applies only
// the flags that were set, so flags left alone never override the file or
// env. List flags (--etcd-endpoints) take a comma-separated list and may be
// repeated. It does not register --config; the command owns that.
func BindFlags(fs *pflag.FlagSet) {
	for _, k := range keys {
		var v pflag.Value
		if k.isList() {
			v = &listFlag{k: k}
		} else {
			v = &flagValue{k: k}
		}
		f := fs.VarPF(v, k.flag, "", k.doc)
		if k.typ.Kind() == reflect.Bool {
			f.NoOptDefVal = "true" // --enable-tls alone means true
		}
	}
}

// flagValue is a scalar key's flag. It keeps the text as given; Load
// parses it again with the same parser as env.
type flagValue struct {
	k    *key
	text string
}

func (f *flagValue) String() string { return f.text }

func (f *flagValue) Set(s string) error {
	if _, err := f.k.parse(s); err != nil {
		return err
	}
	f.text = s
	return nil
}

func (f *flagValue) Type() string { return flagType(f.k) }

// listFlag is a list key's flag: the first use replaces the default, later
// uses append, as pflag's StringSlice does.
type listFlag struct {
	k     *key
	items []string
	set   bool
}

func (f *listFlag) String() string { return strings.Join(f.items, ",") }

func (f *listFlag) Set(s string) error {
	v, _ := f.k.parse(s) // a list of strings always parses
	items := v.Interface().([]string)
	if !f.set {
		f.items, f.set = nil, true
	}
	f.items = append(f.items, items...)
	return nil
}

func (f *listFlag) Type() string              { return "strings" }
func (f *listFlag) GetSlice() []string        { return append([]string(nil), f.items...) }
func (f *listFlag) Append(s string) error     { return f.Set(s) }
func (f *listFlag) Replace(ss []string) error { f.items, f.set = trimItems(ss), true; return nil }

var _ pflag.SliceValue = (*listFlag)(nil)

// flagType is the value name pflag shows in help ("--grpc-listen string").
func flagType(k *key) string {
	switch k.typ {
	case durationType:
		return "duration"
	case byteSizeType:
		return "size"
	}
	return k.typ.Kind().String()
}
