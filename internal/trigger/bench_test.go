package trigger_test

import (
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cellar-db/cellar"
	"github.com/cellar-db/cellar/internal/trigger"
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
