package bridge

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/weir-log/weir/conf"
)

func TestMatch(t *testing.T) {
	for _, tc := range []struct {
		filter, topic string
		want          bool
	}{
		{"a/b", "a/b", true},
		{"a/b", "a/c", false},
		{"a/b", "a/b/c", false},
		{"a/b/c", "a/b", false},
		{"a/+", "a/b", true},
		{"a/+", "a/b/c", false},
		{"a/+/c", "a/b/c", true},
		{"a/#", "a", true}, // "#" includes the parent level
		{"a/#", "a/b/c", true},
		{"a/#", "b", false},
		{"#", "a/b", true},
		{"+", "a", true},
		{"+/+", "a/", true}, // an empty level is a level
		{"a/+", "a/", true},
		{"#", "$SYS/x", false}, // [MQTT-4.7.2-1]
		{"+/x", "$SYS/x", false},
		{"$SYS/#", "$SYS/x", true},
		{"sensors/#", "sensors", true},
	} {
		assert.Equal(t, tc.want, Match(tc.filter, tc.topic), "%q ~ %q", tc.filter, tc.topic)
	}
}

func TestDefaultRoute(t *testing.T) {
	r, err := NewRouter(nil, "live")
	require.NoError(t, err)
	got, ok := r.Route("sensors/dev1/temp", "dev1", "alice")
	require.True(t, ok)
	assert.Equal(t, Target{Stream: "sensors", Key: "dev1", Create: true}, got)

	for _, topic := range []string{"1st/x", "has space/x", "/leading", "$SYS/broker", "é/x"} {
		_, ok := r.Route(topic, "dev1", "")
		assert.False(t, ok, "%q: a first level that is not a stream name is unmatched", topic)
	}
	assert.False(t, r.RejectUnmatched())
}

func TestRoutesInOrderWithTemplates(t *testing.T) {
	r, err := NewRouter([]conf.Route{
		{Filter: "factory/+/temp", Stream: "temps", Key: "${topic[1]}"},
		{Filter: "factory/#", Stream: "factory", Key: "${username}-${clientid}", Create: true},
		{Filter: "per/+/#", Stream: "s_${topic[1]}", Key: "${topic}"},
	}, "reject")
	require.NoError(t, err)
	assert.True(t, r.RejectUnmatched())

	for _, tc := range []struct {
		topic string
		want  Target
		ok    bool
	}{
		{"factory/line1/temp", Target{Stream: "temps", Key: "line1"}, true},
		{"factory/line1/pressure", Target{Stream: "factory", Key: "bob-c1", Create: true}, true},
		{"factory", Target{Stream: "factory", Key: "bob-c1", Create: true}, true},
		{"per/x1/a/b", Target{Stream: "s_x1", Key: "per/x1/a/b"}, true},
		{"per/bad name/a", Target{}, false}, // renders an invalid stream name: no match
		{"other/x", Target{}, false},
	} {
		got, ok := r.Route(tc.topic, "c1", "bob")
		assert.Equal(t, tc.ok, ok, tc.topic)
		assert.Equal(t, tc.want, got, tc.topic)
	}
}

func TestRouteErrorsNameTheRoute(t *testing.T) {
	for _, tc := range []struct {
		route conf.Route
		want  string
	}{
		{conf.Route{Filter: "a/#/b", Stream: "a"}, "not a valid MQTT topic filter"},
		{conf.Route{Filter: "a+", Stream: "a"}, "not a valid MQTT topic filter"},
		{conf.Route{Filter: "$share/g/a", Stream: "a"}, "not a shared subscription"},
		{conf.Route{Filter: "a/#", Stream: "${topic[x]}"}, "${topic[N]}"},
		{conf.Route{Filter: "a/#", Stream: "a", Key: "${clientID}"}, "unknown variable ${clientID}"},
		{conf.Route{Filter: "a/#", Stream: "a", Key: "${clientid"}, "not closed"},
		{conf.Route{Filter: "a/#", Stream: "9lives"}, "not a valid stream name"},
		{conf.Route{Filter: "", Stream: "a"}, "filter is missing"},
	} {
		_, err := NewRouter([]conf.Route{{Filter: "ok/#", Stream: "ok"}, tc.route}, "live")
		require.Error(t, err, "%+v", tc.route)
		assert.Contains(t, err.Error(), "mqtt.routes[1] (filter "+quote(tc.route.Filter)+")")
		assert.Contains(t, err.Error(), tc.want)
	}
	_, err := NewRouter(nil, "drop")
	assert.ErrorContains(t, err, `mqtt.unmatched: "drop"`)
}

func quote(s string) string { return `"` + strings.ReplaceAll(s, `"`, `\"`) + `"` }

func TestStreamFor(t *testing.T) {
	def, err := NewRouter(nil, "live")
	require.NoError(t, err)
	r, err := NewRouter([]conf.Route{
		{Filter: "factory/+/temp", Stream: "temps"},
		{Filter: "factory/#", Stream: "factory"},
		{Filter: "per/+/#", Stream: "s_${topic[1]}", Create: true},
		{Filter: "by/client/#", Stream: "${clientid}"},
	}, "live")
	require.NoError(t, err)

	for _, tc := range []struct {
		r      *Router
		filter string
		want   string // stream, or "!" + part of the error
	}{
		{def, "sensors/#", "sensors"},
		{def, "sensors", "sensors"},
		{def, "sensors/+/temp", "sensors"},
		{def, "#", "!more than one stream"},
		{def, "+/temp", "!more than one stream"},
		{def, "1st/#", "!not a valid stream name"},
		{r, "factory/+/temp", "temps"},
		{r, "factory/l1/temp", "temps"},
		{r, "factory/l1/pressure", "factory"},
		{r, "factory/#", "!covers only some"},   // temps and factory
		{r, "factory/+", "factory"},             // no 3-level topic: never temps
		{r, "per/x/#", "s_x"},                   // level 1 is fixed
		{r, "per/+/y", "!leaves open"},          // level 1 is not
		{r, "by/client/x", "!${clientid}"},      // depends on the publisher
		{r, "nowhere/#", "!no route"},           // no route overlaps
		{r, "a/#/b", "!not a valid MQTT topic"}, // bad filter
	} {
		got, err := tc.r.StreamFor(tc.filter)
		if strings.HasPrefix(tc.want, "!") {
			assert.ErrorContains(t, err, tc.want[1:], tc.filter)
			continue
		}
		if assert.NoError(t, err, tc.filter) {
			assert.Equal(t, tc.want, got.Stream, tc.filter)
		}
	}
	got, err := r.StreamFor("per/x/#")
	require.NoError(t, err)
	assert.True(t, got.Create)
}

// overlaps and covers against Match on a small universe of topics: a
// filter overlaps another iff some topic matches both, and covers it iff
// every topic matching it matches the other.
func TestOverlapsAndCoversAgreeWithMatch(t *testing.T) {
	filters := []string{"#", "+", "a", "b", "a/#", "a/+", "a/b", "+/b", "+/+", "a/b/#", "a/+/c", "+/#", "a/b/c", "b/#"}
	var topics []string
	for _, l1 := range []string{"a", "b", "x"} {
		topics = append(topics, l1)
		for _, l2 := range []string{"a", "b", "c"} {
			topics = append(topics, l1+"/"+l2)
			for _, l3 := range []string{"b", "c", "z"} {
				topics = append(topics, l1+"/"+l2+"/"+l3)
				topics = append(topics, l1+"/"+l2+"/"+l3+"/d")
			}
		}
	}
	for _, a := range filters {
		for _, b := range filters {
			some, all := false, true
			for _, topic := range topics {
				ma, mb := Match(a, topic), Match(b, topic)
				some = some || ma && mb
				if mb && !ma {
					all = false
				}
			}
			la, lb := strings.Split(a, "/"), strings.Split(b, "/")
			assert.Equal(t, some, overlaps(la, lb), "overlaps(%q, %q)", a, b)
			assert.Equal(t, all, covers(la, lb), "covers(%q, %q)", a, b)
		}
	}
}
