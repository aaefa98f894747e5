package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cellar-db/cellar"
	cellarhttp "github.com/cellar-db/cellar/internal/http"
	"github.com/cellar-db/cellar/internal/sqlite"
	"github.com/cellar-db/cellar/internal/sqlstore"
)

const cliShards = 64

// cliServer is a real server over a fresh SQLite node, for the CLI to
// talk to.
type cliServer struct {
	addr  string
	store cellar.Store
}

var cliTopology = cellar.Topology{ShardCount: cliShards, Version: 7, Nodes: []cellar.NodeInfo{
	{Name: "alpha", Driver: "sqlite", Ranges: []cellar.ShardRange{{First: 0, Last: 31}}},
	{Name: "beta-node", Driver: "postgres", Ranges: []cellar.ShardRange{{First: 32, Last: 47}, {First: 48, Last: 63}}},
}}

func newCLIServer(tb testing.TB, opts cellarhttp.Options) *cliServer {
	tb.Helper()
	store, err := sqlite.Open(context.Background(), filepath.Join(tb.TempDir(), "n.db"),
		sqlite.Options{Options: sqlstore.Options{Name: "t", ShardCount: cliShards, Create: true}})
	if err != nil {
		tb.Fatalf("open store: %v", err)
	}
	tb.Cleanup(func() {
		if err := store.Close(); err != nil {
			tb.Errorf("close store: %v", err)
		}
	})
	if opts.Topology == nil {
		opts.Topology = func() cellar.Topology { return cliTopology }
	}
	srv := httptest.NewServer(cellarhttp.NewHandler(store, opts))
	tb.Cleanup(srv.Close)
	return &cliServer{addr: srv.URL, store: store}
}

// run runs the client command args[0] with --addr placed right after it
// and stdin as its input.
func (s *cliServer) run(tb testing.TB, stdin string, args ...string) (stdout, stderr string, code int) {
	tb.Helper()
	full := append([]string{"--addr", s.addr}, args[1:]...)
	return runCLI(tb, context.Background(), stdin, args[0], full...)
}

func runCLI(tb testing.TB, ctx context.Context, stdin, name string, args ...string) (stdout, stderr string, code int) {
	tb.Helper()
	var out, errb bytes.Buffer
	ok, code := runClientCommand(ctx, name, args, strings.NewReader(stdin), &out, &errb)
	if !ok {
		tb.Fatalf("runClientCommand(%q) is not a client command", name)
	}
	return out.String(), errb.String(), code
}

func (s *cliServer) get(tb testing.TB, row, col string, ref int64) cellar.Cell {
	tb.Helper()
	c, err := s.store.Get(context.Background(), cellar.Key{RowKey: row, Column: col, RefKey: ref})
	if err != nil {
		tb.Fatalf("store.Get(%q, %q, %d) error: %v", row, col, ref, err)
	}
	return c
}

func (s *cliServer) put(tb testing.TB, row, col string, ref int64, body string) cellar.Cell {
	tb.Helper()
	c, _, err := s.store.Put(context.Background(), cellar.NewCell{Key: cellar.Key{RowKey: row, Column: col, RefKey: ref}, Body: json.RawMessage(body)})
	if err != nil {
		tb.Fatalf("store.Put(%q, %q, %d) error: %v", row, col, ref, err)
	}
	return c
}

func cliHeader(c cellar.Cell, key string) string {
	return fmt.Sprintf("%s  shard=%d added_id=%d created_at=%s", key, c.Shard, c.AddedID, cellar.FormatTime(c.CreatedAt))
}

func cliCompact(raw []byte) string {
	var b bytes.Buffer
	if err := json.Compact(&b, raw); err != nil {
		return fmt.Sprintf("invalid JSON %q: %v", raw, err)
	}
	return b.String()
}

const cliBigBody = `{"n": 12345678901234567890, "x": 1e400, "f": 1.50, "s": "<é>"}`

func TestCLIPutGetLatest(t *testing.T) {
	s := newCLIServer(t, cellarhttp.Options{})
	row := "users/42 x%"

	// BODY as an argument; flags before and after the arguments.
	stdout, stderr, code := s.run(t, "", "put", row, "doc", "1", cliBigBody, "--timeout", "5s")
	if code != 0 {
		t.Fatalf("put exit %d; stderr: %s", code, stderr)
	}
	c1 := s.get(t, row, "doc", 1)
	if want := `{"n":12345678901234567890,"x":1e400,"f":1.50,"s":"<é>"}`; string(c1.Body) != want {
		t.Errorf("stored body %s; want %s", c1.Body, want)
	}
	if want := cliHeader(c1, `"users/42 x%"/doc/1`) + "  created=true\n"; stdout != want {
		t.Errorf("put output %q; want %q", stdout, want)
	}

	// BODY from stdin, omitted or "-": an equal replay.
	for _, args := range [][]string{{"put", row, "doc", "1"}, {"put", row, "doc", "1", "-"}} {
		stdout, stderr, code = s.run(t, "\n"+cliBigBody+"\n", args...)
		if code != 0 || !strings.HasSuffix(stdout, "  created=false\n") {
			t.Errorf("%q replay: exit %d, stdout %q, stderr %q; want created=false", args, code, stdout, stderr)
		}
	}

	// A different body is a conflict.
	stdout, stderr, code = s.run(t, `{"n":1}`, "put", row, "doc", "1", "-")
	if code != 1 || stdout != "" || !strings.HasPrefix(stderr, "cellar: conflict: ") {
		t.Errorf("conflicting put: exit %d, stdout %q, stderr %q; want exit 1 and cellar: conflict: ...", code, stdout, stderr)
	}

	// --json put.
	stdout, stderr, code = s.run(t, "", "put", "--json", row, "doc", "2", `{"v":2}`)
	if code != 0 {
		t.Fatalf("put --json exit %d; stderr: %s", code, stderr)
	}
	c2 := s.get(t, row, "doc", 2)
	var pj map[string]any
	if err := json.Unmarshal([]byte(stdout), &pj); err != nil {
		t.Fatalf("put --json output %q: %v", stdout, err)
	}
	wantPJ := map[string]any{"row_key": row, "column": "doc", "ref_key": 2.0, "shard": float64(c2.Shard),
		"added_id": float64(c2.AddedID), "created_at": cellar.FormatTime(c2.CreatedAt), "created": true}
	if fmt.Sprint(pj) != fmt.Sprint(wantPJ) {
		t.Errorf("put --json = %v; want %v", pj, wantPJ)
	}

	// get, readable: the body indented, its literals untouched.
	stdout, stderr, code = s.run(t, "", "get", row, "doc", "1")
	want := cliHeader(c1, `"users/42 x%"/doc/1`) + "\n" +
		"{\n  \"n\": 12345678901234567890,\n  \"x\": 1e400,\n  \"f\": 1.50,\n  \"s\": \"<é>\"\n}\n"
	if code != 0 || stdout != want {
		t.Errorf("get: exit %d, stderr %q, output:\n%s\nwant:\n%s", code, stderr, stdout, want)
	}

	// get --json (after the arguments): one document, body bytes as stored.
	stdout, stderr, code = s.run(t, "", "get", row, "doc", "1", "--json")
	if code != 0 {
		t.Fatalf("get --json exit %d; stderr: %s", code, stderr)
	}
	var gj cellar.Cell
	if err := json.Unmarshal([]byte(stdout), &gj); err != nil {
		t.Fatalf("get --json output %q: %v", stdout, err)
	}
	if cliCompact(gj.Body) != string(c1.Body) || gj.Key != c1.Key || gj.AddedID != c1.AddedID || gj.Shard != c1.Shard || !gj.CreatedAt.Equal(c1.CreatedAt) {
		t.Errorf("get --json = %+v (body %s); want %+v", gj, gj.Body, c1)
	}
	if !strings.Contains(stdout, `"created_at": "`+cellar.FormatTime(c1.CreatedAt)+`"`) {
		t.Errorf("get --json output %s lacks created_at %s", stdout, cellar.FormatTime(c1.CreatedAt))
	}

	// latest.
	stdout, stderr, code = s.run(t, "", "latest", row, "doc")
	want = cliHeader(c2, `"users/42 x%"/doc/2`) + "\n{\n  \"v\": 2\n}\n"
	if code != 0 || stdout != want {
		t.Errorf("latest: exit %d, stderr %q, output %q; want %q", code, stderr, stdout, want)
	}

	// Not found.
	for _, args := range [][]string{{"get", row, "doc", "3"}, {"latest", row, "nothing"}} {
		stdout, stderr, code = s.run(t, "", args...)
		if code != 1 || stdout != "" || !strings.HasPrefix(stderr, "cellar: not_found: ") {
			t.Errorf("%q: exit %d, stdout %q, stderr %q; want exit 1 and cellar: not_found: ...", args, code, stdout, stderr)
		}
	}

	// Invalid, caught by the server.
	stdout, stderr, code = s.run(t, "", "put", "r", "bad-col", "1", `{}`)
	if code != 1 || stdout != "" || !strings.HasPrefix(stderr, "cellar: invalid_argument: column ") {
		t.Errorf("put with a bad column: exit %d, stdout %q, stderr %q; want exit 1 and cellar: invalid_argument: column ...", code, stdout, stderr)
	}
}

// TestDashRowKey checks that -- lets a row key begin with '-'.
func TestCLIDashRowKey(t *testing.T) {
	s := newCLIServer(t, cellarhttp.Options{})
	if _, stderr, code := s.run(t, "", "put", "--", "-row", "c", "1", `{}`); code != 0 {
		t.Fatalf("put -- -row: exit %d; stderr %s", code, stderr)
	}
	s.get(t, "-row", "c", 1)
	if stdout, stderr, code := s.run(t, "", "get", "--json", "--", "-row", "c", "1"); code != 0 || !strings.Contains(stdout, `"row_key": "-row"`) {
		t.Errorf("get -- -row: exit %d, stdout %q, stderr %q", code, stdout, stderr)
	}
	// After --, every argument is positional, even the second.
	s.put(t, "-x", "c", 2, `{}`)
	stdout, stderr, code := s.run(t, "", "batch-get", "--json", "--", "-row/c/1", "-x/c")
	if code != 0 || !strings.Contains(stdout, `"row_key": "-row"`) || !strings.Contains(stdout, `"row_key": "-x"`) {
		t.Errorf("batch-get -- -row/c/1 -x/c: exit %d, stdout %q, stderr %q", code, stdout, stderr)
	}
}

func TestCLIUsageErrors(t *testing.T) {
	s := newCLIServer(t, cellarhttp.Options{})
	tests := []struct {
		args  []string
		stdin string
		msg   string // in stderr
	}{
		{[]string{"get", "r", "c"}, "", "too few arguments"},
		{[]string{"get", "r", "c", "1", "2"}, "", "too many arguments"},
		{[]string{"get", "r", "c", "one"}, "", `REF "one" is not an integer from 0 to 9223372036854775807`},
		{[]string{"get", "r", "c", "99999999999999999999"}, "", "is not an integer from 0"},
		{[]string{"put", "r", "c", "+2", "{}"}, "", `REF "+2" is not an integer from 0`},
		{[]string{"get", "r", "c", "--", "-1"}, "", `REF "-1" is not an integer from 0`},
		{[]string{"put", "r", "c"}, "", "too few arguments"},
		{[]string{"latest", "r", "c", "--nope"}, "", "flag provided but not defined: -nope"},
		{[]string{"latest", "r", "c", "--timeout", "0s"}, "", "--timeout must be positive"},
		{[]string{"row"}, "", "too few arguments"},
		{[]string{"batch-get", "nokey"}, "", `key "nokey" is not ROW/COL or ROW/COL/REF`},
		{[]string{"batch-get"}, "", "read keys from stdin: no input"},
		{[]string{"batch-get"}, `{"keys":[]}`, "no keys"},
		{[]string{"batch-get"}, `{"keys":[]} {}`, "data after the JSON document"},
		{[]string{"batch-put"}, "", "no cells on stdin"},
		{[]string{"batch-put"}, `{"row_key":"a","column":"c","ref_key":1,"body":{}}` + "\n{oops", "value 2"},
		{[]string{"batch-put", "extra"}, "", "too many arguments"},
		// The stdin formats are the API's, read as strictly as the server
		// reads them: nothing missing, nothing unknown, nothing twice.
		{[]string{"batch-put"}, `{"row_key":"a","column":"c","body":{}}`, "cell 1: ref_key is missing or null"},
		{[]string{"batch-put"}, `{"row_key":"a","column":"c","ref_key":null,"body":{}}`, "cell 1: ref_key is missing or null"},
		{[]string{"batch-put"}, `{"cells":[{"row_key":"a","column":"c","ref_key":1,"body":{}},{"row_key":"a","column":"c","body":{}}]}`, "cell 2: ref_key is missing or null"},
		{[]string{"batch-put"}, `{"row_key":"a","column":"c","ref_key":1}`, "cell 1: body is missing"},
		{[]string{"batch-put"}, `{"column":"c","ref_key":1,"body":{}}`, "cell 1: row_key is missing"},
		{[]string{"batch-put"}, `{"row_key":"b","row_key":"a","column":"c","ref_key":1,"body":{}}`, "duplicate"},
		{[]string{"batch-put"}, `{"ROW_KEY":"a","column":"c","ref_key":1,"body":{}}`, "unknown"},
		{[]string{"batch-put"}, `{"row_key":"a","column":"c","ref_key":1,"body":{},"ref":2}`, "unknown"},
		{[]string{"batch-put"}, `{"row_key":"a","column":"c","ref_key":1,"body":{}}` + "\n" + `{"cells":[]}`, `value 2: a {"cells":[...]} document must be the whole input`},
		{[]string{"batch-get"}, `{"keys":[{"row_key":"a","column":"c","ref":5}]}`, "unknown"},
		{[]string{"batch-get"}, `{"keys":[{"row_key":"a","row_key":"b","column":"c"}]}`, "duplicate"},
		{[]string{"batch-get"}, `{"keys":[{"column":"c"}]}`, "key 1: row_key is missing"},
		{[]string{"scan"}, "", "too few arguments"},
		{[]string{"scan", "x"}, "", `SHARD "x" is not an integer`},
		{[]string{"scan", "1", "--follow", "--interval", "0s"}, "", "--interval must be positive"},
		{[]string{"shards", "x"}, "", "too many arguments"},
	}
	for _, tt := range tests {
		stdout, stderr, code := s.run(t, tt.stdin, tt.args...)
		if code != 2 || stdout != "" || !strings.Contains(stderr, tt.msg) || !strings.Contains(stderr, "usage: cellar "+tt.args[0]+" [flags]") {
			t.Errorf("%q: exit %d, stdout %q, stderr:\n%s\nwant exit 2, %q and the usage", tt.args, code, stdout, stderr, tt.msg)
		}
	}
	// Bad input stores nothing.
	if res, err := s.store.Scan(context.Background(), cellar.ShardOf("a", cliShards), 0, 10, ""); err != nil || len(res.Cells) != 0 {
		t.Errorf("a refused batch-put stored %d cells, %v", len(res.Cells), err)
	}

	stdout, stderr, code := runCLI(t, context.Background(), "", "put", "-h")
	if code != 0 || stdout != "" || !strings.Contains(stderr, "usage: cellar put [flags] ROW COL REF [BODY|-]") || !strings.Contains(stderr, "-addr URL") {
		t.Errorf("put -h: exit %d, stdout %q, stderr:\n%s", code, stdout, stderr)
	}
	if strings.Contains(stderr, "secret-token") {
		t.Errorf("usage shows the token")
	}
	if ok, _ := runClientCommand(context.Background(), "serve", nil, strings.NewReader(""), &bytes.Buffer{}, &bytes.Buffer{}); ok {
		t.Errorf("runClientCommand(serve) ok = true; want false")
	}
}

func TestCLIRow(t *testing.T) {
	s := newCLIServer(t, cellarhttp.Options{})
	a := s.put(t, "r/1", "a", 1, `{"a":1}`)
	s.put(t, "r/1", "b", 1, `{"b":1}`)
	b := s.put(t, "r/1", "b", 2, `{"b":2e2}`)
	c := s.put(t, "r/1", "c", 9, `{}`)

	stdout, stderr, code := s.run(t, "", "row", "r/1")
	want := cliHeader(a, `"r/1"/a/1`) + "\n{\n  \"a\": 1\n}\n\n" +
		cliHeader(b, `"r/1"/b/2`) + "\n{\n  \"b\": 2e2\n}\n\n" +
		cliHeader(c, `"r/1"/c/9`) + "\n{}\n"
	if code != 0 || stdout != want {
		t.Errorf("row: exit %d, stderr %q, output:\n%s\nwant:\n%s", code, stderr, stdout, want)
	}

	stdout, stderr, code = s.run(t, "", "row", "r/1", "--columns", "c,b", "--json")
	var doc struct {
		RowKey string        `json:"row_key"`
		Cells  []cellar.Cell `json:"cells"`
	}
	if err := json.Unmarshal([]byte(stdout), &doc); code != 0 || err != nil {
		t.Fatalf("row --json: exit %d, stderr %q, output %q: %v", code, stderr, stdout, err)
	}
	if doc.RowKey != "r/1" || len(doc.Cells) != 2 || doc.Cells[0].Column != "b" || doc.Cells[1].Column != "c" || cliCompact(doc.Cells[0].Body) != `{"b":2e2}` {
		t.Errorf("row --columns c,b --json = %+v; want cells b and c", doc)
	}

	stdout, stderr, code = s.run(t, "", "row", "nobody")
	if code != 0 || stdout != "" {
		t.Errorf("row of an empty row: exit %d, stdout %q, stderr %q; want no output", code, stdout, stderr)
	}
	stdout, _, code = s.run(t, "", "row", "nobody", "--json")
	if code != 0 || strings.Join(strings.Fields(stdout), "") != `{"row_key":"nobody","cells":[]}` {
		t.Errorf("row --json of an empty row: exit %d, output %q", code, stdout)
	}
}

func TestCLIBatchGet(t *testing.T) {
	s := newCLIServer(t, cellarhttp.Options{})
	a1 := s.put(t, "a/b", "x", 1, `{"v":1}`)
	a2 := s.put(t, "a/b", "x", 2, `{"v":2}`)
	z := s.put(t, "z 7", "y", 7, `{"big":12345678901234567890}`)

	// Row keys with '/', ending in digits, and a key in the latest form.
	stdout, stderr, code := s.run(t, "", "batch-get", "z 7/y/7", "a/b/x/9", "a/b/x", "a/b/x/1")
	want := cliHeader(z, `"z 7"/y/7`) + "\n{\n  \"big\": 12345678901234567890\n}\n\n" +
		`"a/b"/x/9  error: not_found: ` // the message is the server's
	if code != 1 || !strings.HasPrefix(stdout, want) {
		t.Errorf("batch-get: exit %d, output:\n%s\nwant prefix:\n%s", code, stdout, want)
	}
	tail := "\n\n" + cliHeader(a2, `"a/b"/x/2`) + "\n{\n  \"v\": 2\n}\n\n" + cliHeader(a1, `"a/b"/x/1`) + "\n{\n  \"v\": 1\n}\n"
	if !strings.HasSuffix(stdout, tail) {
		t.Errorf("batch-get output:\n%s\nwant suffix:\n%s", stdout, tail)
	}
	if stderr != "cellar: 1 of 4 results are errors\n" {
		t.Errorf("batch-get stderr %q", stderr)
	}
	// With --json, stderr holds error documents only: the partial
	// failure's errors are in the output, its exit code says the rest.
	stdout, stderr, code = s.run(t, "", "batch-get", "--json", "z 7/y/7", "a/b/x/9")
	if code != 1 || stderr != "" || !json.Valid([]byte(stdout)) || !strings.Contains(stdout, `"not_found"`) {
		t.Errorf("batch-get --json: exit %d, stderr %q, output %s; want 1, nothing on stderr, the not_found in the JSON output", code, stderr, stdout)
	}

	// All found: exit 0.
	if _, stderr, code := s.run(t, "", "batch-get", "a/b/x", "z 7/y"); code != 0 {
		t.Errorf("batch-get of present cells: exit %d, stderr %q", code, stderr)
	}

	// Keys on stdin, --json output.
	in := `{"keys":[{"row_key":"a/b","column":"x","ref_key":1},{"row_key":"a/b","column":"bad-col"},{"row_key":"z 7","column":"y"}]}`
	stdout, stderr, code = s.run(t, in, "batch-get", "--json")
	if code != 1 {
		t.Errorf("batch-get --json: exit %d, stderr %q; want 1", code, stderr)
	}
	var doc struct {
		Results []struct {
			Cell  *cellar.Cell `json:"cell"`
			Error *struct {
				Code    string `json:"code"`
				Message string `json:"message"`
			} `json:"error"`
		} `json:"results"`
	}
	if err := json.Unmarshal([]byte(stdout), &doc); err != nil {
		t.Fatalf("batch-get --json output %q: %v", stdout, err)
	}
	if len(doc.Results) != 3 ||
		doc.Results[0].Cell == nil || doc.Results[0].Cell.AddedID != a1.AddedID ||
		doc.Results[1].Error == nil || doc.Results[1].Error.Code != cellar.EINVALID || doc.Results[1].Error.Message == "" || doc.Results[1].Cell != nil ||
		doc.Results[2].Cell == nil || doc.Results[2].Cell.AddedID != z.AddedID {
		t.Errorf("batch-get --json = %s", stdout)
	}
	if !strings.Contains(stdout, "12345678901234567890") {
		t.Errorf("batch-get --json lost the number literal: %s", stdout)
	}
}

func TestCLIBatchPut(t *testing.T) {
	// A request of 1000 cells can take seconds under -race on a busy machine.
	s := newCLIServer(t, cellarhttp.Options{RequestTimeout: time.Minute})
	ctx := context.Background()
	s.put(t, "e", "c", 1, `{"v":1}`)

	in := `{"cells":[
		{"row_key":"n/1","column":"c","ref_key":1,"body":{"big":12345678901234567890,"x":1e400}},
		{"row_key":"e","column":"c","ref_key":1,"body":{"v":1}},
		{"row_key":"e","column":"c","ref_key":1,"body":{"v":2}},
		{"row_key":"n2","column":"bad-col","ref_key":1,"body":{}}
	]}`
	stdout, stderr, code := s.run(t, in, "batch-put")
	if code != 1 || stderr != "cellar: 2 of 4 results are errors\n" {
		t.Errorf("batch-put: exit %d, stderr %q; want 1", code, stderr)
	}
	n1 := s.get(t, "n/1", "c", 1)
	if want := `{"big":12345678901234567890,"x":1e400}`; string(n1.Body) != want {
		t.Errorf("batch-put stored %s; want %s", n1.Body, want)
	}
	e := s.get(t, "e", "c", 1)
	lines := strings.Split(strings.TrimSuffix(stdout, "\n"), "\n")
	if len(lines) != 4 ||
		lines[0] != cliHeader(n1, `"n/1"/c/1`)+"  created=true" ||
		lines[1] != cliHeader(e, "e/c/1")+"  created=false" ||
		!strings.HasPrefix(lines[2], "e/c/1  error: conflict: ") ||
		!strings.HasPrefix(lines[3], "n2/bad-col/1  error: invalid_argument: ") {
		t.Errorf("batch-put output:\n%s", stdout)
	}

	// A body may hold an unpaired surrogate escape (API.md "Bodies"): it
	// is stored as written.
	if _, stderr, code := s.run(t, `{"row_key":"sur","column":"c","ref_key":1,"body":{"a":"\ud800"}}`, "batch-put"); code != 0 {
		t.Errorf("batch-put of a body with an unpaired surrogate escape: exit %d, stderr %q", code, stderr)
	} else if got := s.get(t, "sur", "c", 1); string(got.Body) != `{"a":"\ud800"}` {
		t.Errorf("stored %s; want the body as written", got.Body)
	}
	// What scan --json and row --json print can be stored again.
	for _, args := range [][]string{{"scan", strconv.Itoa(cellar.ShardOf("sur", cliShards)), "--json"}, {"row", "sur", "--json"}} {
		out, stderr, code := s.run(t, "", args...)
		if code != 0 {
			t.Fatalf("%q: exit %d, stderr %q", args, code, stderr)
		}
		if _, stderr, code := s.run(t, out, "batch-put"); code != 0 {
			t.Errorf("%q piped into batch-put: exit %d, stderr %q", args, code, stderr)
		}
	}
	if _, stderr, _ := s.run(t, `{"row_key":"a","column":"c","ref_key":1,"body":{},"ref":2}`, "batch-put"); !strings.Contains(stderr, "unknown member at /ref") || strings.Contains(stderr, "main.") {
		t.Errorf("batch-put with an unknown member: stderr %q; want the member named, not Go types", stderr)
	}

	// NDJSON, as scan --follow --json prints it (extra members ignored).
	var nd strings.Builder
	for i := range 3 {
		fmt.Fprintf(&nd, `{"row_key":"nd","column":"c","ref_key":%d,"shard":0,"added_id":5,"created_at":"2020-01-01T00:00:00.000Z","body":{"i":%d.0}}`+"\n", i, i)
	}
	stdout, stderr, code = s.run(t, nd.String(), "batch-put", "--json")
	if code != 0 {
		t.Fatalf("batch-put --json of NDJSON: exit %d, stderr %q", code, stderr)
	}
	var doc struct {
		Results []map[string]any `json:"results"`
	}
	if err := json.Unmarshal([]byte(stdout), &doc); err != nil || len(doc.Results) != 3 {
		t.Fatalf("batch-put --json output %q: %v", stdout, err)
	}
	for i, r := range doc.Results {
		c := s.get(t, "nd", "c", int64(i))
		if want := fmt.Sprintf(`{"i":%d.0}`, i); string(c.Body) != want {
			t.Errorf("NDJSON cell %d stored %s; want %s", i, c.Body, want)
		}
		if r["created"] != true || r["added_id"] != float64(c.AddedID) || r["row_key"] != "nd" || r["error"] != nil {
			t.Errorf("batch-put --json result %d = %v", i, r)
		}
	}

	// More cells than one request may hold are sent in several.
	var many strings.Builder
	n := cellar.MaxBatchKeys + 5
	for i := range n {
		fmt.Fprintf(&many, `{"row_key":"many","column":"c","ref_key":%d,"body":{}}`+"\n", i)
	}
	stdout, stderr, code = s.run(t, many.String(), "batch-put")
	if code != 0 || strings.Count(stdout, "created=true") != n {
		t.Errorf("batch-put of %d cells: exit %d, %d created, stderr %q, errors: %q", n, code, strings.Count(stdout, "created=true"), stderr, regexp.MustCompile(`(?m)^.*error: .*$`).FindAllString(stdout, 3))
	}
	res, err := s.store.Scan(ctx, cellar.ShardOf("many", cliShards), 0, cellar.MaxScanLimit, "")
	if err != nil || len(res.Cells) != n {
		t.Errorf("after batch-put of %d cells the shard holds %d, %v", n, len(res.Cells), err)
	}
}

var cliNextRE = regexp.MustCompile(`(?m)^next=(\d+)\n\z`)

func TestCLIScan(t *testing.T) {
	s := newCLIServer(t, cellarhttp.Options{})
	row := "scan/row"
	shard := strconv.Itoa(cellar.ShardOf(row, cliShards))
	var cells []cellar.Cell
	for i := range 5 {
		col := "a"
		if i == 3 {
			col = "b"
		}
		cells = append(cells, s.put(t, row, col, int64(i), fmt.Sprintf(`{"i":%d,"big":12345678901234567890}`, i)))
	}

	// Page through with --limit 2, feeding next back as --after.
	var got []string
	after := "0"
	for page := 0; ; page++ {
		if page > 5 {
			t.Fatalf("scan did not finish")
		}
		stdout, stderr, code := s.run(t, "", "scan", shard, "--limit", "2", "--after", after)
		if code != 0 {
			t.Fatalf("scan: exit %d, stderr %q", code, stderr)
		}
		m := cliNextRE.FindStringSubmatch(stdout)
		if m == nil {
			t.Fatalf("scan output %q does not end in next=N", stdout)
		}
		body := strings.TrimSuffix(stdout, m[0])
		if body == "" {
			if m[1] != after {
				t.Errorf("empty scan page: next=%s; want %s", m[1], after)
			}
			break
		}
		got = append(got, strings.Split(strings.TrimSuffix(body, "\n"), "\n")...)
		after = m[1]
	}
	var want []string
	for i, c := range cells {
		want = append(want, cliHeader(c, `"scan/row"/`+c.Column+"/"+strconv.Itoa(i))+fmt.Sprintf(`  {"i":%d,"big":12345678901234567890}`, i))
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("scan pages:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}

	// --json and --column.
	stdout, stderr, code := s.run(t, "", "scan", shard, "--json", "--column", "b")
	var doc struct {
		Cells []cellar.Cell `json:"cells"`
		Next  int64         `json:"next"`
	}
	if err := json.Unmarshal([]byte(stdout), &doc); code != 0 || err != nil {
		t.Fatalf("scan --json: exit %d, stderr %q, output %q: %v", code, stderr, stdout, err)
	}
	if len(doc.Cells) != 1 || doc.Cells[0].RefKey != 3 || doc.Next != cells[3].AddedID {
		t.Errorf("scan --json --column b = %s", stdout)
	}

	stdout, stderr, code = s.run(t, "", "scan", strconv.Itoa(cliShards))
	if code != 1 || stdout != "" || !strings.HasPrefix(stderr, "cellar: invalid_argument: ") {
		t.Errorf("scan of a shard out of range: exit %d, stdout %q, stderr %q", code, stdout, stderr)
	}
}

// cliNotifyBuffer is a buffer that signals each write, so that a test can wait
// for output without sleeping.
type cliNotifyBuffer struct {
	mu    sync.Mutex
	buf   bytes.Buffer
	wrote chan struct{}
}

func (b *cliNotifyBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	n, err := b.buf.Write(p)
	select {
	case b.wrote <- struct{}{}:
	default:
	}
	return n, err
}

func (b *cliNotifyBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// waitLines waits until b holds n lines.
func (b *cliNotifyBuffer) waitLines(tb testing.TB, n int) []string {
	tb.Helper()
	timeout := time.After(20 * time.Second)
	for {
		s := b.String()
		if strings.Count(s, "\n") >= n {
			return strings.Split(strings.TrimSuffix(s, "\n"), "\n")
		}
		select {
		case <-b.wrote:
		case <-timeout:
			tb.Fatalf("waited in vain for %d lines; have:\n%s", n, s)
		}
	}
}

// follow runs `cellar scan ARGS` (with --follow among them) until ctx
// ends; done receives its exit code.
func follow(ctx context.Context, args ...string) (stdout, stderr *cliNotifyBuffer, done <-chan int) {
	stdout = &cliNotifyBuffer{wrote: make(chan struct{}, 1)}
	stderr = &cliNotifyBuffer{wrote: make(chan struct{}, 1)}
	codes := make(chan int, 1)
	go func() {
		_, code := runClientCommand(ctx, "scan", args, strings.NewReader(""), stdout, stderr)
		codes <- code
	}()
	return stdout, stderr, codes
}

func TestCLIScanFollow(t *testing.T) {
	s := newCLIServer(t, cellarhttp.Options{})
	row := "follow"
	shard := strconv.Itoa(cellar.ShardOf(row, cliShards))
	for i := range 3 {
		s.put(t, row, "c", int64(i), fmt.Sprintf(`{"i":%d}`, i))
	}

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	out, errb, done := follow(ctx, shard, "--addr", s.addr, "--follow", "--json", "--limit", "2", "--interval", "1ms")

	out.waitLines(t, 3)
	s.put(t, row, "c", 3, `{"i":3}`)
	s.put(t, row, "d", 4, `{"i":4,"big":12345678901234567890}`)
	out.waitLines(t, 5)
	cancel()
	if code := <-done; code != 0 {
		t.Errorf("scan --follow exit %d after cancel; want 0; stderr %q", code, errb.String())
	}
	lines := strings.Split(strings.TrimSuffix(out.String(), "\n"), "\n")
	if len(lines) != 5 {
		t.Fatalf("scan --follow printed %d lines; want 5:\n%s", len(lines), out.String())
	}
	for i, l := range lines {
		var c cellar.Cell
		if err := json.Unmarshal([]byte(l), &c); err != nil {
			t.Fatalf("line %d %q: %v", i, l, err)
		}
		if c.RefKey != int64(i) || c.AddedID != int64(i+1) {
			t.Errorf("line %d = ref %d added_id %d; want ref %d added_id %d", i, c.RefKey, c.AddedID, i, i+1)
		}
	}
	if !strings.HasSuffix(lines[4], `"body":{"i":4,"big":12345678901234567890}}`) {
		t.Errorf("last line %q lost the body's literals", lines[4])
	}
}

// TestCLIScanFollowRetries checks that --follow outlives an unreachable
// server, saying so on stderr, and still ends when interrupted.
func TestCLIScanFollowRetries(t *testing.T) {
	srv := httptest.NewServer(nil)
	srv.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	out, errb, done := follow(ctx, "0", "--addr", srv.URL, "--follow", "--interval", "1ms")
	lines := errb.waitLines(t, 2)
	cancel()
	if code := <-done; code != 0 {
		t.Errorf("scan --follow exit %d after cancel; want 0", code)
	}
	for _, l := range lines {
		if !strings.HasPrefix(l, "cellar: unavailable: ") || !strings.HasSuffix(l, " (retrying)") {
			t.Errorf("scan --follow stderr line %q; want cellar: unavailable: ... (retrying)", l)
		}
	}
	if out.String() != "" {
		t.Errorf("scan --follow printed %q", out.String())
	}
}

// TestCLIScanFollowRateLimited: a proxy's 429 in front of the server is a
// reason to retry, as a restart is, not to stop following.
func TestCLIScanFollowRateLimited(t *testing.T) {
	var mu sync.Mutex
	requests := 0
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		requests++
		n := requests
		mu.Unlock()
		switch {
		case n == 1:
			w.Header().Set("Content-Type", "text/html")
			w.WriteHeader(http.StatusTooManyRequests)
			io.WriteString(w, "<html><body><h1>429 Too Many Requests</h1></body></html>\n")
		case n == 2:
			io.WriteString(w, `{"cells":[{"row_key":"r","column":"c","ref_key":1,"shard":0,"added_id":1,"created_at":"2026-11-21T19:37:29.617Z","body":{}}],"next":1}`)
		default:
			io.WriteString(w, `{"cells":[],"next":1}`)
		}
	}))
	defer srv.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	out, errb, done := follow(ctx, "0", "--addr", srv.URL, "--follow", "--interval", "1ms")
	for !strings.Contains(out.String(), "r/c/1") {
		select {
		case code := <-done:
			t.Fatalf("scan --follow ended (exit %d) on a 429; stdout %q, stderr %q", code, out.String(), errb.String())
		case <-out.wrote:
		case <-time.After(20 * time.Second):
			t.Fatalf("scan --follow printed no cell; stdout %q, stderr %q", out.String(), errb.String())
		}
	}
	cancel()
	if code := <-done; code != 0 {
		t.Errorf("scan --follow exit %d after cancel; want 0", code)
	}
	if l := errb.String(); !strings.HasPrefix(l, "cellar: unavailable: unexpected response 429 Too Many Requests") || !strings.Contains(l, "(retrying)") {
		t.Errorf("scan --follow stderr %q; want the 429 reported as unavailable, retrying", l)
	}
}

func TestCLIShards(t *testing.T) {
	s := newCLIServer(t, cellarhttp.Options{})
	stdout, stderr, code := s.run(t, "", "shards")
	want := "shard_count=64 version=7\n" +
		"NODE       DRIVER    SHARDS\n" +
		"alpha      sqlite    0-31\n" +
		"beta-node  postgres  32-47,48-63\n"
	if code != 0 || stdout != want {
		t.Errorf("shards: exit %d, stderr %q, output:\n%s\nwant:\n%s", code, stderr, stdout, want)
	}
	stdout, stderr, code = s.run(t, "", "shards", "--json")
	var got cellar.Topology
	if err := json.Unmarshal([]byte(stdout), &got); code != 0 || err != nil {
		t.Fatalf("shards --json: exit %d, stderr %q, output %q: %v", code, stderr, stdout, err)
	}
	if fmt.Sprint(got) != fmt.Sprint(cliTopology) {
		t.Errorf("shards --json = %+v; want %+v", got, cliTopology)
	}
}

func TestCLIUnavailable(t *testing.T) {
	srv := httptest.NewServer(nil)
	srv.Close()
	stdout, stderr, code := runCLI(t, context.Background(), "", "get", "--addr", srv.URL, "r", "c", "1")
	if code != 1 || stdout != "" || !strings.HasPrefix(stderr, "cellar: unavailable: request failed: ") || !strings.Contains(stderr, "refused") {
		t.Errorf("get from a closed server: exit %d, stdout %q, stderr %q", code, stdout, stderr)
	}
	stdout, stderr, code = runCLI(t, context.Background(), "", "batch-get", "--addr", srv.URL, "--json", "r/c", "s/c/1")
	if code != 1 || strings.Count(stdout, `"code": "unavailable"`) != 2 {
		t.Errorf("batch-get from a closed server: exit %d, stdout %q, stderr %q", code, stdout, stderr)
	}
}

// TestEnvironment checks $CELLAR_ADDR and $CELLAR_TOKEN and that the flags
// override them. It cannot run in parallel.
func TestCLIEnvironment(t *testing.T) {
	s := newCLIServer(t, cellarhttp.Options{Tokens: []cellarhttp.Token{{Secret: "secret-token", Scopes: []string{cellarhttp.ScopeAdmin}}}})
	s.put(t, "r", "c", 1, `{}`)
	ctx := context.Background()

	t.Setenv("CELLAR_ADDR", strings.TrimPrefix(s.addr, "http://")) // no scheme: http is assumed
	t.Setenv("CELLAR_TOKEN", "")
	if _, stderr, code := runCLI(t, ctx, "", "get", "r", "c", "1"); code != 1 || !strings.HasPrefix(stderr, "cellar: unauthenticated: ") {
		t.Errorf("get without a token: exit %d, stderr %q; want unauthenticated", code, stderr)
	}
	if _, stderr, code := runCLI(t, ctx, "", "get", "r", "c", "1", "--token", "secret-token"); code != 0 {
		t.Errorf("get --token: exit %d, stderr %q", code, stderr)
	}
	t.Setenv("CELLAR_TOKEN", "secret-token")
	if _, stderr, code := runCLI(t, ctx, "", "get", "r", "c", "1"); code != 0 {
		t.Errorf("get with $CELLAR_TOKEN: exit %d, stderr %q", code, stderr)
	}
	// A variable set from a secret file keeps its newline, which the
	// server drops from its own copy of the secret.
	t.Setenv("CELLAR_TOKEN", "secret-token\n")
	if _, stderr, code := runCLI(t, ctx, "", "get", "r", "c", "1"); code != 0 {
		t.Errorf("get with $CELLAR_TOKEN ending in a newline: exit %d, stderr %q", code, stderr)
	}
	t.Setenv("CELLAR_TOKEN", "secret-token")
	if _, stderr, code := runCLI(t, ctx, "", "get", "r", "c", "1", "--token", "wrong"); code != 1 || !strings.HasPrefix(stderr, "cellar: unauthenticated: ") {
		t.Errorf("get --token wrong: exit %d, stderr %q; want unauthenticated", code, stderr)
	}
	if _, stderr, _ := runCLI(t, ctx, "", "get", "-h"); strings.Contains(stderr, "secret-token") {
		t.Errorf("usage shows the token from the environment:\n%s", stderr)
	}
	srv := httptest.NewServer(nil)
	srv.Close()
	if _, stderr, code := runCLI(t, ctx, "", "get", "r", "c", "1", "--addr", srv.URL); code != 1 || !strings.Contains(stderr, srv.URL) {
		t.Errorf("--addr did not override $CELLAR_ADDR: exit %d, stderr %q", code, stderr)
	}
}

func TestCLIParseKeyArg(t *testing.T) {
	tests := []struct {
		in   string
		want string // row|col|ref, or "error"
	}{
		{"r/c/1", "r|c|1"},
		{"r/c", "r|c|-"},
		{"a/b/c", "a/b|c|-"},
		{"a/b/c/12", "a/b|c|12"},
		{"a/1/c", "a/1|c|-"},
		{"x/col/5", "x|col|5"},
		{"a b/ü/c_1/0", "a b/ü|c_1|0"},
		{"//c", "/|c|-"},
		{"r/c/", "error"},
		{"/c", "error"},
		{"c/1", "error"},
		{"nokey", "error"},
		{"r/c/99999999999999999999", "error"},
		{"r/c/-1", "r/c|-1|-"}, // an invalid column, for the server to refuse
	}
	for _, tt := range tests {
		k, err := parseKeyArg(tt.in)
		got := "error"
		if err == nil {
			ref := "-"
			if k.RefKey != nil {
				ref = strconv.FormatInt(*k.RefKey, 10)
			}
			got = k.RowKey + "|" + k.Column + "|" + ref
		}
		if got != tt.want {
			t.Errorf("parseKeyArg(%q) = %s (%v); want %s", tt.in, got, err, tt.want)
		}
	}
}

func TestCLIKeyString(t *testing.T) {
	ref := int64(3)
	tests := []struct {
		row  string
		ref  *int64
		want string
	}{
		{"plain", &ref, "plain/c/3"},
		{"ünï:code", nil, "ünï:code/c"},
		{"a/b", &ref, `"a/b"/c/3`},
		{"a b", nil, `"a b"/c`},
		{"tab\there", nil, `"tab\there"/c`},
		{`say "hi"`, nil, `"say \"hi\""/c`},
	}
	for _, tt := range tests {
		if got := keyString(tt.row, "c", tt.ref); got != tt.want {
			t.Errorf("keyString(%q) = %s; want %s", tt.row, got, tt.want)
		}
	}
}

func TestCLIClientUsage(t *testing.T) {
	var b bytes.Buffer
	clientUsage(&b)
	lines := strings.Split(strings.TrimSuffix(b.String(), "\n"), "\n")
	if len(lines) != len(clientCommands) {
		t.Fatalf("clientUsage printed %d lines; want %d:\n%s", len(lines), len(clientCommands), b.String())
	}
	for i, cmd := range clientCommands {
		if !strings.HasPrefix(lines[i], "  "+cmd.name+" ") || !strings.HasSuffix(lines[i], cmd.summary) {
			t.Errorf("clientUsage line %q; want the name and summary of %s", lines[i], cmd.name)
		}
	}
}

// TestCLIBatchPutChunksByBytes: cells whose bodies together pass the
// server's request limit are sent in several requests, each within it.
func TestCLIBatchPutChunksByBytes(t *testing.T) {
	s := newCLIServer(t, cellarhttp.Options{MaxRequestBytes: 4000, MaxBodyBytes: 2000})
	var in strings.Builder
	for i := range 10 {
		fmt.Fprintf(&in, `{"row_key":"big%d","column":"c","ref_key":1,"body":{"x":"%s"}}`+"\n", i, strings.Repeat("y", 1000))
	}
	stdout, stderr, code := s.run(t, in.String(), "batch-put", "--chunk-bytes", "3000")
	if code != 0 || strings.Count(stdout, "created=true") != 10 {
		t.Errorf("batch-put of 10 cells of 1 KB under a 4 KB request limit: exit %d, stdout:\n%s\nstderr %q", code, stdout, stderr)
	}
	for i := range 10 {
		s.get(t, fmt.Sprintf("big%d", i), "c", 1)
	}
}

func TestPutChunks(t *testing.T) {
	cell := func(body int) cellar.NewCell {
		return cellar.NewCell{Key: cellar.Key{RowKey: "r", Column: "c"}, Body: make([]byte, body)}
	}
	cells := []cellar.NewCell{cell(100), cell(100), cell(500), cell(10), cell(10), cell(10)}
	var sizes []int
	for ch := range putChunks(cells, 2, 300) {
		sizes = append(sizes, len(ch))
	}
	// 166+166 > 300; a 566-byte cell alone; then by count, 2 at most.
	if want := []int{1, 1, 1, 2, 1}; !slices.Equal(sizes, want) {
		t.Errorf("chunk sizes %v; want %v", sizes, want)
	}
}

// TestCLIScanFollowShortPage: a page shorter than --limit is not the end
// of the shard (pages also stop at MaxScanPageBytes); only an empty page
// is, so the follower asks again at once rather than after --interval.
func TestCLIScanFollowShortPage(t *testing.T) {
	var mu sync.Mutex
	var afters []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		after := r.URL.Query().Get("after")
		mu.Lock()
		afters = append(afters, after)
		mu.Unlock()
		switch after {
		case "0": // a short page, as one cut at the byte limit
			fmt.Fprint(w, `{"cells":[{"row_key":"r","column":"c","ref_key":1,"shard":0,"added_id":1,"created_at":"2026-12-03T00:00:00.000Z","body":{}}],"next":1}`)
		case "1":
			fmt.Fprint(w, `{"cells":[{"row_key":"r","column":"c","ref_key":2,"shard":0,"added_id":2,"created_at":"2026-12-03T00:00:00.000Z","body":{}}],"next":2}`)
		default:
			fmt.Fprintf(w, `{"cells":[],"next":%s}`, after)
		}
	}))
	defer srv.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	out, errb, done := follow(ctx, "0", "--addr", srv.URL, "--follow", "--json", "--interval", "1h")
	out.waitLines(t, 2) // with the hour's wait after the first page, this times out
	cancel()
	if code := <-done; code != 0 {
		t.Errorf("scan --follow exit %d; stderr %q", code, errb.String())
	}
	mu.Lock()
	defer mu.Unlock()
	if len(afters) < 2 || afters[0] != "0" || afters[1] != "1" {
		t.Errorf("scan --follow asked after=%v; want 0, then 1 at once", afters)
	}
}

// TestCLIJSONErrors: with --json an error is the API's error document on
// stderr, so that a script can read its code; a usage error stays a line.
func TestCLIJSONErrors(t *testing.T) {
	s := newCLIServer(t, cellarhttp.Options{})
	stdout, stderr, code := s.run(t, "", "latest", "r", "nothing", "--json")
	var doc struct {
		Error struct{ Code, Message string }
	}
	if err := json.Unmarshal([]byte(stderr), &doc); err != nil || code != 1 || stdout != "" ||
		doc.Error.Code != cellar.ENOTFOUND || doc.Error.Message == "" || !strings.HasSuffix(stderr, "}\n") {
		t.Errorf("latest --json of nothing: exit %d, stdout %q, stderr %q; want exit 1 and {\"error\": {\"code\": \"not_found\", ...}} (decode: %v)", code, stdout, stderr, err)
	}
	_, stderr, code = s.run(t, "", "latest", "r", "--json")
	if code != 2 || !strings.HasPrefix(stderr, "cellar latest: ") {
		t.Errorf("latest --json with a missing argument: exit %d, stderr %q; want exit 2 and a usage line", code, stderr)
	}
}
