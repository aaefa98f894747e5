package index_test

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"math"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cellar-db/cellar"
	"github.com/cellar-db/cellar/internal/index"
	"github.com/cellar-db/cellar/internal/shard"
	"github.com/cellar-db/cellar/internal/trigger"
)

// TestIndexLagBenchmark measures index lag: the time from a put's
// acknowledgment until a query of the index returns its row, under a
// steady write load, on a datastore of one node (PostgreSQL, or the
// backend CELLAR_INDEX_BENCH_BACKEND names: sqlite, postgres, mysql) with
// the default 4096 shards and the engine's default settings. It is a
// benchmark, not a test: it asserts nothing about time, and runs only with
// CELLAR_INDEX_BENCH=1.
//
//	CELLAR_INDEX_BENCH=1 CELLAR_TEST_POSTGRES_DSN=... go test ./internal/index -run TestIndexLagBenchmark -v
//
// CELLAR_INDEX_BENCH_RATES (puts per second, default 200,500,1000) and
// CELLAR_INDEX_BENCH_SECONDS (per rate, default 10) set the load. One put
// in five is probed: a prober queries for its unique shard-field value
// every millisecond until the row comes back. Each rate runs 2 s of the
// same load unmeasured first.
func TestIndexLagBenchmark(t *testing.T) {
	if os.Getenv("CELLAR_INDEX_BENCH") == "" {
		t.Skip("set CELLAR_INDEX_BENCH=1 to run the index lag benchmark")
	}
	rates := []int{200, 500, 1000}
	if v := os.Getenv("CELLAR_INDEX_BENCH_RATES"); v != "" {
		rates = nil
		for _, f := range strings.Split(v, ",") {
			n, err := strconv.Atoi(f)
			if err != nil {
				t.Fatal(err)
			}
			rates = append(rates, n)
		}
	}
	secs := 10
	if v := os.Getenv("CELLAR_INDEX_BENCH_SECONDS"); v != "" {
		var err error
		if secs, err = strconv.Atoi(v); err != nil {
			t.Fatal(err)
		}
	}
	for _, rate := range rates {
		t.Run(fmt.Sprintf("%d_per_s", rate), func(t *testing.T) {
			b := newLagBench(t)
			b.run(t, rate, time.Duration(secs)*time.Second)
		})
	}
}

// warmup is the unmeasured load before each measurement.
const warmup = 2 * time.Second

type lagBench struct {
	cells   *shard.Store
	manager *index.Manager
}

func newLagBench(tb testing.TB) *lagBench {
	tb.Helper()
	ctx := context.Background()
	driver := cmp.Or(os.Getenv("CELLAR_INDEX_BENCH_BACKEND"), "postgres")
	node := openNode(tb, driver, "n1", cellar.DefaultShardCount)
	nodes := []*shard.Node{{Name: "n1", Driver: driver, Store: node}}
	m := &cellar.ShardMap{Version: 1, ShardCount: cellar.DefaultShardCount, Assignments: []cellar.Assignment{
		{Node: "n1", ShardRange: cellar.ShardRange{First: 0, Last: cellar.DefaultShardCount - 1}}}}
	var notify notifier
	cells, err := shard.New(m, nodes, shard.Options{Committed: notify.call})
	if err != nil {
		tb.Fatal(err)
	}
	engine, err := trigger.New(trigger.Options{Cells: cells, State: node, KnownHeads: trigger.NodeHeads(cells.Map, nodes, 2*time.Second), ShardCount: cellar.DefaultShardCount})
	if err != nil {
		tb.Fatal(err)
	}
	notify.engine.Store(engine)
	mgr, err := index.New(index.Options{Cells: cells, Entries: cells, Records: node, Triggers: engine, ShardCount: cellar.DefaultShardCount, Workers: workers(), Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		tb.Fatal(err)
	}
	mgr.Start()
	tb.Cleanup(func() {
		mgr.Close()
		engine.Close()
		node.Close()
	})
	if _, _, err := mgr.Define(ctx, "by_tag", index.Definition{Column: "c", Fields: []index.Field{{Name: "tag", Type: index.TypeString}}}); err != nil {
		tb.Fatal(err)
	}
	return &lagBench{cells: cells, manager: mgr}
}

func (b *lagBench) run(t *testing.T, rate int, d time.Duration) {
	ctx := context.Background()
	type probe struct {
		tag   string
		acked time.Time
	}
	probes := make(chan probe, 10000)
	var (
		mu   sync.Mutex // protects lags and lost
		lags []time.Duration
		lost int
		qlat []time.Duration
		plat []time.Duration
	)
	var wg sync.WaitGroup
	for p := 0; p < 32; p++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for pr := range probes {
				found := false
				for deadline := pr.acked.Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(time.Millisecond) {
					qs := time.Now()
					res, err := b.manager.Query(ctx, "by_tag", index.Query{Where: []index.Cond{{Field: "tag", Eq: json.RawMessage(strconv.Quote(pr.tag))}}})
					mu.Lock()
					qlat = append(qlat, time.Since(qs))
					mu.Unlock()
					if err == nil && len(res.Entries) == 1 {
						found = true
						break
					}
				}
				mu.Lock()
				if found {
					lags = append(lags, time.Since(pr.acked))
				} else {
					lost++
				}
				mu.Unlock()
			}
		}()
	}
	interval := time.Second / time.Duration(rate)
	// The first seconds of load open connections, prepare statements and
	// load the trigger's state; they are written at the same rate but not
	// measured, so that the figures are of a steady load.
	warm := time.Now()
	start := warm.Add(warmup)
	n, measured := 0, 0
	var writers sync.WaitGroup
	sem := make(chan struct{}, 64)
	for next := warm; time.Since(start) < d; next = next.Add(interval) {
		time.Sleep(time.Until(next))
		tag := fmt.Sprintf("t%d", n)
		row := fmt.Sprintf("row-%d", n)
		n++
		probeIt := false
		if next.After(start) {
			probeIt = measured%5 == 0
			measured++
		}
		sem <- struct{}{}
		writers.Add(1)
		go func() {
			defer writers.Done()
			defer func() { <-sem }()
			ps := time.Now()
			_, _, err := b.cells.Put(ctx, cellar.NewCell{Key: cellar.Key{RowKey: row, Column: "c", RefKey: 1}, Body: []byte(`{"tag":"` + tag + `"}`)})
			if probeIt || time.Since(start) > 0 {
				mu.Lock()
				plat = append(plat, time.Since(ps))
				mu.Unlock()
			}
			if err != nil {
				t.Error(err)
				return
			}
			if probeIt {
				probes <- probe{tag, time.Now()}
			}
		}()
	}
	elapsed := time.Since(start)
	writers.Wait()
	close(probes)
	wg.Wait()
	slices.Sort(lags)
	q := func(p float64) time.Duration {
		if len(lags) == 0 {
			return 0
		}
		return lags[min(len(lags)-1, int(math.Ceil(p*float64(len(lags))))-1)]
	}
	for _, l := range []struct {
		what string
		d    []time.Duration
	}{{"puts", plat}, {"probe queries", qlat}} {
		slices.Sort(l.d)
		if len(l.d) > 0 {
			t.Logf("%s: %d, latency p50 %s, p99 %s, max %s", l.what, len(l.d), l.d[len(l.d)/2], l.d[len(l.d)*99/100], l.d[len(l.d)-1])
		}
	}
	t.Logf("rate %d/s: %d puts measured in %s (%.0f/s) after %s of warm-up, %d probed: lag p50 %s, p99 %s, max %s; %d not found within 10 s",
		rate, measured, elapsed.Round(time.Millisecond), float64(measured)/elapsed.Seconds(), warmup, len(lags), q(0.50), q(0.99), q(1), lost)
}

// workers is CELLAR_INDEX_BENCH_WORKERS, the claim loops of the index (0:
// the manager's default).
func workers() int {
	n, _ := strconv.Atoi(os.Getenv("CELLAR_INDEX_BENCH_WORKERS"))
	return n
}
