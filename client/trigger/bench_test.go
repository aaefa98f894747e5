package trigger_test

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cellar-db/cellar"
	"github.com/cellar-db/cellar/client"
	"github.com/cellar-db/cellar/client/trigger"
	"github.com/cellar-db/cellar/internal/dbtest"
	cellarhttp "github.com/cellar-db/cellar/internal/http"
	"github.com/cellar-db/cellar/internal/mysql"
	"github.com/cellar-db/cellar/internal/postgres"
	"github.com/cellar-db/cellar/internal/sqlstore"
	"github.com/cellar-db/cellar/internal/trigger/lagtest"
)

// BenchmarkRun measures delivery through HTTP and Run to a no-op handler
// at 4096 shards: b.N cells are written first (spread over all shards),
// then one Run with 4 concurrent shards handles them all. It reports cells
// per second of the delivery alone.
//
//	go test ./client/trigger -run '^$' -bench 'Run$' -benchtime 20000x
func BenchmarkRun(b *testing.B) {
	c, st := newServer(b)
	ctx := context.Background()
	if _, _, err := c.DefineTrigger(ctx, "t", client.TriggerDefinition{Columns: []string{"a"}}); err != nil {
		b.Fatal(err)
	}
	for i := 0; i < b.N; i += 500 {
		var batch []cellar.NewCell
		for j := i; j < min(i+500, b.N); j++ {
			batch = append(batch, cellar.NewCell{Key: cellar.Key{RowKey: fmt.Sprintf("r%d", j), Column: "a", RefKey: 1}, Body: []byte(`{}`)})
		}
		for _, r := range st.cells.BatchPut(ctx, batch) {
			if r.Err != nil {
				b.Fatal(r.Err)
			}
		}
	}
	b.ResetTimer()
	start := time.Now()
	var n atomic.Int64
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() {
		done <- trigger.Run(runCtx, c, "t", "bench", func(context.Context, cellar.Cell) error {
			if n.Add(1) >= int64(b.N) {
				stop()
			}
			return nil
		}, trigger.Options{Concurrency: 4, MaxCells: 500, Wait: 100 * time.Millisecond})
	}()
	if err := <-done; err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(float64(n.Load())/time.Since(start).Seconds(), "cells/s")
}

// metaNodes open a fresh metadata node of each engine (PostgreSQL and
// MySQL when their test servers are set).
var metaNodes = []struct {
	name string
	open func(tb testing.TB) *sqlstore.Store
}{
	{"sqlite", func(tb testing.TB) *sqlstore.Store { return openSQLite(tb, filepath.Join(tb.TempDir(), "meta.db")) }},
	{"postgres", func(tb testing.TB) *sqlstore.Store {
		st, err := postgres.Open(context.Background(), dbtest.Postgres(tb), postgres.Options{Options: sqlstore.Options{Name: "meta", ShardCount: shards, Create: true}})
		if err != nil {
			tb.Fatal(err)
		}
		return st
	}},
	{"mysql", func(tb testing.TB) *sqlstore.Store {
		st, err := mysql.Open(context.Background(), dbtest.MySQL(tb), mysql.Options{Options: sqlstore.Options{Name: "meta", ShardCount: shards, Create: true}})
		if err != nil {
			tb.Fatal(err)
		}
		return st
	}},
}

// BenchmarkRunLag measures end-to-end lag through HTTP and Run at 4096
// shards: b.N cells of the trigger's column are written at a steady rate
// (500 or 2000 a second, spread over all shards, by 32 writers through the
// sharding store whose Committed hook calls the engine's Notify, as in
// cellar serve; shards 0-2047 on the metadata node, 2048-4095 on a SQLite
// node) while one Run (Concurrency 4, its default, or 16; claims of up to
// 100 cells waiting up to 2s) handles them over HTTP, with an HTTP client
// that keeps a connection per concurrent claim. The engine has its
// defaults, and Run is warmed up by a first claim. For each cell it takes
// the time from its put returning to its handler being called (0 if the
// handler came first), and reports the p50, p99 and largest lag and the
// write rate achieved.
//
//	go test ./client/trigger -run '^$' -bench RunLag -benchtime 20000x
func BenchmarkRunLag(b *testing.B) {
	for _, mn := range metaNodes {
		for _, run := range []struct{ rate, concurrency int }{{500, 4}, {2000, 4}, {2000, 16}} {
			b.Run(fmt.Sprintf("%s/rate=%d/concurrency=%d", mn.name, run.rate, run.concurrency), func(b *testing.B) {
				meta := mn.open(b)
				other := openSQLite(b, filepath.Join(b.TempDir(), "n2.db"))
				b.Cleanup(func() {
					meta.Close()
					other.Close()
				})
				s := newSharded(b, meta, other)
				e := s.start(b, nil)
				b.Cleanup(func() { e.Close() })
				srv := httptest.NewServer(cellarhttp.NewHandler(s.cells, cellarhttp.Options{Triggers: e, Logger: slog.New(slog.DiscardHandler)}))
				b.Cleanup(srv.Close)
				tr := http.DefaultTransport.(*http.Transport).Clone()
				tr.MaxIdleConnsPerHost = 2 * run.concurrency
				c := client.New(srv.URL, client.WithHTTPClient(&http.Client{Transport: tr}))
				ctx := context.Background()
				if _, _, err := c.DefineTrigger(ctx, "t", client.TriggerDefinition{Columns: []string{"a"}}); err != nil {
					b.Fatal(err)
				}
				if _, err := c.ClaimTrigger(ctx, "t", "bench", 100, 0); err != nil {
					b.Fatal(err)
				}
				lt := lagtest.New(b.N)
				runCtx, stop := context.WithCancel(ctx)
				done := make(chan error, 1)
				go func() {
					done <- trigger.Run(runCtx, c, "t", "bench", func(_ context.Context, cell cellar.Cell) error {
						lt.Handle(cell)
						return nil
					}, trigger.Options{Concurrency: run.concurrency, MaxCells: 100, Wait: 2 * time.Second, Logger: slog.New(slog.DiscardHandler)})
				}()
				b.ResetTimer()
				lt.Write(b, run.rate, func(i int) error {
					_, _, err := s.cells.Put(ctx, cellar.NewCell{Key: cellar.Key{RowKey: lagtest.Row(i), Column: "a", RefKey: 1}, Body: []byte(`{}`)})
					return err
				})
				lt.Wait(b, time.Minute)
				b.StopTimer()
				stop()
				if err := <-done; err != nil {
					b.Fatal(err)
				}
				lt.Report(b)
			})
		}
	}
}
