package conf

import (
	"bytes"
	"errors"
	"fmt"
	"reflect"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// A key is one leaf of Config. The table of keys is built once, by
// reflection over the yaml tags, and is the only place the YAML path, the
// env var and the flag of a field are related.
type key struct {
	path  string       // YAML path: "store.group-commit.max-bytes"
	env   string       // WEIR_STORE_GROUP_COMMIT_MAX_BYTES
	flag  string       // store-group-commit-max-bytes
	doc   string       // the field's doc tag, ending "(default …)"
	index []int        // reflect.Value.FieldByIndex from Config
	typ   reflect.Type // the field's type
}

const envPrefix = "WEIR_"

// envReserved are WEIR_* variables that are not config keys but not typos
// either: the command reads them itself.
var envReserved = map[string]bool{
	"WEIR_CONFIG":   true,
	"WEIR_ADDR":     true, // the client commands' server address
	"WEIR_TEST_LOG": true, // the test harness's log level

	"WEIR_REQUIRE_MOSQUITTO": true, // CI: the MQTT interop test must not skip

	"WEIR_BENCH_CLUSTER":          true, // test/: run the standalone vs. RF 3 benchmark
	"WEIR_BENCH_CLUSTER_DURATION": true, // test/: its length per run
}

var (
	keys      = buildKeys()
	keyByPath = index(keys, func(k *key) string { return k.path })
	keyByEnv  = index(keys, func(k *key) string { return k.env })
	_         = index(keys, func(k *key) string { return k.flag }) // panics on a clash
)

var (
	durationType = reflect.TypeFor[time.Duration]()
	byteSizeType = reflect.TypeFor[ByteSize]()
	stringsType  = reflect.TypeFor[[]string]()
	routesType   = reflect.TypeFor[[]Route]()
	// yamlTypes are decoded as YAML documents, strictly (an unknown field
	// is an error), and printed as YAML in flow style.
	yamlTypes = map[reflect.Type]bool{
		reflect.TypeFor[[]IngestConnector](): true,
		reflect.TypeFor[[]EgressConnector](): true,
	}
)

func buildKeys() []*key {
	var ks []*key
	var walk func(t reflect.Type, prefix string, index []int)
	walk = func(t reflect.Type, prefix string, index []int) {
		for i := range t.NumField() {
			f := t.Field(i)
			name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
			if name == "" || name == "-" {
				panic("conf: field " + f.Name + " has no yaml name")
			}
			path := prefix + name
			idx := append(append([]int(nil), index...), i)
			if f.Type.Kind() == reflect.Struct {
				walk(f.Type, path+".", idx)
				continue
			}
			doc := f.Tag.Get("doc")
			if doc == "" {
				panic("conf: key " + path + " has no doc tag")
			}
			ks = append(ks, &key{
				path:  path,
				env:   envPrefix + strings.ToUpper(strings.NewReplacer(".", "_", "-", "_").Replace(path)),
				flag:  strings.ReplaceAll(path, ".", "-"),
				doc:   doc,
				index: idx,
				typ:   f.Type,
			})
		}
	}
	walk(reflect.TypeFor[Config](), "", nil)
	return ks
}

func index(ks []*key, name func(*key) string) map[string]*key {
	m := make(map[string]*key, len(ks))
	for _, k := range ks {
		n := name(k)
		if m[n] != nil {
			panic("conf: keys " + m[n].path + " and " + k.path + " share the name " + n)
		}
		m[n] = k
	}
	return m
}

// field returns k's field in c, settable.
func (k *key) field(c *Config) reflect.Value {
	return reflect.ValueOf(c).Elem().FieldByIndex(k.index)
}

func (k *key) isList() bool { return k.typ == stringsType }

// parse parses text, as found in an env var or flag, into a value of k's
// type. Lists are comma-separated; blank items are dropped. Routes are
// YAML in flow style: [{filter: "a/#", stream: a}].
func (k *key) parse(text string) (reflect.Value, error) {
	if k.typ == routesType || yamlTypes[k.typ] {
		var n yaml.Node
		if err := yaml.Unmarshal([]byte(text), &n); err != nil {
			return reflect.Value{}, fmt.Errorf("not YAML: %v (want a list like [{filter: \"a/#\", stream: a}])", err)
		}
		if len(n.Content) == 0 {
			return reflect.New(k.typ).Elem(), nil
		}
		return k.decode(n.Content[0])
	}
	if k.isList() {
		var items []string
		for _, it := range strings.Split(text, ",") {
			if it = strings.TrimSpace(it); it != "" {
				items = append(items, it)
			}
		}
		return k.list(items), nil
	}
	v := reflect.New(k.typ).Elem()
	switch {
	case k.typ == durationType:
		d, err := time.ParseDuration(strings.TrimSpace(text))
		if err != nil {
			return v, fmt.Errorf("invalid duration %q (want Go syntax like 500ms, 10s, 168h)", text)
		}
		v.SetInt(int64(d))
	case k.typ == byteSizeType:
		b, err := ParseByteSize(text)
		if err != nil {
			return v, err
		}
		v.SetInt(int64(b))
	default:
		switch k.typ.Kind() {
		case reflect.String:
			v.SetString(text)
		case reflect.Bool:
			b, err := strconv.ParseBool(strings.TrimSpace(text))
			if err != nil {
				return v, fmt.Errorf("invalid boolean %q (want true or false)", text)
			}
			v.SetBool(b)
		case reflect.Uint32, reflect.Uint64:
			n, err := strconv.ParseUint(strings.TrimSpace(text), 10, k.typ.Bits())
			if err != nil {
				return v, numError(text, err)
			}
			v.SetUint(n)
		case reflect.Int:
			n, err := strconv.ParseInt(strings.TrimSpace(text), 10, k.typ.Bits())
			if err != nil {
				return v, numError(text, err)
			}
			v.SetInt(n)
		case reflect.Float64:
			f, err := strconv.ParseFloat(strings.TrimSpace(text), 64)
			if err != nil {
				if errors.Is(err, strconv.ErrRange) {
					return v, fmt.Errorf("%q is out of range", text)
				}
				return v, fmt.Errorf("invalid number %q (want a decimal number like 1.5)", text)
			}
			v.SetFloat(f)
		default:
			panic("conf: key " + k.path + " has unsupported type " + k.typ.String())
		}
	}
	return v, nil
}

func numError(text string, err error) error {
	if errors.Is(err, strconv.ErrRange) {
		return fmt.Errorf("%q is out of range", text)
	}
	return fmt.Errorf("invalid number %q (want a whole number)", text)
}

// list returns items as a value of k's (slice) type, nil when empty so an
// empty list compares equal to an absent one.
func (k *key) list(items []string) reflect.Value {
	v := reflect.New(k.typ).Elem()
	if len(items) > 0 {
		v.Set(reflect.ValueOf(items))
	}
	return v
}

// decode parses a YAML value node into a value of k's type. A null means
// zero or empty; lists must be sequences; everything else a scalar, parsed
// like env and flag text.
func (k *key) decode(n *yaml.Node) (reflect.Value, error) {
	if isNull(n) {
		return reflect.New(k.typ).Elem(), nil
	}
	if k.typ == routesType {
		routes, err := decodeRoutes(n)
		return reflect.ValueOf(routes), err
	}
	if yamlTypes[k.typ] {
		return decodeStrict(n, k.typ)
	}
	if k.isList() {
		if n.Kind != yaml.SequenceNode {
			return reflect.Value{}, errors.New("must be a list (a YAML sequence)")
		}
		var items []string
		for _, it := range n.Content {
			it = resolve(it)
			if it.Kind != yaml.ScalarNode || isNull(it) {
				return reflect.Value{}, fmt.Errorf("line %d: list items must be strings", it.Line)
			}
			items = append(items, it.Value)
		}
		return k.list(items), nil
	}
	if n.Kind != yaml.ScalarNode {
		return reflect.Value{}, errors.New("must be a single value, not a list or mapping")
	}
	return k.parse(n.Value)
}

func resolve(n *yaml.Node) *yaml.Node {
	for n.Kind == yaml.AliasNode && n.Alias != nil {
		n = n.Alias
	}
	return n
}

func isNull(n *yaml.Node) bool {
	return n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null"
}

// format prints v, a value of k's type, the way YAML, env and flags take it.
func (k *key) format(v reflect.Value) string {
	switch {
	case k.typ == routesType:
		return formatRoutes(v.Interface().([]Route))
	case yamlTypes[k.typ]:
		return formatFlow(v.Interface())
	case k.isList():
		return strings.Join(v.Interface().([]string), ",")
	case k.typ == durationType:
		return formatDuration(time.Duration(v.Int()))
	case k.typ == byteSizeType:
		return ByteSize(v.Int()).String()
	}
	return fmt.Sprint(v.Interface())
}

// formatDuration is Duration.String without the zero tails: "168h", not
// "168h0m0s".
func formatDuration(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = s[:len(s)-2]
	}
	if strings.HasSuffix(s, "h0m") {
		s = s[:len(s)-2]
	}
	return s
}

// suggest returns " (did you mean X?)" for the candidate closest to name
// by edit distance, if close enough to be a typo, or else for the one
// candidate that ends with suffix (a key put at the wrong level:
// ".max-bytes" finds "store.group-commit.max-bytes"); "" if neither.
func suggest(name string, candidates []string, suffix string) string {
	best, bestDist := "", 3 // more than 2 edits is not a typo
	for _, c := range candidates {
		if d := editDistance(strings.ToLower(name), strings.ToLower(c)); d < bestDist {
			best, bestDist = c, d
		}
	}
	if best == "" {
		for _, c := range candidates {
			if strings.HasSuffix(c, suffix) && c != name && c != best {
				if best != "" {
					return "" // ambiguous
				}
				best = c
			}
		}
	}
	if best == "" {
		return ""
	}
	return " (did you mean " + best + "?)"
}

func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

// decodeRoutes decodes a YAML sequence of route mappings. Each route must
// name a filter and a stream; anything else is refused with the route's
// position, so a typo ("steam:") is not silently a route without a stream.
// Filters and templates are checked where they are compiled (the bridge).
func decodeRoutes(n *yaml.Node) ([]Route, error) {
	n = resolve(n)
	if n.Kind != yaml.SequenceNode {
		return nil, errors.New("must be a list (a YAML sequence) of {filter, stream, key, create}")
	}
	var routes []Route
	for i, it := range n.Content {
		it = resolve(it)
		if it.Kind != yaml.MappingNode {
			return nil, fmt.Errorf("route %d (line %d): must be a mapping {filter, stream, key, create}", i, it.Line)
		}
		var r Route
		for j := 0; j+1 < len(it.Content); j += 2 {
			name, val := it.Content[j].Value, resolve(it.Content[j+1])
			var dst *string
			switch name {
			case "filter":
				dst = &r.Filter
			case "stream":
				dst = &r.Stream
			case "key":
				dst = &r.Key
			case "create":
				b, err := strconv.ParseBool(val.Value)
				if val.Kind != yaml.ScalarNode || err != nil {
					return nil, fmt.Errorf("route %d (line %d): create: want true or false, not %q", i, val.Line, val.Value)
				}
				r.Create = b
				continue
			default:
				return nil, fmt.Errorf("route %d (line %d): unknown field %q (want filter, stream, key or create)", i, it.Content[j].Line, name)
			}
			if val.Kind != yaml.ScalarNode || isNull(val) {
				return nil, fmt.Errorf("route %d (line %d): %s must be a string", i, val.Line, name)
			}
			*dst = val.Value
		}
		if r.Filter == "" {
			return nil, fmt.Errorf("route %d (line %d): filter is missing", i, it.Line)
		}
		if r.Stream == "" {
			return nil, fmt.Errorf("route %d (line %d, filter %q): stream is missing", i, it.Line, r.Filter)
		}
		routes = append(routes, r)
	}
	return routes, nil
}

// formatRoutes prints routes as YAML in flow style, as env and flags take
// them.
func formatRoutes(routes []Route) string {
	if len(routes) == 0 {
		return "[]"
	}
	items := make([]string, len(routes))
	for i, r := range routes {
		s := fmt.Sprintf("{filter: %q, stream: %q", r.Filter, r.Stream)
		if r.Key != "" {
			s += fmt.Sprintf(", key: %q", r.Key)
		}
		if r.Create {
			s += ", create: true"
		}
		items[i] = s + "}"
	}
	return "[" + strings.Join(items, ", ") + "]"
}

// decodeStrict decodes n into a new value of type t, refusing fields t does
// not have, so a typo ("fitlers:") is an error rather than a default.
func decodeStrict(n *yaml.Node, t reflect.Type) (reflect.Value, error) {
	n = resolve(n)
	if n.Kind != yaml.SequenceNode {
		return reflect.Value{}, errors.New("must be a list (a YAML sequence) of mappings")
	}
	if len(n.Content) == 0 {
		return reflect.New(t).Elem(), nil
	}
	text, err := yaml.Marshal(n)
	if err != nil {
		return reflect.Value{}, err
	}
	dec := yaml.NewDecoder(bytes.NewReader(text))
	dec.KnownFields(true)
	v := reflect.New(t)
	if err := dec.Decode(v.Interface()); err != nil {
		return reflect.Value{}, errors.New(strings.TrimPrefix(err.Error(), "yaml: "))
	}
	return v.Elem(), nil
}

// formatFlow prints v as YAML in flow style, on one line.
func formatFlow(v any) string {
	var n yaml.Node
	if err := n.Encode(v); err != nil {
		return fmt.Sprintf("<%v>", err)
	}
	var flow func(*yaml.Node)
	flow = func(n *yaml.Node) {
		n.Style |= yaml.FlowStyle
		for _, c := range n.Content {
			flow(c)
		}
	}
	flow(&n)
	out, err := yaml.Marshal(&n)
	if err != nil {
		return fmt.Sprintf("<%v>", err)
	}
	return strings.TrimSpace(string(out))
}
