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

// BatchCounters implements cellar.CounterStore. If the request as a whole
// fails, every result carries its error. A key that is not valid UTF-8
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
	if len(send) == 0 {
		return res
	}
	fail := func(err error) []cellar.CounterResult {
		for _, i := range idx {
			res[i].Err = err
		}
		return res
	}
	req, err := encode(struct {
		Keys []string `json:"keys"`
	}{send})
	if err != nil {
		return fail(cellar.Internal(err, "encode batch counter request"))
	}
	var resp struct {
		Results []struct {
			Value *int64    `json:"value"`
			Error *apiError `json:"error"`
		} `json:"results"`
	}
	if _, err := c.do(ctx, http.MethodPost, "/v1/counters:batchGet", nil, req, &resp); err != nil {
		return fail(err)
	}
	if len(resp.Results) != len(send) {
		return fail(cellar.Errorf(cellar.EINTERNAL, "server returned %d results for %d keys", len(resp.Results), len(send)))
	}
	for j, r := range resp.Results {
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
	return res
}
