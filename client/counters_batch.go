package client

import (
	"context"
	"net/http"
	"unicode/utf8"

	"github.com/cellar-db/cellar"
)

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
	var resp struct {
		Results []struct {
			Value *int64    `json:"value"`
			Error *apiError `json:"error"`
		} `json:"results"`
	}
	if _, err := c.do(ctx, http.MethodPost, "/v1/counters:batchIncr", nil, req, &resp); err != nil {
		fail(err)
		return
	}
	if len(resp.Results) != len(send) {
		fail(cellar.Errorf(cellar.EINTERNAL, "server returned %d results for %d increments", len(resp.Results), len(send)))
		return
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
}
