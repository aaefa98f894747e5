// Package cellar is the domain of the cellar cell store: cells and their
// keys, logical shards and the shard map, the error type, and the Store
// interface that every storage backend, the sharding layer and the HTTP
// client implement. It imports nothing else of cellar's.
package cellar

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"time"
)

// Key addresses one cell.
type Key struct {
	RowKey string `json:"row_key"`
	Column string `json:"column"`
	RefKey int64  `json:"ref_key"`
}

// Cell is an immutable, versioned JSON value stored under a Key.
type Cell struct {
	Key
	// Shard is the logical shard of RowKey, assigned by the server.
	Shard int `json:"shard"`
	// AddedID is the cell's position in its shard's log: it starts at 1 and
	// strictly increases in commit order within the shard.
	AddedID int64 `json:"added_id"`
	// CreatedAt is when the server accepted the cell, in UTC with millisecond
	// precision.
	CreatedAt time.Time `json:"created_at"`
	// Body is a JSON object, exactly as written but for whitespace.
	Body json.RawMessage `json:"body,omitempty"`
}

// MarshalJSON writes the cell in the API's field order, CreatedAt as RFC
// 3339 UTC with exactly three fractional digits, and the body exactly as
// stored but for whitespace: json.Marshal would rewrite '<', '>' and '&'
// inside it as \u escapes. Returns an error if the body is not valid JSON.
//
// It appends the fields itself rather than through an encoder, which
// would cost more than the rest of a read's JSON; the bytes are those of
// encoding/json with HTML escaping off (TestCellMarshalJSON compares them).
func (c Cell) MarshalJSON() ([]byte, error) {
	b := make([]byte, 0, 128+len(c.RowKey)+len(c.Column)+len(c.Body))
	b = append(b, `{"row_key":`...)
	b = appendJSONString(b, c.RowKey)
	b = append(b, `,"column":`...)
	b = appendJSONString(b, c.Column)
	b = append(b, `,"ref_key":`...)
	b = strconv.AppendInt(b, c.RefKey, 10)
	b = append(b, `,"shard":`...)
	b = strconv.AppendInt(b, int64(c.Shard), 10)
	b = append(b, `,"added_id":`...)
	b = strconv.AppendInt(b, c.AddedID, 10)
	b = append(b, `,"created_at":`...)
	var tb [48]byte
	b = appendJSONString(b, c.CreatedAt.UTC().AppendFormat(tb[:0], timeLayout))
	if len(c.Body) > 0 {
		b = append(b, `,"body":`...)
		// What encoding/json does with a json.RawMessage: compact it,
		// which also checks it.
		buf := bytes.NewBuffer(b)
		if err := json.Compact(buf, c.Body); err != nil {
			return nil, fmt.Errorf("cell %q/%s/%d: body is not valid JSON: %w", c.RowKey, c.Column, c.RefKey, err)
		}
		b = buf.Bytes()
	}
	return append(b, '}'), nil
}

// appendJSONString appends s as a JSON string, as encoding/json writes it
// with HTML escaping off. Strings of printable ASCII other than '"' and
// '\', which is what keys and times are made of, are copied; the others
// are left to encoding/json.
func appendJSONString[S string | []byte](b []byte, s S) []byte {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c > 0x7e || c == '"' || c == '\\' {
			var buf bytes.Buffer
			enc := json.NewEncoder(&buf)
			enc.SetEscapeHTML(false)
			_ = enc.Encode(string(s)) // a string always encodes
			return append(b, bytes.TrimSuffix(buf.Bytes(), []byte("\n"))...)
		}
	}
	b = append(b, '"')
	b = append(b, s...)
	return append(b, '"')
}

// timeLayout is RFC 3339 with milliseconds.
const timeLayout = "2006-01-02T15:04:05.000Z07:00"

// FormatTime formats t as RFC 3339 UTC with milliseconds.
func FormatTime(t time.Time) string {
	return t.UTC().Format(timeLayout)
}

// LookupKey names a cell to read: an exact ref_key, or the latest cell of
// (RowKey, Column) when RefKey is nil.
type LookupKey struct {
	RowKey string `json:"row_key"`
	Column string `json:"column"`
	RefKey *int64 `json:"ref_key,omitempty"`
}

// Validate checks the parts of k that are present.
func (k LookupKey) Validate() error {
	if err := ValidateRowKey(k.RowKey); err != nil {
		return err
	}
	if err := ValidateColumn(k.Column); err != nil {
		return err
	}
	if k.RefKey != nil {
		return ValidateRefKey(*k.RefKey)
	}
	return nil
}

// NewCell is a cell to write. Body must already have passed CheckBody.
type NewCell struct {
	Key
	Body json.RawMessage `json:"body"`
}

// GetResult is one result of BatchGet: a cell, or an error such as
// ErrNotFound or ErrUnavailable.
type GetResult struct {
	Cell *Cell
	Err  error
}

// PutResult is one result of BatchPut: the metadata of the stored cell and
// whether this call created it (false for an equal replay), or an error.
type PutResult struct {
	Cell    Cell
	Created bool
	Err     error
}

// ScanResult is a page of a shard's log.
type ScanResult struct {
	Cells []Cell
	// Next is the added_id to pass as `after` for the next page. It equals
	// the last cell's added_id, or `after` if the page is empty.
	Next int64
}

// Store is a cell store: one storage node, or many behind the sharding layer.
//
// All methods validate their arguments and return EINVALID errors for bad
// keys; errors are *Error values whose codes callers can test with errors.Is.
type Store interface {
	// Put stores c and returns its metadata (without the body). If a cell
	// with the same key exists with an equal body, Put returns that cell's
	// metadata and created=false; with a different body it returns
	// ErrConflict and changes nothing.
	Put(ctx context.Context, c NewCell) (cell Cell, created bool, err error)

	// BatchPut stores each cell as Put does and returns one result per
	// input, in order. Results are independent: one cell's failure does not
	// fail the others.
	BatchPut(ctx context.Context, cells []NewCell) []PutResult

	// Get returns the cell with key k. Returns ErrNotFound if there is none.
	Get(ctx context.Context, k Key) (Cell, error)

	// Latest returns the cell of (rowKey, column) with the highest ref_key.
	// Returns ErrNotFound if there is none.
	Latest(ctx context.Context, rowKey, column string) (Cell, error)

	// Row returns the latest cell of each column of rowKey, ordered by
	// column; only the named columns if columns is not empty. Returns an
	// empty slice, not an error, if the row has no cells. A row whose
	// cells' bodies pass MaxBatchGetBytes (one cell alone may) is not
	// answered: Row returns RowBytesError, and the columns are to be read
	// fewer at a time.
	Row(ctx context.Context, rowKey string, columns []string) ([]Cell, error)

	// BatchGet looks up each key and returns one result per key, in order.
	// A missing cell's result has Err matching ErrNotFound. The results
	// carry at most MaxBatchGetBytes of bodies, as BoundBatchGet leaves
	// them; a cell left out has Err matching ErrTooLarge. (The Go client,
	// over HTTP, asks again for those itself and answers every key.)
	BatchGet(ctx context.Context, keys []LookupKey) []GetResult

	// Scan returns up to limit cells of shard with added_id > after, in
	// ascending added_id order, only those of column if it is not empty. A
	// page stops early once its bodies reach MaxScanPageBytes; it always
	// holds at least one cell if any is there.
	// Once a scan has returned added_id X, no cell with added_id <= X can
	// appear in the shard later. Returns EINVALID for a shard out of range.
	Scan(ctx context.Context, shard int, after int64, limit int, column string) (ScanResult, error)

	// Close releases the store's resources.
	Close() error
}

// Limits on batch and scan sizes, shared by the server and the client.
const (
	MaxBatchKeys     = 1000
	MaxScanLimit     = 10000
	DefaultScanLimit = 100
	// MaxScanPageBytes bounds the bodies in one scan page.
	MaxScanPageBytes = 4 << 20
	// MaxBatchGetBytes bounds the bodies in one batchGet answer: a cell
	// that would take them past it is left out, its result a
	// BatchBytesError, to be asked for again in another batch. The first
	// cell is always answered, so asking again for the rest progresses.
	// It bounds a Row answer too (RowBytesError).
	MaxBatchGetBytes = 16 << 20
)

// BatchBytesError is the result of a batchGet key whose cell was left out
// because the batch's bodies would have exceeded MaxBatchGetBytes (code
// too_large): the cell may well exist; ask for it in another batch.
func BatchBytesError() error {
	return Errorf(ETOOLARGE, "left out: this cell would take the batch's bodies past %d bytes; get it in another batch", MaxBatchGetBytes)
}

// BoundBatchGet bounds the bodies of res, BatchGet's results, by
// MaxBatchGetBytes in request order, in place: the first cell is kept,
// then each that fits; the others become BatchBytesError results. It
// returns res.
func BoundBatchGet(res []GetResult) []GetResult {
	size, kept := 0, 0
	for i, r := range res {
		if r.Err != nil || r.Cell == nil {
			continue
		}
		if kept > 0 && size+len(r.Cell.Body) > MaxBatchGetBytes {
			res[i] = GetResult{Err: BatchBytesError()}
			continue
		}
		size += len(r.Cell.Body)
		kept++
	}
	return res
}

// FillBatchGet bounds res, the results of keys, as BoundBatchGet does,
// after asking fetch again for the cells that a part of the answer left
// out by its own count but that may fit the whole answer. A part is a call
// that answered some of the keys, each bounding its own results (a node
// its share of a batch, the cache's backing store the misses); partOf
// names the part of key i (the first call of each part; FillBatchGet
// tells its own calls apart). A cell a part left out can fit only if the
// whole answer left out a cell the part had counted before it: otherwise
// the whole answer has counted at least what the part had, so nothing is
// asked (a single node's answer is final as it is). Each round asks for
// every such cell, and settles at least the first, as a call always
// answers its first cell; a fetch that does not, or ctx, ends the rounds.
// It returns res.
func FillBatchGet(ctx context.Context, keys []LookupKey, res []GetResult, partOf func(i int) string,
	fetch func(context.Context, []LookupKey) []GetResult) []GetResult {
	type call struct {
		part  string
		round int
	}
	leftOut := func(r GetResult) bool { return ErrorCode(r.Err) == ETOOLARGE }
	round := make([]int, len(res)) // the round whose call answered res[i]
	for r := 1; ctx.Err() == nil; r++ {
		size, kept := 0, 0
		dropped := make(map[call]bool) // calls a counted cell of which the whole answer left out
		var idx []int
		for i, gr := range res {
			switch {
			case leftOut(gr):
				if size < MaxBatchGetBytes && dropped[call{partOf(i), round[i]}] {
					idx = append(idx, i)
				}
			case gr.Err != nil || gr.Cell == nil:
			case kept > 0 && size+len(gr.Cell.Body) > MaxBatchGetBytes:
				dropped[call{partOf(i), round[i]}] = true
			default:
				size += len(gr.Cell.Body)
				kept++
			}
		}
		if len(idx) == 0 {
			break
		}
		again := make([]LookupKey, len(idx))
		for j, i := range idx {
			again[j] = keys[i]
		}
		out := fetch(ctx, again)
		if len(out) != len(idx) {
			break
		}
		for j, i := range idx {
			res[i], round[i] = out[j], r
		}
		if leftOut(res[idx[0]]) {
			break
		}
	}
	return BoundBatchGet(res)
}

// RowBytesError is Row's error for a row whose latest cells' bodies pass
// MaxBatchGetBytes (code too_large).
func RowBytesError(rowKey string) error {
	return Errorf(ETOOLARGE, "row %q: the bodies of its latest cells pass %d bytes; read fewer columns at a time (columns=, or batchGet)", rowKey, MaxBatchGetBytes)
}

// BoundRow returns RowBytesError if the bodies of cells, Row's answer for
// rowKey, pass MaxBatchGetBytes, counting the first cell as fitting.
func BoundRow(rowKey string, cells []Cell) error {
	size := 0
	for i, c := range cells {
		if size += len(c.Body); i > 0 && size > MaxBatchGetBytes {
			return RowBytesError(rowKey)
		}
	}
	return nil
}

// Topology describes how a datastore's logical shards are laid out over
// nodes: what GET /v1/shards returns.
type Topology struct {
	ShardCount int        `json:"shard_count"`
	Version    int64      `json:"version"`
	Nodes      []NodeInfo `json:"nodes"`
}

// NodeInfo is one storage node and the shard ranges assigned to it.
type NodeInfo struct {
	Name   string       `json:"name"`
	Driver string       `json:"driver"`
	Ranges []ShardRange `json:"ranges"`
}
