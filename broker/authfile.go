package broker

import (
	"bytes"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"golang.org/x/crypto/bcrypt"
	"gopkg.in/yaml.v3"
)

// authFile is a parsed mqtt.auth-file: users by name and the ACL rules.
type authFile struct {
	users map[string][]byte // username → bcrypt hash
	rules acl
	// dummy is a hash of a random password, at the highest bcrypt cost
	// among the users: a client naming an unknown user (or giving a
	// password too long to check) is checked against it, so that a
	// refusal takes as long as a real check.
	dummy []byte
}

// HashPassword returns the bcrypt hash of password, at bcrypt's default
// cost, in the form the auth file's password field takes.
func HashPassword(password string) (string, error) {
	if password == "" {
		return "", ErrEmptyPassword
	}
	h, err := bcrypt.GenerateFromPassword([]byte(password), bcrypt.DefaultCost)
	if err != nil {
		return "", fmt.Errorf("broker: hash password: %w", err)
	}
	return string(h), nil
}

// loadAuthFile reads and checks the auth file at path. Every problem is
// reported, each as "mqtt.auth-file: line N: ...". With certUsernames
// (mqtt.peer-cert-as-username is on), an ACL rule may name a username
// that is not one of users: the certificate identity of a client that
// has no password.
func loadAuthFile(path string, certUsernames bool) (*authFile, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("mqtt.auth-file: %w", err)
	}
	return parseAuthFileFor(data, certUsernames)
}

// authParser collects the problems of one auth file.
type authParser struct {
	probs         []error
	certUsernames bool // a rule's username need not be one of users
}

func (p *authParser) add(n *yaml.Node, format string, args ...any) {
	p.probs = append(p.probs, fmt.Errorf("mqtt.auth-file: line %d: "+format, append([]any{n.Line}, args...)...))
}

func parseAuthFile(data []byte) (*authFile, error) { return parseAuthFileFor(data, false) }

func parseAuthFileFor(data []byte, certUsernames bool) (*authFile, error) {
	af := &authFile{users: map[string][]byte{}}
	var doc yaml.Node
	if err := yaml.NewDecoder(bytes.NewReader(data)).Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return af, nil // an empty file: no users, no rules
		}
		return nil, fmt.Errorf("mqtt.auth-file: %w", err)
	}
	p := &authParser{certUsernames: certUsernames}
	root := doc.Content[0]
	if isNull(root) {
		return af, nil // "---" alone: as empty
	}
	if root.Kind != yaml.MappingNode {
		p.add(root, "the file must be a mapping with users and acl")
		return nil, errors.Join(p.probs...)
	}
	var aclNode *yaml.Node
	p.fields(root, "", func(key string, v *yaml.Node) bool {
		switch key {
		case "users":
			p.users(v, af)
		case "acl":
			aclNode = v
		default:
			return false
		}
		return true
	})
	if aclNode != nil { // after users, so rules can name them
		p.acl(aclNode, af)
	}
	if len(p.probs) > 0 {
		return nil, errors.Join(p.probs...)
	}
	if err := af.makeDummy(); err != nil {
		return nil, err
	}
	return af, nil
}

func (af *authFile) makeDummy() error {
	if len(af.users) == 0 {
		return nil // every username is unknown: nothing to hide
	}
	cost := bcrypt.MinCost
	for _, h := range af.users {
		c, _ := bcrypt.Cost(h) // isBcrypt checked it
		cost = max(cost, c)
	}
	pw := make([]byte, 32)
	_, _ = rand.Read(pw) // never fails (crypto/rand)
	h, err := bcrypt.GenerateFromPassword(pw, cost)
	if err != nil {
		return fmt.Errorf("mqtt.auth-file: %w", err)
	}
	af.dummy = h
	return nil
}

// fields walks mapping m, calling f for each key; an unknown key (f
// returns false) or a repeated one is a problem.
func (p *authParser) fields(m *yaml.Node, where string, f func(key string, v *yaml.Node) bool) {
	prefix := ""
	if where != "" {
		prefix = where + ": "
	}
	seen := map[string]bool{}
	for i := 0; i+1 < len(m.Content); i += 2 {
		k, v := m.Content[i], m.Content[i+1]
		switch {
		case seen[k.Value]:
			p.add(k, "%s%q is given twice", prefix, k.Value)
		case !f(k.Value, v):
			p.add(k, "%sunknown field %q", prefix, k.Value)
		}
		seen[k.Value] = true
	}
}

// str returns scalar v's string, or reports a problem.
func (p *authParser) str(v *yaml.Node, what string) (string, bool) {
	if v.Kind != yaml.ScalarNode || isNull(v) {
		p.add(v, "%s must be a string", what)
		return "", false
	}
	return v.Value, true
}

func (p *authParser) users(v *yaml.Node, af *authFile) {
	if isNull(v) {
		return // "users:" with nothing after it: none
	}
	if v.Kind != yaml.SequenceNode {
		p.add(v, "users must be a list of {username, password}")
		return
	}
	for i, u := range v.Content {
		where := fmt.Sprintf("users[%d]", i)
		if u.Kind != yaml.MappingNode {
			p.add(u, "%s must be a mapping with username and password", where)
			continue
		}
		var name, hash string
		var nameOK, hashOK bool
		p.fields(u, where, func(key string, v *yaml.Node) bool {
			switch key {
			case "username":
				name, nameOK = p.str(v, where+".username")
				if nameOK && (name == "" || name == "*") {
					p.add(v, "%s.username must not be empty or *", where)
					nameOK = false
				}
			case "password":
				hash, hashOK = p.str(v, where+".password")
				if hashOK && !isBcrypt(hash) {
					p.add(v, "%s.password is not a bcrypt hash; plain-text passwords are refused (make a hash with `weir mqtt passwd`)", where)
					hashOK = false
				}
			default:
				return false
			}
			return true
		})
		for _, key := range []string{"username", "password"} {
			if !hasKey(u, key) {
				p.add(u, "%s has no %s", where, key)
			}
		}
		if nameOK && hashOK {
			if _, dup := af.users[name]; dup {
				p.add(u, "%s: user %q is listed twice", where, name)
				continue
			}
			af.users[name] = []byte(hash)
		}
	}
}

func isNull(n *yaml.Node) bool { return n.Kind == yaml.ScalarNode && n.Tag == "!!null" }

func hasKey(m *yaml.Node, key string) bool {
	for i := 0; i+1 < len(m.Content); i += 2 {
		if m.Content[i].Value == key {
			return true
		}
	}
	return false
}

// isBcrypt reports whether h is a bcrypt hash bcrypt can check.
func isBcrypt(h string) bool {
	if !strings.HasPrefix(h, "$2") {
		return false
	}
	_, err := bcrypt.Cost([]byte(h))
	return err == nil
}

func (p *authParser) acl(v *yaml.Node, af *authFile) {
	if isNull(v) {
		return // "acl:" with nothing after it: no rules
	}
	if v.Kind != yaml.SequenceNode {
		p.add(v, "acl must be a list of rules")
		return
	}
	for i, rn := range v.Content {
		where := fmt.Sprintf("acl[%d]", i)
		if rn.Kind != yaml.MappingNode {
			p.add(rn, "%s must be a mapping with username, clientid, publish and subscribe", where)
			continue
		}
		r := rule{line: rn.Line}
		ok := true
		p.fields(rn, where, func(key string, v *yaml.Node) bool {
			switch key {
			case "username":
				s, good := p.str(v, where+".username")
				if good && s != "*" && s != "" && !p.certUsernames {
					if _, known := af.users[s]; !known {
						p.add(v, "%s.username %q is not one of users", where, s)
						good = false
					}
				}
				ok = ok && good
				r.username = s
			case "clientid":
				s, good := p.str(v, where+".clientid")
				ok = ok && good
				if s != "*" {
					r.clientID = s
				}
			case "publish":
				r.publish = p.filters(v, where+".publish")
			case "subscribe":
				r.subscribe = p.filters(v, where+".subscribe")
			default:
				return false
			}
			return true
		})
		if !hasKey(rn, "publish") && !hasKey(rn, "subscribe") {
			p.add(rn, "%s grants nothing: give publish, subscribe or both", where)
			ok = false
		}
		if ok {
			af.rules = append(af.rules, r)
		}
	}
}

func (p *authParser) filters(v *yaml.Node, where string) []aclFilter {
	if v.Kind != yaml.SequenceNode {
		p.add(v, "%s must be a list of topic filters", where)
		return nil
	}
	var fs []aclFilter
	for i, n := range v.Content {
		s, ok := p.str(n, fmt.Sprintf("%s[%d]", where, i))
		if !ok {
			continue
		}
		f, err := parseACLFilter(s)
		if err != nil {
			p.add(n, "%s[%d]: %v", where, i, err)
			continue
		}
		fs = append(fs, f)
	}
	return fs
}
