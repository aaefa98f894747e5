package sqlstore_test

import (
	"context"
	"fmt"
	"math"
	"path/filepath"
	"sync"
	"testing"

	"github.com/cellar-db/cellar/internal/dbtest"
	"github.com/cellar-db/cellar/internal/mysql"
	"github.com/cellar-db/cellar/internal/postgres"
	"github.com/cellar-db/cellar/internal/sqlite"
	"github.com/cellar-db/cellar/internal/sqlstore"
)

func zzBackends(t *testing.T) map[string]func(t *testing.T) *sqlstore.Store {
	opts := func(name string) sqlstore.Options { return sqlstore.Options{Name: name, ShardCount: 8, Create: true} }
	return map[string]func(t *testing.T) *sqlstore.Store{
		"sqlite": func(t *testing.T) *sqlstore.Store {
			s, err := sqlite.Open(context.Background(), filepath.Join(t.TempDir(), "n.db"), sqlite.Options{Options: opts("lite")})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { s.Close() })
			return s
		},
		"postgres": func(t *testing.T) *sqlstore.Store {
			s, err := postgres.Open(context.Background(), dbtest.Postgres(t), postgres.Options{Options: opts("pg")})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { s.Close() })
			return s
		},
		"mysql": func(t *testing.T) *sqlstore.Store {
			s, err := mysql.Open(context.Background(), dbtest.MySQL(t), mysql.Options{Options: opts("my")})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { s.Close() })
			return s
		},
	}
}

func TestZZReviewTimelinesProbe(t *testing.T) {
	for name, open := range zzBackends(t) {
		t.Run(name, func(t *testing.T) {
			s := open(t)
			ctx := context.Background()
			scores := []float64{5e-324, -5e-324, 1e-310, 2.2250738585072014e-308, math.MaxFloat64, 0.1 + 0.2, 1e300}
			for i, sc := range scores {
				if err := s.TimelineAdd(ctx, "tl", fmt.Sprintf("m%d", i), sc); err != nil {
					t.Errorf("add %v: %v", sc, err)
				}
			}
			items, n, err := s.TimelineRange(ctx, "tl", 0, 100, false)
			t.Logf("%v %d %v", items, n, err)
			// trim with denormal ties
			if err := s.SetTimelineCap(ctx, "tl", 3); err != nil {
				t.Errorf("setcap: %v", err)
			}
			items, n, err = s.TimelineRange(ctx, "tl", 0, 100, false)
			t.Logf("%v %d %v", items, n, err)
		})
	}
}

func zzStoredCol(t *testing.T, s *sqlstore.Store, key string) (stored, cap, rows int) {
	t.Helper()
	if err := s.DB().QueryRow(zzRebind(s, "SELECT stored, cap FROM timelines WHERE timeline_key = ?"), []byte(key)).Scan(&stored, &cap); err != nil {
		t.Fatal(err)
	}
	if err := s.DB().QueryRow(zzRebind(s, "SELECT COUNT(*) FROM timeline_members WHERE timeline_key = ?"), []byte(key)).Scan(&rows); err != nil {
		t.Fatal(err)
	}
	return
}

func TestZZReviewTimelinesProbeConcurrent(t *testing.T) {
	for name, open := range zzBackends(t) {
		t.Run(name, func(t *testing.T) {
			s := open(t)
			ctx := context.Background()
			var wg sync.WaitGroup
			errs := make(chan error, 1000)
			// many fresh timelines created concurrently
			for w := 0; w < 8; w++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for i := 0; i < 40; i++ {
						key := fmt.Sprintf("fresh%d", i)
						if err := s.TimelineAdd(ctx, key, fmt.Sprintf("w%d", w), float64(w)); err != nil {
							errs <- fmt.Errorf("fresh add: %w", err)
						}
						if _, err := s.TimelineRemove(ctx, fmt.Sprintf("fresh%d", i+1), "w0"); err != nil {
							errs <- fmt.Errorf("fresh rm: %w", err)
						}
						if i%5 == 0 {
							if err := s.SetTimelineCap(ctx, fmt.Sprintf("fresh%d", i+2), 3); err != nil {
								errs <- fmt.Errorf("fresh cap: %w", err)
							}
						}
					}
				}()
			}
			wg.Wait()
			for i := 0; i < 40; i++ {
				key := fmt.Sprintf("fresh%d", i)
				st, _, rows := zzStoredCol(t, s, key)
				if st != rows {
					t.Errorf("%s stored %d rows %d", key, st, rows)
				}
			}
			if err := s.SetTimelineCap(ctx, "tl", 20); err != nil {
				t.Fatal(err)
			}
			for w := 0; w < 8; w++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for i := 0; i < 60; i++ {
						m := fmt.Sprintf("m%d", (w*7+i)%50)
						if i%3 == 2 {
							if _, err := s.TimelineRemove(ctx, "tl", m); err != nil {
								errs <- err
							}
						} else if err := s.TimelineAdd(ctx, "tl", m, float64((i*w)%13)); err != nil {
							errs <- err
						}
						if i%17 == 0 {
							if err := s.SetTimelineCap(ctx, "tl", 10+i%15); err != nil {
								errs <- err
							}
						}
					}
				}()
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				t.Error(err)
			}
			st, cp, rows := zzStoredCol(t, s, "tl")
			items, n, err := s.TimelineRange(ctx, "tl", 0, 1000, true)
			t.Logf("stored %d cap %d rows %d count %d items %d err %v", st, cp, rows, n, len(items), err)
			if st != rows {
				t.Errorf("stored %d != rows %d", st, rows)
			}
		})
	}
}

func zzRebind(s *sqlstore.Store, q string) string {
	if _, err := s.DB().Exec("SELECT 1 WHERE 1 = $1", 1); err == nil {
		return postgres.Dialect.Rebind(q)
	}
	return q
}
