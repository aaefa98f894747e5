package cache

import (
	"math"
	"time"

	"github.com/maypok86/otter/v2"

	"github.com/cellar-db/cellar"
)

// kind is what an in-process entry answers.
type kind uint8

const (
	kindCell   kind = iota + 1 // the cell with a full key: immutable once found
	kindLatest                 // the latest cell of (row, column)
	kindRow                    // the latest cell of every column of a row
)

// key names an in-process entry.
type key struct {
	kind kind
	row  string
	col  string // kindCell, kindLatest
	ref  int64  // kindCell
}

func cellKey(k cellar.Key) key {
	return key{kind: kindCell, row: k.RowKey, col: k.Column, ref: k.RefKey}
}
func latestKey(row, col string) key { return key{kind: kindLatest, row: row, col: col} }
func rowKey(row string) key         { return key{kind: kindRow, row: row} }

// lookupKey is the entry that answers k.
func lookupKey(k cellar.LookupKey) key {
	if k.RefKey == nil {
		return latestKey(k.RowKey, k.Column)
	}
	return cellKey(cellar.Key{RowKey: k.RowKey, Column: k.Column, RefKey: *k.RefKey})
}

// lookup is the inverse of lookupKey.
func (k key) lookup() cellar.LookupKey {
	l := cellar.LookupKey{RowKey: k.row, Column: k.col}
	if k.kind == kindCell {
		ref := k.ref
		l.RefKey = &ref
	}
	return l
}

// entry is what the in-process tier knows about a key. A stored entry is
// never modified: merges store a new one.
//
// An entry is either an answer or a marker. An answer (floors == nil) is
// served until it expires: cells holds the cell (kindCell, kindLatest) or
// the row's cells by column (kindRow); for kindCell and kindLatest, no cells
// means "not found", and err is the backing store's not-found error.
//
// A marker (floors != nil) answers nothing: it records that for each column
// in floors a cell with a ref_key of at least floors[column] exists (a
// write this process made or heard of), so that a read that began before
// that write cannot store its stale answer over it, and an older answer
// from Redis is not served.
//
// An answer may keep a marker that outlives it (kept): a write pushed into
// an answer read before it expires with that answer, but a read that began
// before the write can still arrive, unexpired, after that; the marker
// stands in the entry until no such read can be served.
type entry struct {
	cells  []cellar.Cell
	err    error
	floors map[string]int64
	// expires is when the entry stops being served, in Unix nanoseconds by
	// the store's clock; 0 means never (a found cell by full key).
	expires int64
	kept    *entry // an answer's marker, nil if none
}

// answers reports whether e is an answer that may be served at now.
func (e *entry) answers(now int64) bool {
	return e.floors == nil && !e.expired(now)
}

func (e *entry) expired(now int64) bool { return e.expires != 0 && now >= e.expires }

// live returns what of e (nil if absent) stands at now: e until it
// expires, then the marker it kept until that expires, then nil.
func (e *entry) live(now int64) *entry {
	for e != nil && e.expired(now) {
		e = e.kept
	}
	return e
}

// marker returns the marker that stands in e at now, or nil: e itself, or
// the one its answer keeps.
func (e *entry) marker(now int64) *entry {
	if e = e.live(now); e != nil && e.floors == nil {
		e = e.kept.live(now)
	}
	return e
}

// keeping returns the answer a, keeping the marker m (nil if none) if m
// outlives it.
func keeping(a, m *entry) *entry {
	if m == nil || a.expires == 0 || a.expires >= m.expires {
		return a
	}
	k := *a
	k.kept = m
	return &k
}

// satisfies reports whether the answer a holds, for every column in
// floors, a cell with at least that ref_key.
func (a *entry) satisfies(floors map[string]int64) bool {
	for col, ref := range floors {
		ok := false
		for _, c := range a.cells {
			if c.Column == col && c.RefKey >= ref {
				ok = true
				break
			}
		}
		if !ok {
			return false
		}
	}
	return true
}

// has reports whether the answer e holds a cell of col with a ref_key of
// at least ref.
func (e *entry) has(col string, ref int64) bool {
	return e.floors == nil && e.satisfies(map[string]int64{col: ref})
}

// mergeAnswer merges an answer a read from the backing store or Redis into
// old (nil if absent), and returns what to store, or nil to keep old.
//
// Answers only move forward: the latest cell of a column never goes back
// to a lower ref_key, so of two answers the one with the higher ref_key
// (for rows: per column) is the newer, and an answer that contradicts a
// marker, or the marker an answer keeps, is stale. The merged answer keeps
// old's marker.
func mergeAnswer(kd kind, old *entry, now int64, a *entry) *entry {
	old = old.live(now)
	if old == nil {
		return a
	}
	m := old.marker(now)
	if m != nil && !a.satisfies(m.floors) {
		return nil
	}
	if old.floors != nil {
		return keeping(a, m)
	}
	if n := newerAnswer(kd, old, a); n != nil {
		return keeping(n, m)
	}
	return nil
}

// newerAnswer merges the answer a into the answer old, both unexpired, and
// returns what to store, or nil to keep old.
func newerAnswer(kd kind, old, a *entry) *entry {
	switch kd {
	case kindCell:
		if len(old.cells) > 0 {
			return nil // cells are immutable: the same cell
		}
		if len(a.cells) == 0 && old.expires >= a.expires {
			return nil
		}
		return a
	case kindLatest:
		switch {
		case len(old.cells) == 0 && len(a.cells) == 0:
			if old.expires >= a.expires {
				return nil
			}
			return a
		case len(a.cells) == 0:
			return nil // old's cell exists: a's "not found" is older
		case len(old.cells) == 0:
			return a
		}
		o, n := old.cells[0].RefKey, a.cells[0].RefKey
		if n > o || n == o && a.expires > old.expires {
			return a
		}
		return nil
	default: // kindRow
		// Each answer holds every write acknowledged before it was read, so
		// the newer cell of each column holds every write acknowledged
		// before the later of the two reads.
		m := &entry{cells: old.cells, expires: max(old.expires, a.expires)}
		for _, c := range a.cells {
			m.cells = withCell(m.cells, c)
		}
		return m
	}
}

// mergeCreated merges the knowledge that this process just created c
// (with its body) into old, and returns what to store, or nil to keep old.
// It serves as well for a latest cell just read, which exists as surely.
//
// An answer read at t holds every write acknowledged before t; adding c to
// it keeps that true, so the merged answer keeps old's expiry. It also
// keeps a marker of c for ttl: a read that began before the write may
// arrive after old expired, and must not be stored over c. Without an
// answer, the process cannot know that c is the latest (another process
// may have written a higher ref_key), so it stores only the marker.
func mergeCreated(kd kind, old *entry, now int64, c cellar.Cell, ttl int64) *entry {
	m := markerWith(old.marker(now), now, c.Column, c.RefKey, ttl)
	old = old.live(now)
	if old == nil || old.floors != nil {
		return m
	}
	switch kd {
	case kindCell:
		if len(old.cells) > 0 {
			return nil
		}
		return &entry{cells: []cellar.Cell{c}}
	case kindLatest:
		// old holds as much as c: an answer that contradicts c also
		// contradicts old (or the write whose marker old keeps).
		if len(old.cells) > 0 && old.cells[0].RefKey >= c.RefKey {
			return nil
		}
		return keeping(&entry{cells: []cellar.Cell{c}, expires: old.expires}, m)
	default: // kindRow
		if old.has(c.Column, c.RefKey) {
			return nil
		}
		return keeping(&entry{cells: withCell(old.cells, c), expires: old.expires}, m)
	}
}

// mergeExists merges the knowledge that a cell (col, ref) exists into old:
// an answer that lacks it becomes a marker. Without an entry, a marker is
// stored only if create is set.
func mergeExists(old *entry, now int64, col string, ref int64, ttl int64, create bool) *entry {
	switch l := old.live(now); {
	case l == nil:
		if !create {
			return nil
		}
	case l.floors == nil && l.has(col, ref):
		return nil
	}
	// A stale answer is replaced by the marker, raised from the one it kept.
	return markerWith(old.marker(now), now, col, ref, ttl)
}

// markerWith returns old's marker (or a new one) raised to (col, ref). A
// marker lives for ttl: longer than any read that was in flight when it was
// set can stay served (see Store), and no longer, to bound its memory.
func markerWith(old *entry, now int64, col string, ref int64, ttl int64) *entry {
	m := &entry{floors: map[string]int64{col: ref}, expires: now + ttl}
	if old != nil && old.floors != nil && !old.expired(now) {
		for c, r := range old.floors {
			if c != col || r > ref {
				m.floors[c] = r
			}
		}
		m.expires = max(m.expires, old.expires)
	}
	return m
}

// withCell returns a copy of row (cells by column) with c as its column's
// cell, unless row has a higher ref_key there.
func withCell(row []cellar.Cell, c cellar.Cell) []cellar.Cell {
	i := 0
	for i < len(row) && row[i].Column < c.Column {
		i++
	}
	if i < len(row) && row[i].Column == c.Column {
		if row[i].RefKey >= c.RefKey {
			return row
		}
		out := append([]cellar.Cell(nil), row...)
		out[i] = c
		return out
	}
	out := make([]cellar.Cell, 0, len(row)+1)
	out = append(out, row[:i]...)
	out = append(out, c)
	return append(out, row[i:]...)
}

// Weights approximate the memory of an entry: the bytes of its keys and
// bodies plus fixed overheads for the structures around them (the cache's
// node, the key and entry, one cellar.Cell, one marker floor, one error).
const (
	entryOverhead = 200
	cellOverhead  = 120
	floorOverhead = 64
	errOverhead   = 64
)

func weigh(k key, e *entry) uint32 {
	n := entryOverhead + len(k.row) + len(k.col)
	for _, c := range e.cells {
		n += cellOverhead + len(c.RowKey) + len(c.Column) + len(c.Body)
	}
	for col := range e.floors {
		n += floorOverhead + len(col)
	}
	if e.kept != nil {
		for col := range e.kept.floors {
			n += floorOverhead + len(col)
		}
	}
	if e.err != nil {
		// A not-found's message repeats the key; the entry holds its own.
		n += errOverhead + len(e.err.Error())
	}
	return uint32(min(n, math.MaxUint32))
}

// local is the in-process tier.
type local struct {
	c   *otter.Cache[key, *entry]
	now func() int64
	ttl int64 // Options.MaxStaleness in nanoseconds
}

func newLocal(maxBytes int64, ttl time.Duration, now func() int64, clock otter.Clock) (*local, error) {
	l := &local{now: now, ttl: int64(ttl)}
	c, err := otter.New(&otter.Options[key, *entry]{
		MaximumWeight:    uint64(maxBytes),
		Weigher:          weigh,
		ExpiryCalculator: expiry{now},
		Clock:            clock,
	})
	if err != nil {
		return nil, err
	}
	l.c = c
	return l, nil
}

// get returns the entry for k, if any: an answer to serve, or an expired
// answer or a marker, which the caller treats as a miss.
func (l *local) get(k key) (*entry, bool) { return l.c.GetIfPresent(k) }

// fill merges the answer a into k's entry.
//
// It reports whether a is known to be stale here: it contradicts a marker
// (a write of this process since the read began), or is a latest answer
// behind the one held. Such an answer must not go to Redis either.
func (l *local) fill(k key, a *entry) (stale bool) {
	now := l.now()
	l.c.Compute(k, func(old *entry, found bool) (*entry, otter.ComputeOp) {
		if !found {
			old = nil
		}
		stale = behind(k.kind, old, now, a)
		if m := mergeAnswer(k.kind, old, now, a); m != nil {
			return m, otter.WriteOp
		}
		return old, otter.CancelOp
	})
	return stale
}

// behind reports whether the answer a is older than what old (nil if
// absent) knows: a marker's floors it does not satisfy, or, for a latest
// answer, a lower ref_key than old's answer (or none where old has one).
func behind(kd kind, old *entry, now int64, a *entry) bool {
	if m := old.marker(now); m != nil && !a.satisfies(m.floors) {
		return true
	}
	old = old.live(now)
	if kd != kindLatest || old == nil || old.floors != nil || len(old.cells) == 0 {
		return false
	}
	return len(a.cells) == 0 || a.cells[0].RefKey < old.cells[0].RefKey
}

// created records that this process just created c (with its body).
func (l *local) created(c cellar.Cell) {
	now := l.now()
	for _, k := range []key{cellKey(c.Key), latestKey(c.RowKey, c.Column), rowKey(c.RowKey)} {
		l.c.Compute(k, func(old *entry, found bool) (*entry, otter.ComputeOp) {
			if !found {
				old = nil
			}
			if m := mergeCreated(k.kind, old, now, c, l.ttl); m != nil {
				return m, otter.WriteOp
			}
			return old, otter.CancelOp
		})
	}
}

// seen records that c, a latest cell just read from storage or Redis,
// exists: a cached row gets it in its column, as it would a created cell,
// so that a whole row served later does not go back behind c. Nothing is
// stored for a row that is not cached (latest reads need not cost memory
// for rows).
func (l *local) seen(c cellar.Cell) {
	k := rowKey(c.RowKey)
	if _, ok := l.c.GetEntryQuietly(k); !ok {
		return
	}
	now := l.now()
	l.c.Compute(k, func(old *entry, found bool) (*entry, otter.ComputeOp) {
		if !found {
			return nil, otter.CancelOp // evicted since: still nothing to store
		}
		if m := mergeCreated(kindRow, old, now, c, l.ttl); m != nil {
			return m, otter.WriteOp
		}
		return old, otter.CancelOp
	})
}

// exists records that the cell k exists. With create unset, it only
// changes entries that are there: other processes' writes (heard of over
// pub/sub) need not cost memory here.
func (l *local) exists(k cellar.Key, create bool) {
	now := l.now()
	for _, ek := range []key{cellKey(k), latestKey(k.RowKey, k.Column), rowKey(k.RowKey)} {
		if _, ok := l.c.GetEntryQuietly(ek); !ok && !create {
			continue // the common case for news of other processes' writes: skip the lock
		}
		l.c.Compute(ek, func(old *entry, found bool) (*entry, otter.ComputeOp) {
			if !found {
				old = nil
			}
			if m := mergeExists(old, now, k.Column, k.RefKey, l.ttl, create); m != nil {
				return m, otter.WriteOp
			}
			return old, otter.CancelOp
		})
	}
}

func (l *local) close() { l.c.StopAllGoroutines() }

// expiry tells otter when entries expire: at their own deadline, so that
// an answer's age counts from when it was read, wherever it was stored
// since, or when the marker an answer keeps does.
type expiry struct{ now func() int64 }

// never is "no expiry": long, but far from overflowing otter's arithmetic.
const never = 100 * 365 * 24 * time.Hour

func (x expiry) left(e *entry) time.Duration {
	if e.expires == 0 {
		return never
	}
	until := e.expires
	if e.kept != nil {
		until = max(until, e.kept.expires)
	}
	return time.Duration(max(until-x.now(), 1))
}

func (x expiry) ExpireAfterCreate(e otter.Entry[key, *entry]) time.Duration { return x.left(e.Value) }

func (x expiry) ExpireAfterUpdate(e otter.Entry[key, *entry], _ *entry) time.Duration {
	return x.left(e.Value)
}

func (x expiry) ExpireAfterRead(e otter.Entry[key, *entry]) time.Duration { return e.ExpiresAfter() }
