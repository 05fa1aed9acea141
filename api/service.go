package api

import (
	"context"
	"log/slog"
	"sync"

	"google.golang.org/grpc"

	"github.com/weir-log/weir/api/hstreampb"
	"github.com/weir-log/weir/cluster"
	"github.com/weir-log/weir/subscription"
)

// Defaults for the Options a caller leaves zero.
const (
	// DefaultReplicationFactor is used when neither the request nor
	// Options.Defaults names one.
	DefaultReplicationFactor = 1
	// DefaultMaxRecordSize is the largest record payload when
	// Options.MaxRecordSize is 0: 1 MiB, HStreamDB's default.
	DefaultMaxRecordSize = 1 << 20
	// DefaultMaxBatchSize is the largest batch payload, compressed and
	// decompressed, when Options.MaxBatchSize is 0: 4 MiB, gRPC's default
	// largest message.
	DefaultMaxBatchSize = 4 << 20
)

// Options configure a Service.
type Options struct {
	// Node stores, replicates and holds the metadata. Required.
	Node *cluster.Node
	// Subscriptions runs the consumer groups this node owns. Required.
	Subscriptions *subscription.Manager
	// Defaults apply to CreateStream requests that leave a field 0.
	Defaults Defaults
	// MaxRecordSize is the largest payload of one record, in bytes.
	// Default DefaultMaxRecordSize.
	MaxRecordSize int
	// MaxBatchSize is the largest batch payload, in bytes, both as sent
	// (compressed) and decompressed. Default DefaultMaxBatchSize.
	MaxBatchSize int
	// Version and Commit are reported in ServerNode.version.
	Version, Commit string
	// Logger receives internal errors and read gaps. Default: discard.
	Logger *slog.Logger
}

// Defaults are used for what a CreateStream request leaves 0.
type Defaults struct {
	// ReplicationFactor for a CreateStream whose replicationFactor is 0.
	// Default DefaultReplicationFactor.
	ReplicationFactor uint32
}

// Service implements hstreampb.HStreamApiServer over a cluster.Node.
type Service struct {
	hstreampb.UnimplementedHStreamApiServer

	node *cluster.Node
	subs *subscription.Manager
	opts Options
	log  *slog.Logger

	// readers serializes ReadShard calls of one shard reader, so two reads
	// never deliver the same batches or race to save the position.
	readers keyedLocks

	// shutdown is closed by Shutdown: streaming reads that follow new
	// records end then, instead of holding the server's graceful stop.
	shutdown     chan struct{}
	shutdownOnce sync.Once
}

// Shutdown ends every streaming read with Unavailable ("the server is
// shutting down"), so clients reconnect elsewhere or later. Call it before
// the gRPC server's GracefulStop; other RPCs finish normally. Idempotent.
func (s *Service) Shutdown() {
	s.shutdownOnce.Do(func() { close(s.shutdown) })
}

var _ hstreampb.HStreamApiServer = (*Service)(nil)

// NewService builds the service. It does no I/O.
func NewService(opts Options) *Service {
	if opts.Defaults.ReplicationFactor == 0 {
		opts.Defaults.ReplicationFactor = DefaultReplicationFactor
	}
	if opts.MaxRecordSize <= 0 {
		opts.MaxRecordSize = DefaultMaxRecordSize
	}
	if opts.MaxBatchSize <= 0 {
		opts.MaxBatchSize = DefaultMaxBatchSize
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Service{node: opts.Node, subs: opts.Subscriptions, opts: opts, log: log, shutdown: make(chan struct{})}
}

// Register adds the service to gs as hstream.server.HStreamApi.
func (s *Service) Register(gs *grpc.Server) {
	hstreampb.RegisterHStreamApiServer(gs, s)
}

// unary runs the body of a unary RPC and converts its error to the status
// the client sees. Every unary method goes through it, so no error reaches a
// client without its code and JSON message.
func unary[Req, Resp any](ctx context.Context, s *Service, rpc string, req Req,
	body func(context.Context, Req) (Resp, error)) (Resp, error) {
	resp, err := body(ctx, req)
	if err != nil {
		var zero Resp
		return zero, statusError(s.log, rpc, err)
	}
	return resp, nil
}

// Echo answers with the message it was sent (clients use it as a health
// check).
func (s *Service) Echo(_ context.Context, req *hstreampb.EchoRequest) (*hstreampb.EchoResponse, error) {
	return &hstreampb.EchoResponse{Msg: req.GetMsg()}, nil
}
