package counter

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"modernc.org/sqlite" // also registers the "sqlite" driver
	sqlite3 "modernc.org/sqlite/lib"

	"github.com/cellar-db/cellar"
	cellarsqlite "github.com/cellar-db/cellar/internal/sqlite"
)

// Journal is the counter buffer of a single cellar process. Every
// increment is committed to a local SQLite journal before it is
// acknowledged: the journal runs in WAL mode with synchronous=FULL, so a
// commit returns after an fsync, and concurrent increments share one
// commit (group commit, as sqlstore's committer). Increments are summed
// per key in memory and flushed to the node on an interval.
//
// A flush is made exactly-once across crashes by a flush intent: before
// the node sees a flush, the journal records its ID and the journal
// sequence it covers; after the node confirms it, the covered entries and
// the intent are deleted in one transaction. On start, a leftover intent is
// reapplied with its own ID, which the node skips if it had applied it.
//
// Over several storage nodes (the sharding layer), a flush that some nodes
// applied and others did not is split: the failed nodes' deltas are
// carried, under the flush's ID, in the journal's carried table, and the
// rest of the flush is let go. While a node has carried deltas, the keys
// it holds stay buffered (they are held back from newer flushes, and their
// journal entries are kept), so that the other nodes' counters go on being
// flushed. A carried flush is retried, with its own ID, at every round.
//
// Reads add the durable value, the flush in progress and the buffered
// increments, so they are exact as long as this process is the only
// writer of its counters (see docs/COUNTERS.md).
type Journal struct {
	node   cellar.CounterNode
	placer cellar.CounterPlacer // node, if it names the storage node of a key; else nil
	db     *sql.DB              // one connection: SQLite has one writer
	insert *sql.Stmt            // the committer's INSERT INTO incr, prepared once
	opts   Options
	log    *slog.Logger
	stats  stats

	queue   chan *incrReq
	nextSeq int64           // the committer's own: the last journal entry number used
	ctx     context.Context // cancelled by Close, after the last increment
	cancel  context.CancelFunc
	wg      sync.WaitGroup // the committer and the flusher
	incrs   sync.WaitGroup // increments between their closed check and their result

	flushMu sync.Mutex // serializes flush rounds
	// compacted is the journal sequence up to which a round with every
	// pending key held back last summed the journal (flushMu).
	compacted int64

	mu sync.Mutex // protects the fields below, and flight.deltas
	// durable holds the node's value of every key with increments in
	// pending, reserved or flight (loaded before the first of them is
	// accepted), except the keys of a flight recovered at start, whose
	// values are unknown until it is applied. Entries of keys with nothing
	// buffered are dropped at each flush round, so that memory follows the
	// keys in use and reads of idle keys go to the node.
	durable  map[string]int64
	pending  map[string]int64 // committed increments not yet in a flight, summed by key
	reserved map[string]*reservation
	flight   *flight
	// carried holds, by flush ID, the deltas of flushes that some nodes
	// applied and others did not (the flights' unapplied parts); carryOf
	// maps each of their keys to its flush. A key is in at most one of
	// the flight and the carried flushes.
	carried map[string]*flight
	carryOf map[string]*flight
	seq     int64         // journal sequence of the last committed increment
	gen     uint64        // bumped whenever a flush is applied
	applied chan struct{} // closed, and replaced, whenever a flush is applied
	closed  bool
}

// reservation is what increments queued for the journal, but not yet
// committed, could add to a key: the sum of the positive ones and of the
// negative ones, so that the overflow check holds whichever of them commit.
type reservation struct {
	pos, neg int64
	n        int
}

// flight is a flush between its start and the node's confirmation.
type flight struct {
	id   string
	upto int64 // journal sequence it covers: every entry <= upto
	// deltas is guarded by Journal.mu; the other fields belong to the
	// flush round (Journal.flushMu).
	deltas    map[string]int64
	persisted bool // its intent is in the journal
	applied   bool // the node confirmed it; the journal is not truncated yet
	keys      int  // keys applied
	// held are the keys left out of the flight, although they had
	// increments up to upto, because their node has carried deltas: their
	// journal entries outlive the flight.
	held []string
}

// incrReq is one increment queued for the committer.
type incrReq struct {
	ctx   context.Context
	key   string
	by    int64
	done  chan struct{}
	value int64
	err   error
}

var _ cellar.CounterStore = (*Journal)(nil)

const journalSchema = `
CREATE TABLE IF NOT EXISTS incr (
	seq INTEGER PRIMARY KEY,
	key TEXT NOT NULL,
	by INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS flushes (
	id TEXT PRIMARY KEY,
	upto INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS held (
	flush_id TEXT NOT NULL,
	key TEXT NOT NULL,
	PRIMARY KEY (flush_id, key)
);
CREATE TABLE IF NOT EXISTS carried (
	flush_id TEXT NOT NULL,
	key TEXT NOT NULL,
	delta INTEGER NOT NULL,
	PRIMARY KEY (flush_id, key)
);
CREATE TABLE IF NOT EXISTS rejected (
	flush_id TEXT NOT NULL,
	key TEXT NOT NULL,
	delta INTEGER NOT NULL,
	at_ms INTEGER NOT NULL,
	PRIMARY KEY (flush_id, key)
);
`

// OpenJournal opens (creating it if needed) the journal at path in front
// of node, replays what it holds, and starts flushing every
// opts.FlushInterval. A flush left unfinished by a crash is reapplied
// before OpenJournal returns if the node answers; otherwise it is retried
// in the background, and the counters it holds wait for it. The journal
// file is locked: a second process cannot open it.
func OpenJournal(ctx context.Context, path string, node cellar.CounterNode, opts Options) (*Journal, error) {
	opts.setDefaults()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, fmt.Errorf("create directory for counter journal %s: %w", path, err)
	}
	q := url.Values{}
	for _, p := range []string{"journal_mode(WAL)", "synchronous(FULL)", "locking_mode(EXCLUSIVE)", "busy_timeout(1000)"} {
		q.Add("_pragma", p)
	}
	q.Set("_txlock", "immediate")
	db, err := sql.Open("sqlite", cellarsqlite.FileURI(path, q))
	if err != nil {
		return nil, fmt.Errorf("open counter journal %s: %w", path, err)
	}
	db.SetMaxOpenConns(1)
	db.SetMaxIdleConns(1)
	db.SetConnMaxIdleTime(0)
	db.SetConnMaxLifetime(0)
	// The schema, then a write whatever the schema needed: in EXCLUSIVE
	// locking mode the first write takes the file's lock and keeps it, so
	// a second process is refused here, at its start, rather than both
	// failing busy on their increments later. (A journal that exists needs
	// no schema, and a read alone takes no such lock.)
	if _, err := db.ExecContext(ctx, journalSchema+";\nPRAGMA user_version = 1"); err != nil {
		db.Close()
		var serr *sqlite.Error
		if errors.As(err, &serr) && serr.Code()&0xff == sqlite3.SQLITE_BUSY {
			return nil, fmt.Errorf("open counter journal %s: it is locked: another process has it open (one process per journal; several servers share counters in Redis mode, docs/COUNTERS.md)", path)
		}
		return nil, fmt.Errorf("open counter journal %s: %w", path, err)
	}
	insert, err := db.PrepareContext(ctx, "INSERT INTO incr (seq, key, by) VALUES (?, ?, ?)")
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("open counter journal %s: %w", path, err)
	}
	j := &Journal{
		node:     node,
		placer:   placer(node),
		db:       db,
		insert:   insert,
		opts:     opts,
		log:      opts.Logger,
		queue:    make(chan *incrReq, 4*opts.MaxGroup),
		durable:  make(map[string]int64),
		pending:  make(map[string]int64),
		reserved: make(map[string]*reservation),
		carried:  make(map[string]*flight),
		carryOf:  make(map[string]*flight),
		applied:  make(chan struct{}),
	}
	if err := j.replay(ctx); err != nil {
		insert.Close()
		db.Close()
		return nil, fmt.Errorf("replay counter journal %s: %w", path, err)
	}
	// Read what replay left before the loops start: the flush loop may
	// take the flight (under j.mu) as soon as it runs.
	var leftover string
	if j.flight != nil {
		leftover = j.flight.id
	}
	for id := range j.carried {
		leftover = id
	}
	j.ctx, j.cancel = context.WithCancel(context.Background())
	tick, stopTick := opts.Clock.Tick(opts.FlushInterval)
	j.wg.Add(2)
	go j.commitLoop()
	go j.flushLoop(tick, stopTick)
	if leftover != "" {
		if err := j.Flush(ctx); err != nil {
			j.log.Warn("counter flush interrupted by a restart is not applied yet; retrying at each interval", "flush", leftover, "err", err)
		}
	}
	return j, nil
}

// replay loads the journal: the entries a leftover flush intent covers
// become the flight (less the keys set aside as overflowing and the keys
// it held back), the others pending increments; carried deltas become
// carried flushes. Like a leftover flight, these may have been applied on
// their nodes, so the durable values of their keys are unknown until they
// are applied again.
func (j *Journal) replay(ctx context.Context) error {
	var f *flight
	var id string
	var upto int64
	err := j.db.QueryRowContext(ctx, "SELECT id, upto FROM flushes").Scan(&id, &upto)
	switch {
	case err == nil:
		f = &flight{id: id, upto: upto, deltas: make(map[string]int64), persisted: true}
	case !errors.Is(err, sql.ErrNoRows):
		return fmt.Errorf("read flush intent: %w", err)
	}
	rejected := make(map[string]bool)
	held := make(map[string]bool)
	if f != nil {
		for _, set := range []struct {
			m    map[string]bool
			q    string
			what string
		}{
			{rejected, "SELECT key FROM rejected WHERE flush_id = ?", "deltas set aside"},
			{held, "SELECT key FROM held WHERE flush_id = ?", "keys held back"},
		} {
			if err := j.readKeys(ctx, set.m, set.q, f.id); err != nil {
				return fmt.Errorf("read %s: %w", set.what, err)
			}
		}
		for k := range held {
			f.held = append(f.held, k)
		}
	}
	rows, err := j.db.QueryContext(ctx, "SELECT seq, key, by FROM incr ORDER BY seq")
	if err != nil {
		return fmt.Errorf("read journal: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var seq, by int64
		var k string
		if err := rows.Scan(&seq, &k, &by); err != nil {
			return fmt.Errorf("read journal: %w", err)
		}
		m := j.pending
		if f != nil && seq <= f.upto && !held[k] {
			if rejected[k] {
				continue
			}
			m = f.deltas
		}
		v, ok := add(m[k], by)
		if !ok {
			return fmt.Errorf("journal entry %d overflows the buffered delta of counter %q", seq, k)
		}
		m[k] = v
		j.seq = max(j.seq, seq)
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("read journal: %w", err)
	}
	if f != nil {
		j.seq = max(j.seq, f.upto)
		j.flight = f
	}
	j.nextSeq = j.seq
	return j.replayCarried(ctx)
}

// readKeys adds to m the keys query (of one flush ID argument) returns.
func (j *Journal) readKeys(ctx context.Context, m map[string]bool, query, id string) error {
	rows, err := j.db.QueryContext(ctx, query, id)
	if err != nil {
		return err
	}
	defer rows.Close()
	for rows.Next() {
		var k string
		if err := rows.Scan(&k); err != nil {
			return err
		}
		m[k] = true
	}
	return rows.Err()
}

// replayCarried loads the carried table into carried flushes.
func (j *Journal) replayCarried(ctx context.Context) error {
	rows, err := j.db.QueryContext(ctx, "SELECT flush_id, key, delta FROM carried")
	if err != nil {
		return fmt.Errorf("read carried deltas: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var id, k string
		var d int64
		if err := rows.Scan(&id, &k, &d); err != nil {
			return fmt.Errorf("read carried deltas: %w", err)
		}
		if _, ok := j.carryOf[k]; ok || j.inFlight(k) {
			return fmt.Errorf("counter %q has deltas in two flushes (%s and another): the journal is inconsistent", k, id)
		}
		c := j.carried[id]
		if c == nil {
			c = &flight{id: id, deltas: make(map[string]int64), persisted: true}
			j.carried[id] = c
		}
		c.deltas[k] = d
		j.carryOf[k] = c
	}
	return rows.Err()
}

// Incr implements cellar.CounterStore. It returns once the increment is
// committed to the journal.
func (j *Journal) Incr(ctx context.Context, key string, by int64) (int64, error) {
	if err := cellar.ValidateRowKey(key); err != nil {
		return 0, err
	}
	for {
		if err := j.load(ctx, []string{key}); err != nil {
			return 0, err
		}
		j.mu.Lock()
		if j.closed {
			j.mu.Unlock()
			return 0, errClosed
		}
		d, ok := j.durable[key]
		if !ok {
			j.mu.Unlock() // dropped as idle since load: load again
			continue
		}
		r := j.reserved[key]
		if r == nil {
			r = &reservation{}
		}
		up, down := max(by, 0), min(by, 0)
		p := j.pending[key]
		f := j.flightDelta(key)
		_, ok1 := sum(d, f, p, r.pos, up)
		_, ok2 := sum(d, f, p, r.neg, down)
		_, ok3 := sum(p, r.pos, up)
		_, ok4 := sum(p, r.neg, down)
		_, ok5 := add(r.pos, up)
		_, ok6 := add(r.neg, down)
		if !ok1 || !ok2 || !ok3 || !ok4 || !ok5 || !ok6 {
			j.mu.Unlock()
			return 0, overflowError(key, by)
		}
		r.pos += up
		r.neg += down
		r.n++
		j.reserved[key] = r
		j.incrs.Add(1)
		j.mu.Unlock()
		break
	}
	defer j.incrs.Done()
	req := &incrReq{ctx: ctx, key: key, by: by, done: make(chan struct{})}
	select {
	case j.queue <- req:
	case <-ctx.Done():
		j.mu.Lock()
		j.unreserve(key, by)
		j.mu.Unlock()
		return 0, cellar.Unavailable(ctx.Err(), "counter %q: increment not started before the deadline", truncate(key, 80))
	}
	// Once queued, the committer decides; wait for it even past ctx, so
	// that the answer is the truth.
	<-req.done
	return req.value, req.err
}

var errClosed = cellar.Errorf(cellar.EUNAVAILABLE, "counter store is closing")

// flightDelta returns the key's delta in the flight or in a carried
// flush (it is in at most one). j.mu must be held.
func (j *Journal) flightDelta(key string) int64 {
	if c := j.carryOf[key]; c != nil {
		return c.deltas[key]
	}
	if j.flight == nil {
		return 0
	}
	return j.flight.deltas[key]
}

// unreserve removes one queued increment of key. j.mu must be held.
func (j *Journal) unreserve(key string, by int64) {
	r := j.reserved[key]
	r.pos -= max(by, 0)
	r.neg -= min(by, 0)
	if r.n--; r.n == 0 {
		delete(j.reserved, key)
	}
}

// load makes sure durable holds the node's value of each key. It reads
// the node, and keeps what it read only if, by then, no flush was applied
// (gen unchanged) and the key is in no flight: the value read is then
// current. A key in a flight without a durable value waits for the flight
// to be applied, since the node may have it applied already. That is a
// flight recovered at start, whose process may have had it applied, and
// the first flight of increments replayed at start, whose keys' values
// were never loaded; every other key in a flight had its value loaded
// before its first increment was accepted.
func (j *Journal) load(ctx context.Context, keys []string) error {
	return j.loadKeys(ctx, keys, true)
}

// loadKeys is load; without waitFlights a key in a flight is left out
// rather than waited for (preload's best effort).
func (j *Journal) loadKeys(ctx context.Context, keys []string, waitFlights bool) error {
	for {
		j.mu.Lock()
		if j.closed {
			j.mu.Unlock()
			return errClosed
		}
		var need []string
		var wait chan struct{}
		var waitKey string
		for _, k := range keys {
			if _, ok := j.durable[k]; ok {
				continue
			}
			if j.inFlight(k) {
				if !waitFlights {
					continue
				}
				wait, waitKey = j.applied, k
				break
			}
			need = append(need, k)
		}
		gen := j.gen
		j.mu.Unlock()
		if wait != nil {
			if j.opts.loadWaits != nil {
				j.opts.loadWaits()
			}
			select {
			case <-wait:
				continue
			case <-j.ctx.Done(): // Close: the flush may never come now
				return errClosed
			case <-ctx.Done():
				return cellar.Unavailable(ctx.Err(), "counter %q: waiting for a flush of its increments from before a restart to be applied", truncate(waitKey, 80))
			}
		}
		if len(need) == 0 {
			return nil
		}
		// A node that fails leaves its keys out of vals; the keys of the
		// nodes that answered are loaded all the same.
		vals, err := j.node.Counters(ctx, need)
		if err != nil && len(vals) == 0 {
			return fmt.Errorf("read durable counters: %w", err)
		}
		j.mu.Lock()
		if j.gen == gen {
			// A key that went into a flight since it was read is left
			// for the next turn, which waits for that flight.
			again := false
			for _, k := range need {
				if _, ok := j.durable[k]; ok {
					continue
				}
				if j.inFlight(k) {
					again = true
					continue
				}
				v, ok := vals[k]
				if !ok && err != nil {
					continue
				}
				j.durable[k] = v
			}
			j.mu.Unlock()
			if again && waitFlights {
				continue // a failed node's keys are read, and fail, again
			}
			if err != nil {
				return fmt.Errorf("read durable counters: %w", err)
			}
			return nil
		}
		j.mu.Unlock()
	}
}

// inFlight reports whether key has a delta in the flight or in a carried
// flush. j.mu must be held.
func (j *Journal) inFlight(key string) bool {
	if _, ok := j.carryOf[key]; ok {
		return true
	}
	if j.flight == nil {
		return false
	}
	_, ok := j.flight.deltas[key]
	return ok
}

// Counter implements cellar.CounterStore.
func (j *Journal) Counter(ctx context.Context, key string) (int64, error) {
	r := j.BatchCounters(ctx, []string{key})
	return r[0].Value, r[0].Err
}

// BatchCounters implements cellar.CounterStore. Keys with buffered
// increments are answered from memory (after loading their durable value if
// need be); the others are read from the node in one call.
func (j *Journal) BatchCounters(ctx context.Context, keys []string) []cellar.CounterResult {
	res := make([]cellar.CounterResult, len(keys))
	todo := make([]int, 0, len(keys))
	for i, err := range validateKeys(keys) {
		res[i].Key = keys[i]
		if err != nil {
			res[i].Err = err
			continue
		}
		todo = append(todo, i)
	}
	for try := 0; len(todo) > 0; try++ {
		var load, fromNode []int
		j.mu.Lock()
		for _, i := range todo {
			k := keys[i]
			if d, ok := j.durable[k]; ok {
				v, ok := sum(d, j.flightDelta(k), j.pending[k])
				if !ok {
					res[i].Err = cellar.Errorf(cellar.EINTERNAL, "counter %q is out of range", truncate(k, 80))
				}
				res[i].Value = v
				continue
			}
			if _, inPending := j.pending[k]; inPending || j.inFlight(k) {
				load = append(load, i)
			} else {
				fromNode = append(fromNode, i)
			}
		}
		j.mu.Unlock()
		if len(fromNode) > 0 {
			ks := make([]string, len(fromNode))
			for n, i := range fromNode {
				ks[n] = keys[i]
			}
			vals, err := j.node.Counters(ctx, ks)
			nodeResults(res, fromNode, keys, vals, err)
		}
		todo = todo[:0]
		if len(load) > 0 {
			ks := make([]string, len(load))
			for n, i := range load {
				ks[n] = keys[i]
			}
			if err := j.load(ctx, ks); err != nil {
				// The keys of nodes that answered were loaded: they go
				// round again; those of a failed node carry its error.
				j.mu.Lock()
				for _, i := range load {
					if _, ok := j.durable[keys[i]]; ok {
						todo = append(todo, i)
					} else {
						res[i].Err = err
					}
				}
				j.mu.Unlock()
				continue
			}
			todo = append(todo, load...)
		}
	}
	return res
}

// Flush flushes the buffered increments now (the flusher does so every
// interval): it retries the carried flushes, finishes a flush left in
// progress, then flushes everything buffered. It returns nil once the
// nodes confirmed all of it, or the errors that stopped a part; each part
// is retried, with the same ID, by the next call. A carried flush that
// fails holds back only its nodes' keys, and a flush that some nodes
// applied is split (see Journal), so one node that is down does not hold
// back the others' counters.
func (j *Journal) Flush(ctx context.Context) error {
	j.flushMu.Lock()
	defer j.flushMu.Unlock()
	var errs []error
	j.mu.Lock()
	carried := slices.Collect(maps.Values(j.carried))
	j.mu.Unlock()
	slices.SortFunc(carried, func(a, b *flight) int { return strings.Compare(a.id, b.id) })
	for _, c := range carried {
		if err := j.flushCarried(ctx, c); err != nil {
			errs = append(errs, err)
		}
	}
	// A flight left by an earlier failed flush (or replayed after a crash)
	// goes first, then what is pending now: one Flush that returns nil
	// wrote everything acknowledged before it began, which Close relies on.
	for i := 0; i < 2; i++ {
		j.mu.Lock()
		leftover := j.flight != nil
		j.mu.Unlock()
		split, err := j.flush(ctx)
		if err != nil {
			errs = append(errs, err)
			if !split {
				break
			}
		}
		if !leftover {
			break
		}
	}
	if len(errs) > 0 {
		j.stats.flushErrors.Add(1)
		return errors.Join(errs...)
	}
	return nil
}

// flush applies the flight, starting one with what is pending if there is
// none. split reports that the flight was applied in part and let go, its
// unapplied part carried (err says why it was not applied whole).
func (j *Journal) flush(ctx context.Context) (split bool, err error) {
	// The journal's own statements are short and local: they run to the
	// end even if ctx ends, since the driver may report a cancelled
	// statement as failed after it committed. And each can be repeated.
	local := context.WithoutCancel(ctx)
	j.mu.Lock()
	f := j.flight
	if f == nil {
		if f = j.takePending(); f == nil {
			j.evictIdle()
			upto, held := j.seq, len(j.pending) > 0
			j.mu.Unlock()
			if held && upto > j.compacted {
				// Every pending key is held back (its node has a carried
				// flush) and no flight covers any entry: the journal
				// holds only pending entries up to upto, summed here as
				// a truncation would sum them, lest it grow by one entry
				// per commit while only the down node's counters are
				// busy.
				if err := j.inTx(local, func(tx *sql.Tx) error { return compactHeldTx(local, tx, upto) }); err != nil {
					return false, fmt.Errorf("compact counter journal: %w", err)
				}
				j.compacted = upto
			}
			return false, nil
		}
		j.flight = f
	}
	j.mu.Unlock()

	if !f.persisted {
		if err := j.recordIntent(local, f); err != nil {
			return false, fmt.Errorf("record counter flush intent %s: %w", f.id, err)
		}
		f.persisted = true
	}
	if !f.applied {
		j.mu.Lock()
		deltas := maps.Clone(f.deltas)
		j.mu.Unlock()
		n, err := applyFlush(ctx, j.node, f.id, deltas, j.opts.FlushTimeout, func(_ context.Context, bad, durable map[string]int64) error {
			return j.reject(local, f, bad, durable)
		})
		if err != nil {
			unapplied, ok := j.partly(err, f)
			if !ok && j.placer != nil {
				// Failed whole, on every node of its keys: carried all
				// the same, so that only those nodes' keys wait and the
				// other nodes' go on being flushed. (Over a node that
				// does not place keys, the flight stays: its newer
				// increments, all on that node, would fail alike.)
				unapplied, ok = j.keysOf(f), true
			}
			if ok {
				if serr := j.split(local, f, unapplied); serr != nil {
					return false, errors.Join(err, serr)
				}
				return true, err
			}
			return false, err
		}
		f.applied, f.keys = true, n
	}
	if err := j.truncate(local, f); err != nil {
		return false, err
	}

	j.mu.Lock()
	j.addDurable(f.deltas)
	j.flight = nil
	j.appliedLocked()
	j.mu.Unlock()
	j.stats.flushed(f.keys)
	return false, nil
}

// takePending makes a flight of the pending increments, less the keys held
// back: those of a carried flush, and those of the nodes with one. It
// returns nil if that leaves nothing. j.mu must be held.
func (j *Journal) takePending() *flight {
	if len(j.pending) == 0 {
		return nil
	}
	f := &flight{id: newFlushID("j-"), upto: j.seq, deltas: j.pending}
	j.pending = make(map[string]int64)
	if len(j.carried) == 0 {
		return f
	}
	stuck := make(map[string]bool)
	if j.placer != nil {
		for k := range j.carryOf {
			stuck[j.placer.CounterNodeName(k)] = true
		}
	}
	for k, d := range f.deltas {
		if _, ok := j.carryOf[k]; ok || (j.placer != nil && stuck[j.placer.CounterNodeName(k)]) {
			j.pending[k] = d
			f.held = append(f.held, k)
			delete(f.deltas, k)
		}
	}
	if len(f.deltas) == 0 {
		return nil // all held back: the pending increments stay as they were
	}
	return f
}

// recordIntent records f's intent, and the keys it holds back, in one
// transaction.
func (j *Journal) recordIntent(ctx context.Context, f *flight) error {
	return j.inTx(ctx, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, "INSERT OR REPLACE INTO flushes (id, upto) VALUES (?, ?)", f.id, f.upto); err != nil {
			return err
		}
		for _, k := range f.held {
			if _, err := tx.ExecContext(ctx, "INSERT OR IGNORE INTO held (flush_id, key) VALUES (?, ?)", f.id, k); err != nil {
				return err
			}
		}
		return nil
	})
}

// keysOf returns the keys of f.
func (j *Journal) keysOf(f *flight) []string {
	j.mu.Lock()
	defer j.mu.Unlock()
	return slices.Collect(maps.Keys(f.deltas))
}

// placer returns node as a cellar.CounterPlacer, or nil if it is not one.
func placer(node cellar.CounterNode) cellar.CounterPlacer {
	p, _ := node.(cellar.CounterPlacer)
	return p
}

// partly reports whether err says that the nodes applied part of f's
// deltas (a *cellar.PartialApplyError naming only some of f's keys), and
// returns f's keys it names.
func (j *Journal) partly(err error, f *flight) (unapplied []string, ok bool) {
	var pe *cellar.PartialApplyError
	if !errors.As(err, &pe) {
		return nil, false
	}
	j.mu.Lock()
	defer j.mu.Unlock()
	for _, k := range pe.Unapplied {
		if _, in := f.deltas[k]; in {
			unapplied = append(unapplied, k)
		}
	}
	return unapplied, len(unapplied) < len(f.deltas)
}

// split lets the flight f go after the nodes applied all of it but the
// deltas of unapplied (maybe none of it), which it carries: in one
// transaction it records them in the carried table and deletes the
// journal entries and the intent as for an applied flush.
func (j *Journal) split(ctx context.Context, f *flight, unapplied []string) error {
	j.mu.Lock()
	carry := make(map[string]int64, len(unapplied))
	for _, k := range unapplied {
		carry[k] = f.deltas[k]
	}
	j.mu.Unlock()
	err := j.inTx(ctx, func(tx *sql.Tx) error {
		for k, d := range carry {
			if _, err := tx.ExecContext(ctx, "INSERT OR REPLACE INTO carried (flush_id, key, delta) VALUES (?, ?, ?)", f.id, k, d); err != nil {
				return err
			}
		}
		return truncateTx(ctx, tx, f)
	})
	if err != nil {
		return fmt.Errorf("carry the unapplied part of counter flush %s: %w", f.id, err)
	}
	c := &flight{id: f.id, deltas: carry, persisted: true}
	j.mu.Lock()
	applied := make(map[string]int64, len(f.deltas)-len(carry))
	for k, d := range f.deltas {
		if _, ok := carry[k]; !ok {
			applied[k] = d
		}
	}
	j.addDurable(applied)
	j.flight = nil
	j.carried[c.id] = c
	for k := range carry {
		j.carryOf[k] = c
	}
	j.appliedLocked()
	j.mu.Unlock()
	if len(applied) > 0 {
		j.stats.flushed(len(nonZero(applied)))
	}
	j.log.Warn("counter flush not applied on every node; the rest is carried and retried at each interval", "flush", f.id, "carried_keys", len(carry), "applied_keys", len(applied))
	return nil
}

// flushCarried retries the carried flush c. What the nodes apply of it
// leaves the carried table.
func (j *Journal) flushCarried(ctx context.Context, c *flight) error {
	local := context.WithoutCancel(ctx)
	j.mu.Lock()
	deltas := maps.Clone(c.deltas)
	j.mu.Unlock()
	n, err := applyFlush(ctx, j.node, c.id, deltas, j.opts.FlushTimeout, func(_ context.Context, bad, durable map[string]int64) error {
		return j.reject(local, c, bad, durable)
	})
	// What was applied is c's deltas now (less those set aside meanwhile),
	// but those still unapplied.
	unapplied, ok := j.partly(err, c)
	if err != nil && !ok {
		return err
	}
	j.mu.Lock()
	done := maps.Clone(c.deltas)
	for _, k := range unapplied {
		delete(done, k)
	}
	j.mu.Unlock()
	if err != nil {
		n = len(nonZero(done))
	}
	if derr := j.inTx(local, func(tx *sql.Tx) error {
		for k := range done {
			if _, err := tx.ExecContext(local, "DELETE FROM carried WHERE flush_id = ? AND key = ?", c.id, k); err != nil {
				return err
			}
		}
		return nil
	}); derr != nil {
		return errors.Join(err, fmt.Errorf("drop the applied part of carried counter flush %s: %w", c.id, derr))
	}
	j.mu.Lock()
	j.addDurable(done)
	for k := range done {
		delete(c.deltas, k)
		delete(j.carryOf, k)
	}
	if len(c.deltas) == 0 {
		delete(j.carried, c.id)
	}
	j.appliedLocked()
	j.mu.Unlock()
	j.stats.flushed(n)
	return err
}

// addDurable adds applied deltas to the durable values held. j.mu must be
// held.
func (j *Journal) addDurable(deltas map[string]int64) {
	for k, d := range deltas {
		if v, ok := j.durable[k]; ok {
			if v, ok = add(v, d); ok {
				j.durable[k] = v
			} else {
				delete(j.durable, k) // cannot happen; reload rather than guess
			}
		}
	}
}

// appliedLocked tells the waiting reads that a flush was applied, and
// drops what became idle. j.mu must be held.
func (j *Journal) appliedLocked() {
	j.gen++
	close(j.applied)
	j.applied = make(chan struct{})
	j.evictIdle()
}

// inTx runs f in one journal transaction.
func (j *Journal) inTx(ctx context.Context, f func(tx *sql.Tx) error) error {
	tx, err := j.db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	if err := f(tx); err != nil {
		return err
	}
	return tx.Commit()
}

// truncate deletes the journal entries and the intent of an applied flush.
func (j *Journal) truncate(ctx context.Context, f *flight) error {
	if err := j.inTx(ctx, func(tx *sql.Tx) error { return truncateTx(ctx, tx, f) }); err != nil {
		return fmt.Errorf("truncate counter journal after flush %s: %w", f.id, err)
	}
	return nil
}

// truncateTx deletes, in tx, the journal entries f covers (but those of the
// keys it held back) and its intent.
func truncateTx(ctx context.Context, tx *sql.Tx, f *flight) error {
	if _, err := tx.ExecContext(ctx, "DELETE FROM incr WHERE seq <= ? AND key NOT IN (SELECT key FROM held WHERE flush_id = ?)", f.upto, f.id); err != nil {
		return err
	}
	if _, err := tx.ExecContext(ctx, "DELETE FROM held WHERE flush_id = ?", f.id); err != nil {
		return err
	}
	if _, err := tx.ExecContext(ctx, "DELETE FROM flushes WHERE id = ?", f.id); err != nil {
		return err
	}
	if len(f.held) == 0 {
		return nil
	}
	return compactHeldTx(ctx, tx, f.upto)
}

// compactHeldTx sums, in tx, each key's journal entries at or below upto
// into its latest one, once a truncation up to there left only those of
// the keys held back (a node's that is down): so while a node is down its
// share of the journal grows by one entry per key and round, not by every
// commit's. The entries are all pending, and any later intent covers or
// holds them all alike (they lie below its upto), so one entry at the
// latest seq replays as they did. A key whose entries do not add up in
// int64 in seq order, as replay adds them, is left as it is.
func compactHeldTx(ctx context.Context, tx *sql.Tx, upto int64) error {
	type entries struct {
		last, sum int64
		ok        bool
		older     []int64
	}
	byKey := make(map[string]*entries)
	rows, err := tx.QueryContext(ctx, "SELECT seq, key, by FROM incr WHERE seq <= ? ORDER BY seq", upto)
	if err != nil {
		return err
	}
	for rows.Next() {
		var seq, by int64
		var k string
		if err := rows.Scan(&seq, &k, &by); err != nil {
			rows.Close()
			return err
		}
		e := byKey[k]
		if e == nil {
			byKey[k] = &entries{last: seq, sum: by, ok: true}
			continue
		}
		e.older = append(e.older, e.last)
		e.last = seq
		if e.ok {
			e.sum, e.ok = add(e.sum, by)
		}
	}
	if err := rows.Err(); err != nil {
		rows.Close()
		return err
	}
	if err := rows.Close(); err != nil {
		return err
	}
	var drop []int64
	for _, e := range byKey {
		if len(e.older) == 0 || !e.ok {
			continue
		}
		if _, err := tx.ExecContext(ctx, "UPDATE incr SET by = ? WHERE seq = ?", e.sum, e.last); err != nil {
			return err
		}
		drop = append(drop, e.older...)
	}
	const chunk = 500 // bound variables a statement, well within SQLite's limit
	for len(drop) > 0 {
		n := min(len(drop), chunk)
		args := make([]any, n)
		for i, seq := range drop[:n] {
			args[i] = seq
		}
		if _, err := tx.ExecContext(ctx, "DELETE FROM incr WHERE seq IN (?"+strings.Repeat(", ?", n-1)+")", args...); err != nil {
			return err
		}
		drop = drop[n:]
	}
	return nil
}

// reject sets aside deltas of f (the flight or a carried flush) that would
// overflow their counters: it records them in the journal's rejected table
// (so a replay of f leaves them out too, and an operator can see them),
// and drops them from f.
func (j *Journal) reject(ctx context.Context, f *flight, bad, durable map[string]int64) error {
	now := j.opts.Clock.Now().UnixMilli()
	err := j.inTx(ctx, func(tx *sql.Tx) error {
		for k, d := range bad {
			if _, err := tx.ExecContext(ctx, "INSERT OR IGNORE INTO rejected (flush_id, key, delta, at_ms) VALUES (?, ?, ?, ?)", f.id, k, d, now); err != nil {
				return err
			}
			if _, err := tx.ExecContext(ctx, "DELETE FROM carried WHERE flush_id = ? AND key = ?", f.id, k); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	j.mu.Lock()
	for k, d := range bad {
		delete(f.deltas, k)
		if j.carryOf[k] == f {
			delete(j.carryOf, k)
		}
		if _, ok := j.durable[k]; ok {
			j.durable[k] = durable[k]
		}
		j.log.Error("counter delta set aside: it would overflow the counter", "key", k, "delta", d, "durable", durable[k], "flush", f.id)
	}
	if c := j.carried[f.id]; c == f && len(f.deltas) == 0 {
		delete(j.carried, f.id)
	}
	j.mu.Unlock()
	j.stats.rejected.Add(int64(len(bad)))
	return nil
}

// evictIdle drops the durable values of keys with nothing buffered. j.mu
// must be held.
func (j *Journal) evictIdle() {
	for k := range j.durable {
		if _, ok := j.pending[k]; ok {
			continue
		}
		if _, ok := j.reserved[k]; ok {
			continue
		}
		if j.inFlight(k) {
			continue
		}
		delete(j.durable, k)
	}
}

// Stats returns the buffer's counts of increments and flushes.
func (j *Journal) Stats() Stats { return j.stats.snapshot() }

// Close stops accepting increments, waits for those in progress, stops the
// flusher and makes a last flush, so that a clean shutdown leaves the
// journal empty; what that flush cannot apply is replayed by the next
// OpenJournal.
func (j *Journal) Close() error {
	j.mu.Lock()
	if j.closed {
		j.mu.Unlock()
		return nil
	}
	j.closed = true
	j.mu.Unlock()
	j.incrs.Wait()
	j.cancel()
	j.wg.Wait()
	ctx, cancel := context.WithTimeout(context.Background(), j.opts.FlushTimeout)
	defer cancel()
	if err := j.Flush(ctx); err != nil {
		j.log.Warn("last counter flush failed; the journal keeps it for the next start", "err", err)
	}
	if err := errors.Join(j.insert.Close(), j.db.Close()); err != nil {
		return fmt.Errorf("close counter journal: %w", err)
	}
	return nil
}

// flushLoop flushes at every tick until Close.
func (j *Journal) flushLoop(tick <-chan time.Time, stop func()) {
	defer j.wg.Done()
	defer stop()
	for {
		select {
		case <-j.ctx.Done():
			return
		case <-tick:
			if err := j.Flush(j.ctx); err != nil && j.ctx.Err() == nil {
				j.log.Warn("counter flush failed; retrying at the next interval", "err", err)
			}
			j.opts.signalRound(j.ctx)
		}
	}
}

// commitLoop is the group committer: it writes every increment waiting in
// the queue, up to MaxGroup, in one transaction, so that they share its
// fsync.
func (j *Journal) commitLoop() {
	defer j.wg.Done()
	g := gatherer[*incrReq]{queue: j.queue, max: j.opts.MaxGroup, delay: j.opts.CommitDelay}
	for {
		var first *incrReq
		select {
		case first = <-j.queue:
		case <-j.ctx.Done():
			return // Close waited for every increment: the queue is empty
		}
		j.commit(g.gather(first))
	}
}

// commit journals one group. Increments whose callers gave up before the
// write are dropped, and told so: nothing they were not told about is
// written.
func (j *Journal) commit(group []*incrReq) {
	live := group[:0:0]
	for _, r := range group {
		if err := r.ctx.Err(); err != nil {
			r.err = cellar.Unavailable(err, "counter %q: increment not started before the deadline", truncate(r.key, 80))
			continue
		}
		live = append(live, r)
	}
	var err error
	if len(live) > 0 {
		// The group has no deadline: one caller leaving must not abort
		// the others' transaction, and the journal's statements wait on
		// nothing but the local disk (the file is locked exclusively), so
		// there is nothing a deadline could cut short. A context that can
		// end would also cost every statement a watcher goroutine in the
		// driver, on the path every increment waits on.
		var n int64
		n, err = j.write(context.Background(), j.nextSeq+1, live)
		// Sequence numbers are spent even by a failed write: it may have
		// committed nonetheless, and they need only increase.
		j.nextSeq += n
		if err != nil {
			err = cellar.Unavailable(err, "counter journal write failed")
			j.log.Error("counter journal write failed", "err", err)
		}
	}
	j.mu.Lock()
	for _, r := range group {
		if r.err == nil && err != nil {
			r.err = err
		}
		j.unreserve(r.key, r.by)
		if r.err != nil {
			continue
		}
		p := j.pending[r.key] + r.by // within range: reserved
		j.pending[r.key] = p
		v, ok := sum(j.durable[r.key], j.flightDelta(r.key), p)
		if !ok {
			j.log.Error("counter out of range after a checked increment", "key", r.key)
		}
		r.value = v
	}
	if err == nil && len(live) > 0 {
		j.seq = j.nextSeq
	}
	j.mu.Unlock()
	if err == nil && len(live) > 0 {
		j.stats.increments.Add(int64(len(live)))
		j.stats.commits.Add(1)
	}
	for _, r := range group {
		close(r.done)
	}
}

// write journals the increments in one transaction: one entry per key,
// numbered from first, holding the sum of that key's increments (they
// are acknowledged together, so they need not be told apart). It returns
// how many entries it wrote, or meant to write if it fails.
func (j *Journal) write(ctx context.Context, first int64, reqs []*incrReq) (int64, error) {
	type entry struct {
		key string
		by  int64
	}
	var entries []entry
	at := make(map[string]int, len(reqs)) // key -> its entry being summed
	for _, r := range reqs {
		if i, ok := at[r.key]; ok {
			if v, ok := add(entries[i].by, r.by); ok {
				entries[i].by = v
				continue
			}
		}
		at[r.key] = len(entries)
		entries = append(entries, entry{r.key, r.by})
	}
	n := int64(len(entries))
	tx, err := j.db.BeginTx(ctx, nil)
	if err != nil {
		return n, err
	}
	defer tx.Rollback()
	stmt := tx.StmtContext(ctx, j.insert)
	for i, e := range entries {
		if _, err := stmt.ExecContext(ctx, first+int64(i), e.key, e.by); err != nil {
			return n, err
		}
	}
	return n, tx.Commit()
}

// BatchIncr implements cellar.CounterStore: each increment is committed
// as Incr commits it, the batch's sharing commits.
func (j *Journal) BatchIncr(ctx context.Context, incrs []cellar.CounterIncrement) []cellar.CounterResult {
	j.preload(ctx, incrs)
	return batchIncr(ctx, incrs, j.Incr)
}

// preload reads the durable values of incrs' keys that the journal does
// not hold yet in one read (one query per storage node), rather than
// leaving each key's first Incr to read its own. It is a best effort that
// must not cost the batch what its increments, each as if sent alone,
// would not: a key in a flight is left out (only its own increments wait
// for a flush from before a restart), as is a key that is not valid, and
// the read gets half of what is left of ctx's time, so that a storage
// node that hangs holds up only its own keys' increments. What fails to
// load here is read again, and fails on its own, in its first Incr.
func (j *Journal) preload(ctx context.Context, incrs []cellar.CounterIncrement) {
	seen := make(map[string]bool, len(incrs))
	var keys []string
	j.mu.Lock()
	for _, in := range incrs {
		if seen[in.Key] {
			continue
		}
		seen[in.Key] = true
		if _, ok := j.durable[in.Key]; ok || j.inFlight(in.Key) || cellar.ValidateRowKey(in.Key) != nil {
			continue
		}
		keys = append(keys, in.Key)
	}
	closed := j.closed
	j.mu.Unlock()
	if len(keys) <= 1 || closed {
		return
	}
	if deadline, ok := ctx.Deadline(); ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithDeadline(ctx, time.Now().Add(time.Until(deadline)/2))
		defer cancel()
	}
	_ = j.loadKeys(ctx, keys, false) // a failure is each key's Incr's to report
}
