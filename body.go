package cellar

import (
	"bytes"
	"errors"
	"io"
	"strings"
	"sync"
	"unicode/utf8"

	"github.com/go-json-experiment/json/jsontext"
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
	if err := checkBody(raw); err != nil {
		return nil, err
	}
	out := jsontext.Value(bytes.Clone(raw))
	if err := out.Compact(); err != nil {
		return nil, invalidJSON(err) // checkBody accepted it, so this cannot happen
	}
	return out, nil
}

// CanonicalBody returns the canonical form of a valid body: object keys
// sorted, no whitespace, strings re-encoded in their shortest form, number
// literals exactly as written. Two bodies are equal when their canonical
// forms are equal; "1" and "1.0" are different bodies.
func CanonicalBody(raw []byte) ([]byte, error) {
	if err := checkBody(raw); err != nil {
		return nil, err
	}
	out := jsontext.Value(bytes.Clone(raw))
	if err := out.Format(canonicalOptions...); err != nil {
		return nil, invalidJSON(err)
	}
	return out, nil
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

// bodyOptions are the jsontext options bodies are read with. The raw
// bytes must be valid UTF-8 (checkBody checks), but an escaped lone
// surrogate ("\ud800") is accepted, as encoding/json accepts it, reading
// it as U+FFFD. Duplicate names are refused (jsontext's default).
var bodyOptions = []jsontext.Options{jsontext.AllowInvalidUTF8(true)}

// canonicalOptions format a body canonically: as read, members sorted.
var canonicalOptions = append(bodyOptions[:len(bodyOptions):len(bodyOptions)], jsontext.ReorderRawObjects(true))

// decoders keeps Decoders (and their buffers) for reuse; noInput is what
// one holds while pooled, so that it keeps no body alive.
var (
	decoders = sync.Pool{New: func() any { return new(jsontext.Decoder) }}
	noInput  = new(bytes.Buffer)
)

// checkBody reports whether raw is one JSON object with no duplicate key at
// any level, in valid UTF-8, nested at most MaxBodyDepth deep. It reads
// the tokens with jsontext (the tokenizer of the coming encoding/json/v2),
// which finds duplicate names itself; encoding/json has no such check.
func checkBody(raw []byte) error {
	if !utf8.Valid(raw) {
		return Errorf(EINVALID, "body is not valid UTF-8")
	}
	dec := decoders.Get().(*jsontext.Decoder)
	dec.Reset(bytes.NewBuffer(raw), bodyOptions...)
	defer func() {
		dec.Reset(noInput)
		decoders.Put(dec)
	}()
	tok, err := dec.ReadToken()
	if err != nil {
		return invalidJSON(err)
	}
	if k := tok.Kind(); k != '{' {
		return Errorf(EINVALID, "body must be a JSON object, not %s", kindOf(k))
	}
	for dec.StackDepth() > 0 {
		tok, err := dec.ReadToken()
		if err != nil {
			return invalidJSON(err)
		}
		if k := tok.Kind(); (k == '{' || k == '[') && dec.StackDepth() > MaxBodyDepth {
			return Errorf(EINVALID, "body nests deeper than %d levels", MaxBodyDepth)
		}
	}
	if _, err := dec.ReadToken(); err != io.EOF {
		return Errorf(EINVALID, "body has data after the JSON object")
	}
	return nil
}

func invalidJSON(err error) error {
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return Errorf(EINVALID, "body is not valid JSON: unexpected end of input")
	}
	var se *jsontext.SyntacticError
	if errors.As(err, &se) && se.Err == jsontext.ErrDuplicateName {
		return Errorf(EINVALID, "body has duplicate key %q", truncate(se.JSONPointer.LastToken(), 80))
	}
	msg := strings.TrimPrefix(err.Error(), "jsontext: ")
	return Errorf(EINVALID, "body is not valid JSON: %s", msg)
}

func kindOf(k jsontext.Kind) string {
	switch k {
	case '[':
		return "an array"
	case '"':
		return "a string"
	case '0':
		return "a number"
	case 't', 'f':
		return "a boolean"
	case 'n':
		return "null"
	}
	return "something else"
}
