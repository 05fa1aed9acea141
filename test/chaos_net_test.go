package test

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/Shopify/toxiproxy/v2"
	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"
)

// chaosNet is the chaos test's network: a toxiproxy proxy (in process) on
// every link of the cluster, so faults act on links rather than processes.
// The links of a node n are
//
//	client → n   gRPC, its advertised address (grpc.advertise)
//	client → n   MQTT
//	n → m        node-to-node gRPC, one proxy per ordered pair (cluster.peer-addresses)
//	n → etcd     its etcd endpoint
type chaosNet struct {
	api *toxiproxy.ApiServer

	mu    sync.Mutex
	links []*link
}

// link is one proxied link, from a "client", a node ("n1", ...) to a node
// or "etcd".
type link struct {
	from, to string
	kind     string // grpc, mqtt, peer, etcd
	proxy    *toxiproxy.Proxy
}

func newChaosNet() *chaosNet {
	return &chaosNet{api: toxiproxy.NewServer(toxiproxy.NewMetricsContainer(nil), zerolog.Nop())}
}

// add starts a proxy to upstream on a free port of 127.0.0.1.
func (cn *chaosNet) add(t *testing.T, from, to, kind, upstream string) *link {
	t.Helper()
	p := toxiproxy.NewProxy(cn.api, fmt.Sprintf("%s>%s/%s", from, to, kind), "127.0.0.1:0", upstream)
	require.NoError(t, p.Start())
	t.Cleanup(p.Stop)
	l := &link{from: from, to: to, kind: kind, proxy: p}
	cn.mu.Lock()
	cn.links = append(cn.links, l)
	cn.mu.Unlock()
	return l
}

// addr is the address to dial to go through the link.
func (l *link) addr() string { return l.proxy.Listen }

func (l *link) String() string { return fmt.Sprintf("%s>%s/%s", l.from, l.to, l.kind) }

// toxic adds a toxic to both directions of the link. toxicity is the
// chance that a connection (each direction of it) gets it.
func (l *link) toxic(typ string, toxicity float32, attrs map[string]any) error {
	for _, dir := range []string{"upstream", "downstream"} {
		b, err := json.Marshal(map[string]any{"name": typ + "_" + dir, "type": typ, "stream": dir, "toxicity": toxicity, "attributes": attrs})
		if err != nil {
			return err
		}
		if _, err := l.proxy.Toxics.AddToxicJson(strings.NewReader(string(b))); err != nil {
			return fmt.Errorf("%s: toxic %s %s: %w", l, typ, dir, err)
		}
	}
	return nil
}

// select returns the links keep accepts.
func (cn *chaosNet) selectLinks(keep func(*link) bool) []*link {
	cn.mu.Lock()
	defer cn.mu.Unlock()
	var out []*link
	for _, l := range cn.links {
		if keep(l) {
			out = append(out, l)
		}
	}
	return out
}

// touching returns every link from or to node.
func (cn *chaosNet) touching(node string) []*link {
	return cn.selectLinks(func(l *link) bool { return l.from == node || l.to == node })
}

// peerLinks returns the node-to-node links from or to node.
func (cn *chaosNet) peerLinks(node string) []*link {
	return cn.selectLinks(func(l *link) bool { return l.kind == "peer" && (l.from == node || l.to == node) })
}

func (cn *chaosNet) all() []*link { return cn.selectLinks(func(*link) bool { return true }) }

// stall holds every byte sent over links (both ways, connections open
// now and later) until heal: a partition in which TCP keeps retrying.
// Nothing is dropped: a proxy that dropped bytes mid-connection would
// corrupt the streams it carries, which no real network does.
func stall(links []*link) error {
	for _, l := range links {
		if err := l.toxic("latency", 1, map[string]any{"latency": 3_600_000}); err != nil {
			return err
		}
	}
	return nil
}

// heal removes every toxic; bytes a stall held go on their way.
func (cn *chaosNet) heal() {
	for _, l := range cn.all() {
		l.proxy.Toxics.ResetToxics(context.Background())
	}
}
