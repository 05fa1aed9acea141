package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/weir-log/weir/api/hstreampb"
	"github.com/weir-log/weir/api/wire"
	"github.com/weir-log/weir/cluster"
	"github.com/weir-log/weir/subscription"
)

// The api's own error classes: what a request got wrong, before or besides
// anything the cluster or the wire decoder says. Each is wrapped by errorf
// with a message that names the object and the value.
var (
	errInvalidStreamName = errors.New("api: invalid stream name")
	errInvalidShardCount = errors.New("api: invalid shard count")
	errEmptyBatch        = errors.New("api: empty batch")
	errRecordTooLarge    = errors.New("api: record or batch too large")
	errInvalidOffset     = errors.New("api: invalid offset")
	errInvalidRecordID   = errors.New("api: invalid record id")
	errInvalidResourceID = errors.New("api: invalid resource id")
	errInvalidReaderName = errors.New("api: invalid shard reader id")
	errConflictOffset    = errors.New("api: offset of another shard")
	errTooManyShards     = errors.New("api: stream has more than one shard")
	errWrongServer       = errors.New("api: resource is served by another node")
	errNotOffered        = errors.New("api: not offered by weir")

	errInvalidSubscriptionName     = errors.New("api: invalid subscription id")
	errInvalidSubscription         = errors.New("api: invalid subscription setting")
	errInvalidSubscriptionOffset   = errors.New("api: invalid subscription offset")
	errSubscriptionOnMissingStream = errors.New("api: subscription on a stream that does not exist")
)

// errorMapping is where one internal error class surfaces on the wire.
type errorMapping struct {
	err  error
	code codes.Code
	ec   hstreampb.ErrorCode
}

// errorTable maps every internal error class to a gRPC code and HStreamDB
// ErrorCode, in the manner of etcd's toGRPCErrorMap. It is searched in order
// with errors.Is, so an error wrapping several classes takes the first one
// listed. Anything not listed is an internal error: Internal, code 0, logged.
var errorTable = []errorMapping{
	// The api's validation.
	{errInvalidStreamName, codes.InvalidArgument, hstreampb.ErrorCode_StreamInvalidObjectIdentifier},
	{errInvalidShardCount, codes.InvalidArgument, hstreampb.ErrorCode_StreamInvalidShardCount},
	{errEmptyBatch, codes.InvalidArgument, hstreampb.ErrorCode_StreamEmptyBatchedRecord},
	{errRecordTooLarge, codes.InvalidArgument, hstreampb.ErrorCode_StreamInvalidRecordSize},
	{errInvalidOffset, codes.InvalidArgument, hstreampb.ErrorCode_StreamInvalidOffset},
	{errInvalidRecordID, codes.InvalidArgument, hstreampb.ErrorCode_StreamInvalidRecordId},
	{errInvalidResourceID, codes.InvalidArgument, hstreampb.ErrorCode_InternalError},
	{errInvalidReaderName, codes.InvalidArgument, hstreampb.ErrorCode_ShardReaderInvalidObjectIdentifier},
	{errConflictOffset, codes.InvalidArgument, hstreampb.ErrorCode_ShardReaderConflictOffset},
	{errTooManyShards, codes.InvalidArgument, hstreampb.ErrorCode_ShardReaderTooManyShards},
	// For a request only one node can serve (a subscription's fetch) that
	// reached another: the client looks the resource up again.
	{errWrongServer, codes.FailedPrecondition, hstreampb.ErrorCode_WrongServer},
	{errNotOffered, codes.Unimplemented, hstreampb.ErrorCode_InternalError},
	{errInvalidSubscriptionName, codes.InvalidArgument, hstreampb.ErrorCode_SubscriptionInvalidObjectIdentifier},
	{errInvalidSubscription, codes.InvalidArgument, hstreampb.ErrorCode_InternalError},
	{errInvalidSubscriptionOffset, codes.InvalidArgument, hstreampb.ErrorCode_SubscriptionInvalidOffset},
	{errSubscriptionOnMissingStream, codes.NotFound, hstreampb.ErrorCode_SubscriptionCreationOnNonExistentStream},

	// The batch decoder: a malformed batch is the producer's mistake.
	{wire.ErrPayloadTooLarge, codes.InvalidArgument, hstreampb.ErrorCode_StreamInvalidRecordSize},
	{wire.ErrEmptyBatch, codes.InvalidArgument, hstreampb.ErrorCode_StreamEmptyBatchedRecord},
	{wire.ErrCorruptPayload, codes.InvalidArgument, hstreampb.ErrorCode_StreamEmptyBatchedRecord},
	{wire.ErrBatchSizeMismatch, codes.InvalidArgument, hstreampb.ErrorCode_StreamEmptyBatchedRecord},
	{wire.ErrUnknownCompression, codes.InvalidArgument, hstreampb.ErrorCode_StreamEmptyBatchedRecord},
	{wire.ErrInvalidRecordID, codes.InvalidArgument, hstreampb.ErrorCode_StreamInvalidRecordId},

	// The cluster. An unreachable etcd or node comes first: an error that
	// also wraps another class (a lookup that found nothing because etcd did
	// not answer, a deadline that ran out waiting for it) is about the outage,
	// and Unavailable tells the client to retry rather than to give up.
	// HStreamDB has no ErrorCode for either, so they carry the generic one;
	// the message says what was unreachable and what the node was doing.
	{cluster.ErrMetadataUnavailable, codes.Unavailable, hstreampb.ErrorCode_InternalError},
	{cluster.ErrNodeUnavailable, codes.Unavailable, hstreampb.ErrorCode_InternalError},
	{cluster.ErrStreamNotFound, codes.NotFound, hstreampb.ErrorCode_StreamNotFound},
	{cluster.ErrStreamExists, codes.AlreadyExists, hstreampb.ErrorCode_StreamExists},
	{cluster.ErrShardNotFound, codes.NotFound, hstreampb.ErrorCode_StreamShardNotExists},
	{cluster.ErrReaderNotFound, codes.NotFound, hstreampb.ErrorCode_ShardReaderInvalidObjectIdentifier},
	{cluster.ErrReaderExists, codes.AlreadyExists, hstreampb.ErrorCode_ShardReaderInvalidObjectIdentifier},
	{cluster.ErrTooFewNodes, codes.InvalidArgument, hstreampb.ErrorCode_StreamInvalidReplicaFactor},
	{cluster.ErrOffsetBeyondEnd, codes.InvalidArgument, hstreampb.ErrorCode_StreamInvalidOffset},
	{cluster.ErrNoLeader, codes.Unavailable, hstreampb.ErrorCode_InternalError},
	{cluster.ErrClosed, codes.Unavailable, hstreampb.ErrorCode_InternalError},
	{cluster.ErrSubscriptionNotFound, codes.NotFound, hstreampb.ErrorCode_SubscriptionNotFound},
	{cluster.ErrSubscriptionExists, codes.AlreadyExists, hstreampb.ErrorCode_SubscriptionExists},
	{cluster.ErrStreamHasSubscriptions, codes.FailedPrecondition, hstreampb.ErrorCode_StreamFoundSubscription},
	{cluster.ErrNotOwner, codes.FailedPrecondition, hstreampb.ErrorCode_WrongServer},

	// The subscription layer.
	{subscription.ErrInvalidConsumer, codes.InvalidArgument, hstreampb.ErrorCode_InternalError},
	{subscription.ErrConsumerExists, codes.AlreadyExists, hstreampb.ErrorCode_InternalError},
	{subscription.ErrActiveConsumers, codes.FailedPrecondition, hstreampb.ErrorCode_SubscriptionFoundActiveConsumers},
	{subscription.ErrDeleted, codes.NotFound, hstreampb.ErrorCode_SubscriptionNotFound},
	{subscription.ErrClosed, codes.Unavailable, hstreampb.ErrorCode_InternalError},

	// The caller went away or ran out of time.
	{context.Canceled, codes.Canceled, hstreampb.ErrorCode_InternalError},
	{context.DeadlineExceeded, codes.DeadlineExceeded, hstreampb.ErrorCode_InternalError},
}

// apiError is an error with a message written for the client: it names what
// was wrong and the value, and unwraps to the error class that errorTable
// maps.
type apiError struct {
	class error
	msg   string
}

func (e *apiError) Error() string { return e.msg }
func (e *apiError) Unwrap() error { return e.class }

// errorf makes an error of class whose client-facing message is the
// formatted text.
func errorf(class error, format string, args ...any) error {
	return &apiError{class: class, msg: fmt.Sprintf(format, args...)}
}

// reason is err's text without the package prefix of the wire and cluster
// sentinels, for messages that quote it.
func reason(err error) string {
	msg := err.Error()
	for _, prefix := range []string{"wire: ", "cluster: "} {
		msg = strings.TrimPrefix(msg, prefix)
	}
	return msg
}

// errorBody is the JSON an HStreamDB server puts in the status message.
type errorBody struct {
	Error   int32  `json:"error"`
	Message string `json:"message"`
	Extra   any    `json:"extra"`
}

// statusError converts err, returned by rpc, to the gRPC status the client
// sees. Errors that are already statuses (a failed Send on a stream) pass
// through; unknown errors become Internal and are logged.
func statusError(log *slog.Logger, rpc string, err error) error {
	if err == nil {
		return nil
	}
	for _, m := range errorTable {
		if errors.Is(err, m.err) {
			if m.code == codes.Unavailable {
				log.Warn("request failed: node unavailable", "rpc", rpc, "err", err)
			}
			return newStatus(m.code, m.ec, err.Error())
		}
	}
	if _, ok := status.FromError(err); ok {
		return err
	}
	log.Error("request failed: internal error", "rpc", rpc, "err", err)
	return newStatus(codes.Internal, hstreampb.ErrorCode_InternalError, err.Error())
}

func newStatus(code codes.Code, ec hstreampb.ErrorCode, msg string) error {
	body, err := json.Marshal(errorBody{Error: int32(ec), Message: msg})
	if err != nil { // a string and an int always marshal
		body = []byte(msg)
	}
	return status.Error(code, string(body))
}
