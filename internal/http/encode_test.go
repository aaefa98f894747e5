package http

import (
	"bytes"
	"encoding/json"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/cellar-db/cellar"
)

// edgeCells are cells whose encoding is easy to get wrong: HTML
// characters, unicode, control characters and invalid UTF-8 in keys,
// whitespace and huge numbers in bodies, every kind of time.
func edgeCells() []cellar.Cell {
	base := cellar.Cell{
		Key:       cellar.Key{RowKey: "user/42", Column: "profile", RefKey: 7},
		Shard:     1234,
		AddedID:   981,
		CreatedAt: time.Date(2026, 11, 21, 19, 37, 29, 617_000_000, time.UTC),
		Body:      json.RawMessage(`{"name":"Ann","balance":12345678901234567890}`),
	}
	cells := []cellar.Cell{base}
	for _, b := range []string{
		`{"html":"<script>&</script>"}`, `{"u":"żółć 東京 😀 \u2028"}`, `{"n":1e400,"m":-123456789012345678901234567890}`,
		"{ \"a\" :\t[1, 2,\n 3] }", ``, `{"esc":"\"\\\/\b\f\n\r\t\u0000"}`,
	} {
		c := base
		c.Body = json.RawMessage(b)
		cells = append(cells, c)
	}
	for _, k := range []string{"<>&", `"\`, "\x7f\x01", "东京", "\u2028", "\xff\xfe", "/", "a b"} {
		c := base
		c.RowKey, c.Column = k, k
		cells = append(cells, c)
	}
	for _, tm := range []time.Time{{}, time.Unix(0, 0), time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC),
		time.Date(-3, 1, 1, 0, 0, 0, 0, time.UTC), time.Date(2026, 1, 1, 1, 0, 0, 999_999_999, time.FixedZone("X", 3600))} {
		c := base
		c.CreatedAt = tm
		cells = append(cells, c)
	}
	c := base
	c.RefKey, c.AddedID, c.Shard = -1<<63, 1<<63-1, -1
	return append(cells, c)
}

// record records what a write function answers.
func record(t *testing.T, write func(w http.ResponseWriter, r *http.Request)) *httptest.ResponseRecorder {
	t.Helper()
	rec := httptest.NewRecorder()
	write(rec, httptest.NewRequest("GET", "/", nil))
	return rec
}

func sameResponse(t *testing.T, what string, got, want *httptest.ResponseRecorder) {
	t.Helper()
	if got.Code != want.Code || !reflect.DeepEqual(got.Header(), want.Header()) || !bytes.Equal(got.Body.Bytes(), want.Body.Bytes()) {
		t.Errorf("%s answers %d %v\n%s\nwant %d %v\n%s", what, got.Code, got.Header(), got.Body, want.Code, want.Header(), want.Body)
	}
}

func testServer() *server {
	return &server{log: slog.New(slog.NewTextHandler(io.Discard, nil))}
}

// TestWriteCell checks that writeCell answers byte for byte as writeJSON
// does, errors included.
func TestWriteCell(t *testing.T) {
	s := testServer()
	bad := edgeCells()[0]
	bad.Body = json.RawMessage(`{"broken":`)
	for _, c := range append(edgeCells(), bad) {
		got := record(t, func(w http.ResponseWriter, r *http.Request) { s.writeCell(w, r, http.StatusOK, c) })
		want := record(t, func(w http.ResponseWriter, r *http.Request) { s.writeJSON(w, r, http.StatusOK, c) })
		sameResponse(t, "writeCell", got, want)
	}
}

// TestAppendBatchGet checks that a batchGet response is encoded byte for
// byte as writeJSON encodes it.
func TestAppendBatchGet(t *testing.T) {
	s := testServer()
	cells := edgeCells()
	errs := []errorBody{{Code: cellar.ENOTFOUND, Message: `no cell "<a&b>"/c/1`}, {Code: cellar.EINVALID, Message: "row key \u2028 is bad"}}
	rng := rand.New(rand.NewPCG(1, 2))
	cases := [][]batchGetResult{{}, {{}}}
	for range 200 {
		res := make([]batchGetResult, rng.IntN(8))
		for i := range res {
			switch rng.IntN(4) {
			case 0, 1:
				res[i].Cell = &cells[rng.IntN(len(cells))]
			case 2:
				res[i].Error = &errs[rng.IntN(len(errs))]
			case 3: // both, which the handler never sends, or neither
				if rng.IntN(2) == 0 {
					res[i].Cell, res[i].Error = &cells[0], &errs[0]
				}
			}
		}
		cases = append(cases, res)
	}
	bad := cells[0]
	bad.Body = json.RawMessage(`nope`)
	cases = append(cases, []batchGetResult{{Cell: &cells[0]}, {Cell: &bad}})
	for _, res := range cases {
		got := record(t, func(w http.ResponseWriter, r *http.Request) {
			b, err := appendBatchGet(nil, res)
			if err != nil {
				s.encodeFailed(w, r, err)
				return
			}
			writeBody(w, http.StatusOK, b)
		})
		want := record(t, func(w http.ResponseWriter, r *http.Request) {
			s.writeJSON(w, r, http.StatusOK, struct {
				Results []batchGetResult `json:"results"`
			}{res})
		})
		sameResponse(t, "appendBatchGet", got, want)
	}
}

// FuzzWriteCell compares writeCell with writeJSON on arbitrary cells.
func FuzzWriteCell(f *testing.F) {
	f.Add("user/42", "profile", int64(7), int64(1763700000123), []byte(`{"a":"<&>"}`))
	f.Add("\xff\u2028", `"\`, int64(-1), int64(-62135596800000), []byte(" [1, 2] "))
	f.Add("", "", int64(0), int64(0), []byte(nil))
	s := testServer()
	f.Fuzz(func(t *testing.T, row, col string, ref, ms int64, body []byte) {
		c := cellar.Cell{Key: cellar.Key{RowKey: row, Column: col, RefKey: ref}, Shard: int(ref % 4096), AddedID: ms, CreatedAt: time.UnixMilli(ms), Body: body}
		got := record(t, func(w http.ResponseWriter, r *http.Request) { s.writeCell(w, r, http.StatusOK, c) })
		want := record(t, func(w http.ResponseWriter, r *http.Request) { s.writeJSON(w, r, http.StatusOK, c) })
		sameResponse(t, "writeCell", got, want)
		gotB, errB := appendBatchGet(nil, []batchGetResult{{Cell: &c}, {}})
		var wantB bytes.Buffer
		enc := json.NewEncoder(&wantB)
		enc.SetEscapeHTML(false)
		wantErr := enc.Encode(struct {
			Results []batchGetResult `json:"results"`
		}{[]batchGetResult{{Cell: &c}, {}}})
		if (errB != nil) != (wantErr != nil) || (errB == nil && !bytes.Equal(gotB, wantB.Bytes())) {
			t.Errorf("appendBatchGet = %s, %v; want %s, %v", gotB, errB, wantB.Bytes(), wantErr)
		}
	})
}

// TestHasSegment compares hasSegment with splitting the path.
func TestHasSegment(t *testing.T) {
	ref := func(p, seg string) bool {
		segs := strings.Split(p, "/")
		for _, s := range segs[1:] { // what precedes the first "/" is no segment
			if strings.EqualFold(s, seg) {
				return true
			}
		}
		return false
	}
	paths := []string{"", "/", "/%2F", "/%2f", "/%2F/", "/v1/cells/%2F/c", "/v1/cells/%2f/c/1", "/v1/cells/a%2F/c",
		"/v1/cells/%2Fa/c", "/v1/cells/%2F%2F/c", "%2F", "/%2", "/%2G", "//%2F", "/a/%2F", "/a/%2Fb", "/%2F/%2F",
		"/%2F%00", "/%2f%00/c", "/%2F%000", "/a%2F%00", "%2F%00"}
	rng := rand.New(rand.NewPCG(3, 4))
	alphabet := []string{"/", "%", "2", "F", "f", "a", "0"}
	for range 20000 {
		var b strings.Builder
		for range rng.IntN(12) {
			b.WriteString(alphabet[rng.IntN(len(alphabet))])
		}
		paths = append(paths, b.String())
	}
	for _, p := range paths {
		for _, seg := range []string{"%2F", slashSegmentEscaped} {
			if got, want := hasSegment(p, seg), ref(p, seg); got != want {
				t.Errorf("hasSegment(%q, %q) = %v; want %v", p, seg, got, want)
			}
		}
	}
}

// FuzzCounterIncr checks that what the fast path reads of an increment is
// what the document decoder reads, and that the counter's response is
// written as writeJSON writes it.
func FuzzCounterIncr(f *testing.F) {
	for _, seed := range []string{`{"by":1}`, `{"by":-0}`, `{"by":0}`, `{"by":01}`, `{"by":-}`, `{"by":9223372036854775807}`,
		`{"by":9223372036854775808}`, `{"by":-9223372036854775808}`, `{"by":1.0}`, `{"by":1e3}`, `{"by": 1}`, `{"By":1}`,
		`{"by":"1"}`, `{"by":null}`, `{"by":1}x`, `{"by":1,"by":2}`, `{"by":+1}`, `{"by":}`, `{}`} {
		f.Add([]byte(seed), "hot", int64(42))
	}
	f.Add([]byte(`{"by":7}`), "k\"ey\u2028<&>\xff", int64(-1))
	s := testServer()
	f.Fuzz(func(t *testing.T, raw []byte, key string, value int64) {
		if n, ok := canonicalIncr(raw); ok {
			if m, err := decodeCounterIncrDoc(raw); err != nil || m != n {
				t.Errorf("canonicalIncr(%q) = %d; the decoder reads %d, %v", raw, n, m, err)
			}
		}
		cv := counterValue{key, value}
		got := record(t, func(w http.ResponseWriter, r *http.Request) { s.writeCounter(w, r, cv) })
		want := record(t, func(w http.ResponseWriter, r *http.Request) { s.writeJSON(w, r, http.StatusOK, cv) })
		sameResponse(t, "writeCounter", got, want)
	})
}

func TestCanonicalIncr(t *testing.T) {
	for _, tt := range []struct {
		raw string
		n   int64
		ok  bool
	}{
		{`{"by":1}`, 1, true}, {`{"by":-7}`, -7, true}, {`{"by":0}`, 0, true},
		{`{"by":-9223372036854775808}`, -9223372036854775808, true},
		{`{"by":9223372036854775808}`, 0, false}, {`{"by":01}`, 0, false}, {`{"by":1.5}`, 0, false},
		{`{"by": 1}`, 0, false}, {`{"by":1 }`, 0, false}, {`{"by":}`, 0, false}, {`{"by":-}`, 0, false},
	} {
		if n, ok := canonicalIncr([]byte(tt.raw)); n != tt.n || ok != tt.ok {
			t.Errorf("canonicalIncr(%s) = %d, %v; want %d, %v", tt.raw, n, ok, tt.n, tt.ok)
		}
	}
}
