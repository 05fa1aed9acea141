package chaos

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

var t0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

// at returns the time ms milliseconds into the run.
func at(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }

// acked is producer's seq-th write on key, acked at ms.
func acked(producer string, seq uint64, key string, ms int) Write {
	return Write{Producer: producer, Seq: seq, Key: key, Via: "grpc", Start: at(ms - 1), Acked: true, AckTime: at(ms), Attempts: 1}
}

// unacked is producer's seq-th write on key, never acked.
func unacked(producer string, seq uint64, key string, ms int) Write {
	return Write{Producer: producer, Seq: seq, Key: key, Via: "mqtt", Start: at(ms), Attempts: 1}
}

// rec is the record at index of shard, holding producer's seq-th value.
func rec(shard, index uint64, key, producer string, seq uint64) Record {
	return Record{Shard: shard, Index: index, Key: key, Payload: Payload(producer, seq, 0)}
}

// readAll returns records for writes, in order, on shard 1 for key "a" and
// shard 2 for any other key.
func readAll(writes []Write) []Record {
	next := map[uint64]uint64{}
	var recs []Record
	for _, w := range writes {
		shard := uint64(2)
		if w.Key == "a" {
			shard = 1
		}
		next[shard]++
		recs = append(recs, rec(shard, next[shard], w.Key, w.Producer, w.Seq))
	}
	return recs
}

// deliverAll returns one delivery of each write.
func deliverAll(writes []Write) []Delivery {
	var ds []Delivery
	for _, w := range writes {
		ds = append(ds, Delivery{Payload: Payload(w.Producer, w.Seq, 0), Time: w.AckTime})
	}
	return ds
}

// replica is node's copy of shard, entries from first with the digests.
func replica(shard, node, first uint64, digests ...string) Replica {
	r := Replica{Shard: shard, Node: node}
	for i, d := range digests {
		r.Entries = append(r.Entries, ReplicaEntry{Index: first + uint64(i), Digest: d})
	}
	return r
}

// clean returns a history without problems: two producers on two keys,
// everything acked read back once and delivered once, three identical
// replicas per shard, one fault.
func clean() History {
	writes := []Write{
		acked("p1", 1, "a", 100), acked("p2", 1, "b", 150),
		acked("p1", 2, "a", 200), acked("p2", 2, "b", 250),
		acked("p1", 3, "a", 300), acked("p2", 3, "b", 350),
	}
	h := History{
		Writes:     writes,
		Records:    readAll(writes),
		Deliveries: deliverAll(writes),
		Faults:     []Fault{{Kind: "kill", Target: "n1", Start: at(120), End: at(220)}},
		Start:      t0,
		End:        at(1000),
	}
	for node := uint64(1); node <= 3; node++ {
		h.Replicas = append(h.Replicas, replica(1, node, 1, "x1", "x2", "x3"), replica(2, node, 1, "y1", "y2", "y3"))
	}
	return h
}

func TestPayloadRoundTrip(t *testing.T) {
	for _, tc := range []struct {
		producer string
		seq      uint64
		pad      int
		want     string
	}{
		{"p1", 1, 0, "p=p1 s=1"},
		{"w-3/grpc", 1742, 4, "p=w-3/grpc s=1742 ...."},
		{"x=y", math.MaxUint64, 1, "p=x=y s=18446744073709551615 ."},
		{"z", 0, 0, "p=z s=0"},
	} {
		b := Payload(tc.producer, tc.seq, tc.pad)
		assert.Equal(t, tc.want, string(b))
		producer, seq, ok := ParsePayload(b)
		require.True(t, ok, "%q", b)
		assert.Equal(t, tc.producer, producer)
		assert.Equal(t, tc.seq, seq)
	}
	// Padding is anything after a space.
	producer, seq, ok := ParsePayload([]byte("p=a s=12 anything\x00 at all s=99"))
	require.True(t, ok)
	assert.Equal(t, "a", producer)
	assert.Equal(t, uint64(12), seq)
}

func TestPayloadPanicsOnUnparsableProducer(t *testing.T) {
	assert.Panics(t, func() { Payload("", 1, 0) })
	assert.Panics(t, func() { Payload("a b", 1, 0) })
}

func TestParsePayloadRejectsGarbage(t *testing.T) {
	for _, s := range []string{
		"",
		"p=",
		"p=a",
		"p=a ",
		"p=a s=",
		"p= s=1",
		"P=a s=1",
		" p=a s=1",
		"p=a  s=1",
		"p=a s=1x",
		"p=a s=-1",
		"p=a s=+1",
		"p=a s=01",
		"p=a s=18446744073709551616", // MaxUint64 + 1
		"p=a s=99999999999999999999",
		"p=a s=123456789012345678901",
		"p=a q=1",
		"garbage",
		"\xff\xfe",
	} {
		_, _, ok := ParsePayload([]byte(s))
		assert.False(t, ok, "%q", s)
	}
}

func FuzzParsePayload(f *testing.F) {
	for _, s := range []string{"p=a s=1", "p=w-3 s=1742 ....", "p=a s=01", "p=a s=18446744073709551615", "p= s=", "x"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		producer, seq, ok := ParsePayload(b)
		if !ok {
			return
		}
		// What parses is what Payload makes, plus padding.
		want := Payload(producer, seq, 0)
		if !bytes.HasPrefix(b, want) || (len(b) > len(want) && b[len(want)] != ' ') {
			t.Fatalf("%q parsed to (%q, %d), which Payload makes as %q", b, producer, seq, want)
		}
	})
}

func TestCheckCleanHistoryIsOK(t *testing.T) {
	r := Check(clean())
	assert.True(t, r.OK(), "%v", r.Problems())
	assert.Empty(t, r.Problems())
	assert.Equal(t, Totals{
		Start: t0, End: at(1000), Duration: Seconds(time.Second),
		Writes: 6, Acked: 6, Records: 6, Deliveries: 6,
	}, r.Totals)
	assert.Equal(t, 2, r.Replicas.Shards)
	assert.Zero(t, r.Replicas.Lagging)
	assert.Zero(t, r.Delivery.Redeliveries)
	assert.Zero(t, r.Duplicates.Extra)
}

func TestCheckLostClassification(t *testing.T) {
	h := clean()
	// p3 acks 1..9 on "a"; 3, 4, 6 and 7 are found, 5 lost in the middle,
	// 1 and 2 in the prefix, 8 and 9 in the suffix. Unacked 10 is missing,
	// which is allowed.
	var p3 []Write
	for seq := uint64(1); seq <= 9; seq++ {
		p3 = append(p3, acked("p3", seq, "a", 400+int(seq)))
	}
	p3 = append(p3, unacked("p3", 10, "a", 420))
	h.Writes = append(h.Writes, p3...)
	for i, seq := range []uint64{3, 4, 6, 7} {
		h.Records = append(h.Records, rec(1, uint64(100+i), "a", "p3", seq))
	}
	// p4's only acked writes are both lost: prefix. Its unacked 3 landed,
	// which does not anchor the classes.
	h.Writes = append(h.Writes, acked("p4", 1, "b", 500), acked("p4", 2, "b", 501), unacked("p4", 3, "b", 502))
	h.Records = append(h.Records, rec(2, 100, "b", "p4", 3))
	h.Deliveries = append(h.Deliveries, deliverAll(h.Writes[6:])...)

	r := Check(h)
	assert.False(t, r.OK())
	l := r.Lost
	assert.Equal(t, 7, l.Count)
	assert.Equal(t, 4, l.Prefix)
	assert.Equal(t, 1, l.Middle)
	assert.Equal(t, 2, l.Suffix)
	assert.Equal(t, 7, r.Totals.Lost)
	assert.Equal(t, 1, r.Totals.UnackedFound)
	assert.Equal(t, 19, r.Totals.Writes)
	assert.Equal(t, 17, r.Totals.Acked)
	assert.Equal(t, 2, r.Totals.Unacked)

	var got []string
	for _, e := range l.Examples {
		got = append(got, fmt.Sprintf("%s/%d:%s", e.Producer, e.Seq, e.Class))
	}
	assert.Equal(t, []string{
		"p3/1:prefix", "p3/2:prefix", "p3/5:middle", "p3/8:suffix", "p3/9:suffix",
		"p4/1:prefix", "p4/2:prefix",
	}, got)
	assert.Equal(t, at(405), l.Examples[2].AckTime)
	assert.Equal(t, []string{"7 acked writes lost (prefix 4, middle 1, suffix 2)"}, r.Problems())
}

func TestCheckLostExamplesAreBounded(t *testing.T) {
	h := clean()
	for seq := uint64(1); seq <= 50; seq++ {
		h.Writes = append(h.Writes, acked("p9", seq, "a", 500))
	}
	r := Check(h)
	assert.Equal(t, 50, r.Lost.Count)
	assert.Equal(t, 50, r.Lost.Prefix)
	assert.Len(t, r.Lost.Examples, MaxExamples)
	assert.Equal(t, 50, r.Delivery.NeverDelivered)
	assert.Len(t, r.Delivery.Examples, MaxExamples)
}

func TestCheckUnexpected(t *testing.T) {
	h := clean()
	h.Writes = append(h.Writes, unacked("p1", 4, "a", 400))
	h.Records = append(h.Records,
		Record{Shard: 1, Index: 10, Key: "a", Payload: []byte("garbage\x00")},
		rec(1, 11, "a", "p1", 4),     // unacked but attempted: fine
		rec(1, 12, "a", "p1", 5),     // p1 never attempted 5
		rec(1, 13, "a", "nobody", 1), // no such producer
		Record{Shard: 1, Index: 14, Key: "a", Payload: Payload("p1", 4, 2)}, // padding that was never written
		rec(1, 15, "zz", "p1", 4), // p1 wrote with key "a"
	)
	r := Check(h)
	assert.Equal(t, 5, r.Unexpected.Count)
	assert.Equal(t, []UnexpectedRecord{
		{Shard: 1, Index: 10, Key: "a", Payload: `garbage\x00`, Why: "not a value"},
		{Shard: 1, Index: 12, Key: "a", Payload: "p=p1 s=5", Why: "never written"},
		{Shard: 1, Index: 13, Key: "a", Payload: "p=nobody s=1", Why: "unknown producer"},
		{Shard: 1, Index: 14, Key: "a", Payload: "p=p1 s=4 ..", Why: "corrupt"},
		{Shard: 1, Index: 15, Key: "zz", Payload: "p=p1 s=4", Why: `key "zz", written with "a"`},
	}, r.Unexpected.Examples)
	assert.Equal(t, 1, r.Totals.UnackedFound)
	assert.Equal(t, []string{"5 unexpected records"}, r.Problems())

	long := Record{Shard: 1, Index: 16, Key: "a", Payload: bytes.Repeat([]byte("z"), 100)}
	h.Records = append(h.Records, long)
	r = Check(h)
	assert.Equal(t, strings.Repeat("z", 64)+"...", r.Unexpected.Examples[5].Payload)
}

func TestCheckDuplicates(t *testing.T) {
	h := clean()
	h.Writes[0].Attempts = 2 // p1/1 retried
	h.Records = append(h.Records,
		rec(1, 10, "a", "p1", 3), // p1/3 sent once: unexplained
		rec(1, 11, "a", "p1", 3),
		rec(2, 10, "b", "p2", 3), // p2/3 sent once: unexplained
	)
	// p1/1, retried, read three times in all: two retried copies. They are
	// put first in the log, so as not to count as order violations.
	h.Records = append([]Record{rec(1, 0, "a", "p1", 1), rec(1, 0, "a", "p1", 1)}, h.Records...)

	r := Check(h)
	d := r.Duplicates
	assert.Equal(t, 5, d.Extra)
	assert.Equal(t, 2, d.Retried)
	assert.Equal(t, 3, d.Unexplained)
	assert.Equal(t, []Duplicate{
		{Producer: "p1", Seq: 3, Copies: 3, Attempts: 1},
		{Producer: "p2", Seq: 3, Copies: 2, Attempts: 1},
	}, d.Examples)
	assert.Zero(t, r.Order.Violations)
	assert.Equal(t, []string{"3 unexplained duplicate copies (of writes sent once)"}, r.Problems())

	// Retried duplicates alone are fine.
	h = clean()
	h.Writes[1].Attempts = 3
	h.Records = append(h.Records, rec(2, 10, "b", "p2", 3), rec(2, 11, "b", "p2", 3))
	h.Writes[5].Attempts = 2
	r = Check(h)
	assert.True(t, r.OK(), "%v", r.Problems())
	assert.Equal(t, 2, r.Duplicates.Retried)
}

func TestCheckOrder(t *testing.T) {
	h := clean()
	// On key "a", p1 wrote 1..5 and p5 wrote 1..2. p1's log order is
	// 1 2 4 3 2 5 4: 3 is a reorder (first read of 3, after 4), the second
	// 2 a late duplicate, and so is the second 4 (after 5). p5 interleaves
	// in its own order, which is fine.
	h.Writes = []Write{
		acked("p1", 1, "a", 10), acked("p1", 2, "a", 20), acked("p1", 3, "a", 30),
		acked("p1", 4, "a", 40), acked("p1", 5, "a", 50),
		acked("p5", 1, "a", 15), acked("p5", 2, "a", 45),
	}
	h.Writes[1].Attempts, h.Writes[3].Attempts = 2, 2
	h.Records = []Record{
		rec(1, 1, "a", "p1", 1), rec(1, 2, "a", "p5", 1), rec(1, 3, "a", "p1", 2),
		rec(1, 4, "a", "p1", 4), rec(1, 5, "a", "p1", 3), rec(1, 6, "a", "p1", 2),
		rec(1, 7, "a", "p5", 2), rec(1, 8, "a", "p1", 5), rec(1, 9, "a", "p1", 4),
	}
	h.Deliveries = deliverAll(h.Writes)
	h.Replicas = nil

	r := Check(h)
	o := r.Order
	assert.Equal(t, 1, o.Violations)
	assert.Equal(t, 2, o.LateDuplicates)
	assert.Equal(t, []OrderViolation{
		{Key: "a", Shard: 1, Index: 5, Producer: "p1", Seq: 3, After: 4},
		{Key: "a", Shard: 1, Index: 6, Producer: "p1", Seq: 2, After: 4, LateDuplicate: true},
		{Key: "a", Shard: 1, Index: 9, Producer: "p1", Seq: 4, After: 5, LateDuplicate: true},
	}, o.Examples)
	assert.Zero(t, o.SplitKeys)
	assert.Zero(t, r.Duplicates.Unexplained, "the copies were of retried writes")
	assert.Equal(t, []string{"1 order violations (values first read after a later value of their producer)"}, r.Problems(),
		"late copies of retried writes are no problem")
}

func TestCheckOrderIsPerKey(t *testing.T) {
	h := clean()
	// p1 writes seq 1 on "b" and 2 on "a"; reading "a" before "b" is no
	// violation: order holds within a key.
	h.Writes = []Write{acked("p1", 1, "b", 10), acked("p1", 2, "a", 20)}
	h.Records = []Record{rec(1, 1, "a", "p1", 2), rec(2, 1, "b", "p1", 1)}
	h.Deliveries = deliverAll(h.Writes)
	r := Check(h)
	assert.True(t, r.OK(), "%v", r.Problems())
}

func TestCheckSplitKey(t *testing.T) {
	h := clean()
	// Key "a" is read from shards 1, 3 and 4. Shard 3 holds p1/1 again,
	// after shard 1 read p1/3: it is no order violation (the walk is per
	// shard) but a duplicate, and the key is split.
	h.Writes[0].Attempts = 2
	h.Records = append(h.Records, rec(3, 1, "a", "p1", 1), rec(4, 1, "a", "p1", 2), rec(3, 2, "a", "p1", 1))
	h.Writes[2].Attempts = 2

	r := Check(h)
	o := r.Order
	assert.Equal(t, 1, o.SplitKeys)
	assert.Equal(t, []SplitKey{{Key: "a", Shards: []uint64{1, 3, 4}}}, o.SplitExamples)
	assert.Zero(t, o.Violations)
	assert.Equal(t, 3, r.Duplicates.Retried)
	assert.Equal(t, []string{"1 keys read from more than one shard"}, r.Problems())

	// Within shard 3, the walk still sees the order: p1/2 after p1/3 is a
	// reorder there, although p1/2 was read from shard 4 (another stream).
	h.Records = append(h.Records, rec(3, 3, "a", "p1", 3), rec(3, 4, "a", "p1", 2))
	r = Check(h)
	assert.Equal(t, 1, r.Order.Violations)
	assert.Zero(t, r.Order.LateDuplicates)
}

func TestCheckReplicas(t *testing.T) {
	for _, tc := range []struct {
		name      string
		replicas  []Replica
		shards    int
		divergent int
		indexes   int
		lagging   int
		example   *Divergence
	}{{
		name: "identical",
		replicas: []Replica{
			replica(1, 1, 1, "a", "b", "c"), replica(1, 2, 1, "a", "b", "c"), replica(1, 3, 1, "a", "b", "c"),
		},
		shards: 1,
	}, {
		name: "one digest differs",
		replicas: []Replica{
			replica(7, 3, 1, "a", "b", "c"), replica(7, 1, 1, "a", "B", "c"), replica(7, 2, 1, "a", "b", "c"),
		},
		shards: 1, divergent: 1, indexes: 1,
		example: &Divergence{Shard: 7, First: 1, Last: 3, Indexes: 1, Index: 2, Digests: []NodeDigest{
			{Node: 1, Digest: "B"}, {Node: 2, Digest: "b"}, {Node: 3, Digest: "b"},
		}},
	}, {
		name: "index missing inside the common range",
		replicas: []Replica{
			replica(1, 1, 1, "a", "b", "c", "d"),
			{Shard: 1, Node: 2, Entries: []ReplicaEntry{{1, "a"}, {2, "b"}, {4, "d"}}},
		},
		shards: 1, divergent: 1, indexes: 1,
		example: &Divergence{Shard: 1, First: 1, Last: 4, Indexes: 1, Index: 3, Digests: []NodeDigest{
			{Node: 1, Digest: "c"}, {Node: 2},
		}},
	}, {
		name: "index missing among equal digests",
		replicas: []Replica{
			{Shard: 1, Node: 1, Entries: []ReplicaEntry{{1, "x"}, {3, "x"}}},
			replica(1, 2, 1, "x", "x", "x"),
			{Shard: 1, Node: 3, Entries: []ReplicaEntry{{1, "x"}, {3, "x"}}},
		},
		shards: 1, divergent: 1, indexes: 1,
		example: &Divergence{Shard: 1, First: 1, Last: 3, Indexes: 1, Index: 2, Digests: []NodeDigest{
			{Node: 1}, {Node: 2, Digest: "x"}, {Node: 3},
		}},
	}, {
		name: "every index differs",
		replicas: []Replica{
			replica(1, 1, 1, "a", "b", "c"), replica(1, 2, 1, "x", "y", "z"),
		},
		shards: 1, divergent: 1, indexes: 3,
		example: &Divergence{Shard: 1, First: 1, Last: 3, Indexes: 3, Index: 1, Digests: []NodeDigest{
			{Node: 1, Digest: "a"}, {Node: 2, Digest: "x"},
		}},
	}, {
		name: "lagging follower is no divergence",
		replicas: []Replica{
			replica(1, 1, 1, "a", "b", "c", "d"), replica(1, 2, 1, "a", "b"), replica(1, 3, 1, "a", "b", "c", "d"),
		},
		shards: 1, lagging: 1,
	}, {
		name: "different first indexes, outside the common range, agree inside",
		replicas: []Replica{
			replica(1, 1, 1, "q", "r", "c", "d"), replica(1, 2, 3, "c", "d"),
		},
		shards: 1,
	}, {
		name: "differences outside the common range do not count",
		replicas: []Replica{
			replica(1, 1, 1, "a", "b", "c", "d", "e"), replica(1, 2, 2, "b", "c", "d"),
			replica(1, 3, 1, "z", "b", "c", "d", "y"),
		},
		shards: 1, lagging: 1,
	}, {
		name: "empty replica only lags",
		replicas: []Replica{
			replica(1, 1, 1, "a", "b"), {Shard: 1, Node: 2}, replica(1, 3, 1, "a", "b"),
		},
		shards: 1, lagging: 1,
	}, {
		name:     "one replica has nothing to compare with",
		replicas: []Replica{replica(1, 1, 1, "a"), replica(2, 1, 1, "b")},
	}, {
		name: "disjoint replicas share no index",
		replicas: []Replica{
			replica(1, 1, 1, "a", "b"), replica(1, 2, 5, "e", "f"),
		},
		shards: 1, lagging: 1,
	}, {
		name: "shards are compared separately",
		replicas: []Replica{
			replica(1, 1, 1, "a", "b"), replica(2, 1, 1, "a", "x"),
			replica(1, 2, 1, "a", "b"), replica(2, 2, 1, "a", "y"),
		},
		shards: 2, divergent: 1, indexes: 1,
		example: &Divergence{Shard: 2, First: 1, Last: 2, Indexes: 1, Index: 2, Digests: []NodeDigest{
			{Node: 1, Digest: "x"}, {Node: 2, Digest: "y"},
		}},
	}} {
		t.Run(tc.name, func(t *testing.T) {
			h := clean()
			h.Replicas = tc.replicas
			r := Check(h)
			rr := r.Replicas
			assert.Equal(t, tc.shards, rr.Shards, "shards")
			assert.Equal(t, tc.divergent, rr.Divergent, "divergent")
			assert.Equal(t, tc.indexes, rr.DivergentIndexes, "divergent indexes")
			assert.Equal(t, tc.lagging, rr.Lagging, "lagging")
			assert.Len(t, rr.LaggingExamples, tc.lagging)
			assert.Equal(t, tc.divergent == 0, r.OK(), "%v", r.Problems())
			if tc.example != nil {
				require.Len(t, rr.Examples, 1)
				assert.Equal(t, *tc.example, rr.Examples[0])
			} else {
				assert.Empty(t, rr.Examples)
			}
		})
	}
}

func TestCheckLaggingExample(t *testing.T) {
	h := clean()
	h.Replicas = []Replica{replica(4, 2, 3, "c", "d"), replica(4, 1, 1, "a", "b", "c", "d", "e"), {Shard: 4, Node: 3}}
	r := Check(h)
	assert.Equal(t, []Lagging{{Shard: 4, Nodes: []NodeRange{
		{Node: 1, First: 1, Last: 5}, {Node: 2, First: 3, Last: 4}, {Node: 3},
	}}}, r.Replicas.LaggingExamples)
	assert.True(t, r.OK())
}

func TestCheckDelivery(t *testing.T) {
	h := clean()
	h.Writes = append(h.Writes, unacked("p1", 4, "a", 400)) // unacked, undelivered: fine
	h.Deliveries = []Delivery{
		{Payload: Payload("p1", 1, 0)}, {Payload: Payload("p1", 1, 0)}, {Payload: Payload("p1", 1, 3)},
		{Payload: Payload("p2", 1, 0)}, {Payload: Payload("p2", 1, 0)},
		{Payload: Payload("p1", 2, 0)},
		{Payload: Payload("p2", 3, 0)},
		{Payload: []byte("junk")},
		{Payload: Payload("p7", 1, 0)},
	}
	r := Check(h)
	d := r.Delivery
	assert.Equal(t, 9, d.Deliveries)
	assert.Equal(t, 2, d.NeverDelivered)
	assert.Equal(t, []WriteRef{
		{Producer: "p1", Seq: 3, AckTime: at(300)},
		{Producer: "p2", Seq: 2, AckTime: at(250)},
	}, d.Examples)
	assert.Equal(t, 2, d.Redeliveries)
	assert.Equal(t, 3, d.Unexpected, "p1/1 with padding it was not written with is corrupt")
	assert.Equal(t, []string{"p=p1 s=1 ...", "junk", "p=p7 s=1"}, d.UnexpectedExamples)
	assert.Equal(t, []string{"2 acked writes never delivered", "3 unexpected deliveries"}, r.Problems())

	// Redeliveries alone are fine.
	h = clean()
	h.Deliveries = append(h.Deliveries, h.Deliveries...)
	r = Check(h)
	assert.True(t, r.OK(), "%v", r.Problems())
	assert.Equal(t, 6, r.Delivery.Redeliveries)
}

func TestCheckMergesRepeatedWrites(t *testing.T) {
	// A history listing p1/1 twice, first unacked then acked, knows it was
	// acked, and sent twice.
	h := clean()
	h.Writes = append([]Write{unacked("p1", 1, "a", 50)}, h.Writes...)
	h.Records = append(h.Records, rec(1, 10, "a", "p1", 1))
	r := Check(h)
	assert.Equal(t, 6, r.Totals.Writes)
	assert.Equal(t, 6, r.Totals.Acked)
	assert.Zero(t, r.Totals.UnackedFound)
	assert.Equal(t, 1, r.Duplicates.Retried)
	assert.Equal(t, 1, r.Order.LateDuplicates, "p1/1 after p1/3")
}

func TestCheckFaultWindows(t *testing.T) {
	// Acks at 0.1s, 0.2s, ... 1.0s, then 2.0s, 2.1s.
	var writes []Write
	for i := 1; i <= 10; i++ {
		writes = append(writes, acked("p1", uint64(i), "a", 100*i))
	}
	writes = append(writes, acked("p1", 11, "a", 2000), acked("p1", 12, "a", 2100))
	writes = append(writes, unacked("p1", 13, "a", 1500)) // no ack: not on the timeline
	h := History{
		Writes: writes, Records: readAll(writes), Deliveries: deliverAll(writes),
		Start: t0, End: at(3000),
		Faults: []Fault{
			// Acks at 0.3 .. 0.7 inside [0.25, 0.75]: 5 in 0.5s, gaps of
			// 0.05 at each edge and 0.1 between.
			{Kind: "pause", Target: "n1", Start: at(250), End: at(750)},
			// [0.95, 2.05]: acks at 1.0 and 2.0; the gap 1.0..2.0 is inside.
			{Kind: "partition", Target: "n1|n2,n3", Start: at(950), End: at(2050)},
			// [1.1, 1.9]: no ack at all, unavailable the whole window.
			{Kind: "kill", Target: "n2", Start: at(1100), End: at(1900)},
			// [2.1, 2.6]: an ack on the start edge, then none: the gap
			// touches the end edge.
			{Kind: "kill", Target: "n3", Start: at(2100), End: at(2600)},
			// [0, 0.15]: the gap touches the start edge.
			{Kind: "latency", Target: "n1", Start: at(0), End: at(150)},
		},
	}
	r := Check(h)
	w := r.Faults.Windows
	require.Len(t, w, 5)

	assert.Equal(t, FaultWindow{
		Kind: "pause", Target: "n1", Start: at(250), End: at(750), Duration: ms(500),
		Acked: 5, Rate: 10, LongestUnavailable: ms(100), LongestStall: ms(100),
	}, w[0])
	assert.Equal(t, 2, w[1].Acked)
	assert.Equal(t, ms(1000), w[1].LongestUnavailable)
	assert.InDelta(t, 2/1.1, w[1].Rate, 1e-9)
	assert.Equal(t, 0, w[2].Acked)
	assert.Equal(t, 0.0, w[2].Rate)
	assert.Equal(t, ms(800), w[2].LongestUnavailable)
	assert.Equal(t, 1, w[3].Acked, "an ack on the window's edge is in it")
	assert.Equal(t, ms(500), w[3].LongestUnavailable)
	assert.Equal(t, 1, w[4].Acked)
	assert.Equal(t, ms(100), w[4].LongestUnavailable)

	kinds := r.Faults.Kinds
	rates := []float64{1 / 1.3, 1 / 0.15, 2 / 1.1, 10}
	require.Len(t, kinds, len(rates))
	for i, want := range rates {
		assert.InDelta(t, want, kinds[i].Rate, 1e-9, kinds[i].Kind)
		kinds[i].Rate = 0
	}
	assert.Equal(t, []KindSummary{
		{Kind: "kill", Faults: 2, Duration: ms(1300), Acked: 1, LongestUnavailable: ms(800), LongestStall: ms(800)},
		{Kind: "latency", Faults: 1, Duration: ms(150), Acked: 1, LongestUnavailable: ms(100), LongestStall: ms(100)},
		{Kind: "partition", Faults: 1, Duration: ms(1100), Acked: 2, LongestUnavailable: ms(1000), LongestStall: ms(1000)},
		{Kind: "pause", Faults: 1, Duration: ms(500), Acked: 5, LongestUnavailable: ms(100), LongestStall: ms(100)},
	}, kinds)

	// Outside every window: [0.15, 0.25], [0.75, 0.95], [2.05, 2.1],
	// [2.6, 3.0]: 0.75s, with acks at 0.2, 0.8 and 0.9.
	assert.Equal(t, Baseline{Duration: ms(750), Acked: 3, Rate: 4}, r.Faults.Baseline)
	assert.True(t, r.OK(), "faults are measured, never problems: %v", r.Problems())
}

// A producer that gets no ack while others do stalls: its shard, or its
// link, stood still though the cluster as a whole did not.
func TestCheckFaultProducerStall(t *testing.T) {
	var writes []Write
	for i := 1; i <= 10; i++ {
		writes = append(writes, acked("p1", uint64(i), "a", 100*i)) // 0.1 .. 1.0
	}
	writes = append(writes, acked("p2", 1, "b", 150), acked("p2", 2, "b", 950))
	h := History{
		Writes: writes, Records: readAll(writes), Deliveries: deliverAll(writes),
		Start: t0, End: at(1000),
		Faults: []Fault{{Kind: "kill", Target: "n1", Start: at(200), End: at(900)}},
	}
	r := Check(h)
	require.Len(t, r.Faults.Windows, 1)
	w := r.Faults.Windows[0]
	assert.Equal(t, ms(100), w.LongestUnavailable, "p1 acked every 0.1s")
	assert.Equal(t, ms(700), w.LongestStall, "p2 got no ack in the whole window")
	assert.Equal(t, ms(700), r.Faults.Kinds[0].LongestStall)
}

func TestCheckFaultEdgeCases(t *testing.T) {
	h := clean() // acks at 0.10 .. 0.35 by 0.05, run [0, 1]
	h.Faults = []Fault{
		{Kind: "etcd", Start: at(300)},                    // open: lasts to the run's end
		{Kind: "instant", Start: at(200), End: at(200)},   // zero length
		{Kind: "backwards", Start: at(500), End: at(400)}, // End before Start: zero length
		{Kind: "etcd", Start: at(250), End: at(320)},      // overlaps the first
	}
	r := Check(h)
	w := r.Faults.Windows
	assert.Equal(t, at(1000), w[0].End)
	assert.Equal(t, ms(700), w[0].Duration)
	assert.Equal(t, 2, w[0].Acked)
	assert.Equal(t, ms(650), w[0].LongestUnavailable)
	assert.Equal(t, 1, w[1].Acked)
	assert.Zero(t, w[1].Rate, "no rate over no time")
	assert.Zero(t, w[1].LongestUnavailable)
	assert.Zero(t, w[2].Duration)
	// Outside [0.25, 1] and {0.2}: [0, 0.25), acks at 0.1, 0.15, 0.2 of
	// which 0.2 is in the zero-length window.
	assert.Equal(t, Baseline{Duration: ms(250), Acked: 2, Rate: 8}, r.Faults.Baseline)
	_, err := json.Marshal(r)
	require.NoError(t, err, "no NaN or Inf rates")
}

func TestCheckRunBoundsDefault(t *testing.T) {
	h := clean()
	h.Start, h.End = time.Time{}, time.Time{}
	h.Writes = append(h.Writes, unacked("p1", 4, "a", 900))
	r := Check(h)
	assert.Equal(t, at(99), r.Totals.Start, "the first write's Start")
	assert.Equal(t, at(900), r.Totals.End, "the last write's Start")
	assert.Equal(t, ms(801), r.Totals.Duration)
}

func TestCheckEmptyHistory(t *testing.T) {
	r := Check(History{})
	assert.True(t, r.OK())
	assert.Zero(t, r.Totals.Writes)
	_, err := json.Marshal(r)
	require.NoError(t, err)
	assert.Contains(t, r.Text(), "chaos check: OK")
}

// failing returns a history with one problem of each kind.
func failing() History {
	h := clean()
	h.Writes = append(h.Writes, acked("p1", 4, "a", 400), acked("p1", 5, "a", 410), acked("p1", 6, "a", 420))
	h.Records = append(h.Records,
		rec(1, 10, "a", "p1", 6), rec(1, 11, "a", "p1", 5), // p1/4 lost; p1/5 reordered
		rec(1, 12, "a", "p1", 2), // p1/2 duplicate, late
		Record{Shard: 3, Index: 1, Key: "a", Payload: []byte("junk")}, // split key, unexpected
	)
	h.Deliveries = append(h.Deliveries, Delivery{Payload: Payload("p1", 5, 0)}, Delivery{Payload: Payload("p1", 6, 0)}) // not p1/4
	h.Replicas[0].Entries[1].Digest = "different"
	return h
}

func TestReportJSONRoundTrip(t *testing.T) {
	r := Check(failing())
	r.Seed = 42
	require.False(t, r.OK())
	b, err := json.Marshal(r)
	require.NoError(t, err)

	var back Report
	require.NoError(t, json.Unmarshal(b, &back))
	assert.Equal(t, r, back)

	// The units are as documented.
	var raw map[string]map[string]any
	require.NoError(t, json.Unmarshal(bytes.Replace(b, []byte(`"seed":42,`), nil, 1), &raw))
	assert.Equal(t, 1.0, raw["totals"]["duration_s"])
	assert.Equal(t, "2026-03-01T12:00:00Z", raw["totals"]["start"])
	assert.Equal(t, 1.0, raw["lost"]["count"])
	assert.Contains(t, string(b), `"seed":42`)
}

func TestSecondsJSON(t *testing.T) {
	for _, d := range []time.Duration{0, 1, time.Millisecond, 1100 * time.Millisecond, 90 * time.Minute, 49*time.Hour + 7} {
		b, err := json.Marshal(Seconds(d))
		require.NoError(t, err)
		var back Seconds
		require.NoError(t, json.Unmarshal(b, &back))
		assert.Equal(t, Seconds(d), back, "%s", b)
	}
	b, _ := json.Marshal(Seconds(1500 * time.Millisecond))
	assert.Equal(t, "1.5", string(b))
	var s Seconds
	assert.Error(t, json.Unmarshal([]byte(`"1s"`), &s))
}

func TestReportText(t *testing.T) {
	r := Check(failing())
	r.Seed = 7
	text := r.Text()
	t.Log("\n" + text)
	for _, want := range []string{
		"chaos check: FAIL, 7 problems",
		"seed: 7",
		"1 acked writes lost (prefix 0, middle 1, suffix 0)",
		"1 unexpected records",
		"1 unexplained duplicate copies",
		"1 order violations (values first read after a later value of their producer)",
		"1 keys read from more than one shard",
		"1 shards with divergent replicas (1 indexes)",
		"p1        4    middle  +400ms", // the lost example, aligned
		"n1=different n2=x2 n3=x2",
		"1 acked writes never delivered",
	} {
		assert.Contains(t, text, want)
	}
	// The totals table: writes acked unacked unacked-found lost records
	// deliveries redeliveries.
	assert.Regexp(t, `(?m)^9 +9 +0 +0 +1 +10 +8 +0 *$`, text)
	// Faults by kind, and the baseline.
	assert.Regexp(t, `(?m)^kill +1 +100ms +20\.0 +50ms +80ms *$`, text)
	assert.Regexp(t, `(?m)^\(no fault\) +- +900ms +7\.8 +- +- *$`, text)

	ok := Check(clean())
	text = ok.Text()
	assert.Contains(t, text, "chaos check: OK")
	assert.NotContains(t, text, "problems")
}

func ms(n int) Seconds { return Seconds(time.Duration(n) * time.Millisecond) }

// BenchmarkCheck checks a history of 200k writes, each read back and
// delivered once, on 100 keys.
func BenchmarkCheck(b *testing.B) {
	const producers, per = 20, 10_000
	var h History
	h.Start = t0
	for p := range producers {
		name := fmt.Sprintf("p%d", p)
		for seq := uint64(1); seq <= per; seq++ {
			key := fmt.Sprintf("k%d", (p*7+int(seq))%100)
			h.Writes = append(h.Writes, Write{
				Producer: name, Seq: seq, Key: key, Start: at(int(seq)), Acked: true, AckTime: at(int(seq) + 1), Attempts: 1,
			})
		}
	}
	for i, w := range h.Writes {
		h.Records = append(h.Records, Record{Shard: 1, Index: uint64(i), Key: w.Key, Payload: Payload(w.Producer, w.Seq, 16)})
		h.Deliveries = append(h.Deliveries, Delivery{Payload: Payload(w.Producer, w.Seq, 16)})
	}
	h.Faults = []Fault{{Kind: "kill", Start: at(1000), End: at(2000)}}
	b.ReportAllocs()
	for b.Loop() {
		if r := Check(h); !r.OK() {
			b.Fatal(r.Problems())
		}
	}
}
