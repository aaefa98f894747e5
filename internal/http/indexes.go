package http

import (
	"encoding/json"
	"net/http"
	"strconv"
	"time"

	"github.com/cellar-db/cellar"
	"github.com/cellar-db/cellar/internal/index"
)

// indexRoutes registers the /v1/indexes routes (docs/INDEXES.md).
func (s *server) indexRoutes() {
	s.handle("PUT /v1/indexes/{name}", ScopeWrite, s.handleIndexDefine)
	s.handle("GET /v1/indexes", ScopeRead, s.handleIndexList)
	s.handle("GET /v1/indexes/{name}", ScopeRead, s.handleIndexStatus)
	s.handle("POST /v1/indexes/{name}/query", ScopeRead, s.handleIndexQuery)
	s.handle("POST /v1/indexes/{name}/rebuild", ScopeWrite, s.handleIndexRebuild)
	s.handle("DELETE /v1/indexes/{name}", ScopeAdmin, s.handleIndexDelete)
}

// Defaults of an index query's wait for cells to be indexed.
const defaultIndexWait = time.Second

// indexJSON is an index as served.
type indexJSON struct {
	Name       string        `json:"name"`
	Column     string        `json:"column"`
	Fields     []index.Field `json:"fields"`
	Generation int64         `json:"generation"`
	State      string        `json:"state"`
	Rebuilding int64         `json:"rebuilding,omitempty"`
	CreatedAt  string        `json:"created_at"`
	UpdatedAt  string        `json:"updated_at"`
}

func newIndexJSON(ix index.Index) indexJSON {
	return indexJSON{Name: ix.Name, Column: ix.Column, Fields: ix.Fields, Generation: ix.Generation, State: ix.State,
		Rebuilding: ix.Rebuilding, CreatedAt: cellar.FormatTime(ix.CreatedAt), UpdatedAt: cellar.FormatTime(ix.UpdatedAt)}
}

func indexName(r *http.Request) (string, error) {
	name := pathSegment(r, "name")
	return name, index.ValidateName(name)
}

// handleIndexDefine serves PUT /v1/indexes/{name} with {"column",
// "fields": [{"name", "type"}]}: 201 when created, 200 when it exists with
// that definition, 409 when it exists with another.
func (s *server) handleIndexDefine(w http.ResponseWriter, r *http.Request) error {
	name, err := indexName(r)
	if err != nil {
		return err
	}
	raw, err := readRequest(w, r, s.opts.MaxBodyBytes)
	if err != nil {
		return err
	}
	def, err := decodeIndexDef(raw)
	if err != nil {
		return err
	}
	ix, created, err := s.opts.Indexes.Define(r.Context(), name, def)
	if err != nil {
		return err
	}
	status := http.StatusOK
	if created {
		status = http.StatusCreated
	}
	s.writeJSON(w, r, status, newIndexJSON(ix))
	return nil
}

// handleIndexList serves GET /v1/indexes.
func (s *server) handleIndexList(w http.ResponseWriter, r *http.Request) error {
	if _, err := query(r); err != nil {
		return err
	}
	ixs, err := s.opts.Indexes.Indexes(r.Context())
	if err != nil {
		return err
	}
	out := make([]indexJSON, len(ixs))
	for i, ix := range ixs {
		out[i] = newIndexJSON(ix)
	}
	s.writeJSON(w, r, http.StatusOK, struct {
		Indexes []indexJSON `json:"indexes"`
	}{out})
	return nil
}

// handleIndexStatus serves GET /v1/indexes/{name}: the definition, the lag
// of the serving generation and the progress of a rebuild.
func (s *server) handleIndexStatus(w http.ResponseWriter, r *http.Request) error {
	name, err := indexName(r)
	if err != nil {
		return err
	}
	if _, err := query(r); err != nil {
		return err
	}
	st, err := s.opts.Indexes.Status(r.Context(), name)
	if err != nil {
		return err
	}
	s.writeJSON(w, r, http.StatusOK, struct {
		indexJSON
		Lag     index.Progress  `json:"lag"`
		Rebuild *index.Progress `json:"rebuild,omitempty"`
	}{newIndexJSON(st.Index), st.Lag, st.Rebuild})
	return nil
}

// handleIndexQuery serves POST /v1/indexes/{name}/query. A wait for cells
// (wait_for) is cut short to answer within the request deadline.
func (s *server) handleIndexQuery(w http.ResponseWriter, r *http.Request) error {
	name, err := indexName(r)
	if err != nil {
		return err
	}
	raw, err := readRequest(w, r, s.opts.MaxRequestBytes)
	if err != nil {
		return err
	}
	q, err := decodeIndexQuery(raw)
	if err != nil {
		return err
	}
	if len(q.WaitFor) > 0 {
		if q.Wait == 0 {
			q.Wait = defaultIndexWait
		}
		if d, ok := r.Context().Deadline(); ok {
			q.Wait = min(q.Wait, max(time.Until(d)-s.claimReserve(), time.Millisecond))
		}
	}
	res, err := s.opts.Indexes.Query(r.Context(), name, q)
	if err != nil {
		return err
	}
	var cursor *string
	if res.Cursor != "" {
		cursor = &res.Cursor
	}
	s.writeJSON(w, r, http.StatusOK, struct {
		Entries []index.Entry `json:"entries"`
		Cursor  *string       `json:"cursor"`
	}{res.Entries, cursor})
	return nil
}

// handleIndexRebuild serves POST /v1/indexes/{name}/rebuild: 202, the
// rebuild runs in the background (GET the index for its progress).
func (s *server) handleIndexRebuild(w http.ResponseWriter, r *http.Request) error {
	name, err := indexName(r)
	if err != nil {
		return err
	}
	raw, err := readRequest(w, r, s.opts.MaxBodyBytes)
	if err != nil {
		return err
	}
	if err := decodeEmpty(raw); err != nil {
		return err
	}
	ix, err := s.opts.Indexes.Rebuild(r.Context(), name)
	if err != nil {
		return err
	}
	s.writeJSON(w, r, http.StatusAccepted, newIndexJSON(ix))
	return nil
}

// handleIndexDelete serves DELETE /v1/indexes/{name}.
func (s *server) handleIndexDelete(w http.ResponseWriter, r *http.Request) error {
	name, err := indexName(r)
	if err != nil {
		return err
	}
	// Refuse a malformed body before deleting anything, as rebuild does.
	raw, err := readRequest(w, r, s.opts.MaxBodyBytes)
	if err != nil {
		return err
	}
	if err := decodeEmpty(raw); err != nil {
		return err
	}
	if err := s.opts.Indexes.Delete(r.Context(), name); err != nil {
		return err
	}
	s.writeJSON(w, r, http.StatusOK, struct {
		Deleted bool `json:"deleted"`
	}{true})
	return nil
}

// decodeIndexDef parses {"column", "fields": [{"name", "type"}]}; the
// manager checks the values.
func decodeIndexDef(raw []byte) (index.Definition, error) {
	var def index.Definition
	d, err := newDocDecoder(raw)
	if err != nil {
		return def, err
	}
	err = d.objectWith("request", []string{"column", "fields"}, func(name string) error {
		var err error
		switch name {
		case "column":
			def.Column, err = d.string("column")
		case "fields":
			def.Fields = []index.Field{}
			return d.array("fields", cellar.MaxIndexFields, func(i int) error {
				path := "fields[" + strconv.Itoa(i) + "]"
				var f index.Field
				err := d.objectWith(path, []string{"name", "type"}, func(name string) error {
					var err error
					switch name {
					case "name":
						f.Name, err = d.string(path + ".name")
					case "type":
						f.Type, err = d.string(path + ".type")
					default:
						err = unknownMember(path, name)
					}
					return err
				})
				if err != nil {
					return err
				}
				def.Fields = append(def.Fields, f)
				return nil
			})
		default:
			return unknownMember("request", name)
		}
		return err
	})
	if err != nil {
		return def, err
	}
	return def, d.end()
}

// decodeIndexQuery parses {"where", "fields", "order", "desc", "limit",
// "cursor", "wait_for", "wait_ms"}. A where member is a value (equality)
// or an object of eq, gt, gte, lt, lte; the manager checks the values
// against the index's field types.
func decodeIndexQuery(raw []byte) (index.Query, error) {
	var q index.Query
	d, err := newDocDecoder(raw)
	if err != nil {
		return q, err
	}
	hasWhere := false
	err = d.object("request", func(name string) error {
		var err error
		var n int64
		switch name {
		case "where":
			hasWhere = true
			return d.object("where", func(field string) error {
				path := "where." + truncate(field, 80)
				v, err := d.raw()
				if err != nil {
					return err
				}
				c := index.Cond{Field: field}
				switch v[0] {
				case '[':
					return cellar.Errorf(cellar.EINVALID, "%s must be a value, or an object of eq, gt, gte, lt, lte", path)
				case '{':
					if err := decodeOperators(path, v, &c); err != nil {
						return err
					}
				default:
					c.Eq = v
				}
				q.Where = append(q.Where, c)
				return nil
			})
		case "fields":
			q.Fields = []string{}
			return d.array("fields", cellar.MaxIndexFields, func(i int) error {
				f, err := d.string("fields[" + strconv.Itoa(i) + "]")
				q.Fields = append(q.Fields, f)
				return err
			})
		case "order":
			// An empty name is no field; the default order is asked for
			// by leaving order out.
			if q.Order, err = d.string("order"); err == nil && q.Order == "" {
				err = cellar.Errorf(cellar.EINVALID, "order must name a field; leave it out for the index's order")
			}
		case "desc":
			var v json.RawMessage
			if v, err = d.raw(); err == nil {
				switch string(v) {
				case "true":
					q.Desc = true
				case "false":
				default:
					err = cellar.Errorf(cellar.EINVALID, "desc must be true or false")
				}
			}
		case "limit":
			n, err = d.int("limit", 1, cellar.MaxIndexLimit)
			q.Limit = int(n)
		case "cursor":
			var v json.RawMessage
			if v, err = d.raw(); err == nil && string(v) != "null" {
				if json.Unmarshal(v, &q.Cursor) != nil || q.Cursor == "" {
					// "" is no page's cursor: refused, as order "" is.
					err = cellar.Errorf(cellar.EINVALID, "cursor must be a previous page's cursor (a non-empty string) or null")
				}
			}
		case "wait_for":
			q.WaitFor = []index.CellPos{}
			return d.array("wait_for", index.MaxWaitFor, func(i int) error {
				path := "wait_for[" + strconv.Itoa(i) + "]"
				var p index.CellPos
				err := d.objectWith(path, []string{"shard", "added_id"}, func(name string) error {
					var err error
					var n int64
					switch name {
					case "shard":
						n, err = d.int(path+".shard", 0, cellar.MaxShardCount-1)
						p.Shard = int(n)
					case "added_id":
						p.AddedID, err = d.int(path+".added_id", 1, 1<<63-1)
					default:
						err = unknownMember(path, name)
					}
					return err
				})
				if err != nil {
					return err
				}
				q.WaitFor = append(q.WaitFor, p)
				return nil
			})
		case "wait_ms":
			n, err = d.int("wait_ms", 1, index.MaxWait.Milliseconds())
			q.Wait = time.Duration(n) * time.Millisecond
		default:
			return unknownMember("request", name)
		}
		return err
	})
	if err != nil {
		return q, err
	}
	if !hasWhere {
		return q, missingMember("request", "where")
	}
	return q, d.end()
}

// decodeOperators parses a where member's object of operators into c.
func decodeOperators(path string, v json.RawMessage, c *index.Cond) error {
	d, err := newDocDecoder(v)
	if err != nil {
		return err
	}
	n := 0
	err = d.object(path, func(op string) error {
		n++
		v, err := d.raw()
		if err != nil {
			return err
		}
		if v[0] == '{' || v[0] == '[' {
			return cellar.Errorf(cellar.EINVALID, "%s.%s must be a value", path, truncate(op, 40))
		}
		switch op {
		case "eq":
			c.Eq = v
		case "gt":
			c.Gt = v
		case "gte":
			c.Gte = v
		case "lt":
			c.Lt = v
		case "lte":
			c.Lte = v
		default:
			return cellar.Errorf(cellar.EINVALID, "%s has unknown operator %q; use eq, gt, gte, lt, lte", path, truncate(op, 40))
		}
		return nil
	})
	if err != nil {
		return err
	}
	if n == 0 {
		return cellar.Errorf(cellar.EINVALID, "%s is an empty object; give eq, gt, gte, lt or lte", path)
	}
	return nil
}

// objectWith reads a JSON object as object does, and then refuses it if a
// member in required was not there.
func (d *docDecoder) objectWith(path string, required []string, member func(name string) error) error {
	have := map[string]bool{}
	err := d.object(path, func(name string) error {
		have[name] = true
		return member(name)
	})
	if err != nil {
		return err
	}
	for _, m := range required {
		if !have[m] {
			return missingMember(path, m)
		}
	}
	return nil
}
