package counter

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cellar-db/cellar"
	"github.com/cellar-db/cellar/client"
	"github.com/cellar-db/cellar/internal/bench/loadgen"
	"github.com/cellar-db/cellar/internal/counter/countertest"
	"github.com/cellar-db/cellar/internal/dbtest"
	cellarhttp "github.com/cellar-db/cellar/internal/http"
	"github.com/cellar-db/cellar/internal/redis"
	"github.com/cellar-db/cellar/internal/shard"
)

// TestHotCounterBenchmark measures one hot counter under 64 concurrent
// HTTP clients over a real loopback listener: increments per second with
// buffering (journal mode, Redis mode) against a naive PostgreSQL UPDATE
// per increment, in the same run, and the SQL statements per flush. The
// modes take turns in rounds (each mode's time split into that many
// windows), so that other work on the shared machine weighs on all of
// them alike; each mode has its own hot counter. The journal runs twice:
// with its default commit delay (journal) and without (nodelay). It is a harness, not a
// unit test: it runs only with CELLAR_COUNTER_BENCH=1.
//
//	CELLAR_COUNTER_BENCH=1 CELLAR_COUNTER_BENCH_SECONDS=10 CELLAR_COUNTER_BENCH_ROUNDS=5 \
//	CELLAR_TEST_POSTGRES_DSN=... CELLAR_TEST_REDIS_ADDR=... \
//	go test -run TestHotCounterBenchmark -v ./internal/counter
func TestHotCounterBenchmark(t *testing.T) {
	if os.Getenv("CELLAR_COUNTER_BENCH") == "" {
		t.Skip("set CELLAR_COUNTER_BENCH=1 to run the hot counter benchmark")
	}
	seconds, rounds := 10, 5
	if v, err := strconv.Atoi(os.Getenv("CELLAR_COUNTER_BENCH_SECONDS")); err == nil && v > 0 {
		seconds = v
	}
	if v, err := strconv.Atoi(os.Getenv("CELLAR_COUNTER_BENCH_ROUNDS")); err == nil && v > 0 {
		rounds = v
	}
	dur := time.Duration(seconds) * time.Second
	window := dur / time.Duration(rounds)
	const clients = 64
	ctx := context.Background()

	pgDSN := dbtest.Postgres(t)
	pg := openPostgres(t, pgDSN)
	store, err := shard.New(&cellar.ShardMap{Version: 1, ShardCount: nodeShards, Assignments: []cellar.Assignment{
		{Node: "pg", ShardRange: cellar.ShardRange{First: 0, Last: nodeShards - 1}},
	}}, []*shard.Node{{Name: "pg", Driver: "postgres", Store: pg}}, shard.Options{})
	if err != nil {
		t.Fatal(err)
	}

	// mode is one way of counting, with its own hot counter.
	type mode struct {
		name  string
		cs    cellar.CounterStore
		key   string
		table string                      // the PostgreSQL table it writes, if any
		flush func(context.Context) error // nil for the unbuffered ones
		stats func() Stats

		base     int64     // the counter's value before the run
		before   Stats     // its buffer's stats before the run
		n        [3]int64  // acknowledged: over HTTP, via the Go client, direct
		warm     int64     // drive's warm-up increments
		sent     int64     // increments that failed or were cut off: they may count
		perRound []float64 // HTTP increments per second in each round
		st       Stats     // its buffer's work during the run
	}
	const (
		overHTTP = iota
		viaClient
		direct
	)
	naive := openNaive(t, pgDSN)
	j, err := OpenJournal(ctx, t.TempDir()+"/counters.journal", store, Options{Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	defer j.Close()
	// The same journal without its commit delay, to show what it buys.
	j0, err := OpenJournal(ctx, t.TempDir()+"/counters-nodelay.journal", store, Options{Logger: quietLogger(), CommitDelay: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer j0.Close()
	rs := dbtest.Redis(t)
	cluster, err := redis.Open(redis.Config{Shards: nodeShards, Nodes: []redis.Node{{Name: "r1", Addr: rs.Addr()}},
		Map: []cellar.Assignment{{Node: "r1", ShardRange: cellar.ShardRange{First: 0, Last: nodeShards - 1}}}})
	if err != nil {
		t.Fatal(err)
	}
	defer cluster.Close()
	rb, err := OpenRedis(ctx, cluster, store, Options{Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	defer rb.Close()
	modes := []*mode{
		{name: "naive", cs: naive, key: "hot", table: "naive_counters"},
		// The ceiling of this harness: the HTTP round trip over a
		// counter in memory.
		{name: "memory", cs: &memCounters{}, key: "hot"},
		{name: "journal", cs: j, key: "hot-journal", table: "counters", flush: j.Flush, stats: j.Stats},
		{name: "nodelay", cs: j0, key: "hot-nodelay", table: "counters", flush: j0.Flush, stats: j0.Stats},
		{name: "redis", cs: rb, key: "hot-redis", table: "counters", flush: rb.Flush, stats: rb.Stats},
	}
	rowsBefore := map[string]int64{}
	for _, m := range modes {
		if m.table != "" {
			rowsBefore[m.table] = stableTupleWrites(t, pg.DB(), m.table)
		}
		if m.base, err = m.cs.Counter(ctx, m.key); err != nil {
			t.Fatal(err)
		}
		if m.stats != nil {
			m.before = m.stats()
		}
	}
	rate := func(m *mode, side int) float64 { return float64(m.n[side]) / dur.Seconds() }

	for r := 0; r < rounds; r++ {
		for _, m := range modes {
			n, errs := drive(t, store, m.cs, clients, m.key, window, false)
			m.n[overHTTP] += n
			m.warm++ // drive's warm-up increment
			m.sent += errs
			m.perRound = append(m.perRound, float64(n)/window.Seconds())
			t.Logf("round %d %-8s over HTTP: %9.0f increments/s (%d errors)", r+1, m.name, float64(n)/window.Seconds(), errs)
			n, errs = drive(t, store, m.cs, clients, m.key, window, true)
			m.n[viaClient] += n
			m.warm++
			m.sent += errs
			t.Logf("round %d %-8s Go client: %9.0f increments/s (%d errors)", r+1, m.name, float64(n)/window.Seconds(), errs)
			if m.table != "" {
				n, errs, cut := driveDirect(t, m.cs, clients, m.key, window)
				m.n[direct] += n
				m.sent += errs + cut
				t.Logf("round %d %-8s direct:    %9.0f increments/s (%d errors, %d cut off at the end)", r+1, m.name, float64(n)/window.Seconds(), errs, cut)
			}
		}
	}

	rowsWant := map[string]int64{}
	for _, m := range modes {
		total := m.warm + m.n[overHTTP] + m.n[viaClient] + m.n[direct]
		if m.flush == nil {
			if m.table != "" {
				rowsWant[m.table] += total
			}
			continue
		}
		if err := m.flush(ctx); err != nil {
			t.Fatalf("%s: flush: %v", m.name, err)
		}
		after := m.stats()
		m.st = Stats{Increments: after.Increments - m.before.Increments, Commits: after.Commits - m.before.Commits,
			Flushes: after.Flushes - m.before.Flushes, Statements: after.Statements - m.before.Statements, MaxFlushKeys: after.MaxFlushKeys}
		rowsWant[m.table] += m.st.Statements
		// A failed increment may have been applied.
		v, err := m.cs.Counter(ctx, m.key)
		if err != nil || v < m.base+total || v > m.base+total+m.sent {
			t.Errorf("%s: counter = %d, %v; want %d..%d", m.name, v, err, m.base+total, m.base+total+m.sent)
		}
		vals, err := store.Counters(ctx, []string{m.key})
		if err != nil {
			t.Fatal(err)
		}
		if vals[m.key] != v {
			t.Errorf("%s: node value %d after the last flush; want %d", m.name, vals[m.key], v)
		}
		if m.st.MaxFlushKeys != 1 {
			t.Errorf("%s: a flush of one hot counter sent %d statements; want 1 (one per distinct key)", m.name, m.st.MaxFlushKeys)
		}
	}
	rows := map[string]int64{}
	for table, want := range rowsWant {
		rows[table] = settleTupleWrites(t, pg.DB(), table, rowsBefore[table], want)
	}
	if rows["counters"] != rowsWant["counters"] {
		t.Errorf("PostgreSQL wrote %d counter rows; want %d, one per flush statement", rows["counters"], rowsWant["counters"])
	}
	spread := []string{spreadLine(t, "journal", j, j.Flush, j.Stats), spreadLine(t, "redis", rb, rb.Flush, rb.Stats)}

	naiveMode := modes[0]
	fmt.Printf("\nhot counter, %d concurrent clients, %v per mode and side in %d rounds of %v, flush interval %v\n", clients, dur, rounds, window, DefaultFlushInterval)
	fmt.Printf("HTTP: the lean load generator (internal/bench/loadgen); Go client: the same server through client.Incr\n")
	fmt.Printf("%-8s %13s %8s %21s %16s %8s %13s %8s %8s %11s %16s\n", "mode", "HTTP incr/s", "vs naive", "per round vs naive", "Go client incr/s", "vs naive",
		"direct incr/s", "vs naive", "flushes", "statements", "max stmts/flush")
	for _, m := range modes {
		d, dratio, flushes, stmts, per := "-", "-", "-", "-", "-"
		if m.n[direct] > 0 {
			d, dratio = fmt.Sprintf("%.0f", rate(m, direct)), fmt.Sprintf("%.1fx", rate(m, direct)/rate(naiveMode, direct))
		}
		if m.flush != nil {
			flushes = strconv.FormatInt(m.st.Flushes, 10)
			stmts = strconv.FormatInt(m.st.Statements, 10)
			per = strconv.FormatInt(m.st.MaxFlushKeys, 10)
		}
		fmt.Printf("%-8s %13.0f %7.1fx %21s %16.0f %7.1fx %13s %8s %8s %11s %16s\n", m.name, rate(m, overHTTP), rate(m, overHTTP)/rate(naiveMode, overHTTP),
			roundRatios(m.perRound, naiveMode.perRound), rate(m, viaClient), rate(m, viaClient)/rate(naiveMode, viaClient), d, dratio, flushes, stmts, per)
	}
	for _, m := range modes {
		if m.st.Commits > 0 {
			fmt.Printf("%s: %d increments (all sides) in %d journal commits, %.1f per commit\n", m.name, m.st.Increments, m.st.Commits, float64(m.st.Increments)/float64(m.st.Commits))
		}
	}
	fmt.Printf("\nrows PostgreSQL wrote: naive_counters %d (one per naive increment: %d acknowledged, and up to %d failed or cut off at the end), counters %d (one per flush statement: %d)\n",
		rows["naive_counters"], rowsWant["naive_counters"], naiveMode.sent, rows["counters"], rowsWant["counters"])
	fmt.Printf("\n%d clients over %d counters, direct, %v:\n", clients, spreadKeys, spreadTime)
	for _, l := range spread {
		fmt.Println(l)
	}
}

// roundRatios summarizes a mode's rate against the naive one's, round by
// round: "median (min-max)".
func roundRatios(rates, naive []float64) string {
	r := make([]float64, len(rates))
	for i := range rates {
		r[i] = rates[i] / naive[i]
	}
	slices.Sort(r)
	med := r[len(r)/2]
	if len(r)%2 == 0 {
		med = (r[len(r)/2-1] + r[len(r)/2]) / 2
	}
	return fmt.Sprintf("%.1fx (%.1f-%.1f)", med, r[0], r[len(r)-1])
}

const (
	spreadKeys = 10
	spreadTime = 3 * time.Second
)

// spreadLine has clients increment spreadKeys counters for spreadTime,
// and checks that no flush sends more statements than there are
// counters. It returns a line for the report.
func spreadLine(tb testing.TB, name string, cs cellar.CounterStore, flush func(context.Context) error, stats func() Stats) string {
	tb.Helper()
	before := stats()
	ctx, cancel := context.WithTimeout(context.Background(), spreadTime)
	defer cancel()
	var n atomic.Int64
	var wg sync.WaitGroup
	for i := 0; i < 64; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for k := i; ctx.Err() == nil; k++ {
				if _, err := cs.Incr(ctx, fmt.Sprintf("spread-%d", k%spreadKeys), 1); err == nil {
					n.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	if err := flush(context.Background()); err != nil {
		tb.Fatal(err)
	}
	after := stats()
	flushes, stmts := after.Flushes-before.Flushes, after.Statements-before.Statements
	if after.MaxFlushKeys != spreadKeys {
		tb.Errorf("%s: the largest flush sent %d statements; want %d, one per counter", name, after.MaxFlushKeys, spreadKeys)
	}
	return fmt.Sprintf("%-8s %d increments, %d flushes, %d statements: %.1f statements per flush (at most %d)",
		name, n.Load(), flushes, stmts, float64(stmts)/float64(flushes), after.MaxFlushKeys)
}

// driveDirect runs clients that call cs.Incr in this process, without
// HTTP, for d. It returns the increments acknowledged, those that failed,
// and those cut off by the end of the run (which may have been applied).
func driveDirect(tb testing.TB, cs cellar.CounterStore, clients int, key string, d time.Duration) (ok, errs, cut int64) {
	var nOK, nErr, nCut atomic.Int64
	var once sync.Once
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	deadline, _ := ctx.Deadline()
	var wg sync.WaitGroup
	for i := 0; i < clients; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				_, err := cs.Incr(ctx, key, 1)
				switch {
				case err == nil:
					nOK.Add(1)
				case ctx.Err() != nil || !time.Now().Before(deadline):
					// A network deadline set from ctx can fire before
					// ctx reports it.
					nCut.Add(1)
				default:
					nErr.Add(1)
					once.Do(func() { tb.Logf("an increment failed: %v", err) })
				}
			}
		}()
	}
	wg.Wait()
	return nOK.Load(), nErr.Load(), nCut.Load()
}

// drive runs clients that increment key over HTTP for d, and returns the
// increments acknowledged (200 OK) and the failures. The server is the
// real net/http server with the real handler. The clients are the lean
// load generator's (internal/bench/loadgen: one keep-alive HTTP/1.1
// connection each, the request written as bytes, the response's status
// checked and its JSON not decoded, like wrk), so that the load generator
// takes little of the CPU the server needs; or, viaClient, the public Go
// client's Incr.
func drive(tb testing.TB, store cellar.Store, cs cellar.CounterStore, clients int, key string, d time.Duration, viaClient bool) (ok, errs int64) {
	tb.Helper()
	addr, stop := serveCounters(tb, store, cs)
	defer stop()
	transport := &http.Transport{MaxIdleConnsPerHost: 2 * clients}
	defer transport.CloseIdleConnections()
	cl := client.New("http://"+addr, client.WithHTTPClient(&http.Client{Transport: transport}))
	// Warm up the counter's durable value through the Go client.
	if _, err := cl.Incr(context.Background(), key, 1); err != nil {
		tb.Fatal(err)
	}
	req := loadgen.AppendRequest(nil, http.MethodPost, addr, "/v1/counters/"+key+"/incr", []byte(`{"by":1}`))
	var nOK, nErr atomic.Int64
	ctx, cancel := context.WithTimeout(context.Background(), d+30*time.Second)
	defer cancel()
	deadline := time.Now().Add(d)
	var wg sync.WaitGroup
	for i := 0; i < clients; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			conn := loadgen.NewConn(addr)
			defer conn.Close()
			for time.Now().Before(deadline) {
				if viaClient {
					if _, err := cl.Incr(ctx, key, 1); err != nil {
						nErr.Add(1)
						continue
					}
					nOK.Add(1)
					continue
				}
				status, body, err := conn.Do(ctx, req)
				if err != nil {
					tb.Error(err)
					return
				}
				if loadgen.CheckJSON(status, http.StatusOK, body) == nil {
					nOK.Add(1)
				} else {
					nErr.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	return nOK.Load(), nErr.Load()
}

// memCounters is one counter in memory, for the harness's own ceiling.
type memCounters struct{ v atomic.Int64 }

func (m *memCounters) Incr(_ context.Context, _ string, by int64) (int64, error) {
	return m.v.Add(by), nil
}

func (m *memCounters) Counter(context.Context, string) (int64, error) { return m.v.Load(), nil }

func (m *memCounters) BatchCounters(_ context.Context, keys []string) []cellar.CounterResult {
	res := make([]cellar.CounterResult, len(keys))
	for i, k := range keys {
		res[i] = cellar.CounterResult{Key: k, Value: m.v.Load()}
	}
	return res
}

func (m *memCounters) BatchIncr(ctx context.Context, incrs []cellar.CounterIncrement) []cellar.CounterResult {
	return batchIncr(ctx, incrs, m.Incr)
}

// naiveCounters is the baseline: one UPDATE ... SET v = v + 1 per
// increment, straight to PostgreSQL.
type naiveCounters struct{ db *sql.DB }

func openNaive(tb testing.TB, dsn string) *naiveCounters {
	tb.Helper()
	db, err := sql.Open("pgx", dsn)
	if err != nil {
		tb.Fatal(err)
	}
	db.SetMaxOpenConns(64)
	db.SetMaxIdleConns(64)
	tb.Cleanup(func() { db.Close() })
	if _, err := db.Exec("CREATE TABLE naive_counters (k TEXT PRIMARY KEY, v BIGINT NOT NULL); INSERT INTO naive_counters VALUES ('hot', 0)"); err != nil {
		tb.Fatal(err)
	}
	return &naiveCounters{db: db}
}

func (n *naiveCounters) Incr(ctx context.Context, key string, by int64) (int64, error) {
	var v int64
	err := n.db.QueryRowContext(ctx, "UPDATE naive_counters SET v = v + $2 WHERE k = $1 RETURNING v", key, by).Scan(&v)
	if err != nil {
		return 0, cellar.Unavailable(err, "naive increment")
	}
	return v, nil
}

func (n *naiveCounters) Counter(ctx context.Context, key string) (int64, error) {
	var v int64
	err := n.db.QueryRowContext(ctx, "SELECT v FROM naive_counters WHERE k = $1", key).Scan(&v)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, nil
	}
	return v, err
}

func (n *naiveCounters) BatchCounters(ctx context.Context, keys []string) []cellar.CounterResult {
	res := make([]cellar.CounterResult, len(keys))
	for i, k := range keys {
		res[i].Key = k
		res[i].Value, res[i].Err = n.Counter(ctx, k)
	}
	return res
}

func (n *naiveCounters) BatchIncr(ctx context.Context, incrs []cellar.CounterIncrement) []cellar.CounterResult {
	return batchIncr(ctx, incrs, n.Incr)
}

// tupleWrites returns the rows PostgreSQL counts as inserted or updated in
// table: each counter statement writes one.
func tupleWrites(tb testing.TB, db *sql.DB, table string) int64 {
	tb.Helper()
	var n int64
	err := db.QueryRow("SELECT coalesce(sum(n_tup_ins + n_tup_upd), 0) FROM pg_stat_user_tables WHERE relname = $1", table).Scan(&n)
	if err != nil {
		tb.Fatal(err)
	}
	return n
}

// stableTupleWrites returns tupleWrites once PostgreSQL's statistics
// stop changing: backends report them when idle, up to seconds late, and
// the last run's must not count in the next one's.
func stableTupleWrites(tb testing.TB, db *sql.DB, table string) int64 {
	tb.Helper()
	n := tupleWrites(tb, db, table)
	for i := 0; i < 15; i++ {
		time.Sleep(1500 * time.Millisecond)
		m := tupleWrites(tb, db, table)
		if m == n {
			return n
		}
		n = m
	}
	return n
}

// settleTupleWrites waits until PostgreSQL's statistics (reported by
// backends when they go idle, up to seconds late) show want more rows
// written in table than before, or 20s pass; it returns what they show.
func settleTupleWrites(tb testing.TB, db *sql.DB, table string, before, want int64) int64 {
	tb.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		n := tupleWrites(tb, db, table) - before
		if n >= want || time.Now().After(deadline) {
			return n
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// serveCounters serves cellar's HTTP API over cs (and store, for the cell
// routes) on a loopback port until stop.
func serveCounters(tb testing.TB, store cellar.Store, cs cellar.CounterStore) (addr string, stop func()) {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	srv := &http.Server{Handler: cellarhttp.NewHandler(store, cellarhttp.Options{Counters: cs, Logger: quietLogger()})}
	go srv.Serve(ln)
	return ln.Addr().String(), func() { srv.Close() }
}

// BenchmarkJournalIncr measures what the commit delay costs and buys at a
// few concurrencies, in-process (direct) and over HTTP (the lean load
// generator against the HTTP handler over the journal, in this process):
// increments per second and the latency of one increment (p50, p99),
// with the default delay and with it off, side by side:
//
//	go test ./internal/counter -run '^$' -bench JournalIncr -benchtime 3s -count 2
func BenchmarkJournalIncr(b *testing.B) {
	for _, via := range []string{"direct", "http"} {
		for _, conc := range []int{1, 4, 16, 64} {
			for _, delay := range []struct {
				name string
				d    time.Duration
			}{{"delay_1ms", 0}, {"no_delay", -1}} {
				b.Run(fmt.Sprintf("%s/c=%d/%s", via, conc, delay.name), func(b *testing.B) {
					benchJournalIncr(b, via == "http", conc, delay.d)
				})
			}
		}
	}
}

func benchJournalIncr(b *testing.B, overHTTP bool, conc int, delay time.Duration) {
	j, err := OpenJournal(context.Background(), b.TempDir()+"/counters.journal", countertest.New(), Options{Logger: quietLogger(), CommitDelay: delay})
	if err != nil {
		b.Fatal(err)
	}
	defer j.Close()
	benchIncr(b, j, overHTTP, conc)
	st := j.Stats()
	b.ReportMetric(float64(st.Increments)/float64(max(st.Commits, 1)), "incr/commit")
}

// BenchmarkRedisIncr measures increments of one hot counter in Redis mode
// (a Redis node of its own, batches held 1 ms, the default), in-process
// and over HTTP, as BenchmarkJournalIncr does the journal's:
//
//	go test ./internal/counter -run '^$' -bench RedisIncr -benchtime 3s -count 2
func BenchmarkRedisIncr(b *testing.B) {
	for _, via := range []string{"direct", "http"} {
		for _, conc := range []int{16, 64} {
			b.Run(fmt.Sprintf("%s/c=%d", via, conc), func(b *testing.B) {
				ctx := context.Background()
				cluster, err := redis.Open(redis.Config{Shards: 16, Nodes: []redis.Node{{Name: "r1", Addr: dbtest.Redis(b).Addr()}},
					Map: []cellar.Assignment{{Node: "r1", ShardRange: cellar.ShardRange{First: 0, Last: 15}}}})
				if err != nil {
					b.Fatal(err)
				}
				defer cluster.Close()
				rb, err := OpenRedis(ctx, cluster, countertest.New(), Options{Logger: quietLogger()})
				if err != nil {
					b.Fatal(err)
				}
				defer rb.Close()
				benchIncr(b, rb, via == "http", conc)
			})
		}
	}
}

// benchIncr runs b.N increments of counter "hot" of cs from conc workers,
// in-process or over HTTP, and reports increments per second and the
// latency of one (p50, p99).
func benchIncr(b *testing.B, cs cellar.CounterStore, overHTTP bool, conc int) {
	// newOp returns one worker's increment.
	newOp := func() (func() error, func()) {
		return func() error { _, err := cs.Incr(context.Background(), "hot", 1); return err }, func() {}
	}
	if overHTTP {
		// Only the counter routes are used: the handler needs no cell store.
		addr, stop := serveCounters(b, nil, cs)
		defer stop()
		req := loadgen.AppendRequest(nil, http.MethodPost, addr, "/v1/counters/hot/incr", []byte(`{"by":1}`))
		newOp = func() (func() error, func()) {
			conn := loadgen.NewConn(addr)
			return func() error {
				status, body, err := conn.Do(context.Background(), req)
				if err != nil {
					return err
				}
				return loadgen.CheckJSON(status, http.StatusOK, body)
			}, func() { conn.Close() }
		}
	}
	var mu sync.Mutex
	var lat []time.Duration
	var next atomic.Int64
	b.ResetTimer()
	var wg sync.WaitGroup
	for c := 0; c < conc; c++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			op, done := newOp()
			defer done()
			var mine []time.Duration
			for next.Add(1) <= int64(b.N) {
				t0 := time.Now()
				if err := op(); err != nil {
					b.Error(err)
					return
				}
				mine = append(mine, time.Since(t0))
			}
			mu.Lock()
			lat = append(lat, mine...)
			mu.Unlock()
		}()
	}
	wg.Wait()
	b.StopTimer()
	if len(lat) == 0 {
		return
	}
	slices.Sort(lat)
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "incr/s")
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds()), "p50_µs")
	b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds()), "p99_µs")
}

// BenchmarkJournalBatchIncrNewKeys measures batches of 1,000 increments
// of keys the journal has not seen, over a real PostgreSQL node: the
// journal must read each key's durable value before its first increment.
//
//	go test ./internal/counter -run '^$' -bench JournalBatchIncrNewKeys -benchtime 20x -count 3
func BenchmarkJournalBatchIncrNewKeys(b *testing.B) {
	node := openPostgres(b, dbtest.Postgres(b))
	j, err := OpenJournal(context.Background(), b.TempDir()+"/counters.journal", node, Options{Logger: quietLogger()})
	if err != nil {
		b.Fatal(err)
	}
	defer j.Close()
	const batch = 1000
	incrs := make([]cellar.CounterIncrement, batch)
	b.ResetTimer()
	for n := range b.N {
		for i := range incrs {
			incrs[i] = cellar.CounterIncrement{Key: fmt.Sprintf("b%d-%d", n, i), By: 1}
		}
		for i, r := range j.BatchIncr(context.Background(), incrs) {
			if r.Err != nil || r.Value != 1 {
				b.Fatalf("increment %d = %+v", i, r)
			}
		}
	}
	b.StopTimer() // not the flush of Close
	b.ReportMetric(float64(b.N*batch)/b.Elapsed().Seconds(), "incr/s")
}
