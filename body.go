package cellar

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"sort"
	"strings"
	"unicode/utf8"
)

// DefaultMaxBodyBytes is the default limit on a cell body.
const DefaultMaxBodyBytes = 1 << 20

// MaxBodyDepth bounds how deeply a body's objects and arrays may nest.
const MaxBodyDepth = 1000

// CheckBody validates a cell body and returns it compacted: insignificant
// whitespace removed, everything else (key order, number literals, string
// escapes) exactly as written. It returns ETOOLARGE if raw is longer than
// maxBytes and EINVALID unless raw is a single JSON object with no duplicate
// keys at any level, in valid UTF-8, nested at most MaxBodyDepth deep.
func CheckBody(raw []byte, maxBytes int) ([]byte, error) {
	if len(raw) > maxBytes {
		return nil, Errorf(ETOOLARGE, "body is %d bytes; the limit is %d", len(raw), maxBytes)
	}
	if !utf8.Valid(raw) {
		return nil, Errorf(EINVALID, "body is not valid UTF-8")
	}
	if err := walkBody(raw, nil); err != nil {
		return nil, err
	}
	var buf bytes.Buffer
	buf.Grow(len(raw))
	if err := json.Compact(&buf, raw); err != nil {
		return nil, Errorf(EINVALID, "body is not valid JSON: %v", err)
	}
	return buf.Bytes(), nil
}

// CanonicalBody returns the canonical form of a valid body: object keys
// sorted, no whitespace, strings re-encoded in one standard way, number
// literals exactly as written. Two bodies are equal when their canonical
// forms are equal; "1" and "1.0" are different bodies.
func CanonicalBody(raw []byte) ([]byte, error) {
	var out bytes.Buffer
	if err := walkBody(raw, &out); err != nil {
		return nil, err
	}
	return out.Bytes(), nil
}

// EqualBodies reports whether a and b are the same JSON value after
// canonicalization.
func EqualBodies(a, b []byte) (bool, error) {
	ca, err := CanonicalBody(a)
	if err != nil {
		return false, err
	}
	cb, err := CanonicalBody(b)
	if err != nil {
		return false, err
	}
	return bytes.Equal(ca, cb), nil
}

// walkBody parses raw as one JSON object, rejecting duplicate keys, and
// writes its canonical form to out if out is not nil. encoding/json has no
// duplicate-key check and no literal-preserving canonical encoder, so this
// walks the token stream itself.
func walkBody(raw []byte, out *bytes.Buffer) error {
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	tok, err := dec.Token()
	if err != nil {
		return invalidJSON(err)
	}
	if d, ok := tok.(json.Delim); !ok || d != '{' {
		return Errorf(EINVALID, "body must be a JSON object, not %s", kindOf(tok))
	}
	if err := walkObject(dec, out, 1); err != nil {
		return err
	}
	if _, err := dec.Token(); err != io.EOF {
		return Errorf(EINVALID, "body has data after the JSON object")
	}
	return nil
}

// walkValue handles one value whose first token is tok.
func walkValue(dec *json.Decoder, tok json.Token, out *bytes.Buffer, depth int) error {
	switch v := tok.(type) {
	case json.Delim:
		if depth >= MaxBodyDepth {
			return Errorf(EINVALID, "body nests deeper than %d levels", MaxBodyDepth)
		}
		if v == '{' {
			return walkObject(dec, out, depth+1)
		}
		return walkArray(dec, out, depth+1)
	case string:
		if out != nil {
			writeString(out, v)
		}
	case json.Number:
		if out != nil {
			out.WriteString(string(v))
		}
	case bool:
		if out != nil {
			if v {
				out.WriteString("true")
			} else {
				out.WriteString("false")
			}
		}
	case nil:
		if out != nil {
			out.WriteString("null")
		}
	}
	return nil
}

func walkObject(dec *json.Decoder, out *bytes.Buffer, depth int) error {
	type member struct {
		key string
		val []byte
	}
	var members []member
	seen := make(map[string]bool)
	for {
		tok, err := dec.Token()
		if err != nil {
			return invalidJSON(err)
		}
		if d, ok := tok.(json.Delim); ok && d == '}' {
			break
		}
		key, ok := tok.(string)
		if !ok {
			return Errorf(EINVALID, "body is not valid JSON: object key is not a string")
		}
		if seen[key] {
			return Errorf(EINVALID, "body has duplicate key %q", truncate(key, 80))
		}
		seen[key] = true
		val, err := dec.Token()
		if err != nil {
			return invalidJSON(err)
		}
		var vb *bytes.Buffer
		if out != nil {
			vb = new(bytes.Buffer)
		}
		if err := walkValue(dec, val, vb, depth); err != nil {
			return err
		}
		if out != nil {
			members = append(members, member{key, vb.Bytes()})
		}
	}
	if out == nil {
		return nil
	}
	sort.Slice(members, func(i, j int) bool { return members[i].key < members[j].key })
	out.WriteByte('{')
	for i, m := range members {
		if i > 0 {
			out.WriteByte(',')
		}
		writeString(out, m.key)
		out.WriteByte(':')
		out.Write(m.val)
	}
	out.WriteByte('}')
	return nil
}

func walkArray(dec *json.Decoder, out *bytes.Buffer, depth int) error {
	if out != nil {
		out.WriteByte('[')
	}
	for i := 0; ; i++ {
		tok, err := dec.Token()
		if err != nil {
			return invalidJSON(err)
		}
		if d, ok := tok.(json.Delim); ok && d == ']' {
			break
		}
		if out != nil && i > 0 {
			out.WriteByte(',')
		}
		if err := walkValue(dec, tok, out, depth); err != nil {
			return err
		}
	}
	if out != nil {
		out.WriteByte(']')
	}
	return nil
}

// writeString writes s as a JSON string without HTML escaping.
func writeString(out *bytes.Buffer, s string) {
	enc := json.NewEncoder(out)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(s)           // cannot fail for a string
	out.Truncate(out.Len() - 1) // Encode appends a newline
}

func invalidJSON(err error) error {
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return Errorf(EINVALID, "body is not valid JSON: unexpected end of input")
	}
	msg := err.Error()
	msg = strings.TrimPrefix(msg, "json: ")
	return Errorf(EINVALID, "body is not valid JSON: %s", msg)
}

func kindOf(tok json.Token) string {
	switch v := tok.(type) {
	case json.Delim:
		if v == '[' {
			return "an array"
		}
		return "a delimiter"
	case string:
		return "a string"
	case json.Number:
		return "a number"
	case bool:
		return "a boolean"
	case nil:
		return "null"
	}
	return "something else"
}
