package trigger_test

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cellar-db/cellar"
	"github.com/cellar-db/cellar/internal/trigger"
	"github.com/cellar-db/cellar/internal/trigger/lagtest"
)

// BenchmarkDeliver measures delivery through the engine to a no-op
// handler at 4096 shards: b.N cells of the trigger's column are written
// first (in batches, spread over all shards by their row keys), then one
// consumer claims up to 100 cells at a time and acks each batch until all
// are delivered, with one claim loop or with four at once (as an
// in-process worker runs). The engine has its default poll interval. It
// reports cells per second of the delivery alone.
//
//	go test ./internal/trigger -run '^$' -bench Deliver -benchtime 20000x
func BenchmarkDeliver(b *testing.B) {
	for _, be := range backends {
		for _, loops := range []int{1, 4} {
			b.Run(fmt.Sprintf("%s/loops=%d", be.name, loops), func(b *testing.B) {
				benchDeliver(b, be, loops)
			})
		}
	}
}

func benchDeliver(b *testing.B, be backend, loops int) {
	e := newEnv(b, be, be.dsn(b), b.TempDir()+"/n2.db", func(o *trigger.Options) { o.PollInterval = 0 })
	e.define("t", trigger.Definition{Columns: []string{"a"}})
	for i := 0; i < b.N; i += 500 {
		var batch []cellar.NewCell
		for j := i; j < min(i+500, b.N); j++ {
			batch = append(batch, cellar.NewCell{Key: cellar.Key{RowKey: fmt.Sprintf("r%d", j), Column: "a", RefKey: 1}, Body: []byte(`{}`)})
		}
		for _, r := range e.cells.BatchPut(bg(), batch) {
			if r.Err != nil {
				b.Fatal(r.Err)
			}
		}
	}
	b.ResetTimer()
	start := time.Now()
	var n atomic.Int64
	var wg sync.WaitGroup
	for range loops {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for empty := 0; n.Load() < int64(b.N); {
				c, err := e.engine.Claim(bg(), "t", "c", 100, 100*time.Millisecond)
				if err != nil {
					b.Error(err)
					return
				}
				if c.Lease == nil {
					// The last cells may be out with the other loops.
					if empty++; empty == 50 {
						b.Errorf("delivered %d of %d cells", n.Load(), b.N)
						return
					}
					continue
				}
				empty = 0
				n.Add(int64(len(c.Cells)))
				if err := e.engine.Ack(bg(), "t", c.Lease.Token, c.Lease.Shard, c.Cells[len(c.Cells)-1].AddedID); err != nil {
					b.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	b.ReportMetric(float64(n.Load())/time.Since(start).Seconds(), "cells/s")
}

// BenchmarkLag measures end-to-end lag at 4096 shards: b.N cells of the
// trigger's column are written at a steady rate (500 or 2000 a second,
// spread over all shards, by 32 writers through the sharding store whose
// Committed hook calls Notify, as in cellar serve), while one consumer
// runs claim loops through the engine in-process, as client/trigger's Run
// does over HTTP (4, Run's default, or 16; claims of up to 100 cells,
// waiting up to 2s, an ack per batch), warmed up by a first claim. For
// each cell it takes the time from its put returning to its handler being
// called (0 if the handler came first), and reports the p50, p99 and
// largest lag and the write rate achieved.
//
//	go test ./internal/trigger -run '^$' -bench Lag -benchtime 20000x
func BenchmarkLag(b *testing.B) {
	for _, be := range backends {
		for _, run := range []struct{ rate, loops int }{{500, 4}, {2000, 4}, {2000, 16}} {
			b.Run(fmt.Sprintf("%s/rate=%d/loops=%d", be.name, run.rate, run.loops), func(b *testing.B) {
				e := newEnv(b, be, be.dsn(b), b.TempDir()+"/n2.db", func(o *trigger.Options) { o.PollInterval = 0; o.Now = nil })
				e.define("t", trigger.Definition{Columns: []string{"a"}})
				// The first claim loads the trigger's state: the lag is
				// measured once the consumer runs.
				if _, err := e.engine.Claim(bg(), "t", "c", 100, 0); err != nil {
					b.Fatal(err)
				}
				lt := lagtest.New(b.N)
				ctx, stop := context.WithCancel(bg())
				var wg sync.WaitGroup
				for range run.loops {
					wg.Add(1)
					go func() {
						defer wg.Done()
						engineConsumer(ctx, b, e.engine, "t", "c", lt.Handle)
					}()
				}
				b.ResetTimer()
				lt.Write(b, run.rate, func(i int) error {
					_, _, err := e.cells.Put(bg(), cellar.NewCell{Key: cellar.Key{RowKey: lagtest.Row(i), Column: "a", RefKey: 1}, Body: []byte(`{}`)})
					return err
				})
				lt.Wait(b, time.Minute)
				b.StopTimer()
				stop()
				wg.Wait()
				lt.Report(b)
			})
		}
	}
}

// engineConsumer is a claim loop through the engine, as client/trigger's
// Run is over HTTP: claim, handle the cells in order, ack the last one.
func engineConsumer(ctx context.Context, tb testing.TB, e *trigger.Engine, name, consumer string, handle func(cellar.Cell)) {
	for ctx.Err() == nil {
		c, err := e.Claim(ctx, name, consumer, 100, 2*time.Second)
		if err != nil {
			if ctx.Err() == nil {
				tb.Error(err)
			}
			return
		}
		if c.Lease == nil {
			continue
		}
		for _, cell := range c.Cells {
			handle(cell)
		}
		if err := e.Ack(context.WithoutCancel(ctx), name, c.Lease.Token, c.Lease.Shard, c.Cells[len(c.Cells)-1].AddedID); err != nil {
			tb.Error(err)
			return
		}
	}
}
