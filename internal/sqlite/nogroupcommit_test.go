package sqlite_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/cellar-db/cellar"
	"github.com/cellar-db/cellar/internal/sqlstore"
)

// TestNoGroupCommitConcurrentSizes: without group commit, puts run their
// own transactions at once on the one write connection, while batches of
// growing size need batched statements of sizes not prepared yet. A batch
// preparing them must not hold up a put whose transaction holds the
// connection (that would deadlock until a deadline: the preparation waits
// for the connection, the transaction for the statement cache). Every put
// must succeed well within its deadline, and the shards stay gapless.
func TestNoGroupCommitConcurrentSizes(t *testing.T) {
	const shards = 64
	for round := 0; round < 5; round++ {
		s := open(t, shards, true).(*sqlstore.Store)
		var wg sync.WaitGroup
		errs := make(chan error, 8)
		put := func(cells []cellar.NewCell) error {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			for _, r := range s.BatchPut(ctx, cells) {
				if r.Err != nil {
					return r.Err
				}
				if !r.Created {
					return fmt.Errorf("%+v not created", r.Cell.Key)
				}
			}
			return nil
		}
		// Single puts: each transaction looks up the statements of one row.
		for w := 0; w < 4; w++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := 0; i < 30; i++ {
					if err := put([]cellar.NewCell{cell(fmt.Sprintf("w%d-%d", w, i), 1, `{}`)}); err != nil {
						errs <- fmt.Errorf("round %d: put %d of writer %d: %w", round, i, w, err)
						return
					}
				}
			}()
		}
		// Batches of growing size: each needs statements of a new size.
		wg.Add(1)
		go func() {
			defer wg.Done()
			for n := 2; n <= 256; n *= 2 {
				cells := make([]cellar.NewCell, n)
				for i := range cells {
					cells[i] = cell(fmt.Sprintf("b%d-%d", n, i), 1, `{}`)
				}
				if err := put(cells); err != nil {
					errs <- fmt.Errorf("round %d: batch of %d: %w", round, n, err)
					return
				}
			}
		}()
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Error(err)
		}
		if t.Failed() {
			return
		}
		checkSeqs(t, s)
	}
}
