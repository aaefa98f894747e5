package http

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/cellar-db/cellar/internal/index"
	"github.com/cellar-db/cellar/internal/sqlstore"
	"github.com/cellar-db/cellar/internal/trigger"
)

// newIndexManager returns a started index manager over a SQLite node that
// is its own metadata node and only cell node.
func newIndexManager(tb testing.TB, st *sqlstore.Store, start bool) (*index.Manager, *trigger.Engine) {
	tb.Helper()
	e, err := trigger.New(trigger.Options{Cells: st, State: st, Heads: st.ShardHeads, ShardCount: testShards, PollInterval: 5 * time.Millisecond})
	if err != nil {
		tb.Fatal(err)
	}
	m, err := index.New(index.Options{Cells: st, Entries: st, Records: st, Triggers: e, ShardCount: testShards,
		Refresh: 20 * time.Millisecond, Logger: discardLogger()})
	if err != nil {
		tb.Fatal(err)
	}
	if start {
		m.Start()
	}
	tb.Cleanup(func() { m.Close() })
	return m, e
}

type wireIndexQuery struct {
	Entries []struct {
		RowKey string                     `json:"row_key"`
		RefKey int64                      `json:"ref_key"`
		Fields map[string]json.RawMessage `json:"fields"`
	} `json:"entries"`
	Cursor *string `json:"cursor"`
}

func TestIndexesHTTP(t *testing.T) {
	st := openStore(t)
	m, e := newIndexManager(t, st, true)
	c := newServer(t, st, Options{Indexes: m, Triggers: e})

	def := `{"column": "profile", "fields": [{"name": "city", "type": "string"}, {"name": "age", "type": "int"}]}`
	ix := decode[indexJSON](t, c.do("PUT", "/v1/indexes/by_city", def).want(t, 201, ""))
	if ix.Name != "by_city" || ix.Column != "profile" || len(ix.Fields) != 2 || ix.Generation != 1 || ix.State != "backfilling" {
		t.Errorf("created index = %+v", ix)
	}
	c.do("PUT", "/v1/indexes/by_city", def).want(t, 200, "")
	c.do("PUT", "/v1/indexes/by_city", `{"column": "profile", "fields": [{"name": "city", "type": "string"}]}`).want(t, 409, "conflict")

	var waitFor []string
	for i := 0; i < 12; i++ {
		r := decode[wireCell](t, c.do("PUT", cellPath(fmt.Sprintf("u%02d", i), "profile", 1),
			fmt.Sprintf(`{"city": %q, "age": %d, "bio": "<&>"}`, []string{"paris", "rome"}[i%2], 20+i)).want(t, 201, ""))
		waitFor = append(waitFor, fmt.Sprintf(`{"shard": %d, "added_id": %d}`, r.Shard, r.AddedID))
	}
	q := fmt.Sprintf(`{"where": {"city": "paris", "age": {"gte": 22, "lt": 30}}, "order": "age", "desc": true, "limit": 2, "wait_for": [%s], "wait_ms": 5000}`, strings.Join(waitFor, ","))
	res := decode[wireIndexQuery](t, c.do("POST", "/v1/indexes/by_city/query", q).want(t, 200, ""))
	if len(res.Entries) != 2 || res.Entries[0].RowKey != "u08" || res.Entries[1].RowKey != "u06" || res.Cursor == nil {
		t.Fatalf("first page = %+v", res)
	}
	if f := res.Entries[0].Fields; string(f["city"]) != `"paris"` || string(f["age"]) != "28" {
		t.Errorf("fields = %v", f)
	}
	res = decode[wireIndexQuery](t, c.do("POST", "/v1/indexes/by_city/query",
		fmt.Sprintf(`{"where": {"city": "paris", "age": {"gte": 22, "lt": 30}}, "order": "age", "desc": true, "limit": 2, "cursor": %q}`, *res.Cursor)).want(t, 200, ""))
	if len(res.Entries) != 2 || res.Entries[0].RowKey != "u04" || res.Entries[1].RowKey != "u02" {
		t.Errorf("second page = %+v", res)
	}
	res = decode[wireIndexQuery](t, c.do("POST", "/v1/indexes/by_city/query", `{"where": {"city": {"eq": "rome"}}, "fields": ["age"], "cursor": null}`).want(t, 200, ""))
	if len(res.Entries) != 6 || res.Cursor != nil || len(res.Entries[0].Fields) != 1 {
		t.Errorf("rome, projected = %+v", res)
	}

	type statusJSON struct {
		indexJSON
		Lag     index.Progress  `json:"lag"`
		Rebuild *index.Progress `json:"rebuild"`
	}
	sj := decode[statusJSON](t, c.do("GET", "/v1/indexes/by_city", "").want(t, 200, ""))
	if sj.Name != "by_city" || sj.Lag.Trigger != "_index.by_city.1" || sj.Lag.ShardsTotal == 0 {
		t.Errorf("status = %+v", sj)
	}
	list := decode[struct{ Indexes []indexJSON }](t, c.do("GET", "/v1/indexes", "").want(t, 200, ""))
	if len(list.Indexes) != 1 {
		t.Errorf("list = %+v", list)
	}
	rb := decode[indexJSON](t, c.do("POST", "/v1/indexes/by_city/rebuild", "").want(t, 202, ""))
	if rb.Rebuilding != 2 {
		t.Errorf("rebuild = %+v", rb)
	}
	c.do("POST", "/v1/indexes/by_city/rebuild", "{}").want(t, 409, "conflict")
	c.do("DELETE", "/v1/indexes/by_city", "").want(t, 200, "")
	c.do("GET", "/v1/indexes/by_city", "").want(t, 404, "not_found")
	c.do("POST", "/v1/indexes/by_city/query", `{"where": {"city": "rome"}}`).want(t, 404, "not_found")

	// User triggers cannot take the internal triggers' names.
	c.do("PUT", "/v1/triggers/_index.x.1", `{"columns": ["a"]}`).want(t, 400, "invalid_argument")
}

func TestIndexesHTTPInvalid(t *testing.T) {
	st := openStore(t)
	m, _ := newIndexManager(t, st, false)
	c := newServer(t, st, Options{Indexes: m})
	c.do("PUT", "/v1/indexes/ix", `{"column": "profile", "fields": [{"name": "city", "type": "string"}, {"name": "age", "type": "int"}]}`).want(t, 201, "")
	for _, body := range []string{
		``,
		`[]`,
		`{"column": "c"}`,
		`{"fields": [{"name": "a", "type": "int"}]}`,
		`{"column": "c", "fields": []}`,
		`{"column": "c", "fields": [{"name": "a"}]}`,
		`{"column": "c", "fields": [{"name": "a", "type": "int", "x": 1}]}`,
		`{"column": "c", "fields": [{"name": "a", "type": "blob"}]}`,
		`{"column": "c", "fields": [{"name": "a", "type": "int"}], "x": 1}`,
		`{"column": "c", "column": "d", "fields": [{"name": "a", "type": "int"}]}`,
		`{"column": 1, "fields": [{"name": "a", "type": "int"}]}`,
		`{"column": "c", "fields": [{"name": "a", "type": "int"},{"name": "b", "type": "int"},{"name": "c", "type": "int"},{"name": "d", "type": "int"},{"name": "e", "type": "int"}]}`,
	} {
		c.do("PUT", "/v1/indexes/other", body).want(t, 400, "invalid_argument")
	}
	c.do("PUT", "/v1/indexes/1bad", `{"column": "c", "fields": [{"name": "a", "type": "int"}]}`).want(t, 400, "invalid_argument")
	c.do("GET", "/v1/indexes/other", "").want(t, 404, "not_found")
	for _, body := range []string{
		``,
		`{}`,
		`{"where": []}`,
		`{"where": {"age": 3}}`,
		`{"where": {"city": ["paris"]}}`,
		`{"where": {"city": {"like": "p%"}}}`,
		`{"where": {"city": {}}}`,
		`{"where": {"city": {"eq": {"a": 1}}}}`,
		`{"where": {"city": "paris", "city": "rome"}}`,
		`{"where": {"city": 3}}`,
		`{"where": {"city": "paris", "age": "old"}}`,
		`{"where": {"city": "paris", "age": {"gt": 1, "gte": 2}}}`,
		`{"where": {"city": "paris"}, "limit": 0}`,
		`{"where": {"city": "paris"}, "limit": 1.5}`,
		`{"where": {"city": "paris"}, "desc": 1}`,
		`{"where": {"city": "paris"}, "order": "nope"}`,
		`{"where": {"city": "paris"}, "order": ""}`, // not a field (once taken for the default order)
		`{"where": {"city": "paris"}, "fields": ["nope"]}`,
		`{"where": {"city": "paris"}, "cursor": 7}`,
		`{"where": {"city": "paris"}, "cursor": "garbage"}`,
		`{"where": {"city": "paris"}, "cursor": ""}`, // no page's cursor (it was taken for none)
		`{"where": {"city": "paris"}, "wait_for": [{"shard": 1}]}`,
		`{"where": {"city": "paris"}, "wait_for": [{"shard": 1, "added_id": 0}]}`,
		`{"where": {"city": "paris"}, "wait_for": [{"shard": 99999, "added_id": 1}]}`,
		`{"where": {"city": "paris"}, "wait_ms": 0}`,
		`{"where": {"city": "paris"}, "unknown": 1}`,
		`{"where": {"city": "paris"}} x`,
	} {
		c.do("POST", "/v1/indexes/ix/query", body).want(t, 400, "invalid_argument")
	}
	c.do("POST", "/v1/indexes/ix/query?x=1", `{"where": {"city": "paris"}}`).want(t, 400, "invalid_argument")
	// Nothing maintains this index (the manager is not started): a wait
	// for a cell fails as unavailable within the wait.
	r := decode[wireCell](t, c.do("PUT", cellPath("u1", "profile", 1), `{"city": "paris"}`).want(t, 201, ""))
	c.do("POST", "/v1/indexes/ix/query", fmt.Sprintf(`{"where": {"city": "paris"}, "wait_for": [{"shard": %d, "added_id": %d}], "wait_ms": 50}`, r.Shard, r.AddedID)).want(t, 503, "unavailable")

	// DELETE, the destructive route, refuses a body other than empty or
	// {} before it deletes anything (it once ignored its body).
	for _, body := range []string{`{"keep": tru`, `{"keep": true}`, `[]`, `{} x`} {
		c.do("DELETE", "/v1/indexes/ix", body).want(t, 400, "invalid_argument")
	}
	c.do("GET", "/v1/indexes/ix", "").want(t, 200, "")
	c.do("DELETE", "/v1/indexes/ix", "{}").want(t, 200, "")
	c.do("GET", "/v1/indexes/ix", "").want(t, 404, "not_found")
}

// FuzzIndexQuery sends arbitrary query documents to an index and checks
// that the server never panics or answers 500, and always answers JSON.
func FuzzIndexQuery(f *testing.F) {
	for _, s := range []string{
		`{"where": {"city": "paris"}}`,
		`{"where": {"city": "paris", "age": {"gte": 1, "lt": 1e400}}, "order": "age", "desc": true, "limit": 3}`,
		`{"where": {"city": {"eq": "p"}, "age": null}, "fields": ["age"], "cursor": "eyJvIjoiZGVmYXVsdCJ9"}`,
		`{"where": {"city": "paris"}, "wait_for": [{"shard": 1, "added_id": 1}], "wait_ms": 1}`,
		`{"where": {"city": "\u00e9", "age": -9223372036854775809}}`,
	} {
		f.Add([]byte(s))
	}
	st := openStore(f)
	m, _ := newIndexManager(f, st, false)
	// A short request deadline caps the waits of wait_for.
	h := NewHandler(st, Options{Indexes: m, Logger: discardLogger(), RequestTimeout: 200 * time.Millisecond})
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("PUT", "/v1/indexes/ix", strings.NewReader(`{"column": "profile", "fields": [{"name": "city", "type": "string"}, {"name": "age", "type": "int"}, {"name": "t", "type": "time"}]}`)))
	if rec.Code != 201 {
		f.Fatalf("define: %d %s", rec.Code, rec.Body)
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest("POST", "/v1/indexes/ix/query", bytes.NewReader(body)))
		// A wait that nothing can satisfy is a 503; anything else the
		// server answers must be a success or a client error.
		if rec.Code >= 500 && !(rec.Code == http.StatusServiceUnavailable && bytes.Contains(body, []byte("wait_for"))) {
			t.Fatalf("%q: status %d: %s", body, rec.Code, rec.Body.Bytes())
		}
		if !json.Valid(rec.Body.Bytes()) {
			t.Fatalf("%q: response is not JSON: %q", body, rec.Body.Bytes())
		}
	})
}
