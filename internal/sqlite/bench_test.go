package sqlite_test

import (
	"context"
	"fmt"
	"runtime"
	"sync/atomic"
	"testing"

	"github.com/cellar-db/cellar"
)

// BenchmarkDurablePut64 puts cells from 64 goroutines into one SQLite node
// (synchronous=FULL), with group commit and with one transaction per put,
// to compare the two in one run:
//
//	go test ./internal/sqlite -run '^$' -bench DurablePut64 -benchtime 5s -count 3
func BenchmarkDurablePut64(b *testing.B) {
	for _, mode := range []struct {
		name    string
		noGroup bool
	}{{"group_commit", false}, {"tx_per_put", true}} {
		b.Run(mode.name, func(b *testing.B) {
			s := open(b, cellar.DefaultShardCount, mode.noGroup)
			body := []byte(`{"user":"ann","event":"login","ts":1732200000,"tags":["a","b","c"],"n":12345678901234567890}`)
			var n atomic.Int64
			b.SetParallelism(64 / max(1, testingProcs()))
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					i := n.Add(1)
					_, _, err := s.Put(context.Background(), cellar.NewCell{Key: cellar.Key{RowKey: fmt.Sprintf("row-%d", i), Column: "c", RefKey: 1}, Body: body})
					if err != nil {
						b.Error(err)
						return
					}
				}
			})
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "puts/s")
		})
	}
}

// testingProcs is GOMAXPROCS, which RunParallel multiplies the
// parallelism by.
func testingProcs() int { return runtime.GOMAXPROCS(0) }

// BenchmarkBatchPut measures the write path alone: one goroutine writes
// batches of new cells, each cell in its own shard, one transaction a
// batch, as a group commit of that size does. The cost per cell shows what
// a group saves over one transaction per cell; with TMPDIR on a tmpfs,
// where fsync costs nothing, it is the CPU cost alone:
//
//	TMPDIR=/dev/shm go test ./internal/sqlite -run '^$' -bench BatchPut -benchtime 2s
func BenchmarkBatchPut(b *testing.B) {
	body := []byte(`{"user":"ann","event":"login","ts":1732200000,"tags":["a","b","c"],"n":12345678901234567890}`)
	for _, size := range []int{1, 32} {
		b.Run(fmt.Sprintf("cells=%d", size), func(b *testing.B) {
			s := open(b, cellar.DefaultShardCount, true)
			cells := make([]cellar.NewCell, size)
			n := 0
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				for j := range cells {
					n++
					cells[j] = cellar.NewCell{Key: cellar.Key{RowKey: fmt.Sprintf("row-%d", n), Column: "c", RefKey: 1}, Body: body}
				}
				for _, r := range s.BatchPut(context.Background(), cells) {
					if r.Err != nil {
						b.Fatal(r.Err)
					}
				}
			}
			b.ReportMetric(float64(b.Elapsed().Microseconds())/float64(b.N*size), "µs/cell")
		})
	}
}
