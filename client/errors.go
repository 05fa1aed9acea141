package client

import (
	"encoding/json"
	"errors"

	"github.com/weir-log/weir/api/hstreampb"
	"google.golang.org/grpc/status"
)

// Errors the client finds itself, before or after a call. They are wrapped
// with %w and the detail (stream, option, sizes); test with errors.Is.
//
// Errors returned by the server are gRPC status errors and are returned as
// they are, so status.Code(err) works; ErrorCode extracts HStreamDB's error
// code from their message.
var (
	// ErrInvalidArgument: an argument or option was rejected before any call
	// was made.
	ErrInvalidArgument = errors.New("client: invalid argument")
	// ErrBadResponse: the server answered with something that breaks the
	// protocol (wrong number of record ids, missing fields).
	ErrBadResponse = errors.New("client: bad response from server")
	// ErrDataContaminated: a ReceivedRecord's batchSize differs from the
	// number of its record ids, or from the number of records in its payload
	// (the HStreamDB Go client's "data contaminated" check).
	ErrDataContaminated = errors.New("client: data contaminated")
	// ErrBufferFull: BufferedProducer.Append with FlowControlNonBlocking
	// found FlowControlBytesLimit bytes already buffered or in flight.
	ErrBufferFull = errors.New("client: producer buffer full")
	// ErrProducerClosed: BufferedProducer.Append after (or during) Close.
	ErrProducerClosed = errors.New("client: producer closed")
)

// ErrorCode returns the HStreamDB error code a server put in a gRPC status
// error. HStreamDB (and weir) send the status message as a JSON object
// {"error": <code>, "message": "<text>", "extra": <json>}; ok is false if err
// carries no gRPC status or its message is not such an object. err may be
// wrapped.
func ErrorCode(err error) (code hstreampb.ErrorCode, ok bool) {
	var se interface{ GRPCStatus() *status.Status }
	if err == nil || !errors.As(err, &se) {
		return 0, false
	}
	var msg struct {
		Error *int32 `json:"error"`
	}
	if json.Unmarshal([]byte(se.GRPCStatus().Message()), &msg) != nil || msg.Error == nil {
		return 0, false
	}
	return hstreampb.ErrorCode(*msg.Error), true
}
