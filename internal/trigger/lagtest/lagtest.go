// Package lagtest measures trigger lag for benchmarks: cells written at a
// steady rate, and for each the time from its put returning to its
// handler being called.
package lagtest

import (
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cellar-db/cellar"
)

// Writers is how many goroutines put the cells, so that puts that take a
// while do not hold back the rate.
const Writers = 32

const rowPrefix = "lag-"

// Row is the row key of cell i.
func Row(i int) string { return rowPrefix + strconv.Itoa(i) }

// Test is one measurement of n cells.
type Test struct {
	n         int
	putAt     []atomic.Int64 // Unix nanoseconds when cell i's put returned
	handledAt []atomic.Int64 // ... when its handler was first called
	handled   atomic.Int64
	done      chan struct{} // closed when every cell was handled
	start     time.Time
	end       time.Time // when the last put returned
}

// New returns a Test of n cells.
func New(n int) *Test {
	return &Test{n: n, putAt: make([]atomic.Int64, n), handledAt: make([]atomic.Int64, n), done: make(chan struct{})}
}

// Handle is the handler: it records when cell was first handled.
func (t *Test) Handle(cell cellar.Cell) {
	now := time.Now().UnixNano()
	i, err := strconv.Atoi(strings.TrimPrefix(cell.RowKey, rowPrefix))
	if err != nil || i < 0 || i >= t.n {
		return
	}
	if t.handledAt[i].CompareAndSwap(0, now) && t.handled.Add(1) == int64(t.n) {
		close(t.done)
	}
}

// Write puts the n cells with put, cell i due at i/rate seconds after the
// start, and returns when every put has.
func (t *Test) Write(tb testing.TB, rate int, put func(i int) error) {
	tb.Helper()
	t.start = time.Now()
	var next atomic.Int64
	var wg sync.WaitGroup
	for range Writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= t.n {
					return
				}
				due := t.start.Add(time.Duration(i) * time.Second / time.Duration(rate))
				time.Sleep(time.Until(due))
				if err := put(i); err != nil {
					tb.Error(err)
					return
				}
				t.putAt[i].Store(time.Now().UnixNano())
			}
		}()
	}
	wg.Wait()
	t.end = time.Now()
}

// Wait waits until every cell was handled, or fails after timeout.
func (t *Test) Wait(tb testing.TB, timeout time.Duration) {
	tb.Helper()
	select {
	case <-t.done:
	case <-time.After(timeout):
		tb.Fatalf("%d of %d cells were handled within %s of the last put", t.handled.Load(), t.n, timeout)
	}
}

// Report reports the lag's p50, p99 and maximum in milliseconds, and the
// write rate achieved.
func (t *Test) Report(b *testing.B) {
	lags := make([]time.Duration, 0, t.n)
	for i := range t.n {
		lags = append(lags, max(time.Duration(t.handledAt[i].Load()-t.putAt[i].Load()), 0))
	}
	slices.Sort(lags)
	at := func(q float64) float64 { return float64(lags[min(int(q*float64(len(lags))), len(lags)-1)]) / 1e6 }
	b.ReportMetric(at(0.50), "p50-ms")
	b.ReportMetric(at(0.99), "p99-ms")
	b.ReportMetric(float64(lags[len(lags)-1])/1e6, "max-ms")
	b.ReportMetric(float64(t.n)/t.end.Sub(t.start).Seconds(), "cells/s")
	b.ReportMetric(0, "ns/op")
}
