package http

import (
	"strings"
	"testing"
)

func TestZZReviewCoreProbe(t *testing.T) {
	c := newServer(t, openStore(t), Options{})
	show := func(m, p, b string) {
		r := c.do(m, p, b)
		s := strings.TrimSpace(string(r.body))
		if len(s) > 300 { s = s[:300] }
		t.Logf("%s %s -> %d %s", m, p[:min(len(p),60)], r.status, s)
	}
	show("PUT", "/v1/cells/a/c/1", `{"\ud800":1,"\udc00":2}`)
	show("PUT", "/v1/cells/a/c/1", `{"\ud800":1,"\ufffd":2}`)
	show("PUT", "/v1/cells/a/c/1", `{"x":{"\ud800":1,"\ufffd":2}}`)
	show("POST", "/v1/cells:batchPut", `{"cells":[{"row_key":"a","column":"c","ref_key":1,"body":{"\ud800":1,"\udc00":2}}]}`)
	show("PUT", "/v1/cells/a/c/2", `{"\ud800":1}`)
	show("PUT", "/v1/cells/a/c/2", `{"\udc00":1}`)
	show("PUT", "/v1/cells/a/c/2", `{"\ufffd":1}`)
	d1001 := `{"a":` + strings.Repeat("[", 1000) + strings.Repeat("]", 1000) + `}`
	d999 := `{"a":` + strings.Repeat("[", 999) + strings.Repeat("]", 999) + `}`
	show("PUT", "/v1/cells/a/c/3", d1001)
	show("PUT", "/v1/cells/a/c/3", d999)
	show("POST", "/v1/cells:batchPut", `{"cells":[{"row_key":"b","column":"c","ref_key":1,"body":{}},{"row_key":"b","column":"c","ref_key":2,"body":`+d1001+`}]}`)
	d10001 := `{"a":` + strings.Repeat("[", 10000) + strings.Repeat("]", 10000) + `}`
	show("POST", "/v1/cells:batchPut", `{"cells":[{"row_key":"b2","column":"c","ref_key":1,"body":{}},{"row_key":"b","column":"c","ref_key":2,"body":`+d10001+`}]}`)
	show("GET", "/v1/cells/b2/c/1", "")
	show("PUT", "/v1/cells/a/c/4", d10001)
	show("POST", "/v1/cells:batchGet", `{"keys":[{"row_key":"a","column":"c\ud800"}]}`)
	show("POST", "/v1/cells:batchGet", `{"keys":[{"row_key":"a","column":"c","ref_key":1.0}]}`)
	show("POST", "/v1/cells:batchGet", `{"keys":[{"row_key":"a","column":"c","ref_key":1e0}]}`)
	show("POST", "/v1/cells:batchGet", `{"keys":[{"row_key":"a","column":"c","ref_key":-0}]}`)
	show("POST", "/v1/cells:batchGet", `{"keys":[{"row_key":"a","column":"c","ref_key":"1"}]}`)
	show("POST", "/v1/cells:batchGet", `{"keys":[{"row_key":"a","column":"c","ref_key":true}]}`)
	show("POST", "/v1/cells:batchGet", `{"keys":[{"row_key":"a","column":"c","ref_key":1}]} `)
	show("POST", "/v1/cells:batchGet", "{\"keys\":[{\"row_key\":\"a\xff\",\"column\":\"c\"}]}")
	show("POST", "/v1/cells:batchGet", `{"keys":{"row_key":"a"}}`)
	show("POST", "/v1/cells:batchGet", `[]`)
	show("POST", "/v1/cells:batchGet", `{"keys":[{"row_key":"a","column":"c","ref_key":1},]}`)
	show("POST", "/v1/cells:batchGet", `{"keys":[{"row_key":"a","column":"c","ref_key":1,}]}`)
	show("POST", "/v1/cells:batchGet", `{"keys":[{"row_key":"a","column":"c","ref_key":01}]}`)
	show("POST", "/v1/cells:batchPut", `{"cells":[{"row_key":"z","column":"c","ref_key":01,"body":{}}]}`)
	show("POST", "/v1/cells:batchPut", `{"cells":[{"row_key":"z","column":"c","ref_key":1,"body":{"a":1}, }]}`)
	show("POST", "/v1/cells:batchPut", `{"cells":[{"row_key":"z","column":"c","ref_key":1,"body":{"a":1,}}]}`)
	show("POST", "/v1/cells:batchPut", `{"cells":[{"row_key":"z","column":"c","ref_key":1,"body":{"a":[1,]}}]}`)
	show("POST", "/v1/cells:batchPut", `{"cells":[{"row_key":"z","column":"c","ref_key":1,"body":{"a":tru}}]}`)
	show("GET", "/v1/cells/z/c/1", "")
}
