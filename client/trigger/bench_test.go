package trigger_test

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cellar-db/cellar"
	"github.com/cellar-db/cellar/client"
	"github.com/cellar-db/cellar/client/trigger"
)

// BenchmarkRun measures delivery through HTTP and Run to a no-op handler:
// b.N cells are written first, then one Run with 4 concurrent shards
// handles them all. It reports cells per second of the delivery alone.
//
//	go test ./client/trigger -run '^$' -bench Run -benchtime 20000x
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
		for _, r := range st.BatchPut(ctx, batch) {
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
