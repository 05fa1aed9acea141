package wire

import (
	"errors"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/weir-log/weir/api/hstreampb"
)

func rid(shard, batch uint64, index uint32) *hstreampb.RecordId {
	return &hstreampb.RecordId{ShardId: shard, BatchId: batch, BatchIndex: index}
}

func TestRecordIDRoundTrip(t *testing.T) {
	for _, tc := range []struct {
		id   *hstreampb.RecordId
		text string
	}{
		{rid(0, 0, 0), "0-0-0"},
		{rid(1, 2, 3), "1-2-3"},
		{rid(1000, 78120, 99), "1000-78120-99"},
		{rid(18446744073709551615, 18446744073709551615, 4294967295), "18446744073709551615-18446744073709551615-4294967295"},
	} {
		if got := FormatRecordID(tc.id); got != tc.text {
			t.Errorf("FormatRecordID(%v) = %q, want %q", tc.id, got, tc.text)
		}
		got, err := ParseRecordID(tc.text)
		if err != nil {
			t.Fatalf("ParseRecordID(%q): %v", tc.text, err)
		}
		if CompareRecordID(got, tc.id) != 0 {
			t.Errorf("ParseRecordID(%q) = %v, want %v", tc.text, got, tc.id)
		}
	}
	if got := FormatRecordID(nil); got != "0-0-0" {
		t.Errorf("FormatRecordID(nil) = %q", got)
	}
}

func TestParseRecordIDLeadingZeros(t *testing.T) {
	got, err := ParseRecordID("01-002-0003")
	if err != nil || CompareRecordID(got, rid(1, 2, 3)) != 0 {
		t.Fatalf("ParseRecordID(01-002-0003) = %v, %v", got, err)
	}
}

func TestParseRecordIDInvalid(t *testing.T) {
	for _, tc := range []struct{ text, want string }{
		{"", "want <shardId>-<batchId>-<batchIndex>"},
		{"1", "want <shardId>"},
		{"1-2", "want <shardId>"},
		{"1-2-3-4", "want <shardId>"},
		{"-1-2-3", "want <shardId>"},
		{"1--3", "batchId is empty"},
		{"-2-3", "shardId is empty"},
		{"1-2-", "batchIndex is empty"},
		{"a-2-3", `shardId "a" is not unsigned decimal`},
		{"+1-2-3", `shardId "+1" is not unsigned decimal`},
		{" 1-2-3", "is not unsigned decimal"},
		{"1-2-3 ", `batchIndex "3 " is not unsigned decimal`},
		{"1-2_0-3", "batchId"},
		{"1-0x2-3", "batchId"},
		{"1-2-4294967296", `batchIndex "4294967296" overflows uint32`},
		{"1-18446744073709551616-0", `batchId "18446744073709551616" overflows uint64`},
		{"18446744073709551616-1-0", "shardId"},
		{"1-2-３", "batchIndex"},
	} {
		id, err := ParseRecordID(tc.text)
		if id != nil || !errors.Is(err, ErrInvalidRecordID) {
			t.Errorf("ParseRecordID(%q) = %v, %v; want ErrInvalidRecordID", tc.text, id, err)
			continue
		}
		if !strings.Contains(err.Error(), strconv.Quote(tc.text)) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("ParseRecordID(%q) error %q: want the quoted text and %q", tc.text, err, tc.want)
		}
	}
}

func TestCompareRecordID(t *testing.T) {
	for _, tc := range []struct {
		a, b *hstreampb.RecordId
		want int
	}{
		{rid(1, 2, 3), rid(1, 2, 3), 0},
		{rid(1, 2, 3), rid(1, 2, 4), -1},
		{rid(1, 3, 0), rid(1, 2, 9), 1},
		{rid(2, 0, 0), rid(1, 9, 9), 1},
		{rid(1, 18446744073709551615, 0), rid(2, 0, 0), -1},
		{nil, rid(0, 0, 0), 0},
		{nil, rid(0, 0, 1), -1},
	} {
		if got := CompareRecordID(tc.a, tc.b); got != tc.want {
			t.Errorf("CompareRecordID(%v, %v) = %d, want %d", tc.a, tc.b, got, tc.want)
		}
		if got := CompareRecordID(tc.b, tc.a); got != -tc.want {
			t.Errorf("CompareRecordID(%v, %v) = %d, want %d", tc.b, tc.a, got, -tc.want)
		}
	}
	ids := []*hstreampb.RecordId{rid(2, 1, 0), rid(1, 5, 2), rid(1, 5, 0), rid(1, 4, 9), rid(0, 9, 9)}
	slices.SortFunc(ids, CompareRecordID)
	var got []string
	for _, id := range ids {
		got = append(got, FormatRecordID(id))
	}
	if want := "0-9-9 1-4-9 1-5-0 1-5-2 2-1-0"; strings.Join(got, " ") != want {
		t.Errorf("sorted = %v, want %s", got, want)
	}
}
