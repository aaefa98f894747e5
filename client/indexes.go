package client

import (
	"context"
	"encoding/json"
	"net/http"
	"time"

	"github.com/cellar-db/cellar"
)

// IndexField is one typed field of a secondary index: a member of the cell
// body ("a.b" for nested objects) and its type: "string", "int", "float",
// "bool" or "time".
type IndexField struct {
	Name string `json:"name"`
	Type string `json:"type"`
}

// IndexDefinition names the column an index covers and its fields; the
// first field is the shard field, which every query must give.
type IndexDefinition struct {
	Column string       `json:"column"`
	Fields []IndexField `json:"fields"`
}

// Index is a secondary index's definition and state.
type Index struct {
	Name       string       `json:"name"`
	Column     string       `json:"column"`
	Fields     []IndexField `json:"fields"`
	Generation int64        `json:"generation"`
	// State is "backfilling" until the index has caught up with the cells
	// written before it, then "ready".
	State      string    `json:"state"`
	Rebuilding int64     `json:"rebuilding"`
	CreatedAt  time.Time `json:"created_at"`
	UpdatedAt  time.Time `json:"updated_at"`
}

// IndexProgress is how far one generation of an index is behind.
type IndexProgress struct {
	Generation   int64   `json:"generation"`
	Trigger      string  `json:"trigger"`
	LagCells     int64   `json:"lag_cells"`
	LagSeconds   float64 `json:"lag_seconds"`
	ShardsBehind int     `json:"shards_behind"`
	ShardsTotal  int     `json:"shards_total"`
	Unknown      int     `json:"unknown"`
	Done         float64 `json:"done"`
}

// IndexStatus is an index with its lag and the progress of a rebuild.
type IndexStatus struct {
	Index
	Lag     IndexProgress  `json:"lag"`
	Rebuild *IndexProgress `json:"rebuild"`
}

// Cond is a where condition other than equality: a range of the bounds
// that are set (or an explicit Eq).
type Cond struct {
	Eq  any `json:"eq,omitempty"`
	Gt  any `json:"gt,omitempty"`
	Gte any `json:"gte,omitempty"`
	Lt  any `json:"lt,omitempty"`
	Lte any `json:"lte,omitempty"`
}

// CellPos names a written cell by its shard and added_id, for
// IndexQuery.WaitFor.
type CellPos struct {
	Shard   int   `json:"shard"`
	AddedID int64 `json:"added_id"`
}

// Written returns the positions of cells as Put and BatchPut return them,
// for IndexQuery.WaitFor: a query that waits for them sees their writes.
func Written(cells ...cellar.Cell) []CellPos {
	out := make([]CellPos, len(cells))
	for i, c := range cells {
		out[i] = CellPos{Shard: c.Shard, AddedID: c.AddedID}
	}
	return out
}

// IndexQuery selects entries of an index. Where maps field names to a
// value (equality; nil matches a missing value) or a Cond; it must give
// the shard field's value.
type IndexQuery struct {
	Where  map[string]any
	Fields []string // to return; all when empty
	Order  string   // field to order by; the index's order when empty
	Desc   bool
	Limit  int    // 0: the server's default (100)
	Cursor string // from the previous page
	// WaitFor makes the query wait, up to Wait (0: the server's default of
	// 1 s), until the index has caught up with these cells.
	WaitFor []CellPos
	Wait    time.Duration
}

// IndexEntry is one match, its fields read from the row's latest cell.
type IndexEntry struct {
	RowKey string                     `json:"row_key"`
	RefKey int64                      `json:"ref_key"`
	Fields map[string]json.RawMessage `json:"fields"`
}

// IndexResult is a page of matches; Cursor is empty after the last page.
type IndexResult struct {
	Entries []IndexEntry
	Cursor  string
}

func indexPath(name string) (string, error) {
	seg, err := segment("index name", name)
	if err != nil {
		return "", err
	}
	return "/v1/indexes/" + seg, nil
}

// DefineIndex creates index name; created is false if it already existed
// with this definition. Returns ErrConflict if it exists with another.
func (c *Client) DefineIndex(ctx context.Context, name string, def IndexDefinition) (ix Index, created bool, err error) {
	path, err := indexPath(name)
	if err != nil {
		return ix, false, err
	}
	body, err := encode(def)
	if err != nil {
		return ix, false, cellar.Internal(err, "encode index definition")
	}
	status, err := c.do(ctx, http.MethodPut, path, nil, body, &ix)
	return ix, status == http.StatusCreated, err
}

// Indexes lists the indexes, by name.
func (c *Client) Indexes(ctx context.Context) ([]Index, error) {
	var resp struct {
		Indexes []Index `json:"indexes"`
	}
	_, err := c.do(ctx, http.MethodGet, "/v1/indexes", nil, nil, &resp)
	return resp.Indexes, err
}

// IndexStatus returns index name with its lag. Returns ErrNotFound if
// there is no such index.
func (c *Client) IndexStatus(ctx context.Context, name string) (IndexStatus, error) {
	var st IndexStatus
	path, err := indexPath(name)
	if err != nil {
		return st, err
	}
	_, err = c.do(ctx, http.MethodGet, path, nil, nil, &st)
	return st, err
}

// QueryIndex runs q on index name.
func (c *Client) QueryIndex(ctx context.Context, name string, q IndexQuery) (IndexResult, error) {
	var res IndexResult
	path, err := indexPath(name)
	if err != nil {
		return res, err
	}
	req := struct {
		Where   map[string]any `json:"where"`
		Fields  []string       `json:"fields,omitempty"`
		Order   string         `json:"order,omitempty"`
		Desc    bool           `json:"desc,omitempty"`
		Limit   int            `json:"limit,omitempty"`
		Cursor  string         `json:"cursor,omitempty"`
		WaitFor []CellPos      `json:"wait_for,omitempty"`
		WaitMS  int64          `json:"wait_ms,omitempty"`
	}{q.Where, q.Fields, q.Order, q.Desc, q.Limit, q.Cursor, q.WaitFor, waitMS(q.Wait)}
	if req.Where == nil {
		req.Where = map[string]any{}
	}
	body, err := encode(req)
	if err != nil {
		return res, cellar.Errorf(cellar.EINVALID, "encode index query: %v", err)
	}
	var resp struct {
		Entries []IndexEntry `json:"entries"`
		Cursor  *string      `json:"cursor"`
	}
	if _, err := c.do(ctx, http.MethodPost, path+"/query", nil, body, &resp); err != nil {
		return res, err
	}
	res.Entries = resp.Entries
	if resp.Cursor != nil {
		res.Cursor = *resp.Cursor
	}
	return res, nil
}

// RebuildIndex starts rebuilding index name from the start of the log; the
// current generation serves queries until the new one has caught up.
// Returns ErrConflict while a rebuild runs.
func (c *Client) RebuildIndex(ctx context.Context, name string) (Index, error) {
	var ix Index
	path, err := indexPath(name)
	if err != nil {
		return ix, err
	}
	_, err = c.do(ctx, http.MethodPost, path+"/rebuild", nil, []byte("{}"), &ix)
	return ix, err
}

// DeleteIndex deletes index name. It needs the admin scope.
func (c *Client) DeleteIndex(ctx context.Context, name string) error {
	path, err := indexPath(name)
	if err != nil {
		return err
	}
	var resp struct{}
	_, err = c.do(ctx, http.MethodDelete, path, nil, nil, &resp)
	return err
}

// waitMS is wait in whole milliseconds, as the API takes it: a wait
// below a millisecond is asked as one, not as none (which the server takes
// for its default of a second).
func waitMS(wait time.Duration) int64 {
	if ms := wait.Milliseconds(); ms > 0 || wait <= 0 {
		return ms
	}
	return 1
}
