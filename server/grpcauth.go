package server

import (
	"context"
	"crypto/x509"
	"log/slog"
	"slices"
	"strings"
	"sync"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"github.com/weir-log/weir/api/hstreampb"
	"github.com/weir-log/weir/api/peerpb"
	"github.com/weir-log/weir/internal/tlsfile"
)

// clientCert returns the verified certificate the caller presented over
// mutual TLS, or nil.
func clientCert(ctx context.Context) *x509.Certificate {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return nil
	}
	info, ok := p.AuthInfo.(credentials.TLSInfo)
	if !ok {
		return nil
	}
	return tlsfile.VerifiedLeaf(info.State)
}

// principal is who the caller is: its client certificate's Common Name,
// else its first subject alternative name; "" without one.
func principal(ctx context.Context) string {
	if c := clientCert(ctx); c != nil {
		return tlsfile.Identity(c, "")
	}
	return ""
}

// audited are the RPCs that change what the cluster holds; each is logged
// with its caller.
var audited = []string{
	hstreampb.HStreamApi_CreateStream_FullMethodName,
	hstreampb.HStreamApi_DeleteStream_FullMethodName,
	hstreampb.HStreamApi_TrimStream_FullMethodName,
	hstreampb.HStreamApi_TrimShards_FullMethodName,
	hstreampb.HStreamApi_TrimShard_FullMethodName,
	hstreampb.HStreamApi_CreateSubscription_FullMethodName,
	hstreampb.HStreamApi_DeleteSubscription_FullMethodName,
}

// auditUnary logs each audited RPC with its principal, the caller's
// address and its outcome.
func auditUnary(log *slog.Logger) grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		resp, err := handler(ctx, req)
		if slices.Contains(audited, info.FullMethod) {
			addr := ""
			if p, ok := peer.FromContext(ctx); ok {
				addr = p.Addr.String()
			}
			log.Info("grpc admin request", "rpc", info.FullMethod[strings.LastIndexByte(info.FullMethod, '/')+1:],
				"principal", principal(ctx), "remote", addr, "code", status.Code(err).String())
		}
		return resp, err
	}
}

// peerServicePrefix starts the full method name of every node-to-node RPC.
var peerServicePrefix = "/" + peerpb.Peer_ServiceDesc.ServiceName + "/"

// isNodeToNode reports whether method is one of the node-to-node RPCs.
func isNodeToNode(method string) bool { return strings.HasPrefix(method, peerServicePrefix) }

// nodeOnly refuses a node-to-node RPC from a caller that presented no
// certificate listing server authentication among its extended key usages.
// Every node presents its server certificate when it dials another, while
// a client certificate is for client authentication only: without this
// check, any client the CA admits could send raft messages. A certificate
// without the extension, which x509 would take for any use, is refused
// too: tools make those by default, for clients as well.
func nodeOnly(ctx context.Context, method string) error {
	if !isNodeToNode(method) {
		return nil
	}
	c := clientCert(ctx)
	if c == nil {
		return status.Error(codes.PermissionDenied, "node-to-node RPC: the caller presented no verified certificate; nodes dial each other with their tls-cert-path")
	}
	if !slices.Contains(c.ExtKeyUsage, x509.ExtKeyUsageServerAuth) && !slices.Contains(c.ExtKeyUsage, x509.ExtKeyUsageAny) {
		return status.Errorf(codes.PermissionDenied, "node-to-node RPC: %q presented a certificate not valid for server authentication, so not a node's", tlsfile.Identity(c, ""))
	}
	return nil
}

// openPeersWarning is logged, once, when another node calls a node that
// has enable-tls but no tls-ca-path.
const openPeersWarning = "node-to-node RPC over TLS without tls-ca-path: no caller presents a certificate, so this node cannot tell other nodes from clients, and anyone who reaches its gRPC port may call the node-to-node service; set tls-ca-path on every node"

// openPeers logs openPeersWarning at the first node-to-node RPC, through
// either interceptor: a standalone node gets none, so it is not warned.
type openPeers struct {
	log  *slog.Logger
	once sync.Once
}

func (w *openPeers) note(method string) {
	if isNodeToNode(method) {
		w.once.Do(func() { w.log.Warn(openPeersWarning) })
	}
}

func (w *openPeers) unary(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	w.note(info.FullMethod)
	return handler(ctx, req)
}

func (w *openPeers) stream(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	w.note(info.FullMethod)
	return handler(srv, ss)
}

func nodeOnlyUnary(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	if err := nodeOnly(ctx, info.FullMethod); err != nil {
		return nil, err
	}
	return handler(ctx, req)
}

func nodeOnlyStream(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	if err := nodeOnly(ss.Context(), info.FullMethod); err != nil {
		return err
	}
	return handler(srv, ss)
}
