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
	NodeID  uint64 `yaml:"node-id" doc:"this node's ID in the cluster, unique per node and never reused; at least 1 (default 1)"`
	DataDir string `yaml:"data-dir" doc:"directory holding the store and, unless etcd.embedded.dir is set, the embedded etcd (default ./data)"`
	GRPC    GRPC   `yaml:"grpc"`
	MQTT    MQTT   `yaml:"mqtt"`
	HTTP    HTTP   `yaml:"http"`
	Etcd    Etcd   `yaml:"etcd"`

	// TLS, with HStreamDB's key names; wired up by a later issue. While
	// EnableTLS is true the key and certificate must be set and exist; the
	// CA is optional (HStreamDB uses it to verify client certificates) but
	// must exist when set.
	EnableTLS   bool   `yaml:"enable-tls" doc:"serve the gRPC API over TLS with tls-key-path and tls-cert-path (default false)"`
	TLSKeyPath  string `yaml:"tls-key-path" doc:"PEM private key for TLS; required when enable-tls is true (default empty)"`
	TLSCertPath string `yaml:"tls-cert-path" doc:"PEM certificate (chain) for TLS; required when enable-tls is true (default empty)"`
	TLSCAPath   string `yaml:"tls-ca-path" doc:"PEM CA bundle to verify client certificates with; optional (default empty)"`

	Stream       StreamDefaults `yaml:"stream"`
	Store        Store          `yaml:"store"`
	Subscription Subscription   `yaml:"subscription"`
	Log          Log            `yaml:"log"`
}

// GRPC configures the HStreamDB-compatible gRPC API.
type GRPC struct {
	Listen string `yaml:"listen" doc:"host:port the gRPC API listens on; port 0 picks a free one (default 127.0.0.1:6570)"`
	// Advertise is filled from Listen by Load and WithDefaults when empty
	// and Listen's host is specified. A port of 0 (from a Listen with port
	// 0) means the server substitutes the port it bound.
	Advertise string `yaml:"advertise" doc:"host:port clients and other nodes dial to reach this node; required when grpc.listen's host is 0.0.0.0, :: or empty (default grpc.listen)"`
}

// MQTT configures the embedded MQTT broker.
type MQTT struct {
	Listen string `yaml:"listen" doc:"host:port the MQTT broker listens on; empty disables MQTT (default 127.0.0.1:1883)"`
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
		MQTT:    MQTT{Listen: "127.0.0.1:1883"},
		HTTP:    HTTP{Listen: "127.0.0.1:6571"},
		Etcd: Etcd{
			Embedded: EmbeddedEtcd{
				ClientListen: "127.0.0.1:6579",
				PeerListen:   "127.0.0.1:6580",
			},
			Prefix:      "/weir/",
			DialTimeout: 5 * time.Second,
			LeaseTTL:    10 * time.Second,
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
	return &n
}

// WithDefaults returns a clone of c with every unset field filled with its
// default, for a Config built in Go. Unset means zero, except where zero is
// meaningful: MQTT.Listen and HTTP.Listen ("" disables),
// Stream.BacklogDuration (0 keeps forever), Store.GroupCommit.MaxWait,
// EnableTLS and the TLS paths, Etcd.Endpoints (empty means embedded) and
// Etcd.Embedded.Dir (see EtcdDir) keep their zero value. GRPC.Advertise
// defaults to GRPC.Listen when Listen's host is specified. c is not changed.
func (c *Config) WithDefaults() *Config {
	n, d := c.Clone(), Default()
	fill(&n.NodeID, d.NodeID)
	fill(&n.DataDir, d.DataDir)
	fill(&n.GRPC.Listen, d.GRPC.Listen)
	fill(&n.Etcd.Embedded.ClientListen, d.Etcd.Embedded.ClientListen)
	fill(&n.Etcd.Embedded.PeerListen, d.Etcd.Embedded.PeerListen)
	fill(&n.Etcd.Prefix, d.Etcd.Prefix)
	fill(&n.Etcd.DialTimeout, d.Etcd.DialTimeout)
	fill(&n.Etcd.LeaseTTL, d.Etcd.LeaseTTL)
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
	if c.GRPC.Advertise != "" {
		return
	}
	if host, _, err := splitHostPort(c.GRPC.Listen); err == nil && !unspecifiedHost(host) {
		c.GRPC.Advertise = c.GRPC.Listen
	}
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
