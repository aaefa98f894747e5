package mysql_test

// State rows created at once, on distinct keys, must not deadlock: under
// InnoDB's REPEATABLE READ, a locking read or an update that found no row
// locked the gap where it would be, and creators in one gap deadlocked on
// each other's gap locks, about two deadlocks an operation, some of them
// past inTx's retries as internal errors (review of 2026-12-08; fixed by
// running these transactions at READ COMMITTED, Dialect.StateTx).

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/cellar-db/cellar"
	"github.com/cellar-db/cellar/internal/sqlstore"
)

// innodbDeadlocks reads the server's deadlock counter (all its clients').
func innodbDeadlocks(t *testing.T, s *sqlstore.Store) int64 {
	var name string
	var v int64
	if err := s.DB().QueryRow("SHOW GLOBAL STATUS LIKE 'Innodb_deadlocks'").Scan(&name, &v); err != nil {
		t.Logf("deadlock count: %v", err)
	}
	return v
}

// countConcurrentErrors runs n goroutines of f at once, rounds times, and counts errors by code.
//
// Operations on distinct keys should not deadlock at all: besides counting
// the errors a client sees (cellar.EINTERNAL, HTTP 500, once inTx's 5
// retries run out), it fails the test if the server counted more than one
// deadlock per ten operations, each a retry that a busier server turns
// into a 500.
func countConcurrentErrors(t *testing.T, s *sqlstore.Store, n, rounds int, f func(g, r int) error) map[string]int {
	t.Helper()
	d0 := innodbDeadlocks(t, s)
	defer func() {
		d := innodbDeadlocks(t, s) - d0
		t.Logf("server deadlocks during test: %d (of %d ops)", d, n*rounds)
		if d > int64(n*rounds/10) {
			t.Errorf("%d InnoDB deadlocks for %d operations on distinct keys; want none", d, n*rounds)
		}
	}()
	var mu sync.Mutex
	counts := map[string]int{}
	var first error
	for r := 0; r < rounds; r++ {
		var wg sync.WaitGroup
		start := make(chan struct{})
		for g := 0; g < n; g++ {
			wg.Add(1)
			go func(g int) {
				defer wg.Done()
				<-start
				err := f(g, r)
				if err == nil {
					return
				}
				mu.Lock()
				counts[string(cellar.ErrorCode(err))]++
				if first == nil {
					first = err
				}
				mu.Unlock()
			}(g)
		}
		close(start)
		wg.Wait()
	}
	if first != nil {
		t.Logf("first error: %v", first)
	}
	t.Logf("errors by code: %v (of %d ops)", counts, n*rounds)
	return counts
}

func failOnErrors(t *testing.T, counts map[string]int) {
	t.Helper()
	total := 0
	for _, c := range counts {
		total += c
	}
	if total > 0 {
		t.Errorf("%d errors under normal concurrency (%v); want 0", total, counts)
	}
}

func deliverOne(ts *sqlstore.TriggerShard) (sqlstore.ShardEffects, error) {
	ts.Delivered++
	return sqlstore.ShardEffects{}, nil
}

// Many consumers claim different shards of a trigger whose shard rows do
// not exist yet (updateTriggerShard creates them).
func TestStateRowsCreatedAtOnceTriggerShardCreate(t *testing.T) {
	s := openMySQL(t, 64)
	ctx := context.Background()
	if _, err := s.PutTrigger(ctx, sqlstore.TriggerDef{Name: "t", Columns: []string{"c"}, Start: "earliest", MaxAttempts: 3}, nil); err != nil {
		t.Fatal(err)
	}
	counts := countConcurrentErrors(t, s, 16, 16, func(g, r int) error {
		_, err := s.UpdateTriggerShard(ctx, "t", r*16+g, deliverOne)
		return err
	})
	failOnErrors(t, counts)
}

// Many triggers defined at once (different names).
func TestStateRowsCreatedAtOncePutTriggerConcurrent(t *testing.T) {
	s := openMySQL(t, 16)
	ctx := context.Background()
	start := map[int]int64{}
	for i := 0; i < 16; i++ {
		start[i] = 0
	}
	counts := countConcurrentErrors(t, s, 16, 24, func(g, r int) error {
		_, err := s.PutTrigger(ctx, sqlstore.TriggerDef{Name: fmt.Sprintf("t%d_%d", r, g), Columns: []string{"c"}, Start: "earliest", MaxAttempts: 3}, start)
		return err
	})
	failOnErrors(t, counts)
}

// Many consumers of one trigger start at once.
func TestStateRowsCreatedAtOnceSeeConsumerConcurrent(t *testing.T) {
	s := openMySQL(t, 16)
	ctx := context.Background()
	if _, err := s.PutTrigger(ctx, sqlstore.TriggerDef{Name: "t", Columns: []string{"c"}, Start: "earliest", MaxAttempts: 3}, map[int]int64{0: 0}); err != nil {
		t.Fatal(err)
	}
	counts := countConcurrentErrors(t, s, 32, 16, func(g, r int) error {
		now := time.Now()
		_, err := s.SeeConsumer(ctx, "t", fmt.Sprintf("c%d_%d", r, g), now, now.Add(-time.Minute))
		return err
	})
	failOnErrors(t, counts)
}

// Many indexes defined at once (different names).
func TestStateRowsCreatedAtOnceIndexRecordCreate(t *testing.T) {
	s := openMySQL(t, 16)
	ctx := context.Background()
	counts := countConcurrentErrors(t, s, 16, 24, func(g, r int) error {
		_, err := s.UpdateIndexRecord(ctx, fmt.Sprintf("i%d_%d", r, g), func(rec *sqlstore.IndexRecord) error {
			rec.Def = []byte(`{"x":1}`)
			return nil
		})
		return err
	})
	failOnErrors(t, counts)
}
