package trigger_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/cellar-db/cellar"
	"github.com/cellar-db/cellar/client"
	"github.com/cellar-db/cellar/client/trigger"
)

// TestRun runs two consumers with a handler that fails some cells once,
// and checks that every cell is handled, each shard's in order.
func TestRun(t *testing.T) {
	c, _ := newServer(t)
	ctx := context.Background()
	if _, created, err := c.DefineTrigger(ctx, "t", client.TriggerDefinition{Columns: []string{"a"}, MaxAttempts: 3}); err != nil || !created {
		t.Fatalf("DefineTrigger = %v, %v", created, err)
	}
	want := map[int][]int64{}
	put := func(i int) {
		cell, _, err := c.Put(ctx, cellar.NewCell{Key: cellar.Key{RowKey: fmt.Sprintf("r%d", i), Column: "a", RefKey: 1}, Body: []byte(`{}`)})
		if err != nil {
			t.Fatal(err)
		}
		want[cell.Shard] = append(want[cell.Shard], cell.AddedID)
	}
	for i := 0; i < 100; i++ {
		put(i)
	}
	var mu sync.Mutex // protects got and failed
	got := map[int][]int64{}
	failed := map[string]bool{}
	handler := func(ctx context.Context, cell cellar.Cell) error {
		mu.Lock()
		defer mu.Unlock()
		if cell.AddedID%5 == 0 && !failed[cell.RowKey] {
			failed[cell.RowKey] = true
			return errors.New("try again")
		}
		got[cell.Shard] = append(got[cell.Shard], cell.AddedID)
		return nil
	}
	runCtx, stop := context.WithCancel(ctx)
	errs := make(chan error, 2)
	for _, name := range []string{"p1", "p2"} {
		go func() {
			errs <- trigger.Run(runCtx, c, "t", name, handler, trigger.Options{Concurrency: 3, MaxCells: 7, Wait: 100 * time.Millisecond})
		}()
	}
	// More cells while they run.
	for i := 100; i < 150; i++ {
		put(i)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		st, err := c.TriggerStatus(ctx, "t")
		if err != nil {
			t.Fatal(err)
		}
		if st.Totals.LagCells == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("consumers did not catch up: %+v", st.Totals)
		}
		time.Sleep(20 * time.Millisecond)
	}
	stop()
	for i := 0; i < 2; i++ {
		if err := <-errs; err != nil {
			t.Errorf("Run = %v", err)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	for s := 0; s < shards; s++ {
		// At least once: a cell may be handled twice, but never out of
		// order after its first time.
		if !slices.Equal(slices.Compact(got[s]), want[s]) {
			t.Errorf("shard %d: handled %v; want %v", s, got[s], want[s])
		}
	}
}

// TestRunUnknownTrigger checks that Run gives up on a trigger that does
// not exist instead of retrying forever.
func TestRunUnknownTrigger(t *testing.T) {
	c, _ := newServer(t)
	err := trigger.Run(context.Background(), c, "nope", "p", func(context.Context, cellar.Cell) error { return nil }, trigger.Options{})
	if !errors.Is(err, cellar.ErrNotFound) {
		t.Fatalf("Run = %v; want not found", err)
	}
}

// TestClientTriggers covers the client's trigger methods.
func TestClientTriggers(t *testing.T) {
	c, _ := newServer(t)
	ctx := context.Background()
	if _, _, err := c.DefineTrigger(ctx, "t", client.TriggerDefinition{Columns: []string{"a"}, MaxAttempts: 1}); err != nil {
		t.Fatal(err)
	}
	cell, _, err := c.Put(ctx, cellar.NewCell{Key: cellar.Key{RowKey: "r", Column: "a", RefKey: 1}, Body: []byte(`{"x":1}`)})
	if err != nil {
		t.Fatal(err)
	}
	cl, err := c.ClaimTrigger(ctx, "t", "me", 10, 0)
	if err != nil || cl.Lease == nil || len(cl.Cells) != 1 || string(cl.Cells[0].Body) != `{"x":1}` {
		t.Fatalf("ClaimTrigger = %+v, %v", cl, err)
	}
	if err := c.AckTrigger(ctx, "t", cl.Lease.Token+1, cl.Lease.Shard, cell.AddedID); !errors.Is(err, cellar.ErrConflict) {
		t.Errorf("AckTrigger with a wrong token = %v; want conflict", err)
	}
	res, err := c.NackTrigger(ctx, "t", cl.Lease.Token, cl.Lease.Shard, cell.AddedID, "nope")
	if err != nil || !res.Parked {
		t.Fatalf("NackTrigger = %+v, %v; want parked", res, err)
	}
	parked, next, err := c.ParkedCells(ctx, "t", "", 10)
	if err != nil || len(parked) != 1 || parked[0].Key != cell.Key || next != "" {
		t.Fatalf("ParkedCells = %+v, %q, %v", parked, next, err)
	}
	if n, err := c.ReplayParked(ctx, "t"); err != nil || n != 1 {
		t.Fatalf("ReplayParked = %d, %v", n, err)
	}
	st, err := c.TriggerStatus(ctx, "t")
	if err != nil || st.Trigger.Name != "t" || st.Totals.Parked != 0 {
		t.Fatalf("TriggerStatus = %+v, %v", st, err)
	}
	list, err := c.Triggers(ctx)
	if err != nil || len(list) != 1 {
		t.Fatalf("Triggers = %+v, %v", list, err)
	}
	if err := c.ResetTrigger(ctx, "t"); err != nil {
		t.Fatal(err)
	}
}
