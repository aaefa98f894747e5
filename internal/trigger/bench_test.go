package trigger_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/cellar-db/cellar"
	"github.com/cellar-db/cellar/internal/trigger"
)

// BenchmarkDeliver measures delivery through the engine to a no-op
// handler: b.N cells are written first (in batches), then one consumer
// claims up to 100 cells at a time and acks each batch until all are
// delivered. It reports cells per second of the delivery alone.
//
//	go test ./internal/trigger -run '^$' -bench Deliver -benchtime 20000x
func BenchmarkDeliver(b *testing.B) {
	for _, be := range backends {
		b.Run(be.name, func(b *testing.B) {
			e := newTestEnv(b, be)
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
			n := 0
			for n < b.N {
				c := e.claim("t", "c", 100)
				if c.Lease == nil {
					b.Fatalf("delivered %d of %d cells", n, b.N)
				}
				n += len(c.Cells)
				if err := e.engine.Ack(bg(), "t", c.Lease.Token, c.Lease.Shard, c.Cells[len(c.Cells)-1].AddedID); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(n)/time.Since(start).Seconds(), "cells/s")
		})
	}
}
