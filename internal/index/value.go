package index

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"math"
	"math/big"
	"regexp"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/cellar-db/cellar"
)

// Field types.
const (
	TypeString = "string"
	TypeInt    = "int"
	TypeFloat  = "float"
	TypeBool   = "bool"
	TypeTime   = "time"
)

// Field is one typed field of an index, taken from the cell body. Name is
// a path: member names joined by dots ("address.city") step into nested
// objects.
type Field struct {
	Name string `json:"name"`
	Type string `json:"type"`
}

var segmentRE = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]{0,63}$`)

func (f Field) validate() error {
	if len(f.Name) > 255 {
		return cellar.Errorf(cellar.EINVALID, "field name is %d bytes; the limit is 255", len(f.Name))
	}
	for _, seg := range strings.Split(f.Name, ".") {
		if !segmentRE.MatchString(seg) {
			return cellar.Errorf(cellar.EINVALID, "field name %q must be member names matching ^[A-Za-z_][A-Za-z0-9_]{0,63}$ joined by dots", trunc(f.Name, 80))
		}
	}
	switch f.Type {
	case TypeString, TypeInt, TypeFloat, TypeBool, TypeTime:
		return nil
	}
	return cellar.Errorf(cellar.EINVALID, "field %s has type %q; want string, int, float, bool or time", f.Name, trunc(f.Type, 40))
}

// The encoding of field values into entry keys: bytewise order of the keys
// is the order of the values, on every storage engine (they compare keys
// as unsigned bytes). A missing value, a JSON null and a value of the wrong
// type all encode as nullKey, which sorts before every value; a value
// encodes as 0x01 followed by:
//
//	string  its UTF-8 bytes (bytewise order is code point order)
//	int     the int64 big-endian with the sign bit flipped
//	float   the IEEE 754 bits, all flipped for negatives and the sign bit
//	        flipped otherwise (-0 is 0)
//	bool    0x00 for false, 0x01 for true
//	time    seconds since the Unix epoch as an int (above), then the
//	        nanoseconds as 4 bytes big-endian
//
// A key longer than cellar.MaxIndexKeyBytes is stored truncated (only long
// strings can be): see trunc.
var nullKey = []byte{0x00}

const present = 0x01

// encodeValue returns the key of a JSON value (nil for a missing one) of
// type t. ok is false when the value is not of type t.
func encodeValue(t string, raw json.RawMessage) (key []byte, ok bool) {
	if raw == nil || string(raw) == "null" {
		return nullKey, true
	}
	switch t {
	case TypeString:
		if raw[0] != '"' {
			return nil, false
		}
		var s string
		if json.Unmarshal(raw, &s) != nil {
			return nil, false
		}
		return append([]byte{present}, s...), true
	case TypeInt:
		n, ok := parseInt(raw)
		if !ok {
			return nil, false
		}
		return appendInt([]byte{present}, n), true
	case TypeFloat:
		f, ok := parseFloat(raw)
		if !ok {
			return nil, false
		}
		if f == 0 {
			f = 0 // -0 orders with 0
		}
		bits := math.Float64bits(f)
		if bits>>63 == 1 {
			bits = ^bits
		} else {
			bits |= 1 << 63
		}
		return binary.BigEndian.AppendUint64([]byte{present}, bits), true
	case TypeBool:
		switch string(raw) {
		case "true":
			return []byte{present, 1}, true
		case "false":
			return []byte{present, 0}, true
		}
		return nil, false
	case TypeTime:
		if raw[0] != '"' {
			return nil, false
		}
		var s string
		if json.Unmarshal(raw, &s) != nil {
			return nil, false
		}
		if !rfc3339.MatchString(s) {
			return nil, false
		}
		tm, err := time.Parse(time.RFC3339Nano, upperTZ(s))
		if err != nil {
			return nil, false
		}
		key := appendInt([]byte{present}, tm.Unix())
		return binary.BigEndian.AppendUint32(key, uint32(tm.Nanosecond())), true
	}
	return nil, false
}

// rfc3339 is RFC 3339's date-time (5.6) as it is written: a "." before the
// fraction, and an offset's hour of 00 to 23. time.Parse takes a "," and
// an hour of 24 too. (The ranges of the other fields time.Parse checks.)
var rfc3339 = regexp.MustCompile(`^\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]([01]\d|2[0-3]):[0-5]\d)$`)

// upperTZ returns s with ASCII 't' and 'z' in upper case: RFC 3339 (5.6)
// allows them in lower case, which time.Parse does not take. They are the
// only letters of a timestamp, so nothing else changes meaning.
func upperTZ(s string) string {
	if !strings.ContainsAny(s, "tz") {
		return s
	}
	b := []byte(s)
	for i, c := range b {
		switch c {
		case 't':
			b[i] = 'T'
		case 'z':
			b[i] = 'Z'
		}
	}
	return string(b)
}

func appendInt(b []byte, n int64) []byte {
	return binary.BigEndian.AppendUint64(b, uint64(n)^(1<<63))
}

// parseInt reads a JSON number that is an integer in int64's range,
// however it is written (3, 3.0, 3e0). Literals with a fraction or an
// exponent are read exactly (float64 would round 9007199254740993.0 to
// ...992, and 1.0000000000000000001 to 1).
func parseInt(raw json.RawMessage) (int64, bool) {
	if !isNumber(raw) {
		return 0, false
	}
	s := string(raw)
	if n, err := strconv.ParseInt(s, 10, 64); err == nil {
		return n, true
	}
	if mant, exp, ok := strings.Cut(strings.ToLower(s), "e"); ok && !smallExponent(exp, len(s)) {
		// big.Rat would spend time and memory on 10^exp; the value is
		// then either 0 or not an integer in range.
		return 0, strings.Trim(mant, "-0.") == ""
	}
	var r big.Rat
	if _, ok := r.SetString(s); !ok || !r.IsInt() || !r.Num().IsInt64() {
		return 0, false
	}
	return r.Num().Int64(), true
}

// smallExponent reports whether the exponent exp of a number literal n
// bytes long could make it a non-zero integer in int64's range. Its
// digits, read as an integer m with f of them after the point (f < n), give
// m × 10^(exp-f): exp >= n+19 makes a non-zero one at least 10^19, and
// exp < -n makes it less than 1 in magnitude.
func smallExponent(exp string, n int) bool {
	e, err := strconv.Atoi(exp)
	return err == nil && e >= -n && e < n+19
}

// parseFloat reads a JSON number; literals beyond float64's range are
// infinities (they order right).
func parseFloat(raw json.RawMessage) (float64, bool) {
	if !isNumber(raw) {
		return 0, false
	}
	f, err := strconv.ParseFloat(string(raw), 64)
	var ne *strconv.NumError
	if err != nil && !(errors.As(err, &ne) && ne.Err == strconv.ErrRange) {
		return 0, false
	}
	return f, true
}

func isNumber(raw json.RawMessage) bool {
	return len(raw) > 0 && (raw[0] == '-' || (raw[0] >= '0' && raw[0] <= '9')) && json.Valid(raw)
}

// trunc returns key cut to the longest a node stores, and whether it was
// cut. Truncation keeps order weakly (a <= b implies trunc(a) <=
// trunc(b)), so a query widens strict bounds on cut keys and re-checks
// every candidate against its cell.
func truncKey(key []byte) ([]byte, bool) {
	if len(key) <= cellar.MaxIndexKeyBytes {
		return key, false
	}
	cut := key[:cellar.MaxIndexKeyBytes]
	return cut, true
}

// values are the fields of one cell body, as written, by field position;
// nil for a missing field.
type values [cellar.MaxIndexFields]json.RawMessage

// extract reads the fields of body. A body that is not a JSON object (the
// store never holds one) has no fields.
func extract(body json.RawMessage, fields []Field) values {
	var out values
	var top map[string]json.RawMessage
	if json.Unmarshal(body, &top) != nil {
		return out
	}
	for i, f := range fields {
		obj := top
		segs := strings.Split(f.Name, ".")
		for j, seg := range segs {
			v, ok := obj[seg]
			if !ok {
				break
			}
			if j == len(segs)-1 {
				out[i] = v
				break
			}
			obj = nil
			if len(v) == 0 || v[0] != '{' || json.Unmarshal(v, &obj) != nil {
				break
			}
		}
	}
	return out
}

// keys are the full (untruncated) keys of a cell's fields.
type keys [cellar.MaxIndexFields][]byte

// keysOf encodes vals; a value of the wrong type is a null.
func keysOf(vals values, fields []Field) keys {
	var ks keys
	for i, f := range fields {
		k, ok := encodeValue(f.Type, vals[i])
		if !ok {
			k = nullKey
		}
		ks[i] = k
	}
	return ks
}

// locOf returns where the entry of a row with keys ks lives, or false if
// the row has no entry: rows whose first field is null, missing or of the
// wrong type are not indexed (they could never be queried, as a query
// names the first field's value).
func locOf(ks keys, fields []Field, shardCount int) (cellar.IndexLoc, bool) {
	var loc cellar.IndexLoc
	if bytes.Equal(ks[0], nullKey) {
		return loc, false
	}
	for i := range fields {
		loc.Keys[i], _ = truncKey(ks[i])
	}
	loc.Shard = cellar.ShardOf(string(loc.Keys[0]), shardCount)
	return loc, true
}

func sameLoc(a, b cellar.IndexLoc) bool {
	if a.Shard != b.Shard {
		return false
	}
	for i := range a.Keys {
		if !bytes.Equal(a.Keys[i], b.Keys[i]) {
			return false
		}
	}
	return true
}

// typeWord names what a field type accepts, for error messages.
func typeWord(t string) string {
	switch t {
	case TypeString:
		return "a string"
	case TypeInt:
		return "an integer in int64's range"
	case TypeFloat:
		return "a number"
	case TypeBool:
		return "true or false"
	case TypeTime:
		return "an RFC 3339 time string"
	}
	return t
}

func trunc(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n] + "..."
}

// describe renders a raw JSON value for an error message.
func describe(raw json.RawMessage) string {
	return trunc(string(raw), 60)
}
