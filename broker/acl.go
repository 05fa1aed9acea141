package broker

import (
	"errors"
	"fmt"
	"strings"
)

// identity is who a client is, for the ACL: its client ID and the
// username it connected with ("" when anonymous).
type identity struct {
	clientID string
	username string
}

// rule is one entry of the auth file's acl list. Rules only grant.
type rule struct {
	line      int
	username  string // "" any client, anonymous too; "*" any client with a username
	clientID  string // "" any client
	publish   []aclFilter
	subscribe []aclFilter
}

// applies reports whether r is one of id's rules.
func (r *rule) applies(id identity) bool {
	switch r.username {
	case "":
	case "*":
		if id.username == "" {
			return false
		}
	default:
		if id.username != r.username {
			return false
		}
	}
	return r.clientID == "" || r.clientID == id.clientID
}

// aclFilter is an MQTT topic filter whose levels may hold the placeholders
// %c (client ID) and %u (username), and %% for a literal %.
type aclFilter struct {
	levels []string // split at "/", placeholders still in
	usesC  bool     // some level holds %c
	usesU  bool     // some level holds %u
}

// parseACLFilter checks f and splits it into levels.
func parseACLFilter(f string) (aclFilter, error) {
	var a aclFilter
	switch {
	case f == "":
		return a, errors.New("empty topic filter")
	case len(f) > 65535:
		return a, errors.New("topic filter longer than 65535 bytes")
	case strings.ContainsRune(f, 0):
		return a, errors.New("topic filter holds a NUL character")
	}
	a.levels = strings.Split(f, "/")
	if strings.EqualFold(a.levels[0], "$share") {
		return a, fmt.Errorf("%q is a shared subscription: write the filter after $share/{group}/, which is what the ACL checks", f)
	}
	for i, l := range a.levels {
		switch {
		case l == "#" && i != len(a.levels)-1:
			return a, fmt.Errorf("%q: # must be the last level", f)
		case l == "#" || l == "+":
			continue
		case strings.ContainsAny(l, "#+"):
			return a, fmt.Errorf("%q: + and # must fill a whole level", f)
		}
		for j := 0; j < len(l); j++ {
			if l[j] != '%' {
				continue
			}
			if j+1 == len(l) {
				return a, fmt.Errorf("%q: %% at the end of a level; write %%c, %%u or %%%%", f)
			}
			switch l[j+1] {
			case 'c':
				a.usesC = true
			case 'u':
				a.usesU = true
			case '%':
			default:
				return a, fmt.Errorf("%q: unknown placeholder %%%c; write %%c, %%u or %%%%", f, l[j+1])
			}
			j++
		}
	}
	return a, nil
}

// placeholderValue reports whether v may stand in for %c or %u. A value
// that could widen or retarget a filter never matches: empty, holding a
// wildcard or a level separator, or starting with $ (which would reach the
// broker's $ topics).
func placeholderValue(v string) bool {
	return v != "" && !strings.ContainsAny(v, "+#/") && !strings.HasPrefix(v, "$")
}

// expand substitutes id into a level of the filter.
func expand(level string, id identity) string {
	if !strings.ContainsRune(level, '%') {
		return level
	}
	var b strings.Builder
	for j := 0; j < len(level); j++ {
		if level[j] != '%' {
			b.WriteByte(level[j])
			continue
		}
		j++
		switch level[j] { // parseACLFilter guarantees a c, u or % follows
		case 'c':
			b.WriteString(id.clientID)
		case 'u':
			b.WriteString(id.username)
		default:
			b.WriteByte('%')
		}
	}
	return b.String()
}

// covers reports whether every topic that sub matches is matched by a
// (with id substituted into a). sub is a topic name (publish, delivery) or
// a topic filter (subscribe), already split into levels. As in MQTT
// matching, a wildcard in a's first level does not match a topic starting
// with $.
func (a *aclFilter) covers(sub []string, id identity) bool {
	if (a.usesC && !placeholderValue(id.clientID)) || (a.usesU && !placeholderValue(id.username)) {
		return false
	}
	dollar := len(sub) > 0 && strings.HasPrefix(sub[0], "$")
	for i, l := range a.levels {
		if l == "#" { // also matches the parent level: a/# covers a
			return i > 0 || !dollar
		}
		if i >= len(sub) {
			return false
		}
		s := sub[i]
		if s == "#" {
			return false // sub reaches deeper than a level of a can follow
		}
		if l == "+" {
			if i == 0 && dollar {
				return false
			}
			continue
		}
		if s == "+" || expand(l, id) != s {
			return false
		}
	}
	return len(a.levels) == len(sub)
}

// acl is the rules of an auth file.
type acl []rule

// allowed reports whether id may publish to topic (write) or subscribe to
// the filter topic (!write). A shared subscription $share/{group}/{filter}
// is checked as {filter}.
func (rules acl) allowed(id identity, topic string, write bool) bool {
	if !write {
		if f, ok := sharedFilter(topic); ok {
			topic = f
		}
	}
	if topic == "" || (write && strings.ContainsAny(topic, "+#")) {
		return false // no topic, or wildcards in a topic name (a will's, unchecked by mochi)
	}
	levels := strings.Split(topic, "/")
	for i := range rules {
		r := &rules[i]
		if !r.applies(id) {
			continue
		}
		filters := r.subscribe
		if write {
			filters = r.publish
		}
		for j := range filters {
			if filters[j].covers(levels, id) {
				return true
			}
		}
	}
	return false
}

// sharedFilter returns the filter inside $share/{group}/{filter}. The
// prefix is matched without regard to case, as mochi does.
func sharedFilter(f string) (string, bool) {
	prefix, rest, ok := strings.Cut(f, "/")
	if !ok || !strings.EqualFold(prefix, "$share") {
		return "", false
	}
	_, filter, ok := strings.Cut(rest, "/")
	if !ok {
		return "", true // no filter: nothing to grant
	}
	return filter, true
}
