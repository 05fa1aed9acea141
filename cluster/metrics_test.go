package cluster

import (
	"testing"

	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/proto"

	"github.com/weir-log/weir/api/hstreampb"
	"github.com/weir-log/weir/api/wire"
)

// batchRecords finds batchSize in a marshaled BatchedRecord, wherever the
// field sits, and answers 0 for bytes that do not parse.
func TestBatchRecords(t *testing.T) {
	recs := make([]*hstreampb.HStreamRecord, 7)
	for i := range recs {
		recs[i] = &hstreampb.HStreamRecord{Payload: []byte("p")}
	}
	b, err := wire.EncodeBatch(recs, hstreampb.CompressionType_Zstd)
	require.NoError(t, err)
	data, err := proto.Marshal(b)
	require.NoError(t, err)
	require.Equal(t, 7, batchRecords(data))
	require.Equal(t, 0, batchRecords(data[:1]), "truncated")
	require.Equal(t, 0, batchRecords(nil))
	require.Equal(t, 0, batchRecords([]byte{0xff}))
}
