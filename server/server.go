package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"
	"google.golang.org/grpc"
	"google.golang.org/grpc/keepalive"

	"github.com/weir-log/weir/api"
	"github.com/weir-log/weir/api/peerpb"
	"github.com/weir-log/weir/bridge"
	"github.com/weir-log/weir/broker"
	"github.com/weir-log/weir/cluster"
	"github.com/weir-log/weir/conf"
	"github.com/weir-log/weir/internal/tlsfile"
	"github.com/weir-log/weir/store"
	"github.com/weir-log/weir/subscription"
)

// Version and Commit name this build; the release build sets them with
// -ldflags "-X github.com/weir-log/weir/server.Version=…".
var (
	Version = "0.1.0-dev"
	Commit  = "unknown"
)

// shutdownGrace bounds how long Close waits for in-flight RPCs before
// cutting them off (reads that follow the log are ended at once).
const shutdownGrace = 5 * time.Second

// Server is one weir node: it starts its parts in dependency order (etcd,
// store, cluster, subscriptions, API, MQTT, connectors) and stops them in reverse.
type Server struct {
	cfg *conf.Config
	log *slog.Logger
	reg *prometheus.Registry

	etcd        *embed.Etcd // nil when external endpoints are configured
	etcdClosing atomic.Bool // set just before etcd is closed
	etcdCli     *clientv3.Client
	db          *store.DB
	node        *cluster.Node
	subs        *subscription.Manager

	router *bridge.Router // compiled from mqtt.routes by New
	broker *broker.Broker // nil when no MQTT listener is configured
	ingest *bridge.Ingest
	shared *bridge.Shared
	conns  *bridge.Connectors // nil when none are configured

	tls     *tlsfile.Endpoint // the gRPC API's and the peers' files; nil without enable-tls
	mqttTLS *tlsfile.Endpoint // the MQTT TLS listener's; nil without mqtt.tls-listen
	grpcLis net.Listener
	grpc    *grpc.Server
	svc     *api.Service
	httpLis net.Listener
	http    *http.Server
	// serving is set once Start has finished, every listener up, and
	// cleared when Close begins: /readyz answers 503 without it.
	serving atomic.Bool
}

// New validates cfg and builds a Server; it does no I/O. cfg is not modified.
func New(cfg *conf.Config, log *slog.Logger) (*Server, error) {
	cfg = cfg.Clone()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.Default()
	}
	router, err := bridge.NewRouter(cfg.MQTT.Routes, cfg.MQTT.Unmatched)
	if err != nil {
		return nil, err
	}
	return &Server{cfg: cfg, log: log, reg: prometheus.NewRegistry(), router: router}, nil
}

// Start brings the node up. On error, everything already started is stopped.
func (s *Server) Start(ctx context.Context) (err error) {
	defer func() {
		if err != nil {
			s.Close()
		}
	}()
	cfg := s.cfg
	// The TLS files first, so a bad one fails start-up before anything
	// has begun.
	if cfg.EnableTLS {
		if s.tls, err = tlsfile.Load(cfg.APITLS()); err != nil {
			return err
		}
	}
	switch {
	case cfg.MQTT.TLSListen == "":
	case s.tls != nil && cfg.MQTTTLS() == cfg.APITLS():
		s.mqttTLS = s.tls // the same files: loaded, and reloaded, once
	default:
		if s.mqttTLS, err = tlsfile.Load(cfg.MQTTTLS()); err != nil {
			return err
		}
	}
	if err := os.MkdirAll(cfg.DataDir, 0o755); err != nil {
		return fmt.Errorf("data-dir: %w", err)
	}

	endpoints := cfg.Etcd.Endpoints
	if cfg.Embedded() {
		e, ep, err := startEmbeddedEtcd(ctx, fmt.Sprintf("weir-%d", cfg.NodeID), cfg.EtcdDir(),
			cfg.Etcd.Embedded.ClientListen, cfg.Etcd.Embedded.PeerListen, newEtcdLogger(s.log, &s.etcdClosing))
		if err != nil {
			return err
		}
		s.etcd, endpoints = e, []string{ep}
		s.log.Info("embedded etcd started", "client", ep, "dir", cfg.EtcdDir())
	}
	if s.etcdCli, err = dialEtcd(endpoints, cfg.Etcd.DialTimeout); err != nil {
		return err
	}

	s.reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	if s.db, err = store.Open(filepath.Join(cfg.DataDir, "store"), store.Options{Logger: s.log, Metrics: s.reg}); err != nil {
		return err
	}

	if s.grpcLis, err = net.Listen("tcp", cfg.GRPC.Listen); err != nil {
		return fmt.Errorf("grpc.listen: %w", err)
	}
	advertise, err := advertised(cfg.GRPC.Advertise, s.grpcLis.Addr())
	if err != nil {
		return fmt.Errorf("grpc.advertise: %w", err)
	}
	if cfg.HTTP.Listen != "" {
		if s.httpLis, err = net.Listen("tcp", cfg.HTTP.Listen); err != nil {
			return fmt.Errorf("http.listen: %w", err)
		}
	}

	self := cluster.NodeInfo{ID: cfg.NodeID, GRPCAddr: advertise, Version: Version, Weight: cfg.Cluster.Weight}
	if s.httpLis != nil {
		self.HTTPAddr = s.httpLis.Addr().String()
	}
	var peerDial []grpc.DialOption
	if s.tls != nil {
		peerDial = []grpc.DialOption{grpc.WithTransportCredentials(s.tls.ClientCredentials())}
	}
	if s.node, err = cluster.New(cluster.Options{
		Self:              self,
		PeerDialOptions:   peerDial,
		DataDir:           cfg.DataDir,
		Etcd:              s.etcdCli,
		Prefix:            cfg.Etcd.Prefix,
		LeaseTTL:          cfg.Etcd.LeaseTTL,
		Store:             s.db,
		RetentionInterval: cfg.Store.RetentionCheckInterval,
		MaxWait:           cfg.Store.GroupCommit.MaxWait,
		MaxRoundBytes:     int(cfg.Store.GroupCommit.MaxBytes),
		MaxInflight:       cfg.Store.MaxInflightAppends,
		LoadBound:         cfg.Cluster.LoadBound,
		DeadAfter:         cfg.Cluster.DeadAfter,
		MetadataTimeout:   cfg.Cluster.MetadataTimeout,
		PeerAddresses:     cfg.Cluster.PeerAddressMap(),
		Logger:            s.log,
		Metrics:           s.reg,
	}); err != nil {
		return err
	}
	if err := s.node.Start(ctx); err != nil {
		return err
	}
	if s.subs, err = subscription.New(subscription.Options{
		Source:             subscription.NodeSource(s.node),
		CheckpointInterval: cfg.Subscription.CheckpointInterval,
		Logger:             s.log,
		Metrics:            s.reg,
	}); err != nil {
		return err
	}

	// An append carries one batch. A read response carries up to ~1 MiB of
	// batches, or one larger batch, plus an id (~12 B) per record, and a
	// record takes at least 4 bytes of a batch: 4 × the largest batch
	// bounds it.
	maxBatch := int(cfg.Store.MaxBatchSize)
	grpcOpts := []grpc.ServerOption{grpc.MaxRecvMsgSize(maxBatch + 1<<20), grpc.MaxSendMsgSize(4*maxBatch + 1<<20),
		// Pings find connections that died without a FIN, so a consumer
		// that reconnects is not refused its own name for long, and clients
		// may ping every 10 s without being sent away.
		grpc.KeepaliveParams(keepalive.ServerParameters{Time: 30 * time.Second, Timeout: 10 * time.Second}),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 10 * time.Second, PermitWithoutStream: true}),
		grpc.ChainUnaryInterceptor(auditUnary(s.log)),
	}
	switch {
	case s.tls != nil && s.tls.Mutual():
		grpcOpts = append(grpcOpts, grpc.Creds(s.tls.ServerCredentials()),
			grpc.ChainUnaryInterceptor(nodeOnlyUnary), grpc.ChainStreamInterceptor(nodeOnlyStream))
	case s.tls != nil:
		w := &openPeers{log: s.log}
		grpcOpts = append(grpcOpts, grpc.Creds(s.tls.ServerCredentials()),
			grpc.ChainUnaryInterceptor(w.unary), grpc.ChainStreamInterceptor(w.stream))
	}
	s.grpc = grpc.NewServer(grpcOpts...)
	svc := api.NewService(api.Options{
		Node:          s.node,
		Subscriptions: s.subs,
		Defaults:      api.Defaults{ReplicationFactor: cfg.Stream.ReplicationFactor},
		MaxRecordSize: int(cfg.Store.MaxRecordSize),
		MaxBatchSize:  int(cfg.Store.MaxBatchSize),
		Version:       Version,
		Commit:        Commit,
		Logger:        s.log,
	})
	svc.Register(s.grpc)
	peerpb.RegisterPeerServer(s.grpc, s.node.PeerServer())
	s.svc = svc
	// The serving goroutines take their own copies: Close, after a failed
	// Start, clears the fields while they may still be starting.
	grpcSrv, grpcLis := s.grpc, s.grpcLis
	go func() {
		if err := grpcSrv.Serve(grpcLis); err != nil {
			s.log.Error("gRPC server stopped", "err", err)
		}
	}()

	if s.httpLis != nil {
		mux := http.NewServeMux()
		mux.Handle("/metrics", promhttp.HandlerFor(s.reg, promhttp.HandlerOpts{Registry: s.reg}))
		mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "ok") })
		mux.Handle("/readyz", newReadiness(&s.serving, s.etcdCli, s.node.Ready))
		s.http = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
		httpSrv, httpLis := s.http, s.httpLis
		go func() {
			if err := httpSrv.Serve(httpLis); err != nil && !errors.Is(err, http.ErrServerClosed) {
				s.log.Error("HTTP server stopped", "err", err)
			}
		}()
	}
	if err := s.startMQTT(); err != nil {
		return err
	}
	if err := s.startConnectors(); err != nil {
		return err
	}
	s.log.Info("weir node serving", "id", cfg.NodeID, "grpc", s.grpcLis.Addr().String(), "advertise", advertise,
		"mqtt", s.MQTTAddr(), "http", cfg.HTTP.Listen, "data", cfg.DataDir, "version", Version)
	s.serving.Store(true)
	return nil
}

// startMQTT starts the broker with the bridge's hooks, when any MQTT
// listener is configured: the ingest hook stores publishes, the shared
// hook serves $share/{group}/{filter} from subscriptions.
func (s *Server) startMQTT() (err error) {
	cfg := s.cfg
	if cfg.MQTT.Listen == "" && cfg.MQTT.TLSListen == "" && cfg.MQTT.WSListen == "" {
		return nil
	}
	if s.broker, err = broker.New(broker.Options{Config: cfg, TLS: s.mqttTLS, Logger: s.log, Metrics: s.reg}); err != nil {
		return err
	}
	if s.ingest, err = bridge.NewIngest(bridge.IngestOptions{
		Node:          s.node,
		Server:        s.broker.Server(),
		Router:        s.router,
		MQTT:          cfg.MQTT,
		Stream:        cfg.Stream,
		MaxRecordSize: int(cfg.Store.MaxRecordSize),
		MaxBatchSize:  int(cfg.Store.MaxBatchSize),
		Logger:        s.log,
		Metrics:       s.reg,
	}); err != nil {
		return err
	}
	if err := s.broker.AddHook(s.ingest, nil); err != nil {
		return err
	}
	if s.shared, err = bridge.NewShared(bridge.SharedOptions{
		Node:          s.node,
		Subscriptions: s.subs,
		Server:        s.broker.Server(),
		Router:        s.router,
		Shared:        cfg.MQTT.Shared,
		Streams:       cfg.Stream,
		Logger:        s.log,
	}); err != nil {
		return err
	}
	if err := s.broker.AddHook(s.shared, nil); err != nil {
		return err
	}
	return s.broker.Start()
}

// startConnectors starts the connectors to external brokers, if any. Each
// connects, and retries, in the background: a broker that is down or
// refuses the connector does not stop the node.
func (s *Server) startConnectors() (err error) {
	cfg := s.cfg
	if len(cfg.Connectors.Ingest) == 0 && len(cfg.Connectors.Egress) == 0 {
		return nil
	}
	if s.conns, err = bridge.NewConnectors(bridge.ConnectorsOptions{
		Node:          s.node,
		Subscriptions: s.subs,
		Config:        cfg.Connectors,
		Stream:        cfg.Stream,
		MaxRecordSize: int(cfg.Store.MaxRecordSize),
		Logger:        s.log,
		Metrics:       s.reg,
	}); err != nil {
		return err
	}
	s.conns.Start()
	s.log.Info("connectors started", "ingest", len(cfg.Connectors.Ingest), "egress", len(cfg.Connectors.Egress))
	return nil
}

// advertised is the address clients are told to dial: the configured one,
// with port 0 (or no address at all) resolved to the listener's real port.
func advertised(configured string, actual net.Addr) (string, error) {
	_, realPort, _ := net.SplitHostPort(actual.String())
	if configured == "" {
		return actual.String(), nil
	}
	host, port, err := net.SplitHostPort(configured)
	if err != nil {
		return "", err
	}
	if port == "0" {
		port = realPort
	}
	return net.JoinHostPort(host, port), nil
}

// GRPCAddr is the address the gRPC server listens on (port 0 resolved).
func (s *Server) GRPCAddr() string {
	if s.grpcLis == nil {
		return ""
	}
	return s.grpcLis.Addr().String()
}

// HTTPAddr is the address of the metrics and health endpoint, if enabled.
func (s *Server) HTTPAddr() string {
	if s.httpLis == nil {
		return ""
	}
	return s.httpLis.Addr().String()
}

// MQTTAddr is the address the MQTT broker's TCP listener is bound to, or
// "" when MQTT is off.
func (s *Server) MQTTAddr() string {
	if s.broker == nil {
		return ""
	}
	return s.broker.Addr()
}

// MQTTTLSAddr is the address of the MQTT TLS listener, or "" when it is
// off.
func (s *Server) MQTTTLSAddr() string {
	if s.broker == nil {
		return ""
	}
	return s.broker.TLSAddr()
}

// ReloadTLS reads every TLS file again (the gRPC API's, which the node
// also presents to other nodes, and the MQTT TLS listener's): handshakes
// after it use the new certificates and CAs; open connections are kept.
// A file that fails to load leaves its endpoint as it was, and is
// reported.
func (s *Server) ReloadTLS() error {
	var errs []error
	if s.tls != nil {
		errs = append(errs, s.tls.Reload())
	}
	if s.mqttTLS != nil && s.mqttTLS != s.tls {
		errs = append(errs, s.mqttTLS.Reload())
	}
	return errors.Join(errs...)
}

// Node is the node's cluster handle (for tests and tools in this module).
func (s *Server) Node() *cluster.Node { return s.node }

// Subscriptions is the node's subscription manager (for tests and tools in
// this module).
func (s *Server) Subscriptions() *subscription.Manager { return s.subs }

// Store is the node's store (for tests and benchmarks in this module).
func (s *Server) Store() *store.DB { return s.db }

// Close shuts down in reverse order: stop the connectors (an ingest
// connector acknowledges what committed; the rest its broker redelivers),
// stop the MQTT broker (its clients are
// disconnected; publishes it accepted still commit) and detach MQTT group
// members, stop accepting RPCs and finish those in flight (appends are
// never cut off half-way; long reads get shutdownGrace),
// stop the raft loop after its last round, close the store (flushing it),
// then etcd. It is safe to call more than once and after a failed Start.
func (s *Server) Close() error {
	s.serving.Store(false)
	var errs []error
	if s.http != nil {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		s.http.Shutdown(ctx)
		cancel()
		s.http = nil
	}
	if s.conns != nil {
		errs = append(errs, s.conns.Close())
		s.conns = nil
	}
	if s.broker != nil {
		errs = append(errs, s.broker.Close())
		s.broker = nil
	}
	if s.shared != nil {
		errs = append(errs, s.shared.Close())
		s.shared = nil
	}
	if s.ingest != nil {
		errs = append(errs, s.ingest.Close())
		s.ingest = nil
	}
	if s.grpc != nil {
		s.svc.Shutdown() // end reads that follow the log; appends finish
		done := make(chan struct{})
		go func() { s.grpc.GracefulStop(); close(done) }()
		select {
		case <-done:
		case <-time.After(shutdownGrace):
			s.grpc.Stop()
			<-done
		}
		s.grpc = nil
	} else if s.grpcLis != nil {
		s.grpcLis.Close()
	}
	if s.subs != nil {
		s.subs.Close() // persists every subscription's progress
		s.subs = nil
	}
	if s.node != nil {
		errs = append(errs, s.node.Close())
		s.node = nil
	}
	if s.db != nil {
		errs = append(errs, s.db.Close())
		s.db = nil
	}
	if s.etcdCli != nil {
		errs = append(errs, s.etcdCli.Close())
		s.etcdCli = nil
	}
	if s.etcd != nil {
		s.etcdClosing.Store(true)
		s.etcd.Close()
		s.etcd = nil
	}
	return errors.Join(errs...)
}
