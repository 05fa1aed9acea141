package subscription

import (
	"fmt"
	"sync/atomic"

	"google.golang.org/protobuf/encoding/protowire"

	"github.com/weir-log/weir/api/hstreampb"
	"github.com/weir-log/weir/cluster"
)

// batchSizeField is BatchedRecord.batchSize's field number.
const batchSizeField = 3

// batchSize reads the batchSize of a marshaled BatchedRecord without
// unmarshaling (and copying) its payload: the owner needs only the count.
func batchSize(b []byte) (int, error) {
	n := 0
	for len(b) > 0 {
		num, typ, l := protowire.ConsumeTag(b)
		if l < 0 {
			return 0, protowire.ParseError(l)
		}
		b = b[l:]
		if num == batchSizeField && typ == protowire.VarintType {
			v, l := protowire.ConsumeVarint(b)
			if l < 0 {
				return 0, protowire.ParseError(l)
			}
			n, b = int(uint32(v)), b[l:]
			continue
		}
		l = protowire.ConsumeFieldValue(num, typ, b)
		if l < 0 {
			return 0, protowire.ParseError(l)
		}
		b = b[l:]
	}
	if n == 0 {
		return 0, fmt.Errorf("batchSize is 0")
	}
	return n, nil
}

// delivery is one batch handed to a consumer: a committed entry and, for a
// redelivery of a partly acknowledged batch, the positions still unacked.
type delivery struct {
	shard   uint64
	entry   cluster.Entry
	keep    []uint32     // positions to send, in order; nil = all
	takenAt atomic.Int64 // when Next took it for sending (unix ns); 0: still queued
}

// received builds what the consumer is sent (see cluster.Entry.Received).
func (d *delivery) received() (*hstreampb.ReceivedRecord, error) {
	return d.entry.Received(d.shard, d.keep)
}
