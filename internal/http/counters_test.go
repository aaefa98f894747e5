package http

import (
	"bytes"
	"context"
	"fmt"
	"math"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cellar-db/cellar"
	"github.com/cellar-db/cellar/internal/counter"
	"github.com/cellar-db/cellar/internal/counter/countertest"
)

// openCounters opens a journal-mode counter store over node, with a
// flush interval long enough that flushes happen only when asked.
func openCounters(tb testing.TB, node cellar.CounterNode) *counter.Journal {
	tb.Helper()
	j, err := counter.OpenJournal(context.Background(), filepath.Join(tb.TempDir(), "counters.journal"), node,
		counter.Options{FlushInterval: time.Hour, Logger: discardLogger()})
	if err != nil {
		tb.Fatalf("open counter journal: %v", err)
	}
	tb.Cleanup(func() { j.Close() })
	return j
}

// countingCounters counts the increments its store acknowledged.
type countingCounters struct {
	cellar.CounterStore
	incrs atomic.Int64
}

func (c *countingCounters) Incr(ctx context.Context, key string, by int64) (int64, error) {
	v, err := c.CounterStore.Incr(ctx, key, by)
	if err == nil {
		c.incrs.Add(1)
	}
	return v, err
}

func (c *countingCounters) BatchIncr(ctx context.Context, incrs []cellar.CounterIncrement) []cellar.CounterResult {
	res := c.CounterStore.BatchIncr(ctx, incrs)
	for _, r := range res {
		if r.Err == nil {
			c.incrs.Add(1)
		}
	}
	return res
}

type wireCounter struct {
	Key   string     `json:"key"`
	Value *int64     `json:"value"`
	Error *errorBody `json:"error"`
}

func counterPath(key string) string { return "/v1/counters/" + escapeRow(key) }

func wantValue(tb testing.TB, r response, key string, value int64) {
	tb.Helper()
	got := decode[wireCounter](tb, r.want(tb, 200, ""))
	if got.Key != key || got.Value == nil || *got.Value != value || got.Error != nil {
		tb.Fatalf("response %s; want key %q value %d", r.body, key, value)
	}
}

func TestCounters(t *testing.T) {
	lite := openStore(t)
	j := openCounters(t, lite)
	c := newServer(t, lite, Options{Counters: j})

	wantValue(t, c.do("GET", counterPath("page:1"), ""), "page:1", 0)
	wantValue(t, c.do("POST", counterPath("page:1")+"/incr", `{"by": 5}`), "page:1", 5)
	wantValue(t, c.do("POST", counterPath("page:1")+"/incr", `{"by":-7}`), "page:1", -2)
	wantValue(t, c.do("POST", counterPath("page:1")+"/incr", ``), "page:1", -1)
	wantValue(t, c.do("POST", counterPath("page:1")+"/incr", `{}`), "page:1", 0)
	wantValue(t, c.do("POST", counterPath("page:1")+"/incr", " {\"by\": 9223372036854775807} \n"), "page:1", math.MaxInt64)
	wantValue(t, c.do("GET", counterPath("page:1"), ""), "page:1", math.MaxInt64)
	for _, key := range []string{"/", "a/b", ".", "..", "ü ?#%", "x/incr"} {
		wantValue(t, c.do("POST", counterPath(key)+"/incr", `{"by":2}`), key, 2)
		wantValue(t, c.do("GET", counterPath(key), ""), key, 2)
	}

	// The values survive a flush to the node, and are read back from it.
	if err := j.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := j.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	vals, err := lite.Counters(context.Background(), []string{"page:1", "/"})
	if err != nil || vals["page:1"] != math.MaxInt64 || vals["/"] != 2 {
		t.Errorf("node values = %v, %v; want page:1=MaxInt64 /=2", vals, err)
	}
	wantValue(t, c.do("GET", counterPath("/"), ""), "/", 2)

	r := c.do("POST", "/v1/counters:batchGet", `{"keys":["page:1","none","","/","bad\u0001"]}`).want(t, 200, "")
	got := decode[struct{ Results []wireCounter }](t, r)
	if len(got.Results) != 5 {
		t.Fatalf("batchGet results %s; want 5", r.body)
	}
	for i, want := range []struct {
		key   string
		value int64
		code  string
	}{{"page:1", math.MaxInt64, ""}, {"none", 0, ""}, {"", 0, cellar.EINVALID}, {"/", 2, ""}, {"bad\x01", 0, cellar.EINVALID}} {
		res := got.Results[i]
		switch {
		case res.Key != want.key:
			t.Errorf("result %d key %q; want %q", i, res.Key, want.key)
		case want.code != "" && (res.Error == nil || res.Error.Code != want.code || res.Value != nil):
			t.Errorf("result %d = %+v; want error %s", i, res, want.code)
		case want.code == "" && (res.Error != nil || res.Value == nil || *res.Value != want.value):
			t.Errorf("result %d = %+v; want value %d", i, res, want.value)
		}
	}
	r = c.do("POST", "/v1/counters:batchGet", `{"keys":[]}`).want(t, 200, "")
	if string(r.body) != `{"results":[]}`+"\n" {
		t.Errorf("batchGet of no keys = %s; want empty results", r.body)
	}
}

func TestCountersInvalid(t *testing.T) {
	lite := openStore(t)
	st := &countingCounters{CounterStore: openCounters(t, lite)}
	c := newServer(t, lite, Options{Counters: st, MaxBodyBytes: 100, MaxRequestBytes: 200})
	incr := counterPath("k") + "/incr"
	tests := []struct {
		name, method, path, body string
		status                   int
		code                     string
	}{
		{"fraction", "POST", incr, `{"by":1.0}`, 400, cellar.EINVALID},
		{"exponent", "POST", incr, `{"by":1e3}`, 400, cellar.EINVALID},
		{"string", "POST", incr, `{"by":"1"}`, 400, cellar.EINVALID},
		{"null", "POST", incr, `{"by":null}`, 400, cellar.EINVALID},
		{"too large", "POST", incr, `{"by":9223372036854775808}`, 400, cellar.EINVALID},
		{"too small", "POST", incr, `{"by":-9223372036854775809}`, 400, cellar.EINVALID},
		{"unknown member", "POST", incr, `{"by":1,"step":2}`, 400, cellar.EINVALID},
		{"member case", "POST", incr, `{"By":1}`, 400, cellar.EINVALID},
		{"duplicate member", "POST", incr, `{"by":1,"by":2}`, 400, cellar.EINVALID},
		{"array", "POST", incr, `[1]`, 400, cellar.EINVALID},
		{"bare number", "POST", incr, `1`, 400, cellar.EINVALID},
		{"trailing data", "POST", incr, `{"by":1}{}`, 400, cellar.EINVALID},
		{"bad JSON", "POST", incr, `{"by":}`, 400, cellar.EINVALID},
		{"invalid UTF-8", "POST", incr, "{\"by\":1,\"\xff\":1}", 400, cellar.EINVALID},
		{"body too large", "POST", incr, `{"by":1` + strings.Repeat(" ", 100) + `}`, 413, cellar.ETOOLARGE},
		{"query", "POST", incr + "?by=2", `{"by":1}`, 400, cellar.EINVALID},
		{"control character key", "POST", "/v1/counters/a%01b/incr", `{}`, 400, cellar.EINVALID},
		{"slash NUL key", "POST", "/v1/counters/%2F%00/incr", `{}`, 400, cellar.EINVALID},
		{"long key", "POST", counterPath(strings.Repeat("k", 256)) + "/incr", `{}`, 400, cellar.EINVALID},
		{"empty key", "POST", "/v1/counters//incr", `{}`, 400, cellar.EINVALID},
		{"GET incr", "GET", incr, "", 405, "method_not_allowed"},
		{"PUT counter", "PUT", counterPath("k"), `{}`, 405, "method_not_allowed"},
		{"get with query", "GET", counterPath("k") + "?x=1", "", 400, cellar.EINVALID},
		{"get bad key", "GET", "/v1/counters/a%7Fb", "", 400, cellar.EINVALID},
		{"batch not an object", "POST", "/v1/counters:batchGet", `[]`, 400, cellar.EINVALID},
		{"batch without keys", "POST", "/v1/counters:batchGet", `{}`, 400, cellar.EINVALID},
		{"batch keys not strings", "POST", "/v1/counters:batchGet", `{"keys":[1]}`, 400, cellar.EINVALID},
		{"batch null key", "POST", "/v1/counters:batchGet", `{"keys":[null]}`, 400, cellar.EINVALID},
		{"batch unpaired surrogate", "POST", "/v1/counters:batchGet", `{"keys":["\ud800"]}`, 400, cellar.EINVALID},
		{"batch unknown member", "POST", "/v1/counters:batchGet", `{"keys":[],"x":1}`, 400, cellar.EINVALID},
		{"batch keys twice", "POST", "/v1/counters:batchGet", `{"keys":[],"keys":[]}`, 400, cellar.EINVALID},
		{"batch too large", "POST", "/v1/counters:batchGet", `{"keys":["` + strings.Repeat("k", 200) + `"]}`, 413, cellar.ETOOLARGE},
		{"batch GET", "GET", "/v1/counters:batchGet", "", 405, "method_not_allowed"},
		{"incrs not an object", "POST", "/v1/counters:batchIncr", `[]`, 400, cellar.EINVALID},
		{"incrs empty body", "POST", "/v1/counters:batchIncr", ``, 400, cellar.EINVALID},
		{"incrs without increments", "POST", "/v1/counters:batchIncr", `{}`, 400, cellar.EINVALID},
		{"incrs not an array", "POST", "/v1/counters:batchIncr", `{"increments":{}}`, 400, cellar.EINVALID},
		{"incrs item not an object", "POST", "/v1/counters:batchIncr", `{"increments":["k"]}`, 400, cellar.EINVALID},
		{"incrs item without key", "POST", "/v1/counters:batchIncr", `{"increments":[{"key":"k"},{"by":1}]}`, 400, cellar.EINVALID},
		{"incrs key not a string", "POST", "/v1/counters:batchIncr", `{"increments":[{"key":1}]}`, 400, cellar.EINVALID},
		{"incrs by fraction", "POST", "/v1/counters:batchIncr", `{"increments":[{"key":"k"},{"key":"k","by":1.5}]}`, 400, cellar.EINVALID},
		{"incrs by string", "POST", "/v1/counters:batchIncr", `{"increments":[{"key":"k","by":"1"}]}`, 400, cellar.EINVALID},
		{"incrs by too large", "POST", "/v1/counters:batchIncr", `{"increments":[{"key":"k","by":9223372036854775808}]}`, 400, cellar.EINVALID},
		{"incrs by twice", "POST", "/v1/counters:batchIncr", `{"increments":[{"key":"k","by":1,"by":1}]}`, 400, cellar.EINVALID},
		{"incrs unknown member", "POST", "/v1/counters:batchIncr", `{"increments":[{"key":"k","step":1}]}`, 400, cellar.EINVALID},
		{"incrs unknown top member", "POST", "/v1/counters:batchIncr", `{"increments":[],"x":1}`, 400, cellar.EINVALID},
		{"incrs trailing data", "POST", "/v1/counters:batchIncr", `{"increments":[]} []`, 400, cellar.EINVALID},
		{"incrs too large", "POST", "/v1/counters:batchIncr", `{"increments":[{"key":"` + strings.Repeat("k", 200) + `"}]}`, 413, cellar.ETOOLARGE},
		{"incrs GET", "GET", "/v1/counters:batchIncr", "", 405, "method_not_allowed"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c.do(tt.method, tt.path, tt.body).want(t, tt.status, tt.code)
		})
	}
	if n := st.incrs.Load(); n != 0 {
		t.Errorf("%d refused requests incremented a counter", n)
	}

	// More keys than a batch may hold.
	big := newServer(t, lite, Options{Counters: st})
	keys := make([]string, cellar.MaxBatchKeys+1)
	for i := range keys {
		keys[i] = fmt.Sprintf("%q", fmt.Sprint(i))
	}
	big.do("POST", "/v1/counters:batchGet", `{"keys":[`+strings.Join(keys, ",")+`]}`).want(t, 400, cellar.EINVALID)
	incrs := make([]string, cellar.MaxBatchKeys+1)
	for i := range incrs {
		incrs[i] = fmt.Sprintf(`{"key":"k%d"}`, i)
	}
	big.do("POST", "/v1/counters:batchIncr", `{"increments":[`+strings.Join(incrs, ",")+`]}`).want(t, 400, cellar.EINVALID)
	if n := st.incrs.Load(); n != 0 {
		t.Errorf("%d increments of a refused batch were made", n)
	}

	// Overflow is the client's mistake, and changes nothing.
	c.do("POST", incr, `{"by":9223372036854775807}`).want(t, 200, "")
	c.do("POST", incr, `{"by":1}`).want(t, 400, cellar.EINVALID)
	wantValue(t, c.do("GET", counterPath("k"), ""), "k", math.MaxInt64)
}

// A batch of increments answers each in order, the increments of one key
// added in the order given, each failing (a bad key, an overflow) on its
// own.
func TestCounterBatchIncr(t *testing.T) {
	lite := openStore(t)
	c := newServer(t, lite, Options{Counters: openCounters(t, lite)})
	r := c.do("POST", "/v1/counters:batchIncr", `{"increments":[`+
		`{"key":"a","by":5},{"key":"b","by":-3},{"key":"a","by":2},{"key":""},{"key":"bad\u0001","by":1},`+
		`{"key":"a"},{"key":"max","by":9223372036854775807},{"key":"max","by":1},{"by":4,"key":"/"}]}`).want(t, 200, "")
	got := decode[struct{ Results []wireCounter }](t, r)
	want := []struct {
		key   string
		value int64
		code  string
	}{{"a", 5, ""}, {"b", -3, ""}, {"a", 7, ""}, {"", 0, cellar.EINVALID}, {"bad\x01", 0, cellar.EINVALID},
		{"a", 8, ""}, {"max", math.MaxInt64, ""}, {"max", 0, cellar.EINVALID}, {"/", 4, ""}}
	if len(got.Results) != len(want) {
		t.Fatalf("batchIncr results %s; want %d", r.body, len(want))
	}
	for i, w := range want {
		res := got.Results[i]
		switch {
		case res.Key != w.key:
			t.Errorf("result %d key %q; want %q", i, res.Key, w.key)
		case w.code != "" && (res.Error == nil || res.Error.Code != w.code || res.Value != nil):
			t.Errorf("result %d = %+v; want error %s", i, res, w.code)
		case w.code == "" && (res.Error != nil || res.Value == nil || *res.Value != w.value):
			t.Errorf("result %d = %+v; want value %d", i, res, w.value)
		}
	}
	for key, v := range map[string]int64{"a": 8, "b": -3, "max": math.MaxInt64, "/": 4} {
		wantValue(t, c.do("GET", counterPath(key), ""), key, v)
	}
	r = c.do("POST", "/v1/counters:batchIncr", `{"increments":[]}`).want(t, 200, "")
	if string(r.body) != `{"results":[]}`+"\n" {
		t.Errorf("batchIncr of nothing = %s; want empty results", r.body)
	}
}

// TestCountersUnavailable: a storage node that is down is a 503, for the
// counters that need it only.
func TestCountersUnavailable(t *testing.T) {
	node := countertest.New()
	j := openCounters(t, node)
	c := newServer(t, openStore(t), Options{Counters: j})
	wantValue(t, c.do("POST", counterPath("known")+"/incr", `{"by":3}`), "known", 3)
	node.SetFault(func(op string, applied bool) error {
		if applied {
			return nil
		}
		return cellar.Errorf(cellar.EUNAVAILABLE, "node is down")
	})
	c.do("GET", counterPath("unknown"), "").want(t, 503, cellar.EUNAVAILABLE)
	c.do("POST", counterPath("unknown")+"/incr", `{}`).want(t, 503, cellar.EUNAVAILABLE)
	// A counter with buffered increments is answered from the buffer.
	wantValue(t, c.do("POST", counterPath("known")+"/incr", `{}`), "known", 4)
	r := c.do("POST", "/v1/counters:batchGet", `{"keys":["known","unknown"]}`).want(t, 200, "")
	got := decode[struct{ Results []wireCounter }](t, r)
	if len(got.Results) != 2 || got.Results[0].Value == nil || *got.Results[0].Value != 4 ||
		got.Results[1].Error == nil || got.Results[1].Error.Code != cellar.EUNAVAILABLE {
		t.Errorf("batchGet = %s; want known=4 and unknown unavailable", r.body)
	}
}

func TestCountersAuth(t *testing.T) {
	lite := openStore(t)
	c := newServer(t, lite, Options{Counters: openCounters(t, lite), Tokens: []Token{
		{Secret: "r", Scopes: []string{ScopeRead}},
		{Secret: "w", Scopes: []string{ScopeWrite}},
	}})
	incr, get := counterPath("k")+"/incr", counterPath("k")
	batch := `{"keys":["k"]}`
	c.do("POST", incr, `{}`).want(t, 401, cellar.EUNAUTHENTICATED)
	c.do("GET", get, "").want(t, 401, cellar.EUNAUTHENTICATED)
	c.token = "r"
	c.do("POST", incr, `{}`).want(t, 403, cellar.EPERMISSION)
	wantValue(t, c.do("GET", get, ""), "k", 0)
	c.do("POST", "/v1/counters:batchGet", batch).want(t, 200, "")
	c.do("POST", "/v1/counters:batchIncr", `{"increments":[{"key":"k"}]}`).want(t, 403, cellar.EPERMISSION)
	c.token = "w"
	wantValue(t, c.do("POST", incr, `{}`), "k", 1)
	c.do("POST", "/v1/counters:batchIncr", `{"increments":[{"key":"k"}]}`).want(t, 200, "")
	c.do("GET", get, "").want(t, 403, cellar.EPERMISSION)
	c.do("POST", "/v1/counters:batchGet", batch).want(t, 403, cellar.EPERMISSION)
}

func TestCountersRoutesOff(t *testing.T) {
	c := newServer(t, openStore(t), Options{})
	c.do("GET", counterPath("k"), "").want(t, 404, cellar.ENOTFOUND)
	c.do("POST", counterPath("k")+"/incr", `{}`).want(t, 404, cellar.ENOTFOUND)
	c.do("POST", "/v1/counters:batchGet", `{"keys":[]}`).want(t, 404, cellar.ENOTFOUND)
	c.do("POST", "/v1/counters:batchIncr", `{"increments":[]}`).want(t, 404, cellar.ENOTFOUND)
}

// FuzzCounters sends arbitrary requests to the counter routes over a
// real store: never a panic or a 5xx, always JSON, and a refused request
// increments nothing.
func FuzzCounters(f *testing.F) {
	for _, s := range []struct{ method, path, body string }{
		{"POST", "/v1/counters/k/incr", `{"by":1}`},
		{"POST", "/v1/counters/k/incr", ``},
		{"POST", "/v1/counters/%2F/incr", `{"by":-9223372036854775808}`},
		{"POST", "/v1/counters/k/incr", `{"by":1.5}`},
		{"POST", "/v1/counters/k/incr", `{"by":1,"by":1}`},
		{"POST", "/v1/counters/k/incr?x", `{}`},
		{"GET", "/v1/counters/k", ""},
		{"GET", "/v1/counters/%2E", ""},
		{"POST", "/v1/counters:batchGet", `{"keys":["a","","b"]}`},
		{"POST", "/v1/counters:batchGet", "{\"keys\":[\"\xff\"]}"},
		{"POST", "/v1/counters:batchIncr", `{"increments":[{"key":"a","by":2},{"key":""},{"key":"a"}]}`},
		{"POST", "/v1/counters:batchIncr", `{"increments":[{"key":"a","by":1},{"key":"b","by":1e3}]}`},
		{"POST", "/v1/counters:batchIncr", `{"increments":[{"key":"m","by":9223372036854775807},{"key":"m","by":1}]}`},
	} {
		f.Add(s.method, s.path, []byte(s.body))
	}
	lite := openStore(f)
	st := &countingCounters{CounterStore: openCounters(f, lite)}
	h := NewHandler(lite, Options{Counters: st, MaxBodyBytes: 4096, MaxRequestBytes: 64 << 10, Logger: discardLogger()})
	f.Fuzz(func(t *testing.T, method, path string, body []byte) {
		req, err := http.NewRequest(method, "http://cellar.test"+path, bytes.NewReader(body))
		if err != nil {
			return
		}
		before := st.incrs.Load()
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code >= 500 || rec.Code < 200 {
			t.Fatalf("%s %q %q: status %d: %s", method, path, body, rec.Code, rec.Body.Bytes())
		}
		if rec.Code/100 != 2 && st.incrs.Load() != before {
			t.Fatalf("%s %q %q: status %d yet a counter was incremented", method, path, body, rec.Code)
		}
		if ct := rec.Header().Get("Content-Type"); ct != "application/json" {
			t.Fatalf("%s %q: Content-Type %q", method, path, ct)
		}
	})
}

// TestCounterIncrWhiteSpaceBody guards that only a body of no bytes is
// the empty incr body ({}): one of white space alone, JSON's or not, is
// refused and changes nothing, as on the other routes (it was trimmed as
// Unicode white space and counted 1). (Review of stop 19.)
func TestCounterIncrWhiteSpaceBody(t *testing.T) {
	lite := openStore(t)
	st := &countingCounters{CounterStore: openCounters(t, lite)}
	c := newServer(t, lite, Options{Counters: st})
	for _, body := range []string{"\v", "\f", "\u0085", "\u00a0", " ", "\n"} {
		r := c.do("POST", counterPath("k")+"/incr", body)
		if r.status != 400 {
			t.Errorf("incr with body %q = %d %s; want 400 invalid_argument", body, r.status, r.body)
		}
	}
	if n := st.incrs.Load(); n != 0 {
		t.Errorf("malformed incr bodies incremented the counter %d times; want 0", n)
	}
}
