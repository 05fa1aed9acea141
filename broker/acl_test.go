package broker

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestACLFilterCovers(t *testing.T) {
	dev := identity{clientID: "dev1", username: "alice"}
	for _, tc := range []struct {
		filter, topic string
		id            identity
		want          bool
	}{
		{"a/b", "a/b", dev, true},
		{"a/b", "a/c", dev, false},
		{"a/b", "a/b/c", dev, false},
		{"a/+", "a/b", dev, true},
		{"a/+", "a/+", dev, true},   // subscribe filter inside the ACL filter
		{"a/+", "a/#", dev, false},  // reaches deeper than a/+
		{"a/+", "a", dev, false},    //
		{"a/#", "a", dev, true},     // # matches the parent level too
		{"a/#", "a/b/c", dev, true}, //
		{"a/#", "a/+/c", dev, true},
		{"a/#", "+/b", dev, false},
		{"a/b", "a/+", dev, false}, // + is wider than b
		{"#", "x/y", dev, true},
		{"#", "#", dev, true},
		{"#", "$SYS/x", dev, false}, // wildcards at the first level skip $ topics
		{"+/x", "$SYS/x", dev, false},
		{"$SYS/#", "$SYS/broker/uptime", dev, true},
		{"devices/%c/#", "devices/dev1/t", dev, true},
		{"devices/%c/#", "devices/dev2/t", dev, false},
		{"devices/%c/#", "devices/+/t", dev, false},
		{"users/%u", "users/alice", dev, true},
		{"users/u-%u-%c", "users/u-alice-dev1", dev, true},
		{"pct/100%%", "pct/100%", dev, true},
		// Values that could widen a filter never match.
		{"devices/%c/#", "devices/+/t", identity{clientID: "+"}, false},
		{"devices/%c/#", "devices/#", identity{clientID: "#"}, false},
		{"devices/%c", "devices/a/b", identity{clientID: "a/b"}, false},
		{"%c/#", "$SYS/x", identity{clientID: "$SYS"}, false},
		{"users/%u", "users/", identity{clientID: "c"}, false}, // anonymous: %u never matches
	} {
		f, err := parseACLFilter(tc.filter)
		require.NoError(t, err, tc.filter)
		got := f.covers(strings.Split(tc.topic, "/"), tc.id)
		require.Equal(t, tc.want, got, "filter %q covers %q for %+v", tc.filter, tc.topic, tc.id)
	}
}

func TestParseACLFilterErrors(t *testing.T) {
	for f, want := range map[string]string{
		"":           "empty",
		"a/#/b":      "last level",
		"a/b#":       "whole level",
		"a+/b":       "whole level",
		"a/%x":       "unknown placeholder",
		"a/%":        "end of a level",
		"$share/g/a": "shared subscription",
		"a/\x00":     "NUL",
	} {
		_, err := parseACLFilter(f)
		require.ErrorContains(t, err, want, "filter %q", f)
	}
}

func TestACLRules(t *testing.T) {
	af, err := parseAuthFile([]byte(`
users:
  - username: alice
    password: ` + testHash(t, "pw") + `
  - username: bob
    password: ` + testHash(t, "pw") + `
acl:
  - username: alice
    publish: ["devices/%c/#"]
  - username: "*"
    clientid: special
    subscribe: ["special/#"]
  - subscribe: ["public/#", "commands/%u/#"]
`))
	require.NoError(t, err)
	alice := identity{clientID: "c1", username: "alice"}
	bob := identity{clientID: "special", username: "bob"}
	anon := identity{clientID: "special"}
	for _, tc := range []struct {
		id    identity
		topic string
		write bool
		want  bool
	}{
		{alice, "devices/c1/t", true, true},
		{alice, "devices/c1/t", false, false}, // publish only
		{bob, "devices/special/t", true, false},
		{alice, "public/x", false, true}, // rules add up
		{alice, "commands/alice/reboot", false, true},
		{bob, "commands/alice/reboot", false, false},
		{bob, "special/x", false, true},
		{anon, "special/x", false, false}, // "*" needs a username
		{anon, "public/#", false, true},   // no username: anyone
		{anon, "commands/+/x", false, false},
		{alice, "$share/g/public/#", false, true}, // the filter inside $share is checked
		{alice, "$SHARE/g/public/#", false, true},
		{alice, "$share/g/private/#", false, false},
		{alice, "$share/g", false, false},
		{alice, "", true, false},
		{alice, "devices/c1/+", true, false}, // wildcards are no topic name (a will's could be)
		{alice, "devices/c1/#", true, false},
	} {
		require.Equal(t, tc.want, af.rules.allowed(tc.id, tc.topic, tc.write), "%+v %q write=%v", tc.id, tc.topic, tc.write)
	}
}
