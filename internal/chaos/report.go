package chaos

import (
	"fmt"
	"math"
	"strconv"
	"time"
)

// MaxExamples bounds every list of examples in a Report, so that a run
// that loses a million writes still gives a small report.
const MaxExamples = 10

// Classes of a lost write; see the package documentation.
const (
	LostPrefix = "prefix"
	LostMiddle = "middle"
	LostSuffix = "suffix"
)

// Report is what Check found. It marshals with encoding/json as is: times
// are RFC 3339 strings, durations (type Seconds) are numbers of seconds,
// rates are acked writes per second.
type Report struct {
	// Seed is not set by Check: a caller may record here the seed of the
	// fault schedule, so that the report says how to rerun it.
	Seed uint64 `json:"seed,omitempty"`

	Totals     Totals           `json:"totals"`
	Lost       LostReport       `json:"lost"`
	Unexpected UnexpectedReport `json:"unexpected"`
	Duplicates DuplicateReport  `json:"duplicates"`
	Order      OrderReport      `json:"order"`
	Replicas   ReplicaReport    `json:"replicas"`
	Delivery   DeliveryReport   `json:"delivery"`
	Faults     FaultReport      `json:"faults"`
}

// Totals counts what the history holds.
type Totals struct {
	Start    time.Time `json:"start"`
	End      time.Time `json:"end"`
	Duration Seconds   `json:"duration_s"`
	// Writes counts distinct (producer, seq) pairs attempted; Acked and
	// Unacked split them.
	Writes  int `json:"writes"`
	Acked   int `json:"acked"`
	Unacked int `json:"unacked"`
	// Lost is Lost.Count, repeated here for the summary.
	Lost int `json:"lost"`
	// UnackedFound counts unacked writes found in the final read:
	// indeterminate writes that landed, which is allowed.
	UnackedFound int `json:"unacked_found"`
	Records      int `json:"records"`
	Deliveries   int `json:"deliveries"`
}

// WriteRef names one write in examples.
type WriteRef struct {
	Producer string    `json:"producer"`
	Seq      uint64    `json:"seq"`
	AckTime  time.Time `json:"ack_time"`
}

// LostReport counts acked writes missing from the final read. Examples
// are the first lost writes in (producer, seq) order, as are those of
// DeliveryReport.
type LostReport struct {
	Count    int         `json:"count"`
	Prefix   int         `json:"prefix"`
	Middle   int         `json:"middle"`
	Suffix   int         `json:"suffix"`
	Examples []LostWrite `json:"examples,omitempty"`
}

// LostWrite is an example of a lost write, with its class (LostPrefix,
// LostMiddle or LostSuffix).
type LostWrite struct {
	WriteRef
	Class string `json:"class"`
}

// UnexpectedReport counts records that no producer attempted: a payload
// that does not parse, or a (producer, seq) never attempted.
type UnexpectedReport struct {
	Count    int                `json:"count"`
	Examples []UnexpectedRecord `json:"examples,omitempty"`
}

// UnexpectedRecord is an example of an unexpected record. Payload holds at
// most the first 64 bytes, escaped as in a Go string literal without the
// quotes.
type UnexpectedRecord struct {
	Shard   uint64 `json:"shard"`
	Index   uint64 `json:"index"`
	Key     string `json:"key"`
	Payload string `json:"payload"`
	// Why: not a value, unknown producer, never written, corrupt (not the
	// bytes written), or the wrong key.
	Why string `json:"why"`
}

// DuplicateReport counts extra copies of a (producer, seq) in the final
// read: a value read three times counts 2. Retried copies are of writes the
// client sent more than once; Unexplained ones are not.
type DuplicateReport struct {
	Extra       int `json:"extra"`
	Retried     int `json:"retried"`
	Unexplained int `json:"unexplained"`
	// Examples are of unexplained duplicates only.
	Examples []Duplicate `json:"examples,omitempty"`
}

// Duplicate is an example of a value read more than once.
type Duplicate struct {
	Producer string `json:"producer"`
	Seq      uint64 `json:"seq"`
	Copies   int    `json:"copies"`
	Attempts int    `json:"attempts"`
}

// OrderReport counts records that break a producer's order on a key, and
// keys whose records lie in more than one shard.
type OrderReport struct {
	// Violations are reorders: a value read, for the first time, after a
	// later value of its producer on the same key.
	Violations int `json:"violations"`
	// LateDuplicates are extra copies read after a later value: a retry's
	// first send that landed late. Not a problem for a retried write (its
	// copies are counted in DuplicateReport either way).
	LateDuplicates int              `json:"late_duplicates"`
	Examples       []OrderViolation `json:"examples,omitempty"`
	SplitKeys      int              `json:"split_keys"`
	SplitExamples  []SplitKey       `json:"split_examples,omitempty"`
}

// OrderViolation is an example of a record whose seq is lower than After,
// the highest seq of the same producer seen before it on the same key and
// shard.
type OrderViolation struct {
	Key           string `json:"key"`
	Shard         uint64 `json:"shard"`
	Index         uint64 `json:"index"`
	Producer      string `json:"producer"`
	Seq           uint64 `json:"seq"`
	After         uint64 `json:"after"`
	LateDuplicate bool   `json:"late_duplicate"`
}

// SplitKey is an example of a key read from more than one shard.
type SplitKey struct {
	Key    string   `json:"key"`
	Shards []uint64 `json:"shards"`
}

// ReplicaReport compares the nodes' copies of each shard.
type ReplicaReport struct {
	// Shards counts shards with at least two replicas to compare.
	Shards int `json:"shards"`
	// Divergent counts shards whose replicas differ inside their common
	// range, DivergentIndexes the indexes where they do.
	Divergent        int          `json:"divergent"`
	DivergentIndexes int          `json:"divergent_indexes"`
	Examples         []Divergence `json:"examples,omitempty"`
	// Lagging counts shards whose replicas end at different indexes; it is
	// informational, not a problem.
	Lagging         int       `json:"lagging"`
	LaggingExamples []Lagging `json:"lagging_examples,omitempty"`
}

// Divergence is an example of a divergent shard: how many indexes of its
// common range [First, Last] differ, and the nodes' digests at the first
// of them, Index.
type Divergence struct {
	Shard   uint64       `json:"shard"`
	First   uint64       `json:"first"`
	Last    uint64       `json:"last"`
	Indexes int          `json:"indexes"`
	Index   uint64       `json:"index"`
	Digests []NodeDigest `json:"digests"`
}

// NodeDigest is one node's digest of an entry; Digest is empty when the
// node lacks the entry.
type NodeDigest struct {
	Node   uint64 `json:"node"`
	Digest string `json:"digest"`
}

// Lagging is an example of a shard whose replicas end at different
// indexes.
type Lagging struct {
	Shard uint64      `json:"shard"`
	Nodes []NodeRange `json:"nodes"`
}

// NodeRange is the range of indexes one node holds of a shard; both are 0
// when it holds none.
type NodeRange struct {
	Node  uint64 `json:"node"`
	First uint64 `json:"first"`
	Last  uint64 `json:"last"`
}

// DeliveryReport compares what the subscription delivered with what was
// acked.
type DeliveryReport struct {
	Deliveries int `json:"deliveries"`
	// NeverDelivered counts acked writes never delivered.
	NeverDelivered int        `json:"never_delivered"`
	Examples       []WriteRef `json:"examples,omitempty"`
	// Redeliveries counts deliveries beyond the first of each value.
	Redeliveries int `json:"redeliveries"`
	// Unexpected counts deliveries of values no producer attempted.
	Unexpected         int      `json:"unexpected"`
	UnexpectedExamples []string `json:"unexpected_examples,omitempty"`
}

// FaultReport measures acked throughput and unavailability in each fault
// window, per fault kind, and outside every fault.
type FaultReport struct {
	Baseline Baseline      `json:"baseline"`
	Kinds    []KindSummary `json:"kinds"`
	Windows  []FaultWindow `json:"windows"`
}

// Baseline is the acked throughput over the run's time outside every fault
// window.
type Baseline struct {
	Duration Seconds `json:"duration_s"`
	Acked    int     `json:"acked"`
	Rate     float64 `json:"rate"`
}

// FaultWindow is what happened during one fault. Acked counts acks whose
// time lies in [Start, End]; LongestUnavailable is the longest interval
// within it without an ack.
type FaultWindow struct {
	Kind               string    `json:"kind"`
	Target             string    `json:"target"`
	Start              time.Time `json:"start"`
	End                time.Time `json:"end"`
	Duration           Seconds   `json:"duration_s"`
	Acked              int       `json:"acked"`
	Rate               float64   `json:"rate"`
	LongestUnavailable Seconds   `json:"longest_unavailable_s"`
	// LongestStall is the longest time in the window in which one
	// producer got no ack, the longest of any producer.
	LongestStall Seconds `json:"longest_stall_s"`
}

// KindSummary sums the windows of one fault kind. Rate is acks over total
// duration (time-weighted), LongestUnavailable the longest of any window.
type KindSummary struct {
	Kind               string  `json:"kind"`
	Faults             int     `json:"faults"`
	Duration           Seconds `json:"duration_s"`
	Acked              int     `json:"acked"`
	Rate               float64 `json:"rate"`
	LongestUnavailable Seconds `json:"longest_unavailable_s"`
	LongestStall       Seconds `json:"longest_stall_s"`
}

// Seconds is a time.Duration that marshals to JSON as a number of seconds.
type Seconds time.Duration

// String formats s as time.Duration does, to the millisecond.
func (s Seconds) String() string { return time.Duration(s).Round(time.Millisecond).String() }

// MarshalJSON writes s as a number of seconds.
func (s Seconds) MarshalJSON() ([]byte, error) {
	return strconv.AppendFloat(nil, time.Duration(s).Seconds(), 'f', -1, 64), nil
}

// UnmarshalJSON reads a number of seconds, to the nearest nanosecond.
func (s *Seconds) UnmarshalJSON(b []byte) error {
	f, err := strconv.ParseFloat(string(b), 64)
	if err != nil {
		return fmt.Errorf("chaos: duration %s is not a number of seconds: %w", b, err)
	}
	*s = Seconds(math.Round(f * 1e9))
	return nil
}

// OK reports whether the run found no problem: nothing lost, no unexpected
// record or delivery, no unexplained duplicate, no order violation or split
// key, no divergent replica, nothing acked left undelivered.
func (r *Report) OK() bool { return len(r.Problems()) == 0 }

// Problems lists, one sentence each, why the report is not OK; it is empty
// when it is.
func (r *Report) Problems() []string {
	var p []string
	if l := r.Lost; l.Count > 0 {
		p = append(p, fmt.Sprintf("%d acked writes lost (prefix %d, middle %d, suffix %d)",
			l.Count, l.Prefix, l.Middle, l.Suffix))
	}
	if n := r.Unexpected.Count; n > 0 {
		p = append(p, fmt.Sprintf("%d unexpected records", n))
	}
	if d := r.Duplicates; d.Unexplained > 0 {
		p = append(p, fmt.Sprintf("%d unexplained duplicate copies (of writes sent once)", d.Unexplained))
	}
	if o := r.Order; o.Violations > 0 {
		p = append(p, fmt.Sprintf("%d order violations (values first read after a later value of their producer)", o.Violations))
	}
	if n := r.Order.SplitKeys; n > 0 {
		p = append(p, fmt.Sprintf("%d keys read from more than one shard", n))
	}
	if rr := r.Replicas; rr.Divergent > 0 {
		p = append(p, fmt.Sprintf("%d shards with divergent replicas (%d indexes)", rr.Divergent, rr.DivergentIndexes))
	}
	if n := r.Delivery.NeverDelivered; n > 0 {
		p = append(p, fmt.Sprintf("%d acked writes never delivered", n))
	}
	if n := r.Delivery.Unexpected; n > 0 {
		p = append(p, fmt.Sprintf("%d unexpected deliveries", n))
	}
	return p
}
