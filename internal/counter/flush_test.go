package counter

import (
	"context"
	"errors"
	"testing"

	"github.com/cellar-db/cellar"
	"github.com/cellar-db/cellar/internal/counter/countertest"
)

// TestFlushAfterFailedFlush: a flush that failed leaves its flight behind;
// increments keep arriving; the next single Flush (as Close makes) must
// write both the leftover flight and everything buffered since.
func TestFlushAfterFailedFlush(t *testing.T) {
	node := countertest.New()
	clock := newFakeClock()
	j := openJournal(t, t.TempDir(), node, testOptions(clock))
	ctx := context.Background()
	for i := 0; i < 5; i++ {
		if _, err := j.Incr(ctx, "k", 1); err != nil {
			t.Fatal(err)
		}
	}
	node.SetFault(func(op string, applied bool) error {
		if op == "apply" && !applied {
			return cellar.Errorf(cellar.EUNAVAILABLE, "node down")
		}
		return nil
	})
	if err := j.Flush(ctx); !errors.Is(err, cellar.ErrUnavailable) {
		t.Fatalf("Flush with the node down: %v; want unavailable", err)
	}
	node.SetFault(nil)
	for i := 0; i < 3; i++ {
		if _, err := j.Incr(ctx, "k", 1); err != nil {
			t.Fatal(err)
		}
	}
	if err := j.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if got := node.Value("k"); got != 8 {
		t.Errorf("node value after one Flush = %d; want 8 (the failed flight's 5 and the 3 buffered since)", got)
	}
}
