package server

import (
	"context"
	"log/slog"
	"sync/atomic"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// etcdLog carries the embedded etcd's zap logs into weir's slog logger, at
// warn and above, under component=etcd. Once weir starts closing etcd
// (closing is set), etcd's complaints that its listeners were closed are
// the shutdown itself, not errors, and are dropped.
type etcdLog struct {
	log     *slog.Logger
	closing *atomic.Bool
	fields  []zapcore.Field
}

// etcdExpected are etcd warnings about choices weir makes on purpose for its
// embedded, localhost-only etcd; they are logged at debug.
var etcdExpected = map[string]bool{
	"Running http and grpc server on single port. This is not recommended for production.": true,
	"simple token is not cryptographically signed":                                         true,
}

func newEtcdLogger(log *slog.Logger, closing *atomic.Bool) *zap.Logger {
	return zap.New(&etcdLog{log: log.With("component", "etcd"), closing: closing})
}

func (c *etcdLog) Enabled(l zapcore.Level) bool { return l >= zapcore.WarnLevel }

func (c *etcdLog) With(fields []zapcore.Field) zapcore.Core {
	return &etcdLog{log: c.log, closing: c.closing, fields: append(c.fields[:len(c.fields):len(c.fields)], fields...)}
}

func (c *etcdLog) Check(e zapcore.Entry, ce *zapcore.CheckedEntry) *zapcore.CheckedEntry {
	if c.Enabled(e.Level) {
		return ce.AddCore(e, c)
	}
	return ce
}

func (c *etcdLog) Write(e zapcore.Entry, fields []zapcore.Field) error {
	if c.closing.Load() {
		return nil
	}
	enc := zapcore.NewMapObjectEncoder()
	for _, f := range append(c.fields, fields...) {
		f.AddTo(enc)
	}
	attrs := make([]any, 0, 2*len(enc.Fields))
	for k, v := range enc.Fields {
		attrs = append(attrs, k, v)
	}
	level := slog.LevelWarn
	switch {
	case e.Level >= zapcore.ErrorLevel:
		level = slog.LevelError
	case etcdExpected[e.Message]:
		level = slog.LevelDebug
	}
	c.log.Log(context.Background(), level, e.Message, attrs...)
	return nil
}

func (c *etcdLog) Sync() error { return nil }
