package client

import (
	"crypto/tls"
	"fmt"
	"log/slog"
	"time"

	"github.com/weir-log/weir/api/hstreampb"
	"google.golang.org/grpc"
)

// Options come in one type per role, as franz-go's ProducerOpt and
// ConsumerOpt do: an Option configures the connection and is given to Dial, a
// StreamOpt configures CreateStream, an AppendOpt configures one Append. The
// compiler rejects an option passed to the wrong call.

// Option configures a Client; pass it to Dial.
type Option interface{ applyClient(*clientConfig) }

// StreamOpt configures a stream created by CreateStream.
type StreamOpt interface{ applyStream(*streamConfig) }

// AppendOpt configures one call to Append.
type AppendOpt interface{ applyAppend(*appendConfig) }

type clientOption func(*clientConfig)

func (o clientOption) applyClient(c *clientConfig) { o(c) }

type streamOption func(*streamConfig)

func (o streamOption) applyStream(c *streamConfig) { o(c) }

// DefaultPort is the port Dial adds to an address given without one; it is
// HStreamDB's default gRPC port.
const DefaultPort = "6570"

// Defaults of the options below.
const (
	DefaultDialTimeout       = 5 * time.Second
	DefaultMaxAttempts       = 8
	DefaultRetryBackoffBase  = 100 * time.Millisecond
	DefaultRetryBackoffMax   = 2 * time.Second
	DefaultAttemptTimeout    = 30 * time.Second
	DefaultShardCount        = 1
	DefaultReplicationFactor = 1
	DefaultBacklogDuration   = 7 * 24 * time.Hour
)

type clientConfig struct {
	logger      *slog.Logger
	dialTimeout time.Duration

	authToken         string
	caFile            string
	certFile, keyFile string
	tlsConfig         *tls.Config
	grpcOpts          []grpc.DialOption
	maxAttempts       int
	attemptTimeout    time.Duration
	backoffBase       time.Duration
	backoffMax        time.Duration
}

func defaultClientConfig() clientConfig {
	return clientConfig{
		logger:         slog.New(slog.DiscardHandler),
		dialTimeout:    DefaultDialTimeout,
		maxAttempts:    DefaultMaxAttempts,
		attemptTimeout: DefaultAttemptTimeout,
		backoffBase:    DefaultRetryBackoffBase,
		backoffMax:     DefaultRetryBackoffMax,
	}
}

// validate reports the first option set to a value it cannot take.
func (cfg *clientConfig) validate() error {
	switch {
	case cfg.maxAttempts < 1:
		return fmt.Errorf("%w: WithMaxAttempts(%d): want at least 1", ErrInvalidArgument, cfg.maxAttempts)
	case cfg.backoffBase <= 0 || cfg.backoffMax < cfg.backoffBase:
		return fmt.Errorf("%w: WithRetryBackoff(%s, %s): want 0 < base <= max", ErrInvalidArgument, cfg.backoffBase, cfg.backoffMax)
	case cfg.attemptTimeout < 0:
		return fmt.Errorf("%w: WithAttemptTimeout(%s): want 0 (none) or more", ErrInvalidArgument, cfg.attemptTimeout)
	case (cfg.certFile == "") != (cfg.keyFile == ""):
		return fmt.Errorf("%w: WithClientCert(%q, %q): want both a certificate and a key file", ErrInvalidArgument, cfg.certFile, cfg.keyFile)
	}
	return nil
}

// WithAuthToken sends token with every call as HStreamDB's clients do, in
// the metadata "authorization: Basic <token>" (for user and password, the
// token is base64("user:password")). Default: none. A server that does not
// check credentials ignores it.
func WithAuthToken(token string) Option {
	return clientOption(func(c *clientConfig) { c.authToken = token })
}

// WithCACert trusts the PEM certificates in file, instead of the system's
// roots, to verify the servers. It turns TLS on for a bare address; with an
// hstream:// url it is an error (use hstreams://). Default: the system's
// roots when TLS is on.
func WithCACert(file string) Option {
	return clientOption(func(c *clientConfig) { c.caFile = file })
}

// WithClientCert presents the certificate and key in these PEM files to
// servers that ask for one (mutual TLS). It turns TLS on as WithCACert
// does. Default: no client certificate.
func WithClientCert(certFile, keyFile string) Option {
	return clientOption(func(c *clientConfig) { c.certFile, c.keyFile = certFile, keyFile })
}

// WithTLSConfig uses a copy of cfg for TLS; WithCACert and WithClientCert
// still apply on top of it. It turns TLS on as WithCACert does. Default: TLS
// 1.2 or later with the system's roots.
func WithTLSConfig(cfg *tls.Config) Option {
	return clientOption(func(c *clientConfig) { c.tlsConfig = cfg })
}

// WithGRPCDialOptions adds options to every gRPC connection the client
// makes, after its own (interceptors for tracing or metrics, keepalive).
// Default: none.
func WithGRPCDialOptions(opts ...grpc.DialOption) Option {
	return clientOption(func(c *clientConfig) { c.grpcOpts = append(c.grpcOpts, opts...) })
}

// WithMaxAttempts bounds how many times a call is tried when it fails with
// Unavailable or WrongServer (see route.go). Default 8
// (DefaultMaxAttempts), about 6 s of back-off with the default
// WithRetryBackoff: enough for a node to restart or a leader to be
// elected. 1 turns retries off. Must be at least 1.
func WithMaxAttempts(n int) Option {
	return clientOption(func(c *clientConfig) { c.maxAttempts = n })
}

// WithAttemptTimeout bounds each attempt of a unary call (its lookup
// included): a node that does not answer within d is treated as
// unavailable, so the call is retried on the next node, and a
// BufferedProducer's Close cannot hang on a node that accepted the
// connection and went silent. Default 30 s (DefaultAttemptTimeout); 0
// turns it off. A deadline on the call's context applies as well.
// ReadShard, whose server may wait for records as long as the reader's
// own timeout, and streams (reads, Consume) are not bounded by it.
func WithAttemptTimeout(d time.Duration) Option {
	return clientOption(func(c *clientConfig) { c.attemptTimeout = d })
}

// WithRetryBackoff sets the wait between attempts: base after the first
// failure, doubling per attempt up to max, each jittered down by up to a
// half. Default 100 ms and 2 s (DefaultRetryBackoffBase,
// DefaultRetryBackoffMax). Want 0 < base <= max.
func WithRetryBackoff(base, max time.Duration) Option {
	return clientOption(func(c *clientConfig) { c.backoffBase, c.backoffMax = base, max })
}

// WithLogger sets the logger the client reports to (shard map refreshes,
// partial append failures). Default: nothing is logged. A nil logger keeps
// the default.
func WithLogger(l *slog.Logger) Option {
	return clientOption(func(c *clientConfig) {
		if l != nil {
			c.logger = l
		}
	})
}

// WithDialTimeout bounds how long Dial waits for a server to answer its
// first call (the servers of a url are asked at once), and how long a
// refresh of the server list waits for each node. Default 5 s
// (DefaultDialTimeout), the HStreamDB Go client's wait for a ready
// connection. A deadline on Dial's context applies as well, whichever is
// sooner. Zero or negative keeps the default.
func WithDialTimeout(d time.Duration) Option {
	return clientOption(func(c *clientConfig) {
		if d > 0 {
			c.dialTimeout = d
		}
	})
}

type streamConfig struct {
	shardCount        int
	replicationFactor int
	backlog           time.Duration
}

func defaultStreamConfig() streamConfig {
	return streamConfig{
		shardCount:        DefaultShardCount,
		replicationFactor: DefaultReplicationFactor,
		backlog:           DefaultBacklogDuration,
	}
}

// ShardCount sets the number of shards the key space is split into.
// Default 1. Must be at least 1; the count cannot be changed later.
func ShardCount(n int) StreamOpt {
	return streamOption(func(c *streamConfig) { c.shardCount = n })
}

// ReplicationFactor sets how many replicas each shard has. Default 1 (the
// HStreamDB Go client defaults to 3, which a standalone node cannot satisfy).
// Must be at least 1.
func ReplicationFactor(n int) StreamOpt {
	return streamOption(func(c *streamConfig) { c.replicationFactor = n })
}

// BacklogDuration sets how long records are retained. Default 7 days; 0 keeps
// records forever. The wire carries whole seconds, so d must be a whole
// number of seconds and not negative.
func BacklogDuration(d time.Duration) StreamOpt {
	return streamOption(func(c *streamConfig) { c.backlog = d })
}

type appendConfig struct {
	compression hstreampb.CompressionType
}

// CompressionOpt is an option of both Append and NewBufferedProducer.
type CompressionOpt interface {
	AppendOpt
	ProducerOpt
}

type compressionOption hstreampb.CompressionType

func (o compressionOption) applyAppend(c *appendConfig) {
	c.compression = hstreampb.CompressionType(o)
}

func (o compressionOption) applyProducer(c *producerConfig) {
	c.compression = hstreampb.CompressionType(o)
}

// Compression sets how each batch's payload is compressed on the wire, for
// one Append or for every batch of a BufferedProducer. Default
// CompressionType_None. The server stores batches as sent, so the choice
// also applies to storage and to every reader. A type other than None, Gzip
// and Zstd is rejected (ErrInvalidArgument) by Append and by
// NewBufferedProducer.
func Compression(c hstreampb.CompressionType) CompressionOpt {
	return compressionOption(c)
}
