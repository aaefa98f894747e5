package storetest

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/cellar-db/cellar"
)

// IndexOpener opens a new, empty index store with shardCount logical
// shards. It registers the store's cleanup with tb.
type IndexOpener func(tb testing.TB, shardCount int) cellar.IndexStore

// RunIndexes runs the index entry conformance suite against stores from
// open.
func RunIndexes(t *testing.T, open IndexOpener) {
	tests := []struct {
		name string
		f    func(*testing.T, IndexOpener)
	}{
		{"PutScan", testIndexPutScan},
		{"Bounds", testIndexBounds},
		{"Paging", testIndexPaging},
		{"Bytes", testIndexBytes},
		{"Isolation", testIndexIsolation},
		{"Rows", testIndexRows},
		{"Invalid", testIndexInvalid},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) { tt.f(t, open) })
	}
}

func loc(shard int, keys ...string) cellar.IndexLoc {
	l := cellar.IndexLoc{Shard: shard}
	for i, k := range keys {
		l.Keys[i] = []byte(k)
	}
	return l
}

func putEntry(tb testing.TB, s cellar.IndexStore, index string, gen int64, l cellar.IndexLoc, row string, ref int64) {
	tb.Helper()
	if err := s.PutIndexEntry(ctx(tb), cellar.IndexEntry{Index: index, Gen: gen, Loc: l, RowKey: row, RefKey: ref}); err != nil {
		tb.Fatalf("PutIndexEntry(%s, %q): %v", index, row, err)
	}
}

func scan(tb testing.TB, s cellar.IndexStore, q cellar.IndexScan) []cellar.IndexEntry {
	tb.Helper()
	es, err := s.ScanIndex(ctx(tb), q)
	if err != nil {
		tb.Fatalf("ScanIndex(%+v): %v", q, err)
	}
	return es
}

func rowsOf(es []cellar.IndexEntry) []string {
	out := []string{}
	for _, e := range es {
		out = append(out, e.RowKey)
	}
	return out
}

func testIndexPutScan(t *testing.T, open IndexOpener) {
	s := open(t, 16)
	// Shard 3, city "paris": three rows with ages; one row in "rome"; one
	// paris row on another shard (as a hash collision would never put it,
	// but the store must keep shards apart).
	putEntry(t, s, "by_city", 1, loc(3, "paris", "b30"), "u1", 1)
	putEntry(t, s, "by_city", 1, loc(3, "paris", "a20"), "u2", 1)
	putEntry(t, s, "by_city", 1, loc(3, "paris", "b30"), "u0", 4)
	putEntry(t, s, "by_city", 1, loc(3, "rome", "a10"), "u3", 1)
	putEntry(t, s, "by_city", 1, loc(5, "paris", "a10"), "u4", 1)

	q := cellar.IndexScan{Index: "by_city", Gen: 1, Shard: 3, Limit: 100, Order: []int{1}}
	q.Conds[0].Eq = []byte("paris")
	if got, want := rowsOf(scan(t, s, q)), []string{"u2", "u0", "u1"}; !slices.Equal(got, want) {
		t.Errorf("paris by k2 = %v; want %v", got, want)
	}
	q.Desc = true
	if got, want := rowsOf(scan(t, s, q)), []string{"u1", "u0", "u2"}; !slices.Equal(got, want) {
		t.Errorf("paris by k2 desc = %v; want %v", got, want)
	}
	q.Desc, q.Limit = false, 2
	if got, want := rowsOf(scan(t, s, q)), []string{"u2", "u0"}; !slices.Equal(got, want) {
		t.Errorf("paris by k2 limit 2 = %v; want %v", got, want)
	}

	// What comes back is what was written.
	q.Limit = 1
	es := scan(t, s, q)
	if len(es) != 1 || es[0].Index != "by_city" || es[0].Gen != 1 || es[0].Loc.Shard != 3 ||
		string(es[0].Loc.Keys[0]) != "paris" || string(es[0].Loc.Keys[1]) != "a20" || len(es[0].Loc.Keys[2]) != 0 || es[0].RefKey != 1 {
		t.Errorf("first entry = %+v", es)
	}

	// Writing the same place again updates ref_key; it adds no entry.
	putEntry(t, s, "by_city", 1, loc(3, "paris", "a20"), "u2", 9)
	q.Limit = 100
	es = scan(t, s, q)
	if len(es) != 3 || es[0].RowKey != "u2" || es[0].RefKey != 9 {
		t.Errorf("after rewriting u2: %+v; want 3 entries, u2 first with ref_key 9", es)
	}

	if err := s.DeleteIndexEntry(ctx(t), "by_city", 1, loc(3, "paris", "b30"), "u0"); err != nil {
		t.Fatal(err)
	}
	// Deleting what is not there is not an error.
	if err := s.DeleteIndexEntry(ctx(t), "by_city", 1, loc(3, "paris", "zzz"), "u0"); err != nil {
		t.Errorf("deleting a missing entry: %v", err)
	}
	if got, want := rowsOf(scan(t, s, q)), []string{"u2", "u1"}; !slices.Equal(got, want) {
		t.Errorf("after delete = %v; want %v", got, want)
	}

	// Another shard, and no condition at all.
	if got, want := rowsOf(scan(t, s, cellar.IndexScan{Index: "by_city", Gen: 1, Shard: 5, Limit: 10})), []string{"u4"}; !slices.Equal(got, want) {
		t.Errorf("shard 5 = %v; want %v", got, want)
	}
	if got := scan(t, s, cellar.IndexScan{Index: "by_city", Gen: 1, Shard: 4, Limit: 10}); len(got) != 0 {
		t.Errorf("empty shard = %v; want none", rowsOf(got))
	}
}

func testIndexBounds(t *testing.T, open IndexOpener) {
	s := open(t, 16)
	for i := 0; i < 10; i++ {
		putEntry(t, s, "ix", 1, loc(0, "a", fmt.Sprintf("v%d", i), fmt.Sprintf("w%d", 9-i)), fmt.Sprintf("r%d", i), 1)
	}
	cases := []struct {
		name         string
		lower, upper *cellar.IndexBound
		want         []string
	}{
		{"gte v3", &cellar.IndexBound{Key: []byte("v3"), Inclusive: true}, nil, []string{"r3", "r4", "r5", "r6", "r7", "r8", "r9"}},
		{"gt v3", &cellar.IndexBound{Key: []byte("v3")}, nil, []string{"r4", "r5", "r6", "r7", "r8", "r9"}},
		{"lt v3", nil, &cellar.IndexBound{Key: []byte("v3")}, []string{"r0", "r1", "r2"}},
		{"lte v3", nil, &cellar.IndexBound{Key: []byte("v3"), Inclusive: true}, []string{"r0", "r1", "r2", "r3"}},
		{"v2..v5", &cellar.IndexBound{Key: []byte("v2"), Inclusive: true}, &cellar.IndexBound{Key: []byte("v5")}, []string{"r2", "r3", "r4"}},
		{"empty range", &cellar.IndexBound{Key: []byte("v5")}, &cellar.IndexBound{Key: []byte("v5")}, []string{}},
	}
	for _, c := range cases {
		q := cellar.IndexScan{Index: "ix", Gen: 1, Shard: 0, Limit: 100, Order: []int{1}}
		q.Conds[0].Eq = []byte("a")
		q.Conds[1] = cellar.IndexCond{Lower: c.lower, Upper: c.upper}
		if got := rowsOf(scan(t, s, q)); !slices.Equal(got, c.want) {
			t.Errorf("%s: %v; want %v", c.name, got, c.want)
		}
	}
	// A range on one field, ordered by another.
	q := cellar.IndexScan{Index: "ix", Gen: 1, Shard: 0, Limit: 100, Order: []int{2}}
	q.Conds[0].Eq = []byte("a")
	q.Conds[1].Lower = &cellar.IndexBound{Key: []byte("v7"), Inclusive: true}
	if got, want := rowsOf(scan(t, s, q)), []string{"r9", "r8", "r7"}; !slices.Equal(got, want) {
		t.Errorf("k2 >= v7 by k3: %v; want %v", got, want)
	}
	// Equality on two fields.
	q = cellar.IndexScan{Index: "ix", Gen: 1, Shard: 0, Limit: 100}
	q.Conds[0].Eq, q.Conds[2].Eq = []byte("a"), []byte("w4")
	if got, want := rowsOf(scan(t, s, q)), []string{"r5"}; !slices.Equal(got, want) {
		t.Errorf("k3 = w4: %v; want %v", got, want)
	}
}

// testIndexPaging pages through entries with After, in both directions and
// with ties in the order field, and checks that the pages add up to the
// whole ordered list.
func testIndexPaging(t *testing.T, open IndexOpener) {
	s := open(t, 16)
	rng := rand.New(rand.NewPCG(1, 2))
	type ent struct{ k2, k3, row string }
	var all []ent
	for i := 0; i < 57; i++ {
		e := ent{fmt.Sprintf("%d", rng.IntN(5)), fmt.Sprintf("%02d", rng.IntN(7)), fmt.Sprintf("row-%03d", i)}
		all = append(all, e)
		putEntry(t, s, "ix", 2, loc(7, "x", e.k2, e.k3), e.row, 1)
	}
	for _, order := range [][]int{{1}, {2}, {1, 2}, {}} {
		for _, desc := range []bool{false, true} {
			want := slices.Clone(all)
			key := func(e ent) []string {
				var k []string
				for _, p := range order {
					k = append(k, []string{"", e.k2, e.k3}[p])
				}
				return append(k, e.row)
			}
			slices.SortFunc(want, func(a, b ent) int {
				c := slices.Compare(key(a), key(b))
				if desc {
					c = -c
				}
				return c
			})
			var got []string
			var after *cellar.IndexPosition
			for page := 0; page < 100; page++ {
				q := cellar.IndexScan{Index: "ix", Gen: 2, Shard: 7, Limit: 4, Order: order, Desc: desc, After: after}
				q.Conds[0].Eq = []byte("x")
				es := scan(t, s, q)
				if len(es) == 0 {
					break
				}
				for _, e := range es {
					got = append(got, e.RowKey)
				}
				last := es[len(es)-1]
				after = &cellar.IndexPosition{RowKey: last.RowKey}
				for _, p := range order {
					after.Keys = append(after.Keys, last.Loc.Keys[p])
				}
			}
			var wantRows []string
			for _, e := range want {
				wantRows = append(wantRows, e.row)
			}
			if !slices.Equal(got, wantRows) {
				t.Errorf("order %v desc %v: pages gave\n%v\nwant\n%v", order, desc, got, wantRows)
			}
		}
	}
}

// testIndexBytes checks that keys compare as bytes on every engine:
// unsigned, with no collation, and a prefix before its extensions.
func testIndexBytes(t *testing.T, open IndexOpener) {
	s := open(t, 16)
	keys := [][]byte{{}, {0x00}, {0x00, 0x00}, {0x01}, {0x01, 0x7f}, {0x01, 0x80}, {0x01, 0xff}, {'A'}, {'B'}, {'a'}, {0xc3, 0xa9}, {0xff}, {0xff, 0xff}}
	perm := rand.New(rand.NewPCG(3, 4)).Perm(len(keys))
	for _, i := range perm {
		l := cellar.IndexLoc{Shard: 1}
		l.Keys[0] = []byte("k")
		l.Keys[1] = keys[i]
		putEntry(t, s, "ix", 1, l, fmt.Sprintf("row-%02d", i), 1)
	}
	q := cellar.IndexScan{Index: "ix", Gen: 1, Shard: 1, Limit: 100, Order: []int{1}}
	q.Conds[0].Eq = []byte("k")
	es := scan(t, s, q)
	if len(es) != len(keys) {
		t.Fatalf("got %d entries; want %d", len(es), len(keys))
	}
	for i, e := range es {
		if !bytes.Equal(e.Loc.Keys[1], keys[i]) {
			t.Errorf("entry %d has key %x; want %x (bytewise order)", i, e.Loc.Keys[1], keys[i])
		}
	}
	// Bounds compare bytewise too: > 0x01 0x7f excludes it and includes 0x01 0x80.
	q.Conds[1].Lower = &cellar.IndexBound{Key: []byte{0x01, 0x7f}}
	q.Conds[1].Upper = &cellar.IndexBound{Key: []byte{0xff}, Inclusive: true}
	if got, want := len(scan(t, s, q)), 7; got != want {
		t.Errorf("(0x017f, 0xff] holds %d entries; want %d", got, want)
	}
}

func testIndexIsolation(t *testing.T, open IndexOpener) {
	s := open(t, 16)
	putEntry(t, s, "a", 1, loc(2, "x", "1"), "r1", 1)
	putEntry(t, s, "a", 2, loc(2, "x", "1"), "r2", 1)
	putEntry(t, s, "b", 1, loc(2, "x", "1"), "r3", 1)
	for _, c := range []struct {
		index string
		gen   int64
		want  []string
	}{{"a", 1, []string{"r1"}}, {"a", 2, []string{"r2"}}, {"b", 1, []string{"r3"}}, {"c", 1, []string{}}} {
		if got := rowsOf(scan(t, s, cellar.IndexScan{Index: c.index, Gen: c.gen, Shard: 2, Limit: 10})); !slices.Equal(got, c.want) {
			t.Errorf("index %s gen %d: %v; want %v", c.index, c.gen, got, c.want)
		}
	}
	if err := s.SetIndexRow(ctx(t), "a", 1, "r1", []cellar.IndexLoc{loc(2, "x", "1")}); err != nil {
		t.Fatal(err)
	}
	if err := s.SetIndexRow(ctx(t), "a", 2, "r1", []cellar.IndexLoc{loc(2, "x", "1")}); err != nil {
		t.Fatal(err)
	}
	if err := s.DropIndex(ctx(t), "a", 1); err != nil {
		t.Fatal(err)
	}
	if got := scan(t, s, cellar.IndexScan{Index: "a", Gen: 1, Shard: 2, Limit: 10}); len(got) != 0 {
		t.Errorf("after DropIndex(a, 1): %v", rowsOf(got))
	}
	if got := rowsOf(scan(t, s, cellar.IndexScan{Index: "a", Gen: 2, Shard: 2, Limit: 10})); !slices.Equal(got, []string{"r2"}) {
		t.Errorf("DropIndex(a, 1) touched generation 2: %v", got)
	}
	if got := rowsOf(scan(t, s, cellar.IndexScan{Index: "b", Gen: 1, Shard: 2, Limit: 10})); !slices.Equal(got, []string{"r3"}) {
		t.Errorf("DropIndex(a, 1) touched index b: %v", got)
	}
	if locs, err := s.IndexRow(ctx(t), "a", 1, "r1"); err != nil || len(locs) != 0 {
		t.Errorf("row record after DropIndex(a, 1) = %v, %v; want none", locs, err)
	}
	if locs, err := s.IndexRow(ctx(t), "a", 2, "r1"); err != nil || len(locs) != 1 {
		t.Errorf("row record of generation 2 = %v, %v; want it kept", locs, err)
	}
}

func testIndexRows(t *testing.T, open IndexOpener) {
	s := open(t, 16)
	row := "user/ü 1"
	locs, err := s.IndexRow(ctx(t), "ix", 1, row)
	if err != nil || locs != nil {
		t.Fatalf("IndexRow of a new row = %v, %v; want nil, nil", locs, err)
	}
	want := []cellar.IndexLoc{loc(9, "paris", "\x00\xff"), {Shard: 0}}
	if err := s.SetIndexRow(ctx(t), "ix", 1, row, want); err != nil {
		t.Fatal(err)
	}
	locs, err = s.IndexRow(ctx(t), "ix", 1, row)
	if err != nil {
		t.Fatal(err)
	}
	if len(locs) != 2 || locs[0].Shard != 9 || string(locs[0].Keys[1]) != "\x00\xff" || locs[1].Shard != 0 || len(locs[1].Keys[0]) != 0 {
		t.Errorf("IndexRow = %+v; want %+v", locs, want)
	}
	if err := s.SetIndexRow(ctx(t), "ix", 1, row, want[:1]); err != nil {
		t.Fatal(err)
	}
	if locs, _ = s.IndexRow(ctx(t), "ix", 1, row); len(locs) != 1 {
		t.Errorf("after replacing: %+v; want one location", locs)
	}
	if err := s.SetIndexRow(ctx(t), "ix", 1, row, nil); err != nil {
		t.Fatal(err)
	}
	if locs, _ = s.IndexRow(ctx(t), "ix", 1, row); locs != nil {
		t.Errorf("after clearing: %+v; want none", locs)
	}
}

func testIndexInvalid(t *testing.T, open IndexOpener) {
	s := open(t, 16)
	long := make([]byte, cellar.MaxIndexKeyBytes+1)
	for _, c := range []struct {
		name string
		err  error
	}{
		{"shard out of range", s.PutIndexEntry(ctx(t), cellar.IndexEntry{Index: "ix", Gen: 1, Loc: cellar.IndexLoc{Shard: 16}, RowKey: "r", RefKey: 1})},
		{"negative shard", s.PutIndexEntry(ctx(t), cellar.IndexEntry{Index: "ix", Gen: 1, Loc: cellar.IndexLoc{Shard: -1}, RowKey: "r", RefKey: 1})},
		{"key too long", s.PutIndexEntry(ctx(t), cellar.IndexEntry{Index: "ix", Gen: 1, Loc: cellar.IndexLoc{Keys: [4][]byte{long}}, RowKey: "r", RefKey: 1})},
		{"bad row key", s.PutIndexEntry(ctx(t), cellar.IndexEntry{Index: "ix", Gen: 1, RowKey: "", RefKey: 1})},
		{"no index name", s.PutIndexEntry(ctx(t), cellar.IndexEntry{Gen: 1, RowKey: "r", RefKey: 1})},
		{"generation 0", s.PutIndexEntry(ctx(t), cellar.IndexEntry{Index: "ix", RowKey: "r", RefKey: 1})},
	} {
		wantCode(t, c.name, c.err, cellar.ErrInvalid)
	}
	for _, q := range []cellar.IndexScan{
		{Index: "ix", Gen: 1, Shard: 0, Limit: 0},
		{Index: "ix", Gen: 1, Shard: 0, Limit: cellar.MaxIndexLimit + 1},
		{Index: "ix", Gen: 1, Shard: 16, Limit: 1},
		{Index: "ix", Gen: 1, Shard: 0, Limit: 1, Order: []int{4}},
		{Index: "ix", Gen: 1, Shard: 0, Limit: 1, Order: []int{1}, After: &cellar.IndexPosition{RowKey: "r"}},
	} {
		_, err := s.ScanIndex(ctx(t), q)
		wantCode(t, fmt.Sprintf("ScanIndex(%+v)", q), err, cellar.ErrInvalid)
	}
	// Nothing was written by the refused calls.
	if got := scan(t, s, cellar.IndexScan{Index: "ix", Gen: 1, Shard: 0, Limit: 10}); len(got) != 0 {
		t.Errorf("refused puts wrote %v", rowsOf(got))
	}
}
