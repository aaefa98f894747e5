package http

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"
)

// FuzzHandler sends arbitrary requests to the handler over a real store and
// checks that it never panics or answers 500, always answers JSON, and
// that a request it refuses writes nothing.
func FuzzHandler(f *testing.F) {
	seeds := []struct{ method, path, body string }{
		{"PUT", "/v1/cells/r/c/1", `{"a":1}`},
		{"PUT", "/v1/cells/a%2Fb/c/9223372036854775807", `{"n":1e400,"s":"<&>"}`},
		{"PUT", "/v1/cells/%2E/c/1", `{"a":{"b":[1,2,{"c":null}]}}`},
		{"PUT", "/v1/cells/r/c/1", `{"a":1,"a":2}`},
		{"PUT", "/v1/cells/r/c/-1", `{}`},
		{"PUT", "/v1/cells/r/c/1?x", `{}`},
		{"GET", "/v1/cells/r/c/1", ""},
		{"GET", "/v1/cells/r/c", ""},
		{"GET", "/v1/rows/r?columns=c,d", ""},
		{"POST", "/v1/cells:batchGet", `{"keys":[{"row_key":"r","column":"c","ref_key":1},{"row_key":"r","column":"c"}]}`},
		{"POST", "/v1/cells:batchPut", `{"cells":[{"row_key":"r","column":"c","ref_key":2,"body":{"x":1}},{"row_key":"r","column":"c","ref_key":3,"body":[]}]}`},
		{"POST", "/v1/cells:batchPut", `{"cells":[{"row_key":"r","column":"c","ref_key":2,"body":{"x":1}}],"cells":[]}`},
		{"POST", "/v1/cells:batchPut", "{\"cells\":[{\"row_key\":\"\xff\",\"column\":\"c\",\"ref_key\":4,\"body\":{}}]}"},
		{"GET", "/v1/shards/3/cells?after=0&limit=10&column=c", ""},
		{"GET", "/v1/shards", ""},
		{"GET", "/healthz", ""},
		{"GET", "/readyz", ""},
		{"GET", "/metrics", ""},
		{"DELETE", "/v1/cells/r/c/1", ""},
		{"PUT", "/v1/cells/../c/1", `{}`},
		{"PUT", "/v1/cells/r/c/", `{}`},
		{"PUT", "//v1/cells/r/c/1", `{}`},
		{"CONNECT", "/v1/cells/r/c/1", `{}`},
		{"GET", "/v1/cells/%zz/c/1", ""},
		{"GET", "/v1/cells/r/c/1234567", ""},
		{"GET", "/v1/shards/64/cells", ""},
		{"GET", "/v1/shards/1/cells?limit=0&after=-1&column=1", ""},
		{"GET", "/v1/rows/r?columns=a,,b", ""},
		{"POST", "/v1/cells:batchGet", `{"keys":[{"row_key":"","column":"1","ref_key":-1},{"row_key":"r","column":"c","ref_key":null}]}`},
		{"POST", "/v1/cells:batchPut", `{"cells":[{"row_key":"r","column":"c","ref_key":-1,"body":{}},{"row_key":"r","column":"c","body":{}},{"row_key":"r","column":"c","ref_key":1,"body":{"a":2}}]}`},
		{"POST", "/v1/timelines/t/members", `{"member":"m","score":1.5}`},
		{"POST", "/v1/timelines/%2F/members", `{"member":"a/b","score":-1e308}`},
		{"POST", "/v1/timelines/t/members", `{"member":"m","score":1e400}`},
		{"POST", "/v1/timelines/t/members", `{"member":"m","score":1,"member":"n"}`},
		{"GET", "/v1/timelines/t?offset=0&limit=10&order=asc", ""},
		{"GET", "/v1/timelines/t?limit=0&order=sideways", ""},
		{"DELETE", "/v1/timelines/t/members/m", ""},
		{"PUT", "/v1/timelines/t", `{"cap":3}`},
		{"PUT", "/v1/timelines/t", `{"cap":1.0}`},
		{"PUT", "/v1/cells/%2F%00/c/1", `{}`},
		{"DELETE", "/v1/timelines/%2F/members/%2f%00", ""},
		{"POST", "/v1/cells:batchPut", `{"cells":[{"row_key":"\ud800","column":"c","ref_key":5,"body":{"\udc00":1}}]}`},
	}
	for _, s := range seeds {
		f.Add(s.method, s.path, []byte(s.body))
	}
	lite := openStore(f)
	st := &countingStore{Store: lite}
	h := NewHandler(st, Options{
		Timelines:       lite,
		MaxBodyBytes:    4096,
		MaxRequestBytes: 64 << 10,
		Logger:          discardLogger(),
		Metrics:         newMetrics(),
	})
	f.Fuzz(func(t *testing.T, method, path string, body []byte) {
		req, err := http.NewRequest(method, "http://cellar.test"+path, bytes.NewReader(body))
		if err != nil {
			return // not a request a server could receive
		}
		before := st.created.Load()
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		status := rec.Code
		// Nothing here may fail on the server's side: the store is local
		// and healthy, so even 503 would be a bug.
		if status >= 500 || status < 200 {
			t.Fatalf("%s %q %q: status %d: %s", method, path, body, status, rec.Body.Bytes())
		}
		if status/100 != 2 {
			if n := st.created.Load() - before; n != 0 {
				t.Fatalf("%s %q %q: status %d yet %d cells were created", method, path, body, status, n)
			}
		}
		if req.URL.Path != "/metrics" || status != 200 {
			if ct := rec.Header().Get("Content-Type"); ct != "application/json" {
				t.Fatalf("%s %q: Content-Type %q", method, path, ct)
			}
			if method != http.MethodHead && !json.Valid(rec.Body.Bytes()) {
				t.Fatalf("%s %q: response is not JSON: %q", method, path, rec.Body.Bytes())
			}
		}
	})
}
