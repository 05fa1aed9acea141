package client

import (
	"log/slog"
	"time"

	"github.com/weir-log/weir/api/hstreampb"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
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

type appendOption func(*appendConfig)

func (o appendOption) applyAppend(c *appendConfig) { o(c) }

// DefaultPort is the port Dial adds to an address given without one; it is
// HStreamDB's default gRPC port.
const DefaultPort = "6570"

// Defaults of the options below.
const (
	DefaultDialTimeout       = 5 * time.Second
	DefaultShardCount        = 1
	DefaultReplicationFactor = 1
	DefaultBacklogDuration   = 7 * 24 * time.Hour
)

type clientConfig struct {
	logger      *slog.Logger
	dialTimeout time.Duration
	// creds secures the connection. Only plaintext h2c exists today; a TLS
	// option (CA, client certificate) will set this field when it is added.
	creds credentials.TransportCredentials
}

func defaultClientConfig() clientConfig {
	return clientConfig{
		logger:      slog.New(slog.DiscardHandler),
		dialTimeout: DefaultDialTimeout,
		creds:       insecure.NewCredentials(),
	}
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

// WithDialTimeout bounds how long Dial waits for the server to answer its
// first call. Default 5 s (DefaultDialTimeout), the HStreamDB Go client's
// wait for a ready connection. A deadline on Dial's context applies as well,
// whichever is sooner. Zero or negative keeps the default.
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

// Compression sets how each batch's payload is compressed on the wire.
// Default CompressionType_None. The server stores batches as sent, so the
// choice also applies to storage and to every reader.
func Compression(c hstreampb.CompressionType) AppendOpt {
	return appendOption(func(a *appendConfig) { a.compression = c })
}
