package counter

import (
	"context"
	"database/sql"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cellar-db/cellar"
	"github.com/cellar-db/cellar/internal/counter/countertest"
	"github.com/cellar-db/cellar/internal/dbtest"
	"github.com/cellar-db/cellar/internal/sqlstore"
)

// twoNodes is a CounterNode over two in-memory nodes, as shard.Store is
// over storage nodes: keys starting with "a" are on node a, the others on
// node b. A flush that one node applies and the other fails is a
// *cellar.PartialApplyError, as shard.Store reports it.
type twoNodes struct {
	a, b  *countertest.Node
	moved sync.Map // keys moved to node b (their shard remapped), to true
}

func (n *twoNodes) CounterNodeName(key string) string {
	if _, moved := n.moved.Load(key); !moved && strings.HasPrefix(key, "a") {
		return "a"
	}
	return "b"
}

func (n *twoNodes) node(name string) *countertest.Node {
	if name == "a" {
		return n.a
	}
	return n.b
}

func (n *twoNodes) ApplyCounterDeltas(ctx context.Context, id string, deltas map[string]int64) error {
	parts := map[string]map[string]int64{}
	for k, d := range deltas {
		name := n.CounterNodeName(k)
		if parts[name] == nil {
			parts[name] = map[string]int64{}
		}
		parts[name][k] = d
	}
	errs := map[string]error{}
	for name, part := range parts {
		if err := n.node(name).ApplyCounterDeltas(ctx, id, part); err != nil {
			errs[name] = err
		}
	}
	if len(errs) == 0 {
		return nil
	}
	var first error
	pe := &cellar.PartialApplyError{}
	for name, err := range errs {
		first = err
		pe.Nodes = append(pe.Nodes, name)
		for k := range parts[name] {
			pe.Unapplied = append(pe.Unapplied, k)
		}
	}
	if len(errs) == len(parts) {
		return first
	}
	pe.Err = first
	return pe
}

func (n *twoNodes) Counters(ctx context.Context, keys []string) (map[string]int64, error) {
	out := map[string]int64{}
	var failed error
	for _, k := range keys {
		vals, err := n.node(n.CounterNodeName(k)).Counters(ctx, []string{k})
		if err != nil {
			failed = err
			continue
		}
		out[k] = vals[k]
	}
	return out, failed
}

// journalRows counts the rows of a journal table, read from its file
// while the journal is closed or crashed.
func journalRows(t *testing.T, dir, query string, args ...any) int {
	t.Helper()
	db, err := sql.Open("sqlite", "file:"+dir+"/counters.journal?mode=ro")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var n int
	if err := db.QueryRow(query, args...).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// A flush that node b reports failed after applying it (its answer lost)
// is carried under its own ID: retried, b skips it, and the key's value is
// neither lost nor counted twice, before and after a crash.
func TestJournalCarriedFlushAppliedOnce(t *testing.T) {
	for _, crash := range []bool{false, true} {
		name := "running"
		if crash {
			name = "after a crash"
		}
		t.Run(name, func(t *testing.T) {
			n := &twoNodes{a: countertest.New(), b: countertest.New()}
			var mu sync.Mutex
			lost := 1
			n.b.SetFault(lostAck(&lost, &mu))
			dir := t.TempDir()
			j := openJournal(t, dir, n, testOptions(newFakeClock()))
			incr(t, j, "a1", 1, 1)
			incr(t, j, "b1", 1, 1)
			if err := j.Flush(context.Background()); err == nil {
				t.Fatal("Flush with b's answer lost: no error")
			}
			if got := n.a.Value("a1"); got != 1 {
				t.Fatalf("a1 on node a = %d after the partial flush; want 1", got)
			}
			wantCounter(t, j, "b1", 1)
			if crash {
				j.crash()
				j = openJournal(t, dir, n, testOptions(newFakeClock())) // retries the carried flush at once
				wantCounter(t, j, "b1", 1)
			} else {
				incr(t, j, "b1", 5, 6)
				if err := j.Flush(context.Background()); err != nil {
					t.Fatalf("Flush with b back: %v", err)
				}
			}
			if err := j.Flush(context.Background()); err != nil {
				t.Fatalf("Flush: %v", err)
			}
			want := int64(1)
			if !crash {
				want = 6
			}
			wantCounter(t, j, "b1", want)
			if got := n.b.Value("b1"); got != want {
				t.Errorf("b1 on node b = %d; want %d", got, want)
			}
			if _, _, dup := n.b.Applied(); dup != 1 {
				t.Errorf("node b skipped %d flushes as applied; want 1 (the carried flush, under its own ID)", dup)
			}
		})
	}
}

// pgVia opens the PostgreSQL node of database dsn through a new proxy,
// which a test stops to take the node away.
func pgVia(t *testing.T, dsn string) (*dbtest.Proxy, *sqlstore.Store) {
	u, err := url.Parse(dsn)
	if err != nil {
		t.Fatal(err)
	}
	p := dbtest.NewProxy(t, u.Host)
	pu := *u
	pu.Host = p.Addr()
	return p, openPostgres(t, pu.String())
}

// With the PostgreSQL node down, the journal goes on flushing the counters
// of the SQLite and MariaDB nodes (before, the flush that failed on one
// node held back every newer flush), keeps the down node's deltas across a
// crash, and applies them exactly once when the node is back.
func TestJournalNodeDownOthersKeepFlushing(t *testing.T) {
	lite, my, pgDSN, proxy, node, opts := pgBehindProxy(t)
	dir := t.TempDir()
	j := openJournal(t, dir, node, opts)
	kl, kp, km := nodeKey("lite", "nd"), nodeKey("pg", "nd"), nodeKey("my", "nd")
	ctx := context.Background()
	for _, k := range []string{kl, kp, km} {
		incr(t, j, k, 1, 1)
	}
	proxy.Stop()
	durable := func(s *sqlstore.Store, k string) int64 { t.Helper(); return durableOn(t, s, k) }
	for round, want := range []int64{1, 11, 121} {
		if err := j.Flush(ctx); err == nil {
			t.Fatalf("round %d: Flush with pg down: no error", round)
		}
		if got, got2 := durable(lite, kl), durable(my, km); got != want || got2 != want {
			t.Fatalf("round %d with pg down: %s = %d on sqlite, %s = %d on mariadb; want %d on both", round, kl, got, km, got2, want)
		}
		for _, k := range []string{kl, kp, km} {
			wantCounter(t, j, k, want)
			incr(t, j, k, 10*want, 11*want)
		}
	}
	// Everything buffered for kp is in the journal: its first flush
	// carried, its later increments held back as journal entries.
	j.crash()
	if n := journalRows(t, dir, "SELECT count(*) FROM carried WHERE key = ?", kp); n != 1 {
		t.Errorf("carried rows of %s: %d; want 1", kp, n)
	}
	if n := journalRows(t, dir, "SELECT count(*) FROM incr WHERE key <> ?", kp); n != 2 {
		t.Errorf("journal entries of the up nodes' keys: %d; want 2 (the last round's increments)", n)
	}
	j = openJournal(t, dir, node, opts)
	short, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
	_, err := j.Counter(short, kp)
	cancel()
	wantCode(t, "the down node's carried key after a restart", err, cellar.EUNAVAILABLE)

	_, pg2 := pgVia(t, pgDSN)
	node.set(newShardStore(t, lite, pg2, my, 2*time.Second))
	if err := j.Flush(ctx); err != nil {
		t.Fatalf("Flush with pg back: %v", err)
	}
	for _, c := range []struct {
		s *sqlstore.Store
		k string
	}{{lite, kl}, {pg2, kp}, {my, km}} {
		if got := durable(c.s, c.k); got != 1331 {
			t.Errorf("%s = %d on its node; want 1331", c.k, got)
		}
		wantCounter(t, j, c.k, 1331)
	}
	j.Close()
	for _, table := range []string{"incr", "carried", "held", "flushes"} {
		if n := journalRows(t, dir, "SELECT count(*) FROM "+table); n != 0 {
			t.Errorf("journal table %s holds %d rows after everything was flushed; want 0", table, n)
		}
	}
}

// A flush whose keys are all on the node that is down fails whole (no node
// applied any of it): it is carried all the same, so that the up node's
// newer increments are flushed while the other stays down.
func TestJournalFlightOfTheDownNodeOnly(t *testing.T) {
	n := &twoNodes{a: countertest.New(), b: countertest.New()}
	var mu sync.Mutex
	down := false
	n.b.SetFault(downFault(&down, &mu))
	j := openJournal(t, t.TempDir(), n, testOptions(newFakeClock()))
	ctx := context.Background()
	incr(t, j, "b1", 1, 1) // loads b1 while b is up
	mu.Lock()
	down = true
	mu.Unlock()
	if err := j.Flush(ctx); err == nil {
		t.Fatal("Flush with b down: no error")
	}
	incr(t, j, "a1", 1, 1)
	if err := j.Flush(ctx); err == nil {
		t.Fatal("Flush with b down: no error")
	}
	if got := n.a.Value("a1"); got != 1 {
		t.Fatalf("a1 on node a = %d with only node b down; want 1", got)
	}
	wantCounter(t, j, "b1", 1)
	mu.Lock()
	down = false
	mu.Unlock()
	if err := j.Flush(ctx); err != nil {
		t.Fatalf("Flush with b back: %v", err)
	}
	if got := n.b.Value("b1"); got != 1 {
		t.Errorf("b1 on node b = %d; want 1", got)
	}
}

// While a node is down, its keys' journal entries are summed at each
// round into one per key: the journal grows by the down node's keys, not
// by every commit of their increments, and what it holds replays exactly
// after a crash and reaches the node once it is back. This holds whether
// or not the other node's counters are busy: with only the down node's
// busy, no flush ran to sum them, and the journal grew by every commit.
// (Review of stop 19.)
func TestJournalHeldEntriesCompacted(t *testing.T) {
	for _, others := range []bool{true, false} {
		t.Run(map[bool]string{true: "others busy", false: "only the down node's counters busy"}[others], func(t *testing.T) {
			testJournalHeldEntriesCompacted(t, others)
		})
	}
}

func testJournalHeldEntriesCompacted(t *testing.T, others bool) {
	n := &twoNodes{a: countertest.New(), b: countertest.New()}
	var mu sync.Mutex
	down := false
	n.b.SetFault(downFault(&down, &mu))
	dir := t.TempDir()
	opts := testOptions(newFakeClock())
	j := openJournal(t, dir, n, opts)
	ctx := context.Background()
	incr(t, j, "b1", 1, 1) // loads b1 and b2 while b is up
	incr(t, j, "b2", -1, -1)
	mu.Lock()
	down = true
	mu.Unlock()
	const rounds, commits = 10, 5
	want1, want2, wantA := int64(1), int64(-1), int64(0)
	for range rounds {
		if err := j.Flush(ctx); err == nil {
			t.Fatal("Flush with b down: no error")
		}
		for range commits {
			want1 += 3
			incr(t, j, "b1", 3, want1)
			want2 -= 2
			incr(t, j, "b2", -2, want2)
			if others {
				wantA++
				incr(t, j, "a1", 1, wantA)
			}
		}
	}
	if err := j.Flush(ctx); err == nil {
		t.Fatal("Flush with b down: no error")
	}
	j.crash()
	// Per key of b: the entry the rounds were summed into. The first
	// increments are in the carried flush; a's are flushed.
	for _, k := range []string{"b1", "b2"} {
		if got := journalRows(t, dir, "SELECT count(*) FROM incr WHERE key = ?", k); got != 1 {
			t.Errorf("journal entries of %s after %d rounds of %d commits with its node down: %d; want 1", k, rounds, commits, got)
		}
	}
	if got := journalRows(t, dir, "SELECT count(*) FROM incr WHERE key = 'a1'"); got != 0 {
		t.Errorf("journal entries of a1, on the node that is up: %d; want 0", got)
	}
	j = openJournal(t, dir, n, opts)
	mu.Lock()
	down = false
	mu.Unlock()
	if err := j.Flush(ctx); err != nil {
		t.Fatalf("Flush with b back: %v", err)
	}
	for k, want := range map[string]int64{"b1": want1, "b2": want2} {
		wantCounter(t, j, k, want)
		if got := n.b.Value(k); got != want {
			t.Errorf("%s on node b = %d; want %d", k, got, want)
		}
	}
	if got := n.a.Value("a1"); got != wantA {
		t.Errorf("a1 on node a = %d; want %d", got, wantA)
	}
}
