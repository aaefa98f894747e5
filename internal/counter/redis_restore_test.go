package counter

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/cellar-db/cellar/internal/counter/countertest"
	"github.com/cellar-db/cellar/internal/dbtest"

	goredis "github.com/redis/go-redis/v9"
)

// saveSnapshot makes the server write its RDB snapshot, which it loads
// when it starts again (dbtest.RedisWithSnapshots).
func saveSnapshot(t *testing.T, cl *goredis.Client) {
	t.Helper()
	if err := cl.Save(context.Background()).Err(); err != nil {
		t.Fatal(err)
	}
}

// flushTwice runs two flush rounds: the second finishes what the first
// resumed.
func flushTwice(t *testing.T, b *RedisBuffer) {
	t.Helper()
	for range 2 { // the second round finishes what the first resumed
		if err := b.Flush(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
}

// Redis coming back with older data, more cases (a review on 2026-12-03;
// TestRedisBackWithOlderData has the first ones).

// A snapshot taken right after a flush holds the next epoch's name and no
// deltas. The flush of that epoch is applied after the snapshot; then
// Redis restarts from it. The new server must start a new epoch although
// nothing came back: before, the increments acknowledged after the
// restart joined an epoch whose flush ID the node had already applied,
// and were dropped as a duplicate.
func TestRedisBackWithOlderDataNothingBuffered(t *testing.T) {
	srv := dbtest.RedisWithSnapshots(t)
	node := countertest.New()
	b := openRedisBuffer(t, openCluster(t, srv), node, testOptions(newFakeClock()))
	cl := goredis.NewClient(&goredis.Options{Addr: srv.Addr()})
	defer cl.Close()
	ctx := context.Background()

	incr(t, b, "k", 5, 5)
	flushTwice(t, b) // flush E1 applied; the epoch is E2, no deltas
	saveSnapshot(t, cl)
	incr(t, b, "k", 3, 8)
	flushTwice(t, b) // flush E2 applied (node 8)
	if got := node.Value("k"); got != 8 {
		t.Fatalf("node k = %d before the restart; want 8", got)
	}
	srv.Kill()
	srv.Start() // epoch E2 again, nothing buffered
	if _, err := b.Incr(ctx, "k", 2); err != nil {
		t.Fatal(err)
	}
	flushTwice(t, b)
	if got := node.Value("k"); got != 10 {
		t.Errorf("node k = %d after the restart and a flush; want 10: the +2 acknowledged after the server came back is lost (its flush reused the applied ID of epoch E2)", got)
	}
}

// The same with two datastores (prefixes) on one server: each prefix must
// start its epoch anew (before, each lost what was acknowledged after the
// restart).
func TestRedisBackWithOlderDataPerPrefix(t *testing.T) {
	srv := dbtest.RedisWithSnapshots(t)
	bx, by, nodeX, nodeY := twoDatastores(t, srv, "ds-y")
	cl := goredis.NewClient(&goredis.Options{Addr: srv.Addr()})
	defer cl.Close()
	ctx := context.Background()

	incr(t, bx, "k", 1, 1)
	incr(t, by, "k", 1, 1)
	flushTwice(t, bx)
	flushTwice(t, by)
	saveSnapshot(t, cl)
	incr(t, bx, "k", 1, 2)
	incr(t, by, "k", 1, 2)
	flushTwice(t, bx)
	flushTwice(t, by)
	srv.Kill()
	srv.Start()
	if _, err := bx.Incr(ctx, "k", 10); err != nil {
		t.Fatal(err)
	}
	if _, err := by.Incr(ctx, "k", 10); err != nil {
		t.Fatal(err)
	}
	flushTwice(t, bx)
	flushTwice(t, by)
	if x, y := nodeX.Value("k"), nodeY.Value("k"); x != 12 || y != 12 {
		t.Errorf("nodes hold k = %d (X), %d (Y) after the restart; want 12 each (the +10 acknowledged after the restart is lost)", x, y)
	}
}

// A server restored in place from a backup (here: by replicating from a
// server holding the backup, then promoting itself again, as a restore or
// a fail-back to a lagging former master does) keeps its run_id, and the
// backup's runid key holds that same run_id: the replication ID, which
// changes, is what tells the new data. Before it was compared, the
// increments acknowledged after the restore joined an epoch already
// applied.
func TestRedisRestoredInPlaceKeepingRunID(t *testing.T) {
	m1, backup := dbtest.Redis(t), dbtest.Redis(t)
	ctx := context.Background()
	c1 := goredis.NewClient(&goredis.Options{Addr: m1.Addr()})
	defer c1.Close()
	cb := goredis.NewClient(&goredis.Options{Addr: backup.Addr()})
	defer cb.Close()
	// A full sync through a file would write dump.rdb into the servers'
	// working directory (this package's): sync over the socket only.
	for _, c := range []*goredis.Client{c1, cb} {
		for _, kv := range [][2]string{{"repl-diskless-sync", "yes"}, {"repl-diskless-sync-delay", "0"}, {"repl-diskless-load", "swapdb"}} {
			if err := c.ConfigSet(ctx, kv[0], kv[1]).Err(); err != nil {
				t.Fatal(err)
			}
		}
	}
	node := countertest.New()
	b := openRedisBuffer(t, openCluster(t, m1), node, testOptions(newFakeClock()))

	host, port := splitAddr(t, m1.Addr())
	if err := cb.ReplicaOf(ctx, host, port).Err(); err != nil {
		t.Fatal(err)
	}
	waitLink(t, cb)
	incr(t, b, "k", 5, 5)   // epoch E1 holds k:5, runid = m1's
	waitCaughtUp(t, c1, cb) // WAIT would not do: it counts this client's writes
	// The backup is taken: it holds E1 with k:5.
	if err := cb.ReplicaOf(ctx, "NO", "ONE").Err(); err != nil {
		t.Fatal(err)
	}
	flushTwice(t, b) // E1 applied: node 5
	if got := node.Value("k"); got != 5 {
		t.Fatalf("node k = %d; want 5", got)
	}
	// Restore m1 from the backup, in place.
	bhost, bport := splitAddr(t, backup.Addr())
	if err := c1.ReplicaOf(ctx, bhost, bport).Err(); err != nil {
		t.Fatal(err)
	}
	waitLink(t, c1)
	if err := c1.ReplicaOf(ctx, "NO", "ONE").Err(); err != nil {
		t.Fatal(err)
	}
	if d, err := c1.HGet(ctx, "cellar:ctr:{"+shardOf(b, "k")+"}:deltas", "k").Result(); err != nil || d != "5" {
		keys, _ := c1.Keys(ctx, "*").Result()
		info, _ := c1.Info(ctx, "replication").Result()
		t.Fatalf("m1 after the restore holds deltas k = %q, %v; want the backup's 5 (keys %v, %s)", d, err, keys, info)
	}
	if _, err := b.Incr(ctx, "k", 2); err != nil {
		t.Fatal(err)
	}
	flushTwice(t, b)
	if got := node.Value("k"); got != 7 {
		t.Errorf("node k = %d after the restore; want 7 (the 5 once, and the +2 acknowledged after the restore)", got)
	}
}

func shardOf(b *RedisBuffer, key string) string {
	return itoa(b.cluster.Shard(key))
}

func itoa(n int) string {
	if n == 0 {
		return "0"
	}
	s := ""
	for n > 0 {
		s = string(rune('0'+n%10)) + s
		n /= 10
	}
	return s
}

func splitAddr(t *testing.T, addr string) (string, string) {
	t.Helper()
	i := strings.LastIndex(addr, ":")
	return addr[:i], addr[i+1:]
}

func waitLink(t *testing.T, c *goredis.Client) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		info, err := c.Info(context.Background(), "replication").Result()
		if err == nil && strings.Contains(info, "master_link_status:up") && !strings.Contains(info, "master_sync_in_progress:1") {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatal("replication link did not come up")
}

// waitCaughtUp waits until replica has every write of master.
func waitCaughtUp(t *testing.T, master, replica *goredis.Client) {
	t.Helper()
	field := func(c *goredis.Client, name string) string {
		info, err := c.Info(context.Background(), "replication").Result()
		if err != nil {
			t.Fatal(err)
		}
		for _, l := range strings.Split(info, "\r\n") {
			if v, ok := strings.CutPrefix(l, name+":"); ok {
				return v
			}
		}
		return ""
	}
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		want := field(master, "master_repl_offset")
		if want != "" && want != "0" && field(replica, "slave_repl_offset") == want {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatal("the replica did not catch up")
}
