package conf

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/spf13/pflag"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// writeConfig writes a YAML file into a temp dir and returns its path.
func writeConfig(t *testing.T, text string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "weir.yaml")
	require.NoError(t, os.WriteFile(p, []byte(text), 0o600))
	return p
}

// flags returns a FlagSet bound by BindFlags and parsed from args.
func flags(t *testing.T, args ...string) *pflag.FlagSet {
	t.Helper()
	fs := pflag.NewFlagSet("weir", pflag.ContinueOnError)
	BindFlags(fs)
	require.NoError(t, fs.Parse(args))
	return fs
}

func TestLoadPrecedence(t *testing.T) {
	const file = `
node-id: 2
grpc:
  listen: 127.0.0.1:7001
mqtt:
  listen: 127.0.0.1:7002
store:
  max-record-size: 2MiB
  group-commit:
    max-bytes: 1048576
etcd:
  endpoints: [a:2379, b:2379]
  lease-ttl: 30s
`
	for _, tc := range []struct {
		name   string
		file   string
		env    []string
		args   []string
		expect func(c *Config)
	}{
		{name: "defaults", expect: func(c *Config) { c.GRPC.Advertise = c.GRPC.Listen }},
		{name: "file overrides defaults", file: file, expect: func(c *Config) {
			c.NodeID = 2
			c.GRPC = GRPC{Listen: "127.0.0.1:7001", Advertise: "127.0.0.1:7001"}
			c.MQTT.Listen = "127.0.0.1:7002"
			c.Store.MaxRecordSize = 2 * MiB
			c.Store.GroupCommit.MaxBytes = MiB
			c.Etcd.Endpoints = []string{"a:2379", "b:2379"}
			c.Etcd.LeaseTTL = 30 * time.Second
		}},
		{name: "env overrides file", file: file, env: []string{
			"PATH=/bin", "weir_node_id=9", // not WEIR_: ignored
			"WEIR_NODE_ID=3",
			"WEIR_GRPC_LISTEN=127.0.0.1:7003",
			"WEIR_STORE_GROUP_COMMIT_MAX_BYTES=2MiB",
			"WEIR_ETCD_ENDPOINTS= c:2379 , d:2379",
			"WEIR_ENABLE_TLS=false",
			"WEIR_CONFIG=/etc/weir.yaml", // the command's
		}, expect: func(c *Config) {
			c.NodeID = 3
			c.GRPC = GRPC{Listen: "127.0.0.1:7003", Advertise: "127.0.0.1:7003"}
			c.MQTT.Listen = "127.0.0.1:7002"
			c.Store.MaxRecordSize = 2 * MiB
			c.Store.GroupCommit.MaxBytes = 2 * MiB
			c.Etcd.Endpoints = []string{"c:2379", "d:2379"}
			c.Etcd.LeaseTTL = 30 * time.Second
		}},
		{name: "flags override env", file: file,
			env:  []string{"WEIR_NODE_ID=3", "WEIR_GRPC_LISTEN=127.0.0.1:7003", "WEIR_LOG_LEVEL=debug"},
			args: []string{"--node-id=4", "--grpc-listen", "0.0.0.0:7004", "--grpc-advertise=node4:7004", "--store-max-record-size=4MiB", "--etcd-endpoints=e:2379,f:2379", "--etcd-endpoints=g:2379"},
			expect: func(c *Config) {
				c.NodeID = 4
				c.GRPC = GRPC{Listen: "0.0.0.0:7004", Advertise: "node4:7004"}
				c.MQTT.Listen = "127.0.0.1:7002"
				c.Store.MaxRecordSize = 4 * MiB
				c.Store.GroupCommit.MaxBytes = MiB
				c.Etcd.Endpoints = []string{"e:2379", "f:2379", "g:2379"}
				c.Etcd.LeaseTTL = 30 * time.Second
				c.Log.Level = "debug" // env, no flag
			}},
		{name: "explicit zero and empty in a file", file: `
mqtt:
  listen: ""
http:
  listen:
stream:
  backlog-duration: 0
store:
  group-commit:
    max-wait: 0s
etcd:
  endpoints: []
`, env: []string{"WEIR_STORE_GROUP_COMMIT_MAX_WAIT=5ms"}, args: []string{"--etcd-endpoints="},
			expect: func(c *Config) {
				c.GRPC.Advertise = c.GRPC.Listen
				c.MQTT.Listen, c.HTTP.Listen = "", ""
				c.Stream.BacklogDuration = 0
				c.Store.GroupCommit.MaxWait = 5 * time.Millisecond
			}},
		{name: "explicit empty in env and flags", file: "stream:\n  backlog-duration: 24h\n",
			env:  []string{"WEIR_MQTT_LISTEN=", "WEIR_STREAM_BACKLOG_DURATION=0s"},
			args: []string{"--http-listen="},
			expect: func(c *Config) {
				c.GRPC.Advertise = c.GRPC.Listen
				c.MQTT.Listen, c.HTTP.Listen = "", ""
				c.Stream.BacklogDuration = 0
			}},
		{name: "bool flag alone", args: []string{"--enable-tls", "--tls-key-path=" + os.Args[0], "--tls-cert-path", os.Args[0]},
			expect: func(c *Config) {
				c.GRPC.Advertise = c.GRPC.Listen
				c.EnableTLS, c.TLSKeyPath, c.TLSCertPath = true, os.Args[0], os.Args[0]
			}},
		{name: "cluster keys from each source", file: "cluster:\n  weight: 2.5\n  load-bound: 1.1\n  dead-after: 10m\n",
			env:  []string{"WEIR_CLUSTER_LOAD_BOUND=1.5", "WEIR_CLUSTER_METADATA_TIMEOUT=2s"},
			args: []string{"--cluster-weight=0.5"},
			expect: func(c *Config) {
				c.GRPC.Advertise = c.GRPC.Listen
				c.Cluster = Cluster{Weight: 0.5, LoadBound: 1.5, DeadAfter: 10 * time.Minute, MetadataTimeout: 2 * time.Second}
			}},
		{name: "peer addresses from a file", file: "cluster:\n  peer-addresses: [2=10.0.0.2:6570, \"3=[fd00::3]:6570\"]\n",
			expect: func(c *Config) {
				c.GRPC.Advertise = c.GRPC.Listen
				c.Cluster.PeerAddresses = []string{"2=10.0.0.2:6570", "3=[fd00::3]:6570"}
			}},
		{name: "peer addresses from env", file: "cluster:\n  peer-addresses: [2=a:1]\n",
			env: []string{"WEIR_CLUSTER_PEER_ADDRESSES= 2=10.0.0.2:6570 , 3=10.0.0.3:6570"},
			expect: func(c *Config) {
				c.GRPC.Advertise = c.GRPC.Listen
				c.Cluster.PeerAddresses = []string{"2=10.0.0.2:6570", "3=10.0.0.3:6570"}
			}},
		{name: "peer addresses from flags", env: []string{"WEIR_CLUSTER_PEER_ADDRESSES=2=a:1"},
			args: []string{"--cluster-peer-addresses=2=10.0.0.2:6570,3=10.0.0.3:6570", "--cluster-peer-addresses", "4=10.0.0.4:6570"},
			expect: func(c *Config) {
				c.GRPC.Advertise = c.GRPC.Listen
				c.Cluster.PeerAddresses = []string{"2=10.0.0.2:6570", "3=10.0.0.3:6570", "4=10.0.0.4:6570"}
			}},
		{name: "empty file and null sections", file: "# nothing\ngrpc:\nstore:\n", expect: func(c *Config) { c.GRPC.Advertise = c.GRPC.Listen }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := loadCase(t, tc.file, tc.env, tc.args)
			require.NoError(t, err)
			want := Default()
			tc.expect(want)
			assert.Equal(t, want, got)
		})
	}
}

func TestLoadEmptyFile(t *testing.T) {
	got, err := Load(writeConfig(t, ""), nil, nil)
	require.NoError(t, err)
	assert.Equal(t, Default().WithDefaults(), got)
}

func TestLoadErrors(t *testing.T) {
	for _, tc := range []struct {
		name string
		file string
		env  []string
		args []string
		want []string // each must appear in the error
		keys []string // the keys named, in order ("" for none)
	}{
		{name: "unknown key", file: "grpc:\n  listen: 127.0.0.1:7000\n  lisen: x\nbogus: 1\n",
			want: []string{"grpc.lisen (", "weir.yaml:3): unknown key (did you mean grpc.listen?)", "bogus (", "weir.yaml:4): unknown key"},
			keys: []string{"grpc.lisen", "bogus"}},
		{name: "unknown env var", env: []string{"WEIR_GRPC_LISTN=127.0.0.1:1", "WEIR_NOPE=1"},
			want: []string{"env WEIR_GRPC_LISTN: matches no config key (did you mean WEIR_GRPC_LISTEN?)", "env WEIR_NOPE: matches no config key"},
			keys: []string{"", ""}},
		{name: "bad size and duration text", file: "store:\n  max-record-size: 12XB\netcd:\n  dial-timeout: 5\n",
			env:  []string{"WEIR_STORE_MAX_BATCH_SIZE=lots", "WEIR_ETCD_LEASE_TTL=10 seconds"},
			want: []string{`store.max-record-size (`, `weir.yaml:2): invalid size "12XB": unknown unit "XB"`, `etcd.dial-timeout (`, `invalid duration "5"`, `store.max-batch-size (env WEIR_STORE_MAX_BATCH_SIZE): invalid size "lots"`, `etcd.lease-ttl (env WEIR_ETCD_LEASE_TTL): invalid duration "10 seconds"`},
			keys: []string{"store.max-record-size", "etcd.dial-timeout", "store.max-batch-size", "etcd.lease-ttl"}},
		{name: "many bad values at once name each key", file: `
node-id: 0
grpc:
  listen: "x:y"
mqtt:
  listen: nope
store:
  max-record-size: 16MiB
  max-inflight-appends: -1
log:
  level: loud
  format: xml
etcd:
  prefix: weir
`, want: []string{
			`node-id (`, `weir.yaml:2): must be at least 1`,
			`grpc.listen (`, `weir.yaml:4): "x:y" is not host:port (port must be a number from 0 to 65535)`,
			`mqtt.listen (`, `"nope" is not host:port`,
			`store.max-batch-size: 8MiB is less than store.max-record-size (16MiB)`,
			`store.max-inflight-appends (`, `log.level (`, `log.format (`, `etcd.prefix (`,
		}, keys: []string{"node-id", "grpc.listen", "mqtt.listen", "etcd.prefix", "store.max-batch-size", "store.max-inflight-appends", "log.level", "log.format"}},
		{name: "bad values from each source", file: "node-id: -1\n", env: []string{"WEIR_SHARD_COUNT=1", "WEIR_STREAM_SHARD_COUNT=many"}, args: []string{"--log-format=xml"},
			want: []string{"node-id (", `invalid number "-1"`, "env WEIR_SHARD_COUNT: matches no config key (did you mean WEIR_STREAM_SHARD_COUNT?)",
				`stream.shard-count (env WEIR_STREAM_SHARD_COUNT): invalid number "many"`, `log.format (flag --log-format): "xml" is not one of text, json`},
			keys: []string{"node-id", "", "stream.shard-count", "log.format"}},
		{name: "zero that cannot be meant", file: "node-id: 0\ngrpc:\n  listen: \"\"\n", env: []string{"WEIR_STORE_RETENTION_CHECK_INTERVAL=0s"},
			want: []string{"node-id (", "must be at least 1", "grpc.listen (", "must be set", "store.retention-check-interval (env WEIR_STORE_RETENTION_CHECK_INTERVAL): must be positive"},
			keys: []string{"node-id", "grpc.listen", "store.retention-check-interval"}},
		{name: "wrong shapes", file: "grpc: 5\netcd:\n  endpoints: a:2379\nlog:\n  level: [debug]\nnode-id: 1\nnode-id: 2\n",
			want: []string{"grpc (", "must be a mapping", "etcd.endpoints (", "must be a list", "log.level (", "must be a single value", "node-id (", "set twice (first on line 6)"},
			keys: []string{"grpc", "etcd.endpoints", "log.level", "node-id"}},
		{name: "bad cluster numbers", file: "cluster:\n  weight: heavy\n  load-bound: 1\n", env: []string{"WEIR_CLUSTER_DEAD_AFTER=5"},
			want: []string{`cluster.weight (`, `weir.yaml:2): invalid number "heavy" (want a decimal number like 1.5)`,
				`cluster.load-bound (`, `weir.yaml:3): must be more than 1 and at most 10, not 1`,
				`cluster.dead-after (env WEIR_CLUSTER_DEAD_AFTER): invalid duration "5"`},
			keys: []string{"cluster.weight", "cluster.dead-after", "cluster.load-bound"}},
		{name: "bad peer addresses", file: "cluster:\n  peer-addresses: 2=a:1\n", env: []string{"WEIR_NODE_ID=2"},
			args: []string{"--cluster-peer-addresses=2=a:1,3=b,3=c:1"},
			want: []string{`cluster.peer-addresses (`, `weir.yaml:2): must be a list`,
				`cluster.peer-addresses (flag --cluster-peer-addresses): item 0 ("2=a:1"): node 2 is this node (node-id)`,
				`item 1 ("3=b"): "b" is not host:port (missing port in address)`},
			keys: []string{"cluster.peer-addresses", "cluster.peer-addresses", "cluster.peer-addresses"}},
		{name: "not a mapping", file: "- a\n- b\n", want: []string{"the top level must be a mapping"}, keys: []string{""}},
		{name: "syntax error", file: "grpc:\n  listen: [\n", want: []string{"weir.yaml: yaml:"}, keys: []string{""}},
		{name: "two documents", file: "node-id: 1\n---\nnode-id: 2\n", want: []string{"want one YAML document"}, keys: []string{""}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := loadCase(t, tc.file, tc.env, tc.args)
			require.Error(t, err)
			assert.Nil(t, c)
			assert.ErrorIs(t, err, ErrInvalid)
			for _, w := range tc.want {
				assert.Contains(t, err.Error(), w)
			}
			assert.Equal(t, tc.keys, keysOf(t, err), "%v", err)
		})
	}
}

func TestLoadMissingFile(t *testing.T) {
	_, err := Load(filepath.Join(t.TempDir(), "nope.yaml"), nil, nil)
	require.ErrorIs(t, err, os.ErrNotExist)
	assert.NotErrorIs(t, err, ErrInvalid)
}

func TestLoadDoesNotShareState(t *testing.T) {
	a, err := Load("", nil, nil)
	require.NoError(t, err)
	a.Etcd.Endpoints = append(a.Etcd.Endpoints, "x:1")
	a.NodeID = 7
	b, err := Load("", nil, nil)
	require.NoError(t, err)
	assert.Equal(t, Default().WithDefaults(), b)
}

func TestBindFlags(t *testing.T) {
	fs := pflag.NewFlagSet("weir", pflag.ContinueOnError)
	BindFlags(fs)
	for _, k := range keys {
		f := fs.Lookup(k.flag)
		require.NotNil(t, f, k.flag)
		assert.Equal(t, k.doc, f.Usage)
	}
	assert.Nil(t, fs.Lookup("config"), "--config belongs to the command")

	// Bad values fail at parse time, naming the flag.
	for _, args := range [][]string{
		{"--store-max-record-size=12XB"},
		{"--etcd-dial-timeout=5"},
		{"--node-id=one"},
		{"--enable-tls=maybe"},
	} {
		fs := pflag.NewFlagSet("weir", pflag.ContinueOnError)
		fs.SetOutput(new(strings.Builder))
		BindFlags(fs)
		err := fs.Parse(args)
		require.Error(t, err, args)
		assert.Contains(t, err.Error(), strings.TrimPrefix(strings.SplitN(args[0], "=", 2)[0], "--"))
	}

	// Help shows each flag once with its type and the doc's default.
	var help strings.Builder
	fs.SetOutput(&help)
	fs.PrintDefaults()
	assert.Contains(t, help.String(), "--store-max-record-size size")
	assert.Contains(t, help.String(), "--etcd-endpoints strings")
	assert.Contains(t, help.String(), "(default 1MiB)\n")
	assert.NotContains(t, help.String(), "(default 1MiB) (default")
}

// A flag of the same name registered by someone else (not BindFlags) is
// still read.
func TestLoadForeignFlags(t *testing.T) {
	fs := pflag.NewFlagSet("weir", pflag.ContinueOnError)
	fs.Uint64("node-id", 1, "")
	fs.StringSlice("etcd-endpoints", nil, "")
	fs.String("unrelated", "", "")
	require.NoError(t, fs.Parse([]string{"--node-id=5", "--etcd-endpoints=a:1,b:2", "--unrelated=x"}))
	c, err := Load("", nil, fs)
	require.NoError(t, err)
	assert.Equal(t, uint64(5), c.NodeID)
	assert.Equal(t, []string{"a:1", "b:2"}, c.Etcd.Endpoints)
}

// loadCase runs Load on a table case: file "" means no file, args nil means
// no flag set.
func loadCase(t *testing.T, file string, env, args []string) (*Config, error) {
	t.Helper()
	path := ""
	if file != "" {
		path = writeConfig(t, file)
	}
	var fs *pflag.FlagSet
	if args != nil {
		fs = flags(t, args...)
	}
	return Load(path, env, fs)
}

func TestRoutesFromYAMLEnvAndFlags(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "weir.yaml")
	require.NoError(t, os.WriteFile(file, []byte(`
mqtt:
  routes:
    - {filter: "factory/+/temp", stream: temps, key: "${topic[1]}", create: true}
    - filter: "cars/#"
      stream: cars
`), 0o644))
	c, err := Load(file, nil, nil)
	require.NoError(t, err)
	require.Equal(t, []Route{
		{Filter: "factory/+/temp", Stream: "temps", Key: "${topic[1]}", Create: true},
		{Filter: "cars/#", Stream: "cars"},
	}, c.MQTT.Routes)

	c, err = Load("", []string{`WEIR_MQTT_ROUTES=[{filter: "a/#", stream: a}]`}, nil)
	require.NoError(t, err)
	require.Equal(t, []Route{{Filter: "a/#", Stream: "a"}}, c.MQTT.Routes)

	fs := pflag.NewFlagSet("weir", pflag.ContinueOnError)
	BindFlags(fs)
	require.NoError(t, fs.Parse([]string{`--mqtt-routes=[{filter: "b/+", stream: b, key: "${username}"}]`}))
	c, err = Load("", nil, fs)
	require.NoError(t, err)
	require.Equal(t, []Route{{Filter: "b/+", Stream: "b", Key: "${username}"}}, c.MQTT.Routes)
	require.Equal(t, `[{filter: "b/+", stream: "b", key: "${username}"}]`, keyByPath["mqtt.routes"].format(reflect.ValueOf(c.MQTT.Routes)))

	for _, tc := range []struct{ yaml, want string }{
		{"mqtt:\n  routes:\n    - {filter: a, steam: a}\n", `route 0 (line 3): unknown field "steam" (want filter, stream, key or create)`},
		{"mqtt:\n  routes:\n    - {filter: a}\n", `route 0 (line 3, filter "a"): stream is missing`},
		{"mqtt:\n  routes:\n    - {stream: a}\n", `route 0 (line 3): filter is missing`},
		{"mqtt:\n  routes: a/#\n", `mqtt.routes`},
		{"mqtt:\n  routes:\n    - {filter: a, stream: a, create: maybe}\n", `create: want true or false`},
	} {
		require.NoError(t, os.WriteFile(file, []byte(tc.yaml), 0o644))
		_, err := Load(file, nil, nil)
		require.ErrorContains(t, err, tc.want, tc.yaml)
	}
}
