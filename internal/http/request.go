package http

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/go-json-experiment/json/jsontext"

	"github.com/cellar-db/cellar"
)

// readRequest reads the body of a request that takes no query parameters,
// up to limit bytes.
func readRequest(w http.ResponseWriter, r *http.Request, limit int) ([]byte, error) {
	if _, err := query(r); err != nil {
		return nil, err
	}
	return readBody(w, r, limit)
}

// readBody reads the whole request body, up to limit bytes. Returns
// ETOOLARGE past the limit.
func readBody(w http.ResponseWriter, r *http.Request, limit int) ([]byte, error) {
	raw, err := io.ReadAll(http.MaxBytesReader(w, r.Body, int64(limit)))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return nil, cellar.Errorf(cellar.ETOOLARGE, "request body exceeds %d bytes", mbe.Limit)
		}
		if errors.Is(err, os.ErrDeadlineExceeded) {
			return nil, cellar.Errorf(cellar.EINVALID, "request body was not received before the request deadline")
		}
		return nil, cellar.Errorf(cellar.EINVALID, "read request body: %v", err)
	}
	return raw, nil
}

// parseUint parses s as decimal digits only (no sign, no spaces, no
// exponent) into lo..hi (lo >= 0). what names the value in the error.
func parseUint(what, s string, lo, hi int64) (int64, error) {
	if s == "" {
		return 0, cellar.Errorf(cellar.EINVALID, "%s is empty", what)
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return 0, cellar.Errorf(cellar.EINVALID, "%s %q must be decimal digits only", what, truncate(s, 40))
		}
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n < lo || n > hi {
		return 0, cellar.Errorf(cellar.EINVALID, "%s %s is out of range %d..%d", what, truncate(s, 40), lo, hi)
	}
	return n, nil
}

// pathKey returns the key named by the path wildcards row_key, column and
// ref_key (when withRef is set), validated.
func pathKey(r *http.Request, withRef bool) (cellar.Key, error) {
	k := cellar.Key{RowKey: pathSegment(r, "row_key"), Column: pathSegment(r, "column")}
	if err := cellar.ValidateRowKey(k.RowKey); err != nil {
		return k, err
	}
	if err := cellar.ValidateColumn(k.Column); err != nil {
		return k, err
	}
	if withRef {
		ref, err := parseUint("ref_key", pathSegment(r, "ref_key"), 0, cellar.MaxRefKey)
		if err != nil {
			return k, err
		}
		k.RefKey = ref
	}
	return k, nil
}

// query parses the query string, refusing malformed ones, parameters not in
// allowed (to catch typos such as ?limt=) and parameters given twice. The
// map is nil, to be read only, for a request without a query string: most
// requests, which need not pay for parsing nothing into two maps.
func query(r *http.Request, allowed ...string) (map[string]string, error) {
	if r.URL.RawQuery == "" {
		return nil, nil
	}
	vals, err := url.ParseQuery(r.URL.RawQuery)
	if err != nil {
		return nil, cellar.Errorf(cellar.EINVALID, "malformed query string: %v", err)
	}
	q := make(map[string]string, len(vals))
	for name, vs := range vals {
		ok := false
		for _, a := range allowed {
			ok = ok || a == name
		}
		if !ok {
			if len(allowed) == 0 {
				return nil, cellar.Errorf(cellar.EINVALID, "unknown query parameter %q: this route takes none", truncate(name, 40))
			}
			return nil, cellar.Errorf(cellar.EINVALID, "unknown query parameter %q: this route takes %s", truncate(name, 40), strings.Join(allowed, ", "))
		}
		if len(vs) > 1 {
			return nil, cellar.Errorf(cellar.EINVALID, "query parameter %q is given more than once", name)
		}
		q[name] = vs[0]
	}
	return q, nil
}

// docDecoder reads a batch request document token by token. encoding/json
// would let through what the API refuses: member names in another case,
// duplicate members (of which it keeps the last) and, from strings, invalid
// UTF-8.
type docDecoder struct {
	dec   *json.Decoder
	depth int // objects and arrays open around the next value
}

// maxDocDepth is how deep a request document may nest, as encoding/json
// bounds one value; raw holds the document to it, since each Decode counts
// only the value it reads.
const maxDocDepth = 10000

// newDocDecoder checks that raw is valid UTF-8 and returns a decoder over it.
func newDocDecoder(raw []byte) (*docDecoder, error) {
	if !utf8.Valid(raw) {
		return nil, cellar.Errorf(cellar.EINVALID, "request body is not valid UTF-8")
	}
	return &docDecoder{dec: json.NewDecoder(bytes.NewReader(raw))}, nil
}

func (d *docDecoder) syntaxError(err error) error {
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return cellar.Errorf(cellar.EINVALID, "request body is not valid JSON: unexpected end of input")
	}
	return cellar.Errorf(cellar.EINVALID, "request body is not valid JSON: %s", strings.TrimPrefix(err.Error(), "json: "))
}

// object reads a JSON object at path, calling member for each member name;
// member must read the value. Unknown names are member's to refuse.
func (d *docDecoder) object(path string, member func(name string) error) error {
	tok, err := d.dec.Token()
	if err != nil {
		return d.syntaxError(err)
	}
	if tok != json.Delim('{') {
		return cellar.Errorf(cellar.EINVALID, "%s must be a JSON object", path)
	}
	d.depth++
	defer func() { d.depth-- }()
	seen := make(map[string]bool)
	for d.dec.More() {
		tok, err := d.dec.Token()
		if err != nil {
			return d.syntaxError(err)
		}
		name, ok := tok.(string)
		if !ok {
			return cellar.Errorf(cellar.EINVALID, "request body is not valid JSON: object key is not a string")
		}
		if seen[name] {
			return cellar.Errorf(cellar.EINVALID, "%s has member %q twice", path, truncate(name, 40))
		}
		seen[name] = true
		if err := member(name); err != nil {
			return err
		}
	}
	if _, err := d.dec.Token(); err != nil { // '}'
		return d.syntaxError(err)
	}
	return nil
}

// array reads a JSON array at path, calling elem for each element; elem must
// read it. At most max elements are allowed.
func (d *docDecoder) array(path string, max int, elem func(i int) error) error {
	tok, err := d.dec.Token()
	if err != nil {
		return d.syntaxError(err)
	}
	if tok != json.Delim('[') {
		return cellar.Errorf(cellar.EINVALID, "%s must be a JSON array", path)
	}
	d.depth++
	defer func() { d.depth-- }()
	for i := 0; d.dec.More(); i++ {
		if i == max {
			return cellar.Errorf(cellar.EINVALID, "%s has more than %d elements", path, max)
		}
		if err := elem(i); err != nil {
			return err
		}
	}
	if _, err := d.dec.Token(); err != nil { // ']'
		return d.syntaxError(err)
	}
	return nil
}

// raw reads the next value as it is written. A value that takes the
// document past maxDocDepth refuses the whole request.
func (d *docDecoder) raw() (json.RawMessage, error) {
	var v json.RawMessage
	if err := d.dec.Decode(&v); err != nil {
		return nil, d.syntaxError(err)
	}
	if room := maxDocDepth - d.depth; len(v) > room && nestsDeeper(v, room) {
		return nil, cellar.Errorf(cellar.EINVALID, "request document nests deeper than %d levels", maxDocDepth)
	}
	return v, nil
}

// nestsDeeper reports whether v, a valid JSON value, nests objects and
// arrays more than max deep. (A hand-written scan: a second tokenizer pass
// would cost far more, and only brackets outside strings matter.)
func nestsDeeper(v []byte, max int) bool {
	depth, inString := 0, false
	for i := 0; i < len(v); i++ {
		switch c := v[i]; {
		case inString:
			if c == '\\' {
				i++
			} else if c == '"' {
				inString = false
			}
		case c == '"':
			inString = true
		case c == '{' || c == '[':
			if depth++; depth > max {
				return true
			}
		case c == '}' || c == ']':
			depth--
		}
	}
	return false
}

// string reads a JSON string at path; null is refused.
func (d *docDecoder) string(path string) (string, error) {
	v, err := d.raw()
	if err != nil {
		return "", err
	}
	if v[0] != '"' {
		return "", cellar.Errorf(cellar.EINVALID, "%s must be a string", path)
	}
	// encoding/json would turn the escape of an unpaired surrogate into
	// U+FFFD, and so name another key than the one sent; jsontext refuses
	// it, as newDocDecoder refuses invalid UTF-8.
	s, err := jsontext.AppendUnquote(nil, v)
	if err != nil {
		return "", cellar.Errorf(cellar.EINVALID, "%s is not valid UTF-8: it has an unpaired surrogate escape", path)
	}
	return string(s), nil
}

// refKey reads a ref_key at path: an integer literal (no fraction, no
// exponent), or null, for which it returns nil. Negative values are
// returned for the store to refuse, item by item.
func (d *docDecoder) refKey(path string) (*int64, error) {
	v, err := d.raw()
	if err != nil {
		return nil, err
	}
	if string(v) == "null" {
		return nil, nil
	}
	var n int64
	if json.Unmarshal(v, &n) != nil {
		return nil, cellar.Errorf(cellar.EINVALID, "%s must be an integer in 0..%d", path, int64(cellar.MaxRefKey))
	}
	return &n, nil
}

// end checks that nothing follows the document.
func (d *docDecoder) end() error {
	if _, err := d.dec.Token(); err != io.EOF {
		return cellar.Errorf(cellar.EINVALID, "request body has data after the JSON document")
	}
	return nil
}

func unknownMember(path, name string) error {
	return cellar.Errorf(cellar.EINVALID, "%s has unknown member %q", path, truncate(name, 40))
}

func missingMember(path, name string) error {
	return cellar.Errorf(cellar.EINVALID, "%s is missing member %q", path, name)
}

// decodeBatchGet parses {"keys":[{"row_key","column","ref_key"?}, ...]}.
// The keys themselves are the store's to validate, one by one.
func decodeBatchGet(raw []byte) ([]cellar.LookupKey, error) {
	d, err := newDocDecoder(raw)
	if err != nil {
		return nil, err
	}
	var keys []cellar.LookupKey
	var haveKeys bool
	err = d.object("request", func(name string) error {
		if name != "keys" {
			return unknownMember("request", name)
		}
		haveKeys = true
		keys = []cellar.LookupKey{}
		return d.array("keys", cellar.MaxBatchKeys, func(i int) error {
			var k cellar.LookupKey
			path := fmt.Sprintf("keys[%d]", i)
			err := d.object(path, func(name string) error {
				var err error
				switch name {
				case "row_key":
					k.RowKey, err = d.string(path + ".row_key")
				case "column":
					k.Column, err = d.string(path + ".column")
				case "ref_key":
					k.RefKey, err = d.refKey(path + ".ref_key")
				default:
					err = unknownMember(path, name)
				}
				return err
			})
			keys = append(keys, k)
			return err
		})
	})
	if err != nil {
		return nil, err
	}
	if !haveKeys {
		return nil, missingMember("request", "keys")
	}
	if err := d.end(); err != nil {
		return nil, err
	}
	return keys, nil
}

// putItem is one cell of a batchPut request before its checks; err is set
// if the item is refused on its own (the others proceed).
type putItem struct {
	cell cellar.NewCell
	err  error
}

// decodeBatchPut parses {"cells":[{"row_key","column","ref_key","body"}, ...]}
// and checks each body with cellar.CheckBody. A missing member is the
// item's error; a malformed document is the request's.
func decodeBatchPut(raw []byte, maxBody int) ([]putItem, error) {
	d, err := newDocDecoder(raw)
	if err != nil {
		return nil, err
	}
	var items []putItem
	var haveCells bool
	err = d.object("request", func(name string) error {
		if name != "cells" {
			return unknownMember("request", name)
		}
		haveCells = true
		items = []putItem{}
		return d.array("cells", cellar.MaxBatchKeys, func(i int) error {
			var it putItem
			var ref *int64
			var body json.RawMessage
			path := fmt.Sprintf("cells[%d]", i)
			seen := make(map[string]bool)
			err := d.object(path, func(name string) error {
				seen[name] = true
				var err error
				switch name {
				case "row_key":
					it.cell.RowKey, err = d.string(path + ".row_key")
				case "column":
					it.cell.Column, err = d.string(path + ".column")
				case "ref_key":
					ref, err = d.refKey(path + ".ref_key")
				case "body":
					body, err = d.raw()
				default:
					err = unknownMember(path, name)
				}
				return err
			})
			if err != nil {
				return err
			}
			for _, m := range []string{"row_key", "column", "ref_key", "body"} {
				if !seen[m] {
					it.err = missingMember(path, m)
					break
				}
			}
			if it.err == nil && ref == nil {
				it.err = cellar.Errorf(cellar.EINVALID, "%s.ref_key must not be null", path)
			}
			if it.err == nil {
				it.cell.RefKey = *ref
				it.cell.Body, it.err = cellar.CheckBody(body, maxBody)
			}
			items = append(items, it)
			return nil
		})
	})
	if err != nil {
		return nil, err
	}
	if !haveCells {
		return nil, missingMember("request", "cells")
	}
	if err := d.end(); err != nil {
		return nil, err
	}
	return items, nil
}
