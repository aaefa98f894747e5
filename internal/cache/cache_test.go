package cache_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cellar-db/cellar"
	"github.com/cellar-db/cellar/internal/cache"
	"github.com/cellar-db/cellar/internal/dbtest"
	"github.com/cellar-db/cellar/internal/storetest"
)

// The cache must be invisible to correctness: the whole conformance suite
// passes through it, with each tier alone and both together.
func TestConformance(t *testing.T) {
	t.Run("Local", func(t *testing.T) {
		storetest.Run(t, func(tb testing.TB, shards int) cellar.Store {
			return newCache(tb, openSQLite(tb, shards), cache.Options{})
		})
	})
	t.Run("LocalAndRedis", func(t *testing.T) {
		storetest.Run(t, func(tb testing.TB, shards int) cellar.Store {
			r := newCluster(tb, shards, dbtest.Redis(tb), dbtest.Redis(tb))
			return newCache(tb, openSQLite(tb, shards), cache.Options{Redis: r})
		})
	})
	t.Run("RedisOnly", func(t *testing.T) {
		storetest.Run(t, func(tb testing.TB, shards int) cellar.Store {
			r := newCluster(tb, shards, dbtest.Redis(tb))
			return newCache(tb, openSQLite(tb, shards), cache.Options{MaxBytes: -1, Redis: r})
		})
	})
}

func TestHitsAndMisses(t *testing.T) {
	back := newCounting(openSQLite(t, 16))
	obs := newCounts()
	s := newCache(t, back, cache.Options{Observer: obs})
	put(t, s, "r", "c", 1, `{"v":1}`)

	for i := 0; i < 3; i++ {
		if _, err := s.Get(ctx(t), cellar.Key{RowKey: "r", Column: "c", RefKey: 1}); err != nil {
			t.Fatal(err)
		}
		if _, err := s.Latest(ctx(t), "r", "c"); err != nil {
			t.Fatal(err)
		}
	}
	if n := back.take("get"); n != 1 {
		t.Errorf("3 Gets reached the backing store %d times; want 1", n)
	}
	if n := back.take("latest"); n != 1 {
		t.Errorf("3 Latests reached the backing store %d times; want 1", n)
	}
	if h, m := obs.take(cache.TierLocal); h != 4 || m != 2 {
		t.Errorf("local hits, misses = %d, %d; want 4, 2", h, m)
	}

	// Invalid keys are refused before any tier, and counted nowhere.
	if _, err := s.Latest(ctx(t), "r", "bad-col"); !errors.Is(err, cellar.ErrInvalid) {
		t.Errorf("Latest with a bad column: %v; want invalid", err)
	}
	if h, m := obs.take(cache.TierLocal); h != 0 || m != 0 {
		t.Errorf("an invalid lookup counted %d hits, %d misses", h, m)
	}
}

// A cell by full key never changes: it stays cached however much time
// passes. A latest cell is served only until it is MaxStaleness old.
func TestImmutableCellsStay(t *testing.T) {
	clk := newClock()
	back := newCounting(openSQLite(t, 16))
	s := newCache(t, back, cache.Options{Now: clk.Now, MaxStaleness: time.Second})
	put(t, s, "r", "c", 1, `{"v":1}`)
	k := cellar.Key{RowKey: "r", Column: "c", RefKey: 1}
	s.Get(ctx(t), k)
	latestRef(t, s, "r", "c")
	back.take("get")
	back.take("latest")

	clk.Advance(365 * 24 * time.Hour)
	if c, err := s.Get(ctx(t), k); err != nil || string(c.Body) != `{"v":1}` {
		t.Fatalf("Get after a year = %s, %v", c.Body, err)
	}
	if n := back.take("get"); n != 0 {
		t.Errorf("Get of a cached cell after a year reached the backing store %d times; want 0", n)
	}
	latestRef(t, s, "r", "c")
	if n := back.take("latest"); n != 1 {
		t.Errorf("Latest after a year reached the backing store %d times; want 1", n)
	}
}

// A process that writes a cell updates its cached latest entry at once:
// the next read has it, without asking storage.
func TestLatestPushedOnWrite(t *testing.T) {
	back := newCounting(openSQLite(t, 16))
	s := newCache(t, back, cache.Options{Now: newClock().Now})
	put(t, s, "r", "c", 5, `{"v":5}`)
	put(t, s, "r", "other", 1, `{}`)
	if got := latestRef(t, s, "r", "c"); got != 5 {
		t.Fatalf("Latest = %d; want 5", got)
	}
	if rows, err := s.Row(ctx(t), "r", nil); err != nil || len(rows) != 2 {
		t.Fatalf("Row = %v, %v", rows, err)
	}
	back.take("latest")
	back.take("row")

	put(t, s, "r", "c", 9, `{"v":9}`)
	put(t, s, "r", "c", 7, `{"v":7}`) // lower: not the latest
	put(t, s, "r", "new", 1, `{"n":1}`)
	c, err := s.Latest(ctx(t), "r", "c")
	if err != nil || c.RefKey != 9 || string(c.Body) != `{"v":9}` || c.AddedID == 0 || c.CreatedAt.IsZero() {
		t.Errorf("Latest after writes = %+v, %v; want ref 9 with its metadata", c, err)
	}
	rows, err := s.Row(ctx(t), "r", nil)
	var got []string
	for _, c := range rows {
		got = append(got, fmt.Sprintf("%s/%d", c.Column, c.RefKey))
	}
	if err != nil || strings.Join(got, " ") != "c/9 new/1 other/1" {
		t.Errorf("Row after writes = %v, %v; want c/9 new/1 other/1", got, err)
	}
	if n := back.take("latest") + back.take("row"); n != 0 {
		t.Errorf("reads after the writes reached the backing store %d times; want 0", n)
	}
}

// Not found is cached, but only for MaxStaleness; a write through the
// same store is seen at once.
func TestNotFound(t *testing.T) {
	clk := newClock()
	back := newCounting(openSQLite(t, 16))
	s := newCache(t, back, cache.Options{Now: clk.Now, MaxStaleness: time.Second})
	other := newCache(t, back, cache.Options{Now: clk.Now, MaxStaleness: time.Second})

	for i := 0; i < 3; i++ {
		if got := latestRef(t, s, "r", "c"); got != -1 {
			t.Fatalf("Latest of nothing = %d", got)
		}
		_, err := s.Get(ctx(t), cellar.Key{RowKey: "r", Column: "c", RefKey: 1})
		if !errors.Is(err, cellar.ErrNotFound) || !strings.Contains(err.Error(), `"r"`) {
			t.Fatalf("Get of nothing: %v; want the backing store's not found", err)
		}
	}
	if n := back.take("latest") + back.take("get"); n != 2 {
		t.Errorf("3 lookups of missing cells reached the backing store %d times; want 2", n)
	}

	// Another process writes: this one may say "not found" for up to
	// MaxStaleness, and no longer.
	put(t, other, "r", "c", 1, `{}`)
	if got := latestRef(t, s, "r", "c"); got != -1 {
		t.Errorf("Latest right after another store's write = %d; want the cached not found", got)
	}
	clk.Advance(time.Second)
	if got := latestRef(t, s, "r", "c"); got != 1 {
		t.Errorf("Latest MaxStaleness after another store's write = %d; want 1", got)
	}
	if _, err := s.Get(ctx(t), cellar.Key{RowKey: "r", Column: "c", RefKey: 1}); err != nil {
		t.Errorf("Get MaxStaleness after another store's write: %v", err)
	}

	// A write through this store replaces its own "not found" at once.
	latestRef(t, s, "r", "d")
	s.Get(ctx(t), cellar.Key{RowKey: "r", Column: "d", RefKey: 3})
	put(t, s, "r", "d", 3, `{}`)
	if got := latestRef(t, s, "r", "d"); got != 3 {
		t.Errorf("Latest after this store's write = %d; want 3", got)
	}
	if _, err := s.Get(ctx(t), cellar.Key{RowKey: "r", Column: "d", RefKey: 3}); err != nil {
		t.Errorf("Get after this store's write: %v", err)
	}
}

// Two processes over one backing store, without Redis: a write through A
// is seen by B within MaxStaleness of the write, and B's cache is not
// merely off (it serves the old cell until then).
func TestStalenessBound(t *testing.T) {
	const bound = 2 * time.Second
	clk := newClock()
	back := openSQLite(t, 16)
	a := newCache(t, back, cache.Options{Now: clk.Now, MaxStaleness: bound})
	b := newCache(t, back, cache.Options{Now: clk.Now, MaxStaleness: bound})
	put(t, a, "r", "c", 1, `{}`)
	put(t, a, "r", "d", 1, `{}`)
	if got := latestRef(t, b, "r", "c"); got != 1 {
		t.Fatalf("B's Latest = %d; want 1", got)
	}
	b.Row(ctx(t), "r", nil)
	b.Row(ctx(t), "r", []string{"d"})

	clk.Advance(bound / 2)
	put(t, a, "r", "c", 2, `{}`)
	put(t, a, "r", "d", 2, `{}`)
	if got := latestRef(t, a, "r", "c"); got != 2 {
		t.Errorf("A's own Latest after its write = %d; want 2", got)
	}
	if got := latestRef(t, b, "r", "c"); got != 1 {
		t.Errorf("B's Latest just after A's write = %d; want 1, the cached one", got)
	}
	clk.Advance(bound/2 - time.Millisecond)
	if got := latestRef(t, b, "r", "c"); got != 1 {
		t.Errorf("B's Latest just under the bound after it read = %d; want 1, the cached one", got)
	}
	clk.Advance(time.Millisecond)
	if got := latestRef(t, b, "r", "c"); got != 2 {
		t.Errorf("B's Latest the bound after it read = %d; want 2", got)
	}
	row, err := b.Row(ctx(t), "r", nil)
	if err != nil || len(row) != 2 || row[0].RefKey != 2 || row[1].RefKey != 2 {
		t.Errorf("B's Row the bound after it read = %+v, %v; want c/2 d/2", row, err)
	}
	row, err = b.Row(ctx(t), "r", []string{"d"})
	if err != nil || len(row) != 1 || row[0].RefKey != 2 {
		t.Errorf("B's Row(d) the bound after it read = %+v, %v; want d/2", row, err)
	}
}

// BatchGet asks storage once, for the distinct keys that no tier had.
func TestBatchGetOneBackendCallForMisses(t *testing.T) {
	back := newCounting(openSQLite(t, 16))
	obs := newCounts()
	s := newCache(t, back, cache.Options{Observer: obs, Now: newClock().Now})
	for i := 0; i < 10; i++ {
		put(t, s, fmt.Sprintf("row%d", i), "c", 1, fmt.Sprintf(`{"i":%d}`, i))
	}
	// Cache rows 0-4: latest of 0-2, full keys of 3-4.
	warm := []cellar.LookupKey{{RowKey: "row0", Column: "c"}, {RowKey: "row1", Column: "c"}, {RowKey: "row2", Column: "c"},
		{RowKey: "row3", Column: "c", RefKey: ref(1)}, {RowKey: "row4", Column: "c", RefKey: ref(1)}}
	s.BatchGet(ctx(t), warm)
	back.take("batch_get")
	back.batches = nil
	obs.take(cache.TierLocal)

	keys := append(slices.Clone(warm),
		cellar.LookupKey{RowKey: "row5", Column: "c"},
		cellar.LookupKey{RowKey: "row6", Column: "c", RefKey: ref(1)},
		cellar.LookupKey{RowKey: "row5", Column: "c"}, // repeated miss
		cellar.LookupKey{RowKey: "", Column: "c"},     // invalid
		cellar.LookupKey{RowKey: "nope", Column: "c"},
	)
	res := s.BatchGet(ctx(t), keys)
	if n := back.take("batch_get"); n != 1 {
		t.Fatalf("BatchGet reached the backing store %d times; want 1", n)
	}
	var asked []string
	for _, k := range back.batches[0] {
		asked = append(asked, fmt.Sprintf("%s/%v", k.RowKey, k.RefKey != nil))
	}
	slices.Sort(asked)
	if want := "nope/false row5/false row6/true"; strings.Join(asked, " ") != want {
		t.Errorf("backing BatchGet keys = %v; want %s", asked, want)
	}
	for i := 0; i < 8; i++ {
		want := []int{0, 1, 2, 3, 4, 5, 6, 5}[i]
		if res[i].Err != nil || string(res[i].Cell.Body) != fmt.Sprintf(`{"i":%d}`, want) {
			t.Errorf("result %d = %+v, %v; want row%d's cell", i, res[i].Cell, res[i].Err, want)
		}
	}
	if !errors.Is(res[8].Err, cellar.ErrInvalid) || !errors.Is(res[9].Err, cellar.ErrNotFound) {
		t.Errorf("results 8, 9 = %v, %v; want invalid, not found", res[8].Err, res[9].Err)
	}
	if h, m := obs.take(cache.TierLocal); h != 5 || m != 4 {
		t.Errorf("local hits, misses = %d, %d; want 5, 4", h, m)
	}

	// Everything is cached now: no backing call at all.
	s.BatchGet(ctx(t), keys)
	if n := back.take("batch_get"); n != 0 {
		t.Errorf("a fully cached BatchGet reached the backing store %d times", n)
	}
}

// Row with columns is put together from the latest cells, and asks
// storage only for the columns it lacks.
func TestRowColumns(t *testing.T) {
	back := newCounting(openSQLite(t, 16))
	s := newCache(t, back, cache.Options{Now: newClock().Now})
	put(t, s, "r", "a", 1, `{"a":1}`)
	put(t, s, "r", "b", 2, `{"b":2}`)
	latestRef(t, s, "r", "a")
	back.take("latest")

	row, err := s.Row(ctx(t), "r", []string{"b", "a", "missing", "b"})
	if err != nil || len(row) != 2 || row[0].Column != "a" || row[1].Column != "b" || string(row[1].Body) != `{"b":2}` {
		t.Fatalf("Row = %+v, %v", row, err)
	}
	if n := back.take("row"); n != 1 {
		t.Errorf("Row reached the backing store %d times; want 1", n)
	}
	row, err = s.Row(ctx(t), "r", []string{"missing", "a", "b"})
	if err != nil || len(row) != 2 {
		t.Fatalf("Row again = %+v, %v", row, err)
	}
	if n := back.take("row"); n != 0 {
		t.Errorf("a cached Row reached the backing store %d times", n)
	}
}

// A Row of named columns put together from cached cells is bounded as the
// node bounds it: cached parts that fit alone do not add up to an answer
// past cellar.MaxBatchGetBytes.
func TestRowColumnsBound(t *testing.T) {
	back := newCounting(openSQLite(t, 16))
	s := newCache(t, back, cache.Options{MaxBytes: 64 << 20, Now: newClock().Now})
	big := `{"x":"` + strings.Repeat("a", 1_000_000) + `"}`
	fit := cellar.MaxBatchGetBytes / len(big)
	var cols []string
	for i := range fit + 2 {
		cols = append(cols, fmt.Sprintf("c%03d", i))
		put(t, s, "r", cols[i], 1, big)
	}
	for _, part := range [][]string{cols[:fit], cols[fit:]} {
		if cells, err := s.Row(ctx(t), "r", part); err != nil || len(cells) != len(part) {
			t.Fatalf("Row of %d columns = %d cells, %v", len(part), len(cells), err)
		}
	}
	back.take("row")
	if cells, err := s.Row(ctx(t), "r", cols); !errors.Is(err, cellar.ErrTooLarge) {
		t.Errorf("Row of %d cached columns = %d cells, %v; want too_large", len(cols), len(cells), err)
	}
	if n := back.take("row"); n != 0 {
		t.Errorf("Row of cached columns reached the backing store %d times; want 0 (the test means the cache's own bound)", n)
	}
}

// A batchGet's bound counts cached cells and misses together, in request
// order: a miss the backing store left out by its own count of the misses
// alone, but which fits the whole answer, is asked for again and answered.
// Here the hit h (6 MiB) comes first; the store, asked for m1 (12 MiB) and
// m2 (5 MiB), leaves m2 out (17 MiB); the whole answer leaves m1 out (18)
// and has room for m2 (11). Each key is one lookup in the metrics, the
// one asked for again included.
func TestBatchGetBoundCountsHitsAndMissesInRequestOrder(t *testing.T) {
	back := openSQLite(t, 16)
	obs := newCounts()
	s := newCache(t, back, cache.Options{MaxBytes: 64 << 20, Now: newClock().Now, Observer: obs})
	const mib = 1 << 20
	sizes := map[string]int{"h": 6 * mib, "m1": 12 * mib, "m2": 5 * mib}
	var keys []cellar.LookupKey
	for _, row := range []string{"h", "m1", "m2"} {
		body, err := cellar.CheckBody([]byte(`{"x":"`+strings.Repeat("a", sizes[row]-8)+`"}`), 64*mib)
		if err != nil {
			t.Fatal(err)
		}
		if _, _, err := back.Put(ctx(t), cellar.NewCell{Key: cellar.Key{RowKey: row, Column: "c", RefKey: 1}, Body: body}); err != nil {
			t.Fatal(err)
		}
		keys = append(keys, cellar.LookupKey{RowKey: row, Column: "c", RefKey: ref(1)})
	}
	if _, err := s.Get(ctx(t), cellar.Key{RowKey: "h", Column: "c", RefKey: 1}); err != nil {
		t.Fatal(err)
	}
	obs.take(cache.TierLocal)
	res := s.BatchGet(ctx(t), keys)
	for i, want := range []bool{true, false, true} {
		r := res[i]
		if kept := r.Err == nil && r.Cell != nil; kept != want || (!kept && !errors.Is(r.Err, cellar.ErrTooLarge)) {
			t.Fatalf("%s: cell %v, err %v; want answered %v (else too_large)", keys[i].RowKey, r.Cell != nil, r.Err, want)
		}
	}
	if h, m := obs.take(cache.TierLocal); h+m != len(keys) || h != 1 {
		t.Errorf("BatchGet of %d keys (1 cached) counted %d local hits and %d misses; want 1 hit, 2 misses (one lookup per key)", len(keys), h, m)
	}
}

// The in-process tier holds no more than MaxBytes, weighing bodies.
func TestMemoryBound(t *testing.T) {
	const maxBytes = 1 << 20
	back := newCounting(openSQLite(t, 16))
	obs := newCounts()
	s := newCache(t, back, cache.Options{MaxBytes: maxBytes, Observer: obs})
	body := `{"x":"` + strings.Repeat("a", 64<<10) + `"}`
	const n = 64 // 4 MiB of bodies
	for i := 0; i < n; i++ {
		put(t, s, fmt.Sprintf("r%d", i), "c", 1, body)
	}
	for round := 0; round < 3; round++ {
		for i := 0; i < n; i++ {
			if _, err := s.Get(ctx(t), cellar.Key{RowKey: fmt.Sprintf("r%d", i), Column: "c", RefKey: 1}); err != nil {
				t.Fatal(err)
			}
		}
	}
	if size := s.Size(); size > maxBytes {
		t.Errorf("in-process tier holds %d bytes; want at most %d", size, maxBytes)
	}
	// At most 16 of the 64 KiB bodies fit, so most rereads miss.
	hits, misses := obs.take(cache.TierLocal)
	if hits > 2*16 || misses < 3*n-2*16 {
		t.Errorf("rereading 4 MiB through a 1 MiB cache: %d hits, %d misses", hits, misses)
	}

	// Small cells fit and stay.
	small := newCache(t, back, cache.Options{MaxBytes: maxBytes, Observer: obs, Now: newClock().Now})
	for i := 0; i < 2; i++ {
		for j := 0; j < 100; j++ {
			small.Latest(ctx(t), fmt.Sprintf("small%d", j), "nothing")
		}
	}
	if h, m := obs.take(cache.TierLocal); h != 100 || m != 100 {
		t.Errorf("100 small entries read twice: %d hits, %d misses; want 100, 100", h, m)
	}
}

// An answer's age counts from when its read began, not from when it was
// stored: a slow read does not stretch the bound.
func TestStalenessCountsFromRead(t *testing.T) {
	const bound = time.Second
	clk := newClock()
	back := openSQLite(t, 16)
	slow := &slowLatest{Store: back, clk: clk, took: 400 * time.Millisecond}
	b := newCache(t, slow, cache.Options{Now: clk.Now, MaxStaleness: bound})
	put(t, back, "r", "c", 1, `{}`)
	latestRef(t, b, "r", "c") // read from t0 to t0+400ms
	put(t, back, "r", "c", 2, `{}`)
	clk.Advance(bound - 400*time.Millisecond) // t0 + bound
	if got := latestRef(t, b, "r", "c"); got != 2 {
		t.Errorf("Latest MaxStaleness after a slow read began = %d; want 2", got)
	}
}

// slowLatest is a store whose Latest takes a while by the clock.
type slowLatest struct {
	cellar.Store
	clk  *clock
	took time.Duration
}

func (s *slowLatest) Latest(ctx context.Context, row, col string) (cellar.Cell, error) {
	c, err := s.Store.Latest(ctx, row, col)
	s.clk.Advance(s.took)
	return c, err
}

// A process reads its own writes, however its reads and writes interleave
// with other reads filling the same entries.
func TestReadYourWrites(t *testing.T) {
	back := openSQLite(t, 16)
	s := newCache(t, back, cache.Options{MaxStaleness: 20 * time.Millisecond})
	const writers, writes = 4, 100
	done := make(chan struct{})
	var readers sync.WaitGroup
	for r := 0; r < 4; r++ {
		readers.Add(1)
		go func() {
			defer readers.Done()
			for i := 0; ; i++ {
				select {
				case <-done:
					return
				default:
				}
				row := fmt.Sprintf("w%d", i%writers)
				s.Latest(ctx(t), row, "c")
				s.Row(ctx(t), row, nil)
				s.Get(ctx(t), cellar.Key{RowKey: row, Column: "c", RefKey: int64(i % writes)})
			}
		}()
	}
	var wg sync.WaitGroup
	errc := make(chan error, writers)
	for w := 0; w < writers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			row := fmt.Sprintf("w%d", w)
			for i := int64(0); i < writes; i++ {
				if _, _, err := s.Put(ctx(t), cellar.NewCell{Key: cellar.Key{RowKey: row, Column: "c", RefKey: i}, Body: []byte(`{}`)}); err != nil {
					errc <- err
					return
				}
				c, err := s.Latest(ctx(t), row, "c")
				if err != nil || c.RefKey != i {
					errc <- fmt.Errorf("Latest(%s) after writing ref %d = %d, %v", row, i, c.RefKey, err)
					return
				}
				rows, err := s.Row(ctx(t), row, nil)
				if err != nil || len(rows) != 1 || rows[0].RefKey != i {
					errc <- fmt.Errorf("Row(%s) after writing ref %d = %+v, %v", row, i, rows, err)
					return
				}
				if _, err := s.Get(ctx(t), cellar.Key{RowKey: row, Column: "c", RefKey: i}); err != nil {
					errc <- fmt.Errorf("Get(%s/%d) after writing it: %v", row, i, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(done)
	readers.Wait()
	close(errc)
	for err := range errc {
		t.Error(err)
	}
}

// gated is a store whose reads, once armed, stop after reading until
// released: a test can slip a write in between a read and its fill.
type gated struct {
	cellar.Store
	mu      sync.Mutex    // protects armed
	armed   bool          // the next read stops
	read    chan struct{} // told when a stopped read has read
	release chan struct{} // closed to let it go on
}

func newGated(s cellar.Store) *gated { return &gated{Store: s} }

func (g *gated) arm() {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.armed, g.read, g.release = true, make(chan struct{}), make(chan struct{})
}

func (g *gated) stop() {
	g.mu.Lock()
	armed, read, release := g.armed, g.read, g.release
	g.armed = false
	g.mu.Unlock()
	if armed {
		close(read)
		<-release
	}
}

func (g *gated) Get(ctx context.Context, k cellar.Key) (cellar.Cell, error) {
	c, err := g.Store.Get(ctx, k)
	g.stop()
	return c, err
}

func (g *gated) Latest(ctx context.Context, row, col string) (cellar.Cell, error) {
	c, err := g.Store.Latest(ctx, row, col)
	g.stop()
	return c, err
}

func (g *gated) Row(ctx context.Context, row string, cols []string) ([]cellar.Cell, error) {
	cells, err := g.Store.Row(ctx, row, cols)
	g.stop()
	return cells, err
}

// A read that began before this process's write must not store its stale
// answer over what the write taught the cache.
func TestStaleFillAfterWrite(t *testing.T) {
	reads := []struct {
		name string
		read func(s cellar.Store) string
	}{
		{"Latest", func(s cellar.Store) string { return fmt.Sprint(latestRef(t, s, "r", "c")) }},
		{"Row", func(s cellar.Store) string {
			row, err := s.Row(ctx(t), "r", nil)
			if err != nil || len(row) == 0 {
				return fmt.Sprint(err)
			}
			return fmt.Sprint(row[0].RefKey)
		}},
		{"Get", func(s cellar.Store) string {
			c, err := s.Get(ctx(t), cellar.Key{RowKey: "r", Column: "c", RefKey: 2})
			if err != nil {
				return cellar.ErrorCode(err)
			}
			return fmt.Sprint(c.RefKey)
		}},
	}
	for _, rd := range reads {
		t.Run(rd.name, func(t *testing.T) {
			g := newGated(openSQLite(t, 16))
			s := newCache(t, g, cache.Options{Now: newClock().Now})
			put(t, s, "r", "c", 1, `{}`)
			g.arm()
			done := make(chan string)
			go func() { done <- rd.read(s) }()
			<-g.read // the read has read the old state
			put(t, s, "r", "c", 2, `{}`)
			close(g.release)
			<-done
			if got := rd.read(s); got != "2" {
				t.Errorf("%s after this process's write = %s; want 2", rd.name, got)
			}
		})
	}
}
