package index_test

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cellar-db/cellar"
	"github.com/cellar-db/cellar/internal/index"
)

// TestConcurrentWritesAndRebuild runs writers that keep moving rows
// between cities while readers query the index and a rebuild replaces it.
// Every entry a query returns must come from the row's latest cell at the
// time of the query or later (never a stale one), and once the writers
// stop and the index catches up, every query must equal what the writers'
// latest acknowledged cells say (and so must a scan of the latest cells).
func TestConcurrentWritesAndRebuild(t *testing.T) {
	if testing.Short() {
		t.Skip("runs writers for seconds")
	}
	for _, b := range backends[:2] { // SQLite and PostgreSQL
		t.Run(b.name, func(t *testing.T) {
			e := newEnv(t, b, envOpts{retireAfter: 100 * time.Millisecond})
			e.define("ix", usersByCity)
			cities := []string{"paris", "rome", "oslo", "lima", "nara"}
			const rowsN = 150
			var (
				ref     atomic.Int64 // ref_keys grow across all writers
				mu      sync.Mutex   // protects latest, cityOf and written
				latest  = map[string]int64{}
				cityOf  = map[string]string{} // each row's city in its latest acknowledged cell
				acked   []cellar.LookupKey    // every acknowledged cell
				written []index.CellPos
				stop    = make(chan struct{})
				wg      sync.WaitGroup
				queries atomic.Int64
				checked atomic.Int64
			)
			for w := 0; w < 4; w++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					rng := rand.New(rand.NewPCG(uint64(w), 1))
					for {
						select {
						case <-stop:
							return
						default:
						}
						row := fmt.Sprintf("u%03d", rng.IntN(rowsN))
						r := ref.Add(1)
						city := cities[rng.IntN(len(cities))]
						body, _ := json.Marshal(user(city, rng.IntN(100), float64(rng.IntN(10))))
						c, _, err := e.cells.Put(bg(), cellar.NewCell{Key: cellar.Key{RowKey: row, Column: "profile", RefKey: r}, Body: body})
						if err != nil {
							t.Error(err)
							return
						}
						mu.Lock()
						if r > latest[row] {
							latest[row], cityOf[row] = r, city
						}
						written = append(written, index.CellPos{Shard: c.Shard, AddedID: c.AddedID})
						acked = append(acked, cellar.LookupKey{RowKey: row, Column: "profile", RefKey: &r})
						mu.Unlock()
					}
				}()
			}
			for rd := 0; rd < 2; rd++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					rng := rand.New(rand.NewPCG(uint64(rd), 2))
					for {
						select {
						case <-stop:
							return
						default:
						}
						city := cities[rng.IntN(len(cities))]
						mu.Lock()
						before := maps(latest)
						mu.Unlock()
						for _, en := range queryAll(t, e, city) {
							checked.Add(1)
							if en.RefKey < before[en.RowKey] {
								t.Errorf("query for %s returned %s at ref_key %d; it was at %d before the query began", city, en.RowKey, en.RefKey, before[en.RowKey])
							}
							if string(en.Fields["city"]) != `"`+city+`"` {
								t.Errorf("query for %s returned %s in %s", city, en.RowKey, en.Fields["city"])
							}
						}
						queries.Add(1)
					}
				}()
			}
			time.Sleep(time.Second)
			if _, err := e.manager.Rebuild(bg(), "ix"); err != nil {
				t.Fatal(err)
			}
			time.Sleep(time.Second)
			close(stop)
			wg.Wait()

			// Catch up with every acknowledged write and the rebuild.
			for i := 0; i < len(written); i += index.MaxWaitFor {
				q := index.Query{Where: []index.Cond{eq("city", "paris")}, WaitFor: written[i:min(i+index.MaxWaitFor, len(written))], Wait: 60 * time.Second}
				if _, err := e.manager.Query(bg(), "ix", q); err != nil {
					t.Fatal(err)
				}
			}
			waitUntil(t, "the rebuild to take over", func() bool {
				ix, err := e.manager.Index(bg(), "ix")
				return err == nil && ix.Generation == 2 && ix.Rebuilding == 0
			})
			for i := 0; i < len(written); i += index.MaxWaitFor {
				q := index.Query{Where: []index.Cond{eq("city", "paris")}, WaitFor: written[i:min(i+index.MaxWaitFor, len(written))], Wait: 60 * time.Second}
				if _, err := e.manager.Query(bg(), "ix", q); err != nil {
					t.Fatal(err)
				}
			}
			// The truth is what the writers were acknowledged, not what
			// the store says: a store that acknowledged a put it never
			// kept would agree with an index of what it kept. A scan of
			// the latest cells must say the same.
			truth := scanLatest(t, e)
			for row, city := range cityOf {
				var u struct{ City string }
				if body, ok := truth[row]; !ok || json.Unmarshal(body, &u) != nil || u.City != city {
					t.Errorf("row %s: its latest acknowledged cell (ref_key %d) is in %s; a scan of the latest cells says %s", row, latest[row], city, truth[row])
				}
			}
			if len(truth) != len(cityOf) {
				t.Errorf("a scan finds %d rows; the writers wrote %d", len(truth), len(cityOf))
			}
			for i := 0; i < len(acked); i += cellar.MaxBatchKeys {
				for j, r := range e.cells.BatchGet(bg(), acked[i:min(i+cellar.MaxBatchKeys, len(acked))]) {
					if r.Err != nil {
						k := acked[i+j]
						t.Errorf("acknowledged cell %s/profile/%d: %v", k.RowKey, *k.RefKey, r.Err)
					}
				}
			}
			for _, city := range cities {
				var want []string
				for row, c := range cityOf {
					if c == city {
						want = append(want, row)
					}
				}
				var got []string
				for _, en := range queryAll(t, e, city) {
					got = append(got, en.RowKey)
				}
				slices.Sort(want)
				slices.Sort(got)
				if !slices.Equal(got, want) {
					t.Errorf("%s: the index says\n%v\nthe writers' latest acknowledged cells say\n%v", city, got, want)
				}
			}
			t.Logf("%d writes, %d queries checking %d entries", len(written), queries.Load(), checked.Load())
			if queries.Load() == 0 || len(written) == 0 {
				t.Errorf("the load did not run")
			}
		})
	}
}

// queryAll pages through every entry for city, checking that no row comes
// twice.
func queryAll(tb testing.TB, e *env, city string) []index.Entry {
	tb.Helper()
	var out []index.Entry
	seen := map[string]bool{}
	q := index.Query{Where: []index.Cond{eq("city", city)}, Limit: 17}
	for page := 0; page < 1000; page++ {
		res, err := e.manager.Query(bg(), "ix", q)
		if err != nil {
			tb.Errorf("query %s: %v", city, err)
			return out
		}
		for _, en := range res.Entries {
			if seen[en.RowKey] {
				tb.Errorf("query %s returned %s twice", city, en.RowKey)
			}
			seen[en.RowKey] = true
		}
		out = append(out, res.Entries...)
		if res.Cursor == "" {
			return out
		}
		q.Cursor = res.Cursor
	}
	tb.Errorf("query %s: pages never ended", city)
	return out
}

// scanLatest reads every shard's log and returns the body of each row's
// latest cell of column profile.
func scanLatest(tb testing.TB, e *env) map[string]json.RawMessage {
	tb.Helper()
	ref := map[string]int64{}
	out := map[string]json.RawMessage{}
	for shard := 0; shard < testShards; shard++ {
		var after int64
		for {
			res, err := e.cells.Scan(bg(), shard, after, 1000, "profile")
			if err != nil {
				tb.Fatal(err)
			}
			for _, c := range res.Cells {
				if r, ok := ref[c.RowKey]; !ok || c.RefKey > r {
					ref[c.RowKey], out[c.RowKey] = c.RefKey, c.Body
				}
			}
			if len(res.Cells) == 0 {
				break
			}
			after = res.Next
		}
	}
	return out
}

func maps(m map[string]int64) map[string]int64 {
	out := make(map[string]int64, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}
