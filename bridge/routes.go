package bridge

import (
	"errors"
	"fmt"
	"strconv"
	"strings"

	mqtt "github.com/mochi-mqtt/server/v2"

	"github.com/weir-log/weir/cluster"
	"github.com/weir-log/weir/conf"
)

// A Router maps a publish's topic to the stream it is appended to and the
// record key it is appended with: the routes of mqtt.routes, tried in
// order, the first whose filter matches the topic winning. It is immutable
// and safe for concurrent use.
type Router struct {
	key    string // the routes' config key, for messages: mqtt.routes
	routes []route
	reject bool
}

// Target is where a publish goes: the stream and the record's key.
type Target struct {
	Stream string
	Key    string
	Create bool // create the stream, with the stream defaults, if it is missing
}

type route struct {
	index  int // position in mqtt.routes, for messages; -1 for the default route
	filter []string
	stream template
	key    template
	create bool
}

// defaultRoute is the route used when mqtt.routes is empty: every topic
// goes to the stream named by its first level, created on first use, keyed
// by the publisher's client ID.
var defaultRoute = conf.Route{Filter: "#", Stream: "${topic[0]}", Key: conf.DefaultRouteKey, Create: true}

// NewRouter compiles routes (the default route when there are none) and
// the unmatched policy ("live" or "reject"). An error names the route by
// its position and filter.
func NewRouter(routes []conf.Route, unmatched string) (*Router, error) {
	return newRouter("mqtt.routes", routes, unmatched)
}

// newRouter is NewRouter for the routes at config key key (mqtt.routes,
// or a connector's: connectors.ingest[0] (in).routes), which names them
// in errors and messages.
func newRouter(key string, routes []conf.Route, unmatched string) (*Router, error) {
	r := &Router{key: key}
	switch unmatched {
	case "live":
	case "reject":
		r.reject = true
	default:
		return nil, fmt.Errorf("mqtt.unmatched: %q is not one of live, reject", unmatched)
	}
	if len(routes) == 0 {
		rt, err := compileRoute(defaultRoute)
		if err != nil {
			panic("bridge: the default route does not compile: " + err.Error())
		}
		rt.index = -1
		r.routes = []route{rt}
		return r, nil
	}
	for i, cr := range routes {
		rt, err := compileRoute(cr)
		if err != nil {
			return nil, fmt.Errorf("%s[%d] (filter %q): %w", key, i, cr.Filter, err)
		}
		rt.index = i
		r.routes = append(r.routes, rt)
	}
	return r, nil
}

func compileRoute(cr conf.Route) (route, error) {
	if err := checkFilter(cr.Filter); err != nil {
		return route{}, err
	}
	stream, err := parseTemplate(cr.Stream)
	if err != nil {
		return route{}, fmt.Errorf("stream %q: %w", cr.Stream, err)
	}
	if stream.static() {
		if p := cluster.NameProblem(cr.Stream); p != "" {
			return route{}, fmt.Errorf("stream %q is not a valid stream name: %s", cr.Stream, p)
		}
	}
	keyText := cr.Key
	if keyText == "" {
		keyText = conf.DefaultRouteKey
	}
	key, err := parseTemplate(keyText)
	if err != nil {
		return route{}, fmt.Errorf("key %q: %w", keyText, err)
	}
	return route{filter: strings.Split(cr.Filter, "/"), stream: stream, key: key, create: cr.Create}, nil
}

// Route returns where a publish on topic by the given client goes, or false
// when no route matches it. A route whose stream template renders a name
// that is not a valid stream name (the default route on a topic whose first
// level is "$SYS" or "1st", say) does not match.
func (r *Router) Route(topic, clientID, username string) (Target, bool) {
	var levels []string
	for _, rt := range r.routes {
		if !matchLevels(rt.filter, topic) {
			continue
		}
		if levels == nil {
			levels = strings.Split(topic, "/")
		}
		v := vars{clientID: clientID, username: username, topic: topic, levels: levels}
		stream := rt.stream.render(v)
		if cluster.NameProblem(stream) != "" {
			continue
		}
		return Target{Stream: stream, Key: rt.key.render(v), Create: rt.create}, true
	}
	return Target{}, false
}

// RejectUnmatched reports whether publishes no route matches are refused
// (mqtt.unmatched: reject) rather than delivered live only.
func (r *Router) RejectUnmatched() bool { return r.reject }

// StreamFor returns the one stream that every topic matching a
// subscription's filter routes to, for MQTT shared subscriptions (Key is
// empty). It fails when the filter's topics may route to several streams
// (the first route that overlaps the filter does not cover all of it, or
// the stream depends on a level the filter leaves open or on the publisher)
// or to none.
func (r *Router) StreamFor(filter string) (Target, error) {
	if !validFilter(filter) {
		return Target{}, fmt.Errorf("%q is not a valid MQTT topic filter", filter)
	}
	sub := strings.Split(filter, "/")
	for _, rt := range r.routes {
		if !overlaps(rt.filter, sub) {
			continue
		}
		if !covers(rt.filter, sub) {
			return Target{}, fmt.Errorf("topics matching %q route to more than one stream: %s covers only some of them", filter, rt.describe(r.key))
		}
		stream, err := rt.stream.renderFilter(sub)
		if err != nil {
			return Target{}, fmt.Errorf("topics matching %q may route to more than one stream: %s names the stream by %v", filter, rt.describe(r.key), err)
		}
		if p := cluster.NameProblem(stream); p != "" {
			return Target{}, fmt.Errorf("topics matching %q route to %q, which is not a valid stream name: %s", filter, stream, p)
		}
		return Target{Stream: stream, Create: rt.create}, nil
	}
	return Target{}, fmt.Errorf("no route sends topics matching %q to a stream", filter)
}

// coverFilter fails unless one route's filter matches every topic that
// filter (a connector's subscription) matches, so that each message it
// brings has a route; routes covering it only together do not count. A
// filter whose first level starts with '$' is covered only by a route
// naming that level: '+' and '#' there match no such topic
// [MQTT-4.7.2-1]. (A route may still fail a covered topic at runtime: its
// stream template may render no valid stream name.)
func (r *Router) coverFilter(filter string) error {
	sub := strings.Split(filter, "/")
	dollar := strings.HasPrefix(sub[0], "$")
	filters := make([]string, len(r.routes))
	for i, rt := range r.routes {
		if covers(rt.filter, sub) && (!dollar || rt.filter[0] != "+" && rt.filter[0] != "#") {
			return nil
		}
		filters[i] = strconv.Quote(strings.Join(rt.filter, "/"))
	}
	which := "the routes' filters are " + strings.Join(filters, ", ")
	if len(r.routes) == 1 && r.routes[0].index < 0 {
		which = `the default route's filter is "#"`
	}
	if dollar {
		which += ", and a filter whose first level starts with '$' is covered only by a route naming that level"
	}
	return fmt.Errorf("no route covers it: every topic it matches must match one route's filter (%s)", which)
}

func (rt *route) describe(key string) string {
	if rt.index < 0 {
		return "the default route (# to the stream named by the first level)"
	}
	return fmt.Sprintf("%s[%d] (filter %q)", key, rt.index, strings.Join(rt.filter, "/"))
}

// checkFilter checks the topic filter of a route or of a connector's
// subscription: a valid MQTT topic filter, not a shared subscription.
func checkFilter(filter string) error {
	switch {
	case filter == "":
		return errors.New("filter is missing")
	case strings.HasPrefix(filter, "$share/") || strings.HasPrefix(filter, "$queue/"):
		return errors.New("filter must be a topic filter, not a shared subscription")
	case !validFilter(filter):
		return errors.New("filter is not a valid MQTT topic filter ('+' and '#' must be whole levels, '#' only last)")
	}
	return nil
}

// validFilter reports whether filter is an MQTT topic filter: not empty,
// and '+' and '#' only as whole levels, '#' only as the last. (mochi's
// IsValidFilter accepts "a+".)
func validFilter(filter string) bool {
	if filter == "" || !mqtt.IsValidFilter(filter, false) {
		return false
	}
	levels := strings.Split(filter, "/")
	for i, l := range levels {
		if strings.ContainsAny(l, "+#") && l != "+" && l != "#" || l == "#" && i != len(levels)-1 {
			return false
		}
	}
	return true
}

// Match reports whether topic matches the MQTT topic filter: '+' matches
// one level, '#' (last) the rest, including none ("a/#" matches "a"), and
// a filter starting with a wildcard does not match a topic starting with
// '$' [MQTT-4.7.2-1].
func Match(filter, topic string) bool {
	return matchLevels(strings.Split(filter, "/"), topic)
}

func matchLevels(filter []string, topic string) bool {
	if strings.HasPrefix(topic, "$") && (filter[0] == "+" || filter[0] == "#") {
		return false
	}
	for i, f := range filter {
		if f == "#" {
			return true
		}
		level, rest, more := strings.Cut(topic, "/")
		if f != "+" && f != level {
			return false
		}
		if !more {
			// The topic ends here: it matches if the filter does too, or
			// goes on only with "#".
			return i == len(filter)-1 || (i == len(filter)-2 && filter[i+1] == "#")
		}
		topic = rest
	}
	return false
}

// overlaps reports whether some topic matches both filters.
func overlaps(a, b []string) bool {
	for i := 0; ; i++ {
		switch {
		case i < len(a) && a[i] == "#", i < len(b) && b[i] == "#":
			return true
		case i == len(a) && i == len(b):
			return true
		case i == len(a):
			return b[i] == "#"
		case i == len(b):
			return a[i] == "#"
		case a[i] != "+" && b[i] != "+" && a[i] != b[i]:
			return false
		}
	}
}

// covers reports whether every topic matching b matches a.
func covers(a, b []string) bool {
	for i := 0; ; i++ {
		switch {
		case i < len(a) && a[i] == "#":
			return true
		case i == len(b):
			return i == len(a) || (i == len(a)-1 && a[i] == "#")
		case i == len(a):
			return false
		case b[i] == "#":
			// b takes any rest from here on, which only "#" takes too;
			// "+/#" does as well at the first level, where there is no
			// parent topic of zero levels to miss.
			return i == 0 && len(a) == 2 && a[0] == "+" && a[1] == "#"
		case b[i] == "+":
			if a[i] != "+" {
				return false
			}
		case a[i] != "+" && a[i] != b[i]:
			return false
		}
	}
}

// A template is text with ${clientid}, ${username}, ${topic} and
// ${topic[N]} (the Nth topic level, from 0) in it.
type template []part

type part struct {
	text  string // literal text, when v is ""
	v     string // "clientid", "username", "topic" or "level"; "stream" or "key" (egress)
	level int    // for "level"
}

type vars struct {
	clientID, username, topic string
	levels                    []string
	stream, key               string // of egress topic templates
}

func parseTemplate(s string) (template, error) { return splitTemplate(s, parseVar) }

// splitTemplate splits s into literal text and the ${…} variables, which
// parseVar turns into parts (or refuses).
func splitTemplate(s string, parseVar func(name string) (part, error)) (template, error) {
	var t template
	for s != "" {
		i := strings.Index(s, "${")
		if i < 0 {
			t = append(t, part{text: s})
			break
		}
		if i > 0 {
			t = append(t, part{text: s[:i]})
		}
		end := strings.IndexByte(s[i:], '}')
		if end < 0 {
			return nil, fmt.Errorf("%q is not closed with }", s[i:])
		}
		name := s[i+2 : i+end]
		p, err := parseVar(name)
		if err != nil {
			return nil, err
		}
		t = append(t, p)
		s = s[i+end+1:]
	}
	if len(t) == 0 {
		return nil, errors.New("is empty")
	}
	return t, nil
}

func parseVar(name string) (part, error) {
	switch name {
	case "clientid", "username", "topic":
		return part{v: name}, nil
	}
	if rest, ok := strings.CutPrefix(name, "topic["); ok {
		if n, ok := strings.CutSuffix(rest, "]"); ok {
			level, err := strconv.Atoi(n)
			if err == nil && level >= 0 && level < 1<<16 {
				return part{v: "level", level: level}, nil
			}
		}
		return part{}, fmt.Errorf("${%s}: want ${topic[N]} with N a level number from 0", name)
	}
	return part{}, fmt.Errorf("unknown variable ${%s} (want ${clientid}, ${username}, ${topic} or ${topic[N]})", name)
}

func (t template) static() bool {
	for _, p := range t {
		if p.v != "" {
			return false
		}
	}
	return true
}

// render fills the template in; a level past the topic's end is empty.
func (t template) render(v vars) string {
	if len(t) == 1 && t[0].v == "" {
		return t[0].text
	}
	var b strings.Builder
	for _, p := range t {
		switch p.v {
		case "":
			b.WriteString(p.text)
		case "clientid":
			b.WriteString(v.clientID)
		case "username":
			b.WriteString(v.username)
		case "topic":
			b.WriteString(v.topic)
		case "stream":
			b.WriteString(v.stream)
		case "key":
			b.WriteString(v.key)
		case "level":
			if p.level < len(v.levels) {
				b.WriteString(v.levels[p.level])
			}
		}
	}
	return b.String()
}

// renderFilter fills the template in for every topic matching filter, or
// fails if the result would differ between them.
func (t template) renderFilter(filter []string) (string, error) {
	var b strings.Builder
	for _, p := range t {
		switch p.v {
		case "":
			b.WriteString(p.text)
		case "clientid", "username":
			return "", fmt.Errorf("${%s}", p.v)
		case "topic":
			return "", errors.New("${topic}")
		case "level":
			if p.level >= len(filter) || filter[p.level] == "+" || filter[p.level] == "#" {
				return "", fmt.Errorf("${topic[%d]}, which the filter leaves open", p.level)
			}
			b.WriteString(filter[p.level])
		}
	}
	return b.String(), nil
}
