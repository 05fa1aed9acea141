package conf

import (
	"errors"
	"math"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestHostPort(t *testing.T) {
	for _, tc := range []struct {
		addr    string
		wantErr string // "" = valid
	}{
		{"127.0.0.1:7000", ""},
		{"127.0.0.1:0", ""}, // port 0: pick one
		{"localhost:1883", ""},
		{"node-1.example.com:7000", ""},
		{"[::1]:7000", ""},
		{"[fe80::1%eth0]:7000", ""},
		{"0.0.0.0:7000", ""},
		{":7000", ""},
		{"x:y", `"x:y" is not host:port (port must be a number from 0 to 65535)`},
		{"127.0.0.1", `"127.0.0.1" is not host:port (missing port in address)`},
		{"127.0.0.1:65536", "port must be a number"},
		{"127.0.0.1:-1", "port must be a number"},
		{"127.0.0.1:http", "port must be a number"},
		{"::1:7000", "too many colons"},
		{"a b:7000", `host "a b" is not a host name or IP`},
		{"http://h:1", "is not host:port"},
	} {
		t.Run(tc.addr, func(t *testing.T) {
			c := Default()
			c.MQTT.Listen = tc.addr
			err := c.Validate()
			if tc.wantErr == "" {
				require.NoError(t, err)
				return
			}
			require.Error(t, err)
			var ke *KeyError
			require.ErrorAs(t, err, &ke)
			assert.Equal(t, "mqtt.listen", ke.Key)
			assert.Contains(t, err.Error(), tc.wantErr)
		})
	}
}

// keysOf returns the keys the problems in err name.
func keysOf(t *testing.T, err error) []string {
	t.Helper()
	var p Problems
	require.True(t, errors.As(err, &p), "want Problems, got %T: %v", err, err)
	var ks []string
	for _, e := range p {
		ks = append(ks, e.Key)
	}
	return ks
}

func TestValidate(t *testing.T) {
	dir := t.TempDir()
	keyFile := filepath.Join(dir, "key.pem")
	require.NoError(t, os.WriteFile(keyFile, []byte("k"), 0o600))

	for _, tc := range []struct {
		name     string
		mutate   func(c *Config)
		wantKeys []string // nil = valid
		wantMsg  string
	}{
		{name: "defaults", mutate: func(c *Config) {}},
		{name: "disabled mqtt and http, forever backlog", mutate: func(c *Config) {
			c.MQTT.Listen, c.HTTP.Listen, c.Stream.BacklogDuration = "", "", 0
		}},
		{name: "all interfaces with advertise", mutate: func(c *Config) {
			c.GRPC = GRPC{Listen: "0.0.0.0:6570", Advertise: "node1.example.com:6570"}
		}},
		{name: "all interfaces without advertise", mutate: func(c *Config) { c.GRPC.Listen = ":6570" },
			wantKeys: []string{"grpc.advertise"}, wantMsg: "grpc.advertise: must be set when grpc.listen"},
		{name: "unspecified advertise", mutate: func(c *Config) { c.GRPC = GRPC{Listen: "[::]:6570", Advertise: "[::]:6570"} },
			wantKeys: []string{"grpc.advertise"}, wantMsg: "no host clients can dial"},
		{name: "port clash", mutate: func(c *Config) { c.HTTP.Listen = "0.0.0.0:6570" },
			wantKeys: []string{"http.listen"}, wantMsg: `http.listen: "0.0.0.0:6570" is also grpc.listen ("127.0.0.1:6570")`},
		{name: "port 0 twice is no clash", mutate: func(c *Config) {
			c.GRPC.Listen, c.MQTT.Listen, c.HTTP.Listen = "127.0.0.1:0", "127.0.0.1:0", "127.0.0.1:0"
			c.Etcd.Embedded.ClientListen, c.Etcd.Embedded.PeerListen = "127.0.0.1:0", "127.0.0.1:0"
		}},
		{name: "external etcd ignores embedded settings", mutate: func(c *Config) {
			c.Etcd.Endpoints = []string{"10.0.0.1:2379", "https://etcd.example.com:2379", "unix:///run/etcd.sock"}
			c.Etcd.Embedded.ClientListen = "bad"
		}},
		{name: "bad endpoints", mutate: func(c *Config) { c.Etcd.Endpoints = []string{"ok:2379", "nope", "ftp://h:1", "http://"} },
			wantKeys: []string{"etcd.endpoints", "etcd.endpoints", "etcd.endpoints"}, wantMsg: "etcd.endpoints: item 1:"},
		{name: "etcd prefix and times", mutate: func(c *Config) {
			c.Etcd.Prefix, c.Etcd.DialTimeout, c.Etcd.LeaseTTL = "weir", 0, 2500*time.Millisecond
		}, wantKeys: []string{"etcd.prefix", "etcd.dial-timeout", "etcd.lease-ttl"}, wantMsg: "must be whole seconds"},
		{name: "short lease", mutate: func(c *Config) { c.Etcd.LeaseTTL = time.Second },
			wantKeys: []string{"etcd.lease-ttl"}, wantMsg: "at least 2s, not 1s"},
		{name: "cluster bounds", mutate: func(c *Config) {
			c.Cluster = Cluster{Weight: 0.01, LoadBound: 10, DeadAfter: time.Second, MetadataTimeout: time.Millisecond}
		}},
		{name: "cluster out of bounds", mutate: func(c *Config) {
			c.Cluster = Cluster{Weight: -1, LoadBound: 1, DeadAfter: 999 * time.Millisecond, MetadataTimeout: -time.Second}
		}, wantKeys: []string{"cluster.weight", "cluster.load-bound", "cluster.dead-after", "cluster.metadata-timeout"},
			wantMsg: "cluster.load-bound: must be more than 1 and at most 10, not 1"},
		{name: "cluster weight infinite, load bound NaN", mutate: func(c *Config) {
			c.Cluster.Weight, c.Cluster.LoadBound = math.Inf(1), math.NaN()
		}, wantKeys: []string{"cluster.weight", "cluster.load-bound"}, wantMsg: "cluster.weight: must be a number more than 0, not +Inf"},
		{name: "cluster load bound too high", mutate: func(c *Config) { c.Cluster.LoadBound = 10.5 },
			wantKeys: []string{"cluster.load-bound"}, wantMsg: "at most 10, not 10.5"},
		{name: "peer addresses", mutate: func(c *Config) {
			c.NodeID, c.Cluster.PeerAddresses = 3, []string{"1=10.0.0.1:6570", "2=[fd00::2]:6570", "65535=node-65535.internal:7000"}
		}},
		{name: "bad peer addresses after the other cluster keys", mutate: func(c *Config) {
			c.Cluster.DeadAfter, c.Cluster.PeerAddresses = 0, []string{"2=10.0.0.2:6570", "1=10.0.0.1:6570", "nope"}
		}, wantKeys: []string{"cluster.dead-after", "cluster.peer-addresses", "cluster.peer-addresses"},
			wantMsg: `cluster.peer-addresses: item 2 ("nope"): not id=host:port`},
		{name: "tls paths", mutate: func(c *Config) {
			c.EnableTLS, c.TLSKeyPath, c.TLSCAPath = true, keyFile, filepath.Join(dir, "missing.pem")
		}, wantKeys: []string{"tls-cert-path", "tls-ca-path"}, wantMsg: "no such file"},
		{name: "tls paths nothing uses", mutate: func(c *Config) { c.TLSCertPath, c.TLSCAPath = "/nonexistent", keyFile },
			wantKeys: []string{"tls-cert-path", "tls-ca-path"}, wantMsg: "is set but enable-tls is false and mqtt.tls-listen does not use it"},
		{name: "mqtt inherits the tls paths", mutate: func(c *Config) {
			c.MQTT.TLSListen, c.TLSCertPath, c.TLSCAPath = "127.0.0.1:8883", keyFile, filepath.Join(dir, "missing.pem")
		}, wantKeys: []string{"tls-key-path", "tls-ca-path"}, wantMsg: "tls-key-path: must be set when mqtt.tls-listen is set and no mqtt.tls-*-path is"},
		{name: "mqtt own tls paths", mutate: func(c *Config) {
			c.EnableTLS, c.TLSCertPath, c.TLSKeyPath = true, keyFile, keyFile
			c.MQTT.TLSListen, c.MQTT.TLSCAPath = "127.0.0.1:8883", keyFile
		}, wantKeys: []string{"mqtt.tls-cert-path", "mqtt.tls-key-path"}, wantMsg: "mqtt.tls-cert-path: must be set when an mqtt.tls-*-path is set"},
		{name: "mqtt tls paths without the listener", mutate: func(c *Config) { c.MQTT.TLSKeyPath = keyFile },
			wantKeys: []string{"mqtt.tls-key-path"}, wantMsg: "is set but mqtt.tls-listen is empty"},
		{name: "peer cert as username", mutate: func(c *Config) {
			c.MQTT.TLSListen, c.MQTT.TLSCertPath, c.MQTT.TLSKeyPath, c.MQTT.TLSCAPath = "127.0.0.1:8883", keyFile, keyFile, keyFile
			c.MQTT.PeerCertAsUsername, c.MQTT.AllowAnonymous = "san", false
		}},
		{name: "peer cert as username without a CA", mutate: func(c *Config) {
			c.MQTT.TLSListen, c.MQTT.TLSCertPath, c.MQTT.TLSKeyPath, c.TLSCAPath = "127.0.0.1:8883", keyFile, keyFile, keyFile
			c.MQTT.PeerCertAsUsername, c.EnableTLS, c.TLSCertPath, c.TLSKeyPath = "cn", true, keyFile, keyFile
		}, wantKeys: []string{"mqtt.peer-cert-as-username"}, wantMsg: "needs mqtt.tls-listen with a CA"},
		{name: "peer cert as username unknown", mutate: func(c *Config) { c.MQTT.PeerCertAsUsername = "dn" },
			wantKeys: []string{"mqtt.peer-cert-as-username"}, wantMsg: `"dn" is not one of cn, san`},
		{name: "tls path is a dir", mutate: func(c *Config) { c.EnableTLS, c.TLSKeyPath, c.TLSCertPath = true, dir, keyFile },
			wantKeys: []string{"tls-key-path"}, wantMsg: "is a directory"},
		{name: "backlog", mutate: func(c *Config) { c.Stream.BacklogDuration = 1500 * time.Millisecond },
			wantKeys: []string{"stream.backlog-duration"}, wantMsg: "whole seconds"},
		{name: "batch smaller than record", mutate: func(c *Config) { c.Store.MaxRecordSize = 16 * MiB },
			wantKeys: []string{"store.max-batch-size"}, wantMsg: "8MiB is less than store.max-record-size (16MiB)"},
		{name: "batch too big", mutate: func(c *Config) { c.Store.MaxBatchSize = 2 * GiB },
			wantKeys: []string{"store.max-batch-size"}, wantMsg: "2GiB is more than the limit of 1GiB"},
		{name: "max-wait", mutate: func(c *Config) { c.Store.GroupCommit.MaxWait = 100 * time.Millisecond },
			wantKeys: []string{"store.group-commit.max-wait"}, wantMsg: "under 100ms, not 100ms"},
		{name: "zero values that cannot be meant", mutate: func(c *Config) { *c = Config{} },
			wantKeys: []string{
				"node-id", "data-dir", "grpc.listen", "mqtt.max-packet-size", "mqtt.receive-maximum", "mqtt.max-inflight", "mqtt.max-keepalive", "mqtt.max-session-expiry", "mqtt.unmatched", "mqtt.ingest.publish-timeout", "mqtt.shared.offset", "mqtt.shared.ack-timeout", "mqtt.shared.max-unacked",
				"etcd.embedded.client-listen", "etcd.embedded.peer-listen",
				"etcd.prefix", "etcd.dial-timeout", "etcd.lease-ttl",
				"cluster.weight", "cluster.load-bound", "cluster.dead-after", "cluster.metadata-timeout",
				"stream.replication-factor", "stream.shard-count",
				"store.max-record-size", "store.max-batch-size", "store.group-commit.max-bytes",
				"store.retention-check-interval", "store.max-inflight-appends", "subscription.checkpoint-interval", "log.level", "log.format",
			}},
		{name: "node id too large", mutate: func(c *Config) { c.NodeID = 65536 },
			wantKeys: []string{"node-id"}, wantMsg: "node-id: must be at most 65535, not 65536"},
		{name: "many at once", mutate: func(c *Config) {
			c.NodeID = 0
			c.GRPC.Listen = "x:y"
			c.MQTT.Listen = "nope"
			c.Store.MaxRecordSize = -1
			c.Store.MaxInflightAppends = 0
			c.Log.Format = "xml"
		}, wantKeys: []string{"node-id", "grpc.listen", "mqtt.listen", "store.max-record-size", "store.max-inflight-appends", "log.format"},
			wantMsg: `grpc.listen: "x:y" is not host:port`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := Default()
			tc.mutate(c)
			err := c.Validate()
			if tc.wantKeys == nil {
				require.NoError(t, err)
				return
			}
			require.Error(t, err)
			assert.ErrorIs(t, err, ErrInvalid)
			assert.Equal(t, tc.wantKeys, keysOf(t, err), "%v", err)
			assert.Contains(t, err.Error(), tc.wantMsg)
		})
	}
}

func TestPeerAddresses(t *testing.T) {
	for _, tc := range []struct {
		name    string
		items   []string
		wantErr string // "" = valid
	}{
		{"host names and IPs", []string{"2=10.0.0.2:6570", "3=[fd00::3]:6570", "4=node4.internal:7000"}, ""},
		{"no id", []string{"10.0.0.2:6570"}, `item 0 ("10.0.0.2:6570"): not id=host:port`},
		{"no address", []string{"2"}, `item 0 ("2"): not id=host:port`},
		{"empty item", []string{"2=h:1", ""}, `item 1 (""): not id=host:port`},
		{"id not a number", []string{"two=h:1"}, `item 0 ("two=h:1"): id must be a number from 1 to 65535, not "two"`},
		{"id 0", []string{"0=h:1"}, `id must be a number from 1 to 65535, not "0"`},
		{"id negative", []string{"-2=h:1"}, `id must be a number from 1 to 65535, not "-2"`},
		{"id too large", []string{"65536=h:1"}, `id must be a number from 1 to 65535, not "65536"`},
		{"spaces around =", []string{"2 = h:1"}, `id must be a number from 1 to 65535, not "2 "`},
		{"missing port", []string{"2=h"}, `item 0 ("2=h"): "h" is not host:port (missing port in address)`},
		{"port not a number", []string{"2=h:grpc"}, `"h:grpc" is not host:port (port must be a number from 0 to 65535)`},
		{"port too large", []string{"2=h:65536"}, `"h:65536" is not host:port (port must be a number`},
		{"bad host", []string{"2=a b:1"}, `host "a b" is not a host name or IP`},
		{"unspecified host", []string{"2=0.0.0.0:6570"}, `"0.0.0.0:6570" has no host to dial`},
		{"empty host", []string{"2=:6570"}, `":6570" has no host to dial`},
		{"port 0", []string{"2=h:0"}, `"h:0" has port 0, which cannot be dialed`},
		{"same id twice", []string{"2=a:1", "3=b:1", "2=c:1"}, `item 2 ("2=c:1"): node 2 is also item 0`},
		{"own id", []string{"1=h:1"}, `item 0 ("1=h:1"): node 1 is this node (node-id)`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := Default() // node-id 1
			c.Cluster.PeerAddresses = tc.items
			err := c.Validate()
			if tc.wantErr == "" {
				require.NoError(t, err)
				return
			}
			require.Error(t, err)
			assert.Equal(t, []string{"cluster.peer-addresses"}, keysOf(t, err))
			assert.Contains(t, err.Error(), "cluster.peer-addresses: item ")
			assert.Contains(t, err.Error(), tc.wantErr)
		})
	}
}

func TestPeerAddressMap(t *testing.T) {
	assert.Nil(t, Default().Cluster.PeerAddressMap())
	cl := Cluster{PeerAddresses: []string{"2=10.0.0.2:6570", "3=[fd00::3]:6570", "nope", "0=h:1", "4=h:0", "5=a:1", "5=b:1"}}
	assert.Equal(t, map[uint64]string{2: "10.0.0.2:6570", 3: "[fd00::3]:6570", 5: "b:1"}, cl.PeerAddressMap(),
		"entries Validate refuses for their form are left out; of an id listed twice, the last wins")
}
