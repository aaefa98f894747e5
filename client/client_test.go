package client_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/cellar-db/cellar"
	"github.com/cellar-db/cellar/client"
	cellarhttp "github.com/cellar-db/cellar/internal/http"
	"github.com/cellar-db/cellar/internal/sqlite"
	"github.com/cellar-db/cellar/internal/sqlstore"
)

const shardCount = 64

// newServer starts the real HTTP API over a fresh SQLite node and returns a
// client of it and the node, for checking what was stored.
func newServer(tb testing.TB, opts cellarhttp.Options, copts ...client.Option) (*client.Client, cellar.Store, *httptest.Server) {
	tb.Helper()
	ctx := context.Background()
	store, err := sqlite.Open(ctx, filepath.Join(tb.TempDir(), "n.db"),
		sqlite.Options{Options: sqlstore.Options{Name: "t", ShardCount: shardCount, Create: true}})
	if err != nil {
		tb.Fatalf("open store: %v", err)
	}
	tb.Cleanup(func() {
		if err := store.Close(); err != nil {
			tb.Errorf("close store: %v", err)
		}
	})
	srv := httptest.NewServer(cellarhttp.NewHandler(store, opts))
	tb.Cleanup(srv.Close)
	return client.New(srv.URL, copts...), store, srv
}

func put(tb testing.TB, c cellar.Store, row, col string, ref int64, body string) cellar.Cell {
	tb.Helper()
	cell, _, err := c.Put(context.Background(), newCell(row, col, ref, body))
	if err != nil {
		tb.Fatalf("Put(%q, %q, %d) error: %v", row, col, ref, err)
	}
	return cell
}

func newCell(row, col string, ref int64, body string) cellar.NewCell {
	return cellar.NewCell{Key: cellar.Key{RowKey: row, Column: col, RefKey: ref}, Body: json.RawMessage(body)}
}

func ref(n int64) *int64 { return &n }

func TestPutGetLatest(t *testing.T) {
	c, _, _ := newServer(t, cellarhttp.Options{})
	ctx := context.Background()

	before := time.Now().Add(-time.Second)
	cell, created, err := c.Put(ctx, newCell("user:1", "profile", 10, `{"name": "Ada", "n": 1.50}`))
	if err != nil {
		t.Fatalf("Put error: %v", err)
	}
	if !created {
		t.Errorf("Put of a new cell: created = false; want true")
	}
	wantKey := cellar.Key{RowKey: "user:1", Column: "profile", RefKey: 10}
	if cell.Key != wantKey {
		t.Errorf("Put key = %+v; want %+v", cell.Key, wantKey)
	}
	if want := cellar.ShardOf("user:1", shardCount); cell.Shard != want {
		t.Errorf("Put shard = %d; want %d", cell.Shard, want)
	}
	if cell.AddedID < 1 {
		t.Errorf("Put added_id = %d; want >= 1", cell.AddedID)
	}
	if cell.CreatedAt.Before(before) || cell.CreatedAt.After(time.Now().Add(time.Second)) {
		t.Errorf("Put created_at = %v; want about now", cell.CreatedAt)
	}

	// An equal replay (whitespace aside) returns the original's metadata.
	again, created, err := c.Put(ctx, newCell("user:1", "profile", 10, `{"name":"Ada","n":1.50}`))
	if err != nil {
		t.Fatalf("Put replay error: %v", err)
	}
	if created {
		t.Errorf("Put replay: created = true; want false")
	}
	if again.AddedID != cell.AddedID || !again.CreatedAt.Equal(cell.CreatedAt) {
		t.Errorf("Put replay = added_id %d created_at %v; want the original's %d %v", again.AddedID, again.CreatedAt, cell.AddedID, cell.CreatedAt)
	}

	// "1.5" is a different body from "1.50".
	if _, _, err := c.Put(ctx, newCell("user:1", "profile", 10, `{"name":"Ada","n":1.5}`)); !errors.Is(err, cellar.ErrConflict) {
		t.Errorf("Put of a different body = %v; want conflict", err)
	}

	got, err := c.Get(ctx, wantKey)
	if err != nil {
		t.Fatalf("Get error: %v", err)
	}
	if want := `{"name":"Ada","n":1.50}`; string(got.Body) != want {
		t.Errorf("Get body = %s; want %s", got.Body, want)
	}
	if got.Key != wantKey || got.Shard != cell.Shard || got.AddedID != cell.AddedID || !got.CreatedAt.Equal(cell.CreatedAt) {
		t.Errorf("Get = %+v; want the metadata of %+v", got, cell)
	}

	if _, err := c.Get(ctx, cellar.Key{RowKey: "user:1", Column: "profile", RefKey: 11}); !errors.Is(err, cellar.ErrNotFound) {
		t.Errorf("Get of a missing cell = %v; want not found", err)
	}

	put(t, c, "user:1", "profile", 12, `{"v":12}`)
	put(t, c, "user:1", "profile", 11, `{"v":11}`)
	latest, err := c.Latest(ctx, "user:1", "profile")
	if err != nil {
		t.Fatalf("Latest error: %v", err)
	}
	if latest.RefKey != 12 || string(latest.Body) != `{"v":12}` {
		t.Errorf("Latest = ref %d body %s; want ref 12 body {\"v\":12}", latest.RefKey, latest.Body)
	}
	if _, err := c.Latest(ctx, "user:1", "other"); !errors.Is(err, cellar.ErrNotFound) {
		t.Errorf("Latest of an empty column = %v; want not found", err)
	}
	if err := c.Close(); err != nil {
		t.Errorf("Close = %v; want nil", err)
	}
}

func TestRow(t *testing.T) {
	c, _, _ := newServer(t, cellarhttp.Options{})
	ctx := context.Background()
	put(t, c, "r", "b", 1, `{"b":1}`)
	put(t, c, "r", "b", 2, `{"b":2}`)
	put(t, c, "r", "a", 5, `{"a":5}`)
	put(t, c, "r", "c", 1, `{"c":1}`)
	put(t, c, "other", "a", 1, `{}`)

	summary := func(cells []cellar.Cell) string {
		var parts []string
		for _, c := range cells {
			parts = append(parts, fmt.Sprintf("%s/%d=%s", c.Column, c.RefKey, c.Body))
		}
		return strings.Join(parts, " ")
	}
	cells, err := c.Row(ctx, "r", nil)
	if err != nil {
		t.Fatalf("Row error: %v", err)
	}
	if got, want := summary(cells), `a/5={"a":5} b/2={"b":2} c/1={"c":1}`; got != want {
		t.Errorf("Row(r) = %s; want %s", got, want)
	}
	cells, err = c.Row(ctx, "r", []string{"c", "b"})
	if err != nil {
		t.Fatalf("Row with columns error: %v", err)
	}
	if got, want := summary(cells), `b/2={"b":2} c/1={"c":1}`; got != want {
		t.Errorf("Row(r, [c b]) = %s; want %s", got, want)
	}
	cells, err = c.Row(ctx, "nobody", nil)
	if err != nil {
		t.Fatalf("Row of an empty row error: %v", err)
	}
	if cells == nil || len(cells) != 0 {
		t.Errorf("Row of an empty row = %#v; want an empty, non-nil slice", cells)
	}
	// A name that is no column is refused, not read as other columns or
	// as the whole row.
	for _, cols := range [][]string{{"no-dash"}, {"a,b"}, {""}, {"a", ""}, {"a", "1b"}} {
		if got, err := c.Row(ctx, "r", cols); !errors.Is(err, cellar.ErrInvalid) {
			t.Errorf("Row with columns %q = %s, %v; want invalid", cols, summary(got), err)
		}
	}
}

// TestRowKeys puts and reads back row keys that need escaping in a URL
// path, through every method that takes one.
func TestRowKeys(t *testing.T) {
	c, _, _ := newServer(t, cellarhttp.Options{})
	ctx := context.Background()
	keys := []string{
		"a/b", "a//b", "/lead", "trail/", "//", ".", "..", "a/../b", "./x", "x/.",
		"with space", " ", "100%", "%2F", "%", "a%20b", "?q=1&r=2", "#frag", "a+b",
		"a;b,c=d", "ünïcødé 日本語 🍷", "\"quoted\"", `back\slash`, "<tag>&amp;", "~tilde",
	}
	for i, row := range keys {
		body := fmt.Sprintf(`{"i":%d}`, i)
		cell, created, err := c.Put(ctx, newCell(row, "col", 7, body))
		if err != nil || !created {
			t.Errorf("Put(%q) = created %t, %v; want created", row, created, err)
			continue
		}
		if cell.RowKey != row || cell.Shard != cellar.ShardOf(row, shardCount) {
			t.Errorf("Put(%q) stored row %q in shard %d; want shard %d", row, cell.RowKey, cell.Shard, cellar.ShardOf(row, shardCount))
		}
		got, err := c.Get(ctx, cellar.Key{RowKey: row, Column: "col", RefKey: 7})
		if err != nil || got.RowKey != row || string(got.Body) != body {
			t.Errorf("Get(%q) = row %q body %s, %v; want body %s", row, got.RowKey, got.Body, err, body)
		}
		got, err = c.Latest(ctx, row, "col")
		if err != nil || got.RowKey != row || string(got.Body) != body {
			t.Errorf("Latest(%q) = row %q body %s, %v; want body %s", row, got.RowKey, got.Body, err, body)
		}
		cells, err := c.Row(ctx, row, nil)
		if err != nil || len(cells) != 1 || cells[0].RowKey != row || string(cells[0].Body) != body {
			t.Errorf("Row(%q) = %+v, %v; want the one cell", row, cells, err)
		}
	}
	// Keys differing only in escaping must not meet.
	got, err := c.Get(ctx, cellar.Key{RowKey: "a/b", Column: "col", RefKey: 7})
	if err != nil || string(got.Body) != `{"i":0}` {
		t.Errorf("Get(a/b) = %s, %v; want {\"i\":0}", got.Body, err)
	}
}

// TestSlashRowKey checks the row key "/", whose path segment %2F Go's
// ServeMux (as of Go 1.26) never matches to a wildcard; the server works
// around that.
func TestSlashRowKey(t *testing.T) {
	c, _, _ := newServer(t, cellarhttp.Options{})
	ctx := context.Background()
	_, _, err := c.Put(ctx, newCell("/", "col", 1, `{}`))
	if err != nil {
		t.Fatalf("Put(\"/\") error: %v", err)
	}
	got, err := c.Get(ctx, cellar.Key{RowKey: "/", Column: "col", RefKey: 1})
	if err != nil || got.RowKey != "/" {
		t.Errorf("Get(\"/\") = row %q, %v; want row \"/\"", got.RowKey, err)
	}
	for _, row := range []string{"/", "//", "a/"} {
		cells, err := c.Row(ctx, row, nil)
		if err != nil {
			t.Errorf("Row(%q): %v", row, err)
		}
		if row == "/" && (len(cells) != 1 || cells[0].RowKey != "/") {
			t.Errorf("Row(\"/\") = %+v", cells)
		}
	}
	if _, err := c.Latest(ctx, "/", "col"); err != nil {
		t.Errorf("Latest(\"/\"): %v", err)
	}
}

func TestPutInvalid(t *testing.T) {
	c, store, _ := newServer(t, cellarhttp.Options{MaxBodyBytes: 100})
	ctx := context.Background()
	tests := []struct {
		name string
		cell cellar.NewCell
		want error
	}{
		{"bad column", newCell("r", "1col", 1, `{}`), cellar.ErrInvalid},
		{"column with slash", newCell("r", "a/b", 1, `{}`), cellar.ErrInvalid},
		{"empty column", newCell("r", "", 1, `{}`), cellar.ErrInvalid},
		{"empty row", newCell("", "c", 1, `{}`), cellar.ErrInvalid},
		{"negative ref", newCell("r", "c", -1, `{}`), cellar.ErrInvalid},
		{"control character in row", newCell("a\nb", "c", 1, `{}`), cellar.ErrInvalid},
		{"invalid UTF-8 row", newCell("a\xffb", "c", 1, `{}`), cellar.ErrInvalid},
		{"row too long", newCell(strings.Repeat("r", 256), "c", 1, `{}`), cellar.ErrInvalid},
		{"array body", newCell("r", "c", 1, `[1]`), cellar.ErrInvalid},
		{"not JSON", newCell("r", "c", 1, `{"a":`), cellar.ErrInvalid},
		{"duplicate key", newCell("r", "c", 1, `{"a":1,"a":2}`), cellar.ErrInvalid},
		{"empty body", newCell("r", "c", 1, ``), cellar.ErrInvalid},
		{"too large", newCell("r", "c", 1, `{"a":"`+strings.Repeat("x", 200)+`"}`), cellar.ErrTooLarge},
	}
	for _, tt := range tests {
		_, _, err := c.Put(ctx, tt.cell)
		if !errors.Is(err, tt.want) {
			t.Errorf("%s: Put = %v; want %v", tt.name, err, tt.want)
		}
		var ce *cellar.Error
		if errors.As(err, &ce) && ce.Message == "" {
			t.Errorf("%s: Put error %v has no message", tt.name, err)
		}
	}
	res, err := store.Scan(ctx, cellar.ShardOf("r", shardCount), 0, 10, "")
	if err != nil || len(res.Cells) != 0 {
		t.Errorf("after refused puts, the store holds %d cells, %v; want none", len(res.Cells), err)
	}
	if _, err := c.Get(ctx, cellar.Key{RowKey: "r", Column: "1col", RefKey: 1}); !errors.Is(err, cellar.ErrInvalid) {
		t.Errorf("Get with a bad column = %v; want invalid", err)
	}
	if _, err := c.Latest(ctx, "", "c"); !errors.Is(err, cellar.ErrInvalid) {
		t.Errorf("Latest with an empty row = %v; want invalid", err)
	}

	// The byte limit counts a body as written, whitespace and all, through
	// Put and BatchPut alike: the client sends it as it is.
	spaced := newCell("r", "c", 2, `{"a":1`+strings.Repeat(" ", 100)+`}`)
	if _, _, err := c.Put(ctx, spaced); !errors.Is(err, cellar.ErrTooLarge) {
		t.Errorf("Put of a body spaced past the limit = %v; want too large", err)
	}
	if r := c.BatchPut(ctx, []cellar.NewCell{spaced}); !errors.Is(r[0].Err, cellar.ErrTooLarge) {
		t.Errorf("BatchPut of a body spaced past the limit = %+v; want too large", r[0])
	}
}

// TestNoPanic feeds the client what a careless caller might.
func TestNoPanic(t *testing.T) {
	c, _, _ := newServer(t, cellarhttp.Options{})
	var nilCtx context.Context // a caller's mistake, which must not panic
	if _, _, err := c.Put(nilCtx, newCell("r", "c", 1, `{}`)); err == nil {
		t.Errorf("Put with a nil context succeeded")
	}
	if _, _, err := c.Put(context.Background(), cellar.NewCell{}); !errors.Is(err, cellar.ErrInvalid) {
		t.Errorf("Put of a zero NewCell = %v; want invalid", err)
	}
	if res := c.BatchGet(context.Background(), nil); len(res) != 0 {
		t.Errorf("BatchGet(nil) = %v; want no results", res)
	}
	if res := c.BatchPut(context.Background(), nil); len(res) != 0 {
		t.Errorf("BatchPut(nil) = %v; want no results", res)
	}
	bad := client.New("http://[::1")
	if _, err := bad.Get(context.Background(), cellar.Key{RowKey: "r", Column: "c"}); err == nil {
		t.Errorf("Get with a malformed server URL succeeded")
	}
}

// TestNumberLiterals checks that bodies come back byte for byte through
// every read path, however large or precise their numbers.
func TestNumberLiterals(t *testing.T) {
	c, _, _ := newServer(t, cellarhttp.Options{})
	ctx := context.Background()
	const body = `{"big":12345678901234567890,"huge":1e400,"tiny":-1.0E-400,"precise":0.10000000000000000000001,"zero":-0,"n":[1.0,2.50,3e0],"s":"\u00e9\n"}`
	row := "numbers"
	put(t, c, row, "c", 1, body)
	c.BatchPut(ctx, []cellar.NewCell{newCell(row, "d", 1, body)})

	check := func(how string, got json.RawMessage) {
		t.Helper()
		if string(got) != body {
			t.Errorf("%s body = %s; want %s", how, got, body)
		}
	}
	got, err := c.Get(ctx, cellar.Key{RowKey: row, Column: "c", RefKey: 1})
	if err != nil {
		t.Fatalf("Get error: %v", err)
	}
	check("Get", got.Body)
	got, err = c.Get(ctx, cellar.Key{RowKey: row, Column: "d", RefKey: 1})
	if err != nil {
		t.Fatalf("Get of the batch-put cell error: %v", err)
	}
	check("Get of BatchPut cell", got.Body)
	if got, err = c.Latest(ctx, row, "c"); err != nil {
		t.Fatalf("Latest error: %v", err)
	}
	check("Latest", got.Body)
	cells, err := c.Row(ctx, row, nil)
	if err != nil || len(cells) != 2 {
		t.Fatalf("Row = %d cells, %v; want 2", len(cells), err)
	}
	check("Row", cells[0].Body)
	res := c.BatchGet(ctx, []cellar.LookupKey{{RowKey: row, Column: "c", RefKey: ref(1)}})
	if res[0].Err != nil {
		t.Fatalf("BatchGet error: %v", res[0].Err)
	}
	check("BatchGet", res[0].Cell.Body)
	sr, err := c.Scan(ctx, cellar.ShardOf(row, shardCount), 0, 10, "c")
	if err != nil || len(sr.Cells) != 1 {
		t.Fatalf("Scan = %d cells, %v; want 1", len(sr.Cells), err)
	}
	check("Scan", sr.Cells[0].Body)
}

// TestHTMLCharacters checks that <, > and & in a body are not escaped on
// the way in (by BatchPut's encoding) or out.
func TestHTMLCharacters(t *testing.T) {
	c, store, _ := newServer(t, cellarhttp.Options{})
	ctx := context.Background()
	const body = `{"html":"<b>&amp;</b>"}`
	if res := c.BatchPut(ctx, []cellar.NewCell{newCell("h", "c", 1, body)}); res[0].Err != nil {
		t.Fatalf("BatchPut error: %v", res[0].Err)
	}
	stored, err := store.Get(ctx, cellar.Key{RowKey: "h", Column: "c", RefKey: 1})
	if err != nil {
		t.Fatalf("store.Get error: %v", err)
	}
	if string(stored.Body) != body {
		t.Errorf("BatchPut stored %s; want %s", stored.Body, body)
	}
	got, err := c.Get(ctx, cellar.Key{RowKey: "h", Column: "c", RefKey: 1})
	if err != nil {
		t.Fatalf("Get error: %v", err)
	}
	if string(got.Body) != body {
		t.Errorf("Get body = %s; want %s", got.Body, body)
	}
}

func TestBatchGet(t *testing.T) {
	c, _, _ := newServer(t, cellarhttp.Options{})
	ctx := context.Background()
	put(t, c, "a/b", "x", 1, `{"v":"a1"}`)
	put(t, c, "a/b", "x", 2, `{"v":"a2"}`)
	put(t, c, "z", "y", 3, `{"v":"z3"}`)

	keys := []cellar.LookupKey{
		{RowKey: "z", Column: "y", RefKey: ref(3)},
		{RowKey: "a/b", Column: "x", RefKey: ref(9)},    // missing
		{RowKey: "a/b", Column: "x"},                    // latest
		{RowKey: "a/b", Column: "1bad", RefKey: ref(1)}, // invalid
		{RowKey: "a\xff", Column: "x"},                  // not UTF-8: refused by the client
		{RowKey: "a/b", Column: "x", RefKey: ref(1)},
		{RowKey: "nobody", Column: "x"}, // no latest
	}
	res := c.BatchGet(ctx, keys)
	if len(res) != len(keys) {
		t.Fatalf("BatchGet returned %d results for %d keys", len(res), len(keys))
	}
	want := []struct {
		body string
		err  error
	}{
		{`{"v":"z3"}`, nil},
		{"", cellar.ErrNotFound},
		{`{"v":"a2"}`, nil},
		{"", cellar.ErrInvalid},
		{"", cellar.ErrInvalid},
		{`{"v":"a1"}`, nil},
		{"", cellar.ErrNotFound},
	}
	for i, w := range want {
		r := res[i]
		if w.err != nil {
			if !errors.Is(r.Err, w.err) || r.Cell != nil {
				t.Errorf("result %d = %+v, %v; want error %v", i, r.Cell, r.Err, w.err)
			}
			continue
		}
		if r.Err != nil || r.Cell == nil || string(r.Cell.Body) != w.body || r.Cell.RowKey != keys[i].RowKey {
			t.Errorf("result %d = %+v, %v; want body %s", i, r.Cell, r.Err, w.body)
		}
	}

	// A request the server refuses as a whole fails every key.
	small, _, _ := newServer(t, cellarhttp.Options{MaxRequestBytes: 512})
	many := make([]cellar.LookupKey, 100)
	for i := range many {
		many[i] = cellar.LookupKey{RowKey: "z", Column: "y", RefKey: ref(3)}
	}
	for i, r := range small.BatchGet(ctx, many) {
		if !errors.Is(r.Err, cellar.ErrTooLarge) {
			t.Fatalf("oversized BatchGet: result %d = %v; want too large", i, r.Err)
		}
	}
}

func TestBatchPut(t *testing.T) {
	c, store, _ := newServer(t, cellarhttp.Options{})
	ctx := context.Background()
	existing := put(t, c, "e", "c", 1, `{"v":1}`)

	cells := []cellar.NewCell{
		newCell("n1", "c", 1, `{"v": "new"}`),
		newCell("e", "c", 1, `{ "v" : 1 }`), // replay
		newCell("e", "c", 1, `{"v":2}`),     // conflict
		newCell("n2", "bad-col", 1, `{}`),   // invalid key
		newCell("n3", "c", 1, `{"v":`),      // not JSON: refused by the client
		newCell("n4", "c", 1, `[]`),         // not an object
		newCell("n5/x y", "c", 1, `{"big":12345678901234567890}`),
	}
	res := c.BatchPut(ctx, cells)
	if len(res) != len(cells) {
		t.Fatalf("BatchPut returned %d results for %d cells", len(res), len(cells))
	}
	wantErr := []error{nil, nil, cellar.ErrConflict, cellar.ErrInvalid, cellar.ErrInvalid, cellar.ErrInvalid, nil}
	wantCreated := []bool{true, false, false, false, false, false, true}
	for i, r := range res {
		if wantErr[i] != nil {
			if !errors.Is(r.Err, wantErr[i]) {
				t.Errorf("result %d error = %v; want %v", i, r.Err, wantErr[i])
			}
			continue
		}
		if r.Err != nil {
			t.Errorf("result %d error = %v; want none", i, r.Err)
			continue
		}
		if r.Created != wantCreated[i] {
			t.Errorf("result %d created = %t; want %t", i, r.Created, wantCreated[i])
		}
		if r.Cell.Key != cells[i].Key || r.Cell.Shard != cellar.ShardOf(cells[i].RowKey, shardCount) || r.Cell.AddedID < 1 || r.Cell.CreatedAt.IsZero() {
			t.Errorf("result %d = %+v; want the metadata of %+v", i, r.Cell, cells[i].Key)
		}
	}
	if res[1].Cell.AddedID != existing.AddedID {
		t.Errorf("replay added_id = %d; want the original's %d", res[1].Cell.AddedID, existing.AddedID)
	}
	got, err := store.Get(ctx, cellar.Key{RowKey: "n5/x y", Column: "c", RefKey: 1})
	if err != nil || string(got.Body) != `{"big":12345678901234567890}` {
		t.Errorf("stored n5 = %s, %v; want {\"big\":12345678901234567890}", got.Body, err)
	}
	if _, err := store.Get(ctx, cellar.Key{RowKey: "n4", Column: "c", RefKey: 1}); !errors.Is(err, cellar.ErrNotFound) {
		t.Errorf("refused cell n4 was stored: %v", err)
	}
}

func TestScan(t *testing.T) {
	c, _, _ := newServer(t, cellarhttp.Options{})
	ctx := context.Background()
	// Cells of one row all land in its shard; another row in another shard
	// must not show up.
	row := "scan-row"
	shard := cellar.ShardOf(row, shardCount)
	other := "other-row"
	for cellar.ShardOf(other, shardCount) == shard {
		other += "+"
	}
	var want []int64
	for i := range 7 {
		col := "a"
		if i%3 == 2 {
			col = "b"
		}
		want = append(want, put(t, c, row, col, int64(i), fmt.Sprintf(`{"i":%d}`, i)).AddedID)
		put(t, c, other, "a", int64(i), `{}`)
	}

	var got []int64
	after := int64(0)
	pages := 0
	for {
		res, err := c.Scan(ctx, shard, after, 3, "")
		if err != nil {
			t.Fatalf("Scan(after=%d) error: %v", after, err)
		}
		pages++
		for _, cell := range res.Cells {
			if cell.Shard != shard || cell.RowKey != row {
				t.Errorf("Scan of shard %d returned %q in shard %d", shard, cell.RowKey, cell.Shard)
			}
			if cell.AddedID <= after {
				t.Errorf("Scan(after=%d) returned added_id %d", after, cell.AddedID)
			}
			got = append(got, cell.AddedID)
		}
		if len(res.Cells) > 0 && res.Next != res.Cells[len(res.Cells)-1].AddedID {
			t.Errorf("Scan next = %d; want the last added_id %d", res.Next, res.Cells[len(res.Cells)-1].AddedID)
		}
		if len(res.Cells) == 0 {
			if res.Next != after {
				t.Errorf("empty Scan next = %d; want after = %d", res.Next, after)
			}
			break
		}
		after = res.Next
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("Scan pages gave added_ids %v; want %v", got, want)
	}
	if pages != 4 {
		t.Errorf("Scan took %d pages of 3 for 7 cells; want 4 (the last empty)", pages)
	}

	res, err := c.Scan(ctx, shard, 0, 100, "b")
	if err != nil {
		t.Fatalf("Scan with column error: %v", err)
	}
	var cols []string
	for _, cell := range res.Cells {
		cols = append(cols, fmt.Sprintf("%s/%d", cell.Column, cell.RefKey))
	}
	if got, want := strings.Join(cols, " "), "b/2 b/5"; got != want {
		t.Errorf("Scan of column b = %s; want %s", got, want)
	}

	for _, tt := range []struct {
		shard int
		after int64
		limit int
	}{
		{shardCount, 0, 10},
		{-1, 0, 10},
		{0, -1, 10},
		{0, 0, 0},
		{0, 0, cellar.MaxScanLimit + 1},
	} {
		if _, err := c.Scan(ctx, tt.shard, tt.after, tt.limit, ""); !errors.Is(err, cellar.ErrInvalid) {
			t.Errorf("Scan(%d, %d, %d) = %v; want invalid", tt.shard, tt.after, tt.limit, err)
		}
	}
	if _, err := c.Scan(ctx, 0, 0, 10, "no-such!"); !errors.Is(err, cellar.ErrInvalid) {
		t.Errorf("Scan with a bad column = %v; want invalid", err)
	}
}

func TestShards(t *testing.T) {
	topo := cellar.Topology{ShardCount: 64, Version: 3, Nodes: []cellar.NodeInfo{
		{Name: "n1", Driver: "sqlite", Ranges: []cellar.ShardRange{{First: 0, Last: 31}}},
		{Name: "n2", Driver: "postgres", Ranges: []cellar.ShardRange{{First: 32, Last: 40}, {First: 41, Last: 63}}},
	}}
	c, _, _ := newServer(t, cellarhttp.Options{Topology: func() cellar.Topology { return topo }})
	got, err := c.Shards(context.Background())
	if err != nil {
		t.Fatalf("Shards error: %v", err)
	}
	if !reflect.DeepEqual(got, topo) {
		t.Errorf("Shards = %+v; want %+v", got, topo)
	}

	c, _, _ = newServer(t, cellarhttp.Options{})
	if _, err := c.Shards(context.Background()); !errors.Is(err, cellar.ErrNotFound) {
		t.Errorf("Shards of a server without topology = %v; want not found", err)
	}
}

func TestAuth(t *testing.T) {
	opts := cellarhttp.Options{Tokens: []cellarhttp.Token{
		{Secret: "reader", Scopes: []string{cellarhttp.ScopeRead}},
		{Secret: "writer", Scopes: []string{cellarhttp.ScopeRead, cellarhttp.ScopeWrite}},
	}}
	anon, _, srv := newServer(t, opts)
	ctx := context.Background()
	writer := client.New(srv.URL, client.WithToken("writer"))
	reader := client.New(srv.URL, client.WithToken("reader"))
	wrong := client.New(srv.URL, client.WithToken("nope"))

	if _, _, err := writer.Put(ctx, newCell("r", "c", 1, `{}`)); err != nil {
		t.Fatalf("Put with a write token error: %v", err)
	}
	if _, err := reader.Get(ctx, cellar.Key{RowKey: "r", Column: "c", RefKey: 1}); err != nil {
		t.Errorf("Get with a read token error: %v", err)
	}
	if _, _, err := reader.Put(ctx, newCell("r", "c", 2, `{}`)); !errors.Is(err, cellar.ErrPermissionDenied) {
		t.Errorf("Put with a read token = %v; want permission_denied", err)
	}
	for _, r := range reader.BatchPut(ctx, []cellar.NewCell{newCell("r", "c", 2, `{}`), newCell("r", "c", 3, `{}`)}) {
		if !errors.Is(r.Err, cellar.ErrPermissionDenied) {
			t.Errorf("BatchPut with a read token: result error = %v; want permission_denied", r.Err)
		}
	}
	if _, err := anon.Get(ctx, cellar.Key{RowKey: "r", Column: "c", RefKey: 1}); !errors.Is(err, cellar.ErrUnauthenticated) {
		t.Errorf("Get without a token = %v; want unauthenticated", err)
	}
	if _, err := wrong.Row(ctx, "r", nil); !errors.Is(err, cellar.ErrUnauthenticated) {
		t.Errorf("Row with an unknown token = %v; want unauthenticated", err)
	}
}

func TestUnavailable(t *testing.T) {
	srv := httptest.NewServer(http.NotFoundHandler())
	srv.Close() // nothing listens at srv.URL any more
	c := client.New(srv.URL)
	ctx := context.Background()

	_, err := c.Get(ctx, cellar.Key{RowKey: "r", Column: "c", RefKey: 1})
	if !errors.Is(err, cellar.ErrUnavailable) {
		t.Fatalf("Get from a closed server = %v; want unavailable", err)
	}
	var ue *url.Error
	if !errors.As(err, &ue) {
		t.Errorf("Get from a closed server = %v; want it to wrap the *url.Error", err)
	}
	if _, _, err := c.Put(ctx, newCell("r", "c", 1, `{}`)); !errors.Is(err, cellar.ErrUnavailable) {
		t.Errorf("Put = %v; want unavailable", err)
	}
	if _, err := c.Latest(ctx, "r", "c"); !errors.Is(err, cellar.ErrUnavailable) {
		t.Errorf("Latest = %v; want unavailable", err)
	}
	if _, err := c.Row(ctx, "r", nil); !errors.Is(err, cellar.ErrUnavailable) {
		t.Errorf("Row = %v; want unavailable", err)
	}
	if _, err := c.Scan(ctx, 0, 0, 10, ""); !errors.Is(err, cellar.ErrUnavailable) {
		t.Errorf("Scan = %v; want unavailable", err)
	}
	if _, err := c.Shards(ctx); !errors.Is(err, cellar.ErrUnavailable) {
		t.Errorf("Shards = %v; want unavailable", err)
	}
	for i, r := range c.BatchGet(ctx, []cellar.LookupKey{{RowKey: "a", Column: "c"}, {RowKey: "b", Column: "c"}}) {
		if !errors.Is(r.Err, cellar.ErrUnavailable) {
			t.Errorf("BatchGet result %d = %v; want unavailable", i, r.Err)
		}
	}
	for i, r := range c.BatchPut(ctx, []cellar.NewCell{newCell("a", "c", 1, `{}`), newCell("b", "c", 1, `{}`)}) {
		if !errors.Is(r.Err, cellar.ErrUnavailable) {
			t.Errorf("BatchPut result %d = %v; want unavailable", i, r.Err)
		}
	}

	// A cancelled request is unavailable too, and says why.
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	live, _, _ := newServer(t, cellarhttp.Options{})
	if _, err := live.Get(cctx, cellar.Key{RowKey: "r", Column: "c", RefKey: 1}); !errors.Is(err, cellar.ErrUnavailable) || !errors.Is(err, context.Canceled) {
		t.Errorf("Get with a cancelled context = %v; want unavailable wrapping context.Canceled", err)
	}
}

// TestForeignResponses checks answers that do not come from the API: a
// proxy's error page, a redirect, a garbled body.
func TestForeignResponses(t *testing.T) {
	tests := []struct {
		name    string
		handler http.HandlerFunc
		want    string
	}{
		{"bad gateway", func(w http.ResponseWriter, r *http.Request) {
			http.Error(w, "upstream down", http.StatusBadGateway)
		}, cellar.EUNAVAILABLE},
		// A proxy's rate limit or request timeout: nothing reached the
		// server; retry with backoff, as for unavailable (API.md).
		{"too many requests", func(w http.ResponseWriter, r *http.Request) {
			http.Error(w, "<html><body>429 Too Many Requests</body></html>", http.StatusTooManyRequests)
		}, cellar.EUNAVAILABLE},
		{"request timeout", func(w http.ResponseWriter, r *http.Request) {
			http.Error(w, "<html><body>408 Request Time-out</body></html>", http.StatusRequestTimeout)
		}, cellar.EUNAVAILABLE},
		{"plain 404", func(w http.ResponseWriter, r *http.Request) {
			http.NotFound(w, r)
		}, cellar.EINTERNAL},
		{"redirect", func(w http.ResponseWriter, r *http.Request) {
			http.Redirect(w, r, "/elsewhere", http.StatusTemporaryRedirect)
		}, cellar.EINTERNAL},
		{"garbled", func(w http.ResponseWriter, r *http.Request) {
			w.Write([]byte("{not json"))
		}, cellar.EINTERNAL},
		{"error without code", func(w http.ResponseWriter, r *http.Request) {
			w.WriteHeader(http.StatusBadRequest)
			w.Write([]byte(`{"error":{"message":"huh"}}`))
		}, cellar.EINVALID},
		{"code wins over status", func(w http.ResponseWriter, r *http.Request) {
			w.WriteHeader(http.StatusInternalServerError)
			w.Write([]byte(`{"error":{"code":"conflict","message":"m"}}`))
		}, cellar.ECONFLICT},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var redirected bool
			mux := http.NewServeMux()
			mux.HandleFunc("/elsewhere", func(w http.ResponseWriter, r *http.Request) { redirected = true })
			mux.Handle("/v1/", tt.handler)
			srv := httptest.NewServer(mux)
			defer srv.Close()
			c := client.New(srv.URL)
			_, _, err := c.Put(context.Background(), newCell("r", "c", 1, `{}`))
			if got := cellar.ErrorCode(err); got != tt.want {
				t.Errorf("Put = %v; want code %s", err, tt.want)
			}
			if redirected {
				t.Errorf("Put followed a redirect")
			}
		})
	}
}

func TestOptions(t *testing.T) {
	var paths []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		paths = append(paths, r.URL.EscapedPath())
		if got := r.Header.Get("Authorization"); got != "Bearer s3cret" {
			t.Errorf("Authorization = %q; want Bearer s3cret", got)
		}
		w.Write([]byte(`{"shard_count":1,"version":1,"nodes":[]}`))
	}))
	defer srv.Close()

	calls := 0
	hc := &http.Client{Transport: roundTripFunc(func(r *http.Request) (*http.Response, error) {
		calls++
		return http.DefaultTransport.RoundTrip(r)
	})}
	// A trailing slash and a missing scheme are both fine.
	c := client.New(strings.TrimPrefix(srv.URL, "http://")+"/", client.WithHTTPClient(hc), client.WithToken("s3cret"))
	if _, err := c.Shards(context.Background()); err != nil {
		t.Fatalf("Shards error: %v", err)
	}
	if calls != 1 {
		t.Errorf("the HTTP client was used %d times; want 1", calls)
	}
	if hc.CheckRedirect != nil {
		t.Errorf("New changed the caller's http.Client")
	}
	if want := []string{"/v1/shards"}; !reflect.DeepEqual(paths, want) {
		t.Errorf("paths = %q; want %q", paths, want)
	}
}

// TestNilHTTPClient: WithHTTPClient(nil) means the default client.
func TestNilHTTPClient(t *testing.T) {
	c, _, srv := newServer(t, cellarhttp.Options{})
	c2 := client.New(srv.URL, client.WithHTTPClient(nil))
	put(t, c, "r", "c", 1, `{}`)
	if _, err := c2.Get(context.Background(), cellar.Key{RowKey: "r", Column: "c", RefKey: 1}); err != nil {
		t.Errorf("Get through a client made WithHTTPClient(nil): %v", err)
	}
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// TestPaths pins the URLs the client sends, escaping included.
func TestPaths(t *testing.T) {
	var got []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got = append(got, r.Method+" "+r.URL.RequestURI())
		w.Write([]byte(`{}`))
	}))
	defer srv.Close()
	c := client.New(srv.URL)
	ctx := context.Background()
	c.Put(ctx, newCell("a/b c%", "col", 5, `{}`))
	c.Get(ctx, cellar.Key{RowKey: "..", Column: "col", RefKey: 7})
	c.Latest(ctx, ".", "col")
	c.Row(ctx, "ü?#", []string{"a", "b"})
	c.Row(ctx, "r", nil)
	c.Scan(ctx, 3, 10, 20, "col")
	c.Scan(ctx, 3, 0, 5, "")
	want := []string{
		"PUT /v1/cells/a%2Fb%20c%25/col/5",
		"GET /v1/cells/%2E%2E/col/7",
		"GET /v1/cells/%2E/col",
		"GET /v1/rows/%C3%BC%3F%23?columns=a%2Cb",
		"GET /v1/rows/r",
		"GET /v1/shards/3/cells?after=10&column=col&limit=20",
		"GET /v1/shards/3/cells?after=0&limit=5",
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("requests:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

// TestConcurrent runs puts from many goroutines through one client, for the
// race detector.
func TestConcurrent(t *testing.T) {
	c, _, _ := newServer(t, cellarhttp.Options{})
	ctx := context.Background()
	errs := make(chan error, 20)
	for i := range 20 {
		go func() {
			_, _, err := c.Put(ctx, newCell(fmt.Sprintf("row%d", i), "c", 1, `{}`))
			errs <- err
		}()
	}
	for range 20 {
		if err := <-errs; err != nil {
			t.Errorf("concurrent Put error: %v", err)
		}
	}
	cells := 0
	for s := range shardCount {
		res, err := c.Scan(ctx, s, 0, 100, "")
		if err != nil {
			t.Fatalf("Scan(%d) error: %v", s, err)
		}
		cells += len(res.Cells)
	}
	if cells != 20 {
		t.Errorf("after 20 concurrent puts the store holds %d cells", cells)
	}
}

// Batches larger than the server's limit of cellar.MaxBatchKeys are sent
// in several requests, as the store's own BatchGet and BatchPut take any
// number; results stay in order, client-side refusals in place.
func TestBatchesBeyondTheRequestLimit(t *testing.T) {
	c, _, _ := newServer(t, cellarhttp.Options{})
	ctx := context.Background()
	n := 2*cellar.MaxBatchKeys + 7
	cells := make([]cellar.NewCell, n)
	keys := make([]cellar.LookupKey, n)
	for i := range cells {
		cells[i] = newCell(fmt.Sprintf("r%05d", i), "c", 1, fmt.Sprintf(`{"i":%d}`, i))
		keys[i] = cellar.LookupKey{RowKey: cells[i].RowKey, Column: "c"}
	}
	cells[1500].Body = json.RawMessage(`{"i":`) // refused by the client, the rest sent
	for i, r := range c.BatchPut(ctx, cells) {
		if i == 1500 {
			if !errors.Is(r.Err, cellar.ErrInvalid) {
				t.Errorf("put %d: %v; want invalid", i, r.Err)
			}
			continue
		}
		if r.Err != nil || !r.Created || r.Cell.RowKey != cells[i].RowKey {
			t.Fatalf("put %d: %+v", i, r)
		}
	}
	for i, r := range c.BatchGet(ctx, keys) {
		if i == 1500 {
			if !errors.Is(r.Err, cellar.ErrNotFound) {
				t.Errorf("get %d: %v; want not found", i, r.Err)
			}
			continue
		}
		if r.Err != nil || r.Cell == nil || string(r.Cell.Body) != fmt.Sprintf(`{"i":%d}`, i) {
			t.Fatalf("get %d: %+v", i, r)
		}
	}
}

// BatchGet asks again for the cells the server left out as too_large
// (an answer's bodies stay within cellar.MaxBatchGetBytes), so a batch of
// 40 bodies of about 1 MB comes back whole, in three answers.
func TestBatchGetPastTheAnswerBound(t *testing.T) {
	c, store, _ := newServer(t, cellarhttp.Options{})
	body := `{"v":"` + strings.Repeat("x", 1_000_000) + `"}`
	var keys []cellar.LookupKey
	for i := range 40 {
		row := fmt.Sprintf("big%d", i)
		put(t, store, row, "x", 1, body)
		keys = append(keys, cellar.LookupKey{RowKey: row, Column: "x"})
	}
	keys = append(keys, cellar.LookupKey{RowKey: "nobody", Column: "x"})
	res := c.BatchGet(context.Background(), keys)
	for i, r := range res[:40] {
		if r.Err != nil || r.Cell == nil || r.Cell.RowKey != keys[i].RowKey || len(r.Cell.Body) != len(body) {
			t.Errorf("result %d: %v; want the cell", i, r.Err)
		}
	}
	if !errors.Is(res[40].Err, cellar.ErrNotFound) {
		t.Errorf("missing key: %v; want not found", res[40].Err)
	}
}

// A token read from a secret file keeps the file's newline; the server
// drops white space around its secrets (README, auth.tokens), and so does
// WithToken. A token that no header can carry is refused as invalid, not
// reported as an unreachable server (which callers retry forever).
func TestTokenWhiteSpace(t *testing.T) {
	opts := cellarhttp.Options{Tokens: []cellarhttp.Token{{Secret: "s3cret", Scopes: []string{cellarhttp.ScopeAdmin}}}}
	_, _, srv := newServer(t, opts)
	ctx := context.Background()
	for _, tok := range []string{"s3cret\n", "s3cret\r\n", " s3cret\t"} {
		c := client.New(srv.URL, client.WithToken(tok))
		if _, _, err := c.Put(ctx, newCell("r", "c", 1, `{}`)); err != nil {
			t.Errorf("Put with token %q: %v; want it stored", tok, err)
		}
	}
	c := client.New(srv.URL, client.WithToken("s3c\nret"))
	_, err := c.Get(ctx, cellar.Key{RowKey: "r", Column: "c", RefKey: 1})
	if !errors.Is(err, cellar.ErrInvalid) {
		t.Errorf("Get with a token holding a newline: %v; want invalid_argument", err)
	}
}

// A foreign error page is quoted in the error's message cut to 200 bytes,
// on a character boundary: the message stays valid UTF-8 (the CLI prints
// it, and in JSON).
func TestForeignResponseCutOnCharacter(t *testing.T) {
	page := strings.Repeat("x", 199) + "é and more"
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, page, http.StatusBadGateway)
	}))
	defer srv.Close()
	_, err := client.New(srv.URL).Get(context.Background(), cellar.Key{RowKey: "r", Column: "c", RefKey: 1})
	msg := cellar.ErrorMessage(err)
	if !errors.Is(err, cellar.ErrUnavailable) || !utf8.ValidString(msg) || !strings.HasSuffix(msg, strings.Repeat("x", 199)+"...") {
		t.Errorf("Get = %v; want unavailable, quoting the page up to its 199 x's, in valid UTF-8 (message %q)", err, msg)
	}
}

// endless writes a body that never ends (until the client goes away).
func endless(status int) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(status)
		chunk := []byte(strings.Repeat("x", 64<<10))
		for {
			if _, err := w.Write(chunk); err != nil {
				return
			}
		}
	}
}

// TestEndlessResponses: a response body without end is not read to its
// end: an error page is quoted from its start, and a successful answer
// past the client's bound fails as too_large.
func TestEndlessResponses(t *testing.T) {
	for _, tt := range []struct {
		name   string
		status int
		opts   []client.Option
		want   string
	}{
		{"error page", http.StatusBadGateway, nil, cellar.EUNAVAILABLE},
		{"answer past the bound", http.StatusOK, []client.Option{client.WithMaxResponseBytes(1 << 20)}, cellar.ETOOLARGE},
	} {
		t.Run(tt.name, func(t *testing.T) {
			srv := httptest.NewServer(endless(tt.status))
			defer srv.Close()
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			_, err := client.New(srv.URL, tt.opts...).Get(ctx, cellar.Key{RowKey: "r", Column: "c", RefKey: 1})
			if got := cellar.ErrorCode(err); got != tt.want || ctx.Err() != nil {
				t.Errorf("Get = %v; want code %s before the deadline", err, tt.want)
			}
		})
	}
}

// TestResponseAtTheBound: an answer of exactly the bound is read.
func TestResponseAtTheBound(t *testing.T) {
	body := `{"shard_count":1,"version":1,"nodes":[]}`
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write([]byte(body)) }))
	defer srv.Close()
	if _, err := client.New(srv.URL, client.WithMaxResponseBytes(int64(len(body)))).Shards(context.Background()); err != nil {
		t.Errorf("Shards with the bound at the answer's size: %v", err)
	}
	_, err := client.New(srv.URL, client.WithMaxResponseBytes(int64(len(body)-1))).Shards(context.Background())
	if !errors.Is(err, cellar.ErrTooLarge) {
		t.Errorf("Shards with the bound a byte short = %v; want too_large", err)
	}
}
