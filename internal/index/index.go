// Package index keeps secondary indexes over cells, as Schemaless does: an
// index names a column and typed fields of its cell bodies, and holds one
// entry per row, reflecting the row's latest cell of that column. The
// first field is the shard field: an entry lives on the logical shard of
// that field's value, so a query, which must name it, touches one shard.
//
// Entries are maintained asynchronously from the cell log by the trigger
// machinery: each index generation is an internal trigger
// ("_index.NAME.GEN") on the index's column, whose consumers run inside
// every cellar serve process (Manager). Maintenance is idempotent — it
// recomputes a row's entry from the row's current latest cell — so the
// at-least-once delivery of triggers is enough. On read, every candidate
// entry is re-checked against the current latest cell (FriendFeed's
// lesson), so a stale entry is never returned as a match.
//
// A rebuild builds a new generation from the start of the log while the
// old one serves queries, and switches over once the new one has caught
// up; old generations are dropped a while later. docs/INDEXES.md has the
// model and its guarantees.
package index

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"regexp"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/cellar-db/cellar"
	"github.com/cellar-db/cellar/internal/sqlstore"
	"github.com/cellar-db/cellar/internal/trigger"
)

// Defaults.
const (
	DefaultRefresh     = time.Second
	DefaultRetireAfter = 30 * time.Second
	DefaultWorkers     = 16
	DefaultClockSkew   = time.Second
	DefaultLimit       = 100
	// maxAttempts is the internal trigger's: maintenance fails only when a
	// node is unreachable, and a parked cell would be a missing entry, so
	// it retries (with the engine's backoff) for as long as it takes.
	maxAttempts = 1000
	batchCells  = 100
	claimWait   = 2 * time.Second
)

// Records stores index definitions and reads internal triggers' offsets:
// *sqlstore.Store of the metadata node, on which each method is documented.
type Records interface {
	IndexRecord(ctx context.Context, name string) (sqlstore.IndexRecord, error)
	IndexRecords(ctx context.Context) ([]sqlstore.IndexRecord, error)
	UpdateIndexRecord(ctx context.Context, name string, f func(rec *sqlstore.IndexRecord) error) (sqlstore.IndexRecord, error)
	TriggerShards(ctx context.Context, name string) ([]sqlstore.TriggerShard, error)
	TriggerOffset(ctx context.Context, name string, shard int) (int64, error)
	DeleteTrigger(ctx context.Context, name string) error
}

var _ Records = (*sqlstore.Store)(nil)

// Options configure a Manager.
type Options struct {
	// Cells is the sharding store, uncached: maintenance and the re-check
	// on read must see the latest cells.
	Cells cellar.Store
	// Entries stores the entries: the sharding store.
	Entries cellar.IndexStore
	// Records is the metadata node.
	Records Records
	// Triggers is the trigger engine that delivers the cells.
	Triggers *trigger.Engine
	// ShardCount is the datastore's number of logical shards.
	ShardCount int
	// Consumer names this process to the trigger engine (default: host,
	// pid and a random suffix).
	Consumer string
	// Workers is the number of claim loops per maintained generation in
	// this process (default DefaultWorkers).
	Workers int
	// Refresh is how often the definitions are reloaded from the metadata
	// node, and backfills and retired generations looked after (default
	// DefaultRefresh).
	Refresh time.Duration
	// RetireAfter is how long a replaced generation stays before it is
	// dropped, so that every process has stopped using it (default
	// DefaultRetireAfter).
	RetireAfter time.Duration
	// ClockSkew is how far the clocks of the processes writing cells may
	// be ahead of this one's: a generation has caught up (a new index is
	// ready, a rebuild takes over) once it has indexed every cell created
	// up to ClockSkew after the generation began (default
	// DefaultClockSkew).
	ClockSkew time.Duration
	// Logger receives maintenance failures (default slog.Default()).
	Logger *slog.Logger
	// Now is the clock (default time.Now).
	Now func() time.Time
}

// Definition is what an index holds: typed fields of the cells of one
// column. Fields[0] is the shard field.
type Definition struct {
	Column string  `json:"column"`
	Fields []Field `json:"fields"`
}

var nameRE = regexp.MustCompile(`^[A-Za-z][A-Za-z0-9_]{0,47}$`)

// ValidateName returns an EINVALID error unless name matches
// ^[A-Za-z][A-Za-z0-9_]{0,47}$.
func ValidateName(name string) error {
	if !nameRE.MatchString(name) {
		return cellar.Errorf(cellar.EINVALID, "index name %q must match ^[A-Za-z][A-Za-z0-9_]{0,47}$", trunc(name, 80))
	}
	return nil
}

// Validate returns an EINVALID error unless d names a valid column and 1
// to cellar.MaxIndexFields fields with distinct names and known types.
func (d Definition) Validate() error {
	if err := cellar.ValidateColumn(d.Column); err != nil {
		return err
	}
	if len(d.Fields) == 0 || len(d.Fields) > cellar.MaxIndexFields {
		return cellar.Errorf(cellar.EINVALID, "an index needs 1 to %d fields", cellar.MaxIndexFields)
	}
	seen := map[string]bool{}
	for _, f := range d.Fields {
		if err := f.validate(); err != nil {
			return err
		}
		if seen[f.Name] {
			return cellar.Errorf(cellar.EINVALID, "field %s is named twice", f.Name)
		}
		seen[f.Name] = true
	}
	return nil
}

func (d Definition) equal(o Definition) bool {
	return d.Column == o.Column && slices.Equal(d.Fields, o.Fields)
}

// field returns the position of the field called name.
func (d Definition) field(name string) (int, bool) {
	for i, f := range d.Fields {
		if f.Name == name {
			return i, true
		}
	}
	return 0, false
}

// record is an index's stored state (sqlstore.IndexRecord.Def).
type record struct {
	Definition
	// Active is the generation that serves queries; 0 once deleted.
	Active      int64     `json:"active"`
	ActiveSince time.Time `json:"active_since"`
	// Ready is set once Active has caught up with the log.
	Ready bool `json:"ready,omitempty"`
	// Building is a generation being built by a rebuild, or 0.
	Building      int64     `json:"building,omitempty"`
	BuildingSince time.Time `json:"building_since,omitzero"`
	// Next is the next generation number to hand out; numbers are never
	// reused while the record lives.
	Next int64 `json:"next"`
	// Retired generations are dropped RetireAfter after At.
	Retired []retired `json:"retired,omitempty"`
	// Deleted is set from DELETE until the last generation is dropped.
	Deleted bool `json:"deleted,omitempty"`

	CreatedAt time.Time `json:"-"`
	UpdatedAt time.Time `json:"-"`
}

type retired struct {
	Gen int64     `json:"gen"`
	At  time.Time `json:"at"`
}

func decodeRecord(r sqlstore.IndexRecord) (record, error) {
	var rec record
	if err := json.Unmarshal(r.Def, &rec); err != nil {
		return rec, cellar.Internal(err, "decode index %s", r.Name)
	}
	rec.CreatedAt, rec.UpdatedAt = r.CreatedAt, r.UpdatedAt
	return rec, nil
}

// triggerName is the internal trigger of an index generation. User
// triggers cannot start with '_' (the HTTP layer refuses them).
func triggerName(index string, gen int64) string {
	return "_index." + index + "." + strconv.FormatInt(gen, 10)
}

// Index is an index's definition and state, as served.
type Index struct {
	Name string `json:"name"`
	Definition
	// Generation serves queries.
	Generation int64 `json:"generation"`
	// State is "backfilling" until Generation has caught up with the
	// cells written before it, "ready" after.
	State string `json:"state"`
	// Rebuilding is the generation a rebuild is building, if any.
	Rebuilding int64     `json:"rebuilding,omitempty"`
	CreatedAt  time.Time `json:"created_at"`
	UpdatedAt  time.Time `json:"updated_at"`
}

func (rec record) view(name string) Index {
	state := "backfilling"
	if rec.Ready {
		state = "ready"
	}
	return Index{Name: name, Definition: rec.Definition, Generation: rec.Active, State: state, Rebuilding: rec.Building,
		CreatedAt: rec.CreatedAt, UpdatedAt: rec.UpdatedAt}
}

// Manager maintains and queries the indexes. One runs in every cellar
// serve process; they share the work through the trigger engine's leases.
type Manager struct {
	cells    cellar.Store
	entries  cellar.IndexStore
	records  Records
	triggers *trigger.Engine
	count    int
	consumer string
	workers  int
	refresh  time.Duration
	retire   time.Duration
	skew     time.Duration
	log      *slog.Logger
	now      func() time.Time
	// renew is triggers.Renew; tests replace it to make renewals fail or
	// hang.
	renew func(ctx context.Context, name string, token int64, shard int) (trigger.Lease, error)

	ctx    context.Context // cancelled by Close
	cancel context.CancelFunc
	wg     sync.WaitGroup // the refresh loop and every worker

	mu       sync.Mutex         // protects started, recs, changes, changed, running and progress
	started  bool               // Start was called: reconcile may start workers
	recs     map[string]record  // the last known records, by index name
	changes  uint64             // counts the writes to recs other than tend's
	changed  map[string]uint64  // the count at each name's last such write
	running  map[string]*worker // by trigger name
	progress chan struct{}      // closed and replaced when a local ack moves an offset
}

// worker runs the claim loops of one index generation in this process;
// m.wg waits for them.
type worker struct {
	cancel context.CancelFunc
}

// New returns a Manager; Start starts its work.
func New(opts Options) (*Manager, error) {
	if opts.Cells == nil || opts.Entries == nil || opts.Records == nil || opts.Triggers == nil {
		return nil, errors.New("index manager needs Cells, Entries, Records and Triggers")
	}
	if opts.ShardCount < 1 {
		return nil, fmt.Errorf("shard count %d out of range", opts.ShardCount)
	}
	m := &Manager{cells: opts.Cells, entries: opts.Entries, records: opts.Records, triggers: opts.Triggers, count: opts.ShardCount,
		consumer: opts.Consumer, workers: opts.Workers, refresh: opts.Refresh, retire: opts.RetireAfter, skew: opts.ClockSkew,
		log: opts.Logger, now: opts.Now, renew: opts.Triggers.Renew,
		recs: map[string]record{}, changed: map[string]uint64{}, running: map[string]*worker{}, progress: make(chan struct{})}
	if m.consumer == "" {
		m.consumer = defaultConsumer()
	}
	if m.workers <= 0 {
		m.workers = DefaultWorkers
	}
	if m.refresh <= 0 {
		m.refresh = DefaultRefresh
	}
	if m.retire <= 0 {
		m.retire = DefaultRetireAfter
	}
	if m.skew <= 0 {
		m.skew = DefaultClockSkew
	}
	if m.log == nil {
		m.log = slog.Default()
	}
	if m.now == nil {
		m.now = time.Now
	}
	m.ctx, m.cancel = context.WithCancel(context.Background())
	return m, nil
}

func defaultConsumer() string {
	host, _ := os.Hostname()
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	return fmt.Sprintf("index/%s/%d/%s", host, os.Getpid(), hex.EncodeToString(b))
}

// Start starts the refresh loop, which starts and stops the workers of the
// generations to maintain. Close stops everything.
func (m *Manager) Start() {
	m.mu.Lock()
	m.started = true
	m.mu.Unlock()
	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		t := time.NewTicker(m.refresh)
		defer t.Stop()
		for {
			m.tend(m.ctx)
			select {
			case <-m.ctx.Done():
				return
			case <-t.C:
			}
		}
	}()
}

// Close stops the refresh loop and the workers and waits for them; a
// batch in progress is left unacknowledged, to be delivered again.
func (m *Manager) Close() error {
	m.cancel()
	m.wg.Wait()
	return nil
}

// Define creates index name, or, given the definition it already has,
// returns it unchanged. Returns ECONFLICT if the index exists with another
// definition, EINVALID for a bad name or definition.
func (m *Manager) Define(ctx context.Context, name string, def Definition) (Index, bool, error) {
	if err := ValidateName(name); err != nil {
		return Index{}, false, err
	}
	if err := def.Validate(); err != nil {
		return Index{}, false, err
	}
	// A brand-new record starts at generation 1, whose trigger a fully
	// dropped earlier index of the same name may have left behind if its
	// clean-up failed half-way; clear it first, while no one can know the
	// generation yet.
	if _, err := m.records.IndexRecord(ctx, name); errors.Is(err, cellar.ErrNotFound) {
		if err := m.records.DeleteTrigger(ctx, triggerName(name, 1)); err != nil {
			return Index{}, false, err
		}
	} else if err != nil {
		return Index{}, false, err
	}
	created := false
	var rec record
	raw, err := m.records.UpdateIndexRecord(ctx, name, func(r *sqlstore.IndexRecord) error {
		created = false
		if r.Def != nil {
			old, err := decodeRecord(*r)
			if err != nil {
				return err
			}
			if !old.Deleted {
				if !old.Definition.equal(def) {
					return cellar.Errorf(cellar.ECONFLICT, "index %s exists with another definition; delete it first, or use another name", name)
				}
				rec = old
				return nil // unchanged: not written
			}
			rec = old
		} else {
			rec = record{Next: 1}
		}
		rec.Definition, rec.Deleted, rec.Ready, rec.Building, rec.BuildingSince = def, false, false, 0, time.Time{}
		rec.Active, rec.ActiveSince = max(rec.Next, 1), m.now().UTC()
		rec.Next = rec.Active + 1
		created = true
		b, err := json.Marshal(rec)
		r.Def = b
		return err
	})
	if err != nil {
		return Index{}, false, err
	}
	rec.CreatedAt, rec.UpdatedAt = raw.CreatedAt, raw.UpdatedAt
	m.remember(name, rec)
	if created {
		// Workers define the trigger too; doing it here makes a failure
		// visible to the caller.
		if err := m.defineTrigger(ctx, name, rec.Active, rec.Column); err != nil {
			return Index{}, false, err
		}
		m.reconcile()
	}
	return rec.view(name), created, nil
}

// Index returns index name. Returns ErrNotFound if there is none.
func (m *Manager) Index(ctx context.Context, name string) (Index, error) {
	rec, err := m.load(ctx, name)
	if err != nil {
		return Index{}, err
	}
	return rec.view(name), nil
}

// Indexes returns every index, by name.
func (m *Manager) Indexes(ctx context.Context) ([]Index, error) {
	raws, err := m.records.IndexRecords(ctx)
	if err != nil {
		return nil, err
	}
	out := []Index{}
	for _, r := range raws {
		rec, err := decodeRecord(r)
		if err != nil {
			return nil, err
		}
		if !rec.Deleted {
			out = append(out, rec.view(r.Name))
		}
	}
	return out, nil
}

// Rebuild starts building index name again from the start of the log, in
// a new generation; the current one serves queries until the new one has
// caught up. Returns ErrNotFound for an unknown index and ECONFLICT while a
// rebuild is already running.
func (m *Manager) Rebuild(ctx context.Context, name string) (Index, error) {
	rec, err := m.updateLive(ctx, name, func(rec *record) error {
		if rec.Building != 0 {
			return cellar.Errorf(cellar.ECONFLICT, "index %s is already being rebuilt (generation %d)", name, rec.Building)
		}
		rec.Building, rec.BuildingSince = rec.Next, m.now().UTC()
		rec.Next++
		return nil
	})
	if err != nil {
		return Index{}, err
	}
	if err := m.defineTrigger(ctx, name, rec.Building, rec.Column); err != nil {
		return Index{}, err
	}
	m.reconcile()
	return rec.view(name), nil
}

// updateLive applies f to the stored record of the live (not deleted)
// index name and writes it back; f's error changes nothing. It returns the
// record as written, and remembers it. Returns ErrNotFound for an unknown
// index.
func (m *Manager) updateLive(ctx context.Context, name string, f func(rec *record) error) (record, error) {
	if err := ValidateName(name); err != nil {
		return record{}, err
	}
	var rec record
	raw, err := m.records.UpdateIndexRecord(ctx, name, func(r *sqlstore.IndexRecord) error {
		if r.Def == nil {
			return cellar.Errorf(cellar.ENOTFOUND, "no index named %s", name)
		}
		var err error
		if rec, err = decodeRecord(*r); err != nil {
			return err
		}
		if rec.Deleted {
			return cellar.Errorf(cellar.ENOTFOUND, "no index named %s", name)
		}
		if err := f(&rec); err != nil {
			return err
		}
		b, err := json.Marshal(rec)
		r.Def = b
		return err
	})
	if err != nil {
		return record{}, err
	}
	rec.CreatedAt, rec.UpdatedAt = raw.CreatedAt, raw.UpdatedAt
	m.remember(name, rec)
	return rec, nil
}

// Delete deletes index name: it stops serving at once in this process, and
// within a refresh in the others (they trust their cached records); its
// entries are dropped RetireAfter later. Returns ErrNotFound for an unknown
// index.
func (m *Manager) Delete(ctx context.Context, name string) error {
	now := m.now().UTC()
	_, err := m.updateLive(ctx, name, func(rec *record) error {
		for _, g := range []int64{rec.Active, rec.Building} {
			if g != 0 {
				rec.Retired = append(rec.Retired, retired{Gen: g, At: now})
			}
		}
		rec.Active, rec.Building, rec.Ready, rec.Deleted = 0, 0, false, true
		rec.ActiveSince, rec.BuildingSince = time.Time{}, time.Time{}
		return nil
	})
	if err != nil {
		return err
	}
	m.reconcile()
	return nil
}

// remember caches rec as the latest known state of index name.
func (m *Manager) remember(name string, rec record) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.recs[name] = rec
	m.markChanged(name)
}

// forget drops index name, whose record is gone, from the cache.
func (m *Manager) forget(name string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.recs, name)
	m.markChanged(name)
}

// markChanged counts a write of name's cached record other than a
// refresh's (refreshCache and rememberRead keep such writes). m.mu must
// be held.
func (m *Manager) markChanged(name string) {
	m.changes++
	m.changed[name] = m.changes
}

// changeCount returns the count of such writes so far, to pass to
// refreshCache or rememberRead with what is read from now on.
func (m *Manager) changeCount() uint64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.changes
}

// refreshCache replaces the cached records with fresh, read when the
// change count was since, but keeps what was cached for the names
// written since: a Define, Delete or update in this process may have
// stored a newer record after fresh was read. m.mu must be held.
func (m *Manager) refreshCache(fresh map[string]record, since uint64) {
	recs := maps.Clone(fresh)
	for name, at := range m.changed {
		if at <= since {
			delete(m.changed, name)
			continue
		}
		if rec, ok := m.recs[name]; ok {
			recs[name] = rec
		} else {
			delete(recs, name)
		}
	}
	m.recs = recs
}

// load returns the record of a live index: the cached one, or the metadata
// node's if this process knows of no live index of that name, which may
// have been created (or re-created after a delete) through another
// process since the last refresh. A cached live record is trusted: another
// process's delete is seen within a refresh.
func (m *Manager) load(ctx context.Context, name string) (record, error) {
	if err := ValidateName(name); err != nil {
		return record{}, err
	}
	m.mu.Lock()
	rec, ok := m.recs[name]
	m.mu.Unlock()
	if !ok || rec.Deleted {
		return m.loadStored(ctx, name)
	}
	return rec, nil
}

// loadStored returns the record of a live index as the metadata node has
// it, and remembers it.
func (m *Manager) loadStored(ctx context.Context, name string) (record, error) {
	if err := ValidateName(name); err != nil {
		return record{}, err
	}
	since := m.changeCount()
	raw, err := m.records.IndexRecord(ctx, name)
	if err != nil {
		return record{}, err
	}
	rec, err := decodeRecord(raw)
	if err != nil {
		return record{}, err
	}
	rec, ok := m.rememberRead(name, rec, since)
	if !ok || rec.Deleted {
		return record{}, cellar.Errorf(cellar.ENOTFOUND, "no index named %s", name)
	}
	return rec, nil
}

// rememberRead caches rec, read from the metadata node when the change
// count was since, and returns it; unless this process wrote the name
// since then (a Delete, say, while the read was on its way): that record
// is newer, and is the one returned (ok false if the name was dropped).
func (m *Manager) rememberRead(name string, rec record, since uint64) (record, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.changed[name] > since {
		cur, ok := m.recs[name]
		return cur, ok
	}
	m.recs[name] = rec
	m.markChanged(name)
	return rec, true
}

// defineTrigger creates (or confirms) the internal trigger of a
// generation.
func (m *Manager) defineTrigger(ctx context.Context, name string, gen int64, column string) error {
	for attempt := 0; ; attempt++ {
		_, _, err := m.triggers.Define(ctx, triggerName(name, gen), trigger.Definition{
			Columns: []string{column}, Start: trigger.StartEarliest, MaxAttempts: maxAttempts, ParkThreshold: 1 << 30})
		// Another process (or this one's worker) creating it at the same
		// moment is a conflict; then it exists, and defining it again
		// confirms it.
		if err == nil || attempt == 3 || !errors.Is(err, cellar.ErrConflict) {
			return err
		}
	}
}

// tend reloads the records, starts and stops workers, marks backfilled
// generations ready, switches finished rebuilds over and drops retired
// generations. Failures wait for the next round.
func (m *Manager) tend(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, max(m.refresh*5, 10*time.Second))
	defer cancel()
	since := m.changeCount()
	raws, err := m.records.IndexRecords(ctx)
	if err != nil {
		if ctx.Err() == nil {
			m.log.Warn("cannot load index definitions", "err", err)
		}
		return
	}
	fresh := map[string]record{}
	for _, r := range raws {
		rec, err := decodeRecord(r)
		if err != nil {
			m.log.Error("bad index record", "index", r.Name, "err", err)
			continue
		}
		fresh[r.Name] = rec
	}
	m.mu.Lock()
	m.refreshCache(fresh, since) // fresh is read below, outside the lock
	m.mu.Unlock()
	m.reconcile()
	for name, rec := range fresh {
		if err := m.advance(ctx, name, rec); err != nil && ctx.Err() == nil {
			m.log.Warn("cannot advance index", "index", name, "err", err)
		}
	}
}

// caughtUp reports whether a generation, begun at since, has indexed
// every cell of column created before then (give or take ClockSkew): on
// each shard behind its head, the first cell of the column after the
// offset must be younger. It stops at the first shard that is not, so
// that a backfill far from done costs one scan per round.
func (m *Manager) caughtUp(ctx context.Context, name string, gen int64, column string, since time.Time) (bool, error) {
	heads, err := m.triggers.Heads(ctx)
	if err != nil {
		return false, nil // a node did not answer: its shards are unknown
	}
	rows, err := m.records.TriggerShards(ctx, triggerName(name, gen))
	if err != nil {
		return false, err
	}
	offsets := make(map[int]int64, len(rows))
	for _, r := range rows {
		offsets[r.Shard] = r.Acked
	}
	limit := since.Add(m.skew)
	for shard, head := range heads {
		off := offsets[shard]
		if head <= off {
			continue
		}
		res, err := m.cells.Scan(ctx, shard, off, 1, column)
		if err != nil {
			return false, err
		}
		if len(res.Cells) > 0 && !res.Cells[0].CreatedAt.After(limit) {
			return false, nil
		}
	}
	return true, nil
}

// advance moves one index along its life: ready, switched, dropped.
func (m *Manager) advance(ctx context.Context, name string, rec record) error {
	if !rec.Deleted && !rec.Ready {
		ok, err := m.caughtUp(ctx, name, rec.Active, rec.Column, rec.ActiveSince)
		if err != nil {
			return err
		}
		if ok {
			active := rec.Active
			if err := m.update(ctx, name, func(r *record) bool {
				if r.Active != active || r.Ready {
					return false
				}
				r.Ready = true
				return true
			}); err != nil {
				return err
			}
		}
	}
	if !rec.Deleted && rec.Building != 0 {
		ok, err := m.caughtUp(ctx, name, rec.Building, rec.Column, rec.BuildingSince)
		if err != nil {
			return err
		}
		if ok {
			building, now := rec.Building, m.now().UTC()
			if err := m.update(ctx, name, func(r *record) bool {
				if r.Building != building || r.Deleted {
					return false
				}
				r.Retired = append(r.Retired, retired{Gen: r.Active, At: now})
				r.Active, r.ActiveSince, r.Ready = building, r.BuildingSince, true
				r.Building, r.BuildingSince = 0, time.Time{}
				return true
			}); err != nil {
				return err
			}
			m.reconcile()
		}
	}
	for _, g := range rec.Retired {
		if m.now().Sub(g.At) < m.retire {
			continue
		}
		if err := m.entries.DropIndex(ctx, name, g.Gen); err != nil {
			return err
		}
		if err := m.records.DeleteTrigger(ctx, triggerName(name, g.Gen)); err != nil {
			return err
		}
		gen := g.Gen
		if err := m.update(ctx, name, func(r *record) bool {
			i := slices.IndexFunc(r.Retired, func(x retired) bool { return x.Gen == gen })
			if i < 0 {
				return false
			}
			r.Retired = slices.Delete(r.Retired, i, i+1)
			return true
		}); err != nil {
			return err
		}
	}
	return nil
}

// update applies f to the stored record of name; f reports whether it
// changed it. A deleted record with nothing left to drop is removed.
func (m *Manager) update(ctx context.Context, name string, f func(r *record) bool) error {
	var out record
	raw, err := m.records.UpdateIndexRecord(ctx, name, func(r *sqlstore.IndexRecord) error {
		if r.Def == nil {
			return cellar.Errorf(cellar.ENOTFOUND, "no index named %s", name)
		}
		rec, err := decodeRecord(*r)
		if err != nil {
			return err
		}
		changed := f(&rec)
		out = rec
		if rec.Deleted && len(rec.Retired) == 0 {
			return sqlstore.ErrDeleteRecord
		}
		if !changed {
			return nil
		}
		b, err := json.Marshal(rec)
		r.Def = b
		return err
	})
	if errors.Is(err, cellar.ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	out.CreatedAt, out.UpdatedAt = raw.CreatedAt, raw.UpdatedAt
	if raw.Def == nil {
		m.forget(name)
		return nil
	}
	m.remember(name, out)
	return nil
}

// reconcile starts a worker for every generation the known records want
// maintained and stops the others.
func (m *Manager) reconcile() {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.ctx.Err() != nil || !m.started {
		return
	}
	want := map[string]func(ctx context.Context){}
	for name, rec := range m.recs {
		if rec.Deleted {
			continue
		}
		for _, gen := range []int64{rec.Active, rec.Building} {
			if gen != 0 {
				def, name, gen := rec.Definition, name, gen
				want[triggerName(name, gen)] = func(ctx context.Context) { m.run(ctx, name, gen, def) }
			}
		}
	}
	for tname, w := range m.running {
		if want[tname] == nil {
			w.cancel()
			delete(m.running, tname)
		}
	}
	for tname, run := range want {
		if m.running[tname] != nil {
			continue
		}
		ctx, cancel := context.WithCancel(m.ctx)
		w := &worker{cancel: cancel}
		m.running[tname] = w
		m.wg.Add(1)
		go func() {
			defer m.wg.Done()
			run(ctx)
		}()
	}
}

// notifyProgress wakes queries waiting for offsets to move.
func (m *Manager) notifyProgress() {
	m.mu.Lock()
	defer m.mu.Unlock()
	close(m.progress)
	m.progress = make(chan struct{})
}

func (m *Manager) progressed() <-chan struct{} {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.progress
}

// sleep waits d or until ctx is done; it reports whether ctx is still live.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// equalLocs reports whether a and b hold the same locations, in any order.
func equalLocs(a, b []cellar.IndexLoc) bool {
	if len(a) != len(b) {
		return false
	}
	for _, x := range a {
		if !slices.ContainsFunc(b, func(y cellar.IndexLoc) bool { return sameLoc(x, y) }) {
			return false
		}
	}
	return true
}
