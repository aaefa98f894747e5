package http

import (
	"bytes"
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
	s.writeJSON(w, r, http.StatusOK, counterValue{key, v})
	return nil
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
	s.writeJSON(w, r, http.StatusOK, counterValue{key, v})
	return nil
}

// handleCounterBatchGet serves POST /v1/counters:batchGet with
// {"keys": ["...", ...]}. Each key's result is its value or its error.
func (s *server) handleCounterBatchGet(w http.ResponseWriter, r *http.Request) error {
	logged := map[string]bool{}
	raw, err := readRequest(w, r, s.opts.MaxRequestBytes)
	if err != nil {
		return err
	}
	keys, err := decodeCounterBatchGet(raw)
	if err != nil {
		return err
	}
	type result struct {
		Key   string     `json:"key"`
		Value *int64     `json:"value,omitempty"`
		Error *errorBody `json:"error,omitempty"`
	}
	results := make([]result, len(keys))
	if len(keys) > 0 {
		res := s.opts.Counters.BatchCounters(r.Context(), keys)
		if len(res) != len(keys) {
			return cellar.Internal(fmt.Errorf("%d results for %d keys", len(res), len(keys)), "batch get counters")
		}
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
	}
	s.writeJSON(w, r, http.StatusOK, struct {
		Results []result `json:"results"`
	}{results})
	return nil
}

// decodeCounterIncr parses {"by": N}: an integer literal (no fraction, no
// exponent) in the range of int64; by is 1 if absent, and so is an empty
// body.
func decodeCounterIncr(raw []byte) (int64, error) {
	if len(bytes.TrimSpace(raw)) == 0 {
		return 1, nil
	}
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
