package storetest

import (
	"fmt"
	"math"
	"strings"
	"sync"
	"testing"

	"github.com/cellar-db/cellar"
)

// CounterOpener opens a new, empty counter node with shardCount logical
// shards. It registers the node's cleanup with tb.
type CounterOpener func(tb testing.TB, shardCount int) cellar.CounterNode

// RunCounters runs the suite of the durable counter interface against
// nodes from open. Keys of one logical shard are always on one node, so the
// tests that need one node's atomicity use keys of one shard.
func RunCounters(t *testing.T, open CounterOpener) {
	tests := []struct {
		name string
		f    func(*testing.T, CounterOpener)
	}{
		{"Apply", testCountersApply},
		{"Replay", testCountersReplay},
		{"Overflow", testCountersOverflow},
		{"ManyKeys", testCountersManyKeys},
		{"Invalid", testCountersInvalid},
		{"Concurrent", testCountersConcurrent},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) { tt.f(t, open) })
	}
}

func apply(tb testing.TB, s cellar.CounterNode, flushID string, deltas map[string]int64) {
	tb.Helper()
	if err := s.ApplyCounterDeltas(ctx(tb), flushID, deltas); err != nil {
		tb.Fatalf("ApplyCounterDeltas(%s, %v): %v", flushID, deltas, err)
	}
}

// wantCounters checks the values of the keys of want.
func wantCounters(tb testing.TB, s cellar.CounterNode, want map[string]int64) {
	tb.Helper()
	keys := make([]string, 0, len(want))
	for k := range want {
		keys = append(keys, k)
	}
	got, err := s.Counters(ctx(tb), keys)
	if err != nil {
		tb.Fatalf("Counters: %v", err)
	}
	if len(got) != len(want) {
		tb.Errorf("Counters of %d keys returned %d", len(want), len(got))
	}
	bad := 0
	for k, v := range want {
		if g, ok := got[k]; !ok || g != v {
			if bad++; bad <= 5 {
				tb.Errorf("counter %q = %d (present %t); want %d", k, g, ok, v)
			}
		}
	}
	if bad > 5 {
		tb.Errorf("%d counters are wrong in all", bad)
	}
}

func testCountersApply(t *testing.T, open CounterOpener) {
	s := open(t, 16)
	wantCounters(t, s, map[string]int64{"never": 0})
	if got, err := s.Counters(ctx(t), nil); err != nil || len(got) != 0 {
		t.Errorf("Counters(nil) = %v, %v; want an empty map", got, err)
	}
	apply(t, s, "f1", map[string]int64{"a": 5, "b": -3, "c": 0, "/": 1, "日本": 2})
	wantCounters(t, s, map[string]int64{"a": 5, "b": -3, "c": 0, "/": 1, "日本": 2, "never": 0})
	apply(t, s, "f2", map[string]int64{"a": -5, "b": -3, "d": math.MaxInt64})
	wantCounters(t, s, map[string]int64{"a": 0, "b": -6, "d": math.MaxInt64})
	// An empty flush changes nothing and is fine.
	apply(t, s, "f3", map[string]int64{})
	apply(t, s, "f4", nil)
	// Keys given twice are read once.
	got, err := s.Counters(ctx(t), []string{"b", "b", "a"})
	if err != nil || len(got) != 2 || got["b"] != -6 || got["a"] != 0 {
		t.Errorf("Counters(b, b, a) = %v, %v; want map[a:0 b:-6]", got, err)
	}
}

func testCountersReplay(t *testing.T, open CounterOpener) {
	s := open(t, 16)
	d := map[string]int64{"a": 1, "b": 10}
	apply(t, s, "flush-1", d)
	apply(t, s, "flush-1", d)
	wantCounters(t, s, map[string]int64{"a": 1, "b": 10})
	// The record is the flush id's, whatever the deltas: a retry is the
	// same flush.
	apply(t, s, "flush-1", map[string]int64{"a": 100})
	wantCounters(t, s, map[string]int64{"a": 1, "b": 10})
	apply(t, s, "flush-2", d)
	apply(t, s, "FLUSH-1", d) // ids are compared exactly
	wantCounters(t, s, map[string]int64{"a": 3, "b": 30})
	// A flush of only zero deltas changes nothing and is recorded too: the
	// same ID with other deltas (a Redis that came back with part of its
	// increments) is the same flush.
	apply(t, s, "flush-zero", map[string]int64{"a": 0})
	apply(t, s, "flush-zero", map[string]int64{"a": 1})
	wantCounters(t, s, map[string]int64{"a": 3, "b": 30})
}

// testCountersOverflow checks that a flush that would take a counter out
// of int64 applies nothing on that counter's node and names the counter,
// and that the flush can then be retried with deltas that fit.
func testCountersOverflow(t *testing.T, open CounterOpener) {
	const shards = 16
	s := open(t, shards)
	keys := keysInShard("ovf", 3, shards, 4) // one node: all or nothing
	hi, lo, a, b := keys[0], keys[1], keys[2], keys[3]
	apply(t, s, "setup", map[string]int64{hi: math.MaxInt64 - 1, lo: math.MinInt64 + 1, a: 7})
	want := map[string]int64{hi: math.MaxInt64 - 1, lo: math.MinInt64 + 1, a: 7, b: 0}
	for _, c := range []struct {
		name, key string
		deltas    map[string]int64
	}{
		{"up by 2", hi, map[string]int64{a: 1, b: 1, hi: 2}},
		{"up by max", hi, map[string]int64{a: 1, hi: math.MaxInt64}},
		{"down by 2", lo, map[string]int64{a: 1, b: -1, lo: -2}},
		{"down by min", lo, map[string]int64{lo: math.MinInt64, b: 5}},
		{"new key, then down", lo, map[string]int64{b: math.MinInt64, lo: -2}},
	} {
		err := s.ApplyCounterDeltas(ctx(t), "ovf-"+c.name, c.deltas)
		wantCode(t, "overflow "+c.name, err, cellar.ErrInvalid)
		if err != nil && !strings.Contains(cellar.ErrorMessage(err), c.key) {
			t.Errorf("overflow %s: message %q does not name counter %q", c.name, cellar.ErrorMessage(err), c.key)
		}
		wantCounters(t, s, want)
	}
	// Nothing recorded the failed flushes: retried with deltas that fit,
	// they apply.
	apply(t, s, "ovf-up by 2", map[string]int64{a: 1, b: 1, hi: 1})
	apply(t, s, "ovf-down by 2", map[string]int64{lo: -1, b: math.MinInt64 + 1})
	want = map[string]int64{hi: math.MaxInt64, lo: math.MinInt64, a: 8, b: math.MinInt64 + 2}
	wantCounters(t, s, want)
	// At the limits, any step further is refused; a step back is fine.
	wantCode(t, "past max", s.ApplyCounterDeltas(ctx(t), "f-max", map[string]int64{hi: 1}), cellar.ErrInvalid)
	wantCode(t, "past min", s.ApplyCounterDeltas(ctx(t), "f-min", map[string]int64{lo: -1}), cellar.ErrInvalid)
	apply(t, s, "back", map[string]int64{hi: -1, lo: 1})
	want[hi], want[lo] = math.MaxInt64-1, math.MinInt64+1
	wantCounters(t, s, want)
}

func testCountersManyKeys(t *testing.T, open CounterOpener) {
	s := open(t, 16)
	const n = 2500
	deltas := make(map[string]int64, n)
	want := make(map[string]int64, n+1)
	for i := 0; i < n; i++ {
		k := fmt.Sprintf("key-%04d", i)
		deltas[k] = int64(i - n/2)
		want[k] = int64(i-n/2) * 2
	}
	apply(t, s, "many-1", deltas)
	apply(t, s, "many-2", deltas)
	apply(t, s, "many-1", deltas)
	want["absent"] = 0
	wantCounters(t, s, want)
}

func testCountersInvalid(t *testing.T, open CounterOpener) {
	s := open(t, 16)
	long := strings.Repeat("x", cellar.MaxRowKeyBytes+1)
	for name, bad := range map[string]string{"empty": "", "too long": long, "invalid UTF-8": "a\xffb", "control character": "a\tb"} {
		err := s.ApplyCounterDeltas(ctx(t), "bad-"+name, map[string]int64{"ok": 1, bad: 1})
		wantCode(t, "ApplyCounterDeltas with key "+name, err, cellar.ErrInvalid)
		_, err = s.Counters(ctx(t), []string{"ok", bad})
		wantCode(t, "Counters with key "+name, err, cellar.ErrInvalid)
	}
	for name, bad := range map[string]string{"empty": "", "too long": strings.Repeat("f", 256)} {
		err := s.ApplyCounterDeltas(ctx(t), bad, map[string]int64{"ok": 1})
		wantCode(t, "ApplyCounterDeltas with flush id "+name, err, cellar.ErrInvalid)
	}
	// Nothing was applied, not even the valid keys.
	wantCounters(t, s, map[string]int64{"ok": 0})
	apply(t, s, strings.Repeat("f", 255), map[string]int64{"ok": 1})
	wantCounters(t, s, map[string]int64{"ok": 1})
}

// testCountersConcurrent applies many flushes at once, each of them twice,
// to the same counters: each flush counts once.
func testCountersConcurrent(t *testing.T, open CounterOpener) {
	s := open(t, 16)
	const flushers, perFlusher = 6, 10
	keys := []string{"hot", "k1", "k2", "k3", "k4", "k5"}
	var wg sync.WaitGroup
	errc := make(chan error, 2*flushers)
	for f := 0; f < flushers; f++ {
		for c := 0; c < 2; c++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := 0; i < perFlusher; i++ {
					d := map[string]int64{}
					// Flushers touch the keys in different orders and
					// subsets; the node must not deadlock or lose any.
					for j := range keys {
						k := keys[(f+i+j)%len(keys)]
						if j%2 == 0 || k == "hot" {
							d[k] = 1
						}
					}
					id := fmt.Sprintf("flusher-%d-%d", f, i)
					if err := s.ApplyCounterDeltas(ctx(t), id, d); err != nil {
						errc <- fmt.Errorf("%s (copy %d): %w", id, c, err)
						return
					}
				}
			}()
		}
	}
	wg.Wait()
	close(errc)
	for err := range errc {
		t.Error(err)
	}
	want := map[string]int64{}
	for f := 0; f < flushers; f++ {
		for i := 0; i < perFlusher; i++ {
			for j := range keys {
				k := keys[(f+i+j)%len(keys)]
				if j%2 == 0 || k == "hot" {
					want[k]++
				}
			}
		}
	}
	wantCounters(t, s, want)
}
