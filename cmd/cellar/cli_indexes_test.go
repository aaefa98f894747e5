package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/cellar-db/cellar"
	"github.com/cellar-db/cellar/client"
	"github.com/cellar-db/cellar/internal/dbtest"
)

// TestIndexesTwoServers defines an index through one server of a
// datastore over SQLite, PostgreSQL and MySQL nodes, writes through the
// other, and queries both: the servers share the index and its
// maintenance.
func TestIndexesTwoServers(t *testing.T) {
	ctx := context.Background()
	cfg := mixedConfig(t, dbtest.Postgres(t))
	if err := initDatastore(ctx, cfg, slog.New(slog.NewTextHandler(io.Discard, nil))); err != nil {
		t.Fatal(err)
	}
	cfgB := *cfg
	cfgB.Counters.Journal = "counters-b.journal"
	a, b := startServer(t, cfg), startServer(t, &cfgB)
	def := client.IndexDefinition{Column: "profile", Fields: []client.IndexField{{Name: "team", Type: "string"}, {Name: "score", Type: "float"}}}
	if _, _, err := a.DefineIndex(ctx, "by_team", def); err != nil {
		t.Fatal(err)
	}
	var written []cellar.Cell
	for i := 0; i < 40; i++ {
		c, _, err := b.Put(ctx, cellar.NewCell{Key: cellar.Key{RowKey: fmt.Sprintf("p%02d", i), Column: "profile", RefKey: 1},
			Body: []byte(fmt.Sprintf(`{"team": "t%d", "score": %d.5}`, i%4, i))})
		if err != nil {
			t.Fatal(err)
		}
		written = append(written, c)
	}
	for _, c := range []*client.Client{a, b} {
		res, err := c.QueryIndex(ctx, "by_team", client.IndexQuery{Where: map[string]any{"team": "t1"}, Desc: true,
			WaitFor: client.Written(written...), Wait: 4 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		if len(res.Entries) != 10 || res.Entries[0].RowKey != "p37" || res.Entries[9].RowKey != "p01" {
			t.Errorf("t1 by score desc = %+v", res.Entries)
		}
	}
	st, err := b.IndexStatus(ctx, "by_team")
	if err != nil || st.Lag.ShardsBehind != 0 {
		t.Errorf("status = %+v, %v", st, err)
	}
}

func TestCLIIndexes(t *testing.T) {
	cfg := defaultConfig()
	cfg.Listen = "127.0.0.1:0"
	cfg.DataDir = t.TempDir()
	cfg.Shards = cliShards
	if err := cfg.complete(); err != nil {
		t.Fatal(err)
	}
	if err := initDatastore(context.Background(), cfg, slog.New(slog.NewTextHandler(io.Discard, nil))); err != nil {
		t.Fatal(err)
	}
	addr := startServerAddr(t, cfg)
	c := client.New(addr)
	run := func(wantCode int, args ...string) string {
		t.Helper()
		stdout, stderr, code := runCLI(t, context.Background(), "", "indexes", append([]string{args[0], "--addr", addr}, args[1:]...)...)
		if code != wantCode {
			t.Fatalf("indexes %q: exit %d (want %d), stdout %s, stderr %s", args, code, wantCode, stdout, stderr)
		}
		return stdout + stderr
	}
	if out := run(0, "define", "by_city", "--column", "profile", "--field", "city:string", "--field", "age:int"); !strings.Contains(out, "index=by_city created=true column=profile fields=city:string,age:int generation=1") {
		t.Errorf("define: %s", out)
	}
	// --json says whether the define created the index too.
	if out := run(0, "define", "by_city", "--column", "profile", "--field", "city:string", "--field", "age:int", "--json"); !strings.Contains(out, `"created": false`) || !strings.Contains(out, `"name": "by_city"`) {
		t.Errorf("define --json again: %s", out)
	}
	var written []cellar.Cell
	for i, body := range []string{`{"city": "paris", "age": 30}`, `{"city": "paris", "age": 25}`, `{"city": "rome", "age": 40}`} {
		cell, _, err := c.Put(context.Background(), cellar.NewCell{Key: cellar.Key{RowKey: fmt.Sprintf("u%d", i), Column: "profile", RefKey: 1}, Body: []byte(body)})
		if err != nil {
			t.Fatal(err)
		}
		written = append(written, cell)
	}
	var waitFor []string
	for _, w := range written {
		waitFor = append(waitFor, fmt.Sprintf("%d:%d", w.Shard, w.AddedID))
	}
	out := run(0, "query", "by_city", "--where", `{"city": "paris", "age": {"gte": 20}}`,
		"--wait-for", strings.Join(waitFor[:2], ","), "--wait-for", waitFor[2], "--wait", "4s")
	if want := "ROW_KEY  REF_KEY  AGE  CITY\nu1       1        25   \"paris\"\nu0       1        30   \"paris\"\n"; out != want {
		t.Errorf("query:\n%s\nwant:\n%s", out, want)
	}
	out = run(0, "query", "by_city", "--where", `{"city": "paris"}`, "--limit", "1", "--json")
	var page struct {
		Entries []client.IndexEntry `json:"entries"`
		Cursor  string              `json:"cursor"`
	}
	if err := json.Unmarshal([]byte(out), &page); err != nil || len(page.Entries) != 1 || page.Cursor == "" {
		t.Fatalf("query --json: %s, %v", out, err)
	}
	if out := run(0, "query", "by_city", "--where", `{"city": "paris"}`, "--cursor", page.Cursor, "--fields", "age"); !strings.Contains(out, "u0") || strings.Contains(out, "u1") || strings.Contains(out, "CITY") {
		t.Errorf("second page: %s", out)
	}
	// Spaces around the names are not part of them (review of 2026-12-08:
	// "age, city" was refused as a field " city").
	if out := run(0, "query", "by_city", "--where", `{"city": "rome"}`, "--fields", "age, city"); !strings.Contains(out, "u2") || !strings.Contains(out, "AGE  CITY") {
		t.Errorf("query --fields 'age, city': %s", out)
	}
	if out := run(0, "list"); !strings.Contains(out, "by_city  profile  city:string,age:int  1") {
		t.Errorf("list: %s", out)
	}
	if out := run(0, "status", "by_city"); !strings.Contains(out, "index=by_city") || !strings.Contains(out, "trigger=_index.by_city.1") {
		t.Errorf("status: %s", out)
	}
	if out := run(0, "rebuild", "by_city"); !strings.Contains(out, "rebuilding=2") {
		t.Errorf("rebuild: %s", out)
	}
	run(2, "query", "by_city", "--where", `{"city": "paris"}`, "--wait-for", "1")
	run(2, "query", "by_city", "--where", `{"city": "paris"}`, "--wait-for", "1:0")
	run(2, "query", "by_city", "--where", `{"city": "paris"}`, "--wait", "2s")
	run(2, "query", "by_city", "--where", `{"city": "paris"}`, "--wait-for", "1:1", "--wait", "2m")
	run(2, "delete", "by_city")
	run(2, "query", "by_city")
	run(2, "query", "by_city", "--where", "[1]")
	run(2, "define", "x", "--column", "profile", "--field", "nocolon")
	if out := run(1, "query", "by_city", "--where", `{"age": 3}`); !strings.Contains(out, "shard field") {
		t.Errorf("query without the shard field: %s", out)
	}
	run(0, "delete", "by_city", "--yes")
	if _, err := c.IndexStatus(context.Background(), "by_city"); !errors.Is(err, cellar.ErrNotFound) {
		t.Errorf("after delete: %v", err)
	}
}

// indexes query sends --wait-for and --wait as the API's wait_for and
// wait_ms (a server that records the request stands in: whether a real
// index has caught up is a race the test could not pin).
func TestCLIIndexesQueryWaitFor(t *testing.T) {
	var got []byte
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got, _ = io.ReadAll(r.Body)
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"entries": [], "cursor": null}`)
	}))
	defer srv.Close()
	_, stderr, code := runCLI(t, context.Background(), "", "indexes", "query", "by_city", "--addr", srv.URL,
		"--where", `{"city": "paris"}`, "--wait-for", "3:7, 0:1", "--wait-for", "4095:9000000000", "--wait", "2500ms")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	var req struct {
		WaitFor []client.CellPos `json:"wait_for"`
		WaitMS  int64            `json:"wait_ms"`
	}
	if err := json.Unmarshal(got, &req); err != nil {
		t.Fatalf("request %s: %v", got, err)
	}
	want := []client.CellPos{{Shard: 3, AddedID: 7}, {Shard: 0, AddedID: 1}, {Shard: 4095, AddedID: 9000000000}}
	if fmt.Sprint(req.WaitFor) != fmt.Sprint(want) || req.WaitMS != 2500 {
		t.Errorf("request %s: want wait_for %v and wait_ms 2500", got, want)
	}
}

// indexes query reads --where as strictly as the server reads a query's
// where: a member twice, or anything after the object, is a usage error
// and nothing is sent (it used to keep the last of the duplicates, or
// drop what followed, and query something else than asked); number
// literals go to the server as written.
func TestCLIIndexesQueryWhereStrict(t *testing.T) {
	var requests int
	var got []byte
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		requests++
		got, _ = io.ReadAll(r.Body)
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"entries": [], "cursor": null}`)
	}))
	defer srv.Close()
	for _, tt := range []struct{ where, msg string }{
		{`{"city": "paris", "city": "rome"}`, `duplicate object member name "city"`},
		{`{"city": "paris", "age": {"gte": 1, "gte": 2}}`, `duplicate object member name "gte"`},
		{`{"city": "paris"}}`, "data after the JSON document"},
		{`{"city": "paris"} {"city": "rome"}`, "data after the JSON document"},
		{`null`, "--where must be a JSON object"},
		{`[1]`, "--where must be a JSON object"},
		{``, "--where is required"},
	} {
		requests = 0
		stdout, stderr, code := runCLI(t, context.Background(), "", "indexes", "query", "by_city", "--addr", srv.URL, "--where", tt.where)
		if code != 2 || requests != 0 || !strings.Contains(stderr, tt.msg) {
			t.Errorf("query --where %s: exit %d, %d requests, stdout %q, stderr %q; want exit 2, no request and %q",
				tt.where, code, requests, stdout, stderr, tt.msg)
		}
	}
	_, stderr, code := runCLI(t, context.Background(), "", "indexes", "query", "by_city", "--addr", srv.URL,
		"--where", `{"city": "paris", "n": {"gte": 12345678901234567890, "lt": 1.50}}`)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	var req struct {
		Where json.RawMessage `json:"where"`
	}
	if err := json.Unmarshal(got, &req); err != nil {
		t.Fatalf("request %s: %v", got, err)
	}
	if want := `{"city":"paris","n":{"gte":12345678901234567890,"lt":1.50}}`; string(req.Where) != want {
		t.Errorf("where sent = %s; want %s", req.Where, want)
	}
}
