package storetest

import (
	"cmp"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/cellar-db/cellar"
)

// TimelineOpener opens a new, empty timeline store with shardCount logical
// shards. It registers the store's cleanup with tb.
type TimelineOpener func(tb testing.TB, shardCount int) cellar.TimelineStore

// RunTimelines runs the timeline suite against stores from open.
//
// The suite holds stores to the exact semantics: a timeline is the cap
// highest members by (score, member bytes), whenever and however the
// store trims the rest. Descending ranges order ties by member descending,
// ascending ranges by member ascending: each is the other reversed.
func RunTimelines(t *testing.T, open TimelineOpener) {
	tests := []struct {
		name string
		f    func(*testing.T, TimelineOpener)
	}{
		{"AddRange", testTimelineAddRange},
		{"Update", testTimelineUpdate},
		{"Remove", testTimelineRemove},
		{"Ties", testTimelineTies},
		{"OffsetLimit", testTimelineOffsetLimit},
		{"Scores", testTimelineScores},
		{"Keys", testTimelineKeys},
		{"Cap", testTimelineCap},
		{"SetCap", testTimelineSetCap},
		{"Model", testTimelineModel},
		{"Invalid", testTimelineInvalid},
		{"Concurrent", testTimelineConcurrent},
		{"ConcurrentCreate", testTimelineConcurrentCreate},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) { tt.f(t, open) })
	}
}

func tlAdd(tb testing.TB, s cellar.TimelineStore, key, member string, score float64) {
	tb.Helper()
	if err := s.TimelineAdd(ctx(tb), key, member, score); err != nil {
		tb.Fatalf("TimelineAdd(%q, %q, %v): %v", key, member, score, err)
	}
}

func tlRange(tb testing.TB, s cellar.TimelineStore, key string, offset, limit int, desc bool) ([]cellar.TimelineItem, int64) {
	tb.Helper()
	items, count, err := s.TimelineRange(ctx(tb), key, offset, limit, desc)
	if err != nil {
		tb.Fatalf("TimelineRange(%q, %d, %d, desc=%t): %v", key, offset, limit, desc, err)
	}
	if items == nil {
		tb.Errorf("TimelineRange(%q) returned nil items; want an empty slice", key)
	}
	return items, count
}

func tlCap(tb testing.TB, s cellar.TimelineStore, key string, cap int) {
	tb.Helper()
	if err := s.SetTimelineCap(ctx(tb), key, cap); err != nil {
		tb.Fatalf("SetTimelineCap(%q, %d): %v", key, cap, err)
	}
}

// itemsString formats items compactly for comparisons: "a:1 b:2.5".
func itemsString(items []cellar.TimelineItem) string {
	parts := make([]string, len(items))
	for i, it := range items {
		parts[i] = fmt.Sprintf("%s:%v", it.Member, it.Score)
	}
	return strings.Join(parts, " ")
}

// wantRange checks one range and the count that comes with it.
func wantRange(tb testing.TB, s cellar.TimelineStore, key string, offset, limit int, desc bool, want string, wantCount int64) {
	tb.Helper()
	items, count := tlRange(tb, s, key, offset, limit, desc)
	if got := itemsString(items); got != want || count != wantCount {
		tb.Errorf("TimelineRange(%q, offset %d, limit %d, desc=%t) = [%s], count %d; want [%s], count %d",
			key, offset, limit, desc, got, count, want, wantCount)
	}
}

func wantCount(tb testing.TB, s cellar.TimelineStore, key string, want int64) {
	tb.Helper()
	n, err := s.TimelineCount(ctx(tb), key)
	if err != nil || n != want {
		tb.Errorf("TimelineCount(%q) = %d, %v; want %d", key, n, err, want)
	}
}

func testTimelineAddRange(t *testing.T, open TimelineOpener) {
	s := open(t, 16)
	wantRange(t, s, "empty", 0, 10, true, "", 0)
	wantCount(t, s, "empty", 0)
	tlAdd(t, s, "tl", "b", 2)
	tlAdd(t, s, "tl", "a", 1)
	tlAdd(t, s, "tl", "c", 3)
	tlAdd(t, s, "tl", "neg", -7.5)
	wantRange(t, s, "tl", 0, 100, true, "c:3 b:2 a:1 neg:-7.5", 4)
	wantRange(t, s, "tl", 0, 100, false, "neg:-7.5 a:1 b:2 c:3", 4)
	wantCount(t, s, "tl", 4)
	// Another timeline is separate.
	tlAdd(t, s, "other", "a", 100)
	wantRange(t, s, "other", 0, 100, true, "a:100", 1)
	wantRange(t, s, "tl", 0, 1, true, "c:3", 4)
	// A member name is not a prefix match or a case-folded one.
	tlAdd(t, s, "tl", "A", 0)
	tlAdd(t, s, "tl", "a ", 0.5)
	wantRange(t, s, "tl", 0, 100, true, "c:3 b:2 a:1 a :0.5 A:0 neg:-7.5", 6)
}

func testTimelineUpdate(t *testing.T, open TimelineOpener) {
	s := open(t, 16)
	for i, m := range []string{"a", "b", "c", "d"} {
		tlAdd(t, s, "tl", m, float64(i))
	}
	tlAdd(t, s, "tl", "a", 10)  // up to the top
	tlAdd(t, s, "tl", "d", -1)  // down to the bottom
	tlAdd(t, s, "tl", "b", 1)   // unchanged
	tlAdd(t, s, "tl", "c", 2.5) // in place
	wantRange(t, s, "tl", 0, 100, true, "a:10 c:2.5 b:1 d:-1", 4)
	wantCount(t, s, "tl", 4)
}

func testTimelineRemove(t *testing.T, open TimelineOpener) {
	s := open(t, 16)
	remove := func(key, member string, want bool) {
		t.Helper()
		got, err := s.TimelineRemove(ctx(t), key, member)
		if err != nil || got != want {
			t.Errorf("TimelineRemove(%q, %q) = %t, %v; want %t", key, member, got, err, want)
		}
	}
	remove("never", "x", false)
	wantCount(t, s, "never", 0)
	tlAdd(t, s, "tl", "a", 1)
	tlAdd(t, s, "tl", "b", 2)
	tlAdd(t, s, "tl", "c", 3)
	remove("tl", "b", true)
	remove("tl", "b", false)
	remove("tl", "zzz", false)
	remove("other", "a", false)
	wantRange(t, s, "tl", 0, 100, true, "c:3 a:1", 2)
	remove("tl", "a", true)
	remove("tl", "c", true)
	wantRange(t, s, "tl", 0, 100, true, "", 0)
	wantRange(t, s, "tl", 0, 100, false, "", 0)
	wantCount(t, s, "tl", 0)
	// A removed member can come back.
	tlAdd(t, s, "tl", "b", 5)
	wantRange(t, s, "tl", 0, 100, true, "b:5", 1)
}

func testTimelineTies(t *testing.T, open TimelineOpener) {
	s := open(t, 16)
	// Ties order by member bytes: "B" < "a" < "b" < "é" (C3 A9) < "日" (E6 97 A5).
	for _, m := range []string{"b", "日", "a", "é", "B"} {
		tlAdd(t, s, "tl", m, 5)
	}
	tlAdd(t, s, "tl", "top", 6)
	tlAdd(t, s, "tl", "low", 4)
	wantRange(t, s, "tl", 0, 100, true, "top:6 日:5 é:5 b:5 a:5 B:5 low:4", 7)
	wantRange(t, s, "tl", 0, 100, false, "low:4 B:5 a:5 b:5 é:5 日:5 top:6", 7)
	// Pages split ties the same way.
	wantRange(t, s, "tl", 2, 2, true, "é:5 b:5", 7)
	wantRange(t, s, "tl", 2, 2, false, "a:5 b:5", 7)
	// With ties at the cap, the cap keeps the higher members.
	tlCap(t, s, "tl", 4)
	wantRange(t, s, "tl", 0, 100, true, "top:6 日:5 é:5 b:5", 4)
	wantRange(t, s, "tl", 0, 100, false, "b:5 é:5 日:5 top:6", 4)
}

func testTimelineOffsetLimit(t *testing.T, open TimelineOpener) {
	s := open(t, 16)
	var all []string
	for i := 0; i < 25; i++ {
		tlAdd(t, s, "tl", fmt.Sprintf("m%02d", i), float64(i))
		all = append(all, fmt.Sprintf("m%02d:%d", i, i))
	}
	desc := slices.Clone(all)
	slices.Reverse(desc)
	window := func(list []string, off, lim int) string {
		if off >= len(list) {
			return ""
		}
		return strings.Join(list[off:min(off+lim, len(list))], " ")
	}
	for _, c := range []struct{ off, lim int }{{0, 1}, {0, 10}, {3, 5}, {20, 10}, {24, 1}, {25, 1}, {26, 5}, {0, 1000}, {1 << 40, 10}} {
		wantRange(t, s, "tl", c.off, c.lim, true, window(desc, c.off, c.lim), 25)
		wantRange(t, s, "tl", c.off, c.lim, false, window(all, c.off, c.lim), 25)
	}
	// Paging through visits every member once, in order.
	var paged []string
	for off := 0; ; off += 7 {
		items, _ := tlRange(t, s, "tl", off, 7, true)
		if len(items) == 0 {
			break
		}
		paged = append(paged, itemsString(items))
	}
	if got := strings.Join(paged, " "); got != strings.Join(desc, " ") {
		t.Errorf("paging by 7 = %s; want %s", got, strings.Join(desc, " "))
	}
}

func testTimelineScores(t *testing.T, open TimelineOpener) {
	s := open(t, 16)
	scores := []float64{0.1, 1.0 / 3, 0.1 + 0.2, 1e308, -1e308, 1e-300, -1e-300, 123456789.123456789,
		math.MaxFloat64, -math.MaxFloat64, 1 << 53, 1<<53 + 2, -12345.678e-9}
	for i, sc := range scores {
		tlAdd(t, s, "tl", fmt.Sprintf("m%02d", i), sc)
	}
	items, count := tlRange(t, s, "tl", 0, 1000, false)
	if count != int64(len(scores)) || len(items) != len(scores) {
		t.Fatalf("range of %d scores: %d items, count %d", len(scores), len(items), count)
	}
	want := slices.Clone(scores)
	slices.Sort(want)
	for i, it := range items {
		if it.Score != want[i] {
			t.Errorf("item %d score = %v (%b); want %v exactly", i, it.Score, math.Float64bits(it.Score), want[i])
		}
	}
	// -0 is 0: it ties with 0 and comes back as 0.
	tlAdd(t, s, "zero", "neg", math.Copysign(0, -1))
	tlAdd(t, s, "zero", "pos", 0)
	items, _ = tlRange(t, s, "zero", 0, 10, true)
	if itemsString(items) != "pos:0 neg:0" || math.Signbit(items[1].Score) {
		t.Errorf("range of -0 and 0 = %s (signbit %t); want pos:0 neg:0, without sign", itemsString(items), len(items) > 1 && math.Signbit(items[1].Score))
	}
}

func testTimelineKeys(t *testing.T, open TimelineOpener) {
	s := open(t, 16)
	keys := []string{"/", ".", "..", "a/b", "a b", "日本", "%2F", strings.Repeat("k", cellar.MaxRowKeyBytes)}
	members := []string{"/", "m/1", "é", "%", strings.Repeat("m", 255)}
	for i, k := range keys {
		for j, m := range members {
			tlAdd(t, s, k, m, float64(i*10+j))
		}
	}
	for i, k := range keys {
		var want []string
		for j := len(members) - 1; j >= 0; j-- {
			want = append(want, fmt.Sprintf("%s:%d", members[j], i*10+j))
		}
		wantRange(t, s, k, 0, 100, true, strings.Join(want, " "), int64(len(members)))
	}
}

// testTimelineCap checks the cap around the trim: whenever the store
// deletes the members beyond the cap, reads never show them, and nothing
// brings them back.
func testTimelineCap(t *testing.T, open TimelineOpener) {
	s := open(t, 16)
	const cap = 20
	tlCap(t, s, "tl", cap)
	model := newTimelineModel(cap)
	add := func(m string, score float64) {
		t.Helper()
		tlAdd(t, s, "tl", m, score)
		model.add(m, score)
	}
	check := func(what string) {
		t.Helper()
		model.check(t, what, s, "tl")
	}
	// Well past the cap, one member at a time, checking every step: a
	// store trimming lazily crosses its slack somewhere in here.
	for i := 1; i <= 3*cap; i++ {
		add(fmt.Sprintf("m%03d", i), float64(i))
		check(fmt.Sprintf("after adding m%03d", i))
	}
	// A member below the cap is not kept.
	add("low", 0)
	check("after adding a low member")
	// A member above it pushes out the lowest.
	add("high", 1000)
	check("after adding a high member")
	// Neither lowering a member's score nor removing one revives members
	// beyond the cap. New members between the steps keep some there.
	for i := 0; i < 10; i++ {
		add(fmt.Sprintf("new%d", i), float64(2000+i))
		check(fmt.Sprintf("after adding new%d", i))
		victim := model.sorted(true)[5].Member
		add(victim, -float64(i+1))
		check(fmt.Sprintf("after lowering %s", victim))
		add(fmt.Sprintf("newer%d", i), float64(3000+i))
		victim = model.sorted(true)[3].Member
		if removed, err := s.TimelineRemove(ctx(t), "tl", victim); err != nil || !removed {
			t.Errorf("TimelineRemove(%s) = %t, %v; want true", victim, removed, err)
		}
		model.remove(victim)
		check(fmt.Sprintf("after removing %s", victim))
	}
	// A member beyond the cap is not there to remove.
	if removed, err := s.TimelineRemove(ctx(t), "tl", "m001"); err != nil || removed {
		t.Errorf("TimelineRemove(m001), long beyond the cap = %t, %v; want false", removed, err)
	}
	// Members beyond the cap come back only when added again.
	add("m002", 500)
	check("after re-adding a member beyond the cap")
	wantCount(t, s, "tl", cap)
}

func testTimelineSetCap(t *testing.T, open TimelineOpener) {
	s := open(t, 16)
	model := newTimelineModel(cellar.DefaultTimelineCap)
	for i := 0; i < 30; i++ {
		m := fmt.Sprintf("m%02d", i)
		tlAdd(t, s, "tl", m, float64(i))
		model.add(m, float64(i))
	}
	steps := []int{25, 5, 12, 1, 30, 3, 1_000_000}
	for _, c := range steps {
		tlCap(t, s, "tl", c)
		model.setCap(c)
		model.check(t, fmt.Sprintf("after SetTimelineCap(%d)", c), s, "tl")
		// Adding past the new cap keeps it.
		for i := 0; i < 3; i++ {
			m := fmt.Sprintf("c%d-%d", c, i)
			tlAdd(t, s, "tl", m, float64(100+c+i))
			model.add(m, float64(100+c+i))
		}
		model.check(t, fmt.Sprintf("after adding with cap %d", c), s, "tl")
	}
	// Setting the cap of a timeline that does not exist creates it.
	tlCap(t, s, "new", 2)
	wantCount(t, s, "new", 0)
	for i := 0; i < 5; i++ {
		tlAdd(t, s, "new", fmt.Sprint(i), float64(i))
	}
	wantRange(t, s, "new", 0, 10, true, "4:4 3:3", 2)
}

// testTimelineModel runs random operations against a small timeline and an
// exact model of one, comparing every read.
func testTimelineModel(t *testing.T, open TimelineOpener) {
	s := open(t, 16)
	rng := rand.New(rand.NewPCG(1, 2))
	model := newTimelineModel(10)
	tlCap(t, s, "tl", 10)
	ops := 300
	if testing.Short() {
		ops = 60
	}
	for i := 0; i < ops; i++ {
		m := fmt.Sprintf("m%02d", rng.IntN(40))
		var what string
		switch p := rng.IntN(100); {
		case p < 65:
			score := float64(rng.IntN(30)) // few distinct scores: many ties
			what = fmt.Sprintf("add %s %v", m, score)
			tlAdd(t, s, "tl", m, score)
			model.add(m, score)
		case p < 90:
			what = "remove " + m
			got, err := s.TimelineRemove(ctx(t), "tl", m)
			if want := model.remove(m); err != nil || got != want {
				t.Fatalf("op %d: TimelineRemove(%s) = %t, %v; want %t", i, m, got, err, want)
			}
		default:
			c := 1 + rng.IntN(15)
			what = fmt.Sprintf("cap %d", c)
			tlCap(t, s, "tl", c)
			model.setCap(c)
		}
		model.check(t, fmt.Sprintf("op %d (%s)", i, what), s, "tl")
		off, lim := rng.IntN(12), 1+rng.IntN(6)
		for _, desc := range []bool{true, false} {
			items, count := tlRange(t, s, "tl", off, lim, desc)
			if got, want := itemsString(items), itemsString(window(model.sorted(desc), off, lim)); got != want || count != int64(len(model.m)) {
				t.Fatalf("op %d (%s): range offset %d limit %d desc=%t = [%s] count %d; want [%s] count %d",
					i, what, off, lim, desc, got, count, want, len(model.m))
			}
		}
		if t.Failed() {
			t.FailNow()
		}
	}
}

func window[T any](s []T, off, lim int) []T {
	if off >= len(s) {
		return nil
	}
	return s[off:min(off+lim, len(s))]
}

func testTimelineInvalid(t *testing.T, open TimelineOpener) {
	s := open(t, 16)
	tlAdd(t, s, "tl", "a", 1)
	long := strings.Repeat("x", cellar.MaxRowKeyBytes+1)
	badNames := map[string]string{"empty": "", "too long": long, "invalid UTF-8": "a\xffb", "control character": "a\nb", "C1 control": "a\u0085b"}
	for name, bad := range badNames {
		wantCode(t, "TimelineAdd with key "+name, s.TimelineAdd(ctx(t), bad, "m", 1), cellar.ErrInvalid)
		wantCode(t, "TimelineAdd with member "+name, s.TimelineAdd(ctx(t), "tl", bad, 1), cellar.ErrInvalid)
		_, err := s.TimelineRemove(ctx(t), bad, "a")
		wantCode(t, "TimelineRemove with key "+name, err, cellar.ErrInvalid)
		_, err = s.TimelineRemove(ctx(t), "tl", bad)
		wantCode(t, "TimelineRemove with member "+name, err, cellar.ErrInvalid)
		_, _, err = s.TimelineRange(ctx(t), bad, 0, 10, true)
		wantCode(t, "TimelineRange with key "+name, err, cellar.ErrInvalid)
		_, err = s.TimelineCount(ctx(t), bad)
		wantCode(t, "TimelineCount with key "+name, err, cellar.ErrInvalid)
		wantCode(t, "SetTimelineCap with key "+name, s.SetTimelineCap(ctx(t), bad, 10), cellar.ErrInvalid)
	}
	for _, score := range []float64{math.NaN(), math.Inf(1), math.Inf(-1)} {
		wantCode(t, fmt.Sprintf("TimelineAdd with score %v", score), s.TimelineAdd(ctx(t), "tl", "b", score), cellar.ErrInvalid)
	}
	for _, c := range []struct{ off, lim int }{{-1, 10}, {0, 0}, {0, -1}, {0, 1001}} {
		_, _, err := s.TimelineRange(ctx(t), "tl", c.off, c.lim, true)
		wantCode(t, fmt.Sprintf("TimelineRange offset %d limit %d", c.off, c.lim), err, cellar.ErrInvalid)
	}
	for _, c := range []int{0, -1, 1_000_001} {
		wantCode(t, fmt.Sprintf("SetTimelineCap(%d)", c), s.SetTimelineCap(ctx(t), "tl", c), cellar.ErrInvalid)
	}
	// Nothing was written, and the limits themselves are fine.
	wantRange(t, s, "tl", 0, 1000, true, "a:1", 1)
	tlCap(t, s, "tl", 1_000_000)
	tlCap(t, s, "tl", 1)
	tlAdd(t, s, strings.Repeat("k", cellar.MaxRowKeyBytes), strings.Repeat("m", cellar.MaxRowKeyBytes), math.MaxFloat64)
}

// testTimelineConcurrentCreate creates many timelines at once, each by
// its own writer, in rounds: every add succeeds. (Review of 2026-12-08: on
// MariaDB, creators whose keys fell in one index gap deadlocked on the gap
// locks of their reads of the missing rows, and 3 to 8 adds of 480 failed
// after their retries, as internal errors.)
func testTimelineConcurrentCreate(t *testing.T, open TimelineOpener) {
	s := open(t, 4)
	const rounds, writers = 10, 48
	var wg sync.WaitGroup
	errc := make(chan error, rounds*writers)
	for round := 0; round < rounds; round++ {
		for w := 0; w < writers; w++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				key := fmt.Sprintf("r%02d-k%03d", round, w)
				if err := s.TimelineAdd(ctx(t), key, "m", 1); err != nil {
					errc <- fmt.Errorf("TimelineAdd(%q): %w", key, err)
				}
			}()
		}
		wg.Wait()
	}
	close(errc)
	n := 0
	for err := range errc {
		if n++; n <= 3 {
			t.Error(err)
		}
	}
	if n > 0 {
		t.Errorf("%d of %d adds creating timelines failed; want none", n, rounds*writers)
	}
	wantCount(t, s, "r09-k047", 1)
}

// testTimelineConcurrent adds to one timeline from many goroutines while
// others read it: every read stays within the cap, and the end state is
// the cap highest members. It also races writers to create a timeline.
func testTimelineConcurrent(t *testing.T, open TimelineOpener) {
	s := open(t, 16)
	const writers, perWriter, cap = 8, 40, 50
	var wg sync.WaitGroup
	errc := make(chan error, writers+2)
	for w := 0; w < writers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := s.TimelineAdd(ctx(t), "new", fmt.Sprint(w), float64(w)); err != nil {
				errc <- fmt.Errorf("writer %d creating a timeline: %w", w, err)
			}
		}()
	}
	wg.Wait()
	wantCount(t, s, "new", writers)

	tlCap(t, s, "tl", cap)
	for w := 0; w < writers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < perWriter; i++ {
				m := fmt.Sprintf("w%d-%02d", w, i)
				// Scores interleave across writers, so trims cut into
				// every writer's members.
				score := float64(i*writers + w)
				if err := s.TimelineAdd(ctx(t), "tl", m, score); err != nil {
					errc <- fmt.Errorf("writer %d add %s: %w", w, m, err)
					return
				}
				// Writers also set earlier members' scores again.
				if i%5 == 4 {
					prev := fmt.Sprintf("w%d-%02d", w, i-2)
					if err := s.TimelineAdd(ctx(t), "tl", prev, float64((i-2)*writers+w)); err != nil {
						errc <- fmt.Errorf("writer %d update %s: %w", w, prev, err)
						return
					}
				}
			}
		}()
	}
	done := make(chan struct{})
	var readers sync.WaitGroup
	for r := 0; r < 2; r++ {
		readers.Add(1)
		go func() {
			defer readers.Done()
			for {
				select {
				case <-done:
					return
				default:
				}
				desc := r == 0
				items, count, err := s.TimelineRange(ctx(t), "tl", 0, 1000, desc)
				if err != nil {
					errc <- fmt.Errorf("reader: %w", err)
					return
				}
				if int64(len(items)) != count || count > cap {
					errc <- fmt.Errorf("reader: range of the whole timeline has %d items and count %d; the cap is %d", len(items), count, cap)
					return
				}
				sorted := slices.IsSortedFunc(items, func(a, b cellar.TimelineItem) int {
					c := cmp.Or(cmp.Compare(a.Score, b.Score), strings.Compare(a.Member, b.Member))
					if desc {
						return -c
					}
					return c
				})
				if !sorted {
					errc <- fmt.Errorf("reader: range is out of order: %s", itemsString(items))
					return
				}
			}
		}()
	}
	wg.Wait()
	close(done)
	readers.Wait()
	close(errc)
	for err := range errc {
		t.Error(err)
	}
	if t.Failed() {
		return
	}
	var want []string
	for sc := writers*perWriter - 1; sc >= writers*perWriter-cap; sc-- {
		w, i := sc%writers, sc/writers
		want = append(want, fmt.Sprintf("w%d-%02d:%d", w, i, sc))
	}
	wantRange(t, s, "tl", 0, 1000, true, strings.Join(want, " "), cap)
	wantCount(t, s, "tl", cap)
}

// timelineModel is an exact capped timeline: it trims at once.
type timelineModel struct {
	cap int
	m   map[string]float64
}

func newTimelineModel(cap int) *timelineModel {
	return &timelineModel{cap: cap, m: make(map[string]float64)}
}

func (tm *timelineModel) add(member string, score float64) {
	tm.m[member] = score
	tm.trim()
}

func (tm *timelineModel) remove(member string) bool {
	_, ok := tm.m[member]
	delete(tm.m, member)
	return ok
}

func (tm *timelineModel) setCap(cap int) {
	tm.cap = cap
	tm.trim()
}

func (tm *timelineModel) trim() {
	if len(tm.m) <= tm.cap {
		return
	}
	asc := tm.sorted(false)
	for _, it := range asc[:len(asc)-tm.cap] {
		delete(tm.m, it.Member)
	}
}

func (tm *timelineModel) sorted(desc bool) []cellar.TimelineItem {
	items := make([]cellar.TimelineItem, 0, len(tm.m))
	for m, sc := range tm.m {
		items = append(items, cellar.TimelineItem{Member: m, Score: sc})
	}
	slices.SortFunc(items, func(a, b cellar.TimelineItem) int {
		return cmp.Or(cmp.Compare(a.Score, b.Score), strings.Compare(a.Member, b.Member))
	})
	if desc {
		slices.Reverse(items)
	}
	return items
}

// check compares the whole timeline, both ways, and its count.
func (tm *timelineModel) check(tb testing.TB, what string, s cellar.TimelineStore, key string) {
	tb.Helper()
	for _, desc := range []bool{true, false} {
		items, count := tlRange(tb, s, key, 0, 1000, desc)
		if got, want := itemsString(items), itemsString(tm.sorted(desc)); got != want || count != int64(len(tm.m)) {
			tb.Fatalf("%s: range desc=%t = [%s] count %d; want [%s] count %d", what, desc, got, count, want, len(tm.m))
		}
	}
	wantCount(tb, s, key, int64(len(tm.m)))
}
