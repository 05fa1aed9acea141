package bridge

// Connectors to external brokers.
//
// A connector is a paho (MQTT 3.1.1) client of an external broker: EMQX,
// Mosquitto, or any broker that speaks 3.1.1 or 5. An ingest connector
// (connector_ingest.go) subscribes there and appends what arrives; an
// egress connector (connector_egress.go) publishes a stream's records
// there. Both sit on a remote: one connection, kept up by remote.run.
//
//	remote.run: connect ──ok──► connected(ctx, client) ──ok──► wait for the
//	     ▲          │ fail          (subscribe, …)              connection's loss
//	     │          ▼                   │ fail                     │
//	     └── back-off (reconnect-min doubling to reconnect-max, jitter) ◄┘
//
// The back-off goes back to reconnect-min only after a connection that
// lasted reconnect-max, so a broker that keeps closing the connection
// (another client with the same client ID, an ACL that disconnects) is not
// redialled in a tight loop.
//
// paho's own reconnecting is off: its first-connect retry has a fixed
// interval and it reports failed attempts only at debug level, while a
// connector must log each failure (a wrong address or password is the
// commonest mistake) and back off as configured. Every attempt is logged
// (a failure at warn, naming the connector, the url and paho's error) and
// counted in weir_connector_connects_total; weir_connector_up is 1 while
// connected. A connector never stops the server: it retries until Close.

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/weir-log/weir/cluster"
	"github.com/weir-log/weir/conf"
	"github.com/weir-log/weir/internal/tlsfile"
	"github.com/weir-log/weir/subscription"
)

// ConnectorsOptions configure the connectors of a node.
type ConnectorsOptions struct {
	Node          *cluster.Node         // required
	Subscriptions *subscription.Manager // required when there are egress connectors
	Config        conf.Connectors       // defaults filled (conf.Load or WithDefaults) and validated
	// Stream supplies the settings of streams an ingest route creates.
	Stream conf.StreamDefaults
	// MaxRecordSize is store.max-record-size: a larger message is not
	// stored (it is acknowledged to the broker, logged and counted).
	MaxRecordSize int
	Logger        *slog.Logger          // default: discard
	Metrics       prometheus.Registerer // weir_connector_* when set
}

// Connectors runs a node's connectors. NewConnectors compiles them; Start
// starts them; Close stops them.
type Connectors struct {
	opts    ConnectorsOptions
	log     *slog.Logger
	metrics *connectorMetrics
	all     []connector

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// connector is an ingest or egress connector: run works until ctx ends,
// then releases everything it holds.
type connector interface {
	run(ctx context.Context)
}

// NewConnectors compiles every connector (routes, filters, templates, TLS
// files), failing with an error that names the connector's key; it
// connects nowhere.
func NewConnectors(opts ConnectorsOptions) (*Connectors, error) {
	if opts.Node == nil {
		return nil, errors.New("bridge: ConnectorsOptions.Node is nil")
	}
	if len(opts.Config.Egress) > 0 && opts.Subscriptions == nil {
		return nil, errors.New("bridge: egress connectors need ConnectorsOptions.Subscriptions")
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	cs := &Connectors{opts: opts, log: log.With("component", "connector"), metrics: newConnectorMetrics()}
	if opts.Metrics != nil {
		if err := cs.metrics.register(opts.Metrics); err != nil {
			return nil, err
		}
	}
	for i, cfg := range opts.Config.Ingest {
		c, err := newIngestConnector(cs, fmt.Sprintf("connectors.ingest[%d] (%s)", i, cfg.Name), cfg)
		if err != nil {
			return nil, err
		}
		cs.all = append(cs.all, c)
	}
	for i, cfg := range opts.Config.Egress {
		c, err := newEgressConnector(cs, fmt.Sprintf("connectors.egress[%d] (%s)", i, cfg.Name), cfg)
		if err != nil {
			return nil, err
		}
		cs.all = append(cs.all, c)
	}
	cs.ctx, cs.cancel = context.WithCancel(context.Background())
	return cs, nil
}

// Start starts every connector; each connects, and keeps reconnecting, on
// its own goroutine.
func (cs *Connectors) Start() {
	for _, c := range cs.all {
		cs.wg.Add(1)
		go func() {
			defer cs.wg.Done()
			c.run(cs.ctx)
		}()
	}
}

// Close stops every connector and waits for them: each disconnects from its
// broker, after settling what it can (see the connectors' own comments).
func (cs *Connectors) Close() error {
	cs.cancel()
	cs.wg.Wait()
	return nil
}

// Len is the number of connectors.
func (cs *Connectors) Len() int { return len(cs.all) }

// remote is a connector's connection to its broker.
type remote struct {
	cs        *Connectors
	name      string // the connector's name
	direction string // "ingest" or "egress"
	cfg       conf.Remote
	log       *slog.Logger
	client    paho.Client

	mu   sync.Mutex
	up   chan struct{} // guarded by mu: closed while connected
	lost chan error    // the current connection's loss (buffered 1)
}

// newRemote builds the paho client of a connector. setup adjusts paho's
// options (the handlers of the direction); cleanSession is false for a
// persistent session.
func newRemote(cs *Connectors, key, name, direction string, cfg conf.Remote, cleanSession bool, setup func(*paho.ClientOptions)) (*remote, error) {
	r := &remote{
		cs: cs, name: name, direction: direction, cfg: cfg,
		log:  cs.log.With("connector", name, "direction", direction, "url", cfg.URL),
		up:   make(chan struct{}),
		lost: make(chan error, 1),
	}
	// MQTT 3.1.1 only: without a version, paho retries a refused CONNECT
	// as MQTT 3.1 and keeps that version once it is accepted.
	o := paho.NewClientOptions().
		AddBroker(cfg.URL).
		SetClientID(cfg.ClientID).
		SetCleanSession(cleanSession).
		SetProtocolVersion(4).
		SetKeepAlive(cfg.Keepalive).
		SetPingTimeout(min(cfg.Keepalive, 10*time.Second)).
		SetConnectTimeout(cfg.ConnectTimeout).
		SetWriteTimeout(cfg.ConnectTimeout).
		SetAutoReconnect(false).
		SetConnectRetry(false).
		SetOrderMatters(true).
		SetConnectionLostHandler(func(_ paho.Client, err error) {
			select {
			case r.lost <- err:
			default:
			}
		})
	if cfg.Username != "" {
		o.SetUsername(cfg.Username).SetPassword(cfg.Password)
	}
	if conf.RemoteUsesTLS(cfg.URL) {
		tc, err := remoteTLS(key, cfg)
		if err != nil {
			return nil, err
		}
		o.SetTLSConfig(tc)
	}
	if setup != nil {
		setup(o)
	}
	r.client = paho.NewClient(o)
	cs.metrics.up.WithLabelValues(name, direction).Set(0)
	return r, nil
}

// remoteTLS builds the TLS configuration of a connector's url.
func remoteTLS(key string, cfg conf.Remote) (*tls.Config, error) {
	tc := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: cfg.TLSServerName, InsecureSkipVerify: cfg.TLSInsecureSkipVerify}
	if cfg.TLSCAPath != "" {
		pool, err := tlsfile.CAPool(cfg.TLSCAPath)
		if err != nil {
			return nil, fmt.Errorf("%s.tls-ca-path: %w", key, err)
		}
		tc.RootCAs = pool
	}
	if cfg.TLSCertPath != "" {
		cert, err := tls.LoadX509KeyPair(cfg.TLSCertPath, cfg.TLSKeyPath)
		if err != nil {
			return nil, fmt.Errorf("%s.tls-cert-path, tls-key-path: %w", key, err)
		}
		tc.Certificates = []tls.Certificate{cert}
	}
	return tc, nil
}

// run keeps the connection up until ctx ends: it connects, calls connected
// (subscribing, say; an error drops the connection and counts as a failed
// attempt), and waits for the loss, backing off between attempts. It
// disconnects at the end.
func (r *remote) run(ctx context.Context, connected func(ctx context.Context, c paho.Client) error) {
	defer r.client.Disconnect(250)
	m := r.cs.metrics
	backoff := r.cfg.ReconnectMin
	for attempt := 1; ctx.Err() == nil; attempt++ {
		err := r.connect(ctx)
		if err == nil && connected != nil {
			if err = connected(ctx, r.client); err != nil {
				r.client.Disconnect(0)
			}
		}
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			m.connects.WithLabelValues(r.name, r.direction, "failed").Inc()
			r.log.Warn("connector cannot connect to its broker; retrying", "attempt", attempt, "retry_in", backoff.Round(time.Millisecond), "error", err)
			if !sleepCtx(ctx, jitter(backoff)) {
				return
			}
			backoff = min(2*backoff, r.cfg.ReconnectMax)
			continue
		}
		m.connects.WithLabelValues(r.name, r.direction, "ok").Inc()
		m.up.WithLabelValues(r.name, r.direction).Set(1)
		r.log.Info("connector connected to its broker", "attempt", attempt, "client_id", r.cfg.ClientID)
		attempt = 0
		upAt := time.Now()
		r.setUp(true)
		select {
		case err = <-r.lost:
		case <-ctx.Done():
		}
		r.setUp(false)
		m.up.WithLabelValues(r.name, r.direction).Set(0)
		if ctx.Err() != nil {
			return
		}
		// Only a connection that lasted resets the back-off: one the
		// broker keeps closing (another client with this client ID, an
		// ACL that disconnects) is retried ever more slowly, not in a
		// tight loop.
		if time.Since(upAt) >= r.cfg.ReconnectMax {
			backoff = r.cfg.ReconnectMin
		}
		r.log.Warn("connector lost its broker connection; reconnecting", "retry_in", backoff.Round(time.Millisecond), "error", err)
		if !sleepCtx(ctx, jitter(backoff)) {
			return
		}
		backoff = min(2*backoff, r.cfg.ReconnectMax)
	}
}

// connect makes one connection attempt.
func (r *remote) connect(ctx context.Context) error {
	select { // a loss reported by an earlier connection is stale now
	case <-r.lost:
	default:
	}
	tok := r.client.Connect()
	select {
	case <-tok.Done():
	case <-ctx.Done():
		return ctx.Err()
	}
	return tok.Error()
}

func (r *remote) setUp(up bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	select {
	case <-r.up:
		if !up {
			r.up = make(chan struct{})
		}
	default:
		if up {
			close(r.up)
		}
	}
}

// waitUp returns once the connection is up, or false when ctx ends first.
func (r *remote) waitUp(ctx context.Context) bool {
	r.mu.Lock()
	up := r.up
	r.mu.Unlock()
	select {
	case <-up:
		return true
	case <-ctx.Done():
		return false
	}
}

// jitter spreads d over [d/2, d), so connectors restarted together do not
// reconnect in step.
func jitter(d time.Duration) time.Duration {
	if d < 2 {
		return d
	}
	return d/2 + rand.N(d/2)
}

// sleepCtx sleeps for d, or less when ctx ends; it reports whether it slept
// the whole time.
func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// connectorMetrics are the weir_connector_* series, labeled by connector
// name and direction.
type connectorMetrics struct {
	up       *prometheus.GaugeVec
	connects *prometheus.CounterVec
	messages *prometheus.CounterVec
}

func newConnectorMetrics() *connectorMetrics {
	return &connectorMetrics{
		up: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: "weir", Subsystem: "connector", Name: "up",
			Help: "1 while the connector is connected to its broker, else 0.",
		}, []string{"connector", "direction"}),
		connects: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "weir", Subsystem: "connector", Name: "connects_total",
			Help: "Connection attempts to the connector's broker, by result (ok, failed).",
		}, []string{"connector", "direction", "result"}),
		messages: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "weir", Subsystem: "connector", Name: "messages_total",
			Help: "Messages by result: ingest stored, refused (cannot be stored: acknowledged and dropped), retried (a failed append tried again); egress published, retried (a failed publish tried again), skipped (not publishable: acknowledged and dropped).",
		}, []string{"connector", "direction", "result"}),
	}
}

func (m *connectorMetrics) register(r prometheus.Registerer) error {
	for _, c := range []prometheus.Collector{m.up, m.connects, m.messages} {
		if err := r.Register(c); err != nil {
			return fmt.Errorf("bridge: registering connector metrics: %w", err)
		}
	}
	return nil
}

// count adds n to a connector's messages of one result.
func (m *connectorMetrics) count(name, direction, result string, n int) {
	m.messages.WithLabelValues(name, direction, result).Add(float64(n))
}
