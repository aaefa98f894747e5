package index

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"hash/fnv"
	"slices"
	"time"

	"github.com/cellar-db/cellar"
)

// Limits of a query.
const (
	MaxWaitFor = 1000
	MaxWait    = 60 * time.Second
	// maxRounds bounds the scans one query makes past stale entries
	// before it returns a short page with a cursor.
	maxRounds = 8
)

// Cond is a condition on one field: equality (Eq, where JSON null matches
// a missing value), or a range of the bounds that are set. Values are JSON
// as the request wrote them.
type Cond struct {
	Field                string
	Eq, Gt, Gte, Lt, Lte json.RawMessage
}

// CellPos names a written cell by its shard and added_id, as a put
// returns them.
type CellPos struct {
	Shard   int   `json:"shard"`
	AddedID int64 `json:"added_id"`
}

// Query selects entries of one index. Where must hold an equality on the
// shard field (the index's first field).
type Query struct {
	Where []Cond
	// Fields are the fields to return; all of them when empty.
	Fields []string
	// Order is the field to order by (then by row key); by default the
	// index's fields after the shard field, in order.
	Order string
	Desc  bool
	// Limit is the most entries to return (default DefaultLimit).
	Limit int
	// Cursor continues where a previous result with the same order ended.
	Cursor string
	// WaitFor makes the query wait, up to Wait, until the index has
	// caught up with these cells.
	WaitFor []CellPos
	Wait    time.Duration
}

// Entry is one match: a row and its fields, read from the row's latest
// cell (RefKey) at query time.
type Entry struct {
	RowKey string                     `json:"row_key"`
	RefKey int64                      `json:"ref_key"`
	Fields map[string]json.RawMessage `json:"fields"`
}

// Result is a page of matches. Cursor is empty when no more entries
// match (every entry after the page was read and re-checked); with one,
// the next page may still be empty.
type Result struct {
	Entries []Entry
	Cursor  string
}

// fullCond is a condition on full (untruncated) keys, for the re-check.
type fullCond struct {
	eq           []byte
	lower, upper *cellar.IndexBound
}

func (c fullCond) match(key []byte) bool {
	if c.eq != nil {
		return bytes.Equal(key, c.eq)
	}
	if b := c.lower; b != nil {
		if cmp := bytes.Compare(key, b.Key); cmp < 0 || (cmp == 0 && !b.Inclusive) {
			return false
		}
	}
	if b := c.upper; b != nil {
		if cmp := bytes.Compare(key, b.Key); cmp > 0 || (cmp == 0 && !b.Inclusive) {
			return false
		}
	}
	return true
}

// plan is a validated query.
type plan struct {
	scan  cellar.IndexScan // without After and Limit
	conds [cellar.MaxIndexFields]fullCond
	proj  []int
	order string // names the order, to tie cursors to it
	query uint64 // names the index and the shard field's value, likewise
	limit int
}

func (p *plan) match(ks keys) bool {
	for i, c := range p.conds {
		if !c.match(ks[i]) {
			return false
		}
	}
	return true
}

// planQuery validates q against the index.
func planQuery(name string, gen int64, def Definition, q Query, shardCount int) (*plan, error) {
	p := &plan{scan: cellar.IndexScan{Index: name, Gen: gen}, limit: q.Limit}
	if p.limit == 0 {
		p.limit = DefaultLimit
	}
	if p.limit < 1 || p.limit > cellar.MaxIndexLimit {
		return nil, cellar.Errorf(cellar.EINVALID, "limit must be 1..%d", cellar.MaxIndexLimit)
	}
	seen := map[int]bool{}
	for _, c := range q.Where {
		pos, ok := def.field(c.Field)
		if !ok {
			return nil, cellar.Errorf(cellar.EINVALID, "index %s has no field %q", name, trunc(c.Field, 80))
		}
		if seen[pos] {
			return nil, cellar.Errorf(cellar.EINVALID, "where names field %s twice", c.Field)
		}
		seen[pos] = true
		if err := p.addCond(pos, def.Fields[pos], c); err != nil {
			return nil, err
		}
	}
	shardField := def.Fields[0].Name
	if p.conds[0].eq == nil {
		return nil, cellar.Errorf(cellar.EINVALID, "a query of index %s must give its shard field %s with an equality (\"where\": {%q: value})", name, shardField, shardField)
	}
	p.scan.Shard = cellar.ShardOf(string(p.scan.Conds[0].Eq), shardCount)
	h := fnv.New64a()
	h.Write([]byte(name))
	h.Write([]byte{0})
	h.Write(p.scan.Conds[0].Eq)
	p.query = h.Sum64()

	if q.Order == "" {
		for i := 1; i < len(def.Fields); i++ {
			p.scan.Order = append(p.scan.Order, i)
		}
		p.order = "default"
	} else {
		pos, ok := def.field(q.Order)
		if !ok {
			return nil, cellar.Errorf(cellar.EINVALID, "order: index %s has no field %q", name, trunc(q.Order, 80))
		}
		p.scan.Order = []int{pos}
		p.order = "field:" + q.Order
	}
	p.scan.Desc = q.Desc
	if q.Desc {
		p.order += ":desc"
	}

	if len(q.Fields) == 0 {
		for i := range def.Fields {
			p.proj = append(p.proj, i)
		}
	}
	for _, f := range q.Fields {
		pos, ok := def.field(f)
		if !ok {
			return nil, cellar.Errorf(cellar.EINVALID, "fields: index %s has no field %q", name, trunc(f, 80))
		}
		p.proj = append(p.proj, pos)
	}
	if q.Cursor != "" {
		after, err := p.decodeCursor(q.Cursor)
		if err != nil {
			return nil, err
		}
		p.scan.After = after
	}
	return p, nil
}

// addCond adds the condition c on field f at position pos.
func (p *plan) addCond(pos int, f Field, c Cond) error {
	enc := func(op string, raw json.RawMessage, nullOK bool) ([]byte, error) {
		if string(raw) == "null" {
			if !nullOK {
				return nil, cellar.Errorf(cellar.EINVALID, "where.%s.%s: null cannot bound a range", f.Name, op)
			}
			return nullKey, nil
		}
		k, ok := encodeValue(f.Type, raw)
		if !ok {
			return nil, cellar.Errorf(cellar.EINVALID, "where.%s: field %s is of type %s: want %s, got %s", f.Name, f.Name, f.Type, typeWord(f.Type), describe(raw))
		}
		return k, nil
	}
	if c.Eq != nil {
		if c.Gt != nil || c.Gte != nil || c.Lt != nil || c.Lte != nil {
			return cellar.Errorf(cellar.EINVALID, "where.%s: eq cannot be combined with a range", f.Name)
		}
		if pos == 0 && string(c.Eq) == "null" {
			return cellar.Errorf(cellar.EINVALID, "where.%s: the shard field cannot be null (rows without it are not indexed)", f.Name)
		}
		k, err := enc("eq", c.Eq, true)
		if err != nil {
			return err
		}
		p.conds[pos].eq = k
		p.scan.Conds[pos].Eq, _ = truncKey(k)
		return nil
	}
	if c.Gt != nil && c.Gte != nil || c.Lt != nil && c.Lte != nil {
		return cellar.Errorf(cellar.EINVALID, "where.%s: give at most one lower bound (gt, gte) and one upper bound (lt, lte)", f.Name)
	}
	bound := func(op string, raw json.RawMessage, inclusive bool) (*cellar.IndexBound, *cellar.IndexBound, error) {
		if raw == nil {
			return nil, nil, nil
		}
		k, err := enc(op, raw, false)
		if err != nil {
			return nil, nil, err
		}
		cut, _ := truncKey(k)
		// A key of the longest stored length bounds the stored keys only
		// weakly: a longer value that starts with it (or with the cut
		// key) is stored as exactly that key. Keep the candidates equal to
		// it, and let the re-check decide.
		weak := len(k) >= cellar.MaxIndexKeyBytes
		return &cellar.IndexBound{Key: k, Inclusive: inclusive}, &cellar.IndexBound{Key: cut, Inclusive: inclusive || weak}, nil
	}
	var err error
	fc, sc := &p.conds[pos], &p.scan.Conds[pos]
	if c.Gt != nil {
		fc.lower, sc.Lower, err = bound("gt", c.Gt, false)
	} else {
		fc.lower, sc.Lower, err = bound("gte", c.Gte, true)
	}
	if err != nil {
		return err
	}
	if c.Lt != nil {
		fc.upper, sc.Upper, err = bound("lt", c.Lt, false)
	} else {
		fc.upper, sc.Upper, err = bound("lte", c.Lte, true)
	}
	if err != nil {
		return err
	}
	if fc.lower == nil && fc.upper == nil {
		return cellar.Errorf(cellar.EINVALID, "where.%s: give a value, or an object of eq, gt, gte, lt, lte", f.Name)
	}
	if fc.lower == nil {
		// Missing values sort first; a range never matches them.
		fc.lower = &cellar.IndexBound{Key: nullKey}
		sc.Lower = &cellar.IndexBound{Key: nullKey}
	}
	return nil
}

// cursor is what a Result's cursor holds: the order and the query (index
// and shard field value) it belongs to, and the position of the last entry
// returned. A position means nothing in another index or another value's
// entries, so such a cursor is refused rather than read as a place to start.
type cursor struct {
	Order string `json:"o"`
	Query uint64 `json:"q,string"`
	cellar.IndexPosition
}

func (p *plan) encodeCursor(pos cellar.IndexPosition) string {
	b, _ := json.Marshal(cursor{Order: p.order, Query: p.query, IndexPosition: pos})
	return base64.RawURLEncoding.EncodeToString(b)
}

func (p *plan) decodeCursor(s string) (*cellar.IndexPosition, error) {
	bad := cellar.Errorf(cellar.EINVALID, "cursor is not one this index returned")
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil {
		return nil, bad
	}
	var c cursor
	if err := json.Unmarshal(b, &c); err != nil || len(c.Keys) != len(p.scan.Order) || cellar.ValidateRowKey(c.RowKey) != nil {
		return nil, bad
	}
	if c.Order != p.order {
		return nil, cellar.Errorf(cellar.EINVALID, "cursor belongs to a query with another order")
	}
	if c.Query != p.query {
		return nil, cellar.Errorf(cellar.EINVALID, "cursor belongs to a query of another index or another value of its shard field")
	}
	for _, k := range c.Keys {
		if len(k) > cellar.MaxIndexKeyBytes {
			return nil, bad
		}
	}
	return &c.IndexPosition, nil
}

// position is the place in the plan's order of an entry of rowKey at loc:
// the keys of the order fields, then the row key. With an order on one
// field, a row's entries that differ only in other fields share it.
func (p *plan) position(loc cellar.IndexLoc, rowKey string) cellar.IndexPosition {
	pos := cellar.IndexPosition{RowKey: rowKey}
	for _, i := range p.scan.Order {
		pos.Keys = append(pos.Keys, loc.Keys[i])
	}
	return pos
}

func samePosition(a, b cellar.IndexPosition) bool {
	return a.RowKey == b.RowKey && slices.EqualFunc(a.Keys, b.Keys, bytes.Equal)
}

// samePlace reports whether a row's entries at a and b have the same
// position in the plan's order (and shard).
func (p *plan) samePlace(a, b cellar.IndexLoc) bool {
	if a.Shard != b.Shard {
		return false
	}
	for _, i := range p.scan.Order {
		if !bytes.Equal(a.Keys[i], b.Keys[i]) {
			return false
		}
	}
	return true
}

// Query returns the entries of index name that q selects, re-checked
// against the rows' latest cells. Returns ErrNotFound for an unknown
// index, EINVALID for a bad query, and EUNAVAILABLE when a node does not
// answer or the index did not catch up with q.WaitFor within q.Wait.
func (m *Manager) Query(ctx context.Context, name string, q Query) (Result, error) {
	res := Result{Entries: []Entry{}}
	rec, err := m.load(ctx, name)
	if err != nil {
		return res, err
	}
	p, err := planQuery(name, rec.Active, rec.Definition, q, m.count)
	if err != nil {
		return res, err
	}
	if len(q.WaitFor) > 0 {
		now, err := m.waitFor(ctx, name, rec.Active, q.WaitFor, q.Wait)
		if err != nil {
			return res, err
		}
		if !now.Definition.equal(rec.Definition) {
			// Deleted and defined again while the query waited: its
			// entries are laid out by the new definition.
			if p, err = planQuery(name, now.Active, now.Definition, q, m.count); err != nil {
				return res, err
			}
		}
		rec = now
		p.scan.Gen = now.Active
	}
	return m.runQuery(ctx, rec.Definition, p)
}

// runQuery reads candidate entries page by page and keeps those that the
// rows' latest cells confirm. A page that fills up carries a cursor only
// if a further candidate exists: one confirmed among the candidates
// already read, or unread ones after them.
func (m *Manager) runQuery(ctx context.Context, def Definition, p *plan) (Result, error) {
	res := Result{Entries: []Entry{}}
	after := p.scan.After
	var last *cellar.IndexPosition // of the last entry returned
	for round := 0; round < maxRounds; round++ {
		need := p.limit - len(res.Entries)
		scan := p.scan
		scan.After, scan.Limit = after, min(need+need/4+4, cellar.MaxIndexLimit)
		cands, err := m.entries.ScanIndex(ctx, scan)
		if err != nil {
			return Result{Entries: []Entry{}}, err
		}
		if len(cands) == 0 {
			return res, nil
		}
		lookups := make([]cellar.LookupKey, len(cands))
		for i, e := range cands {
			lookups[i] = cellar.LookupKey{RowKey: e.RowKey, Column: def.Column}
		}
		// A multi-get answers at most MaxBatchGetBytes of bodies, counted
		// in request order (the first cell always): the candidates from
		// the first one it left out are read again, in further multi-gets,
		// each cell checked as it comes and its body not kept.
		for start := 0; start < len(cands); {
			cells := m.cells.BatchGet(ctx, lookups[start:])
			next := len(cands)
			for k, r := range cells {
				i := start + k
				if errors.Is(r.Err, cellar.ErrTooLarge) && i > start {
					next = i
					break
				}
				if r.Err != nil && !errors.Is(r.Err, cellar.ErrNotFound) {
					return Result{Entries: []Entry{}}, r.Err
				}
				e := cands[i]
				out, ok := p.confirm(def, e, r.Cell, m.count)
				if !ok {
					continue
				}
				pos := p.position(e.Loc, e.RowKey)
				if last != nil && samePosition(*last, pos) {
					continue // another entry of the row just returned, at the same place
				}
				if len(res.Entries) == p.limit {
					res.Cursor = p.encodeCursor(*last) // the page is full, and more follow
					return res, nil
				}
				res.Entries = append(res.Entries, out)
				last = &pos
			}
			start = next
		}
		exhausted := len(cands) < scan.Limit
		if len(res.Entries) == p.limit {
			if !exhausted {
				res.Cursor = p.encodeCursor(*last)
			}
			return res, nil
		}
		end := p.position(cands[len(cands)-1].Loc, cands[len(cands)-1].RowKey)
		after = &end
		if exhausted {
			return res, nil
		}
	}
	res.Cursor = p.encodeCursor(*after)
	return res, nil
}

// confirm re-checks candidate e against the row's latest cell (nil if the
// row has none) and returns the entry to return for it. It confirms e if
// the cell satisfies the conditions and puts the row at e's position in
// the order, not only at e itself: a stale entry of the row and its fresh
// one can share a position (they differ in a field outside the order),
// and the engine orders them either way, so a scan round or a page that
// ends on the stale one must have returned the row already. The caller
// returns a row once per position.
func (p *plan) confirm(def Definition, e cellar.IndexEntry, cell *cellar.Cell, shardCount int) (Entry, bool) {
	if cell == nil {
		return Entry{}, false // the row is gone from the column (cannot happen: cells are immutable)
	}
	vals := extract(cell.Body, def.Fields)
	ks := keysOf(vals, def.Fields)
	loc, ok := locOf(ks, def.Fields, shardCount)
	if !ok || !p.samePlace(loc, e.Loc) || !p.match(ks) {
		return Entry{}, false // stale, or a cut key that does not really match
	}
	out := Entry{RowKey: e.RowKey, RefKey: cell.RefKey, Fields: make(map[string]json.RawMessage, len(p.proj))}
	for _, pos := range p.proj {
		out.Fields[def.Fields[pos].Name] = vals[pos]
	}
	return out, true
}

// waitFor waits until the index generation that serves queries has
// acknowledged every cell in pos, and returns the record it serves from
// then (rec.Active is that generation; its definition may be another, if
// the index was deleted and defined again meanwhile). A rebuild
// switching over meanwhile makes it wait for the new generation.
func (m *Manager) waitFor(ctx context.Context, name string, gen int64, pos []CellPos, wait time.Duration) (record, error) {
	if len(pos) > MaxWaitFor {
		return record{}, cellar.Errorf(cellar.EINVALID, "wait_for names %d cells; the limit is %d", len(pos), MaxWaitFor)
	}
	for _, c := range pos {
		if c.Shard < 0 || c.Shard >= m.count || c.AddedID < 1 {
			return record{}, cellar.Errorf(cellar.EINVALID, "wait_for: shard %d added_id %d is out of range (shards 0..%d, added_id from 1)", c.Shard, c.AddedID, m.count-1)
		}
	}
	if wait <= 0 || wait > MaxWait {
		return record{}, cellar.Errorf(cellar.EINVALID, "wait must be 1 ms..%s", MaxWait)
	}
	deadline := time.NewTimer(wait)
	defer deadline.Stop()
	pending := append([]CellPos{}, pos...)
	for {
		woken := m.progressed()
		// A rebuild may have switched over (and the old generation's
		// trigger may be gone): wait for the serving one.
		rec, err := m.load(ctx, name)
		if err != nil {
			return record{}, err
		}
		if rec.Active != gen {
			gen, pending = rec.Active, append([]CellPos{}, pos...)
		}
		column := rec.Column
		next := pending[:0]
		for _, c := range pending {
			off, err := m.records.TriggerOffset(ctx, triggerName(name, gen), c.Shard)
			if err != nil {
				return record{}, err
			}
			if off >= c.AddedID {
				continue
			}
			// The offset only moves over cells of other columns now and
			// then; what matters is whether a cell of the index's column
			// is still waiting at or below the one asked for. Every cell up
			// to that one is committed (its put returned), so a scan sees
			// them all.
			res, err := m.cells.Scan(ctx, c.Shard, off, 1, column)
			if err != nil {
				return record{}, err
			}
			if len(res.Cells) > 0 && res.Cells[0].AddedID <= c.AddedID {
				next = append(next, c)
			}
		}
		pending = next
		if len(pending) == 0 {
			return rec, nil
		}
		// Local acks wake the wait at once; other processes' are seen by
		// polling.
		poll := time.NewTimer(10 * time.Millisecond)
		select {
		case <-ctx.Done():
			poll.Stop()
			return record{}, cellar.Unavailable(ctx.Err(), "index %s: waiting for shard %d added_id %d", name, pending[0].Shard, pending[0].AddedID)
		case <-deadline.C:
			poll.Stop()
			return record{}, cellar.Errorf(cellar.EUNAVAILABLE, "index %s has not caught up with shard %d added_id %d within %s; retry", name, pending[0].Shard, pending[0].AddedID, wait)
		case <-woken:
		case <-poll.C:
		}
		poll.Stop()
	}
}
