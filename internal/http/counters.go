package http

import (
	"fmt"
	"math"
	"net/http"
	"strconv"

	"github.com/cellar-db/cellar"
)

// counterRoutes registers the /v1/counters routes.
func (s *server) counterRoutes() {
	s.handle("POST /v1/counters/{key}/incr", ScopeWrite, s.handleCounterIncr)
	s.handle("GET /v1/counters/{key}", ScopeRead, s.handleCounterGet)
	s.handle("POST /v1/counters:batchGet", ScopeRead, s.handleCounterBatchGet)
	s.handle("POST /v1/counters:batchIncr", ScopeWrite, s.handleCounterBatchIncr)
}

// counterValue is the JSON of a counter.
type counterValue struct {
	Key   string `json:"key"`
	Value int64  `json:"value"`
}

// handleCounterIncr serves POST /v1/counters/{key}/incr with {"by": N}
// (by defaults to 1; an empty body is {}).
func (s *server) handleCounterIncr(w http.ResponseWriter, r *http.Request) error {
	key := pathSegment(r, "key")
	if err := cellar.ValidateRowKey(key); err != nil {
		return err
	}
	raw, err := readRequest(w, r, s.opts.MaxBodyBytes)
	if err != nil {
		return err
	}
	by, err := decodeCounterIncr(raw)
	if err != nil {
		return err
	}
	v, err := s.opts.Counters.Incr(r.Context(), key, by)
	if err != nil {
		return err
	}
	s.writeCounter(w, r, counterValue{key, v})
	return nil
}

// writeCounter answers with cv as writeJSON would, without reflection for
// a key of printable ASCII (what counter keys mostly are).
func (s *server) writeCounter(w http.ResponseWriter, r *http.Request, cv counterValue) {
	if !plainASCII(cv.Key) {
		s.writeJSON(w, r, http.StatusOK, cv)
		return
	}
	var buf [64]byte
	b := append(buf[:0], `{"key":"`...)
	b = append(b, cv.Key...)
	b = append(b, `","value":`...)
	b = strconv.AppendInt(b, cv.Value, 10)
	writeBody(w, http.StatusOK, append(b, "}\n"...))
}

// plainASCII reports whether s is printable ASCII without '"' or '\': a
// string encoding/json writes as it is, between quotes.
func plainASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c > 0x7e || c == '"' || c == '\\' {
			return false
		}
	}
	return true
}

// handleCounterGet serves GET /v1/counters/{key}: 0 for a counter never
// incremented.
func (s *server) handleCounterGet(w http.ResponseWriter, r *http.Request) error {
	key := pathSegment(r, "key")
	if err := cellar.ValidateRowKey(key); err != nil {
		return err
	}
	if _, err := query(r); err != nil {
		return err
	}
	v, err := s.opts.Counters.Counter(r.Context(), key)
	if err != nil {
		return err
	}
	s.writeCounter(w, r, counterValue{key, v})
	return nil
}

// handleCounterBatchGet serves POST /v1/counters:batchGet with
// {"keys": ["...", ...]}. Each key's result is its value or its error.
func (s *server) handleCounterBatchGet(w http.ResponseWriter, r *http.Request) error {
	raw, err := readRequest(w, r, s.opts.MaxRequestBytes)
	if err != nil {
		return err
	}
	keys, err := decodeCounterBatchGet(raw)
	if err != nil {
		return err
	}
	var res []cellar.CounterResult
	if len(keys) > 0 {
		res = s.opts.Counters.BatchCounters(r.Context(), keys)
	}
	return s.writeCounterResults(w, r, keys, res, "batch get counters")
}

// handleCounterBatchIncr serves POST /v1/counters:batchIncr with
// {"increments": [{"key", "by"}, ...]}. Each increment's result is the
// counter's value after it, or its error.
func (s *server) handleCounterBatchIncr(w http.ResponseWriter, r *http.Request) error {
	raw, err := readRequest(w, r, s.opts.MaxRequestBytes)
	if err != nil {
		return err
	}
	incrs, err := decodeCounterBatchIncr(raw)
	if err != nil {
		return err
	}
	keys := make([]string, len(incrs))
	for i, in := range incrs {
		keys[i] = in.Key
	}
	var res []cellar.CounterResult
	if len(incrs) > 0 {
		res = s.opts.Counters.BatchIncr(r.Context(), incrs)
	}
	return s.writeCounterResults(w, r, keys, res, "batch increment counters")
}

// writeCounterResults answers {"results": [...]}, one {"key", "value"} or
// {"key", "error"} per key, from res, the store's results for keys.
func (s *server) writeCounterResults(w http.ResponseWriter, r *http.Request, keys []string, res []cellar.CounterResult, what string) error {
	if len(res) != len(keys) {
		return cellar.Internal(fmt.Errorf("%d results for %d keys", len(res), len(keys)), "%s", what)
	}
	type result struct {
		Key   string     `json:"key"`
		Value *int64     `json:"value,omitempty"`
		Error *errorBody `json:"error,omitempty"`
	}
	logged := map[string]bool{}
	results := make([]result, len(keys))
	for i, cr := range res {
		results[i].Key = keys[i]
		if cr.Err != nil {
			e := s.itemError(r, cr.Err, logged)
			results[i].Error = &e
			continue
		}
		v := cr.Value
		results[i].Value = &v
	}
	s.writeJSON(w, r, http.StatusOK, struct {
		Results []result `json:"results"`
	}{results})
	return nil
}

// decodeCounterIncr parses {"by": N}: an integer literal (no fraction, no
// exponent) in the range of int64; by is 1 if absent, and so is an empty
// body (no bytes at all, as for the other routes that take one: white
// space alone is not a JSON document).
func decodeCounterIncr(raw []byte) (int64, error) {
	if len(raw) == 0 {
		return 1, nil
	}
	// The request as clients send it, {"by":N}, is read without the
	// decoder; anything else, and any N out of range, goes the long way.
	if n, ok := canonicalIncr(raw); ok {
		return n, nil
	}
	return decodeCounterIncrDoc(raw)
}

// decodeCounterIncrDoc is decodeCounterIncr for a body that is not empty,
// through the document decoder.
func decodeCounterIncrDoc(raw []byte) (int64, error) {
	d, err := newDocDecoder(raw)
	if err != nil {
		return 0, err
	}
	by := int64(1)
	err = d.object("request", func(name string) error {
		if name != "by" {
			return unknownMember("request", name)
		}
		v, err := d.raw()
		if err != nil {
			return err
		}
		n, perr := strconv.ParseInt(string(v), 10, 64)
		if perr != nil {
			return cellar.Errorf(cellar.EINVALID, "by must be an integer in %d..%d, not %s", int64(math.MinInt64), int64(math.MaxInt64), truncate(string(v), 40))
		}
		by = n
		return nil
	})
	if err != nil {
		return 0, err
	}
	if err := d.end(); err != nil {
		return 0, err
	}
	return by, nil
}

// canonicalIncr reads raw if it is exactly {"by":N}, N an integer literal
// without a fraction or exponent, in range: what decodeCounterIncr would
// return for it too.
func canonicalIncr(raw []byte) (int64, bool) {
	const prefix = `{"by":`
	if len(raw) < len(prefix)+2 || string(raw[:len(prefix)]) != prefix || raw[len(raw)-1] != '}' {
		return 0, false
	}
	num := raw[len(prefix) : len(raw)-1]
	digits := num
	if digits[0] == '-' {
		digits = digits[1:]
	}
	if len(digits) == 0 || (digits[0] == '0' && len(digits) > 1) {
		return 0, false
	}
	for _, c := range digits {
		if c < '0' || c > '9' {
			return 0, false
		}
	}
	n, err := strconv.ParseInt(string(num), 10, 64)
	if err != nil {
		return 0, false
	}
	return n, true
}

// decodeCounterBatchGet parses {"keys": ["...", ...]}. The keys
// themselves are the store's to validate, one by one.
func decodeCounterBatchGet(raw []byte) ([]string, error) {
	d, err := newDocDecoder(raw)
	if err != nil {
		return nil, err
	}
	var keys []string
	var haveKeys bool
	err = d.object("request", func(name string) error {
		if name != "keys" {
			return unknownMember("request", name)
		}
		haveKeys = true
		keys = []string{}
		return d.array("keys", cellar.MaxBatchKeys, func(i int) error {
			k, err := d.string(fmt.Sprintf("keys[%d]", i))
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

// decodeCounterBatchIncr parses {"increments": [{"key": "...", "by": N},
// ...]}: by as in decodeCounterIncr (an integer literal in the range of
// int64, 1 if absent). The keys are the store's to validate, one by one.
func decodeCounterBatchIncr(raw []byte) ([]cellar.CounterIncrement, error) {
	d, err := newDocDecoder(raw)
	if err != nil {
		return nil, err
	}
	var incrs []cellar.CounterIncrement
	err = d.objectWith("request", []string{"increments"}, func(name string) error {
		if name != "increments" {
			return unknownMember("request", name)
		}
		incrs = []cellar.CounterIncrement{}
		return d.array("increments", cellar.MaxBatchKeys, func(i int) error {
			path := fmt.Sprintf("increments[%d]", i)
			in := cellar.CounterIncrement{By: 1}
			err := d.objectWith(path, []string{"key"}, func(name string) error {
				var err error
				switch name {
				case "key":
					in.Key, err = d.string(path + ".key")
				case "by":
					in.By, err = d.int(path+".by", math.MinInt64, math.MaxInt64)
				default:
					err = unknownMember(path, name)
				}
				return err
			})
			incrs = append(incrs, in)
			return err
		})
	})
	if err != nil {
		return nil, err
	}
	if err := d.end(); err != nil {
		return nil, err
	}
	return incrs, nil
}
