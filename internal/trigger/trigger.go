// Package trigger runs triggers: named consumers of one or more columns
// that get every new cell of those columns at least once, in added_id
// order within each logical shard, spread over many consumer processes by
// leases. docs/TRIGGERS.md describes the model and its guarantees.
//
// The engine is stateless: a trigger's offsets, leases, retries and parked
// cells live on the metadata node (State), so any number of cellar serve
// processes can run it side by side. It keeps a copy of that state for a
// short while (state.go explains why a stale copy is safe), so that a
// claim at 4096 shards decides in memory which shard to try. Cells are read with the sharding
// store's Scan, whose ordering guarantee (once added_id X was seen, no
// cell <= X appears later) is what makes an offset safe: everything at or
// below it has been seen, and nothing new can appear there.
package trigger

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/cellar-db/cellar"
	"github.com/cellar-db/cellar/internal/sqlstore"
)

// Defaults and limits.
const (
	DefaultLeaseTTL      = 10 * time.Second
	DefaultPollInterval  = 100 * time.Millisecond
	DefaultMaxAttempts   = 5
	DefaultParkThreshold = 100
	DefaultMaxCells      = 100
	MaxCells             = 1000
	MaxWait              = 60 * time.Second
	MaxColumns           = 16
	maxErrorBytes        = 1000
)

// Start positions of a new trigger.
const (
	StartEarliest = "earliest"
	StartLatest   = "latest"
)

// State stores triggers' state: *sqlstore.Store of the metadata node, on
// which each method is documented (errors: ENOTFOUND for an unknown
// trigger, EUNAVAILABLE when the node cannot be reached).
type State interface {
	PutTrigger(ctx context.Context, def sqlstore.TriggerDef, start map[int]int64) (bool, error)
	Trigger(ctx context.Context, name string) (sqlstore.TriggerDef, error)
	Triggers(ctx context.Context) ([]sqlstore.TriggerDef, error)
	TriggerShards(ctx context.Context, name string) ([]sqlstore.TriggerShard, error)
	UpdateTriggerShard(ctx context.Context, name string, shard int, f func(ts *sqlstore.TriggerShard) (sqlstore.ShardEffects, error)) (sqlstore.TriggerShard, error)
	UpdateTriggerShardFrom(ctx context.Context, name string, shard int, have sqlstore.TriggerShard, f func(ts *sqlstore.TriggerShard) (sqlstore.ShardEffects, error)) (out, seen sqlstore.TriggerShard, err error)
	UpdateTriggerShardHeld(ctx context.Context, name string, shard int, f func(ts *sqlstore.TriggerShard, held []int64) (sqlstore.ShardEffects, error)) (out, seen sqlstore.TriggerShard, err error)
	ResetTrigger(ctx context.Context, name string) error
	DeleteTrigger(ctx context.Context, name string) error
	SeeConsumer(ctx context.Context, name, consumer string, now, liveSince time.Time) (int, error)
	LiveConsumers(ctx context.Context, name string, liveSince time.Time) (int, error)
	ParkedCells(ctx context.Context, name string, afterShard int, afterAddedID int64, limit int) ([]sqlstore.ParkedCell, error)
	ParkedCounts(ctx context.Context, name string) (map[int]int, error)
	ReplayParked(ctx context.Context, name string) (int64, error)
	ReplayShards(ctx context.Context, name string) ([]int, error)
	TakeReplay(ctx context.Context, name string, shard int, token int64, limit int) (taken []sqlstore.ParkedCell, held int, err error)
}

var _ State = (*sqlstore.Store)(nil)

// Heads returns the last added_id of each logical shard (absent: no cell
// yet). It may return a partial map with an error when some nodes did not
// answer; their shards then wait.
type Heads func(ctx context.Context) (map[int]int64, error)

// Observer is told about deliveries and acknowledgments, for metrics.
// *metrics.Metrics implements it.
type Observer interface {
	// TriggerDelivered is told of every claim that delivered cells.
	TriggerDelivered(trigger string, cells int)
	// TriggerAcked is told how far each accepted ack moved an offset.
	TriggerAcked(trigger string, cells int)
	// TriggerLag is told of each lag measurement (Status).
	TriggerLag(trigger string, cells int64, seconds float64)
	// TriggerGone is told of a trigger that no longer exists: deleted
	// here, or found gone by the lag monitor (deleted by another process,
	// or an index's old generation).
	TriggerGone(trigger string)
}

// Options configure an Engine.
type Options struct {
	// Cells is the sharding store the cells are read from.
	Cells cellar.Store
	// State is the metadata node.
	State State
	// Heads reports the shards' last added_ids. KnownHeads, if set, is
	// used instead.
	Heads Heads
	// KnownHeads reports the shards' last added_ids, reading only what the
	// engine does not know already (see NodeHeads).
	KnownHeads KnownHeads
	// ShardCount is the datastore's number of logical shards.
	ShardCount int
	// LeaseTTL is how long a lease lasts unless renewed by a claim or an
	// ack, and how recently a consumer must have claimed to count as live
	// (default DefaultLeaseTTL).
	LeaseTTL time.Duration
	// PollInterval is how often a waiting claim looks for new cells
	// (default DefaultPollInterval).
	PollInterval time.Duration
	// Backoff is the wait before a cell that failed attempts times is
	// delivered again (default: 1s doubling per attempt, at most 5m).
	Backoff func(attempts int) time.Duration
	// Now is the clock for leases and backoff (default time.Now). Waiting
	// claims sleep in real time.
	Now func() time.Time
	// Observe, if not nil, is told about deliveries and acks, and, every
	// LagInterval while the engine is started, about each trigger's lag.
	Observe Observer
	// LagInterval is how often Start's monitor measures lag (default 15s).
	LagInterval time.Duration
	// StateRefresh is how long the engine decides claims on its copy of a
	// trigger's state before reading it again from the metadata node
	// (default DefaultStateRefresh): the longest a change made through
	// another server (a pause, a reset, a replay, a definition, a joining
	// consumer) takes to be seen here. It never makes a claim or an ack
	// wrong: those are checked on the stored rows.
	StateRefresh time.Duration
}

// DefaultStateRefresh is the default Options.StateRefresh.
const DefaultStateRefresh = time.Second

// Engine runs triggers. Its state is on the metadata node; it keeps a
// short-lived copy of it and of the shard heads. It is safe for
// concurrent use.
type Engine struct {
	cells     cellar.Store
	state     State
	readHeads KnownHeads
	count     int
	ttl       time.Duration
	poll      time.Duration
	refresh   time.Duration
	back      func(int) time.Duration
	now       func() time.Time
	obs       Observer
	lagEvery  time.Duration

	stop     context.CancelFunc // stops the lag monitor; nil until Start
	done     sync.WaitGroup     // the lag monitor
	measured map[string]bool    // the triggers of the lag monitor's last round; its own

	bgCtx    context.Context // cancelled by Close
	bgCancel context.CancelFunc
	bgMu     sync.Mutex     // protects closed, and orders bg.Add before Close's Wait
	closed   bool           // set by Close: no more background work
	bg       sync.WaitGroup // background reads of heads and trigger state

	seenMu sync.Mutex              // protects seen
	seen   map[[2]string]time.Time // (trigger, consumer) -> when this engine last recorded it

	// heads are the shards' last added_ids as far as this engine knows:
	// read from the nodes (every half poll interval while claims run) or
	// told by Notify. They only grow.
	heads     []atomic.Int64
	headsMu   sync.Mutex    // protects the fields below
	headsAt   time.Time     // when the last read began
	headsDone chan struct{} // closed when the read in flight ends; nil if none
	headsRead bool          // a read ended
	headsLast map[int]int64 // what the last read returned
	headsErr  error

	triggersMu sync.Mutex               // protects triggers, and serializes changes of byColumn and all
	triggers   map[string]*triggerState // this engine's copies, by trigger name
	// byColumn and all are read without a lock by Notify and applyHeads:
	// they are replaced, never changed.
	byColumn atomic.Pointer[map[string][]*triggerState] // triggers by the columns they consume
	all      atomic.Pointer[[]*triggerState]
}

// New returns an Engine.
func New(opts Options) (*Engine, error) {
	if opts.Cells == nil || opts.State == nil || (opts.Heads == nil && opts.KnownHeads == nil) {
		return nil, errors.New("trigger engine needs Cells, State and Heads or KnownHeads")
	}
	readHeads := opts.KnownHeads
	if readHeads == nil {
		heads := opts.Heads
		readHeads = func(ctx context.Context, _ func(int) int64) (map[int]int64, error) { return heads(ctx) }
	}
	if opts.ShardCount < 1 {
		return nil, fmt.Errorf("shard count %d out of range", opts.ShardCount)
	}
	e := &Engine{cells: opts.Cells, state: opts.State, readHeads: readHeads, count: opts.ShardCount,
		ttl: opts.LeaseTTL, poll: opts.PollInterval, refresh: opts.StateRefresh, back: opts.Backoff, now: opts.Now, obs: opts.Observe,
		heads: make([]atomic.Int64, opts.ShardCount), triggers: make(map[string]*triggerState)}
	e.bgCtx, e.bgCancel = context.WithCancel(context.Background())
	byColumn, all := map[string][]*triggerState{}, []*triggerState{}
	e.byColumn.Store(&byColumn)
	e.all.Store(&all)
	if e.refresh <= 0 {
		e.refresh = DefaultStateRefresh
	}
	if e.ttl <= 0 {
		e.ttl = DefaultLeaseTTL
	}
	if e.poll <= 0 {
		e.poll = DefaultPollInterval
	}
	if e.back == nil {
		e.back = DefaultBackoff
	}
	if e.now == nil {
		e.now = time.Now
	}
	e.seen = make(map[[2]string]time.Time)
	e.lagEvery = opts.LagInterval
	if e.lagEvery <= 0 {
		e.lagEvery = 15 * time.Second
	}
	return e, nil
}

// Start starts the monitor that reports every trigger's lag to Observe
// each LagInterval (nothing without an Observer). Close stops it.
func (e *Engine) Start() {
	if e.obs == nil || e.stop != nil {
		return
	}
	ctx, cancel := context.WithCancel(context.Background())
	e.stop = cancel
	e.done.Add(1)
	go func() {
		defer e.done.Done()
		t := time.NewTicker(e.lagEvery)
		defer t.Stop()
		for {
			e.measureLag(ctx)
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
		}
	}()
}

// measureLag reports each trigger's lag; Status does the reporting.
// Failures wait for the next round: lag is only a measurement. A round
// that takes longer than the interval delays the next one.
func (e *Engine) measureLag(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, max(e.lagEvery, 30*time.Second))
	defer cancel()
	ts, err := e.Triggers(ctx)
	if err != nil {
		return
	}
	now := make(map[string]bool, len(ts))
	for _, t := range ts {
		now[t.Name] = true
		_, _ = e.status(ctx, t.Name, true)
	}
	for name := range e.measured {
		if !now[name] {
			e.obs.TriggerGone(name)
		}
	}
	e.measured = now
}

// Close stops the lag monitor and the background reads, and waits for
// them. Callers own the stores. Claims still work after Close (they just
// read heads and state no more in the background).
func (e *Engine) Close() error {
	if e.stop != nil {
		e.stop()
		e.done.Wait()
	}
	e.bgMu.Lock()
	e.closed = true
	e.bgMu.Unlock()
	e.bgCancel()
	e.bg.Wait()
	return nil
}

// DefaultBackoff waits 1s after the first failure, doubling per attempt up
// to 5 minutes.
func DefaultBackoff(attempts int) time.Duration {
	d := time.Second
	for i := 1; i < attempts && d < 5*time.Minute; i++ {
		d *= 2
	}
	return min(d, 5*time.Minute)
}

// Definition is what a trigger consumes and how it handles failures.
type Definition struct {
	// Columns are the columns whose cells the trigger delivers.
	Columns []string `json:"columns"`
	// Start is where a new trigger starts: StartEarliest (default, every
	// cell ever written) or StartLatest (cells written from now on).
	Start string `json:"start,omitempty"`
	// MaxAttempts is how many times a cell is tried before it is parked
	// (default DefaultMaxAttempts).
	MaxAttempts int `json:"max_attempts,omitempty"`
	// ParkThreshold pauses the trigger when more cells than this are
	// parked (default DefaultParkThreshold).
	ParkThreshold int `json:"park_threshold,omitempty"`
}

var nameRE = regexp.MustCompile(`^[A-Za-z0-9_.-]{1,64}$`)

// ValidateName returns an EINVALID error unless name is 1 to 64 of
// A-Z a-z 0-9 _ . -.
func ValidateName(name string) error {
	if !nameRE.MatchString(name) {
		return cellar.Errorf(cellar.EINVALID, "trigger name %q must match ^[A-Za-z0-9_.-]{1,64}$", trunc(name, 80))
	}
	return nil
}

// validateConsumer refuses a consumer name that is not 1 to 255 bytes of
// UTF-8 without control characters: PostgreSQL cannot store a NUL in
// TEXT, and the others would break the lines that print names.
func validateConsumer(c string) error {
	if c == "" || len(c) > 255 || !utf8.ValidString(c) || strings.ContainsFunc(c, unicode.IsControl) {
		return cellar.Errorf(cellar.EINVALID, "consumer must be 1 to 255 bytes of UTF-8 without control characters")
	}
	return nil
}

// cleanError makes a nack's error text storable on every metadata node:
// NUL bytes (which PostgreSQL's TEXT refuses) and invalid UTF-8 become
// U+FFFD, and the text is cut to maxErrorBytes on a character boundary.
func cleanError(msg string) string {
	msg = strings.ToValidUTF8(msg, "\uFFFD")
	msg = strings.ReplaceAll(msg, "\x00", "\uFFFD")
	if len(msg) <= maxErrorBytes {
		return msg
	}
	cut := maxErrorBytes
	for cut > 0 && !utf8.RuneStart(msg[cut]) {
		cut--
	}
	return msg[:cut]
}

func trunc(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}

// normalize validates d and fills in its defaults.
func (d *Definition) normalize() error {
	if len(d.Columns) == 0 || len(d.Columns) > MaxColumns {
		return cellar.Errorf(cellar.EINVALID, "a trigger needs 1 to %d columns", MaxColumns)
	}
	for _, c := range d.Columns {
		if err := cellar.ValidateColumn(c); err != nil {
			return err
		}
	}
	d.Columns = slices.Clone(d.Columns)
	slices.Sort(d.Columns)
	d.Columns = slices.Compact(d.Columns)
	switch d.Start {
	case "":
		d.Start = StartEarliest
	case StartEarliest, StartLatest:
	default:
		return cellar.Errorf(cellar.EINVALID, "start must be %q or %q", StartEarliest, StartLatest)
	}
	if d.MaxAttempts == 0 {
		d.MaxAttempts = DefaultMaxAttempts
	}
	if d.MaxAttempts < 1 || d.MaxAttempts > 1000 {
		return cellar.Errorf(cellar.EINVALID, "max_attempts must be 1..1000")
	}
	if d.ParkThreshold == 0 {
		d.ParkThreshold = DefaultParkThreshold
	}
	if d.ParkThreshold < 0 {
		return cellar.Errorf(cellar.EINVALID, "park_threshold must not be negative")
	}
	return nil
}

// Trigger is a trigger's stored definition.
type Trigger struct {
	Name string `json:"name"`
	Definition
	CreatedAt time.Time `json:"created_at"`
	UpdatedAt time.Time `json:"updated_at"`
}

func fromDef(d sqlstore.TriggerDef) Trigger {
	return Trigger{Name: d.Name, Definition: Definition{Columns: d.Columns, Start: d.Start, MaxAttempts: d.MaxAttempts, ParkThreshold: d.ParkThreshold},
		CreatedAt: d.CreatedAt, UpdatedAt: d.UpdatedAt}
}

// Define creates trigger name, or updates its definition. Start matters
// only on creation: a trigger created with StartLatest begins after each
// shard's last cell at that moment. Returns EINVALID for a bad name or
// definition, and EUNAVAILABLE if a StartLatest trigger cannot read every
// shard's head.
func (e *Engine) Define(ctx context.Context, name string, d Definition) (Trigger, bool, error) {
	if err := ValidateName(name); err != nil {
		return Trigger{}, false, err
	}
	if err := d.normalize(); err != nil {
		return Trigger{}, false, err
	}
	// Every shard's row is created with the trigger (used only if it is
	// new), so that claims find rows to change in one statement.
	start := make(map[int]int64, e.count)
	for s := range e.count {
		start[s] = 0
	}
	if d.Start == StartLatest {
		if _, err := e.state.Trigger(ctx, name); errors.Is(err, cellar.ErrNotFound) {
			heads, err := e.readHeads(ctx, e.knownHead)
			e.applyHeads(heads)
			if err != nil {
				return Trigger{}, false, cellar.Unavailable(err, "cannot read every shard's last cell to start trigger %s at the latest", name)
			}
			for s := range start {
				start[s] = e.knownHead(s) // at least what was read
			}
		} else if err != nil {
			return Trigger{}, false, err
		}
	}
	def := sqlstore.TriggerDef{Name: name, Columns: d.Columns, Start: d.Start, MaxAttempts: d.MaxAttempts, ParkThreshold: d.ParkThreshold}
	created, err := e.state.PutTrigger(ctx, def, start)
	e.cached(name).invalidate()
	if err != nil {
		return Trigger{}, false, err
	}
	t, err := e.Trigger(ctx, name)
	return t, created, err
}

// Trigger returns a trigger's definition. Returns ErrNotFound if there is
// no such trigger.
func (e *Engine) Trigger(ctx context.Context, name string) (Trigger, error) {
	if err := ValidateName(name); err != nil {
		return Trigger{}, err
	}
	d, err := e.state.Trigger(ctx, name)
	if err != nil {
		return Trigger{}, err
	}
	return fromDef(d), nil
}

// Triggers returns every trigger, by name.
func (e *Engine) Triggers(ctx context.Context) ([]Trigger, error) {
	defs, err := e.state.Triggers(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]Trigger, len(defs))
	for i, d := range defs {
		out[i] = fromDef(d)
	}
	return out, nil
}

// seeConsumer records consumer as live and returns how many consumers of
// the trigger are. The record is written at most every quarter lease per
// consumer and engine, so that waiting claims, which poll, do not write to
// the metadata node on every poll; the count comes back with every write
// (so a consumer joining through this engine is counted at once) and with
// every load of the trigger's state.
func (e *Engine) seeConsumer(ctx context.Context, tc *triggerState, consumer string, now time.Time) (int, error) {
	key := [2]string{tc.name, consumer}
	e.seenMu.Lock()
	last, ok := e.seen[key]
	e.seenMu.Unlock()
	if ok && now.Sub(last) < e.ttl/4 && !now.Before(last) {
		tc.mu.Lock()
		defer tc.mu.Unlock()
		return tc.live, nil
	}
	live, err := e.state.SeeConsumer(ctx, tc.name, consumer, now, now.Add(-e.ttl))
	if err != nil {
		return 0, err
	}
	tc.mu.Lock()
	tc.live = live
	tc.mu.Unlock()
	e.seenMu.Lock()
	e.seen[key] = now
	if len(e.seen) > 10000 {
		for k, t := range e.seen {
			if now.Sub(t) > e.ttl {
				delete(e.seen, k)
			}
		}
	}
	e.seenMu.Unlock()
	return live, nil
}
