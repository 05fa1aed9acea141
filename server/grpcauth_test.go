package server

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"log/slog"
	"net"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"github.com/weir-log/weir/api/hstreampb"
	"github.com/weir-log/weir/api/peerpb"
)

// callerWith is a request context whose caller presented cert over
// mutual TLS; nil cert means plain TLS without one.
func callerWith(cert *x509.Certificate) context.Context {
	info := credentials.TLSInfo{}
	if cert != nil {
		info.State = tls.ConnectionState{VerifiedChains: [][]*x509.Certificate{{cert}}}
	}
	return peer.NewContext(context.Background(), &peer.Peer{Addr: &net.TCPAddr{IP: net.IPv4(10, 0, 0, 7), Port: 4242}, AuthInfo: info})
}

func certNamed(cn string, eku ...x509.ExtKeyUsage) *x509.Certificate {
	c := &x509.Certificate{ExtKeyUsage: eku}
	c.Subject.CommonName = cn
	return c
}

func TestAuditLogNamesThePrincipal(t *testing.T) {
	var buf bytes.Buffer
	audit := auditUnary(slog.New(slog.NewTextHandler(&buf, nil)))
	failing := func(context.Context, any) (any, error) { return nil, status.Error(codes.NotFound, "no") }

	_, err := audit(callerWith(certNamed("ops-team")), nil, &grpc.UnaryServerInfo{FullMethod: hstreampb.HStreamApi_DeleteStream_FullMethodName}, failing)
	require.Equal(t, codes.NotFound, status.Code(err), "the handler's answer passes through")
	assert.Contains(t, buf.String(), `msg="grpc admin request" rpc=DeleteStream principal=ops-team remote=10.0.0.7:4242 code=NotFound`)

	buf.Reset()
	_, _ = audit(callerWith(certNamed("ops-team")), nil, &grpc.UnaryServerInfo{FullMethod: hstreampb.HStreamApi_Echo_FullMethodName}, failing)
	assert.Empty(t, buf.String(), "only RPCs that change what the cluster holds are logged")
}

func TestNodeOnly(t *testing.T) {
	raft := peerpb.Peer_Raft_FullMethodName
	for _, tc := range []struct {
		name   string
		ctx    context.Context
		method string
		want   codes.Code
	}{
		{"node certificate", callerWith(certNamed("n1", x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth)), raft, codes.OK},
		{"certificate without extended key usages", callerWith(certNamed("n1")), raft, codes.PermissionDenied},
		{"any key usage", callerWith(certNamed("n1", x509.ExtKeyUsageAny)), raft, codes.OK},
		{"client-only certificate", callerWith(certNamed("app", x509.ExtKeyUsageClientAuth)), raft, codes.PermissionDenied},
		{"no certificate", callerWith(nil), raft, codes.PermissionDenied},
		{"no TLS at all", context.Background(), raft, codes.PermissionDenied},
		{"the API with a client certificate", callerWith(certNamed("app", x509.ExtKeyUsageClientAuth)), hstreampb.HStreamApi_Append_FullMethodName, codes.OK},
		{"the API without a certificate", callerWith(nil), hstreampb.HStreamApi_Append_FullMethodName, codes.OK},
	} {
		assert.Equal(t, tc.want, status.Code(nodeOnly(tc.ctx, tc.method)), tc.name)
	}
}

func TestOpenPeersWarnsOnce(t *testing.T) {
	var buf bytes.Buffer
	w := &openPeers{log: slog.New(slog.NewTextHandler(&buf, nil))}
	ok := func(context.Context, any) (any, error) { return nil, nil }
	_, _ = w.unary(context.Background(), nil, &grpc.UnaryServerInfo{FullMethod: hstreampb.HStreamApi_Append_FullMethodName}, ok)
	assert.Empty(t, buf.String(), "the API is no node-to-node RPC")
	_, _ = w.unary(context.Background(), nil, &grpc.UnaryServerInfo{FullMethod: peerpb.Peer_ShardState_FullMethodName}, ok)
	_ = w.stream(nil, nil, &grpc.StreamServerInfo{FullMethod: peerpb.Peer_Raft_FullMethodName}, func(any, grpc.ServerStream) error { return nil })
	assert.Equal(t, 1, strings.Count(buf.String(), "without tls-ca-path"), buf.String())
}
