package bench

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"

	"github.com/cellar-db/cellar"
	"github.com/cellar-db/cellar/client"
)

// The data set: Config.Rows rows, each with refs cells in one column.
const (
	column = "c"
	refs   = 2
	// batchKeys is the number of keys in one batchGet request.
	batchKeys = 10
)

// batchExact reports whether key j of a batchGet names an exact ref_key;
// the others ask for the latest cell, so both kinds of lookup are measured.
func batchExact(j int) bool { return j%2 == 0 }

func rowKey(i int) string { return fmt.Sprintf("row-%06d", i) }

func appendRowKey(dst []byte, i int) []byte { return fmt.Appendf(dst, "row-%06d", i) }

// body returns a JSON object of about 200 bytes that varies with n, like a
// small event record.
func body(n uint64) []byte {
	return fmt.Appendf(nil, `{"event":"page_view","user":"u-%08d","session":"%016x","ts":%d,"path":"/products/%06d/reviews","referrer":"https://example.com/search?q=cellar+bench","tags":["bench","cellar"],"score":%d}`,
		n%100000000, n*0x9e3779b97f4a7c15, 1763700000000+n, n%1000000, n%1000)
}

// workload chooses the keys one worker reads and the cells it writes. Its
// random source is seeded by the worker, so runs repeat.
type workload struct {
	rng    *rand.Rand
	rows   int
	prefix string // makes this worker's new row keys unique in the datastore
	n      uint64
}

func newWorkload(rows int, prefix string, worker int) *workload {
	return &workload{rng: rand.New(rand.NewPCG(uint64(worker), 0x63656c6c6172)), rows: rows, prefix: prefix}
}

// readKey returns a preloaded row and one of its ref_keys, uniformly.
func (w *workload) readKey() (string, int64) {
	i, ref := w.readIndex()
	return rowKey(i), ref
}

// readIndex is readKey with the row as its number.
func (w *workload) readIndex() (int, int64) {
	return w.rng.IntN(w.rows), 1 + w.rng.Int64N(refs)
}

func (w *workload) batchKeys() []cellar.LookupKey {
	keys := make([]cellar.LookupKey, batchKeys)
	for j := range keys {
		row, ref := w.readKey()
		keys[j] = cellar.LookupKey{RowKey: row, Column: column}
		if batchExact(j) {
			keys[j].RefKey = &ref
		}
	}
	return keys
}

// newCell returns a cell under a row key no one has written.
func (w *workload) newCell() cellar.NewCell {
	w.n++
	return cellar.NewCell{
		Key:  cellar.Key{RowKey: fmt.Sprintf("%s-%d", w.prefix, w.n), Column: column, RefKey: 1},
		Body: body(w.rng.Uint64()),
	}
}

// cellarOp returns the named operation over HTTP through the public client.
func cellarOp(c *client.Client, name string, wl *workload) op {
	switch name {
	case "get":
		return func(ctx context.Context) error {
			row, ref := wl.readKey()
			_, err := c.Get(ctx, cellar.Key{RowKey: row, Column: column, RefKey: ref})
			return err
		}
	case "latest":
		return func(ctx context.Context) error {
			row, _ := wl.readKey()
			_, err := c.Latest(ctx, row, column)
			return err
		}
	case "batchGet":
		return func(ctx context.Context) error {
			for _, r := range c.BatchGet(ctx, wl.batchKeys()) {
				if r.Err != nil {
					return r.Err
				}
			}
			return nil
		}
	case "put":
		return func(ctx context.Context) error {
			_, created, err := c.Put(ctx, wl.newCell())
			if err == nil && !created {
				err = fmt.Errorf("put of a new key was not created")
			}
			return err
		}
	}
	panic("bench: unknown op " + name)
}

// preload writes the data set through the node itself (not over HTTP), in
// batches from a few writers.
func preload(ctx context.Context, store cellar.Store, rows int) error {
	const batch, writers = 500, 4
	cells := make(chan []cellar.NewCell)
	errc := make(chan error, writers)
	var wg sync.WaitGroup
	for range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for b := range cells {
				for _, r := range store.BatchPut(ctx, b) {
					if r.Err != nil {
						errc <- r.Err
						return
					}
				}
			}
		}()
	}
	var err error
	var b []cellar.NewCell
send:
	for i := range rows {
		for ref := int64(1); ref <= refs; ref++ {
			b = append(b, cellar.NewCell{Key: cellar.Key{RowKey: rowKey(i), Column: column, RefKey: ref}, Body: body(uint64(i*refs) + uint64(ref))})
		}
		if len(b) >= batch || i == rows-1 {
			select {
			case cells <- b:
			case err = <-errc:
				break send
			}
			b = nil
		}
	}
	close(cells)
	wg.Wait()
	if err == nil {
		select {
		case err = <-errc:
		default:
		}
	}
	if err != nil {
		return fmt.Errorf("preload: %w", err)
	}
	return nil
}
