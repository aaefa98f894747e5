package sqlite

import (
	"context"
	"database/sql"
	"time"
)

// DefaultCheckpointEvery is how often the checkpointer copies the WAL
// into the database file.
const DefaultCheckpointEvery = 50 * time.Millisecond

// backstopPages is the write connection's wal_autocheckpoint while the
// checkpointer runs (about 40 MiB of 4 KiB pages): should the loop fall
// behind or fail, the write connection checkpoints as SQLite would by
// itself, only later.
const backstopPages = 10000

// checkpointer returns the loop that checkpoints the WAL off the write
// connection's path. By itself SQLite checkpoints inside the COMMIT that
// takes the WAL past wal_autocheckpoint pages (1000): with group commit
// that is the committer, the one goroutine every put waits on, and in CPU
// profiles of durable puts at concurrency 64 the checkpoint took a fifth of
// its time. This loop runs PASSIVE checkpoints, which wait for no reader
// or writer, on a connection of db (the read pool) every interval; a commit meanwhile only
// appends to the WAL, and the next write transaction after a complete
// checkpoint starts the WAL over, as it would after an automatic one.
// Durability is unchanged: a commit is durable once the WAL is fsynced.
//
// SQLite has no call to learn the WAL's length without checkpointing, and
// modernc.org/sqlite exposes no WAL hook, hence the timer: a PASSIVE
// checkpoint with nothing to copy reads the WAL index and returns.
func checkpointer(db *sql.DB, every time.Duration) func(ctx context.Context) {
	return func(ctx context.Context) {
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
			// A failed checkpoint is left to the next round and to the
			// write connection's backstop, whose errors reach the writes.
			var busy, frames, copied int
			_ = db.QueryRowContext(ctx, "PRAGMA wal_checkpoint(PASSIVE)").Scan(&busy, &frames, &copied)
		}
	}
}
