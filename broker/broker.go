package broker

import (
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"sync"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/weir-log/weir/conf"
	"github.com/weir-log/weir/internal/tlsfile"
)

// Options configure a Broker.
type Options struct {
	// Config is the node's configuration. The broker reads Config.MQTT
	// (listeners, limits, authentication) and, for mqtt.tls-listen, the
	// files Config.MQTTTLS names. Unset limits take
	// their defaults (conf.Config.WithDefaults). Required.
	Config *conf.Config
	// TLS, when set, are the TLS listener's files, loaded; nil loads the
	// files Config.MQTTTLS names.
	TLS *tlsfile.Endpoint
	// Logger receives the broker's logs and mochi's. nil discards them.
	Logger *slog.Logger
	// Metrics, when set, gets the broker's series (weir_mqtt_connections,
	// weir_mqtt_publishes_*, weir_mqtt_acks_*, weir_mqtt_dropped_total,
	// …; see metrics.go). Default: none.
	Metrics prometheus.Registerer
}

// Broker is weir's embedded MQTT broker: a mochi server with weir's
// listeners, limits and authentication hook. See the package doc.
type Broker struct {
	server *mqtt.Server
	log    *slog.Logger
	tcp    *listener // nil when mqtt.listen is empty; likewise tls, ws
	tls    *listener
	ws     *listener
	// tlsFiles are the TLS listener's certificate, key and CA; nil
	// without it.
	tlsFiles *tlsfile.Endpoint

	mu      sync.Mutex // guards the fields below
	started bool
	closed  bool
}

// New builds the broker: the mochi server (with its inline client on),
// its capabilities from the config, the authentication and ACL hook, and
// the listeners, bound, so Addr and the like are known. It does not serve
// until Start. Errors name the config key at fault, e.g.
// "mqtt.auth-file: line 4: ...".
func New(opts Options) (*Broker, error) {
	if opts.Config == nil {
		return nil, errors.New("broker: Options.Config is nil")
	}
	cfg := opts.Config.WithDefaults()
	m := cfg.MQTT
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}

	var af *authFile
	if m.AuthFile != "" {
		var err error
		if af, err = loadAuthFile(m.AuthFile, m.PeerCertAsUsername != ""); err != nil {
			return nil, err
		}
	}

	var tlsConfig *tls.Config
	tlsFiles := opts.TLS
	if m.TLSListen != "" && tlsFiles == nil {
		var err error
		if tlsFiles, err = tlsfile.Load(cfg.MQTTTLS()); err != nil {
			return nil, err
		}
	}
	if m.TLSListen != "" {
		tlsConfig = tlsFiles.ServerConfig()
	}

	maxPacketSize := uint32(min(m.MaxPacketSize, math.MaxUint32))
	caps := mqtt.NewDefaultServerCapabilities()
	caps.MaximumPacketSize = maxPacketSize
	caps.ReceiveMaximum = uint16(min(max(m.ReceiveMaximum, 1), math.MaxUint16))
	caps.MaximumInflight = uint16(min(max(m.MaxInflight, 1), math.MaxUint16))
	// No topic aliases from clients (see the package doc): mochi checks
	// the ACL before it resolves an alias, and registers an alias never
	// seen before with an empty topic.
	caps.TopicAliasMaximum = 0
	// A disconnected session holds its client ID (see sessionAllowed) and
	// memory; mochi's default keeps it for 136 years.
	caps.MaximumSessionExpiryInterval = uint32(min(max(m.MaxSessionExpiry/time.Second, 1), math.MaxUint32))
	b := &Broker{
		server: mqtt.New(&mqtt.Options{
			Capabilities: caps,
			Logger:       log,
			InlineClient: true,
		}),
		log:      log,
		tlsFiles: tlsFiles,
	}
	// First: every later hook's OnDisconnect, and mochi's own check after
	// them, must see a takeover.
	if err := b.server.AddHook(NewTakeoverHook(b.server), nil); err != nil {
		return nil, fmt.Errorf("broker: add takeover hook: %w", err)
	}
	hook := newAuthHook(log, b.server)
	hook.certAsUsername = m.PeerCertAsUsername
	hook.allowAnonymous = m.AllowAnonymous
	hook.auth = af
	hook.maxKeepalive = uint16(min(m.MaxKeepalive/time.Second, math.MaxUint16))
	hook.maxPacketSize = maxPacketSize
	if err := b.server.AddHook(hook, nil); err != nil {
		return nil, fmt.Errorf("broker: add auth hook: %w", err)
	}
	if opts.Metrics != nil {
		// Before the bridge's hooks: OnPacketRead stops at a hook that
		// rejects the packet.
		mh := newMetricsHook(b.server.Info)
		if err := mh.register(opts.Metrics); err != nil {
			return nil, err
		}
		if err := b.server.AddHook(mh, nil); err != nil {
			return nil, fmt.Errorf("broker: add metrics hook: %w", err)
		}
	}

	for _, l := range []struct {
		id, key, addr string
		tls           *tls.Config
		ws            bool
		dst           **listener
	}{
		{"tcp", "mqtt.listen", m.Listen, nil, false, &b.tcp},
		{"tls", "mqtt.tls-listen", m.TLSListen, tlsConfig, false, &b.tls},
		{"ws", "mqtt.ws-listen", m.WSListen, nil, true, &b.ws},
	} {
		if l.addr == "" {
			continue
		}
		ln := newListener(l.id, l.addr, l.tls, l.ws)
		if err := b.server.AddListener(ln); err != nil {
			_ = b.Close()
			return nil, fmt.Errorf("%s: %w", l.key, err)
		}
		*l.dst = ln
	}
	return b, nil
}

// Server returns the mochi server, for the bridge's hooks and the inline
// client (Server().Publish, Server().Subscribe).
func (b *Broker) Server() *mqtt.Server { return b.server }

// AddHook adds h to the server, after the authentication hook; config is
// passed to h.Init. Add hooks before Start. h must not answer
// OnConnectAuthenticate or OnACLCheck: mochi ORs the answers of every hook,
// so a second hook saying yes would let in what the auth file keeps out.
func (b *Broker) AddHook(h mqtt.Hook, config any) error {
	if h.Provides(mqtt.OnConnectAuthenticate) || h.Provides(mqtt.OnACLCheck) {
		return fmt.Errorf("broker: hook %s must not provide OnConnectAuthenticate or OnACLCheck", h.ID())
	}
	return b.server.AddHook(h, config)
}

// Start starts serving on the listeners. It returns at once.
func (b *Broker) Start() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	switch {
	case b.closed:
		return ErrClosed
	case b.started:
		return ErrStarted
	}
	b.started = true
	if err := b.server.Serve(); err != nil {
		return fmt.Errorf("broker: start: %w", err)
	}
	return nil
}

// Close stops the listeners, disconnects every client (MQTT 5 clients get
// DISCONNECT "server shutting down"), waits briefly for their connections
// to end, and stops the hooks. It may be called more than once, and
// without Start.
func (b *Broker) Close() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return nil
	}
	b.closed = true
	return CloseServer(b.server)
}

// Addr returns the address the TCP listener (mqtt.listen) is bound to, with
// the real port when the config asked for port 0; "" when it is off.
func (b *Broker) Addr() string { return addr(b.tcp) }

// TLSAddr is Addr for the TLS listener (mqtt.tls-listen).
func (b *Broker) TLSAddr() string { return addr(b.tls) }

// ReloadTLS reads the TLS listener's files again; connections made after
// it use the new ones, and those already open are kept. On error the
// listener keeps the files it had. Without a TLS listener it does nothing.
func (b *Broker) ReloadTLS() error {
	if b.tlsFiles == nil {
		return nil
	}
	return b.tlsFiles.Reload()
}

// WSAddr is Addr for the WebSocket listener (mqtt.ws-listen).
func (b *Broker) WSAddr() string { return addr(b.ws) }

func addr(l *listener) string {
	if l == nil {
		return ""
	}
	return l.Address()
}
