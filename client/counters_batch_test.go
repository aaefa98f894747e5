package client_test

import (
	"context"
	"fmt"
	"math"
	"net/http"
	"sync/atomic"
	"testing"

	"github.com/cellar-db/cellar"
)

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
