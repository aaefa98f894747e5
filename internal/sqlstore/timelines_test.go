package sqlstore_test

import (
	"context"
	"fmt"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/cellar-db/cellar"
	"github.com/cellar-db/cellar/internal/dbtest"
	"github.com/cellar-db/cellar/internal/mysql"
	"github.com/cellar-db/cellar/internal/postgres"
	"github.com/cellar-db/cellar/internal/sqlite"
	"github.com/cellar-db/cellar/internal/sqlstore"
)

// storedMembers counts the member rows a node stores for timeline key,
// including those beyond the cap that await a trim.
func storedMembers(tb testing.TB, s *sqlstore.Store, key string) int {
	tb.Helper()
	var n int
	if err := s.DB().QueryRow("SELECT COUNT(*) FROM timeline_members WHERE timeline_key = ?", []byte(key)).Scan(&n); err != nil {
		tb.Fatal(err)
	}
	return n
}

// TestTimelineTrimAmortized checks when the rows beyond the cap are
// deleted: a cap of 20 lets a timeline store up to 20 + 8 rows, and the
// add that would store the 29th trims it to 20. (The conformance suite
// checks that none of this shows.)
func TestTimelineTrimAmortized(t *testing.T) {
	s, err := openSQLite(t, filepath.Join(t.TempDir(), "n.db"), true)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := s.SetTimelineCap(ctx, "tl", 20); err != nil {
		t.Fatal(err)
	}
	add := func(i int) {
		t.Helper()
		if err := s.TimelineAdd(ctx, "tl", fmt.Sprintf("m%03d", i), float64(i)); err != nil {
			t.Fatal(err)
		}
	}
	for i := 1; i <= 28; i++ {
		add(i)
		if got := storedMembers(t, s, "tl"); got != i {
			t.Fatalf("after %d adds, %d rows are stored; want %d (no trim before the slack is used up)", i, got, i)
		}
	}
	add(29)
	if got := storedMembers(t, s, "tl"); got != 20 {
		t.Fatalf("after the add past the slack, %d rows are stored; want 20", got)
	}
	// Updating a score while rows await a trim trims first.
	for i := 30; i <= 33; i++ {
		add(i)
	}
	if got := storedMembers(t, s, "tl"); got != 24 {
		t.Fatalf("%d rows stored; want 24", got)
	}
	if err := s.TimelineAdd(ctx, "tl", "m033", 0.5); err != nil {
		t.Fatal(err)
	}
	if got := storedMembers(t, s, "tl"); got != 20 {
		t.Errorf("after an update, %d rows stored; want 20", got)
	}
	// A new timeline gets the default cap.
	if err := s.TimelineAdd(ctx, "fresh", "m", 1); err != nil {
		t.Fatal(err)
	}
	var cap int
	if err := s.DB().QueryRow("SELECT cap FROM timelines WHERE timeline_key = ?", []byte("fresh")).Scan(&cap); err != nil || cap != cellar.DefaultTimelineCap {
		t.Errorf("cap of a new timeline = %d, %v; want %d", cap, err, cellar.DefaultTimelineCap)
	}
}

// BenchmarkTimelineRange measures a range of 100 on a full timeline of
// 10,000 members (the default cap, after 10,500 adds) on each backend,
// reporting the median and 99th percentile latency of one call: the top
// 100 (desc), the bottom 100 (asc, skipping the rows that await a trim)
// and the last page of a descending walk.
//
//	go test ./internal/sqlstore -run '^$' -bench TimelineRange -benchtime 2000x
func BenchmarkTimelineRange(b *testing.B) {
	eachBackend(b, 16, func(b *testing.B, s *sqlstore.Store) {
		fillTimeline(b, s, "feed", cellar.DefaultTimelineCap+500)
		for _, c := range []struct {
			name   string
			offset int
			desc   bool
		}{{"top", 0, true}, {"bottom", 0, false}, {"lastpage", cellar.DefaultTimelineCap - 100, true}} {
			b.Run(c.name, func(b *testing.B) {
				benchRange(b, s, "feed", c.offset, c.desc)
			})
		}
	})
}

// fillTimeline adds n members with distinct scores to timeline key, from
// several goroutines.
func fillTimeline(b *testing.B, s *sqlstore.Store, key string, n int) {
	b.Helper()
	ctx := context.Background()
	const workers = 16
	var wg sync.WaitGroup
	errc := make(chan error, workers)
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < n; i += workers {
				if err := s.TimelineAdd(ctx, key, fmt.Sprintf("member-%06d", i), float64(i)); err != nil {
					errc <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errc)
	for err := range errc {
		b.Fatal(err)
	}
	if n, err := s.TimelineCount(ctx, key); err != nil || n != cellar.DefaultTimelineCap {
		b.Fatalf("filled timeline counts %d, %v; want %d", n, err, cellar.DefaultTimelineCap)
	}
}

func benchRange(b *testing.B, s *sqlstore.Store, key string, offset int, desc bool) {
	ctx := context.Background()
	var lat []time.Duration
	for b.Loop() {
		start := time.Now()
		items, _, err := s.TimelineRange(ctx, key, offset, 100, desc)
		lat = append(lat, time.Since(start))
		if err != nil || len(items) != 100 {
			b.Fatalf("TimelineRange = %d items, %v", len(items), err)
		}
	}
	slices.Sort(lat)
	pct := func(p float64) float64 {
		return float64(lat[int(p*float64(len(lat)-1))].Nanoseconds()) / 1e3
	}
	b.ReportMetric(pct(0.50), "p50-µs")
	b.ReportMetric(pct(0.99), "p99-µs")
}

// TestLowerCapInSteps lowers the cap of a timeline in steps of at most 16
// deleted rows, one transaction each, on every backend: a call cut short
// keeps the steps it committed (the lowest members gone, the old cap),
// and the next call finishes from there.
func TestLowerCapInSteps(t *testing.T) {
	opts := func(name string) sqlstore.Options { return sqlstore.Options{Name: name, ShardCount: 16, Create: true} }
	for _, be := range []struct {
		name string
		open func() (*sqlstore.Store, error)
	}{
		{"sqlite", func() (*sqlstore.Store, error) {
			return sqlite.Open(context.Background(), filepath.Join(t.TempDir(), "n.db"), sqlite.Options{Options: opts("lite")})
		}},
		{"postgres", func() (*sqlstore.Store, error) {
			return postgres.Open(context.Background(), dbtest.Postgres(t), postgres.Options{Options: opts("pg")})
		}},
		{"mysql", func() (*sqlstore.Store, error) {
			return mysql.Open(context.Background(), dbtest.MySQL(t), mysql.Options{Options: opts("my")})
		}},
	} {
		t.Run(be.name, func(t *testing.T) {
			s, err := be.open()
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { s.Close() })
			ctx := context.Background()
			for i := 0; i < 100; i++ {
				if err := s.TimelineAdd(ctx, "tl", fmt.Sprintf("m%03d", i), float64(i)); err != nil {
					t.Fatal(err)
				}
			}
			steps := 0
			cut, cancel := context.WithCancel(ctx)
			defer cancel()
			stop := 2 // the step after which the first call is cut short
			defer sqlstore.SetCapTrimStep(16, func() {
				if steps++; steps == stop {
					cancel()
				}
			})()
			if err := s.SetTimelineCap(cut, "tl", 10); err == nil {
				t.Fatalf("SetTimelineCap cut short after %d steps: no error", steps)
			}
			items, count, err := s.TimelineRange(ctx, "tl", 0, 1000, false)
			if err != nil || count != 68 || len(items) != 68 || items[0].Member != "m032" {
				t.Fatalf("after 2 steps: count %d, %d items from %v, %v; want 68 from m032 (the lowest 32 deleted)", count, len(items), items[:min(1, len(items))], err)
			}
			steps, stop = 0, -1
			if err := s.SetTimelineCap(ctx, "tl", 10); err != nil {
				t.Fatal(err)
			}
			if steps != 3 {
				t.Errorf("%d steps from 68 rows to 10 by 16; want 3 and a last one setting the cap", steps)
			}
			items, count, err = s.TimelineRange(ctx, "tl", 0, 1000, false)
			if err != nil || count != 10 || len(items) != 10 || items[0].Member != "m090" || items[9].Member != "m099" {
				t.Errorf("after the cap is lowered: count %d, items %v, %v; want m090..m099", count, items, err)
			}
		})
	}
}
