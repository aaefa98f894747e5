// Package storetest is the conformance suite every cellar.Store runs: each
// storage backend, and the sharding layer over mixed backends. Like
// Perkeep's kvtest, a backend's test calls Run with a function that opens a
// fresh, empty store.
package storetest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cellar-db/cellar"
)

// Opener opens a new, empty store with shardCount logical shards. It
// registers the store's cleanup with tb.
type Opener func(tb testing.TB, shardCount int) cellar.Store

// Run runs the whole suite against stores from open.
func Run(t *testing.T, open Opener) {
	tests := []struct {
		name string
		f    func(*testing.T, Opener)
	}{
		{"PutGet", testPutGet},
		{"Replay", testReplay},
		{"Latest", testLatest},
		{"Row", testRow},
		{"BatchGet", testBatchGet},
		{"BatchPut", testBatchPut},
		{"Scan", testScan},
		{"ScanPageBytes", testScanPageBytes},
		{"BatchGetBytes", testBatchGetBytes},
		{"RowBytes", testRowBytes},
		{"Bodies", testBodies},
		{"Keys", testKeys},
		{"Ordering", testOrdering},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) { tt.f(t, open) })
	}
}

func ctx(tb testing.TB) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	tb.Cleanup(cancel)
	return c
}

func put(tb testing.TB, s cellar.Store, row, col string, ref int64, body string) (cellar.Cell, bool) {
	tb.Helper()
	b, err := cellar.CheckBody([]byte(body), cellar.DefaultMaxBodyBytes)
	if err != nil {
		tb.Fatalf("CheckBody(%s): %v", body, err)
	}
	c, created, err := s.Put(ctx(tb), cellar.NewCell{Key: cellar.Key{RowKey: row, Column: col, RefKey: ref}, Body: b})
	if err != nil {
		tb.Fatalf("Put(%q, %s, %d): %v", row, col, ref, err)
	}
	return c, created
}

func wantCode(tb testing.TB, what string, err error, want *cellar.Error) {
	tb.Helper()
	if !errors.Is(err, want) {
		tb.Errorf("%s: err = %v; want code %s", what, err, want.Code)
	}
}

func testPutGet(t *testing.T, open Opener) {
	s := open(t, 16)
	before := time.Now().UTC().Truncate(time.Millisecond)
	c, created := put(t, s, "user:1", "profile", 7, `{"name": "Ann", "age": 31}`)
	if !created {
		t.Errorf("first Put created = false")
	}
	if c.RowKey != "user:1" || c.Column != "profile" || c.RefKey != 7 {
		t.Errorf("Put key = %+v", c.Key)
	}
	if want := cellar.ShardOf("user:1", 16); c.Shard != want {
		t.Errorf("Put shard = %d; want %d", c.Shard, want)
	}
	if c.AddedID != 1 {
		t.Errorf("first cell's added_id = %d; want 1", c.AddedID)
	}
	if c.CreatedAt.Before(before) || c.CreatedAt.After(time.Now().Add(time.Second)) || c.CreatedAt.Location() != time.UTC {
		t.Errorf("created_at = %v; want about now, in UTC", c.CreatedAt)
	}
	got, err := s.Get(ctx(t), c.Key)
	if err != nil {
		t.Fatalf("Get: %v", err)
	}
	if string(got.Body) != `{"name":"Ann","age":31}` {
		t.Errorf("Get body = %s", got.Body)
	}
	if got.AddedID != c.AddedID || got.Shard != c.Shard || !got.CreatedAt.Equal(c.CreatedAt) {
		t.Errorf("Get metadata = %+v; Put said %+v", got, c)
	}
	_, err = s.Get(ctx(t), cellar.Key{RowKey: "user:1", Column: "profile", RefKey: 8})
	wantCode(t, "Get missing ref", err, cellar.ErrNotFound)
	_, err = s.Get(ctx(t), cellar.Key{RowKey: "nobody", Column: "profile", RefKey: 7})
	wantCode(t, "Get missing row", err, cellar.ErrNotFound)
	_, err = s.Get(ctx(t), cellar.Key{RowKey: "", Column: "profile"})
	wantCode(t, "Get empty row key", err, cellar.ErrInvalid)
	_, err = s.Get(ctx(t), cellar.Key{RowKey: "x", Column: "1bad"})
	wantCode(t, "Get bad column", err, cellar.ErrInvalid)
	_, err = s.Get(ctx(t), cellar.Key{RowKey: "x", Column: "c", RefKey: -1})
	wantCode(t, "Get negative ref", err, cellar.ErrInvalid)

	// A second cell in the same shard gets the next added_id.
	c2, _ := put(t, s, "user:1", "profile", 8, `{}`)
	if c2.AddedID != 2 {
		t.Errorf("second cell in shard: added_id = %d; want 2", c2.AddedID)
	}
}

func testReplay(t *testing.T, open Opener) {
	s := open(t, 16)
	orig, _ := put(t, s, "r", "c", 1, `{"a": 1, "b": [1, 2, {"x": "y"}]}`)
	// Same value, other key order and whitespace: a replay.
	again, created := put(t, s, "r", "c", 1, `{ "b":[1,2,{"x":"y"}], "a":1 }`)
	if created {
		t.Errorf("replay: created = true; want false")
	}
	if again.AddedID != orig.AddedID || again.Shard != orig.Shard || !again.CreatedAt.Equal(orig.CreatedAt) {
		t.Errorf("replay metadata = %+v; want the original %+v", again, orig)
	}
	// A different body conflicts and overwrites nothing.
	for _, body := range []string{`{"a": 2, "b": [1, 2, {"x": "y"}]}`, `{"a": 1.0, "b": [1, 2, {"x": "y"}]}`, `{"a": 1}`} {
		b, _ := cellar.CheckBody([]byte(body), cellar.DefaultMaxBodyBytes)
		_, _, err := s.Put(ctx(t), cellar.NewCell{Key: orig.Key, Body: b})
		wantCode(t, "Put different body "+body, err, cellar.ErrConflict)
	}
	got, err := s.Get(ctx(t), orig.Key)
	if err != nil {
		t.Fatal(err)
	}
	if string(got.Body) != `{"a":1,"b":[1,2,{"x":"y"}]}` {
		t.Errorf("after conflicts, body = %s; want the original", got.Body)
	}
	// Replays and conflicts consume no added_id.
	next, _ := put(t, s, "r", "c", 2, `{}`)
	if next.AddedID != orig.AddedID+1 {
		t.Errorf("added_id after replays = %d; want %d", next.AddedID, orig.AddedID+1)
	}
}

func testLatest(t *testing.T, open Opener) {
	s := open(t, 16)
	_, err := s.Latest(ctx(t), "r", "c")
	wantCode(t, "Latest of nothing", err, cellar.ErrNotFound)
	for _, ref := range []int64{5, 100, 3, 0} {
		put(t, s, "r", "c", ref, fmt.Sprintf(`{"ref": %d}`, ref))
	}
	put(t, s, "r", "other", 1000, `{}`)
	put(t, s, "r2", "c", 1000, `{}`)
	got, err := s.Latest(ctx(t), "r", "c")
	if err != nil {
		t.Fatal(err)
	}
	if got.RefKey != 100 || string(got.Body) != `{"ref":100}` {
		t.Errorf("Latest = ref %d body %s; want ref 100", got.RefKey, got.Body)
	}
	put(t, s, "r", "c", cellar.MaxRefKey, `{"max": true}`)
	got, err = s.Latest(ctx(t), "r", "c")
	if err != nil || got.RefKey != cellar.MaxRefKey {
		t.Errorf("Latest after max ref = %d, %v; want %d", got.RefKey, err, int64(cellar.MaxRefKey))
	}
	_, err = s.Latest(ctx(t), "r", "bad-col")
	wantCode(t, "Latest bad column", err, cellar.ErrInvalid)
}

func testRow(t *testing.T, open Opener) {
	s := open(t, 16)
	cells, err := s.Row(ctx(t), "empty", nil)
	if err != nil || cells == nil || len(cells) != 0 {
		t.Errorf("Row of nothing = %v, %v; want an empty, non-nil slice", cells, err)
	}
	put(t, s, "r", "b", 1, `{"v": "b1"}`)
	put(t, s, "r", "b", 2, `{"v": "b2"}`)
	put(t, s, "r", "a", 9, `{"v": "a9"}`)
	put(t, s, "r", "Z", 1, `{"v": "Z1"}`)
	put(t, s, "r", "_x", 1, `{"v": "_x1"}`)
	put(t, s, "other", "a", 10, `{}`)
	cells, err = s.Row(ctx(t), "r", nil)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, c := range cells {
		got = append(got, fmt.Sprintf("%s/%d", c.Column, c.RefKey))
	}
	// Columns in byte order: uppercase before underscore before lowercase.
	if want := "Z/1 _x/1 a/9 b/2"; strings.Join(got, " ") != want {
		t.Errorf("Row = %v; want %s", got, want)
	}
	cells, err = s.Row(ctx(t), "r", []string{"b", "nope", "Z"})
	if err != nil {
		t.Fatal(err)
	}
	if len(cells) != 2 || cells[0].Column != "Z" || cells[1].Column != "b" || string(cells[1].Body) != `{"v":"b2"}` {
		t.Errorf("Row with columns = %+v", cells)
	}
	_, err = s.Row(ctx(t), "r", []string{"ok", "not ok"})
	wantCode(t, "Row bad column", err, cellar.ErrInvalid)
}

func ref(n int64) *int64 { return &n }

func testBatchGet(t *testing.T, open Opener) {
	s := open(t, 16)
	for i := 0; i < 30; i++ {
		put(t, s, fmt.Sprintf("row%d", i), "c", 1, fmt.Sprintf(`{"i": %d, "v": 1}`, i))
		put(t, s, fmt.Sprintf("row%d", i), "c", 2, fmt.Sprintf(`{"i": %d, "v": 2}`, i))
	}
	keys := []cellar.LookupKey{
		{RowKey: "row3", Column: "c", RefKey: ref(1)},
		{RowKey: "row4", Column: "c"},
		{RowKey: "missing", Column: "c"},
		{RowKey: "", Column: "c"},
		{RowKey: "row5", Column: "c", RefKey: ref(3)},
		{RowKey: "row3", Column: "c", RefKey: ref(1)}, // repeated
	}
	for i := 0; i < 30; i++ {
		keys = append(keys, cellar.LookupKey{RowKey: fmt.Sprintf("row%d", i), Column: "c"})
	}
	res := s.BatchGet(ctx(t), keys)
	if len(res) != len(keys) {
		t.Fatalf("BatchGet returned %d results for %d keys", len(res), len(keys))
	}
	check := func(i int, body string) {
		t.Helper()
		if res[i].Err != nil || res[i].Cell == nil || string(res[i].Cell.Body) != body {
			t.Errorf("result %d = %+v, %v; want body %s", i, res[i].Cell, res[i].Err, body)
		}
	}
	check(0, `{"i":3,"v":1}`)
	check(1, `{"i":4,"v":2}`)
	wantCode(t, "missing row", res[2].Err, cellar.ErrNotFound)
	wantCode(t, "empty row key", res[3].Err, cellar.ErrInvalid)
	wantCode(t, "missing ref", res[4].Err, cellar.ErrNotFound)
	check(5, `{"i":3,"v":1}`)
	for i := 0; i < 30; i++ {
		check(6+i, fmt.Sprintf(`{"i":%d,"v":2}`, i))
	}
	if len(s.BatchGet(ctx(t), nil)) != 0 {
		t.Errorf("BatchGet(nil) returned results")
	}
}

func newCell(tb testing.TB, row, col string, ref int64, body string) cellar.NewCell {
	b, err := cellar.CheckBody([]byte(body), cellar.DefaultMaxBodyBytes)
	if err != nil {
		tb.Fatal(err)
	}
	return cellar.NewCell{Key: cellar.Key{RowKey: row, Column: col, RefKey: ref}, Body: b}
}

func testBatchPut(t *testing.T, open Opener) {
	s := open(t, 16)
	put(t, s, "existing", "c", 1, `{"v": 1}`)
	cells := []cellar.NewCell{
		newCell(t, "a", "c", 1, `{"a": 1}`),
		newCell(t, "existing", "c", 1, `{"v": 1}`), // replay
		newCell(t, "existing", "c", 1, `{"v": 2}`), // conflict
		{Key: cellar.Key{RowKey: "bad\x01", Column: "c"}, Body: []byte(`{}`)},
		newCell(t, "a", "c", 1, `{"a": 1}`), // same key twice in one batch: replay of the first
		newCell(t, "a", "c", 2, `{"a": 2}`), // same key twice in one batch: conflict
		newCell(t, "a", "c", 2, `{"a": 3}`),
	}
	for i := 0; i < 40; i++ {
		cells = append(cells, newCell(t, fmt.Sprintf("many%d", i), "c", 1, `{}`))
	}
	res := s.BatchPut(ctx(t), cells)
	if len(res) != len(cells) {
		t.Fatalf("BatchPut returned %d results for %d cells", len(res), len(cells))
	}
	if !res[0].Created || res[0].Err != nil {
		t.Errorf("result 0 = %+v; want created", res[0])
	}
	if res[1].Created || res[1].Err != nil {
		t.Errorf("result 1 = %+v; want a replay", res[1])
	}
	wantCode(t, "result 2", res[2].Err, cellar.ErrConflict)
	wantCode(t, "result 3", res[3].Err, cellar.ErrInvalid)
	if res[4].Created || res[4].Err != nil || res[4].Cell.AddedID != res[0].Cell.AddedID {
		t.Errorf("result 4 = %+v; want a replay of result 0 %+v", res[4], res[0])
	}
	if !res[5].Created {
		t.Errorf("result 5 = %+v; want created", res[5])
	}
	wantCode(t, "result 6", res[6].Err, cellar.ErrConflict)
	seen := map[[2]int64]bool{}
	for i, r := range res {
		if r.Err == nil && r.Created {
			k := [2]int64{int64(r.Cell.Shard), r.Cell.AddedID}
			if seen[k] {
				t.Errorf("result %d reuses shard %d added_id %d", i, k[0], k[1])
			}
			seen[k] = true
			if r.Cell.Shard != cellar.ShardOf(r.Cell.RowKey, 16) {
				t.Errorf("result %d: shard %d; want %d", i, r.Cell.Shard, cellar.ShardOf(r.Cell.RowKey, 16))
			}
		}
	}
	got, err := s.Latest(ctx(t), "a", "c")
	if err != nil || string(got.Body) != `{"a":2}` {
		t.Errorf("after batch, latest a/c = %s, %v; want {\"a\":2}", got.Body, err)
	}
}

// keysInShard returns n distinct row keys that fall in shard.
func keysInShard(prefix string, shard, count, n int) []string {
	var keys []string
	for i := 0; len(keys) < n; i++ {
		k := fmt.Sprintf("%s-%d", prefix, i)
		if cellar.ShardOf(k, count) == shard {
			keys = append(keys, k)
		}
	}
	return keys
}

func testScan(t *testing.T, open Opener) {
	s := open(t, 8)
	keys := keysInShard("scan", 5, 8, 10)
	for i, k := range keys {
		col := "even"
		if i%2 == 1 {
			col = "odd"
		}
		put(t, s, k, col, 1, fmt.Sprintf(`{"i": %d}`, i))
	}
	put(t, s, keysInShard("elsewhere", 6, 8, 1)[0], "even", 1, `{}`)
	var all []cellar.Cell
	after := int64(0)
	for {
		res, err := s.Scan(ctx(t), 5, after, 3, "")
		if err != nil {
			t.Fatal(err)
		}
		if len(res.Cells) == 0 {
			if res.Next != after {
				t.Errorf("empty page: next = %d; want after = %d", res.Next, after)
			}
			break
		}
		if res.Next != res.Cells[len(res.Cells)-1].AddedID {
			t.Errorf("next = %d; want the last added_id %d", res.Next, res.Cells[len(res.Cells)-1].AddedID)
		}
		all = append(all, res.Cells...)
		after = res.Next
	}
	if len(all) != 10 {
		t.Fatalf("scan returned %d cells; want 10", len(all))
	}
	for i, c := range all {
		if c.AddedID != int64(i+1) || c.RowKey != keys[i] || c.Shard != 5 {
			t.Errorf("scan cell %d = %s added_id %d shard %d; want %s added_id %d", i, c.RowKey, c.AddedID, c.Shard, keys[i], i+1)
		}
		if string(c.Body) != fmt.Sprintf(`{"i":%d}`, i) {
			t.Errorf("scan cell %d body = %s", i, c.Body)
		}
	}
	res, err := s.Scan(ctx(t), 5, 0, 100, "odd")
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Cells) != 5 {
		t.Errorf("scan column odd: %d cells; want 5", len(res.Cells))
	}
	for _, c := range res.Cells {
		if c.Column != "odd" {
			t.Errorf("scan column odd returned column %s", c.Column)
		}
	}
	for _, bad := range []struct {
		shard int
		after int64
		limit int
		col   string
	}{{-1, 0, 10, ""}, {8, 0, 10, ""}, {0, -1, 10, ""}, {0, 0, 0, ""}, {0, 0, cellar.MaxScanLimit + 1, ""}, {0, 0, 10, "no good"}} {
		_, err := s.Scan(ctx(t), bad.shard, bad.after, bad.limit, bad.col)
		wantCode(t, fmt.Sprintf("Scan(%+v)", bad), err, cellar.ErrInvalid)
	}
}

func testBodies(t *testing.T, open Opener) {
	s := open(t, 16)
	bodies := []string{
		`{"big":12345678901234567890,"pi":3.141592653589793238462643383279,"huge":1e400,"neg":-0.0,"exp":1E-7}`,
		`{"s":"héllo wörld ✓ 😀","esc":"a\"b\\c\n\u0000\u00e9\ud83d\ude00","html":"<a href='x'>&amp;</a>"}`,
		`{"nested":{"a":[1,[2,[3,{"b":null}]]],"t":true,"f":false},"empty":{},"arr":[]}`,
		`{"order":3,"is":2,"kept":1}`,
	}
	for i, b := range bodies {
		put(t, s, "bodies", "c", int64(i), b)
		got, err := s.Get(ctx(t), cellar.Key{RowKey: "bodies", Column: "c", RefKey: int64(i)})
		if err != nil {
			t.Fatal(err)
		}
		if string(got.Body) != b {
			t.Errorf("body %d came back as\n%s\nwant\n%s", i, got.Body, b)
		}
	}
	// A large body near the limit.
	big := `{"x":"` + strings.Repeat("a", cellar.DefaultMaxBodyBytes-10) + `"}`
	put(t, s, "bodies", "big", 1, big)
	got, err := s.Get(ctx(t), cellar.Key{RowKey: "bodies", Column: "big", RefKey: 1})
	if err != nil || len(got.Body) != len(big) {
		t.Errorf("large body: %d bytes back, %v; want %d", len(got.Body), err, len(big))
	}
	var v map[string]any
	if err := json.Unmarshal(got.Body, &v); err != nil {
		t.Errorf("large body is not valid JSON: %v", err)
	}
}

func testKeys(t *testing.T, open Opener) {
	s := open(t, 16)
	rows := []string{"a/b/c", "with space", "percent%2F", "ünïcødé ✓", "😀", strings.Repeat("x", 255), strings.Repeat("é", 127), "?#&=", "'; DROP TABLE cells; --"}
	for i, r := range rows {
		put(t, s, r, "c", int64(i), fmt.Sprintf(`{"i": %d}`, i))
	}
	for i, r := range rows {
		got, err := s.Latest(ctx(t), r, "c")
		if err != nil || got.RowKey != r || got.RefKey != int64(i) {
			t.Errorf("Latest(%q) = %q/%d, %v", r, got.RowKey, got.RefKey, err)
		}
	}
	// Row keys are compared as bytes: no case folding or normalization.
	put(t, s, "Case", "c", 1, `{"v": "upper"}`)
	put(t, s, "case", "c", 1, `{"v": "lower"}`)
	got, _ := s.Latest(ctx(t), "Case", "c")
	if string(got.Body) != `{"v":"upper"}` {
		t.Errorf("row keys differing in case collided: %s", got.Body)
	}
	for _, bad := range []string{"", strings.Repeat("x", 256), "tab\there", "nl\n", "\x7f", "\xff\xfe", "c1\u0085"} {
		_, _, err := s.Put(ctx(t), cellar.NewCell{Key: cellar.Key{RowKey: bad, Column: "c"}, Body: []byte(`{}`)})
		wantCode(t, fmt.Sprintf("Put(row %q)", bad), err, cellar.ErrInvalid)
	}
	for _, bad := range []string{"", "1a", "a-b", "a b", strings.Repeat("a", 65), "é"} {
		_, _, err := s.Put(ctx(t), cellar.NewCell{Key: cellar.Key{RowKey: "r", Column: bad}, Body: []byte(`{}`)})
		wantCode(t, fmt.Sprintf("Put(column %q)", bad), err, cellar.ErrInvalid)
	}
	_, _, err := s.Put(ctx(t), cellar.NewCell{Key: cellar.Key{RowKey: "r", Column: "c", RefKey: -5}, Body: []byte(`{}`)})
	wantCode(t, "Put negative ref", err, cellar.ErrInvalid)
	_, _, err = s.Put(ctx(t), cellar.NewCell{Key: cellar.Key{RowKey: "r", Column: "c", RefKey: 1}})
	wantCode(t, "Put without body", err, cellar.ErrInvalid)
	if cells, _ := s.Row(ctx(t), "r", nil); len(cells) != 0 {
		t.Errorf("rejected puts wrote %d cells", len(cells))
	}
}

// testOrdering checks the ordering guarantee: many writers put into one
// shard while a reader tails it with after=; the reader must never miss a
// cell, and a final scan must equal what the writers were told was stored.
func testOrdering(t *testing.T, open Opener) {
	const shards, shard, writers, perWriter = 16, 11, 16, 40
	s := open(t, shards)
	keys := keysInShard("ord", shard, shards, writers)
	var (
		mu    sync.Mutex // protects acked
		acked = map[int64]string{}
	)
	var wg sync.WaitGroup
	done := make(chan struct{})
	errc := make(chan error, writers+1)
	for w := 0; w < writers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < perWriter; i++ {
				c, _, err := s.Put(ctx(t), cellar.NewCell{Key: cellar.Key{RowKey: keys[w], Column: "c", RefKey: int64(i)}, Body: []byte(`{}`)})
				if err != nil {
					errc <- fmt.Errorf("writer %d put %d: %w", w, i, err)
					return
				}
				mu.Lock()
				acked[c.AddedID] = fmt.Sprintf("%s/%d", keys[w], i)
				mu.Unlock()
			}
		}()
	}
	seen := map[int64]string{}
	var tailWG sync.WaitGroup
	tailWG.Add(1)
	go func() {
		defer tailWG.Done()
		after := int64(0)
		finished := false
		for {
			res, err := s.Scan(ctx(t), shard, after, 7, "")
			if err != nil {
				errc <- fmt.Errorf("tail: %w", err)
				return
			}
			for _, c := range res.Cells {
				if c.AddedID <= after {
					errc <- fmt.Errorf("tail after=%d returned added_id %d", after, c.AddedID)
					return
				}
				after = c.AddedID
				seen[c.AddedID] = fmt.Sprintf("%s/%d", c.RowKey, c.RefKey)
			}
			if len(res.Cells) == 0 {
				if finished {
					return
				}
				select {
				case <-done:
					finished = true // one more pass after the last write
				default:
				}
			}
		}
	}()
	wg.Wait()
	close(done)
	tailWG.Wait()
	close(errc)
	for err := range errc {
		t.Fatal(err)
	}
	var final []int64
	finalSet := map[int64]string{}
	after := int64(0)
	for {
		res, err := s.Scan(ctx(t), shard, after, 1000, "")
		if err != nil {
			t.Fatal(err)
		}
		if len(res.Cells) == 0 {
			break
		}
		for _, c := range res.Cells {
			final = append(final, c.AddedID)
			finalSet[c.AddedID] = fmt.Sprintf("%s/%d", c.RowKey, c.RefKey)
		}
		after = res.Next
	}
	if len(acked) != writers*perWriter {
		t.Fatalf("%d puts acknowledged; want %d", len(acked), writers*perWriter)
	}
	if !sort.SliceIsSorted(final, func(i, j int) bool { return final[i] < final[j] }) {
		t.Errorf("final scan is not in added_id order")
	}
	compare := func(name string, got map[int64]string) {
		t.Helper()
		missing := 0
		for id, k := range acked {
			if got[id] != k {
				missing++
				if missing <= 5 {
					t.Errorf("%s: acknowledged cell %s (added_id %d) missing or different: %q", name, k, id, got[id])
				}
			}
		}
		if len(got) != len(acked) {
			t.Errorf("%s has %d cells; %d were acknowledged", name, len(got), len(acked))
		}
		if missing > 0 {
			t.Errorf("%s missed %d of %d acknowledged cells", name, missing, len(acked))
		}
	}
	compare("tailing reader", seen)
	compare("final scan", finalSet)
}

// testScanPageBytes checks that a scan page stops once its bodies reach
// cellar.MaxScanPageBytes, and that paging still returns every cell.
func testScanPageBytes(t *testing.T, open Opener) {
	s := open(t, 3)
	big := `{"x":"` + strings.Repeat("a", 900<<10) + `"}`
	n := cellar.MaxScanPageBytes/(900<<10) + 3
	for _, k := range keysInShard("big", 0, 3, n) {
		put(t, s, k, "c", 1, big)
	}
	res, err := s.Scan(ctx(t), 0, 0, 100, "")
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Cells) == 0 || len(res.Cells) >= n {
		t.Errorf("first page of %d large cells held %d; want a short, non-empty page", n, len(res.Cells))
	}
	total := len(res.Cells)
	for after := res.Next; ; {
		res, err := s.Scan(ctx(t), 0, after, 100, "")
		if err != nil {
			t.Fatal(err)
		}
		if len(res.Cells) == 0 {
			break
		}
		total += len(res.Cells)
		after = res.Next
	}
	if total != n {
		t.Errorf("paging returned %d cells; want %d", total, n)
	}
}

// testBatchGetBytes checks that a BatchGet keeps at most about
// cellar.MaxBatchGetBytes of bodies (the first cell always): the cells
// past it are BatchBytesError results (too_large), each still readable
// alone or in another batch.
func testBatchGetBytes(t *testing.T, open Opener) {
	s := open(t, 3)
	big := `{"x":"` + strings.Repeat("a", 1_000_000) + `"}`
	n := cellar.MaxBatchGetBytes/len(big) + 4
	var keys []cellar.LookupKey
	for i := range n {
		row := fmt.Sprintf("bb%d", i)
		put(t, s, row, "c", 1, big)
		keys = append(keys, cellar.LookupKey{RowKey: row, Column: "c"})
	}
	kept, left := 0, 0
	for i, r := range s.BatchGet(ctx(t), keys) {
		switch {
		case r.Err == nil && r.Cell != nil && string(r.Cell.Body) == big:
			kept++
		case errors.Is(r.Err, cellar.ErrTooLarge) && r.Cell == nil:
			left++
			if _, err := s.Latest(ctx(t), keys[i].RowKey, "c"); err != nil {
				t.Errorf("Latest of %s, left out of the batch: %v", keys[i].RowKey, err)
			}
		default:
			t.Errorf("result %d = %+v, %v; want the cell or too_large", i, r.Cell != nil, r.Err)
		}
	}
	if want := cellar.MaxBatchGetBytes / len(big); kept != want || left != n-want {
		t.Errorf("BatchGet of %d cells of %d bytes kept %d and left out %d; want %d and %d", n, len(big), kept, left, want, n-want)
	}
	// The bound is counted in request order also when the batch mixes
	// latest and exact keys: the first keys are kept, the last left out.
	// (Review of stop 18: the exact keys were counted first, so that a
	// latest key at the head of the batch was left out.)
	one := int64(1)
	for i := range keys {
		if i%3 != 0 {
			keys[i].RefKey = &one
		}
	}
	fit := cellar.MaxBatchGetBytes / len(big)
	for i, r := range s.BatchGet(ctx(t), keys) {
		if i < fit && (r.Err != nil || r.Cell == nil) {
			t.Errorf("mixed batch: result %d (ref_key %v) = %v; want the cell, within the bound in request order", i, keys[i].RefKey != nil, r.Err)
		}
		if i >= fit && !errors.Is(r.Err, cellar.ErrTooLarge) {
			t.Errorf("mixed batch: result %d (ref_key %v) = %v; want too_large, past the bound in request order", i, keys[i].RefKey != nil, r.Err)
		}
	}
}

// testRowBytes checks that a Row whose latest cells' bodies pass
// cellar.MaxBatchGetBytes is refused as too_large, not answered whole,
// and that its columns are readable fewer at a time.
func testRowBytes(t *testing.T, open Opener) {
	s := open(t, 3)
	big := `{"x":"` + strings.Repeat("a", 1_000_000) + `"}`
	fit := cellar.MaxBatchGetBytes / len(big)
	var cols []string
	for i := range fit + 2 {
		col := fmt.Sprintf("c%03d", i)
		put(t, s, "rb", col, 1, big)
		cols = append(cols, col)
	}
	if cells, err := s.Row(ctx(t), "rb", nil); !errors.Is(err, cellar.ErrTooLarge) {
		t.Errorf("Row of %d cells of %d bytes = %d cells, %v; want too_large", len(cols), len(big), len(cells), err)
	}
	if cells, err := s.Row(ctx(t), "rb", cols[1:]); !errors.Is(err, cellar.ErrTooLarge) {
		t.Errorf("Row of %d named columns = %d cells, %v; want too_large", len(cols)-1, len(cells), err)
	}
	for _, part := range [][]string{cols[:fit], cols[fit:]} {
		cells, err := s.Row(ctx(t), "rb", part)
		if err != nil || len(cells) != len(part) {
			t.Fatalf("Row of columns %s..%s = %d cells, %v; want %d", part[0], part[len(part)-1], len(cells), err, len(part))
		}
		for i, c := range cells {
			if c.Column != part[i] || string(c.Body) != big {
				t.Errorf("Row cell %d is column %s with %d bytes; want %s with %d", i, c.Column, len(c.Body), part[i], len(big))
			}
		}
	}
	// A small row beside it is answered as ever.
	put(t, s, "rs", "a", 1, `{"v":1}`)
	if cells, err := s.Row(ctx(t), "rs", nil); err != nil || len(cells) != 1 {
		t.Errorf("Row of a small row = %d cells, %v", len(cells), err)
	}
}
