package cellar

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math"
	"strings"
	"testing"
	"time"
)

// marshalReference is how Cell.MarshalJSON encoded a cell before it
// appended the fields itself: through encoding/json, HTML escaping off.
func marshalReference(c Cell) ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(struct {
		Key
		Shard     int             `json:"shard"`
		AddedID   int64           `json:"added_id"`
		CreatedAt string          `json:"created_at"`
		Body      json.RawMessage `json:"body,omitempty"`
	}{c.Key, c.Shard, c.AddedID, FormatTime(c.CreatedAt), c.Body}); err != nil {
		return nil, err
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n")), nil
}

// checkMarshal checks that c encodes as marshalReference encodes it, and
// fails alike if the reference fails; and, through a json.Encoder (as the
// HTTP server encodes a batch), that the output needs no compacting.
func checkMarshal(t *testing.T, c Cell) {
	t.Helper()
	got, err := c.MarshalJSON()
	want, wantErr := marshalReference(c)
	if (err != nil) != (wantErr != nil) {
		t.Fatalf("MarshalJSON(%+v) error = %v; reference error = %v", c, err, wantErr)
	}
	if err != nil {
		return
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("MarshalJSON(%+v) =\n%s\nwant\n%s", c, got, want)
	}
	var compact bytes.Buffer
	if err := json.Compact(&compact, got); err != nil || !bytes.Equal(compact.Bytes(), got) {
		t.Fatalf("MarshalJSON(%+v) = %s is not compact JSON (%v)", c, got, err)
	}
}

func TestCellMarshalJSON(t *testing.T) {
	base := Cell{
		Key:       Key{RowKey: "user/42", Column: "profile", RefKey: 7},
		Shard:     1234,
		AddedID:   981,
		CreatedAt: time.Date(2026, 11, 21, 19, 37, 29, 617_000_000, time.UTC),
		Body:      json.RawMessage(`{"name":"Ann","balance":12345678901234567890}`),
	}
	// The API's documented example, byte for byte.
	got, err := base.MarshalJSON()
	if want := `{"row_key":"user/42","column":"profile","ref_key":7,"shard":1234,"added_id":981,"created_at":"2026-11-21T19:37:29.617Z","body":{"name":"Ann","balance":12345678901234567890}}`; err != nil || string(got) != want {
		t.Errorf("MarshalJSON = %s, %v; want %s", got, err, want)
	}

	bodies := []string{
		`{}`,
		`{"html":"<script>alert('x')</script> & more"}`,
		`{"a":"\u003c\u003e\u0026"}`,
		`{"unicode":"żółć 東京 😀","sep":"\u2028\u2029","raw":" "}`,
		`{"big":123456789012345678901234567890,"exp":1e400,"neg":-0.0e-7,"f":3.141592653589793238462643383279}`,
		"{ \"spaced\" :\t[1, 2,\n 3 ] ,\r\n \"x\" : { } }",
		`  {"lead":"and trail"}  `,
		`{"nested":{"a":[{"b":[null,true,false]}]},"esc":"\"\\\/\b\f\n\r\t"}`,
		`[1,2,3]`,
		`"just a string"`,
		`{"invalid":`,
		`{"a":1}{"b":2}`,
		`not json`,
	}
	for _, b := range bodies {
		c := base
		c.Body = json.RawMessage(b)
		checkMarshal(t, c)
	}
	c := base
	c.Body = nil
	checkMarshal(t, c)
	c.Body = json.RawMessage{}
	checkMarshal(t, c)

	keys := []string{
		"", "plain", "with space", `quote"d`, `back\slash`, "a/b", "<>&", "\x7f", "tab\there", "nl\n", "\x00\x01\x1f",
		"żółć", "東京", "😀", "\u2028\u2029", "\xff\xfe invalid utf-8", "\xe2\x80", strings.Repeat("k", 1024),
	}
	for _, k := range keys {
		c := base
		c.RowKey = k
		checkMarshal(t, c)
		c = base
		c.Column = k
		checkMarshal(t, c)
	}

	numbers := []int64{0, 1, -1, math.MaxInt64, math.MinInt64, 1 << 53}
	for _, n := range numbers {
		c := base
		c.RefKey, c.AddedID, c.Shard = n, n, int(n)
		checkMarshal(t, c)
	}

	berlin := time.FixedZone("CET", 3600)
	times := []time.Time{
		{},
		time.Unix(0, 0),
		time.UnixMilli(1763700000123),
		time.Date(2026, 11, 21, 19, 37, 29, 999_999_999, time.UTC), // truncated, not rounded
		time.Date(2026, 11, 21, 20, 37, 29, 617_000_000, berlin),   // shown in UTC
		time.Date(1, 1, 1, 0, 0, 0, 0, time.UTC),
		time.Date(9999, 12, 31, 23, 59, 59, 999_000_000, time.UTC),
		time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC),
		time.Date(-5, 3, 1, 0, 0, 0, 0, time.UTC),
		time.Date(2026, 1, 1, 0, 0, 0, 0, time.Local),
		time.Unix(math.MaxInt64/1000, 0),
	}
	for _, tm := range times {
		c := base
		c.CreatedAt = tm
		checkMarshal(t, c)
	}
}

// FuzzCellMarshalJSON compares MarshalJSON with encoding/json on arbitrary
// keys, numbers, times and bodies.
func FuzzCellMarshalJSON(f *testing.F) {
	f.Add("user/42", "profile", int64(7), 1234, int64(981), int64(1763700000123), int64(0), []byte(`{"a":"<&>"}`))
	f.Add("\xff", "\u2028", int64(-1), -1, int64(math.MaxInt64), int64(-62135596800000), int64(999), []byte(" [1, 2] "))
	f.Add("东", `"\`, int64(0), 0, int64(0), int64(253402300800000), int64(1), []byte(`{"x":1e999}`))
	f.Add("", "", int64(1), 1, int64(1), int64(0), int64(0), []byte(nil))
	f.Fuzz(func(t *testing.T, row, col string, ref int64, shard int, added, ms, ns int64, body []byte) {
		c := Cell{
			Key:       Key{RowKey: row, Column: col, RefKey: ref},
			Shard:     shard,
			AddedID:   added,
			CreatedAt: time.UnixMilli(ms).Add(time.Duration(ns % 1e6)),
			Body:      body,
		}
		checkMarshal(t, c)
	})
}

func benchCell() Cell {
	return Cell{
		Key:       Key{RowKey: "row-000042", Column: "c", RefKey: 2},
		Shard:     1234,
		AddedID:   981,
		CreatedAt: time.UnixMilli(1763700000123).UTC(),
		Body:      json.RawMessage(`{"event":"page_view","user":"u-00000042","session":"9e3779b97f4a7c15","ts":1763700000042,"path":"/products/000042/reviews","referrer":"https://example.com/search?q=cellar+bench","tags":["bench","cellar"],"score":42}`),
	}
}

func BenchmarkCellMarshalJSON(b *testing.B) {
	c := benchCell()
	b.Run("append", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := c.MarshalJSON(); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("encoding-json", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := marshalReference(c); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// TestFillBatchGet guards FillBatchGet's rounds: a cell a part left out is
// asked for again when the whole answer left out a cell the part had
// counted before it, and not otherwise (a single part's answer is final:
// asking again would read the same bodies again for nothing), and a fetch
// that answers nothing new ends the rounds.
func TestFillBatchGet(t *testing.T) {
	const mib = 1 << 20
	cell := func(n int) GetResult { return GetResult{Cell: &Cell{Body: make([]byte, n)}} }
	out := GetResult{Err: BatchBytesError()}
	type key struct {
		part string
		res  GetResult // the first call's answer
		size int       // the cell's size, for a fetch
	}
	run := func(ks []key) (answered string, asked [][]string) {
		keys := make([]LookupKey, len(ks))
		res := make([]GetResult, len(ks))
		sizes := map[string]int{}
		for i, k := range ks {
			keys[i] = LookupKey{RowKey: string(rune('a' + i)), Column: "c"}
			res[i] = k.res
			sizes[keys[i].RowKey] = k.size
		}
		fetch := func(_ context.Context, again []LookupKey) []GetResult {
			var names []string
			r := make([]GetResult, len(again))
			for i, k := range again {
				names = append(names, k.RowKey)
				if n := sizes[k.RowKey]; n > 0 {
					r[i] = cell(n)
				} else {
					r[i] = out // a stubborn fetch
				}
			}
			asked = append(asked, names)
			return r
		}
		for _, r := range FillBatchGet(context.Background(), keys, res, func(i int) string { return ks[i].part }, fetch) {
			if r.Cell != nil {
				answered += "y"
			} else {
				answered += "n"
			}
		}
		return answered, asked
	}
	for _, c := range []struct {
		name   string
		keys   []key
		want   string
		rounds int
	}{
		// Node A counted c (9.5) and left out d; the whole answer left c
		// out, so d (1) fits beside a (6) and b (8).
		{"two nodes", []key{{"A", cell(6 * mib), 0}, {"B", cell(8 * mib), 0}, {"A", cell(19 * mib / 2), 0}, {"A", out, 1 * mib}}, "yyny", 1},
		// One node: its bound was the whole answer's; d is not asked.
		{"one node", []key{{"A", cell(6 * mib), 0}, {"A", cell(8 * mib), 0}, {"A", out, 1 * mib}}, "yyn", 0},
		// B's c is asked again, and left out again: the rounds end.
		{"stubborn", []key{{"A", cell(10 * mib), 0}, {"B", cell(10 * mib), 0}, {"B", out, 0}}, "ynn", 1},
	} {
		got, asked := run(c.keys)
		if got != c.want || len(asked) != c.rounds {
			t.Errorf("%s: answered %s, asked %v; want %s in %d rounds", c.name, got, asked, c.want, c.rounds)
		}
	}
}

// TestFillBatchGetOneNodeAsksNothing guards that over one node (the
// default, embedded datastore), whose bound is the whole answer's, nothing
// is asked again: FillBatchGet asked the node for every left-out key,
// round after round, while the kept bodies fell short of MaxBatchGetBytes
// by less than one more cell, and the node read every asked body again (a
// batchGet of 1000 keys of 1,000,000 bytes: 62 more calls, about 31 GB
// read, for the first call's 16 cells). (Review of stop 19.)
func TestFillBatchGetOneNodeAsksNothing(t *testing.T) {
	const n, size = 1000, 1_000_000
	body := make([]byte, size)
	keys := make([]LookupKey, n)
	for i := range keys {
		keys[i] = LookupKey{RowKey: fmt.Sprintf("r%04d", i), Column: "c"}
	}
	calls, read := 0, 0
	node := func(_ context.Context, ks []LookupKey) []GetResult {
		calls++
		read += len(ks) * size // the node reads every asked body, then bounds
		res := make([]GetResult, len(ks))
		for i, k := range ks {
			res[i] = GetResult{Cell: &Cell{Key: Key{RowKey: k.RowKey, Column: k.Column}, Body: body}}
		}
		return BoundBatchGet(res)
	}
	ctx := context.Background()
	first := node(ctx, keys)
	kept := 0
	for _, r := range first {
		if r.Cell != nil {
			kept++
		}
	}
	firstRead := read
	calls = 0
	res := FillBatchGet(ctx, keys, first, func(int) string { return "node" }, node)
	got := 0
	for _, r := range res {
		if r.Cell != nil {
			got++
		}
	}
	if got != kept {
		t.Fatalf("answer holds %d cells; the node's first answer held %d", got, kept)
	}
	if calls > 0 {
		t.Errorf("FillBatchGet re-asked the one node %d times, %d MB read in all (the first call read %d MB) for the same %d-cell answer; want none", calls, read/1_000_000, firstRead/1_000_000, got)
	}
}
