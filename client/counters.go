package client

import (
	"context"
	"net/http"
	"unicode/utf8"

	"github.com/cellar-db/cellar"
)

var _ cellar.CounterStore = (*Client)(nil)

// counterValue is a counter as the API returns it.
type counterValue struct {
	Key   string `json:"key"`
	Value int64  `json:"value"`
}

// counterPath returns /v1/counters/{key}.
func counterPath(key string) (string, error) {
	seg, err := segment("counter key", key)
	if err != nil {
		return "", err
	}
	return "/v1/counters/" + seg, nil
}

// Incr implements cellar.CounterStore. An increment is not idempotent, so
// it is never resent: if the request fails in transit (EUNAVAILABLE), the
// increment may or may not have been applied.
func (c *Client) Incr(ctx context.Context, key string, by int64) (int64, error) {
	path, err := counterPath(key)
	if err != nil {
		return 0, err
	}
	body, err := encode(struct {
		By int64 `json:"by"`
	}{by})
	if err != nil {
		return 0, cellar.Internal(err, "encode counter increment")
	}
	var resp counterValue
	if _, err := c.do(ctx, http.MethodPost, path+"/incr", nil, body, &resp); err != nil {
		return 0, err
	}
	return resp.Value, nil
}

// Counter implements cellar.CounterStore.
func (c *Client) Counter(ctx context.Context, key string) (int64, error) {
	path, err := counterPath(key)
	if err != nil {
		return 0, err
	}
	var resp counterValue
	if _, err := c.do(ctx, http.MethodGet, path, nil, nil, &resp); err != nil {
		return 0, err
	}
	return resp.Value, nil
}

// BatchCounters implements cellar.CounterStore. It sends the keys in
// requests of at most cellar.MaxBatchKeys, the server's limit; if a request
// as a whole fails, each of its keys' results carries its error. A key that is not valid UTF-8
// cannot be written in the JSON request, so its result is an EINVALID
// error and the other keys are still sent; every other check is the
// server's.
func (c *Client) BatchCounters(ctx context.Context, keys []string) []cellar.CounterResult {
	res := make([]cellar.CounterResult, len(keys))
	send := make([]string, 0, len(keys))
	idx := make([]int, 0, len(keys)) // idx[j] is the position in keys of send[j]
	for i, k := range keys {
		res[i].Key = k
		if !utf8.ValidString(k) {
			res[i].Err = cellar.Errorf(cellar.EINVALID, "counter key is not valid UTF-8")
			continue
		}
		send = append(send, k)
		idx = append(idx, i)
	}
	for start := 0; start < len(send); start += cellar.MaxBatchKeys {
		end := min(start+cellar.MaxBatchKeys, len(send))
		c.batchCounters(ctx, send[start:end], idx[start:end], res)
	}
	return res
}

// batchCounters sends one batchGet request for send, at most MaxBatchKeys
// keys, and sets res[idx[j]] to the result of send[j].
func (c *Client) batchCounters(ctx context.Context, send []string, idx []int, res []cellar.CounterResult) {
	fail := func(err error) {
		for _, i := range idx {
			res[i].Err = err
		}
	}
	req, err := encode(struct {
		Keys []string `json:"keys"`
	}{send})
	if err != nil {
		fail(cellar.Internal(err, "encode batch counter request"))
		return
	}
	var resp counterResults
	if _, err := c.do(ctx, http.MethodPost, "/v1/counters:batchGet", nil, req, &resp); err != nil {
		fail(err)
		return
	}
	resp.set(idx, res, fail)
}

// BatchIncr implements cellar.CounterStore. It sends the increments in
// requests of at most cellar.MaxBatchKeys, the server's limit. Like Incr,
// a request is never resent: if one fails in transit (EUNAVAILABLE), each
// of its increments may or may not have been applied, and each result
// carries that error. A key that is not valid UTF-8 cannot be written in
// the JSON request, so its result is an EINVALID error and the other
// increments are still sent.
func (c *Client) BatchIncr(ctx context.Context, incrs []cellar.CounterIncrement) []cellar.CounterResult {
	res := make([]cellar.CounterResult, len(incrs))
	send := make([]cellar.CounterIncrement, 0, len(incrs))
	idx := make([]int, 0, len(incrs)) // idx[j] is the position in incrs of send[j]
	for i, in := range incrs {
		res[i].Key = in.Key
		if !utf8.ValidString(in.Key) {
			res[i].Err = cellar.Errorf(cellar.EINVALID, "counter key is not valid UTF-8")
			continue
		}
		send = append(send, in)
		idx = append(idx, i)
	}
	for start := 0; start < len(send); start += cellar.MaxBatchKeys {
		end := min(start+cellar.MaxBatchKeys, len(send))
		c.batchIncr(ctx, send[start:end], idx[start:end], res)
	}
	return res
}

// batchIncr sends one batchIncr request for send, at most MaxBatchKeys
// increments, and sets res[idx[j]] to the result of send[j].
func (c *Client) batchIncr(ctx context.Context, send []cellar.CounterIncrement, idx []int, res []cellar.CounterResult) {
	fail := func(err error) {
		for _, i := range idx {
			res[i].Err = err
		}
	}
	type increment struct {
		Key string `json:"key"`
		By  int64  `json:"by"`
	}
	items := make([]increment, len(send))
	for j, in := range send {
		items[j] = increment{in.Key, in.By}
	}
	req, err := encode(struct {
		Increments []increment `json:"increments"`
	}{items})
	if err != nil {
		fail(cellar.Internal(err, "encode batch increment request"))
		return
	}
	var resp counterResults
	if _, err := c.do(ctx, http.MethodPost, "/v1/counters:batchIncr", nil, req, &resp); err != nil {
		fail(err)
		return
	}
	resp.set(idx, res, fail)
}

// counterResults is the answer of the counters' batch routes: one result
// per key or increment asked for.
type counterResults struct {
	Results []struct {
		Value *int64    `json:"value"`
		Error *apiError `json:"error"`
	} `json:"results"`
}

// set sets res[idx[j]] to the j-th result, or fails every one if the
// answer does not hold one result each.
func (cr *counterResults) set(idx []int, res []cellar.CounterResult, fail func(error)) {
	if len(cr.Results) != len(idx) {
		fail(cellar.Errorf(cellar.EINTERNAL, "server returned %d results for %d asked", len(cr.Results), len(idx)))
		return
	}
	for j, r := range cr.Results {
		i := idx[j]
		switch {
		case r.Error != nil:
			res[i].Err = r.Error.err()
		case r.Value != nil:
			res[i].Value = *r.Value
		default:
			res[i].Err = cellar.Errorf(cellar.EINTERNAL, "server returned an empty result")
		}
	}
}
