package chaos

import (
	"fmt"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
)

// Text returns a compact summary of r for people: the verdict, the totals,
// throughput per fault kind against the baseline, then each problem with
// its examples. Times in examples are offsets from the run's start.
func (r *Report) Text() string {
	var b strings.Builder
	problems := r.Problems()
	if len(problems) == 0 {
		b.WriteString("chaos check: OK\n")
	} else {
		fmt.Fprintf(&b, "chaos check: FAIL, %d problems\n", len(problems))
	}
	t := r.Totals
	if !t.Start.IsZero() {
		fmt.Fprintf(&b, "run: %s from %s\n", t.Duration, t.Start.Format(time.RFC3339))
	}
	if r.Seed != 0 {
		fmt.Fprintf(&b, "seed: %d\n", r.Seed)
	}
	b.WriteString("\n")

	table(&b, "", [][]string{
		{"writes", "acked", "unacked", "unacked found", "lost", "records", "deliveries", "redeliveries"},
		{itoa(t.Writes), itoa(t.Acked), itoa(t.Unacked), itoa(t.UnackedFound), itoa(t.Lost),
			itoa(t.Records), itoa(t.Deliveries), itoa(r.Delivery.Redeliveries)},
	})
	b.WriteString("\n")

	rows := [][]string{{"fault", "count", "time", "acked/s", "longest unavailable", "longest producer stall"}}
	for _, k := range r.Faults.Kinds {
		rows = append(rows, []string{k.Kind, itoa(k.Faults), k.Duration.String(), ftoa(k.Rate), k.LongestUnavailable.String(), k.LongestStall.String()})
	}
	base := r.Faults.Baseline
	rows = append(rows, []string{"(no fault)", "-", base.Duration.String(), ftoa(base.Rate), "-", "-"})
	table(&b, "", rows)
	b.WriteString("\n")

	rr, d := r.Replicas, r.Duplicates
	fmt.Fprintf(&b, "replicas: %d shards compared, %d divergent, %d lagging\n", rr.Shards, rr.Divergent, rr.Lagging)
	fmt.Fprintf(&b, "duplicates: %d extra copies, %d retried, %d unexplained; %d read after a later value (late)\n",
		d.Extra, d.Retried, d.Unexplained, r.Order.LateDuplicates)

	if len(problems) == 0 {
		return b.String()
	}
	b.WriteString("\nproblems:\n")
	for _, p := range problems {
		fmt.Fprintf(&b, "- %s\n", p)
	}
	r.writeExamples(&b)
	return b.String()
}

// writeExamples writes a table of examples for each kind of problem found.
func (r *Report) writeExamples(b *strings.Builder) {
	at := func(t time.Time) string {
		if t.IsZero() {
			return "-"
		}
		if r.Totals.Start.IsZero() {
			return t.Format(time.RFC3339Nano)
		}
		return "+" + t.Sub(r.Totals.Start).String()
	}
	examples := func(title string, rows [][]string) {
		if len(rows) < 2 {
			return
		}
		fmt.Fprintf(b, "\n%s:\n", title)
		table(b, "  ", rows)
	}

	rows := [][]string{{"producer", "seq", "class", "acked at"}}
	for _, e := range r.Lost.Examples {
		rows = append(rows, []string{e.Producer, utoa(e.Seq), e.Class, at(e.AckTime)})
	}
	examples("lost", rows)

	rows = [][]string{{"shard", "index", "key", "why", "payload"}}
	for _, e := range r.Unexpected.Examples {
		rows = append(rows, []string{utoa(e.Shard), utoa(e.Index), e.Key, e.Why, e.Payload})
	}
	examples("unexpected records", rows)

	rows = [][]string{{"producer", "seq", "copies", "attempts"}}
	for _, e := range r.Duplicates.Examples {
		rows = append(rows, []string{e.Producer, utoa(e.Seq), itoa(e.Copies), itoa(e.Attempts)})
	}
	examples("unexplained duplicates", rows)

	rows = [][]string{{"key", "shard", "index", "producer", "seq", "after", "kind"}}
	for _, e := range r.Order.Examples {
		kind := "reorder"
		if e.LateDuplicate {
			kind = "late duplicate"
		}
		rows = append(rows, []string{e.Key, utoa(e.Shard), utoa(e.Index), e.Producer, utoa(e.Seq), utoa(e.After), kind})
	}
	examples("order violations", rows)

	rows = [][]string{{"key", "shards"}}
	for _, e := range r.Order.SplitExamples {
		shards := make([]string, len(e.Shards))
		for i, s := range e.Shards {
			shards[i] = utoa(s)
		}
		rows = append(rows, []string{e.Key, strings.Join(shards, ",")})
	}
	examples("split keys", rows)

	rows = [][]string{{"shard", "range", "divergent", "first at", "digests"}}
	for _, e := range r.Replicas.Examples {
		digests := make([]string, len(e.Digests))
		for i, nd := range e.Digests {
			d := nd.Digest
			switch {
			case d == "":
				d = "missing"
			case len(d) > 12:
				d = d[:12]
			}
			digests[i] = "n" + utoa(nd.Node) + "=" + d
		}
		rows = append(rows, []string{utoa(e.Shard), utoa(e.First) + ".." + utoa(e.Last), itoa(e.Indexes),
			utoa(e.Index), strings.Join(digests, " ")})
	}
	examples("divergent replicas", rows)

	rows = [][]string{{"producer", "seq", "acked at"}}
	for _, e := range r.Delivery.Examples {
		rows = append(rows, []string{e.Producer, utoa(e.Seq), at(e.AckTime)})
	}
	examples("never delivered", rows)

	rows = [][]string{{"payload"}}
	for _, p := range r.Delivery.UnexpectedExamples {
		rows = append(rows, []string{p})
	}
	examples("unexpected deliveries", rows)
}

// table writes rows as aligned columns, each line prefixed with indent.
func table(b *strings.Builder, indent string, rows [][]string) {
	tw := tabwriter.NewWriter(b, 0, 4, 2, ' ', 0)
	for _, row := range rows {
		fmt.Fprintf(tw, "%s%s\n", indent, strings.Join(row, "\t"))
	}
	tw.Flush() // writes to a strings.Builder cannot fail
}

func itoa(n int) string     { return strconv.Itoa(n) }
func utoa(n uint64) string  { return strconv.FormatUint(n, 10) }
func ftoa(f float64) string { return strconv.FormatFloat(f, 'f', 1, 64) }
