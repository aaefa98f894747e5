package main

import (
	"context"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cellar-db/cellar/internal/counter"
	cellarhttp "github.com/cellar-db/cellar/internal/http"
	"github.com/cellar-db/cellar/internal/sqlite"
	"github.com/cellar-db/cellar/internal/sqlstore"
)

// newCounterCLIServer is newCLIServer with the counter routes on, in
// journal mode.
func newCounterCLIServer(tb testing.TB) (*cliServer, *counter.Journal) {
	tb.Helper()
	ctx := context.Background()
	store, err := sqlite.Open(ctx, filepath.Join(tb.TempDir(), "n.db"),
		sqlite.Options{Options: sqlstore.Options{Name: "t", ShardCount: cliShards, Create: true}})
	if err != nil {
		tb.Fatalf("open store: %v", err)
	}
	tb.Cleanup(func() { store.Close() })
	j, err := counter.OpenJournal(ctx, filepath.Join(tb.TempDir(), "counters.journal"), store, counter.Options{FlushInterval: time.Hour})
	if err != nil {
		tb.Fatalf("open counter journal: %v", err)
	}
	tb.Cleanup(func() { j.Close() })
	srv := httptest.NewServer(cellarhttp.NewHandler(store, cellarhttp.Options{Counters: j}))
	tb.Cleanup(srv.Close)
	return &cliServer{addr: srv.URL, store: store}, j
}

// counterCmd runs cellar counter ACTION --addr URL ARGS...
func (s *cliServer) counterCmd(tb testing.TB, action string, args ...string) (stdout, stderr string, code int) {
	tb.Helper()
	return runCLI(tb, context.Background(), "", "counter", append([]string{action, "--addr", s.addr}, args...)...)
}

func TestCLICounter(t *testing.T) {
	s, j := newCounterCLIServer(t)
	run := func(args ...string) string {
		t.Helper()
		stdout, stderr, code := s.counterCmd(t, args[0], args[1:]...)
		if code != 0 {
			t.Fatalf("counter %q: exit %d, stderr %s", args, code, stderr)
		}
		return stdout
	}
	want := func(got, want string) {
		t.Helper()
		if got != want {
			t.Errorf("output:\n%s\nwant:\n%s", got, want)
		}
	}
	want(run("get", "views"), "key=views value=0\n")
	want(run("incr", "views"), "key=views value=1\n")
	want(run("incr", "views", "41"), "key=views value=42\n")
	want(run("incr", "views", "--", "-50"), "key=views value=-8\n")
	want(run("incr", "page 1", "--json"), "{\n  \"key\": \"page 1\",\n  \"value\": 1\n}\n")
	want(run("incr", "--json", "a/b", "9223372036854775807"), "{\n  \"key\": \"a/b\",\n  \"value\": 9223372036854775807\n}\n")
	if err := j.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	want(run("get", "views", "--json"), "{\n  \"key\": \"views\",\n  \"value\": -8\n}\n")
	want(run("get", "views", "page 1", "never"), "key=views value=-8\n"+`key="page 1" value=1`+"\nkey=never value=0\n")
	want(run("get", "--json", "views", "a/b"), `{
  "results": [
    {
      "key": "views",
      "value": -8
    },
    {
      "key": "a/b",
      "value": 9223372036854775807
    }
  ]
}
`)

	// An error among several keys: the others print, and the exit code is 1.
	stdout, stderr, code := s.counterCmd(t, "get", "views", "bad\x01key")
	if code != 1 || stdout != "key=views value=-8\n"+`key="bad\x01key" error: invalid_argument: row_key contains control character U+0001`+"\n" ||
		!strings.Contains(stderr, "1 of 2 results are errors") {
		t.Errorf("get with a bad key: exit %d, stdout %q, stderr %q", code, stdout, stderr)
	}
	stdout, stderr, code = s.counterCmd(t, "get", "--json", "views", "")
	if code != 1 || !strings.Contains(stdout, `"code": "invalid_argument"`) || !strings.Contains(stdout, `"value": -8`) {
		t.Errorf("get --json with an empty key: exit %d, stdout %q, stderr %q", code, stdout, stderr)
	}
	// Overflow is the server's refusal.
	_, stderr, code = s.counterCmd(t, "incr", "a/b")
	if code != 1 || !strings.Contains(stderr, "invalid_argument") || !strings.Contains(stderr, "overflow") {
		t.Errorf("incr past MaxInt64: exit %d, stderr %q", code, stderr)
	}
}

func TestCLICounterBatchIncr(t *testing.T) {
	s, _ := newCounterCLIServer(t)
	batch := func(stdin string, args ...string) (string, string, int) {
		t.Helper()
		return runCLI(t, context.Background(), stdin, "counter", append([]string{"batch-incr", "--addr", s.addr}, args...)...)
	}
	stdout, stderr, code := batch(`{"increments":[{"key":"views","by":5},{"key":"a/b"},{"key":"views","by":-2}]}`)
	if code != 0 || stdout != "key=views value=5\nkey=a/b value=1\nkey=views value=3\n" {
		t.Errorf("batch-incr: exit %d, stdout %q, stderr %q", code, stdout, stderr)
	}
	stdout, stderr, code = batch(`{"increments":[{"key":"views"},{"key":""}]}`, "--json")
	if code != 1 || !strings.Contains(stdout, `"value": 4`) || !strings.Contains(stdout, `"code": "invalid_argument"`) ||
		stderr != "" { // with --json, stderr holds error documents only
		t.Errorf("batch-incr --json with an empty key: exit %d, stdout %q, stderr %q", code, stdout, stderr)
	}
	// Malformed input sends nothing.
	for _, in := range []string{
		``, `[]`, `{}`, `{"increments":[{"by":1}]}`, `{"increments":[{"key":"views","by":1.5}]}`,
		`{"increments":[{"key":"views","by":1,"by":2}]}`, `{"increments":[{"key":"views","step":1}]}`,
		`{"increments":[]}`, `{"increments":[{"key":"views"}]} {}`,
		`{"increments":[{"key":"views","by":null}]}`, `{"increments":[{"key":null,"by":1}]}`,
		`{"increments":null}`, `{"increments":[{"key":"views","by":"1"}]}`,
		`{"increments":[{"key":"views","by":9223372036854775808}]}`,
	} {
		if _, stderr, code := batch(in); code != 2 || stderr == "" {
			t.Errorf("batch-incr < %q: exit %d, stderr %q; want a usage error", in, code, stderr)
		}
	}
	stdout, _, _ = runCLI(t, context.Background(), "", "counter", "get", "--addr", s.addr, "views")
	if stdout != "key=views value=4\n" {
		t.Errorf("views after the refused inputs: %q; want 4", stdout)
	}
}

func TestCLICounterUsage(t *testing.T) {
	s, _ := newCounterCLIServer(t)
	tests := []struct {
		args []string
		code int
		err  string
	}{
		{[]string{"counter"}, 2, "missing action"},
		{[]string{"counter", "decr", "k"}, 2, `unknown action "decr"`},
		{[]string{"counter", "--json", "get", "k"}, 2, "the action comes before flags"},
		{[]string{"counter", "incr"}, 2, "too few arguments"},
		{[]string{"counter", "incr", "k", "1", "2"}, 2, "too many arguments"},
		{[]string{"counter", "incr", "k", "1.5"}, 2, `BY "1.5" is not a 64-bit integer`},
		{[]string{"counter", "incr", "k", "9223372036854775808"}, 2, "is not a 64-bit integer"},
		{[]string{"counter", "incr", "k", "-5"}, 2, "flag provided but not defined: -5"},
		{[]string{"counter", "get"}, 2, "too few arguments"},
		{[]string{"counter", "help"}, 0, "actions:"},
		{[]string{"counter", "incr", "-h"}, 0, "put -- before it"},
	}
	t.Setenv("CELLAR_ADDR", s.addr)
	for _, tt := range tests {
		_, stderr, code := runCLI(t, context.Background(), "", tt.args[0], tt.args[1:]...)
		if code != tt.code || !strings.Contains(stderr, tt.err) {
			t.Errorf("cellar %q: exit %d, stderr %q; want exit %d and %q", tt.args, code, stderr, tt.code, tt.err)
		}
	}
	var usage strings.Builder
	clientUsage(&usage)
	if !strings.Contains(usage.String(), "counter incr|batch-incr|get KEY ...") {
		t.Errorf("client usage lacks the counter command:\n%s", usage.String())
	}
}
