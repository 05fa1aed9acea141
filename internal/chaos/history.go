package chaos

import (
	"bytes"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Write is one value a producer tried to append: producer Producer's Seq-th
// value (Seq from 1, increasing, no gaps), with partition key Key, over Via
// ("grpc" or "mqtt").
type Write struct {
	Producer string
	Seq      uint64
	Key      string
	Via      string
	Start    time.Time // first attempt
	Acked    bool      // the producer got a success ack
	AckTime  time.Time // when (zero if not acked)
	Attempts int       // sends of this value (>1: the client retried; duplicates are then allowed)
}

// Record is one record read back from a shard after healing, in the shard's
// log order.
type Record struct {
	Shard   uint64
	Index   uint64 // position within the shard log (strictly increasing per shard as given)
	Key     string
	Payload []byte
}

// Delivery is one record the subscription consumer received (possibly
// redelivered).
type Delivery struct {
	Payload []byte
	Time    time.Time
}

// Replica is one node's copy of one shard: entries in index order, compared
// across nodes.
type Replica struct {
	Shard, Node uint64
	Entries     []ReplicaEntry
}

// ReplicaEntry is one entry of a Replica.
type ReplicaEntry struct {
	Index  uint64
	Digest string // e.g. hex sha256 of the raw entry, computed by the caller
}

// Fault is one fault window injected by the nemesis. A zero End means the
// fault lasted to the end of the run.
type Fault struct {
	Kind   string
	Target string
	Start  time.Time
	End    time.Time
}

// History is everything a chaos run recorded, as Check takes it.
type History struct {
	Writes     []Write
	Records    []Record // the final read of every shard
	Deliveries []Delivery
	Replicas   []Replica
	Faults     []Fault
	// Pad is the padding every value was written with (Payload's pad): a
	// record or delivery must be exactly Payload(producer, seq, Pad) and
	// carry its write's key, or it is unexpected (corrupt, or misrouted).
	Pad int
	// Start and End bound the workload's run. When zero, Check uses the
	// earliest and the latest of the writes' Start and AckTime.
	Start, End time.Time
}

// Payload returns the payload of producer's seq-th value, "p=<producer>
// s=<seq>", followed, when pad > 0, by a space and pad '.' bytes so that
// records can be given a realistic size. The producer name must be
// non-empty and contain no space, or Payload panics: such a name could not
// be parsed back.
func Payload(producer string, seq uint64, pad int) []byte {
	if producer == "" || strings.IndexByte(producer, ' ') >= 0 {
		panic(fmt.Sprintf("chaos: producer name %q is empty or has a space", producer))
	}
	n := 2 + len(producer) + 3 + 20
	if pad > 0 {
		n += 1 + pad
	}
	b := make([]byte, 0, n)
	b = append(b, "p="...)
	b = append(b, producer...)
	b = append(b, " s="...)
	b = strconv.AppendUint(b, seq, 10)
	if pad > 0 {
		b = append(b, ' ')
		b = append(b, bytes.Repeat([]byte{'.'}, pad)...)
	}
	return b
}

// ParsePayload parses a payload made by Payload. Anything after a space
// that follows the seq is padding and is ignored. ok is false when b is not
// of that form: a missing "p=" or " s=", an empty producer, or a seq that is
// not a decimal uint64 as Payload writes it (no sign, no leading zero).
func ParsePayload(b []byte) (producer string, seq uint64, ok bool) {
	p, seq, ok := parsePayload(b)
	if !ok {
		return "", 0, false
	}
	return string(p), seq, true
}

// parsePayload is ParsePayload without the allocation of the producer name,
// so that Check can look it up with a map index on string(p).
func parsePayload(b []byte) (producer []byte, seq uint64, ok bool) {
	rest, found := bytes.CutPrefix(b, []byte("p="))
	if !found {
		return nil, 0, false
	}
	producer, rest, found = bytes.Cut(rest, []byte{' '})
	if !found || len(producer) == 0 {
		return nil, 0, false
	}
	rest, found = bytes.CutPrefix(rest, []byte("s="))
	if !found {
		return nil, 0, false
	}
	digits, _, _ := bytes.Cut(rest, []byte{' '})
	if len(digits) == 0 || len(digits) > 20 || (digits[0] == '0' && len(digits) > 1) {
		return nil, 0, false // empty, too long, or not canonical
	}
	for _, c := range digits {
		if c < '0' || c > '9' {
			return nil, 0, false
		}
		d := uint64(c - '0')
		if seq > (^uint64(0)-d)/10 {
			return nil, 0, false // overflow
		}
		seq = seq*10 + d
	}
	return producer, seq, true
}
