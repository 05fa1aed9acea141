package conf

import (
	"path/filepath"
	"reflect"
	"regexp"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestDefaultIsValid(t *testing.T) {
	require.NoError(t, Default().Validate())
	require.NoError(t, Default().WithDefaults().Validate())
	assert.Equal(t, Default().WithDefaults(), Default().WithDefaults().WithDefaults(), "WithDefaults is idempotent")
}

// Every doc tag ends with "(default X)", and X is Default()'s value, so the
// docs (flag usage, and the struct's source) cannot drift from Default().
// Keys whose default is zero may describe it instead ("grpc.listen").
func TestDocsStateDefaults(t *testing.T) {
	re := regexp.MustCompile(`\(default ([^()]+)\)$`)
	d := Default()
	for _, k := range keys {
		m := re.FindStringSubmatch(k.doc)
		if !assert.NotNil(t, m, "%s: doc %q does not end with (default …)", k.path, k.doc) {
			continue
		}
		v := k.field(d)
		if v.IsZero() {
			continue
		}
		assert.Equal(t, k.format(v), m[1], "%s: doc's default", k.path)
	}
}

func TestKeyNames(t *testing.T) {
	for path, want := range map[string][2]string{
		"node-id":                      {"WEIR_NODE_ID", "node-id"},
		"grpc.listen":                  {"WEIR_GRPC_LISTEN", "grpc-listen"},
		"etcd.endpoints":               {"WEIR_ETCD_ENDPOINTS", "etcd-endpoints"},
		"etcd.embedded.client-listen":  {"WEIR_ETCD_EMBEDDED_CLIENT_LISTEN", "etcd-embedded-client-listen"},
		"store.group-commit.max-bytes": {"WEIR_STORE_GROUP_COMMIT_MAX_BYTES", "store-group-commit-max-bytes"},
		"enable-tls":                   {"WEIR_ENABLE_TLS", "enable-tls"},
		"cluster.load-bound":           {"WEIR_CLUSTER_LOAD_BOUND", "cluster-load-bound"},
		"cluster.metadata-timeout":     {"WEIR_CLUSTER_METADATA_TIMEOUT", "cluster-metadata-timeout"},
		"cluster.peer-addresses":       {"WEIR_CLUSTER_PEER_ADDRESSES", "cluster-peer-addresses"},
		"mqtt.tls-ca-path":             {"WEIR_MQTT_TLS_CA_PATH", "mqtt-tls-ca-path"},
	} {
		k := keyByPath[path]
		require.NotNil(t, k, path)
		assert.Equal(t, want[0], k.env)
		assert.Equal(t, want[1], k.flag)
	}
	assert.Len(t, keys, 57)
}

func TestCloneIsDeep(t *testing.T) {
	c := Default()
	c.Etcd.Endpoints = []string{"10.0.0.1:2379", "10.0.0.2:2379"}
	c.MQTT.Routes = []Route{{Filter: "a/#", Stream: "a"}}
	c.Cluster.PeerAddresses = []string{"2=10.0.0.2:6570"}
	n := c.Clone()
	require.Equal(t, c, n)
	n.Etcd.Endpoints[0] = "changed:1"
	n.Cluster.PeerAddresses[0] = "2=changed:1"
	n.GRPC.Listen = "changed:2"
	n.Store.GroupCommit.MaxBytes = 1
	n.MQTT.Routes[0].Stream = "changed"
	assert.Equal(t, "a", c.MQTT.Routes[0].Stream)
	assert.Equal(t, "10.0.0.1:2379", c.Etcd.Endpoints[0])
	assert.Equal(t, "2=10.0.0.2:6570", c.Cluster.PeerAddresses[0])
	assert.Equal(t, "127.0.0.1:6570", c.GRPC.Listen)
	assert.Equal(t, 4*MiB, c.Store.GroupCommit.MaxBytes)
	assert.Nil(t, (*Config)(nil).Clone())

	c.Connectors.Ingest = []IngestConnector{{Name: "in", Filters: []string{"a/#"}, Routes: []Route{{Filter: "a/#", Stream: "a"}}}}
	c.Connectors.Egress = []EgressConnector{{Name: "out", Stream: "a"}}
	n = c.Clone()
	n.Connectors.Ingest[0].Filters[0] = "changed"
	n.Connectors.Ingest[0].Routes[0].Stream = "changed"
	n.Connectors.Egress[0].Stream = "changed"
	assert.Equal(t, "a/#", c.Connectors.Ingest[0].Filters[0])
	assert.Equal(t, "a", c.Connectors.Ingest[0].Routes[0].Stream)
	assert.Equal(t, "a", c.Connectors.Egress[0].Stream)

	// Clone must copy every reference-typed field deeply; this fails when a
	// new slice, map or pointer field is added without updating Clone.
	for _, k := range keys {
		switch k.typ.Kind() {
		case reflect.Slice:
			assert.Contains(t, []string{"etcd.endpoints", "cluster.peer-addresses", "mqtt.routes", "connectors.ingest", "connectors.egress"}, k.path,
				"Clone copies only Etcd.Endpoints, Cluster.PeerAddresses, MQTT.Routes and the connectors deeply")
		case reflect.Map, reflect.Pointer, reflect.Interface:
			t.Errorf("%s: Clone does not copy %s fields deeply", k.path, k.typ.Kind())
		}
	}
}

func TestWithDefaults(t *testing.T) {
	// A Config built in Go: zero means unset, except where zero means
	// something.
	c := &Config{DataDir: "/var/lib/weir", GRPC: GRPC{Listen: "127.0.0.1:0"}}
	before := c.Clone()
	got := c.WithDefaults()
	assert.Equal(t, before, c, "the caller's value is not changed")

	want := Default()
	want.DataDir = "/var/lib/weir"
	want.GRPC = GRPC{Listen: "127.0.0.1:0", Advertise: "127.0.0.1:0"}
	want.MQTT.Listen = ""            // "" disables
	want.MQTT.AllowAnonymous = false // a bool's zero is an answer
	want.HTTP.Listen = ""            // "" disables
	want.Stream.BacklogDuration = 0  // 0 keeps forever
	assert.Equal(t, want, got)
	require.NoError(t, got.Validate())

	// Advertise is not derived from a listen on every interface.
	c = &Config{GRPC: GRPC{Listen: "0.0.0.0:6570"}}
	assert.Empty(t, c.WithDefaults().GRPC.Advertise)
	require.ErrorContains(t, c.WithDefaults().Validate(), "grpc.advertise: must be set")
}

func TestValidateDoesNotMutate(t *testing.T) {
	for name, c := range map[string]*Config{
		"default": Default(),
		"zero":    {},
		"bad": func() *Config {
			c := Default()
			c.GRPC.Listen = "0.0.0.0:6570"
			c.Etcd.Endpoints = []string{"nope"}
			c.Store.MaxBatchSize = 1
			return c
		}(),
	} {
		t.Run(name, func(t *testing.T) {
			before := c.Clone()
			_ = c.Validate()
			assert.Equal(t, before, c)
		})
	}
}

func TestEtcdDirAndEmbedded(t *testing.T) {
	c := Default()
	assert.True(t, c.Embedded())
	assert.Equal(t, filepath.Join("data", "etcd"), c.EtcdDir())
	c.Etcd.Embedded.Dir = "/srv/etcd"
	assert.Equal(t, "/srv/etcd", c.EtcdDir())
	c.Etcd.Endpoints = []string{"127.0.0.1:2379"}
	assert.False(t, c.Embedded())
}

func TestProblemsError(t *testing.T) {
	c := Default()
	c.NodeID = 0
	err := c.Validate()
	require.ErrorIs(t, err, ErrInvalid)
	assert.Equal(t, "conf: node-id: must be at least 1", err.Error())

	c.Log.Level = "loud"
	err = c.Validate()
	assert.Equal(t, "conf: 2 problems:\n\tnode-id: must be at least 1\n\tlog.level: \"loud\" is not one of debug, info, warn, error", err.Error())
	var ke *KeyError
	require.ErrorAs(t, err, &ke)
	assert.Equal(t, "node-id", ke.Key)
}

func TestFormatDuration(t *testing.T) {
	for d, want := range map[time.Duration]string{
		0: "0s", 10 * time.Second: "10s", 168 * time.Hour: "168h", time.Minute: "1m",
		90 * time.Minute: "1h30m", 1500 * time.Millisecond: "1.5s", time.Hour + time.Second: "1h0m1s",
	} {
		assert.Equal(t, want, formatDuration(d))
	}
	paths := allPaths()
	for _, tc := range []struct{ name, suffix, want string }{
		{"grpc.lisen", ".lisen", " (did you mean grpc.listen?)"},
		{"store.max-bytes", ".max-bytes", " (did you mean store.group-commit.max-bytes?)"},
		{"listen", ".listen", ""}, // three keys end in .listen
		{"totally.different", ".different", ""},
	} {
		assert.Equal(t, tc.want, suggest(tc.name, paths, tc.suffix), tc.name)
	}
}
