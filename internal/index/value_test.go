package index

import (
	"bytes"
	"encoding/json"
	"math"
	"strconv"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/cellar-db/cellar"
)

func mustKey(tb testing.TB, typ string, raw string) []byte {
	tb.Helper()
	k, ok := encodeValue(typ, json.RawMessage(raw))
	if !ok {
		tb.Fatalf("encodeValue(%s, %s) refused the value", typ, raw)
	}
	return k
}

// TestKeyOrder checks that each type's keys sort like its values, with
// missing values first.
func TestKeyOrder(t *testing.T) {
	for _, c := range []struct {
		typ    string
		values []string // ascending
	}{
		{TypeInt, []string{"null", "-9223372036854775808", "-1000000", "-1", "0", "1", "2", "255", "256", "1e3", "1001", "9223372036854775807"}},
		{TypeFloat, []string{"null", "-1e400", "-1.7976931348623157e308", "-1", "-0.5", "-5e-324", "0", "5e-324", "0.5", "1", "1.0000001", "1e300", "1e400"}},
		{TypeString, []string{"null", `""`, `"\u0000"`, `"A"`, `"B"`, `"a"`, `"ab"`, `"b"`, `"é"`, `"中"`, `"😀"`}},
		{TypeBool, []string{"null", "false", "true"}},
		{TypeTime, []string{"null", `"1900-01-01T00:00:00Z"`, `"1969-12-31T23:59:59.999999999Z"`, `"1970-01-01T00:00:00Z"`,
			`"2026-01-01T00:00:00.5Z"`, `"2026-01-01T00:00:00.500000001Z"`, `"2026-01-01T02:00:01+02:00"`, `"9999-12-31T23:59:59Z"`}},
	} {
		for i := 1; i < len(c.values); i++ {
			a, b := mustKey(t, c.typ, c.values[i-1]), mustKey(t, c.typ, c.values[i])
			if bytes.Compare(a, b) >= 0 {
				t.Errorf("%s: key(%s) = %x is not below key(%s) = %x", c.typ, c.values[i-1], a, c.values[i], b)
			}
		}
	}
}

// TestKeyEquality checks that values equal as values have equal keys.
func TestKeyEquality(t *testing.T) {
	for _, c := range []struct {
		typ  string
		a, b string
	}{
		{TypeInt, "3", "3.0"},
		{TypeInt, "3", "3e0"},
		{TypeInt, "-0", "0"},
		// Read exactly, not through float64.
		{TypeInt, "9007199254740993", "9007199254740993.0"},
		{TypeInt, "9007199254740993", "9.007199254740993e15"},
		{TypeInt, "9223372036854775807", "9223372036854775807.000"},
		{TypeInt, "-9223372036854775808", "-9.223372036854775808e18"},
		{TypeInt, "1", "100000e-5"},
		{TypeInt, "0", "0e99999999999999999999"},
		{TypeInt, "0", "-0.0e-1000000000"},
		{TypeFloat, "-0", "0"},
		{TypeFloat, "0.1", "1e-1"},
		{TypeString, `"é"`, `"\u00e9"`},
		{TypeTime, `"2026-01-01T02:00:00+02:00"`, `"2026-01-01T00:00:00Z"`},
		{TypeTime, `"2026-01-01T00:00:00.500Z"`, `"2026-01-01T00:00:00.5Z"`},
		// RFC 3339 5.6: "T" and "Z" may be in lower case.
		{TypeTime, `"2026-01-01t00:00:00z"`, `"2026-01-01T00:00:00Z"`},
		{TypeTime, `"2026-01-01t02:00:00+02:00"`, `"2026-01-01T00:00:00Z"`},
	} {
		if a, b := mustKey(t, c.typ, c.a), mustKey(t, c.typ, c.b); !bytes.Equal(a, b) {
			t.Errorf("%s: key(%s) = %x, key(%s) = %x; want equal", c.typ, c.a, a, c.b, b)
		}
	}
}

func TestKeyTypes(t *testing.T) {
	for _, c := range []struct {
		typ string
		raw string
		ok  bool
	}{
		{TypeInt, "1.5", false},
		{TypeInt, "12345678901234567890", false},
		{TypeInt, "9223372036854775808", false},
		{TypeInt, "1e19", false},
		{TypeInt, "1.0000000000000000001", false},
		{TypeInt, "9223372036854775807.5", false},
		{TypeInt, "9223372036854775808.0", false},
		{TypeInt, "-9223372036854775809.0", false},
		{TypeInt, "9.223372036854775808e18", false},
		// Exponents too large to be an int64 are refused without
		// computing 10^exp.
		{TypeInt, "1e1000000000", false},
		{TypeInt, "1e-1000000000", false},
		{TypeInt, "1e99999999999999999999", false},
		{TypeInt, "9223372036854775807.0", true},
		{TypeInt, "1E2", true},
		{TypeInt, "1e+2", true},
		{TypeInt, `"1"`, false},
		{TypeInt, "true", false},
		{TypeFloat, `"1"`, false},
		{TypeFloat, "{}", false},
		{TypeString, "1", false},
		{TypeString, "[]", false},
		{TypeBool, "1", false},
		{TypeBool, `"true"`, false},
		{TypeTime, `"2026-01-01"`, false},
		{TypeTime, "1700000000", false},
		{TypeTime, `"2026-01-01T00:00:00Z"`, true},
		// Not RFC 3339, though time.Parse takes them (review of
		// 2026-12-08): a comma before the fraction, an offset hour of 24.
		{TypeTime, `"2024-01-01T00:00:00,5Z"`, false},
		{TypeTime, `"2024-01-01T00:00:00+24:00"`, false},
		{TypeTime, `"2024-01-01T00:00:00+23:59"`, true},
		{TypeTime, `"2024-01-01T00:00:00.1234567891Z"`, true}, // compared to the nanosecond
		{TypeTime, `"2024-01-01T00:00:00.Z"`, false},
		{TypeTime, `" 2024-01-01T00:00:00Z"`, false},
		{TypeString, "null", true},
		{"unknown", "1", false},
	} {
		if _, ok := encodeValue(c.typ, json.RawMessage(c.raw)); ok != c.ok {
			t.Errorf("encodeValue(%s, %s) ok = %v; want %v", c.typ, c.raw, ok, c.ok)
		}
	}
	if k, ok := encodeValue(TypeInt, nil); !ok || !bytes.Equal(k, nullKey) {
		t.Errorf("a missing value encodes as %x, %v; want the null key", k, ok)
	}
}

func TestExtract(t *testing.T) {
	fields := []Field{{"a", TypeInt}, {"b.c", TypeString}, {"b.d.e", TypeBool}, {"x.y", TypeInt}}
	vals := extract(json.RawMessage(`{"a": 12345678901234567890, "b": {"c": "hi", "d": {"e": true}}, "x": 3}`), fields)
	for i, want := range []string{"12345678901234567890", `"hi"`, "true", ""} {
		if string(vals[i]) != want {
			t.Errorf("field %s = %q; want %q", fields[i].Name, vals[i], want)
		}
	}
	// The int that is too big, and x.y under a scalar, are nulls.
	ks := keysOf(vals, fields)
	if !bytes.Equal(ks[0], nullKey) || !bytes.Equal(ks[3], nullKey) || bytes.Equal(ks[1], nullKey) {
		t.Errorf("keys = %x", ks)
	}
	if _, ok := locOf(ks, fields, 16); ok {
		t.Errorf("a row whose shard field is null has an entry")
	}
}

func TestTruncatedKeys(t *testing.T) {
	long := strings.Repeat("x", cellar.MaxIndexKeyBytes+50)
	k := mustKey(t, TypeString, strconv.Quote(long))
	cut, wasCut := truncKey(k)
	if !wasCut || len(cut) != cellar.MaxIndexKeyBytes {
		t.Fatalf("truncKey: %d bytes, cut %v", len(cut), wasCut)
	}
	fields := []Field{{"s", TypeString}}
	loc, ok := locOf(keys{k}, fields, 16)
	if !ok || len(loc.Keys[0]) != cellar.MaxIndexKeyBytes {
		t.Errorf("entry of a long value: %d bytes; want %d", len(loc.Keys[0]), cellar.MaxIndexKeyBytes)
	}
}

// FuzzIntKeys checks that int keys order like the ints.
func FuzzIntKeys(f *testing.F) {
	f.Add(int64(0), int64(1))
	f.Add(int64(-1), int64(0))
	f.Add(int64(math.MinInt64), int64(math.MaxInt64))
	f.Fuzz(func(t *testing.T, a, b int64) {
		ka := mustKey(t, TypeInt, strconv.FormatInt(a, 10))
		kb := mustKey(t, TypeInt, strconv.FormatInt(b, 10))
		if got, want := bytes.Compare(ka, kb), cmpOrdered(a, b); got != want {
			t.Errorf("compare(key(%d), key(%d)) = %d; want %d", a, b, got, want)
		}
	})
}

// FuzzFloatKeys checks that float keys order like the floats.
func FuzzFloatKeys(f *testing.F) {
	f.Add(0.0, math.Copysign(0, -1))
	f.Add(-1.5, 2.25)
	f.Add(math.SmallestNonzeroFloat64, -math.SmallestNonzeroFloat64)
	f.Fuzz(func(t *testing.T, a, b float64) {
		if math.IsNaN(a) || math.IsNaN(b) || math.IsInf(a, 0) || math.IsInf(b, 0) {
			return // JSON has no NaN; infinities come only from huge literals
		}
		ka := mustKey(t, TypeFloat, strconv.FormatFloat(a, 'g', -1, 64))
		kb := mustKey(t, TypeFloat, strconv.FormatFloat(b, 'g', -1, 64))
		if got, want := bytes.Compare(ka, kb), cmpOrdered(a, b); got != want {
			t.Errorf("compare(key(%g), key(%g)) = %d; want %d", a, b, got, want)
		}
	})
}

// FuzzStringKeys checks that string keys order like the strings' code
// points, and that truncation keeps the order weakly.
func FuzzStringKeys(f *testing.F) {
	f.Add("a", "b")
	f.Add("", "\x00")
	f.Add("é", "z")
	f.Fuzz(func(t *testing.T, a, b string) {
		if !utf8.ValidString(a) || !utf8.ValidString(b) {
			return
		}
		ra, _ := json.Marshal(a)
		rb, _ := json.Marshal(b)
		ka, kb := mustKey(t, TypeString, string(ra)), mustKey(t, TypeString, string(rb))
		if got, want := bytes.Compare(ka, kb), strings.Compare(a, b); got != want {
			t.Errorf("compare(key(%q), key(%q)) = %d; want %d", a, b, got, want)
		}
		ca, _ := truncKey(ka)
		cb, _ := truncKey(kb)
		if strings.Compare(a, b) <= 0 && bytes.Compare(ca, cb) > 0 {
			t.Errorf("truncation reversed %q <= %q", a, b)
		}
	})
}

// FuzzTimeKeys checks that time keys order like the instants.
func FuzzTimeKeys(f *testing.F) {
	f.Add(int64(0), int64(0), int64(1), int64(5))
	f.Add(int64(-1), int64(999999999), int64(0), int64(0))
	f.Fuzz(func(t *testing.T, s1, n1, s2, n2 int64) {
		const span = 250000 * 365 * 24 * 3600 // RFC 3339 years are 0000..9999
		s1, s2 = s1%span/1000, s2%span/1000
		n1, n2 = abs(n1)%1e9, abs(n2)%1e9
		a, b := time.Unix(s1, n1).UTC(), time.Unix(s2, n2).UTC()
		if a.Year() < 0 || a.Year() > 9999 || b.Year() < 0 || b.Year() > 9999 {
			return
		}
		ka := mustKey(t, TypeTime, strconv.Quote(a.Format(time.RFC3339Nano)))
		kb := mustKey(t, TypeTime, strconv.Quote(b.Format(time.RFC3339Nano)))
		if got, want := bytes.Compare(ka, kb), a.Compare(b); got != want {
			t.Errorf("compare(key(%s), key(%s)) = %d; want %d", a, b, got, want)
		}
	})
}

func abs(n int64) int64 {
	if n < 0 {
		return -n
	}
	return n
}

func cmpOrdered[T int64 | float64](a, b T) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}
