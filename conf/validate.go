package conf

import (
	"errors"
	"fmt"
	"math"
	"net"
	"net/netip"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"
)

// Validate checks c as it is (it fills nothing, so call WithDefaults first
// on a Config built in Go) and returns every problem at once, as Problems,
// each naming its YAML key. It only reads c, and the file system for the
// TLS paths.
func (c *Config) Validate() error { return c.problems().err() }

// maxBatchSize caps store.max-batch-size: one append becomes one raft
// entry and one pebble batch, and gRPC messages are capped below 2GiB.
const maxBatchSize = 1 * GiB

// maxLoadBound caps cluster.load-bound: with c = 10 a node may already
// carry ten times its share, which is no bound worth the name.
const maxLoadBound = 10

type checker struct{ probs Problems }

func (ch *checker) add(key, format string, args ...any) {
	ch.probs = append(ch.probs, &KeyError{Key: key, Err: fmt.Errorf(format, args...)})
}

// maxNodeID is cluster.MaxNodeID (conf imports none of weir's packages).
const maxNodeID = 1<<16 - 1

// problems lists what is wrong with c, in key order.
func (c *Config) problems() Problems {
	var ch checker
	if c.NodeID < 1 {
		ch.add("node-id", "must be at least 1")
	} else if c.NodeID > maxNodeID {
		ch.add("node-id", "must be at most %d, not %d", maxNodeID, c.NodeID)
	}
	if c.DataDir == "" {
		ch.add("data-dir", "must be set")
	}

	ch.hostPort("grpc.listen", c.GRPC.Listen, false)
	switch {
	case c.GRPC.Advertise != "":
		if ch.hostPort("grpc.advertise", c.GRPC.Advertise, false) {
			if host, _, _ := splitHostPort(c.GRPC.Advertise); unspecifiedHost(host) {
				ch.add("grpc.advertise", "%q has no host clients can dial; name this node's reachable host or IP", c.GRPC.Advertise)
			}
		}
	default:
		if host, _, err := splitHostPort(c.GRPC.Listen); err == nil && unspecifiedHost(host) {
			ch.add("grpc.advertise", "must be set when grpc.listen (%q) listens on every interface: the host:port clients dial to reach this node", c.GRPC.Listen)
		}
	}
	ch.hostPort("mqtt.listen", c.MQTT.Listen, true)
	ch.hostPort("mqtt.tls-listen", c.MQTT.TLSListen, true)
	ch.hostPort("mqtt.ws-listen", c.MQTT.WSListen, true)
	c.MQTT.problems(&ch)
	ch.hostPort("http.listen", c.HTTP.Listen, true)

	for i, ep := range c.Etcd.Endpoints {
		if err := checkEndpoint(ep); err != nil {
			ch.add("etcd.endpoints", "item %d: %v", i, err)
		}
	}
	listens := []struct{ key, addr string }{
		{"grpc.listen", c.GRPC.Listen},
		{"mqtt.listen", c.MQTT.Listen},
		{"mqtt.tls-listen", c.MQTT.TLSListen},
		{"mqtt.ws-listen", c.MQTT.WSListen},
		{"http.listen", c.HTTP.Listen},
	}
	if c.Embedded() {
		ch.hostPort("etcd.embedded.client-listen", c.Etcd.Embedded.ClientListen, false)
		ch.hostPort("etcd.embedded.peer-listen", c.Etcd.Embedded.PeerListen, false)
		listens = append(listens,
			struct{ key, addr string }{"etcd.embedded.client-listen", c.Etcd.Embedded.ClientListen},
			struct{ key, addr string }{"etcd.embedded.peer-listen", c.Etcd.Embedded.PeerListen})
	}
	for i, a := range listens {
		for _, b := range listens[:i] {
			if clash(a.addr, b.addr) {
				ch.add(a.key, "%q is also %s (%q)", a.addr, b.key, b.addr)
			}
		}
	}
	if p := c.Etcd.Prefix; !strings.HasPrefix(p, "/") || !strings.HasSuffix(p, "/") {
		ch.add("etcd.prefix", "%q must start and end with /", p)
	}
	if c.Etcd.DialTimeout <= 0 {
		ch.add("etcd.dial-timeout", "must be positive, not %s", formatDuration(c.Etcd.DialTimeout))
	}
	switch ttl := c.Etcd.LeaseTTL; {
	case ttl < 2*time.Second:
		ch.add("etcd.lease-ttl", "must be at least 2s, not %s", formatDuration(ttl))
	case ttl%time.Second != 0:
		ch.add("etcd.lease-ttl", "must be whole seconds (etcd leases are), not %s", formatDuration(ttl))
	}

	c.Cluster.problems(&ch, c.NodeID)

	c.tlsProblems(&ch)

	if c.Stream.ReplicationFactor < 1 {
		ch.add("stream.replication-factor", "must be at least 1")
	}
	if c.Stream.ShardCount < 1 {
		ch.add("stream.shard-count", "must be at least 1")
	}
	switch d := c.Stream.BacklogDuration; {
	case d < 0:
		ch.add("stream.backlog-duration", "must not be negative (0 keeps records forever), not %s", formatDuration(d))
	case d%time.Second != 0:
		ch.add("stream.backlog-duration", "must be whole seconds (HStreamDB's backlogDuration is), not %s", formatDuration(d))
	case d/time.Second > 1<<32-1:
		ch.add("stream.backlog-duration", "must be at most %s (HStreamDB's backlogDuration is a uint32 of seconds)", formatDuration((1<<32-1)*time.Second))
	}

	s := c.Store
	if s.MaxRecordSize <= 0 {
		ch.add("store.max-record-size", "must be positive, not %s", s.MaxRecordSize)
	}
	switch {
	case s.MaxBatchSize <= 0:
		ch.add("store.max-batch-size", "must be positive, not %s", s.MaxBatchSize)
	case s.MaxBatchSize > maxBatchSize:
		ch.add("store.max-batch-size", "%s is more than the limit of %s", s.MaxBatchSize, ByteSize(maxBatchSize))
	case s.MaxBatchSize < s.MaxRecordSize:
		ch.add("store.max-batch-size", "%s is less than store.max-record-size (%s); a batch must hold the largest record", s.MaxBatchSize, s.MaxRecordSize)
	}
	if w := s.GroupCommit.MaxWait; w < 0 || w >= 100*time.Millisecond {
		ch.add("store.group-commit.max-wait", "must be from 0 to under 100ms, not %s", formatDuration(w))
	}
	if s.GroupCommit.MaxBytes <= 0 {
		ch.add("store.group-commit.max-bytes", "must be positive, not %s", s.GroupCommit.MaxBytes)
	}
	if s.RetentionCheckInterval <= 0 {
		ch.add("store.retention-check-interval", "must be positive, not %s", formatDuration(s.RetentionCheckInterval))
	}
	if s.MaxInflightAppends < 1 {
		ch.add("store.max-inflight-appends", "must be at least 1, not %d", s.MaxInflightAppends)
	}

	if c.Subscription.CheckpointInterval <= 0 {
		ch.add("subscription.checkpoint-interval", "must be positive, not %s", formatDuration(c.Subscription.CheckpointInterval))
	}
	c.connectorProblems(&ch)

	switch c.Log.Level {
	case "debug", "info", "warn", "error":
	default:
		ch.add("log.level", "%q is not one of debug, info, warn, error", c.Log.Level)
	}
	switch c.Log.Format {
	case "text", "json":
	default:
		ch.add("log.format", "%q is not one of text, json", c.Log.Format)
	}
	return ch.probs
}

func (m *MQTT) problems(ch *checker) {
	if m.MaxPacketSize < 1*KiB || m.MaxPacketSize > 256*MiB-1 {
		ch.add("mqtt.max-packet-size", "must be from 1KiB to 256MiB-1 (MQTT's largest packet), not %s", m.MaxPacketSize)
	}
	if m.ReceiveMaximum < 1 || m.ReceiveMaximum > 65535 {
		ch.add("mqtt.receive-maximum", "must be from 1 to 65535, not %d", m.ReceiveMaximum)
	}
	if m.MaxInflight < 1 || m.MaxInflight > 65535 {
		ch.add("mqtt.max-inflight", "must be from 1 to 65535 (MQTT's packet identifiers), not %d", m.MaxInflight)
	}
	switch k := m.MaxKeepalive; {
	case k < 5*time.Second || k > 65535*time.Second:
		ch.add("mqtt.max-keepalive", "must be from 5s to %s (MQTT's keepalive is 16 bits of seconds), not %s", formatDuration(65535*time.Second), formatDuration(k))
	case k%time.Second != 0:
		ch.add("mqtt.max-keepalive", "must be whole seconds, not %s", formatDuration(k))
	}
	switch e := m.MaxSessionExpiry; {
	case e < time.Second || e > (1<<32-1)*time.Second:
		ch.add("mqtt.max-session-expiry", "must be from 1s to %s (MQTT's session expiry is 32 bits of seconds), not %s", formatDuration((1<<32-1)*time.Second), formatDuration(e))
	case e%time.Second != 0:
		ch.add("mqtt.max-session-expiry", "must be whole seconds, not %s", formatDuration(e))
	}
	if m.AuthFile != "" {
		ch.file("mqtt.auth-file", m.AuthFile, "")
	} else if !m.AllowAnonymous && m.PeerCertAsUsername == "" && (m.Listen != "" || m.TLSListen != "" || m.WSListen != "") {
		ch.add("mqtt.allow-anonymous", "is false but mqtt.auth-file names no users: no client could connect")
	}
	switch m.Unmatched {
	case "live", "reject":
	default:
		ch.add("mqtt.unmatched", "%q is not one of live, reject", m.Unmatched)
	}
	if l := m.Ingest.Linger; l < 0 || l >= 100*time.Millisecond {
		ch.add("mqtt.ingest.linger", "must be from 0 to under 100ms, not %s", formatDuration(l))
	}
	if m.Ingest.MaxPendingBytes < m.MaxPacketSize {
		ch.add("mqtt.ingest.max-pending-bytes", "%s is less than mqtt.max-packet-size (%s); the largest publish must fit", m.Ingest.MaxPendingBytes, m.MaxPacketSize)
	}
	if m.Ingest.PublishTimeout <= 0 {
		ch.add("mqtt.ingest.publish-timeout", "must be positive, not %s", formatDuration(m.Ingest.PublishTimeout))
	}
	switch m.Shared.Offset {
	case "earliest", "latest":
	default:
		ch.add("mqtt.shared.offset", "%q is not one of earliest, latest", m.Shared.Offset)
	}
	switch a := m.Shared.AckTimeout; {
	case a < time.Second || a > 36000*time.Second:
		ch.add("mqtt.shared.ack-timeout", "must be from 1s to 10h (HStreamDB's ackTimeoutSeconds bounds), not %s", formatDuration(a))
	case a%time.Second != 0:
		ch.add("mqtt.shared.ack-timeout", "must be whole seconds, not %s", formatDuration(a))
	}
	if u := m.Shared.MaxUnacked; u < 1 || u > 1_000_000 {
		ch.add("mqtt.shared.max-unacked", "must be from 1 to 1000000, not %d", u)
	}
}

// problems checks cl; self is node-id, which cluster.peer-addresses must
// not list.
func (cl *Cluster) problems(ch *checker, self uint64) {
	// The comparisons are written so NaN fails them too ("nan" parses as
	// a float); infinities are refused separately, as no share or bound
	// can be infinite.
	if w := cl.Weight; !(w > 0) || math.IsInf(w, 0) {
		ch.add("cluster.weight", "must be a number more than 0, not %v", w)
	}
	if c := cl.LoadBound; !(c > 1 && c <= maxLoadBound) {
		ch.add("cluster.load-bound", "must be more than 1 and at most %v, not %v", maxLoadBound, c)
	}
	if d := cl.DeadAfter; d < time.Second {
		ch.add("cluster.dead-after", "must be at least 1s, not %s", formatDuration(d))
	}
	if d := cl.MetadataTimeout; d <= 0 {
		ch.add("cluster.metadata-timeout", "must be positive, not %s", formatDuration(d))
	}
	first := make(map[uint64]int, len(cl.PeerAddresses)) // id -> its first item
	for i, e := range cl.PeerAddresses {
		id, _, err := parsePeerAddress(e)
		switch j, dup := first[id]; {
		case err != nil:
			ch.add("cluster.peer-addresses", "item %d (%q): %v", i, e, err)
		case id == self:
			ch.add("cluster.peer-addresses", "item %d (%q): node %d is this node (node-id)", i, e, id)
		case dup:
			ch.add("cluster.peer-addresses", "item %d (%q): node %d is also item %d", i, e, id, j)
		default:
			first[id] = i
		}
	}
}

// parsePeerAddress parses an item of cluster.peer-addresses, id=host:port,
// where the address must be one a node can dial.
func parsePeerAddress(item string) (id uint64, addr string, err error) {
	idText, addr, ok := strings.Cut(item, "=")
	if !ok {
		return 0, "", errors.New("not id=host:port")
	}
	id, err = strconv.ParseUint(idText, 10, 64)
	if err != nil || id < 1 || id > maxNodeID {
		return 0, "", fmt.Errorf("id must be a number from 1 to %d, not %q", maxNodeID, idText)
	}
	host, port, err := splitHostPort(addr)
	switch {
	case err != nil:
		return 0, "", fmt.Errorf("%q is not host:port (%v)", addr, err)
	case unspecifiedHost(host):
		return 0, "", fmt.Errorf("%q has no host to dial", addr)
	case port == 0:
		return 0, "", fmt.Errorf("%q has port 0, which cannot be dialed", addr)
	}
	return id, addr, nil
}

// hostPort checks that addr is host:port, or empty if optional, and
// reports whether it is a usable address.
func (ch *checker) hostPort(key, addr string, optional bool) bool {
	if addr == "" {
		if !optional {
			ch.add(key, "must be set (host:port)")
		}
		return false
	}
	if _, _, err := splitHostPort(addr); err != nil {
		ch.add(key, "%q is not host:port (%v)", addr, err)
		return false
	}
	return true
}

// file checks that path names an existing file. An empty path is an
// error with the message required, unless that is empty too (optional).
func (ch *checker) file(key, path string, required string) {
	if path == "" {
		if required != "" {
			ch.add(key, "%s", required)
		}
		return
	}
	fi, err := os.Stat(path)
	switch {
	case err != nil:
		ch.add(key, "%v", err)
	case fi.IsDir():
		ch.add(key, "%q is a directory, not a file", path)
	}
}

// splitHostPort splits host:port, as net.SplitHostPort does, and also
// checks that the port is a number (0, "pick one", included) and the host
// has no characters a host name or IP cannot.
func splitHostPort(addr string) (host string, port uint16, err error) {
	host, p, err := net.SplitHostPort(addr)
	if err != nil {
		var ae *net.AddrError
		if errors.As(err, &ae) {
			return "", 0, errors.New(ae.Err)
		}
		return "", 0, err
	}
	n, err := strconv.ParseUint(p, 10, 16)
	if err != nil {
		return "", 0, errors.New("port must be a number from 0 to 65535")
	}
	if _, err := netip.ParseAddr(host); err != nil {
		for _, r := range host {
			if !(r == '.' || r == '-' || r == '_' || '0' <= r && r <= '9' || 'a' <= r && r <= 'z' || 'A' <= r && r <= 'Z') {
				return "", 0, fmt.Errorf("host %q is not a host name or IP", host)
			}
		}
	}
	return host, uint16(n), nil
}

// clash reports whether two listen addresses would try to bind the same
// port: same non-zero port, and the same host or either on every interface.
func clash(a, b string) bool {
	ha, pa, errA := splitHostPort(a)
	hb, pb, errB := splitHostPort(b)
	if errA != nil || errB != nil || pa == 0 || pa != pb {
		return false
	}
	return ha == hb || unspecifiedHost(ha) || unspecifiedHost(hb)
}

// checkEndpoint accepts what etcd's client does: host:port, or a URL
// (http, https, unix, unixs) with a host.
func checkEndpoint(ep string) error {
	if !strings.Contains(ep, "://") {
		if _, _, err := splitHostPort(ep); err != nil {
			return fmt.Errorf("%q is not host:port or a URL (%v)", ep, err)
		}
		return nil
	}
	u, err := url.Parse(ep)
	if err != nil {
		return fmt.Errorf("%q is not a URL: %v", ep, err)
	}
	switch u.Scheme {
	case "http", "https", "unix", "unixs":
	default:
		return fmt.Errorf("%q: scheme must be http, https, unix or unixs", ep)
	}
	if u.Host == "" && !(strings.HasPrefix(u.Scheme, "unix") && u.Path != "") {
		return fmt.Errorf("%q has no host", ep)
	}
	return nil
}
