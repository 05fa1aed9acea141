package store

import (
	"fmt"
	"testing"

	pb "go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"
)

// BenchmarkBatchCommit commits rounds of n 1 KiB entries spread over 8
// shards, each round one synced batch (with each shard's hard state), on the
// real filesystem. One op is one round.
func BenchmarkBatchCommit(b *testing.B) {
	const shards = 8
	for _, n := range []int{8, 64, 512} {
		b.Run(fmt.Sprintf("entries=%d", n), func(b *testing.B) {
			db := openDB(b, b.TempDir(), Options{})
			data := make([]byte, 1024)
			per := n / shards
			ents := make([][]*pb.Entry, shards)
			for s := range ents {
				for range per {
					ents[s] = append(ents[s], &pb.Entry{Index: new(uint64(0)), Term: new(uint64(1)), Data: data})
				}
			}
			var last [shards]uint64
			batch := db.NewBatch()
			var compactions uint64
			before := db.Stats()
			b.SetBytes(int64(n * len(data)))
			b.ResetTimer()
			for i := range b.N {
				for s := range uint64(shards) {
					for j, e := range ents[s] {
						*e.Index = last[s] + uint64(j) + 1
					}
					if err := batch.Append(s, ents[s]); err != nil {
						b.Fatal(err)
					}
					last[s] += uint64(per)
					batch.SetHardState(s, &pb.HardState{Term: proto.Uint64(1), Vote: proto.Uint64(1), Commit: proto.Uint64(last[s])})
				}
				if err := batch.Commit(true); err != nil {
					b.Fatal(err)
				}
				if i%64 == 63 { // retention, to keep the disk use flat
					b.StopTimer()
					for s := range uint64(shards) {
						l, _ := db.Log(s)
						if err := l.Compact(last[s]); err != nil {
							b.Fatal(err)
						}
						compactions++
					}
					b.StartTimer()
				}
			}
			b.StopTimer()
			st := db.Stats()
			b.ReportMetric(float64(n*b.N)/b.Elapsed().Seconds(), "entries/s")
			b.ReportMetric(float64(st.Syncs-before.Syncs-compactions)/float64(b.N), "syncs/op")
		})
	}
}
