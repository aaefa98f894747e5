package client_test

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cellar-db/cellar"
	"github.com/cellar-db/cellar/client"
	"github.com/cellar-db/cellar/internal/counter"
	cellarhttp "github.com/cellar-db/cellar/internal/http"
	"github.com/cellar-db/cellar/internal/sqlite"
	"github.com/cellar-db/cellar/internal/sqlstore"
)

// newCounterServer starts the real HTTP API with counters in journal mode
// over a fresh SQLite node. wrap, if not nil, wraps the handler.
func newCounterServer(tb testing.TB, wrap func(http.Handler) http.Handler) (*client.Client, *counter.Journal) {
	tb.Helper()
	ctx := context.Background()
	store, err := sqlite.Open(ctx, filepath.Join(tb.TempDir(), "n.db"),
		sqlite.Options{Options: sqlstore.Options{Name: "t", ShardCount: shardCount, Create: true}})
	if err != nil {
		tb.Fatalf("open store: %v", err)
	}
	tb.Cleanup(func() { store.Close() })
	j, err := counter.OpenJournal(ctx, filepath.Join(tb.TempDir(), "counters.journal"), store, counter.Options{FlushInterval: time.Hour})
	if err != nil {
		tb.Fatalf("open counter journal: %v", err)
	}
	tb.Cleanup(func() { j.Close() })
	var h http.Handler = cellarhttp.NewHandler(store, cellarhttp.Options{Counters: j})
	if wrap != nil {
		h = wrap(h)
	}
	srv := httptest.NewServer(h)
	tb.Cleanup(srv.Close)
	return client.New(srv.URL), j
}

func TestCounters(t *testing.T) {
	c, j := newCounterServer(t, nil)
	ctx := context.Background()
	var cs cellar.CounterStore = c
	for _, key := range []string{"page:1", "/", ".", "..", "a/b c?d#e%f", "ü"} {
		if v, err := cs.Counter(ctx, key); err != nil || v != 0 {
			t.Errorf("Counter(%q) = %d, %v; want 0", key, v, err)
		}
		if v, err := cs.Incr(ctx, key, 5); err != nil || v != 5 {
			t.Errorf("Incr(%q, 5) = %d, %v; want 5", key, v, err)
		}
		if v, err := cs.Incr(ctx, key, -7); err != nil || v != -2 {
			t.Errorf("Incr(%q, -7) = %d, %v; want -2", key, v, err)
		}
	}
	if err := j.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if v, err := cs.Counter(ctx, "a/b c?d#e%f"); err != nil || v != -2 {
		t.Errorf("Counter after flush = %d, %v; want -2", v, err)
	}

	res := cs.BatchCounters(ctx, []string{"page:1", "never", "", "bad\xff", "/"})
	want := []struct {
		value int64
		code  string
	}{{-2, ""}, {0, ""}, {0, cellar.EINVALID}, {0, cellar.EINVALID}, {-2, ""}}
	for i, r := range res {
		if r.Key != []string{"page:1", "never", "", "bad\xff", "/"}[i] || r.Value != want[i].value || cellar.ErrorCode(r.Err) != want[i].code {
			t.Errorf("BatchCounters[%d] = %+v; want value %d, code %q", i, r, want[i].value, want[i].code)
		}
	}
	if res := cs.BatchCounters(ctx, nil); len(res) != 0 {
		t.Errorf("BatchCounters(nil) = %v; want none", res)
	}

	_, err := cs.Incr(ctx, "", 1)
	if !errors.Is(err, cellar.ErrInvalid) {
		t.Errorf("Incr of an empty key: %v; want invalid", err)
	}
	if _, err := cs.Incr(ctx, "max", math.MaxInt64); err != nil {
		t.Fatal(err)
	}
	_, err = cs.Incr(ctx, "max", 1)
	if !errors.Is(err, cellar.ErrInvalid) || !strings.Contains(err.Error(), "overflow") {
		t.Errorf("Incr past MaxInt64: %v; want an invalid_argument about overflow", err)
	}
	if v, err := cs.Incr(ctx, "min", math.MinInt64); err != nil || v != math.MinInt64 {
		t.Errorf("Incr(min, MinInt64) = %d, %v", v, err)
	}

	many := make([]string, cellar.MaxBatchKeys+1)
	for i := range many {
		many[i] = "k"
	}
	for _, r := range cs.BatchCounters(ctx, many) { // sent in two requests
		if r.Err != nil || r.Key != "k" {
			t.Fatalf("BatchCounters of %d keys: %+v; want k's value", len(many), r)
		}
	}
}

// TestCountersNotResent: an increment whose answer is lost is reported
// unavailable and not sent again (it may have been applied once).
func TestCountersNotResent(t *testing.T) {
	var incrs atomic.Int64
	c, _ := newCounterServer(t, func(h http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if !strings.HasSuffix(r.URL.Path, "/incr") {
				h.ServeHTTP(w, r)
				return
			}
			incrs.Add(1)
			h.ServeHTTP(httptest.NewRecorder(), r) // applied; the answer is lost
			conn, _, err := http.NewResponseController(w).Hijack()
			if err == nil {
				conn.Close()
			}
		})
	})
	ctx := context.Background()
	if _, err := c.Counter(ctx, "k"); err != nil { // a used connection, as a retry needs
		t.Fatal(err)
	}
	_, err := c.Incr(ctx, "k", 1)
	if !errors.Is(err, cellar.ErrUnavailable) {
		t.Fatalf("Incr with a lost answer: %v; want unavailable", err)
	}
	if n := incrs.Load(); n != 1 {
		t.Errorf("the server received %d increments; want 1", n)
	}
	if v, err := c.Counter(ctx, "k"); err != nil || v != 1 {
		t.Errorf("Counter = %d, %v; want 1", v, err)
	}
}

func TestCountersServerDown(t *testing.T) {
	srv := httptest.NewServer(http.NotFoundHandler())
	c := client.New(srv.URL)
	srv.Close()
	ctx := context.Background()
	if _, err := c.Incr(ctx, "k", 1); !errors.Is(err, cellar.ErrUnavailable) {
		t.Errorf("Incr on a closed server: %v; want unavailable", err)
	}
	for _, r := range c.BatchCounters(ctx, []string{"a", "b"}) {
		if !errors.Is(r.Err, cellar.ErrUnavailable) {
			t.Errorf("BatchCounters on a closed server: %+v; want unavailable", r)
		}
	}
}

// A batch read of more counters than one request may name is sent in
// several requests.
func TestBatchCountersBeyondTheRequestLimit(t *testing.T) {
	c, _ := newCounterServer(t, nil)
	ctx := context.Background()
	keys := make([]string, cellar.MaxBatchKeys+3)
	for i := range keys {
		keys[i] = fmt.Sprintf("k%d", i)
	}
	last := keys[len(keys)-1]
	if _, err := c.Incr(ctx, last, 5); err != nil {
		t.Fatal(err)
	}
	res := c.BatchCounters(ctx, keys)
	for i, r := range res {
		want := int64(0)
		if r.Key == last {
			want = 5
		}
		if r.Err != nil || r.Key != keys[i] || r.Value != want {
			t.Fatalf("result %d: %+v; want %s = %d", i, r, keys[i], want)
		}
	}
}

// BatchIncr against the real API: results in order (one key's increments
// added in order), a bad key or an overflow failing alone, a key that is
// not UTF-8 refused before sending, more increments than one request
// holds sent in several, and nothing resent when a request fails.
func TestBatchIncr(t *testing.T) {
	var posts atomic.Int64
	var failing atomic.Bool
	c, _ := newCounterServer(t, func(h http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path == "/v1/counters:batchIncr" {
				posts.Add(1)
				if failing.Load() { // a proxy whose upstream is gone
					http.Error(w, "<html>bad gateway</html>", http.StatusBadGateway)
					return
				}
			}
			h.ServeHTTP(w, r)
		})
	})
	ctx := context.Background()
	incrs := []cellar.CounterIncrement{{Key: "a", By: 2}, {Key: "b/c", By: -1}, {Key: "a", By: 3}, {Key: "", By: 1},
		{Key: "bad\xff", By: 1}, {Key: "m", By: math.MaxInt64}, {Key: "m", By: 1}, {Key: "a", By: 1}}
	res := c.BatchIncr(ctx, incrs)
	want := []struct {
		v    int64
		code string
	}{{2, ""}, {-1, ""}, {5, ""}, {0, cellar.EINVALID}, {0, cellar.EINVALID}, {math.MaxInt64, ""}, {0, cellar.EINVALID}, {6, ""}}
	if len(res) != len(want) {
		t.Fatalf("%d results; want %d", len(res), len(want))
	}
	for i, w := range want {
		r := res[i]
		if r.Key != incrs[i].Key || cellar.ErrorCode(r.Err) != w.code && w.code != "" || (w.code == "" && (r.Err != nil || r.Value != w.v)) {
			t.Errorf("result %d = %+v; want %s = %d (error %q)", i, r, incrs[i].Key, w.v, w.code)
		}
	}
	if n := posts.Swap(0); n != 1 {
		t.Errorf("%d requests for one batch; want 1", n)
	}

	many := make([]cellar.CounterIncrement, cellar.MaxBatchKeys+2)
	for i := range many {
		many[i] = cellar.CounterIncrement{Key: fmt.Sprintf("k%d", i%7), By: 1}
	}
	res = c.BatchIncr(ctx, many)
	seen := map[string]int64{}
	for i, r := range res {
		seen[r.Key]++
		if r.Err != nil || r.Value != seen[r.Key] {
			t.Fatalf("result %d = %+v; want %s = %d", i, r, many[i].Key, seen[r.Key])
		}
	}
	if n := posts.Swap(0); n != 2 {
		t.Errorf("%d requests for %d increments; want 2", n, len(many))
	}
	if v, err := c.Counter(ctx, "k0"); err != nil || v != seen["k0"] {
		t.Errorf("Counter(k0) = %d, %v; want %d", v, err, seen["k0"])
	}

	failing.Store(true)
	for i, r := range c.BatchIncr(ctx, incrs[:3]) {
		if r.Err == nil || r.Key != incrs[i].Key {
			t.Errorf("result %d through a failing proxy = %+v; want an error", i, r)
		}
	}
	if n := posts.Load(); n != 1 {
		t.Errorf("a failed batch was sent %d times; want once (increments are not idempotent)", n)
	}
}
