package counter

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/cellar-db/cellar"
	"github.com/cellar-db/cellar/client"
	"github.com/cellar-db/cellar/internal/dbtest"
	cellarhttp "github.com/cellar-db/cellar/internal/http"
	"github.com/cellar-db/cellar/internal/postgres"
	"github.com/cellar-db/cellar/internal/redis"
	"github.com/cellar-db/cellar/internal/shard"
	"github.com/cellar-db/cellar/internal/sqlstore"
)

// The crash tests run this test binary as a counter server in a child
// process (TestMain sees childEnv), kill it with SIGKILL while clients
// hammer it, and count what was lost.

const (
	childEnv        = "CELLAR_COUNTER_CHILD"         // "journal" or "redis"
	childPGEnv      = "CELLAR_COUNTER_CHILD_PG"      // PostgreSQL DSN of the node
	childJournalEnv = "CELLAR_COUNTER_CHILD_JOURNAL" // journal path
	childRedisEnv   = "CELLAR_COUNTER_CHILD_REDIS"   // redis-server address
	childReadyLine  = "counter server listening on "
)

func TestMain(m *testing.M) {
	if mode := os.Getenv(childEnv); mode != "" {
		if err := runChild(mode); err != nil {
			fmt.Fprintln(os.Stderr, "counter child:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	// go-redis logs every failed dial; the tests kill Redis servers on
	// purpose.
	goredis.SetLogger(quietRedisLog{})
	os.Exit(m.Run())
}

type quietRedisLog struct{}

func (quietRedisLog) Printf(context.Context, string, ...any) {}

// runChild serves the counter routes over a buffer in front of a
// PostgreSQL node until SIGTERM, when it closes the buffer (a last flush)
// and exits.
func runChild(mode string) error {
	ctx := context.Background()
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	pg, err := postgres.Open(ctx, os.Getenv(childPGEnv), postgres.Options{Options: sqlstore.Options{Name: "pg", ShardCount: nodeShards, Create: true}})
	if err != nil {
		return err
	}
	defer pg.Close()
	store, err := shard.New(&cellar.ShardMap{Version: 1, ShardCount: nodeShards, Assignments: []cellar.Assignment{
		{Node: "pg", ShardRange: cellar.ShardRange{First: 0, Last: nodeShards - 1}},
	}}, []*shard.Node{{Name: "pg", Driver: "postgres", Store: pg}}, shard.Options{})
	if err != nil {
		return err
	}
	opts := Options{FlushInterval: 5 * time.Millisecond, FlushTimeout: 2 * time.Second, Lease: 3 * time.Second, Logger: log}
	var buf interface {
		cellar.CounterStore
		Close() error
	}
	switch mode {
	case "journal":
		j, err := OpenJournal(ctx, os.Getenv(childJournalEnv), store, opts)
		if err != nil {
			return err
		}
		buf = j
	case "redis":
		cluster, err := redis.Open(redis.Config{Shards: nodeShards, Nodes: []redis.Node{{Name: "r1", Addr: os.Getenv(childRedisEnv)}},
			Map: []cellar.Assignment{{Node: "r1", ShardRange: cellar.ShardRange{First: 0, Last: nodeShards - 1}}}})
		if err != nil {
			return err
		}
		defer cluster.Close()
		b, err := OpenRedis(ctx, cluster, store, opts)
		if err != nil {
			return err
		}
		buf = b
	default:
		return fmt.Errorf("unknown mode %q", mode)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	// Catch SIGTERM before saying we listen: the test may stop us as soon
	// as it has read one counter, and an uncaught SIGTERM would kill us
	// without the last flush.
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM)
	srv := &http.Server{Handler: cellarhttp.NewHandler(store, cellarhttp.Options{Counters: buf, Logger: log})}
	go srv.Serve(ln)
	fmt.Println(childReadyLine + ln.Addr().String())
	<-sig
	srv.Shutdown(ctx)
	return buf.Close()
}

// child is a counter server process.
type child struct {
	cmd *exec.Cmd
	c   *client.Client
}

// startChild starts this test binary as a counter server in mode, with
// env added, and returns it once it listens.
func startChild(tb testing.TB, mode string, env ...string) *child {
	tb.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(append(os.Environ(), childEnv+"="+mode), env...)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		tb.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
	})
	addr := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if a, ok := strings.CutPrefix(sc.Text(), childReadyLine); ok {
				addr <- a
			}
		}
	}()
	select {
	case a := <-addr:
		hc := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 128}, Timeout: 10 * time.Second}
		return &child{cmd: cmd, c: client.New("http://"+a, client.WithHTTPClient(hc))}
	case <-time.After(60 * time.Second):
		tb.Fatal("the counter server did not start")
	}
	return nil
}

func (ch *child) kill(tb testing.TB) {
	tb.Helper()
	if err := ch.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		tb.Fatal(err)
	}
	ch.cmd.Wait()
}

// stop stops the server cleanly: it flushes before exiting.
func (ch *child) stop(tb testing.TB) {
	tb.Helper()
	if err := ch.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		tb.Fatal(err)
	}
	if err := ch.cmd.Wait(); err != nil {
		tb.Fatalf("counter server exited with %v", err)
	}
}

// tally is what clients of one counter were told: how many increments
// they sent and had acknowledged, and the values acknowledged (each
// increment of 1 is acknowledged with the counter's value after it, so
// no two are alike, and the counter never falls below the highest).
type tally struct {
	sent, acked int64
	mu          sync.Mutex
	values      map[int64]bool
	max         int64
}

func (t *tally) ack(tb testing.TB, v int64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.values[v] {
		tb.Errorf("two increments of 1 were both acknowledged with the value %d", v)
	}
	t.values[v] = true
	t.max = max(t.max, v)
}

// hammer has clients increment key by 1 until the server dies, after it
// acknowledged at least minAcked increments; then it kills the server. It
// returns what the clients were told.
func hammer(tb testing.TB, ch *child, clients int, key string, minAcked int64) *tally {
	tb.Helper()
	t := &tally{values: make(map[int64]bool)}
	var sent, acked atomic.Int64
	var round atomic.Int64
	var wg sync.WaitGroup
	for w := 0; w < clients; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				sent.Add(1)
				v, err := ch.c.Incr(context.Background(), key, 1)
				if err != nil {
					if !errors.Is(err, cellar.ErrUnavailable) {
						tb.Errorf("Incr: %v; want success or unavailable", err)
					}
					return // the server is gone
				}
				acked.Add(1)
				t.ack(tb, v)
				round.Add(1)
			}
		}()
	}
	for round.Load() < minAcked {
		time.Sleep(5 * time.Millisecond)
	}
	ch.kill(tb)
	wg.Wait()
	t.sent, t.acked = sent.Load(), acked.Load()
	return t
}

// readCounter reads key, asking again while the node is catching up.
func readCounter(tb testing.TB, c *client.Client, key string) int64 {
	tb.Helper()
	var err error
	for try := 0; try < 20; try++ {
		var v int64
		if v, err = c.Counter(context.Background(), key); err == nil {
			return v
		}
		time.Sleep(100 * time.Millisecond)
	}
	tb.Fatalf("Counter(%s): %v", key, err)
	return 0
}

// TestKill9 runs 64 clients incrementing one hot counter while the server
// is killed with SIGKILL, three times, in each mode. After each restart
// the counter must hold at least every increment acknowledged, and at
// most every increment sent, since the round began (the increments sent
// but not acknowledged of one round must not hide losses of the next),
// and at least the highest value any client was acknowledged; after a
// clean stop, the node must hold it.
func TestKill9(t *testing.T) {
	if testing.Short() {
		t.Skip("kills real processes")
	}
	for _, mode := range []string{"journal", "redis"} {
		t.Run(mode, func(t *testing.T) {
			pgDSN := dbtest.Postgres(t)
			env := []string{childPGEnv + "=" + pgDSN, childJournalEnv + "=" + t.TempDir() + "/counters.journal"}
			var rs *dbtest.RedisServer
			if mode == "redis" {
				rs = dbtest.Redis(t)
				env = append(env, childRedisEnv+"="+rs.Addr())
			}
			const key = "hot"
			var sent, acked int64
			var start int64 // the counter when the round began
			var last *tally
			check := func(after string, v int64) {
				t.Helper()
				if last == nil {
					return
				}
				lo, hi := max(start+last.acked, last.max), start+last.sent
				if v < lo || v > hi {
					t.Fatalf("%s: counter = %d; want %d..%d (the round's start %d plus what it acknowledged, and at least the highest value acknowledged, %d .. plus what it sent)", after, v, lo, hi, start, last.max)
				}
			}
			var ch *child
			for kill := 0; kill <= 3; kill++ {
				ch = startChild(t, mode, env...)
				v := readCounter(t, ch.c, key)
				check(fmt.Sprintf("after kill %d", kill), v)
				if kill == 3 {
					break
				}
				start = v
				last = hammer(t, ch, 64, key, 2000)
				sent, acked = sent+last.sent, acked+last.acked
			}
			v := readCounter(t, ch.c, key)
			t.Logf("3 kills: %d increments sent, %d acknowledged; the counter holds %d", sent, acked, v)
			ch.stop(t)

			// What the server holds must be what the node holds, once
			// everything is flushed (in Redis mode, a dead server's flush
			// may wait for its lease: finish it now, from here).
			pg := openPostgres(t, pgDSN)
			if mode == "redis" {
				cluster, err := redis.Open(redis.Config{Shards: nodeShards, Nodes: []redis.Node{{Name: "r1", Addr: rs.Addr()}},
					Map: []cellar.Assignment{{Node: "r1", ShardRange: cellar.ShardRange{First: 0, Last: nodeShards - 1}}}})
				if err != nil {
					t.Fatal(err)
				}
				defer cluster.Close()
				clock := newFakeClock()
				clock.Set(time.Since(clock.Now()) + time.Hour)
				b := openRedisBuffer(t, cluster, pg, testOptions(clock))
				if err := b.Flush(context.Background()); err != nil {
					t.Fatal(err)
				}
				if got := readRedisCounter(t, b, key); got != v {
					t.Errorf("after the last flush, the buffer reads %d; want %d", got, v)
				}
			}
			vals, err := pg.Counters(context.Background(), []string{key})
			if err != nil {
				t.Fatal(err)
			}
			if vals[key] != v {
				t.Errorf("node value = %d; want %d", vals[key], v)
			}
		})
	}
}

func readRedisCounter(tb testing.TB, b *RedisBuffer, key string) int64 {
	tb.Helper()
	v, err := b.Counter(context.Background(), key)
	if err != nil {
		tb.Fatal(err)
	}
	return v
}
