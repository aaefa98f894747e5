package counter

import (
	"context"
	"database/sql"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cellar-db/cellar"
	"github.com/cellar-db/cellar/internal/counter/countertest"
)

func TestJournalIncrAndRead(t *testing.T) {
	node := countertest.New()
	clock := newFakeClock()
	j := openJournal(t, t.TempDir(), node, testOptions(clock))

	wantCounter(t, j, "never", 0)
	incr(t, j, "a", 1, 1)
	incr(t, j, "a", 41, 42)
	incr(t, j, "a", -50, -8)
	incr(t, j, "b", 7, 7)
	wantCounter(t, j, "a", -8)

	// Reads are exact before, during and after a flush.
	clock.Advance(t, time.Second)
	if got := node.Value("a"); got != -8 {
		t.Errorf("node value of a after a flush = %d; want -8", got)
	}
	incr(t, j, "a", 10, 2)
	wantCounter(t, j, "a", 2)
	res := j.BatchCounters(context.Background(), []string{"a", "b", "never", "", "b"})
	want := []cellar.CounterResult{{Key: "a", Value: 2}, {Key: "b", Value: 7}, {Key: "never"}, {Key: ""}, {Key: "b", Value: 7}}
	for i, r := range res {
		if r.Key != want[i].Key || r.Value != want[i].Value || (r.Err != nil) != (i == 3) {
			t.Errorf("BatchCounters[%d] = %+v; want %+v", i, r, want[i])
		}
	}
	wantCode(t, "BatchCounters of an empty key", res[3].Err, cellar.EINVALID)
	_, err := j.Incr(context.Background(), "bad\x01key", 1)
	wantCode(t, "Incr of a key with a control character", err, cellar.EINVALID)

	// The node's value changes only through flushes: another writer's
	// change is seen once the key has gone idle for a flush.
	clock.Advance(t, time.Second)
	node.Set("b", 100)
	wantCounter(t, j, "b", 100)
}

// TestJournalOneStatementPerKey: however many increments, a flush sends one
// delta per key.
func TestJournalOneStatementPerKey(t *testing.T) {
	node := countertest.New()
	clock := newFakeClock()
	j := openJournal(t, t.TempDir(), node, testOptions(clock))
	const workers, each = 32, 50
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < each; i++ {
				if _, err := j.Incr(context.Background(), fmt.Sprintf("k%d", i%3), 1); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	clock.Advance(t, time.Second)
	flushes, statements, _ := node.Applied()
	if flushes != 1 || statements != 3 {
		t.Errorf("node applied %d flushes with %d statements; want 1 flush with 3 (one per key)", flushes, statements)
	}
	st := j.Stats()
	if st.Increments != workers*each || st.Flushes != 1 || st.LastFlushKeys != 3 || st.Statements != 3 {
		t.Errorf("Stats = %+v; want %d increments, 1 flush of 3 keys", st, workers*each)
	}
	total := node.Value("k0") + node.Value("k1") + node.Value("k2")
	if total != workers*each {
		t.Errorf("node holds %d increments; want %d", total, workers*each)
	}
}

// TestJournalConcurrentFlushes races increments, reads and flushes; every
// read must be exact at its moment, so never less than the increments
// acknowledged before it started.
func TestJournalConcurrentFlushes(t *testing.T) {
	node := countertest.New()
	clock := newFakeClock()
	j := openJournal(t, t.TempDir(), node, testOptions(clock))
	ctx := context.Background()
	var acked sync.WaitGroup
	var mu sync.Mutex // protects done
	done := 0
	stop := make(chan struct{})
	flusherDone := make(chan struct{})
	go func() {
		defer close(flusherDone)
		for {
			select {
			case <-stop:
				return
			default:
			}
			if err := j.Flush(ctx); err != nil {
				t.Error(err)
				return
			}
		}
	}()
	for w := 0; w < 16; w++ {
		acked.Add(1)
		go func() {
			defer acked.Done()
			for i := 0; i < 100; i++ {
				mu.Lock()
				before := done
				mu.Unlock()
				if _, err := j.Incr(ctx, "hot", 1); err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				done++
				mu.Unlock()
				v, err := j.Counter(ctx, "hot")
				if err != nil || v < int64(before)+1 {
					t.Errorf("Counter = %d, %v after %d acknowledged increments", v, err, before+1)
					return
				}
			}
		}()
	}
	acked.Wait()
	close(stop)
	<-flusherDone
	if err := j.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	wantCounter(t, j, "hot", 1600)
	if got := node.Value("hot"); got != 1600 {
		t.Errorf("node value = %d; want 1600", got)
	}
	if _, _, dup := node.Applied(); dup != 0 {
		t.Errorf("node skipped %d flushes as duplicates; want 0", dup)
	}
}

func TestJournalOverflowAtIncr(t *testing.T) {
	node := countertest.New()
	node.Set("max", math.MaxInt64-2)
	node.Set("min", math.MinInt64+2)
	clock := newFakeClock()
	j := openJournal(t, t.TempDir(), node, testOptions(clock))

	incr(t, j, "max", 1, math.MaxInt64-1)
	_, err := j.Incr(context.Background(), "max", 2)
	wantCode(t, "Incr past MaxInt64", err, cellar.EINVALID)
	incr(t, j, "max", 1, math.MaxInt64)
	incr(t, j, "min", -2, math.MinInt64)
	_, err = j.Incr(context.Background(), "min", -1)
	wantCode(t, "Incr past MinInt64", err, cellar.EINVALID)
	_, err = j.Incr(context.Background(), "fresh", math.MinInt64)
	if err != nil {
		t.Fatalf("Incr(fresh, MinInt64): %v", err)
	}
	_, err = j.Incr(context.Background(), "fresh", -1)
	wantCode(t, "Incr past MinInt64 in the buffer", err, cellar.EINVALID)

	// Refused increments leave nothing behind.
	clock.Advance(t, time.Second)
	if got := node.Value("max"); got != math.MaxInt64 {
		t.Errorf("node value of max = %d; want MaxInt64", got)
	}
	if got := node.Value("min"); got != math.MinInt64 {
		t.Errorf("node value of min = %d; want MinInt64", got)
	}
}

// TestJournalOverflowAtFlush: a delta that the node refuses (another
// writer moved the counter behind the buffer's back) is set aside, the rest
// of the flush is applied, and later flushes go on.
func TestJournalOverflowAtFlush(t *testing.T) {
	node := countertest.New()
	clock := newFakeClock()
	dir := t.TempDir()
	j := openJournal(t, dir, node, testOptions(clock))
	incr(t, j, "x", 10, 10)
	incr(t, j, "y", 5, 5)
	node.Set("x", math.MaxInt64-3)
	clock.Advance(t, time.Second)
	if got := node.Value("y"); got != 5 {
		t.Errorf("node value of y = %d; want 5", got)
	}
	if got := node.Value("x"); got != math.MaxInt64-3 {
		t.Errorf("node value of x = %d; want unchanged MaxInt64-3", got)
	}
	if st := j.Stats(); st.Rejected != 1 || st.Flushes != 1 {
		t.Errorf("Stats = %+v; want 1 rejected delta and 1 flush", st)
	}
	// Not wedged: the next flush goes through.
	incr(t, j, "y", 1, 6)
	incr(t, j, "x", 3, math.MaxInt64)
	clock.Advance(t, time.Second)
	if got := node.Value("x"); got != math.MaxInt64 {
		t.Errorf("node value of x = %d; want MaxInt64", got)
	}
	if got := node.Value("y"); got != 6 {
		t.Errorf("node value of y = %d; want 6", got)
	}
	j.Close()
	db, err := sql.Open("sqlite", filepath.Join(dir, "counters.journal"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var key string
	var delta int64
	if err := db.QueryRow("SELECT key, delta FROM rejected").Scan(&key, &delta); err != nil || key != "x" || delta != 10 {
		t.Errorf("rejected table holds %q %d, %v; want x 10", key, delta, err)
	}
}

// TestJournalNodeDown: while the node is down, increments are still
// acknowledged and reads are exact; the failed flush is retried, and
// applied once, when the node is back. A confirmation lost after the node
// applied a flush does not apply it twice.
func TestJournalNodeDown(t *testing.T) {
	node := countertest.New()
	clock := newFakeClock()
	j := openJournal(t, t.TempDir(), node, testOptions(clock))
	var mu sync.Mutex
	down := false
	node.SetFault(downFault(&down, &mu))
	incr(t, j, "k", 3, 3)

	mu.Lock()
	down = true
	mu.Unlock()
	clock.Advance(t, time.Second)
	incr(t, j, "k", 4, 7)
	wantCounter(t, j, "k", 7)
	clock.Advance(t, time.Second)
	if st := j.Stats(); st.FlushErrors < 2 || st.Flushes != 0 {
		t.Errorf("Stats = %+v; want failed flushes and none applied", st)
	}
	_, err := j.Counter(context.Background(), "other")
	wantCode(t, "Counter of an unbuffered key while the node is down", err, cellar.EUNAVAILABLE)

	mu.Lock()
	down = false
	mu.Unlock()
	clock.Advance(t, time.Second) // applies the stuck flush (3)
	clock.Advance(t, time.Second) // then the rest (4)
	if got := node.Value("k"); got != 7 {
		t.Errorf("node value = %d; want 7", got)
	}

	lost := 1
	node.SetFault(lostAck(&lost, &mu))
	incr(t, j, "k", 5, 12)
	clock.Advance(t, time.Second)
	wantCounter(t, j, "k", 12)
	clock.Advance(t, time.Second)
	if got := node.Value("k"); got != 12 {
		t.Errorf("node value after a lost confirmation = %d; want 12", got)
	}
	if _, _, dup := node.Applied(); dup != 1 {
		t.Errorf("node saw %d duplicate flushes; want 1 (the retry)", dup)
	}
	wantCounter(t, j, "k", 12)
}

// TestJournalReplay: increments acknowledged before a crash are replayed;
// a flush the node applied whose confirmation was lost is not applied
// again after the restart.
func TestJournalReplay(t *testing.T) {
	node := countertest.New()
	dir := t.TempDir()
	clock := newFakeClock()
	j := openJournal(t, dir, node, testOptions(clock))
	var mu sync.Mutex
	incr(t, j, "a", 1, 1)
	incr(t, j, "b", 2, 2)
	clock.Advance(t, time.Second) // applied: a=1, b=2
	incr(t, j, "a", 10, 11)
	lost := 1
	node.SetFault(lostAck(&lost, &mu))
	if err := j.Flush(context.Background()); err == nil { // node applies a+10; the journal does not know
		t.Fatal("Flush with a lost confirmation succeeded")
	}
	incr(t, j, "a", 100, 111)
	incr(t, j, "c", 5, 5)
	j.crash()
	if got := node.Value("a"); got != 11 {
		t.Fatalf("node value of a before restart = %d; want 11", got)
	}

	j2 := openJournal(t, dir, node, testOptions(newFakeClock()))
	wantCounter(t, j2, "a", 111)
	wantCounter(t, j2, "b", 2)
	wantCounter(t, j2, "c", 5)
	if err := j2.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	if a, c := node.Value("a"), node.Value("c"); a != 111 || c != 5 {
		t.Errorf("node values after replay: a=%d c=%d; want 111 and 5", a, c)
	}
	if _, _, dup := node.Applied(); dup != 1 {
		t.Errorf("node saw %d duplicate flushes; want 1 (the replayed intent)", dup)
	}
}

// TestJournalReplayNodeDown: after a restart with a flush in doubt and the
// node down, the counters of that flush wait for it (and fail when their
// deadline passes) rather than guess; the others are served.
func TestJournalReplayNodeDown(t *testing.T) {
	node := countertest.New()
	dir := t.TempDir()
	clock := newFakeClock()
	j := openJournal(t, dir, node, testOptions(clock))
	var mu sync.Mutex
	down := false
	node.SetFault(downFault(&down, &mu))
	incr(t, j, "doubt", 1, 1)
	mu.Lock()
	down = true
	mu.Unlock()
	clock.Advance(t, time.Second) // intent written, apply failed
	// A counter whose durable value is unknown cannot be checked for
	// overflow: it is unavailable while the node is.
	_, err := j.Incr(context.Background(), "later", 2)
	wantCode(t, "Incr of a new key while the node is down", err, cellar.EUNAVAILABLE)
	incr(t, j, "doubt", 1, 2) // buffered: its durable value is known
	j.crash()

	clock2 := newFakeClock()
	j2 := openJournal(t, dir, node, testOptions(clock2))
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	_, err = j2.Counter(ctx, "doubt")
	cancel()
	wantCode(t, "Counter of a key in a flush in doubt", err, cellar.EUNAVAILABLE)

	mu.Lock()
	down = false
	mu.Unlock()
	incr(t, j2, "later", 2, 2)
	clock2.Advance(t, time.Second)
	wantCounter(t, j2, "doubt", 2)
	incr(t, j2, "doubt", 1, 3)
	clock2.Advance(t, time.Second)
	if d, l := node.Value("doubt"), node.Value("later"); d != 3 || l != 2 {
		t.Errorf("node values: doubt=%d later=%d; want 3 and 2", d, l)
	}
}

func TestJournalDeadline(t *testing.T) {
	node := countertest.New()
	j := openJournal(t, t.TempDir(), node, testOptions(newFakeClock()))
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := j.Incr(ctx, "k", 1)
	if cellar.ErrorCode(err) != cellar.EUNAVAILABLE {
		t.Fatalf("Incr with a cancelled context: %v; want unavailable", err)
	}
	wantCounter(t, j, "k", 0)
}

func TestJournalLocked(t *testing.T) {
	dir := t.TempDir()
	openJournal(t, dir, countertest.New(), testOptions(newFakeClock()))
	opts := testOptions(newFakeClock())
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	j2, err := OpenJournal(ctx, filepath.Join(dir, "counters.journal"), countertest.New(), opts)
	if err == nil {
		j2.Close()
		t.Fatal("a second OpenJournal of an open journal succeeded")
	}
	if !strings.Contains(err.Error(), "another process has it open") {
		t.Errorf("second OpenJournal: %v; want it to say the journal is open elsewhere", err)
	}
}

// A journal that already exists is locked as soon as it is opened, before
// any increment: a second process (a second `cellar serve` on the same
// data directory) is refused at its start. Before, it opened such a
// journal, and both processes' increments then failed busy.
func TestJournalLockedWhenReopened(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "counters.journal")
	first, err := OpenJournal(context.Background(), path, countertest.New(), testOptions(newFakeClock()))
	if err != nil {
		t.Fatal(err)
	}
	first.Close()
	openJournal(t, dir, countertest.New(), testOptions(newFakeClock())) // the journal exists: no schema to write
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	j2, err := OpenJournal(ctx, path, countertest.New(), testOptions(newFakeClock()))
	if err == nil {
		j2.Close()
		t.Fatal("a second OpenJournal of a reopened journal succeeded")
	}
	if !strings.Contains(err.Error(), "another process has it open") {
		t.Errorf("second OpenJournal: %v; want it to say the journal is open elsewhere", err)
	}
}

func TestSum(t *testing.T) {
	tests := []struct {
		in   []int64
		want int64
		ok   bool
	}{
		{nil, 0, true},
		{[]int64{1, 2, 3}, 6, true},
		{[]int64{math.MaxInt64, 1}, 0, false},
		{[]int64{math.MaxInt64, 1, -1}, math.MaxInt64, true},
		{[]int64{math.MinInt64, -1}, 0, false},
		{[]int64{math.MinInt64, math.MinInt64, math.MaxInt64, math.MaxInt64, 1}, -1, true},
		{[]int64{math.MinInt64, -1, 1}, math.MinInt64, true},
	}
	for _, tt := range tests {
		got, ok := sum(tt.in...)
		if got != tt.want || ok != tt.ok {
			t.Errorf("sum(%v) = %d, %t; want %d, %t", tt.in, got, ok, tt.want, tt.ok)
		}
	}
}

// holdingNode holds an apply once it took effect, until released: the
// window in which the node has a flush and the journal does not know yet.
type holdingNode struct {
	*countertest.Node
	applied, release chan struct{}
	once             sync.Once // only the first apply is held
}

func (n *holdingNode) ApplyCounterDeltas(ctx context.Context, flushID string, deltas map[string]int64) error {
	err := n.Node.ApplyCounterDeltas(ctx, flushID, deltas)
	n.once.Do(func() {
		close(n.applied)
		<-n.release
	})
	return err
}

// TestJournalReplayReadDuringFlush: after a restart, the replayed
// increments' durable values are not known yet. A read or an increment
// of such a key while their first flush is on the node, applied but not
// confirmed, must not count the flight on top of a node value that
// already holds it.
func TestJournalReplayReadDuringFlush(t *testing.T) {
	for _, op := range []string{"read", "incr"} {
		t.Run(op, func(t *testing.T) {
			dir := t.TempDir()
			inner := countertest.New()
			j := openJournal(t, dir, inner, testOptions(newFakeClock()))
			incr(t, j, "k", 1000, 1000)
			j.crash() // no flush: the increment is only in the journal

			node := &holdingNode{Node: inner, applied: make(chan struct{}), release: make(chan struct{})}
			opts := testOptions(newFakeClock())
			waiting := make(chan struct{})
			var once sync.Once
			opts.loadWaits = func() { once.Do(func() { close(waiting) }) }
			j2 := openJournal(t, dir, node, opts)
			flushed := make(chan error, 1)
			go func() { flushed <- j2.Flush(context.Background()) }()
			<-node.applied
			got := make(chan int64, 1)
			go func() {
				var v int64
				var err error
				if op == "read" {
					v, err = j2.Counter(context.Background(), "k")
				} else {
					v, err = j2.Incr(context.Background(), "k", 1)
				}
				if err != nil {
					t.Error(err)
				}
				got <- v
			}()
			want := map[string]int64{"read": 1000, "incr": 1001}[op]
			// It must wait for the flush; answering while the flush is
			// held is the defect (it counted the flight twice).
			select {
			case <-waiting:
			case v := <-got:
				t.Errorf("%s during the first flush after a restart answered %d without waiting for it; want %d after it", op, v, want)
				got <- v
			}
			close(node.release)
			if err := <-flushed; err != nil {
				t.Fatal(err)
			}
			if v := <-got; v != want {
				t.Errorf("%s during the first flush after a restart = %d; want %d", op, v, want)
			}
			wantCounter(t, j2, "k", want)
			if err := j2.Flush(context.Background()); err != nil {
				t.Fatal(err)
			}
			if v := inner.Value("k"); v != want {
				t.Errorf("node value %d; want %d", v, want)
			}
		})
	}
}

// A journal whose path holds '#' (or '?', '%') is opened at that path:
// before, SQLite cut it at the '#', and the journals of data directories
// a#1 and a#2 were one file, a.
func TestJournalPathWithURICharacters(t *testing.T) {
	base := t.TempDir()
	p1 := filepath.Join(base, "a#1", "counters.journal")
	p2 := filepath.Join(base, "a#2", "counters.journal")
	j1, err := OpenJournal(context.Background(), p1, countertest.New(), testOptions(newFakeClock()))
	if err != nil {
		t.Fatal(err)
	}
	defer j1.Close()
	if _, err := os.Stat(p1); err != nil {
		t.Errorf("journal of data_dir a#1 not at %s: %v", p1, err)
	}
	if _, err := os.Stat(filepath.Join(base, "a")); err == nil {
		t.Errorf("a file %s was created (the journal path cut at '#')", filepath.Join(base, "a"))
	}
	j2, err := OpenJournal(context.Background(), p2, countertest.New(), testOptions(newFakeClock()))
	if err != nil {
		t.Errorf("journal of another data_dir, a#2: %v; want it opened", err)
	} else {
		j2.Close()
	}
}

// A journal path beginning with "//" (on POSIX the same file as with
// one '/') opens: its SQLite URI must not read the first segment as an
// authority. (Review of stop 18: "invalid uri authority".)
func TestJournalPathWithLeadingDoubleSlash(t *testing.T) {
	p := "/" + filepath.Join(t.TempDir(), "dbl", "counters.journal")
	j, err := OpenJournal(context.Background(), p, countertest.New(), testOptions(newFakeClock()))
	if err != nil {
		t.Fatalf("OpenJournal(%q): %v; want it opened (the same file as %q)", p, err, p[1:])
	}
	j.Close()
	if _, err := os.Stat(p); err != nil {
		t.Errorf("journal not at %s: %v", p, err)
	}
}
