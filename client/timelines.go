package client

import (
	"context"
	"math"
	"net/http"
	"net/url"
	"strconv"
	"unicode/utf8"

	"github.com/cellar-db/cellar"
)

var _ cellar.TimelineStore = (*Client)(nil)

// timelinePath returns /v1/timelines/{key}.
func timelinePath(key string) (string, error) {
	seg, err := segment("timeline key", key)
	if err != nil {
		return "", err
	}
	return "/v1/timelines/" + seg, nil
}

// TimelineAdd implements cellar.TimelineStore. A member that is not valid
// UTF-8, or a score that is NaN or infinite, cannot be sent in JSON: they
// are refused here with EINVALID; every other check is the server's.
func (c *Client) TimelineAdd(ctx context.Context, key, member string, score float64) error {
	path, err := timelinePath(key)
	if err != nil {
		return err
	}
	if !utf8.ValidString(member) {
		return cellar.Errorf(cellar.EINVALID, "member is not valid UTF-8")
	}
	if math.IsNaN(score) || math.IsInf(score, 0) {
		return cellar.Errorf(cellar.EINVALID, "score must be a finite number, not %v", score)
	}
	body, err := encode(cellar.TimelineItem{Member: member, Score: score})
	if err != nil {
		return cellar.Internal(err, "encode timeline add request")
	}
	var resp struct{}
	_, err = c.do(ctx, http.MethodPost, path+"/members", nil, body, &resp)
	return err
}

// TimelineRemove implements cellar.TimelineStore.
func (c *Client) TimelineRemove(ctx context.Context, key, member string) (bool, error) {
	path, err := timelinePath(key)
	if err != nil {
		return false, err
	}
	seg, err := segment("member", member)
	if err != nil {
		return false, err
	}
	var resp struct {
		Removed bool `json:"removed"`
	}
	if _, err := c.do(ctx, http.MethodDelete, path+"/members/"+seg, nil, nil, &resp); err != nil {
		return false, err
	}
	return resp.Removed, nil
}

// TimelineRange implements cellar.TimelineStore.
func (c *Client) TimelineRange(ctx context.Context, key string, offset, limit int, desc bool) ([]cellar.TimelineItem, int64, error) {
	path, err := timelinePath(key)
	if err != nil {
		return []cellar.TimelineItem{}, 0, err
	}
	order := "asc"
	if desc {
		order = "desc"
	}
	q := url.Values{
		"offset": {strconv.Itoa(offset)},
		"limit":  {strconv.Itoa(limit)},
		"order":  {order},
	}
	var resp struct {
		Items []cellar.TimelineItem `json:"items"`
		Count int64                 `json:"count"`
	}
	if _, err := c.do(ctx, http.MethodGet, path, q, nil, &resp); err != nil {
		return []cellar.TimelineItem{}, 0, err
	}
	if resp.Items == nil {
		resp.Items = []cellar.TimelineItem{}
	}
	return resp.Items, resp.Count, nil
}

// TimelineCount implements cellar.TimelineStore, with a range of one.
func (c *Client) TimelineCount(ctx context.Context, key string) (int64, error) {
	_, count, err := c.TimelineRange(ctx, key, 0, 1, true)
	return count, err
}

// SetTimelineCap implements cellar.TimelineStore.
func (c *Client) SetTimelineCap(ctx context.Context, key string, cap int) error {
	path, err := timelinePath(key)
	if err != nil {
		return err
	}
	body, err := encode(struct {
		Cap int `json:"cap"`
	}{cap})
	if err != nil {
		return cellar.Internal(err, "encode timeline cap request")
	}
	var resp struct{}
	_, err = c.do(ctx, http.MethodPut, path, nil, body, &resp)
	return err
}
