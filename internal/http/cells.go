package http

import (
	"bytes"
	"encoding/json"
	"net/http"
	"strings"

	"github.com/cellar-db/cellar"
)

// putResult is the JSON of a written cell: its metadata and whether this
// request created it. (Embedding cellar.Cell would not do: its MarshalJSON
// would be promoted and drop Created.)
type putResult struct {
	cellar.Key
	Shard     int    `json:"shard"`
	AddedID   int64  `json:"added_id"`
	CreatedAt string `json:"created_at"`
	Created   bool   `json:"created"`
}

func newPutResult(c cellar.Cell, created bool) putResult {
	return putResult{Key: c.Key, Shard: c.Shard, AddedID: c.AddedID, CreatedAt: cellar.FormatTime(c.CreatedAt), Created: created}
}

// handlePut serves PUT /v1/cells/{row_key}/{column}/{ref_key}: 201 when
// the cell is new, 200 for an equal replay, 409 for a different body.
func (s *server) handlePut(w http.ResponseWriter, r *http.Request) error {
	k, err := pathKey(r, true)
	if err != nil {
		return err
	}
	raw, err := readRequest(w, r, s.opts.MaxBodyBytes)
	if err != nil {
		return err
	}
	body, err := cellar.CheckBody(raw, s.opts.MaxBodyBytes)
	if err != nil {
		return err
	}
	c, created, err := s.store.Put(r.Context(), cellar.NewCell{Key: k, Body: body})
	if err != nil {
		return err
	}
	status := http.StatusOK
	if created {
		status = http.StatusCreated
	}
	s.writeJSON(w, r, status, newPutResult(c, created))
	return nil
}

// handleGet serves GET /v1/cells/{row_key}/{column}/{ref_key}.
func (s *server) handleGet(w http.ResponseWriter, r *http.Request) error {
	k, err := pathKey(r, true)
	if err != nil {
		return err
	}
	if _, err := query(r); err != nil {
		return err
	}
	c, err := s.store.Get(r.Context(), k)
	if err != nil {
		return err
	}
	s.writeCell(w, r, http.StatusOK, c)
	return nil
}

// handleLatest serves GET /v1/cells/{row_key}/{column}: the cell with the
// highest ref_key.
func (s *server) handleLatest(w http.ResponseWriter, r *http.Request) error {
	k, err := pathKey(r, false)
	if err != nil {
		return err
	}
	if _, err := query(r); err != nil {
		return err
	}
	c, err := s.store.Latest(r.Context(), k.RowKey, k.Column)
	if err != nil {
		return err
	}
	s.writeCell(w, r, http.StatusOK, c)
	return nil
}

// handleRow serves GET /v1/rows/{row_key}?columns=A,B.
func (s *server) handleRow(w http.ResponseWriter, r *http.Request) error {
	rowKey := pathSegment(r, "row_key")
	if err := cellar.ValidateRowKey(rowKey); err != nil {
		return err
	}
	q, err := query(r, "columns")
	if err != nil {
		return err
	}
	var columns []string
	if v := q["columns"]; v != "" {
		columns = strings.Split(v, ",")
		if len(columns) > cellar.MaxBatchKeys {
			return cellar.Errorf(cellar.EINVALID, "columns names %d columns; the limit is %d", len(columns), cellar.MaxBatchKeys)
		}
		for _, c := range columns {
			if err := cellar.ValidateColumn(c); err != nil {
				return err
			}
		}
	}
	cells, err := s.store.Row(r.Context(), rowKey, columns)
	if err == nil {
		// The answer's bodies stay within MaxBatchGetBytes, whatever the
		// store: as a batchGet's.
		err = cellar.BoundRow(rowKey, cells)
	}
	if err != nil {
		return err
	}
	s.writeJSON(w, r, http.StatusOK, struct {
		RowKey string        `json:"row_key"`
		Cells  []cellar.Cell `json:"cells"`
	}{rowKey, cells})
	return nil
}

// handleBatchGet serves POST /v1/cells:batchGet.
func (s *server) handleBatchGet(w http.ResponseWriter, r *http.Request) error {
	logged := map[string]bool{}
	raw, err := readRequest(w, r, s.opts.MaxRequestBytes)
	if err != nil {
		return err
	}
	keys, err := decodeBatchGet(raw)
	if err != nil {
		return err
	}
	results := make([]batchGetResult, len(keys))
	if len(keys) > 0 {
		// The answer's bodies stay within MaxBatchGetBytes, whatever the
		// store.
		for i, gr := range cellar.BoundBatchGet(s.store.BatchGet(r.Context(), keys)) {
			if gr.Err != nil || gr.Cell == nil {
				e := s.itemError(r, gr.Err, logged)
				results[i].Error = &e
				continue
			}
			results[i].Cell = gr.Cell
		}
	}
	buf := getBuffer()
	defer putBuffer(buf)
	b, err := appendBatchGet(buf.AvailableBuffer(), results)
	if err != nil {
		s.encodeFailed(w, r, err)
		return nil
	}
	writeBody(w, http.StatusOK, b)
	keepBuffer(buf, b)
	return nil
}

// batchGetResult is one result of a batchGet.
type batchGetResult struct {
	Cell  *cellar.Cell `json:"cell,omitempty"`
	Error *errorBody   `json:"error,omitempty"`
}

// appendBatchGet appends the response to a batchGet, {"results":[...]}
// and a newline, byte for byte as writeJSON would encode it, and without
// compacting again what Cell.MarshalJSON wrote compact.
func appendBatchGet(b []byte, results []batchGetResult) ([]byte, error) {
	b = append(b, `{"results":[`...)
	for i, res := range results {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, '{')
		if res.Cell != nil {
			cb, err := res.Cell.MarshalJSON()
			if err != nil {
				return nil, err
			}
			b = append(b, `"cell":`...)
			b = append(b, cb...)
		}
		if res.Error != nil {
			if res.Cell != nil {
				b = append(b, ',')
			}
			eb, err := marshalNoEscape(res.Error)
			if err != nil {
				return nil, err
			}
			b = append(b, `"error":`...)
			b = append(b, eb...)
		}
		b = append(b, '}')
	}
	return append(b, "]}\n"...), nil
}

// marshalNoEscape is json.Marshal with HTML escaping off.
func marshalNoEscape(v any) ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n")), nil
}

// handleBatchPut serves POST /v1/cells:batchPut. Items refused while
// parsing never reach the store; the others are written together.
func (s *server) handleBatchPut(w http.ResponseWriter, r *http.Request) error {
	logged := map[string]bool{}
	raw, err := readRequest(w, r, s.opts.MaxRequestBytes)
	if err != nil {
		return err
	}
	items, err := decodeBatchPut(raw, s.opts.MaxBodyBytes)
	if err != nil {
		return err
	}
	type result struct {
		*putResult
		Error *errorBody `json:"error,omitempty"`
	}
	results := make([]result, len(items))
	var cells []cellar.NewCell
	var idx []int // idx[j] is the item of cells[j]
	for i, it := range items {
		if it.err != nil {
			e := s.itemError(r, it.err, logged)
			results[i].Error = &e
			continue
		}
		cells = append(cells, it.cell)
		idx = append(idx, i)
	}
	if len(cells) > 0 {
		for j, pr := range s.store.BatchPut(r.Context(), cells) {
			i := idx[j]
			if pr.Err != nil {
				e := s.itemError(r, pr.Err, logged)
				results[i].Error = &e
				continue
			}
			p := newPutResult(pr.Cell, pr.Created)
			results[i].putResult = &p
		}
	}
	s.writeJSON(w, r, http.StatusOK, struct {
		Results []result `json:"results"`
	}{results})
	return nil
}

// itemError is the JSON of one failed item of a batch.
//
// The cause is logged once per distinct error in the request, not once per
// item: a node that is down fails hundreds of items alike.
func (s *server) itemError(r *http.Request, err error, logged map[string]bool) errorBody {
	if err == nil {
		err = cellar.Internal(nil, "store returned neither a result nor an error")
	}
	if logged[err.Error()] {
		return errorBody{Code: cellar.ErrorCode(err), Message: cellar.ErrorMessage(err)}
	}
	logged[err.Error()] = true
	return s.errorOf(r, err)
}

// handleScan serves GET /v1/shards/{shard}/cells?after=&limit=&column=.
func (s *server) handleScan(w http.ResponseWriter, r *http.Request) error {
	shard, err := parseUint("shard", pathSegment(r, "shard"), 0, cellar.MaxShardCount-1)
	if err != nil && s.opts.Topology != nil {
		// Say the range of this datastore, not of any.
		_, err = parseUint("shard", pathSegment(r, "shard"), 0, int64(s.opts.Topology().ShardCount-1))
	}
	if err != nil {
		return err
	}
	q, err := query(r, "after", "limit", "column")
	if err != nil {
		return err
	}
	var after int64
	if v, ok := q["after"]; ok {
		if after, err = parseUint("after", v, 0, cellar.MaxRefKey); err != nil {
			return err
		}
	}
	limit := int64(cellar.DefaultScanLimit)
	if v, ok := q["limit"]; ok {
		if limit, err = parseUint("limit", v, 1, cellar.MaxScanLimit); err != nil {
			return err
		}
	}
	column, ok := q["column"]
	if ok {
		if err := cellar.ValidateColumn(column); err != nil {
			return err
		}
	}
	res, err := s.store.Scan(r.Context(), int(shard), after, int(limit), column)
	if err != nil {
		return err
	}
	s.writeJSON(w, r, http.StatusOK, struct {
		Cells []cellar.Cell `json:"cells"`
		Next  int64         `json:"next"`
	}{res.Cells, res.Next})
	return nil
}

// handleTopology serves GET /v1/shards.
func (s *server) handleTopology(w http.ResponseWriter, r *http.Request) error {
	if _, err := query(r); err != nil {
		return err
	}
	if s.opts.Topology == nil {
		return cellar.Errorf(cellar.ENOTFOUND, "this server does not publish a shard topology")
	}
	s.writeJSON(w, r, http.StatusOK, s.opts.Topology())
	return nil
}

type status struct {
	Status string `json:"status"`
}

// handleHealth serves GET /healthz: the process is up.
func (s *server) handleHealth(w http.ResponseWriter, r *http.Request) error {
	s.writeJSON(w, r, http.StatusOK, status{"ok"})
	return nil
}

// handleReady serves GET /readyz: the server can serve requests now.
func (s *server) handleReady(w http.ResponseWriter, r *http.Request) error {
	if s.opts.Ready != nil {
		if err := s.opts.Ready(r.Context()); err != nil {
			msg := "not ready"
			if cellar.ErrorCode(err) != cellar.EINTERNAL {
				msg = "not ready: " + cellar.ErrorMessage(err)
			}
			s.log.WarnContext(r.Context(), "not ready", "err", err)
			return cellar.Errorf(cellar.EUNAVAILABLE, "%s", msg)
		}
	}
	s.writeJSON(w, r, http.StatusOK, status{"ok"})
	return nil
}
