package cache_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/cellar-db/cellar"
	"github.com/cellar-db/cellar/internal/cache"
	"github.com/cellar-db/cellar/internal/dbtest"
)

// A process that wrote a cell never serves an older one, even once the
// answer its write was pushed into has expired: here another process's
// read, begun before the write, stores the old cell in Redis after it.
func TestLatestForwardAfterOwnWriteViaRedis(t *testing.T) {
	r := newCluster(t, 16, dbtest.Redis(t))
	back := openSQLite(t, 16)
	clk := newClock()
	a := newCache(t, back, cache.Options{Redis: r, Now: clk.Now, MaxStaleness: time.Second})
	g := newGated(back)
	b := newCache(t, g, cache.Options{Redis: r, Now: clk.Now, MaxStaleness: time.Second})
	put(t, back, "r", "c", 3, `{"v":3}`)
	if _, err := a.Row(ctx(t), "r", nil); err != nil { // A caches c/3, in process only
		t.Fatal(err)
	}

	clk.Advance(500 * time.Millisecond)
	g.arm()
	done := make(chan int64)
	go func() { done <- latestRef(t, b, "r", "c") }()
	<-g.read // B has read c/3
	clk.Advance(100 * time.Millisecond)
	put(t, a, "r", "c", 5, `{"v":5}`) // pushed into A's answer of t0
	if got := latestRef(t, a, "r", "c"); got != 5 {
		t.Fatalf("A's Latest after its write = %d; want 5", got)
	}
	close(g.release)
	if got := <-done; got != 3 { // B stores c/3 in Redis, after the write
		t.Fatalf("B's Latest begun before the write = %d; want 3", got)
	}

	clk.Advance(400 * time.Millisecond) // A's answer of t0 expires
	if got := latestRef(t, a, "r", "c"); got != 5 {
		t.Errorf("A's Latest after its answer expired = %d; want 5, not Redis's 3", got)
	}
}

// The same in process: a slow whole-row read, begun before the write and
// finished after the answer the write was pushed into expired, does not
// store its old cell as the latest.
func TestLatestForwardAfterOwnWriteSlowRow(t *testing.T) {
	clk := newClock()
	g := newGated(openSQLite(t, 16))
	s := newCache(t, g, cache.Options{Now: clk.Now, MaxStaleness: time.Second})
	put(t, g, "r", "c", 3, `{"v":3}`)
	if got := latestRef(t, s, "r", "c"); got != 3 { // a latest entry, no row entry
		t.Fatalf("Latest = %d; want 3", got)
	}

	clk.Advance(500 * time.Millisecond)
	g.arm()
	done := make(chan error)
	go func() {
		_, err := s.Row(ctx(t), "r", nil)
		done <- err
	}()
	<-g.read // the row read has read c/3
	clk.Advance(100 * time.Millisecond)
	put(t, s, "r", "c", 5, `{"v":5}`)
	if got := latestRef(t, s, "r", "c"); got != 5 {
		t.Fatalf("Latest after this process's write = %d; want 5", got)
	}
	clk.Advance(400 * time.Millisecond) // the answer of t0 expires
	close(g.release)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if got := latestRef(t, s, "r", "c"); got != 5 {
		t.Errorf("Latest after the slow row read stored its answer = %d; want 5", got)
	}
}

// A latest cell read from storage reaches the cached row: a whole row
// served after it does not go back behind it.
func TestRowForwardAfterLatestRead(t *testing.T) {
	clk := newClock()
	back := openSQLite(t, 16)
	s := newCache(t, back, cache.Options{Now: clk.Now, MaxStaleness: time.Second})
	put(t, back, "r", "d", 1, `{}`)
	if row, err := s.Row(ctx(t), "r", nil); err != nil || len(row) != 1 {
		t.Fatalf("Row = %+v, %v", row, err)
	}
	put(t, back, "r", "c", 5, `{}`) // another process's write
	clk.Advance(10 * time.Millisecond)
	row, err := s.Row(ctx(t), "r", []string{"c"})
	if err != nil || len(row) != 1 || row[0].RefKey != 5 {
		t.Fatalf("Row(c) = %+v, %v; want c/5, read from storage", row, err)
	}
	clk.Advance(10 * time.Millisecond)
	row, err = s.Row(ctx(t), "r", nil)
	var got []string
	for _, c := range row {
		got = append(got, fmt.Sprintf("%s/%d", c.Column, c.RefKey))
	}
	if err != nil || strings.Join(got, " ") != "c/5 d/1" {
		t.Errorf("Row after Row(c) served c/5 = %v, %v; want c/5 d/1", got, err)
	}
}

// A hung Redis does not fail reads whose deadline is under RedisTimeout:
// a round trip gets at most half of what the caller has left. Such short
// cut-offs do not fail the node (TestShortDeadlineKeepsHealthyRedis); the
// first read with time to spare does, and the node is then left alone.
func TestHungRedisShortDeadline(t *testing.T) {
	srv := dbtest.Redis(t)
	proxy := dbtest.NewProxy(t, srv.Addr())
	r := clusterAt(t, 16, 10*time.Second, proxy.Addr())
	back := openSQLite(t, 16)
	obs := newCounts()
	s := newCache(t, slowStore{back, 20 * time.Millisecond}, cache.Options{Redis: r, Observer: obs, RedisTimeout: 500 * time.Millisecond})
	for i := 0; i < 3; i++ {
		put(t, back, fmt.Sprintf("r%d", i), "c", 1, `{}`)
	}
	latestRef(t, s, "warm", "c") // a pooled connection to Redis
	proxy.Hang()

	for i := 0; i < 3; i++ {
		rctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		start := time.Now()
		c, err := s.Latest(rctx, fmt.Sprintf("r%d", i), "c")
		cancel()
		if err != nil || c.RefKey != 1 {
			t.Errorf("read %d with Redis hung and a 200ms deadline = ref %d, %v after %v; want ref 1", i, c.RefKey, err, time.Since(start))
		}
	}
	if n := obs.errors(cache.TierRedis, "get"); n != 0 {
		t.Errorf("get errors after short cut-offs = %d; want 0", n)
	}
	// A read with time to spare fails the node at the full timeout; the
	// next is then not sent to it.
	for _, row := range []string{"r8", "r9"} {
		put(t, back, row, "c", 1, `{}`)
		if c, err := s.Latest(context.Background(), row, "c"); err != nil || c.RefKey != 1 {
			t.Errorf("read of %s with time to spare = ref %d, %v; want ref 1", row, c.RefKey, err)
		}
	}
	if n := obs.errors(cache.TierRedis, "get"); n != 1 {
		t.Errorf("get errors = %d; want 1: the full timeout fails the node, which is then left alone", n)
	}
}

// slowStore is a storage node whose Latest takes d, or fails when the
// caller's context ends first.
type slowStore struct {
	cellar.Store
	d time.Duration
}

func (s slowStore) Latest(ctx context.Context, row, col string) (cellar.Cell, error) {
	select {
	case <-time.After(s.d):
	case <-ctx.Done():
		return cellar.Cell{}, cellar.Unavailable(ctx.Err(), "node did not answer in time")
	}
	return s.Store.Latest(ctx, row, col)
}

// A cached whole row is bounded as the node bounds a row (cellar.BoundRow):
// its entry grows as columns are written through the cache after it was
// filled, and once their bodies pass MaxBatchGetBytes it answers
// too_large, as the node does, not the cells. (Review of stop 18: it was
// served whole.)
func TestWholeRowBoundAfterPush(t *testing.T) {
	back := openSQLite(t, 16)
	s := newCache(t, back, cache.Options{MaxBytes: 256 << 20, Now: newClock().Now})
	big := `{"x":"` + strings.Repeat("a", 1_000_000) + `"}`
	fit := cellar.MaxBatchGetBytes / len(big) // 16 columns fit
	for i := range fit {
		put(t, s, "r", fmt.Sprintf("c%03d", i), 1, big)
	}
	if cells, err := s.Row(ctx(t), "r", nil); err != nil || len(cells) != fit {
		t.Fatalf("Row of %d fitting columns = %d cells, %v", fit, len(cells), err)
	}
	// Two more columns written through the cache: pushed into the row entry.
	put(t, s, "r", "c900", 1, big)
	put(t, s, "r", "c901", 1, big)
	if _, err := back.Row(ctx(t), "r", nil); !errors.Is(err, cellar.ErrTooLarge) {
		t.Fatalf("backing Row = %v; want too_large (the test assumes the node refuses it)", err)
	}
	cells, err := s.Row(ctx(t), "r", nil)
	if !errors.Is(err, cellar.ErrTooLarge) {
		size := 0
		for _, c := range cells {
			size += len(c.Body)
		}
		t.Errorf("cached whole Row = %d cells (%d body bytes > MaxBatchGetBytes %d), err %v; want too_large as the node answers",
			len(cells), size, cellar.MaxBatchGetBytes, err)
	}
}

// Same, with the columns written by another process and read here with
// Latest, which merges them into the cached row entry.
func TestWholeRowBoundAfterLatestRead(t *testing.T) {
	back := openSQLite(t, 16)
	s := newCache(t, back, cache.Options{MaxBytes: 256 << 20, Now: newClock().Now})
	big := `{"x":"` + strings.Repeat("a", 1_000_000) + `"}`
	fit := cellar.MaxBatchGetBytes / len(big)
	for i := range fit {
		put(t, back, "r", fmt.Sprintf("c%03d", i), 1, big)
	}
	if cells, err := s.Row(ctx(t), "r", nil); err != nil || len(cells) != fit {
		t.Fatalf("Row = %d cells, %v", len(cells), err)
	}
	put(t, back, "r", "c900", 1, big) // another process's writes
	put(t, back, "r", "c901", 1, big)
	latestRef(t, s, "r", "c900")
	latestRef(t, s, "r", "c901")
	cells, err := s.Row(ctx(t), "r", nil)
	if !errors.Is(err, cellar.ErrTooLarge) {
		t.Errorf("cached whole Row after Latest reads = %d cells, err %v; want too_large as the node answers", len(cells), err)
	}
}
