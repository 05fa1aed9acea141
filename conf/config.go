package conf

import (
	"net"
	"path/filepath"
	"slices"
	"time"
)

// Config is the configuration of one weir node. Each field's doc tag is its
// documentation (and its flag's usage text) and ends with its default; a
// test keeps those defaults equal to Default()'s. See the package doc for
// how the file, WEIR_* environment variables and flags are layered.
type Config struct {
	NodeID  uint64  `yaml:"node-id" doc:"this node's ID in the cluster, unique per node and never reused; from 1 to 65535 (default 1)"`
	DataDir string  `yaml:"data-dir" doc:"directory holding the store and, unless etcd.embedded.dir is set, the embedded etcd (default ./data)"`
	GRPC    GRPC    `yaml:"grpc"`
	MQTT    MQTT    `yaml:"mqtt"`
	HTTP    HTTP    `yaml:"http"`
	Etcd    Etcd    `yaml:"etcd"`
	Cluster Cluster `yaml:"cluster"`

	// TLS for the gRPC API and between nodes, with HStreamDB's key names.
	// While EnableTLS is true the key and certificate must be set and
	// exist; the CA is optional and turns on mutual TLS. A path set while
	// nothing uses it is an error (see Validate): a forgotten enable-tls
	// would otherwise serve plaintext.
	EnableTLS   bool   `yaml:"enable-tls" doc:"serve the gRPC API over TLS 1.2 or later with tls-cert-path and tls-key-path, and dial other nodes over TLS with the same certificate (default false)"`
	TLSKeyPath  string `yaml:"tls-key-path" doc:"PEM private key for TLS; required when enable-tls is true (default empty)"`
	TLSCertPath string `yaml:"tls-cert-path" doc:"PEM certificate (chain) for TLS; required when enable-tls is true (default empty)"`
	TLSCAPath   string `yaml:"tls-ca-path" doc:"PEM CA bundle: gRPC clients must present a certificate it signed (mutual TLS), and nodes verify each other with it; without it, nodes verify each other with the system's roots (default empty)"`

	Stream       StreamDefaults `yaml:"stream"`
	Store        Store          `yaml:"store"`
	Subscription Subscription   `yaml:"subscription"`
	Connectors   Connectors     `yaml:"connectors"`
	Log          Log            `yaml:"log"`
}

// Connectors are weir's MQTT clients of external brokers (EMQX, Mosquitto,
// any MQTT 3.1.1 or 5 broker): ingest connectors subscribe there and append
// what arrives to streams; egress connectors publish a stream's records
// there. See the bridge package.
type Connectors struct {
	Ingest []IngestConnector `yaml:"ingest" doc:"connectors that subscribe to filters on an external broker and append what arrives through their routes: a YAML list of {name, url, filters, routes, ...} (see docs/emqx.md); empty runs none (default empty)"`
	Egress []EgressConnector `yaml:"egress" doc:"connectors that publish a stream's records to an external broker through a subscription: a YAML list of {name, url, stream, topic, ...} (see docs/emqx.md); empty runs none (default empty)"`
}

// Remote is how a connector reaches its external broker. Zero values take
// the defaults named on each field (see WithConnectorDefaults).
type Remote struct {
	// URL is tcp://, mqtt:// (plain), ssl://, tls://, mqtts:// (TLS),
	// ws:// or wss:// (WebSocket), with host and port.
	URL      string `yaml:"url"`
	ClientID string `yaml:"client-id,omitempty"` // default weir-<name>
	Username string `yaml:"username,omitempty"`
	Password string `yaml:"password,omitempty"`
	// TLS: a CA bundle to verify the broker with (default: the system's),
	// a client certificate and key (both or neither), the name to verify
	// (default: the URL's host), and, for tests only, no verification.
	TLSCAPath             string `yaml:"tls-ca-path,omitempty"`
	TLSCertPath           string `yaml:"tls-cert-path,omitempty"`
	TLSKeyPath            string `yaml:"tls-key-path,omitempty"`
	TLSServerName         string `yaml:"tls-server-name,omitempty"`
	TLSInsecureSkipVerify bool   `yaml:"tls-insecure-skip-verify,omitempty"`

	Keepalive      time.Duration `yaml:"keepalive,omitempty"`       // default 30s
	ConnectTimeout time.Duration `yaml:"connect-timeout,omitempty"` // default 10s
	// ReconnectMin and ReconnectMax bound the back-off between connection
	// attempts: it starts at ReconnectMin and doubles up to ReconnectMax.
	ReconnectMin time.Duration `yaml:"reconnect-min,omitempty"` // default 1s
	ReconnectMax time.Duration `yaml:"reconnect-max,omitempty"` // default 30s
}

// IngestConnector subscribes to Filters at QoS 1 on a persistent session
// (clean session off) and appends each message through Routes, acknowledging
// it to the remote broker only once committed.
type IngestConnector struct {
	Name   string `yaml:"name"`
	Remote `yaml:",inline"`
	// Filters are the topic filters subscribed to, at QoS 1.
	Filters []string `yaml:"filters"`
	// Routes work as mqtt.routes do, with ${clientid} and ${username}
	// standing for the connector's own (MQTT does not tell a subscriber
	// who published); empty means the default route.
	Routes []Route `yaml:"routes,omitempty"`
	// MaxPending bounds the messages received and not yet committed;
	// beyond it the connector stops reading from the broker. Default 1000.
	MaxPending int `yaml:"max-pending,omitempty"`
}

// EgressConnector publishes the records of Stream to the remote broker at
// QoS 1, through the subscription Subscription, acknowledging each record
// only once the broker has acknowledged its PUBLISH.
type EgressConnector struct {
	Name   string `yaml:"name"`
	Remote `yaml:",inline"`
	Stream string `yaml:"stream"`
	// Subscription is the subscription (consumer group) the connector
	// reads Stream through; created when missing. Default weir-egress-<name>.
	Subscription string `yaml:"subscription,omitempty"`
	// Offset is where a new subscription starts: earliest or latest
	// (default latest).
	Offset string `yaml:"offset,omitempty"`
	// Topic is a template of the topic each record is published on, over
	// ${stream}, ${key} and ${topic} (the record's mqtt.topic attribute, or
	// the stream's name when it has none). Default ${topic}.
	Topic  string `yaml:"topic,omitempty"`
	Retain bool   `yaml:"retain,omitempty"`
	// MaxInflight bounds the records published and not yet acknowledged
	// by the broker (the subscription's maxUnackedRecords). Default 100.
	MaxInflight int `yaml:"max-inflight,omitempty"`
	// AckTimeout is the subscription's ack timeout: how long a record may
	// wait for the broker's PUBACK before it is delivered again. Whole
	// seconds; default 60s.
	AckTimeout time.Duration `yaml:"ack-timeout,omitempty"`
}

// GRPC configures the HStreamDB-compatible gRPC API.
type GRPC struct {
	Listen string `yaml:"listen" doc:"host:port the gRPC API listens on; port 0 picks a free one (default 127.0.0.1:6570)"`
	// Advertise is filled from Listen by Load and WithDefaults when empty
	// and Listen's host is specified. A port of 0 (from a Listen with port
	// 0) means the server substitutes the port it bound.
	Advertise string `yaml:"advertise" doc:"host:port clients and other nodes dial to reach this node; required when grpc.listen's host is 0.0.0.0, :: or empty (default grpc.listen)"`
}

// MQTT configures the embedded MQTT broker and the bridge from MQTT to
// streams.
type MQTT struct {
	Listen           string        `yaml:"listen" doc:"host:port the MQTT broker listens on; empty disables MQTT (default 127.0.0.1:1883)"`
	TLSListen        string        `yaml:"tls-listen" doc:"host:port of MQTT over TLS 1.2 or later, with mqtt.tls-cert-path and mqtt.tls-key-path, or when none of the mqtt.tls-*-path keys is set with tls-cert-path, tls-key-path and tls-ca-path; empty disables it (default empty)"`
	WSListen         string        `yaml:"ws-listen" doc:"host:port of MQTT over WebSocket; empty disables it (default empty)"`
	MaxPacketSize    ByteSize      `yaml:"max-packet-size" doc:"largest MQTT packet the broker accepts; larger ones close the connection (default 2MiB)"`
	ReceiveMaximum   int           `yaml:"receive-maximum" doc:"QoS 1 and 2 publishes one client may have unacknowledged; MQTT 5 clients are told it, 3.1.1 clients are slowed at it; 1 to 65535 (default 1024)"`
	MaxInflight      int           `yaml:"max-inflight" doc:"QoS 1 and 2 messages the broker keeps unacknowledged towards one client; 1 to 65535 (default 8192)"`
	MaxSessionExpiry time.Duration `yaml:"max-session-expiry" doc:"longest a disconnected client's persistent session (its subscriptions and queued messages, and its client ID) is kept; MQTT 5 clients asking more are told this; whole seconds (default 2h)"`
	MaxKeepalive     time.Duration `yaml:"max-keepalive" doc:"longest keepalive a client may use: MQTT 5 clients asking more, or none, are told to use this one, and a 3.1.1 connection silent for 1.5 times it is closed; whole seconds, 5s to 18h12m15s (default 10m)"`

	// The MQTT TLS listener's own files; when all three are empty it uses
	// the top-level ones (see Config.MQTTTLS).
	TLSCertPath string `yaml:"tls-cert-path" doc:"PEM certificate (chain) of the MQTT TLS listener (default empty: tls-cert-path)"`
	TLSKeyPath  string `yaml:"tls-key-path" doc:"PEM private key of the MQTT TLS listener (default empty: tls-key-path)"`
	TLSCAPath   string `yaml:"tls-ca-path" doc:"PEM CA bundle: MQTT TLS clients must present a certificate it signed (default empty: tls-ca-path when no mqtt.tls-*-path is set, else no client certificates)"`
	// PeerCertAsUsername makes a verified client certificate's identity
	// the username of an MQTT TLS connection.
	PeerCertAsUsername string `yaml:"peer-cert-as-username" doc:"cn or san: on the MQTT TLS listener, a client's verified certificate authenticates it and its Common Name (cn) or first DNS, email or URI subject alternative name (san) is its username for mqtt.auth-file ACL rules, which may then name usernames that are not users; no password is checked; needs a CA for the listener (default empty: off)"`

	AllowAnonymous bool   `yaml:"allow-anonymous" doc:"let clients connect without a username; when false, only users of mqtt.auth-file may (default true)"`
	AuthFile       string `yaml:"auth-file" doc:"YAML file of MQTT users (bcrypt password hashes) and ACL rules; empty allows every client that may connect to publish and subscribe anywhere (default empty)"`

	// Routes map topics to streams and keys; empty means the one default
	// route (see the bridge package).
	Routes    []Route `yaml:"routes" doc:"ordered list of {filter, stream, key, create} routing topics to streams; the first match wins; empty means every topic goes to the stream named by its first level, created on first use, keyed by client ID (default empty)"`
	Unmatched string  `yaml:"unmatched" doc:"what happens to a publish no route matches: live (delivered to live subscribers, not stored) or reject (default live)"`

	Ingest MQTTIngest `yaml:"ingest"`
	Shared MQTTShared `yaml:"shared"`
}

// Route sends the publishes whose topic matches Filter to Stream, keyed by
// Key. Stream and Key are templates over ${clientid}, ${username}, ${topic}
// and ${topic[N]} (the Nth topic level, from 0).
type Route struct {
	Filter string `yaml:"filter"`
	Stream string `yaml:"stream"`
	Key    string `yaml:"key,omitempty"`    // default ${clientid}
	Create bool   `yaml:"create,omitempty"` // create the stream, with the stream defaults, on first use
}

// DefaultRouteKey is a route's key when it names none.
const DefaultRouteKey = "${clientid}"

// MQTTIngest bounds the path from a publish to its stream.
type MQTTIngest struct {
	Linger          time.Duration `yaml:"linger" doc:"how long a shard's batch of publishes waits for more before it is appended; 0 appends what has arrived at once (default 0s)"`
	MaxPendingBytes ByteSize      `yaml:"max-pending-bytes" doc:"payload bytes of publishes accepted but not yet committed, over all clients; publishers wait beyond it (default 64MiB)"`
	PublishTimeout  time.Duration `yaml:"publish-timeout" doc:"the longest a publish waits for room and its commit; past it MQTT 5 clients get quota exceeded and 3.1.1 clients are disconnected (default 10s)"`
}

// MQTTShared configures the durable shared subscriptions
// ($share/{group}/{filter}) that MQTT clients consume streams with.
type MQTTShared struct {
	Offset     string        `yaml:"offset" doc:"where a group's subscription starts when its first member creates it: earliest or latest (default latest)"`
	AckTimeout time.Duration `yaml:"ack-timeout" doc:"how long a delivered message may go without PUBACK before it is redelivered; whole seconds (default 30s)"`
	MaxUnacked int           `yaml:"max-unacked" doc:"messages a group may have delivered and not acknowledged (default 10000)"`
}

// HTTP configures the metrics and health endpoint.
type HTTP struct {
	Listen string `yaml:"listen" doc:"host:port serving metrics and health checks; empty disables it (default 127.0.0.1:6571)"`
}

// Etcd configures where cluster metadata lives.
type Etcd struct {
	Endpoints   []string      `yaml:"endpoints" doc:"external etcd endpoints (host:port or URL; comma-separated in env and flags); empty starts an embedded etcd (default empty)"`
	Embedded    EmbeddedEtcd  `yaml:"embedded"`
	Prefix      string        `yaml:"prefix" doc:"prefix of every etcd key weir uses; must start and end with / (default /weir/)"`
	DialTimeout time.Duration `yaml:"dial-timeout" doc:"timeout for connecting to etcd (default 5s)"`
	LeaseTTL    time.Duration `yaml:"lease-ttl" doc:"TTL of the lease that keeps this node registered; whole seconds, at least 2s (default 10s)"`
}

// Cluster configures this node's part in a cluster of nodes: its share of
// the load, how placement bounds every node's load, when an unavailable node
// is given up on, and how long metadata operations wait for etcd.
type Cluster struct {
	// Weight is relative: a node of weight 2 gets about twice the replicas
	// and subscription owners of a node of weight 1, whatever the sum.
	Weight float64 `yaml:"weight" doc:"this node's share of replicas and subscription owners relative to the others; more than 0 (default 1)"`
	// LoadBound is the c of consistent hashing with bounded loads: a node
	// whose weighted share is s never carries more than c*s of the items.
	// Near 1 spreads items evenly but moves more of them when a node joins
	// or leaves; 10 is past any useful value.
	LoadBound float64 `yaml:"load-bound" doc:"the c of consistent hashing with bounded loads: no node carries more than c times its weighted share of replicas or subscription owners; more than 1, at most 10 (default 1.25)"`
	// DeadAfter should be well over the longest restart or network
	// partition a node is expected to come back from: re-placing a dead
	// node's replicas copies their data to other nodes.
	DeadAfter time.Duration `yaml:"dead-after" doc:"how long a node may stay unavailable before it counts as dead and its replicas are re-placed on other nodes; at least 1s (default 5m)"`
	// MetadataTimeout bounds metadata operations only: appends and reads of
	// existing shards need no etcd and go on while it is unreachable.
	MetadataTimeout time.Duration `yaml:"metadata-timeout" doc:"how long a metadata operation (creating a stream, a subscription, a reader, ...) waits for etcd before it fails with Unavailable (default 5s)"`
	// PeerAddresses translates addresses, as Kafka's inter-broker listener
	// or a Cassandra driver's address translator does: nodes reach each
	// other at internal addresses while clients dial the advertised ones.
	// Only this node's dialing changes; a listed node must still be a live
	// member to be dialed. Over TLS, the certificate is verified against the
	// dialed host. Use PeerAddressMap to read it.
	PeerAddresses []string `yaml:"peer-addresses" doc:"addresses this node dials to reach other nodes' node-to-node service instead of their grpc.advertise, as id=host:port (comma-separated in env and flags); nodes not listed are dialed at their advertised address (default empty)"`
}

// PeerAddressMap returns PeerAddresses by node id, nil when there are
// none. Entries Validate refuses for their form are left out; of an id
// listed twice, the last wins.
func (c Cluster) PeerAddressMap() map[uint64]string {
	var m map[uint64]string
	for _, e := range c.PeerAddresses {
		id, addr, err := parsePeerAddress(e)
		if err != nil {
			continue
		}
		if m == nil {
			m = make(map[uint64]string, len(c.PeerAddresses))
		}
		m[id] = addr
	}
	return m
}

// EmbeddedEtcd configures the etcd started in-process when Etcd.Endpoints
// is empty. Its ports are not etcd's 2379/2380, so a system etcd does not
// clash with it.
type EmbeddedEtcd struct {
	ClientListen string `yaml:"client-listen" doc:"host:port the embedded etcd serves clients on; unused with etcd.endpoints (default 127.0.0.1:6579)"`
	PeerListen   string `yaml:"peer-listen" doc:"host:port the embedded etcd listens on for peers; unused with etcd.endpoints (default 127.0.0.1:6580)"`
	Dir          string `yaml:"dir" doc:"directory of the embedded etcd (default <data-dir>/etcd)"`
}

// StreamDefaults are used when a CreateStream request leaves a value at
// zero, and by the CLI and MQTT's auto-created streams.
type StreamDefaults struct {
	ReplicationFactor uint32        `yaml:"replication-factor" doc:"replicas of each shard of a new stream that does not say (default 1)"`
	ShardCount        uint32        `yaml:"shard-count" doc:"shards of a new stream that does not say (default 1)"`
	BacklogDuration   time.Duration `yaml:"backlog-duration" doc:"how long a new stream that does not say keeps records; 0 keeps them forever; whole seconds (default 168h)"`
}

// Store configures the pebble store and its write path.
type Store struct {
	MaxRecordSize          ByteSize      `yaml:"max-record-size" doc:"largest payload of a single record (default 1MiB)"`
	MaxBatchSize           ByteSize      `yaml:"max-batch-size" doc:"largest append, both its compressed batch payload and its decompressed size; from store.max-record-size to 1GiB (default 8MiB)"`
	GroupCommit            GroupCommit   `yaml:"group-commit"`
	RetentionCheckInterval time.Duration `yaml:"retention-check-interval" doc:"how often records past their stream's backlog duration are trimmed (default 10s)"`
	MaxInflightAppends     int           `yaml:"max-inflight-appends" doc:"appends queued for the next raft round before Append blocks (default 4096)"`
}

// GroupCommit bounds one commit round: one pebble batch and one sync for
// the appends of every shard on the node.
type GroupCommit struct {
	MaxWait  time.Duration `yaml:"max-wait" doc:"extra time a commit round waits to gather more appends before its sync; 0 lets batching come from the sync alone; under 100ms (default 0s)"`
	MaxBytes ByteSize      `yaml:"max-bytes" doc:"the most bytes of appends one commit round (one sync) carries (default 4MiB)"`
}

// Subscription configures the consumer groups this node owns.
type Subscription struct {
	CheckpointInterval time.Duration `yaml:"checkpoint-interval" doc:"the longest a subscription's acknowledged progress waits before it is persisted (it is also persisted at shutdown); a crash redelivers what was acked since (default 1s)"`
}

// Log configures the node's slog logger.
type Log struct {
	Level  string `yaml:"level" doc:"debug, info, warn or error (default info)"`
	Format string `yaml:"format" doc:"text or json (default text)"`
}

// Default returns a new Config holding every default. It is valid as it
// is. GRPC.Advertise and Etcd.Embedded.Dir stay empty: their defaults derive
// from other keys (see WithDefaults and EtcdDir).
func Default() *Config {
	return &Config{
		NodeID:  1,
		DataDir: "./data",
		GRPC:    GRPC{Listen: "127.0.0.1:6570"},
		MQTT: MQTT{
			Listen:           "127.0.0.1:1883",
			MaxPacketSize:    2 * MiB,
			ReceiveMaximum:   1024,
			MaxInflight:      8192,
			MaxKeepalive:     10 * time.Minute,
			MaxSessionExpiry: 2 * time.Hour,
			AllowAnonymous:   true,
			Unmatched:        "live",
			Ingest: MQTTIngest{
				MaxPendingBytes: 64 * MiB,
				PublishTimeout:  10 * time.Second,
			},
			Shared: MQTTShared{
				Offset:     "latest",
				AckTimeout: 30 * time.Second,
				MaxUnacked: 10000,
			},
		},
		HTTP: HTTP{Listen: "127.0.0.1:6571"},
		Etcd: Etcd{
			Embedded: EmbeddedEtcd{
				ClientListen: "127.0.0.1:6579",
				PeerListen:   "127.0.0.1:6580",
			},
			Prefix:      "/weir/",
			DialTimeout: 5 * time.Second,
			LeaseTTL:    10 * time.Second,
		},
		Cluster: Cluster{
			Weight:          1,
			LoadBound:       1.25,
			DeadAfter:       5 * time.Minute,
			MetadataTimeout: 5 * time.Second,
		},
		Stream: StreamDefaults{
			ReplicationFactor: 1,
			ShardCount:        1,
			BacklogDuration:   7 * 24 * time.Hour,
		},
		Store: Store{
			MaxRecordSize: 1 * MiB,
			MaxBatchSize:  8 * MiB,
			GroupCommit: GroupCommit{
				MaxWait:  0,
				MaxBytes: 4 * MiB,
			},
			RetentionCheckInterval: 10 * time.Second,
			MaxInflightAppends:     4096,
		},
		Subscription: Subscription{CheckpointInterval: time.Second},
		Log:          Log{Level: "info", Format: "text"},
	}
}

// Clone returns a deep copy of c.
func (c *Config) Clone() *Config {
	if c == nil {
		return nil
	}
	n := *c
	n.Etcd.Endpoints = slices.Clone(c.Etcd.Endpoints)
	n.Cluster.PeerAddresses = slices.Clone(c.Cluster.PeerAddresses)
	n.MQTT.Routes = slices.Clone(c.MQTT.Routes)
	n.Connectors.Ingest = slices.Clone(c.Connectors.Ingest)
	for i := range n.Connectors.Ingest {
		ic := &n.Connectors.Ingest[i]
		ic.Filters = slices.Clone(ic.Filters)
		ic.Routes = slices.Clone(ic.Routes)
	}
	n.Connectors.Egress = slices.Clone(c.Connectors.Egress)
	return &n
}

// WithDefaults returns a clone of c with every unset field filled with its
// default, for a Config built in Go. Unset means zero, except where zero is
// meaningful: MQTT.Listen and HTTP.Listen ("" disables), the other MQTT
// listeners, MQTT.AllowAnonymous, MQTT.AuthFile, MQTT.Routes (empty is the
// default route), MQTT.Ingest.Linger, Stream.BacklogDuration (0 keeps forever), Store.GroupCommit.MaxWait,
// EnableTLS and the TLS paths, Etcd.Endpoints (empty means embedded),
// Etcd.Embedded.Dir (see EtcdDir) and Cluster.PeerAddresses (empty dials
// every node at its advertised address) keep their zero value. GRPC.Advertise
// defaults to GRPC.Listen when Listen's host is specified. c is not changed.
func (c *Config) WithDefaults() *Config {
	n, d := c.Clone(), Default()
	fill(&n.NodeID, d.NodeID)
	fill(&n.DataDir, d.DataDir)
	fill(&n.GRPC.Listen, d.GRPC.Listen)
	fill(&n.MQTT.MaxPacketSize, d.MQTT.MaxPacketSize)
	fill(&n.MQTT.ReceiveMaximum, d.MQTT.ReceiveMaximum)
	fill(&n.MQTT.MaxInflight, d.MQTT.MaxInflight)
	fill(&n.MQTT.MaxKeepalive, d.MQTT.MaxKeepalive)
	fill(&n.MQTT.MaxSessionExpiry, d.MQTT.MaxSessionExpiry)
	fill(&n.MQTT.Unmatched, d.MQTT.Unmatched)
	fill(&n.MQTT.Ingest.MaxPendingBytes, d.MQTT.Ingest.MaxPendingBytes)
	fill(&n.MQTT.Ingest.PublishTimeout, d.MQTT.Ingest.PublishTimeout)
	fill(&n.MQTT.Shared.Offset, d.MQTT.Shared.Offset)
	fill(&n.MQTT.Shared.AckTimeout, d.MQTT.Shared.AckTimeout)
	fill(&n.MQTT.Shared.MaxUnacked, d.MQTT.Shared.MaxUnacked)
	fill(&n.Etcd.Embedded.ClientListen, d.Etcd.Embedded.ClientListen)
	fill(&n.Etcd.Embedded.PeerListen, d.Etcd.Embedded.PeerListen)
	fill(&n.Etcd.Prefix, d.Etcd.Prefix)
	fill(&n.Etcd.DialTimeout, d.Etcd.DialTimeout)
	fill(&n.Etcd.LeaseTTL, d.Etcd.LeaseTTL)
	fill(&n.Cluster.Weight, d.Cluster.Weight)
	fill(&n.Cluster.LoadBound, d.Cluster.LoadBound)
	fill(&n.Cluster.DeadAfter, d.Cluster.DeadAfter)
	fill(&n.Cluster.MetadataTimeout, d.Cluster.MetadataTimeout)
	fill(&n.Stream.ReplicationFactor, d.Stream.ReplicationFactor)
	fill(&n.Stream.ShardCount, d.Stream.ShardCount)
	fill(&n.Store.MaxRecordSize, d.Store.MaxRecordSize)
	fill(&n.Store.MaxBatchSize, d.Store.MaxBatchSize)
	fill(&n.Store.GroupCommit.MaxBytes, d.Store.GroupCommit.MaxBytes)
	fill(&n.Store.RetentionCheckInterval, d.Store.RetentionCheckInterval)
	fill(&n.Store.MaxInflightAppends, d.Store.MaxInflightAppends)
	fill(&n.Subscription.CheckpointInterval, d.Subscription.CheckpointInterval)
	fill(&n.Log.Level, d.Log.Level)
	fill(&n.Log.Format, d.Log.Format)
	n.fillDerived()
	return n
}

// fillDerived sets the defaults that come from other keys. It is the only
// filling Load does after layering: everything else came from Default().
func (c *Config) fillDerived() {
	for i := range c.Connectors.Ingest {
		ic := &c.Connectors.Ingest[i]
		ic.Remote.fill(ic.Name)
		fill(&ic.MaxPending, 1000)
	}
	for i := range c.Connectors.Egress {
		ec := &c.Connectors.Egress[i]
		ec.Remote.fill(ec.Name)
		fill(&ec.Subscription, "weir-egress-"+ec.Name)
		fill(&ec.Offset, "latest")
		fill(&ec.Topic, "${topic}")
		fill(&ec.MaxInflight, 100)
		fill(&ec.AckTimeout, 60*time.Second)
	}
	if c.GRPC.Advertise != "" {
		return
	}
	if host, _, err := splitHostPort(c.GRPC.Listen); err == nil && !unspecifiedHost(host) {
		c.GRPC.Advertise = c.GRPC.Listen
	}
}

// fill sets a connector's unset remote settings to their defaults.
func (r *Remote) fill(name string) {
	fill(&r.ClientID, "weir-"+name)
	fill(&r.Keepalive, 30*time.Second)
	fill(&r.ConnectTimeout, 10*time.Second)
	fill(&r.ReconnectMin, time.Second)
	fill(&r.ReconnectMax, 30*time.Second)
}

func fill[T comparable](p *T, def T) {
	var zero T
	if *p == zero {
		*p = def
	}
}

// EtcdDir is the embedded etcd's directory: Etcd.Embedded.Dir, or
// DataDir/etcd when that is empty.
func (c *Config) EtcdDir() string {
	if c.Etcd.Embedded.Dir != "" {
		return c.Etcd.Embedded.Dir
	}
	return filepath.Join(c.DataDir, "etcd")
}

// Embedded reports whether the node starts an embedded etcd, that is
// whether Etcd.Endpoints is empty.
func (c *Config) Embedded() bool { return len(c.Etcd.Endpoints) == 0 }

// unspecifiedHost reports whether host means every interface (empty,
// 0.0.0.0 or ::), so an address with it cannot be dialled as it is.
func unspecifiedHost(host string) bool {
	if host == "" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsUnspecified()
}
