package http

import (
	"fmt"
	"strings"
	"testing"

	"github.com/cellar-db/cellar"
)

type wireTimeline struct {
	Items []cellar.TimelineItem `json:"items"`
	Count *int64                `json:"count"`
}

func timelinePath(key string) string { return "/v1/timelines/" + escapeRow(key) }

func membersPath(key string) string { return timelinePath(key) + "/members" }

func memberPath(key, member string) string { return membersPath(key) + "/" + escapeRow(member) }

// items formats a range response as "member:score ...", count.
func (w wireTimeline) String() string {
	parts := make([]string, len(w.Items))
	for i, it := range w.Items {
		parts[i] = fmt.Sprintf("%s:%v", it.Member, it.Score)
	}
	count := "none"
	if w.Count != nil {
		count = fmt.Sprint(*w.Count)
	}
	return strings.Join(parts, " ") + " count=" + count
}

func TestTimelines(t *testing.T) {
	st := openStore(t)
	c := newServer(t, st, Options{Timelines: st})

	got := decode[timelineMember](t, c.do("POST", membersPath("feed"), `{"member": "a", "score": 1.5}`).want(t, 200, ""))
	if got != (timelineMember{Key: "feed", Member: "a", Score: 1.5}) {
		t.Errorf("POST member = %+v; want key, member and score", got)
	}
	c.do("POST", membersPath("feed"), `{"score": -2, "member": "b"}`).want(t, 200, "")
	c.do("POST", membersPath("feed"), `{"member": "c", "score": 1e3}`).want(t, 200, "")
	c.do("POST", membersPath("feed"), `{"member": "d", "score": 1.5}`).want(t, 200, "")
	// -0 is stored, and answered, as 0.
	if r := c.do("POST", membersPath("feed"), `{"member": "z", "score": -0}`).want(t, 200, ""); !strings.Contains(string(r.body), `"score":0}`) {
		t.Errorf("POST with score -0 = %s; want score 0", r.body)
	}

	rangeOf := func(query string) string {
		t.Helper()
		return decode[wireTimeline](t, c.do("GET", timelinePath("feed")+query, "").want(t, 200, "")).String()
	}
	for _, tt := range []struct{ query, want string }{
		{"", "c:1000 d:1.5 a:1.5 z:0 b:-2 count=5"},
		{"?order=desc", "c:1000 d:1.5 a:1.5 z:0 b:-2 count=5"},
		{"?order=asc", "b:-2 z:0 a:1.5 d:1.5 c:1000 count=5"},
		{"?limit=2", "c:1000 d:1.5 count=5"},
		{"?offset=1&limit=2&order=asc", "z:0 a:1.5 count=5"},
		{"?offset=5", " count=5"},
		{"?offset=9223372036854775807", " count=5"},
		{"?limit=1000", "c:1000 d:1.5 a:1.5 z:0 b:-2 count=5"},
	} {
		if got := rangeOf(tt.query); got != tt.want {
			t.Errorf("GET %s = %s; want %s", tt.query, got, tt.want)
		}
	}
	// Items are [] when there are none, never null.
	if r := c.do("GET", timelinePath("none"), "").want(t, 200, ""); string(r.body) != `{"items":[],"count":0}`+"\n" {
		t.Errorf("GET of an empty timeline = %s", r.body)
	}
	c.do("HEAD", timelinePath("feed"), "").want(t, 200, "")

	// Update and remove.
	c.do("POST", membersPath("feed"), `{"member": "b", "score": 2000}`).want(t, 200, "")
	if got := decode[map[string]bool](t, c.do("DELETE", memberPath("feed", "c"), "").want(t, 200, "")); !got["removed"] || len(got) != 1 {
		t.Errorf("DELETE member = %v; want {removed: true}", got)
	}
	if got := decode[map[string]bool](t, c.do("DELETE", memberPath("feed", "c"), "").want(t, 200, "")); got["removed"] {
		t.Errorf("DELETE of a removed member = %v; want {removed: false}", got)
	}
	if got := rangeOf(""); got != "b:2000 d:1.5 a:1.5 z:0 count=4" {
		t.Errorf("after update and remove, GET = %s", got)
	}

	// The cap.
	if r := c.do("PUT", timelinePath("feed"), `{"cap": 2}`).want(t, 200, ""); string(r.body) != `{"key":"feed","cap":2}`+"\n" {
		t.Errorf("PUT cap = %s", r.body)
	}
	if got := rangeOf("?order=asc"); got != "d:1.5 b:2000 count=2" {
		t.Errorf("after cap 2, GET asc = %s", got)
	}
	c.do("POST", membersPath("feed"), `{"member": "new", "score": 3000}`).want(t, 200, "")
	if got := rangeOf(""); got != "new:3000 b:2000 count=2" {
		t.Errorf("after an add at cap 2, GET = %s", got)
	}
}

func TestTimelineKeyEscaping(t *testing.T) {
	st := openStore(t)
	c := newServer(t, st, Options{Timelines: st})
	names := []string{"/", "a/b", "%2F", ".", "..", "with space", "q?x=1", "frag#x", "日本", "members", "a/members/b"}
	for i, key := range names {
		member := names[len(names)-1-i]
		body := fmt.Sprintf(`{"member": %q, "score": %d}`, member, i)
		got := decode[timelineMember](t, c.do("POST", membersPath(key), body).want(t, 200, ""))
		if got.Key != key || got.Member != member {
			t.Errorf("POST to %q: %+v; want key %q member %q", key, got, key, member)
		}
		tl := decode[wireTimeline](t, c.do("GET", timelinePath(key), "").want(t, 200, ""))
		if want := fmt.Sprintf("%s:%d count=1", member, i); tl.String() != want {
			t.Errorf("GET %q = %s; want %s", key, tl, want)
		}
		if n, err := st.TimelineCount(t.Context(), key); err != nil || n != 1 {
			t.Errorf("timeline %q in the store counts %d, %v; want 1", key, n, err)
		}
		if r := decode[map[string]bool](t, c.do("DELETE", memberPath(key, member), "").want(t, 200, "")); !r["removed"] {
			t.Errorf("DELETE %q from %q: not removed", member, key)
		}
	}
	// A literal "." or ".." segment is refused, not cleaned.
	c.do("GET", "/v1/timelines/.", "").want(t, 400, cellar.EINVALID)
	c.do("DELETE", "/v1/timelines/k/members/..", "").want(t, 400, cellar.EINVALID)
}

func TestTimelineInvalid(t *testing.T) {
	st := openStore(t)
	c := newServer(t, st, Options{Timelines: st, MaxBodyBytes: 1000})
	c.do("POST", membersPath("k"), `{"member":"keep","score":1}`).want(t, 200, "")
	// Zero as written, and the smallest float64, are scores.
	for _, score := range []string{"0e-400", "-0.000", "5e-324"} {
		c.do("POST", membersPath("z"), `{"member":"m`+score+`","score":`+score+`}`).want(t, 200, "")
	}
	long := strings.Repeat("x", 256)
	tests := []struct {
		name, method, path, body string
		status                   int
		code                     string
	}{
		{"missing score", "POST", membersPath("k"), `{"member":"m"}`, 400, cellar.EINVALID},
		{"missing member", "POST", membersPath("k"), `{"score":1}`, 400, cellar.EINVALID},
		{"unknown member", "POST", membersPath("k"), `{"member":"m","score":1,"x":1}`, 400, cellar.EINVALID},
		{"duplicate name", "POST", membersPath("k"), `{"member":"m","score":1,"score":2}`, 400, cellar.EINVALID},
		{"other case", "POST", membersPath("k"), `{"Member":"m","score":1}`, 400, cellar.EINVALID},
		{"score string", "POST", membersPath("k"), `{"member":"m","score":"1"}`, 400, cellar.EINVALID},
		{"score null", "POST", membersPath("k"), `{"member":"m","score":null}`, 400, cellar.EINVALID},
		{"score too large", "POST", membersPath("k"), `{"member":"m","score":1e400}`, 400, cellar.EINVALID},
		{"score too small", "POST", membersPath("k"), `{"member":"m","score":1e-400}`, 400, cellar.EINVALID},
		{"score too small, negative", "POST", membersPath("k"), `{"member":"m","score":-0.0001e-330}`, 400, cellar.EINVALID},
		{"score bool", "POST", membersPath("k"), `{"member":"m","score":true}`, 400, cellar.EINVALID},
		{"member number", "POST", membersPath("k"), `{"member":1,"score":1}`, 400, cellar.EINVALID},
		{"member null", "POST", membersPath("k"), `{"member":null,"score":1}`, 400, cellar.EINVALID},
		{"member empty", "POST", membersPath("k"), `{"member":"","score":1}`, 400, cellar.EINVALID},
		{"member too long", "POST", membersPath("k"), `{"member":"` + long + `","score":1}`, 400, cellar.EINVALID},
		{"member control", "POST", membersPath("k"), `{"member":"a\nb","score":1}`, 400, cellar.EINVALID},
		{"invalid UTF-8", "POST", membersPath("k"), "{\"member\":\"\xff\",\"score\":1}", 400, cellar.EINVALID},
		{"member unpaired surrogate", "POST", membersPath("k"), `{"member":"\udc00","score":1}`, 400, cellar.EINVALID},
		{"key slash NUL", "POST", "/v1/timelines/%2F%00/members", `{"member":"m","score":1}`, 400, cellar.EINVALID},
		{"member slash NUL", "DELETE", "/v1/timelines/k/members/%2f%00", ``, 400, cellar.EINVALID},
		{"empty order", "GET", timelinePath("k") + "?order=", ``, 400, cellar.EINVALID},
		{"array", "POST", membersPath("k"), `[]`, 400, cellar.EINVALID},
		{"empty body", "POST", membersPath("k"), ``, 400, cellar.EINVALID},
		{"trailing data", "POST", membersPath("k"), `{"member":"m","score":1} {}`, 400, cellar.EINVALID},
		{"body too large", "POST", membersPath("k"), `{"member":"m","score":1` + strings.Repeat(" ", 1000) + `}`, 413, cellar.ETOOLARGE},
		{"query on POST", "POST", membersPath("k") + "?x=1", `{"member":"m","score":1}`, 400, cellar.EINVALID},
		{"key too long", "POST", membersPath(long), `{"member":"m","score":1}`, 400, cellar.EINVALID},
		{"key control", "POST", "/v1/timelines/a%01b/members", `{"member":"m","score":1}`, 400, cellar.EINVALID},
		{"key invalid UTF-8", "GET", "/v1/timelines/a%FFb", ``, 400, cellar.EINVALID},
		{"limit 0", "GET", timelinePath("k") + "?limit=0", ``, 400, cellar.EINVALID},
		{"limit 1001", "GET", timelinePath("k") + "?limit=1001", ``, 400, cellar.EINVALID},
		{"limit huge", "GET", timelinePath("k") + "?limit=99999999999999999999", ``, 400, cellar.EINVALID},
		{"negative offset", "GET", timelinePath("k") + "?offset=-1", ``, 400, cellar.EINVALID},
		{"offset not digits", "GET", timelinePath("k") + "?offset=1e3", ``, 400, cellar.EINVALID},
		{"bad order", "GET", timelinePath("k") + "?order=up", ``, 400, cellar.EINVALID},
		{"upper-case order", "GET", timelinePath("k") + "?order=ASC", ``, 400, cellar.EINVALID},
		{"unknown parameter", "GET", timelinePath("k") + "?limt=5", ``, 400, cellar.EINVALID},
		{"parameter twice", "GET", timelinePath("k") + "?limit=5&limit=6", ``, 400, cellar.EINVALID},
		{"cap 0", "PUT", timelinePath("k"), `{"cap":0}`, 400, cellar.EINVALID},
		{"cap too large", "PUT", timelinePath("k"), `{"cap":1000001}`, 400, cellar.EINVALID},
		{"cap huge", "PUT", timelinePath("k"), `{"cap":99999999999999999999}`, 400, cellar.EINVALID},
		{"cap fraction", "PUT", timelinePath("k"), `{"cap":1.5}`, 400, cellar.EINVALID},
		{"cap exponent", "PUT", timelinePath("k"), `{"cap":1e2}`, 400, cellar.EINVALID},
		{"cap string", "PUT", timelinePath("k"), `{"cap":"5"}`, 400, cellar.EINVALID},
		{"cap null", "PUT", timelinePath("k"), `{"cap":null}`, 400, cellar.EINVALID},
		{"cap missing", "PUT", timelinePath("k"), `{}`, 400, cellar.EINVALID},
		{"cap and more", "PUT", timelinePath("k"), `{"cap":5,"x":1}`, 400, cellar.EINVALID},
		{"delete with query", "DELETE", memberPath("k", "keep") + "?x", ``, 400, cellar.EINVALID},
		{"delete member too long", "DELETE", memberPath("k", long), ``, 400, cellar.EINVALID},
		{"patch", "PATCH", timelinePath("k"), `{}`, 405, codeMethodNotAllowed},
		{"get members", "GET", membersPath("k"), ``, 405, codeMethodNotAllowed},
		{"trailing slash", "GET", timelinePath("k") + "/", ``, 404, cellar.ENOTFOUND},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c.do(tt.method, tt.path, tt.body).want(t, tt.status, tt.code)
		})
	}
	// Nothing was written.
	if got := decode[wireTimeline](t, c.do("GET", timelinePath("k"), "").want(t, 200, "")).String(); got != "keep:1 count=1" {
		t.Errorf("after refused requests, timeline k = %s; want keep:1 count=1", got)
	}
	if n, err := st.TimelineCount(t.Context(), "a\x01b"); err == nil || n != 0 {
		t.Errorf("a refused key was stored")
	}
}

func TestTimelineRoutesNeedStore(t *testing.T) {
	c := newServer(t, openStore(t), Options{})
	c.do("GET", timelinePath("k"), "").want(t, 404, cellar.ENOTFOUND)
	c.do("POST", membersPath("k"), `{"member":"m","score":1}`).want(t, 404, cellar.ENOTFOUND)
}

func TestTimelineAuth(t *testing.T) {
	st := openStore(t)
	c := newServer(t, st, Options{Timelines: st, Tokens: []Token{
		{Secret: "r", Scopes: []string{ScopeRead}},
		{Secret: "w", Scopes: []string{ScopeWrite}},
		{Secret: "a", Scopes: []string{ScopeAdmin}},
	}})
	type req struct{ method, path, body string }
	read := req{"GET", timelinePath("k"), ""}
	writes := []req{
		{"POST", membersPath("k"), `{"member":"m","score":1}`},
		{"DELETE", memberPath("k", "m"), ""},
		{"PUT", timelinePath("k"), `{"cap":5}`},
	}
	for _, tt := range []struct {
		token       string
		read, write int
	}{{"", 401, 401}, {"r", 200, 403}, {"w", 403, 200}, {"a", 200, 200}} {
		c.token = tt.token
		c.do(read.method, read.path, read.body).want(t, tt.read, "")
		for _, w := range writes {
			c.do(w.method, w.path, w.body).want(t, tt.write, "")
		}
	}
}
