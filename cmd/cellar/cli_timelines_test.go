package main

import (
	"context"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cellar-db/cellar"
	cellarhttp "github.com/cellar-db/cellar/internal/http"
	"github.com/cellar-db/cellar/internal/sqlite"
	"github.com/cellar-db/cellar/internal/sqlstore"
)

// newTimelineCLIServer is newCLIServer with the timeline routes on.
func newTimelineCLIServer(tb testing.TB) (*cliServer, *sqlstore.Store) {
	tb.Helper()
	store, err := sqlite.Open(context.Background(), filepath.Join(tb.TempDir(), "n.db"),
		sqlite.Options{Options: sqlstore.Options{Name: "t", ShardCount: cliShards, Create: true}})
	if err != nil {
		tb.Fatalf("open store: %v", err)
	}
	tb.Cleanup(func() { store.Close() })
	srv := httptest.NewServer(cellarhttp.NewHandler(store, cellarhttp.Options{Timelines: store}))
	tb.Cleanup(srv.Close)
	return &cliServer{addr: srv.URL, store: store}, store
}

// timeline runs cellar timeline ACTION --addr URL ARGS...
func (s *cliServer) timeline(tb testing.TB, action string, args ...string) (stdout, stderr string, code int) {
	tb.Helper()
	return runCLI(tb, context.Background(), "", "timeline", append([]string{action, "--addr", s.addr}, args...)...)
}

func TestCLITimeline(t *testing.T) {
	s, store := newTimelineCLIServer(t)
	ctx := context.Background()
	run := func(args ...string) string {
		t.Helper()
		stdout, stderr, code := s.timeline(t, args[0], args[1:]...)
		if code != 0 {
			t.Fatalf("timeline %q: exit %d, stderr %s", args, code, stderr)
		}
		return stdout
	}
	want := func(got, want string) {
		t.Helper()
		if got != want {
			t.Errorf("output:\n%s\nwant:\n%s", got, want)
		}
	}
	want(run("add", "feed", "alice", "1.5"), "key=feed member=alice score=1.5\n")
	want(run("add", "feed", "bob smith", "--", "-2"), `key=feed member="bob smith" score=-2`+"\n")
	want(run("add", "feed", "carol", "1e21", "--json"), "{\n  \"key\": \"feed\",\n  \"member\": \"carol\",\n  \"score\": 1e+21\n}\n")
	want(run("add", "feed", "dave", "1.5"), "key=feed member=dave score=1.5\n")
	items, count, err := store.TimelineRange(ctx, "feed", 0, 10, true)
	if err != nil || count != 4 || items[0] != (cellar.TimelineItem{Member: "carol", Score: 1e21}) {
		t.Errorf("stored timeline = %v, %d, %v", items, count, err)
	}

	want(run("range", "feed"), "SCORE  MEMBER\n1e+21  carol\n1.5    dave\n1.5    alice\n-2     \"bob smith\"\ncount=4\n")
	want(run("range", "feed", "--asc", "--limit", "2"), "SCORE  MEMBER\n-2     \"bob smith\"\n1.5    alice\ncount=4\n")
	want(run("range", "feed", "--offset", "4"), "count=4\n")
	want(run("range", "nothing"), "count=0\n")
	want(run("range", "feed", "--offset", "1", "--limit", "1", "--json"),
		"{\n  \"items\": [\n    {\n      \"member\": \"dave\",\n      \"score\": 1.5\n    }\n  ],\n  \"count\": 4\n}\n")

	want(run("rm", "feed", "alice"), "removed=true\n")
	want(run("rm", "feed", "alice"), "removed=false\n")
	want(run("rm", "feed", "dave", "--json"), "{\n  \"removed\": true\n}\n")

	want(run("cap", "feed", "1"), "key=feed cap=1\n")
	want(run("range", "feed", "--json"), "{\n  \"items\": [\n    {\n      \"member\": \"carol\",\n      \"score\": 1e+21\n    }\n  ],\n  \"count\": 1\n}\n")
	want(run("cap", "a b", "5", "--json"), "{\n  \"key\": \"a b\",\n  \"cap\": 5\n}\n")

	// The server's refusals exit 1 with its message.
	stdout, stderr, code := s.timeline(t, "cap", "feed", "0")
	if code != 1 || stdout != "" || !strings.Contains(stderr, "invalid_argument: cap must be an integer in 1..1000000") {
		t.Errorf("timeline cap feed 0: exit %d, stdout %q, stderr %q; want exit 1 and the server's message", code, stdout, stderr)
	}
	stdout, stderr, code = s.timeline(t, "range", "feed", "--limit", "5000")
	if code != 1 || stdout != "" || !strings.Contains(stderr, "invalid_argument: limit 5000 is out of range 1..1000") {
		t.Errorf("timeline range --limit 5000: exit %d, stdout %q, stderr %q", code, stdout, stderr)
	}
}

func TestCLITimelineUsage(t *testing.T) {
	s, _ := newTimelineCLIServer(t)
	tests := []struct {
		args  []string
		msg   string // in stderr
		usage string // in stderr
	}{
		{[]string{"add", "k", "m"}, "too few arguments", "usage: cellar timeline add [flags] KEY MEMBER SCORE"},
		{[]string{"add", "k", "m", "x"}, `SCORE "x" is not a finite JSON number`, "usage: cellar timeline add [flags]"},
		{[]string{"add", "k", "m", "NaN"}, `SCORE "NaN" is not a finite JSON number`, "usage: cellar timeline add [flags]"},
		{[]string{"add", "k", "m", "1e-400"}, `SCORE "1e-400" is not a finite JSON number within the range`, "usage: cellar timeline add [flags]"},
		{[]string{"add", "k", "m", "1e400"}, `SCORE "1e400" is not a finite JSON number`, "usage: cellar timeline add [flags]"},
		// Go's float syntax is not JSON's.
		{[]string{"add", "k", "m", "1_0"}, `SCORE "1_0" is not a finite JSON number`, "usage: cellar timeline add [flags]"},
		{[]string{"add", "k", "m", "0x1p-2"}, `SCORE "0x1p-2" is not a finite JSON number`, "usage: cellar timeline add [flags]"},
		{[]string{"add", "k", "m", "01"}, `SCORE "01" is not a finite JSON number`, "usage: cellar timeline add [flags]"},
		{[]string{"add", "k", "m", "+1"}, `SCORE "+1" is not a finite JSON number`, "usage: cellar timeline add [flags]"},
		{[]string{"add", "k", "m", "-5"}, "flag provided but not defined: -5", "usage: cellar timeline add [flags]"},
		{[]string{"rm", "k"}, "too few arguments", "usage: cellar timeline rm [flags] KEY MEMBER"},
		{[]string{"range"}, "too few arguments", "usage: cellar timeline range [flags] KEY [--offset N] [--limit N] [--asc]"},
		{[]string{"range", "k", "--limit", "x"}, `invalid value "x" for flag -limit`, "usage: cellar timeline range [flags]"},
		{[]string{"cap", "k", "ten"}, `N "ten" is not an integer`, "usage: cellar timeline cap [flags] KEY N"},
		{[]string{"cap", "k", "1", "2"}, "too many arguments", "usage: cellar timeline cap [flags]"},
	}
	for _, tt := range tests {
		stdout, stderr, code := s.timeline(t, tt.args[0], tt.args[1:]...)
		if code != 2 || stdout != "" || !strings.Contains(stderr, tt.msg) || !strings.Contains(stderr, tt.usage) {
			t.Errorf("timeline %q: exit %d, stdout %q, stderr:\n%s\nwant exit 2, %q and %q", tt.args, code, stdout, stderr, tt.msg, tt.usage)
		}
	}
	overview := "usage: cellar timeline ACTION [flags] KEY ..."
	for _, tt := range []struct {
		args []string
		msg  string
	}{
		{nil, "missing action"},
		{[]string{"nope"}, `unknown action "nope"`},
		{[]string{"--json", "add"}, "the action comes before flags"},
	} {
		stdout, stderr, code := runCLI(t, context.Background(), "", "timeline", tt.args...)
		if code != 2 || stdout != "" || !strings.Contains(stderr, tt.msg) || !strings.Contains(stderr, overview) || !strings.Contains(stderr, "range KEY [--offset N]") {
			t.Errorf("timeline %q: exit %d, stdout %q, stderr:\n%s\nwant exit 2, %q and the list of actions", tt.args, code, stdout, stderr, tt.msg)
		}
	}
	stdout, stderr, code := runCLI(t, context.Background(), "", "timeline", "-h")
	if code != 0 || stdout != "" || !strings.Contains(stderr, overview) {
		t.Errorf("timeline -h: exit %d, stdout %q, stderr:\n%s", code, stdout, stderr)
	}
	stdout, stderr, code = runCLI(t, context.Background(), "", "timeline", "add", "-h")
	if code != 0 || stdout != "" || !strings.Contains(stderr, "usage: cellar timeline add [flags] KEY MEMBER SCORE") || !strings.Contains(stderr, "Put -- before a negative SCORE") {
		t.Errorf("timeline add -h: exit %d, stdout %q, stderr:\n%s", code, stdout, stderr)
	}
}

// timeline count prints a timeline's size, as the spec's "add, remove,
// range, count" asks (review of 2026-12-08: there was no count action).
func TestCLITimelineCount(t *testing.T) {
	s, _ := newTimelineCLIServer(t)
	for _, m := range []string{"a", "b", "c"} {
		if _, stderr, code := s.timeline(t, "add", "feed/1", m, "1"); code != 0 {
			t.Fatalf("add: exit %d, %s", code, stderr)
		}
	}
	stdout, stderr, code := s.timeline(t, "count", "feed/1")
	if code != 0 || stdout != "key=feed/1 count=3\n" {
		t.Errorf("timeline count feed/1: exit %d, stdout %q, stderr %q; want exit 0 and key=feed/1 count=3", code, stdout, stderr)
	}
	if stdout, _, code := s.timeline(t, "count", "nothing", "--json"); code != 0 || stdout != "{\n  \"key\": \"nothing\",\n  \"count\": 0\n}\n" {
		t.Errorf("timeline count nothing --json: exit %d, stdout %q; want the count 0", code, stdout)
	}
}

// Scores are typically Unix times (README: "score": 1732200000): the
// readable output prints them without an exponent, as --json does.
// (Review of 2026-12-08: 1.732200001e+09.)
func TestCLITimelineScoreWithoutExponent(t *testing.T) {
	s, _ := newTimelineCLIServer(t)
	stdout, stderr, code := s.timeline(t, "add", "feed/2", "post:9", "1732200001")
	if code != 0 || stdout != "key=feed/2 member=post:9 score=1732200001\n" {
		t.Errorf("timeline add ... 1732200001: exit %d, stdout %q, stderr %q; want score=1732200001", code, stdout, stderr)
	}
	stdout, _, _ = s.timeline(t, "range", "feed/2")
	if !strings.Contains(stdout, "1732200001  post:9") {
		t.Errorf("timeline range: stdout %q; want the score as 1732200001", stdout)
	}
	for f, want := range map[float64]string{0: "0", 1e-6: "0.000001", 1e-7: "1e-07", 123456789012345680000: "123456789012345680000", 1e21: "1e+21", -2.5: "-2.5"} {
		if got := formatScore(f); got != want {
			t.Errorf("formatScore(%v) = %q; want %q", f, got, want)
		}
	}
}
