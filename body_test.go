package cellar_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/cellar-db/cellar"
)

func TestCheckBody(t *testing.T) {
	tests := []struct {
		in   string
		want string // compacted; "" means an error is expected
		code string
	}{
		{`{}`, `{}`, ""},
		{` { "a" : 1 , "b":[ 1, 2 ] } `, `{"a":1,"b":[1,2]}`, ""},
		{`{"n":12345678901234567890,"pi":3.141592653589793238462643383279,"e":1e400}`, `{"n":12345678901234567890,"pi":3.141592653589793238462643383279,"e":1e400}`, ""},
		{`{"s":"\u00e9\n"}`, `{"s":"\u00e9\n"}`, ""},
		{`{"z":1,"a":2}`, `{"z":1,"a":2}`, ""},
		{`[]`, "", cellar.EINVALID},
		{`"str"`, "", cellar.EINVALID},
		{`1`, "", cellar.EINVALID},
		{`null`, "", cellar.EINVALID},
		{``, "", cellar.EINVALID},
		{`{`, "", cellar.EINVALID},
		{`{"a":1}{}`, "", cellar.EINVALID},
		{`{"a":1} x`, "", cellar.EINVALID},
		{`{"a":1,"a":2}`, "", cellar.EINVALID},
		{`{"a":{"b":1,"b":1}}`, "", cellar.EINVALID},
		{`{"a":[{"x":1,"x":2}]}`, "", cellar.EINVALID},
		{`{"a":1,"\u0061":2}`, "", cellar.EINVALID}, // the same key, escaped
		{`{"a":01}`, "", cellar.EINVALID},
		{`{"a":NaN}`, "", cellar.EINVALID},
		{`{'a':1}`, "", cellar.EINVALID},
		{"{\"a\":\"\xff\"}", "", cellar.EINVALID},
		{`{"a":1,}`, "", cellar.EINVALID},
		{strings.Repeat(`{"a":`, cellar.MaxBodyDepth+1) + "1" + strings.Repeat("}", cellar.MaxBodyDepth+1), "", cellar.EINVALID},
	}
	for _, tt := range tests {
		got, err := cellar.CheckBody([]byte(tt.in), 1<<20)
		if tt.want == "" {
			if err == nil || cellar.ErrorCode(err) != tt.code {
				t.Errorf("CheckBody(%.60q) = %s, %v; want a %s error", tt.in, got, err, tt.code)
			}
			continue
		}
		if err != nil || string(got) != tt.want {
			t.Errorf("CheckBody(%.60q) = %s, %v; want %s", tt.in, got, err, tt.want)
		}
	}
	deep := strings.Repeat(`[`, cellar.MaxBodyDepth-1) + strings.Repeat("]", cellar.MaxBodyDepth-1)
	if _, err := cellar.CheckBody([]byte(`{"a":`+deep+`}`), 1<<20); err != nil {
		t.Errorf("CheckBody at the depth limit: %v", err)
	}
	_, err := cellar.CheckBody([]byte(`{"a":"123456"}`), 10)
	if !errors.Is(err, cellar.ErrTooLarge) {
		t.Errorf("CheckBody over the limit: %v; want too_large", err)
	}
}

func TestEqualBodies(t *testing.T) {
	tests := []struct {
		a, b string
		want bool
	}{
		{`{"a":1,"b":2}`, `{"b":2,"a":1}`, true},
		{`{"a":{"x":[1,{"q":1,"p":2}]}}`, `{ "a" : { "x" : [ 1 , { "p":2, "q":1 } ] } }`, true},
		{`{"s":"\u00e9"}`, `{"s":"é"}`, true},
		{`{"s":"\/"}`, `{"s":"/"}`, true},
		{`{"a":1}`, `{"a":1.0}`, false},
		{`{"a":1e2}`, `{"a":100}`, false},
		{`{"a":[1,2]}`, `{"a":[2,1]}`, false},
		{`{"a":null}`, `{}`, false},
		{`{"a":"<&>"}`, `{"a":"\u003c\u0026\u003e"}`, true},
		{`{"a":"\ud800"}`, `{"a":"\ufffd"}`, true}, // a lone surrogate reads as U+FFFD
		{`{"b":1,"a":{"d":[],"c":"x"}}`, `{"a":{"c":"x","d":[]},"b":1}`, true},
		{`{"a":"\u00e9"}`, `{"a":"\u00e8"}`, false},
	}
	for _, tt := range tests {
		got, err := cellar.EqualBodies([]byte(tt.a), []byte(tt.b))
		if err != nil || got != tt.want {
			t.Errorf("EqualBodies(%s, %s) = %v, %v; want %v", tt.a, tt.b, got, err, tt.want)
		}
	}
}

// FuzzBody checks, for any input, that CheckBody either rejects it or
// returns a compacted object that is valid JSON, equal to the input and
// stable under canonicalization.
func FuzzBody(f *testing.F) {
	for _, s := range []string{`{}`, `{"a":1}`, `{"a":[1,{"b":"c"}],"d":1e400}`, `{"a":1,"a":2}`, `[1]`, `{"\u00e9":"\ud83d\ude00"}`, `{"a":-0.0e-0}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		got, err := cellar.CheckBody(raw, 1<<20)
		if err != nil {
			code := cellar.ErrorCode(err)
			if code != cellar.EINVALID && code != cellar.ETOOLARGE {
				t.Fatalf("CheckBody(%q): error code %s", raw, code)
			}
			return
		}
		if !utf8.Valid(raw) || !json.Valid(raw) {
			t.Fatalf("CheckBody accepted invalid input %q", raw)
		}
		if !json.Valid(got) || got[0] != '{' {
			t.Fatalf("CheckBody(%q) = %q: not a JSON object", raw, got)
		}
		var a, b bytes.Buffer
		json.Compact(&a, raw)
		json.Compact(&b, got)
		if a.String() != b.String() {
			t.Fatalf("CheckBody changed the value: %q -> %q", raw, got)
		}
		c1, err := cellar.CanonicalBody(got)
		if err != nil {
			t.Fatalf("CanonicalBody(%q): %v", got, err)
		}
		c2, err := cellar.CanonicalBody(c1)
		if err != nil || !bytes.Equal(c1, c2) {
			t.Fatalf("canonical form is not stable: %q -> %q (%v)", c1, c2, err)
		}
		if eq, err := cellar.EqualBodies(raw, c1); err != nil || !eq {
			t.Fatalf("a body is not equal to its canonical form: %q vs %q", raw, c1)
		}
	})
}

func TestCellMarshalKeepsBody(t *testing.T) {
	c := cellar.Cell{Key: cellar.Key{RowKey: "r", Column: "c"}, Body: json.RawMessage(`{"h":"<a>&</a>","n":1e400}`)}
	// json.Marshal escapes '<', '>', '&' in any Marshaler's output; an
	// encoder without HTML escaping, as the server uses, must keep the body
	// exactly.
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(c); err != nil {
		t.Fatal(err)
	}
	got := buf.String()
	if !strings.Contains(got, `"body":{"h":"<a>&</a>","n":1e400}`) || !strings.Contains(got, `"created_at":"0001-01-01T00:00:00.000Z"`) {
		t.Errorf("json.Marshal(cell) = %s", got)
	}
}

// BenchmarkCheckBody checks a body like the benchmarks' (214 bytes):
//
//	go test -run '^$' -bench CheckBody -benchmem .
func BenchmarkCheckBody(b *testing.B) {
	raw := []byte(`{"user":"user-000123","event":"page_view","path":"/products/12345?ref=home","ts":1732200000123,"tags":["web","mobile","beta"],"n":12345678901234567890,"pi":3.141592653589793,"ok":true,"extra":null,"s":"caf\u00e9"}`)
	b.SetBytes(int64(len(raw)))
	for b.Loop() {
		if _, err := cellar.CheckBody(raw, 1<<20); err != nil {
			b.Fatal(err)
		}
	}
}
