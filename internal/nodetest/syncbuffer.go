package nodetest

import "github.com/weir-log/weir/internal/syncbuf"

// SyncBuffer is syncbuf.Buffer, under the name this package's users know.
type SyncBuffer = syncbuf.Buffer
