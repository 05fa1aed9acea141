package conf

import (
	"fmt"
	"net/url"
	"strings"
	"time"
)

// RemoteSchemes are the URL schemes a connector's url may have, and
// whether each uses TLS.
var RemoteSchemes = map[string]bool{
	"tcp": false, "mqtt": false, "ws": false,
	"ssl": true, "tls": true, "mqtts": true, "wss": true,
}

// connectorProblems checks the connectors: names unique (over both lists)
// and well formed, urls, TLS files, bounds. Filters, routes, stream names
// and topic templates are checked where they are compiled (package
// bridge), before anything starts. Each problem names the connector by
// its position and name: connectors.ingest[0] (emqx-in).url.
func (c *Config) connectorProblems(ch *checker) {
	seen := map[string]string{}
	name := func(list string, i int, n string) string {
		key := fmt.Sprintf("connectors.%s[%d]", list, i)
		switch {
		case n == "":
			ch.add(key+".name", "must be set")
		case !validConnectorName(n):
			ch.add(key+".name", "%q: use letters, digits, - and _ only", n)
		case seen[n] != "":
			ch.add(key+".name", "%q is also the name of %s", n, seen[n])
		default:
			seen[n] = key
		}
		if n != "" {
			key += " (" + n + ")"
		}
		return key
	}
	// Two connections with one client ID at one broker take each other's
	// session over, endlessly; an egress connector's clean session would
	// even throw away an ingest connector's queued messages.
	clients := map[string]string{}
	sameClient := func(key string, r Remote) {
		u, err := url.Parse(r.URL)
		if err != nil || r.ClientID == "" {
			return
		}
		id := strings.ToLower(u.Host) + " " + r.ClientID
		if other, ok := clients[id]; ok {
			ch.add(key+".client-id", "%q is also the client ID of %s at the same broker (%s): each would take the other's session over", r.ClientID, other, u.Host)
			return
		}
		clients[id] = key
	}
	for i, ic := range c.Connectors.Ingest {
		key := name("ingest", i, ic.Name)
		ic.Remote.problems(ch, key)
		sameClient(key, ic.Remote)
		if len(ic.Filters) == 0 {
			ch.add(key+".filters", "must name at least one topic filter to subscribe to")
		}
		for j, f := range ic.Filters {
			if f == "" {
				ch.add(fmt.Sprintf("%s.filters[%d]", key, j), "is empty")
			}
		}
		if ic.MaxPending < 1 || ic.MaxPending > 65535 {
			ch.add(key+".max-pending", "must be from 1 to 65535, not %d", ic.MaxPending)
		}
	}
	for i, ec := range c.Connectors.Egress {
		key := name("egress", i, ec.Name)
		ec.Remote.problems(ch, key)
		sameClient(key, ec.Remote)
		if ec.Stream == "" {
			ch.add(key+".stream", "must name the stream to publish")
		}
		if ec.Subscription == "" {
			ch.add(key+".subscription", "must be set")
		}
		switch ec.Offset {
		case "earliest", "latest":
		default:
			ch.add(key+".offset", "%q is not one of earliest, latest", ec.Offset)
		}
		if ec.Topic == "" {
			ch.add(key+".topic", "must be set")
		}
		if ec.MaxInflight < 1 || ec.MaxInflight > 65535 {
			ch.add(key+".max-inflight", "must be from 1 to 65535, not %d", ec.MaxInflight)
		}
		switch a := ec.AckTimeout; {
		case a < time.Second || a > 36000*time.Second:
			ch.add(key+".ack-timeout", "must be from 1s to 10h, not %s", formatDuration(a))
		case a%time.Second != 0:
			ch.add(key+".ack-timeout", "must be whole seconds, not %s", formatDuration(a))
		}
	}
}

func validConnectorName(n string) bool {
	for _, r := range n {
		if !(r == '-' || r == '_' || '0' <= r && r <= '9' || 'a' <= r && r <= 'z' || 'A' <= r && r <= 'Z') {
			return false
		}
	}
	return n != ""
}

func (r *Remote) problems(ch *checker, key string) {
	tls := false
	if r.URL == "" {
		ch.add(key+".url", "must be set (tcp://host:port, mqtts://host:port, ...)")
	} else if u, err := url.Parse(r.URL); err != nil {
		ch.add(key+".url", "%q is not a URL: %v", r.URL, err)
	} else if t, ok := RemoteSchemes[u.Scheme]; !ok {
		ch.add(key+".url", "%q: scheme must be tcp, mqtt, ssl, tls, mqtts, ws or wss", r.URL)
	} else if u.User != nil {
		ch.add(key+".url", "%q: put credentials in username and password, not in the url (it is logged)", u.Redacted())
	} else if _, _, err := splitHostPort(u.Host); err != nil {
		ch.add(key+".url", "%q: want host:port after the scheme (%v)", r.URL, err)
	} else {
		tls = t
	}
	if r.ClientID == "" || len(r.ClientID) > 65535 {
		ch.add(key+".client-id", "must be 1 to 65535 bytes")
	}
	if r.Password != "" && r.Username == "" {
		ch.add(key+".password", "is set without a username (MQTT 3.1.1 sends a password only with a username)")
	}
	tlsSet := r.TLSCAPath != "" || r.TLSCertPath != "" || r.TLSKeyPath != "" || r.TLSServerName != "" || r.TLSInsecureSkipVerify
	if tlsSet && !tls && r.URL != "" {
		ch.add(key+".url", "%q is not a TLS url (ssl://, tls://, mqtts://, wss://) but TLS settings are given", r.URL)
	}
	ch.file(key+".tls-ca-path", r.TLSCAPath, "")
	ch.file(key+".tls-cert-path", r.TLSCertPath, "")
	ch.file(key+".tls-key-path", r.TLSKeyPath, "")
	if (r.TLSCertPath == "") != (r.TLSKeyPath == "") {
		ch.add(key+".tls-cert-path", "tls-cert-path and tls-key-path go together: set both or neither")
	}
	switch k := r.Keepalive; {
	case k < time.Second || k > 65535*time.Second:
		ch.add(key+".keepalive", "must be from 1s to %s, not %s", formatDuration(65535*time.Second), formatDuration(k))
	case k%time.Second != 0:
		ch.add(key+".keepalive", "must be whole seconds, not %s", formatDuration(k))
	}
	if r.ConnectTimeout <= 0 {
		ch.add(key+".connect-timeout", "must be positive, not %s", formatDuration(r.ConnectTimeout))
	}
	if r.ReconnectMin <= 0 {
		ch.add(key+".reconnect-min", "must be positive, not %s", formatDuration(r.ReconnectMin))
	}
	if r.ReconnectMax < r.ReconnectMin {
		ch.add(key+".reconnect-max", "%s is less than reconnect-min (%s)", formatDuration(r.ReconnectMax), formatDuration(r.ReconnectMin))
	}
}

// RemoteUsesTLS reports whether a connector url's scheme is a TLS one.
func RemoteUsesTLS(rawURL string) bool {
	u, err := url.Parse(rawURL)
	return err == nil && RemoteSchemes[strings.ToLower(u.Scheme)]
}
