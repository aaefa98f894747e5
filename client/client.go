// Package client is the Go client of cellar's HTTP API v1. A *Client
// implements cellar.Store over HTTP, so code written against the domain
// interface, such as the cellar CLI, runs unchanged against a remote server.
package client

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/cellar-db/cellar"
)

// Client talks to one cellar server. It is safe for concurrent use.
type Client struct {
	base     string // server URL without a trailing slash
	token    string
	hc       *http.Client
	maxBytes int64 // of a successful response's body
}

// DefaultMaxResponseBytes bounds the body of a successful response that a
// Client reads (WithMaxResponseBytes). The server's largest answers, a
// batchGet or a row, carry at most 16 MiB of bodies plus one cell, which
// the server's max_body_bytes bounds (1 MiB by default).
const DefaultMaxResponseBytes = 128 << 20

// maxErrorBytes bounds how much of an error response is read: enough for
// any API error; of a proxy's error page only the start is quoted.
const maxErrorBytes = 64 << 10

var _ cellar.Store = (*Client)(nil)

// Option configures a Client.
type Option func(*Client)

// WithToken authenticates every request with secret as a bearer token.
// White space around secret, such as the newline of a secret file, is
// dropped, as the server drops it around its own secrets. A secret that
// still holds a control character cannot be sent in a header: every
// request then fails with EINVALID.
func WithToken(secret string) Option {
	return func(c *Client) { c.token = strings.TrimSpace(secret) }
}

// WithHTTPClient sends requests through hc instead of http.DefaultClient
// (nil: http.DefaultClient). The Client uses a copy of hc that does not
// follow redirects.
func WithHTTPClient(hc *http.Client) Option {
	return func(c *Client) { c.hc = hc }
}

// WithMaxResponseBytes bounds the body of a successful response at n bytes
// (n <= 0: DefaultMaxResponseBytes). A call whose answer is larger fails
// with ETOOLARGE instead of holding it in memory: raise the bound for a
// server whose max_body_bytes is near it.
func WithMaxResponseBytes(n int64) Option {
	return func(c *Client) { c.maxBytes = n }
}

// New returns a client of the server at baseURL, such as
// "http://127.0.0.1:7070". A baseURL without a scheme gets "http://".
func New(baseURL string, opts ...Option) *Client {
	if !strings.Contains(baseURL, "://") {
		baseURL = "http://" + baseURL
	}
	c := &Client{base: strings.TrimRight(baseURL, "/"), hc: http.DefaultClient}
	for _, o := range opts {
		o(c)
	}
	if c.hc == nil {
		c.hc = http.DefaultClient
	}
	if c.maxBytes <= 0 {
		c.maxBytes = DefaultMaxResponseBytes
	}
	// The API never redirects, and following a redirect would turn a PUT
	// into a GET of another URL, so a redirect is returned as an error.
	hc := *c.hc
	hc.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	c.hc = &hc
	return c
}

// Put implements cellar.Store. It sends c.Body as is; the server validates
// it. created is true if the server answered 201 Created, false if it
// already held an equal cell (200 OK).
func (c *Client) Put(ctx context.Context, nc cellar.NewCell) (cellar.Cell, bool, error) {
	var cell cellar.Cell
	path, err := cellPath(nc.RowKey, nc.Column)
	if err != nil {
		return cell, false, err
	}
	path += "/" + strconv.FormatInt(nc.RefKey, 10)
	status, err := c.do(ctx, http.MethodPut, path, nil, nc.Body, &cell)
	if err != nil {
		return cellar.Cell{}, false, err
	}
	return cell, status == http.StatusCreated, nil
}

// Get implements cellar.Store. Returns ErrNotFound if there is no such cell.
func (c *Client) Get(ctx context.Context, k cellar.Key) (cellar.Cell, error) {
	var cell cellar.Cell
	path, err := cellPath(k.RowKey, k.Column)
	if err != nil {
		return cell, err
	}
	path += "/" + strconv.FormatInt(k.RefKey, 10)
	if _, err := c.do(ctx, http.MethodGet, path, nil, nil, &cell); err != nil {
		return cellar.Cell{}, err
	}
	return cell, nil
}

// Latest implements cellar.Store. Returns ErrNotFound if the row has no
// cell in column.
func (c *Client) Latest(ctx context.Context, rowKey, column string) (cellar.Cell, error) {
	var cell cellar.Cell
	path, err := cellPath(rowKey, column)
	if err != nil {
		return cell, err
	}
	if _, err := c.do(ctx, http.MethodGet, path, nil, nil, &cell); err != nil {
		return cellar.Cell{}, err
	}
	return cell, nil
}

// Row implements cellar.Store.
func (c *Client) Row(ctx context.Context, rowKey string, columns []string) ([]cellar.Cell, error) {
	seg, err := segment("row_key", rowKey)
	if err != nil {
		return nil, err
	}
	// The names travel joined by commas: one that is no column (an empty
	// one, one with a comma) would name other columns, or none.
	for _, col := range columns {
		if err := cellar.ValidateColumn(col); err != nil {
			return nil, err
		}
	}
	var q url.Values
	if len(columns) > 0 {
		q = url.Values{"columns": {strings.Join(columns, ",")}}
	}
	var resp struct {
		Cells []cellar.Cell `json:"cells"`
	}
	if _, err := c.do(ctx, http.MethodGet, "/v1/rows/"+seg, q, nil, &resp); err != nil {
		return nil, err
	}
	if resp.Cells == nil {
		resp.Cells = []cellar.Cell{}
	}
	return resp.Cells, nil
}

// BatchGet implements cellar.Store. It sends the keys in requests of at
// most cellar.MaxBatchKeys, the server's limit, one after another; if a
// request as a whole fails, each of its keys' results carries its error. A key that is not valid UTF-8 cannot be written
// in the JSON request, so its result is an EINVALID error and the other
// keys are still sent; every other check is the server's.
func (c *Client) BatchGet(ctx context.Context, keys []cellar.LookupKey) []cellar.GetResult {
	res := make([]cellar.GetResult, len(keys))
	send := make([]cellar.LookupKey, 0, len(keys))
	idx := make([]int, 0, len(keys)) // idx[j] is the position in keys of send[j]
	for i, k := range keys {
		if err := checkUTF8(k.RowKey, k.Column); err != nil {
			res[i].Err = err
			continue
		}
		send = append(send, k)
		idx = append(idx, i)
	}
	for len(send) > 0 {
		for start := 0; start < len(send); start += cellar.MaxBatchKeys {
			end := min(start+cellar.MaxBatchKeys, len(send))
			c.batchGet(ctx, send[start:end], idx[start:end], res)
		}
		// The server leaves out the cells that would take an answer's
		// bodies past cellar.MaxBatchGetBytes (too_large): ask for them
		// again. Each answer holds at least one cell, so this ends; an
		// answer that held none stops it.
		var again []cellar.LookupKey
		var at []int
		for j, i := range idx {
			if errors.Is(res[i].Err, cellar.ErrTooLarge) {
				again, at = append(again, send[j]), append(at, i)
			}
		}
		if len(again) == len(send) || ctx.Err() != nil {
			break
		}
		send, idx = again, at
	}
	return res
}

// batchGet sends one batchGet request for send, at most MaxBatchKeys keys,
// and sets res[idx[j]] to the result of send[j].
func (c *Client) batchGet(ctx context.Context, send []cellar.LookupKey, idx []int, res []cellar.GetResult) {
	req, err := encode(struct {
		Keys []cellar.LookupKey `json:"keys"`
	}{send})
	if err != nil {
		failGets(res, idx, cellar.Internal(err, "encode batch get request"))
		return
	}
	var resp struct {
		Results []struct {
			Cell  *cellar.Cell `json:"cell"`
			Error *apiError    `json:"error"`
		} `json:"results"`
	}
	if _, err := c.do(ctx, http.MethodPost, "/v1/cells:batchGet", nil, req, &resp); err != nil {
		failGets(res, idx, err)
		return
	}
	if len(resp.Results) != len(send) {
		failGets(res, idx, cellar.Errorf(cellar.EINTERNAL, "server returned %d results for %d keys", len(resp.Results), len(send)))
		return
	}
	for j, r := range resp.Results {
		i := idx[j]
		switch {
		case r.Error != nil:
			res[i] = cellar.GetResult{Err: r.Error.err()}
		case r.Cell != nil:
			res[i] = cellar.GetResult{Cell: r.Cell}
		default:
			res[i] = cellar.GetResult{Err: cellar.Errorf(cellar.EINTERNAL, "server returned an empty result")}
		}
	}
}

// BatchPut implements cellar.Store. It sends the cells in requests of at
// most cellar.MaxBatchKeys, the server's limit, one after another (keep
// each thousand's bodies under the server's max_request_bytes); if a
// request as a whole fails, each of its cells' results carries its error. A cell whose key is not valid UTF-8 or whose
// body is not JSON cannot be embedded in the JSON request, so its result is
// an EINVALID error and the other cells are still sent; every other check
// is the server's.
func (c *Client) BatchPut(ctx context.Context, cells []cellar.NewCell) []cellar.PutResult {
	res := make([]cellar.PutResult, len(cells))
	send := make([]cellar.NewCell, 0, len(cells))
	idx := make([]int, 0, len(cells)) // idx[j] is the position in cells of send[j]
	for i, nc := range cells {
		if err := checkUTF8(nc.RowKey, nc.Column); err != nil {
			res[i].Err = err
			continue
		}
		if len(nc.Body) > 0 && (!json.Valid(nc.Body) || !utf8.Valid(nc.Body)) {
			res[i].Err = cellar.Errorf(cellar.EINVALID, "body is not valid JSON in UTF-8")
			continue
		}
		send = append(send, nc)
		idx = append(idx, i)
	}
	for start := 0; start < len(send); start += cellar.MaxBatchKeys {
		end := min(start+cellar.MaxBatchKeys, len(send))
		c.batchPut(ctx, send[start:end], idx[start:end], res)
	}
	return res
}

// batchPut sends one batchPut request for send, at most MaxBatchKeys
// cells, and sets res[idx[j]] to the result of send[j].
func (c *Client) batchPut(ctx context.Context, send []cellar.NewCell, idx []int, res []cellar.PutResult) {
	req, err := encodeBatchPut(send)
	if err != nil {
		failPuts(res, idx, cellar.Internal(err, "encode batch put request"))
		return
	}
	var resp struct {
		Results []struct {
			cellar.Cell
			Created bool      `json:"created"`
			Error   *apiError `json:"error"`
		} `json:"results"`
	}
	if _, err := c.do(ctx, http.MethodPost, "/v1/cells:batchPut", nil, req, &resp); err != nil {
		failPuts(res, idx, err)
		return
	}
	if len(resp.Results) != len(send) {
		failPuts(res, idx, cellar.Errorf(cellar.EINTERNAL, "server returned %d results for %d cells", len(resp.Results), len(send)))
		return
	}
	for j, r := range resp.Results {
		i := idx[j]
		if r.Error != nil {
			res[i].Err = r.Error.err()
			continue
		}
		res[i].Cell = r.Cell
		res[i].Created = r.Created
	}
}

// Scan implements cellar.Store.
func (c *Client) Scan(ctx context.Context, shard int, after int64, limit int, column string) (cellar.ScanResult, error) {
	q := url.Values{
		"after": {strconv.FormatInt(after, 10)},
		"limit": {strconv.Itoa(limit)},
	}
	if column != "" {
		q.Set("column", column)
	}
	var resp struct {
		Cells []cellar.Cell `json:"cells"`
		Next  int64         `json:"next"`
	}
	path := "/v1/shards/" + strconv.Itoa(shard) + "/cells"
	if _, err := c.do(ctx, http.MethodGet, path, q, nil, &resp); err != nil {
		return cellar.ScanResult{Cells: []cellar.Cell{}, Next: after}, err
	}
	if resp.Cells == nil {
		resp.Cells = []cellar.Cell{}
	}
	return cellar.ScanResult{Cells: resp.Cells, Next: resp.Next}, nil
}

// Shards returns how the server's datastore lays its logical shards out
// over storage nodes.
func (c *Client) Shards(ctx context.Context) (cellar.Topology, error) {
	var t cellar.Topology
	if _, err := c.do(ctx, http.MethodGet, "/v1/shards", nil, nil, &t); err != nil {
		return cellar.Topology{}, err
	}
	return t, nil
}

// Close implements cellar.Store. It does nothing: the Client holds no
// resources beyond its http.Client's idle connections.
func (c *Client) Close() error { return nil }

// do sends a request with body (if not nil) and decodes a successful JSON
// response into out. It returns the response's status code, and a
// *cellar.Error for a transport failure or an error response.
func (c *Client) do(ctx context.Context, method, path string, query url.Values, body []byte, out any) (int, error) {
	u := c.base + path
	if len(query) > 0 {
		u += "?" + query.Encode()
	}
	var rb io.Reader
	if body != nil {
		rb = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, u, rb)
	if err != nil {
		return 0, &cellar.Error{Code: cellar.EINVALID, Message: fmt.Sprintf("bad request URL %q", u), Err: err}
	}
	req.Header.Set("Accept", "application/json")
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if c.token != "" {
		// net/http would refuse it as it sends the request, an error
		// that reads as an unreachable server.
		if strings.ContainsFunc(c.token, func(r rune) bool { return r < ' ' && r != '\t' || r == 0x7f }) {
			return 0, cellar.Errorf(cellar.EINVALID, "the token holds a control character, which no header can carry")
		}
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return 0, cellar.Unavailable(err, "request failed")
	}
	defer resp.Body.Close()
	ok := resp.StatusCode >= 200 && resp.StatusCode <= 299
	limit := c.maxBytes
	if !ok {
		limit = maxErrorBytes
	}
	// A body past the limit is not read to its end: a misbehaving server
	// or proxy could send one without end.
	data, err := io.ReadAll(io.LimitReader(resp.Body, limit+1))
	if err != nil {
		return resp.StatusCode, cellar.Unavailable(err, "read response to %s %s", method, path)
	}
	if !ok {
		return resp.StatusCode, responseError(resp, data[:min(int64(len(data)), limit)])
	}
	if int64(len(data)) > limit {
		return resp.StatusCode, cellar.Errorf(cellar.ETOOLARGE, "the response to %s %s is larger than this client's bound of %d bytes (client.WithMaxResponseBytes)", method, path, limit)
	}
	if err := json.Unmarshal(data, out); err != nil {
		return resp.StatusCode, cellar.Internal(err, "decode response to %s %s", method, path)
	}
	return resp.StatusCode, nil
}

// apiError is the error object of the API: {"code": ..., "message": ...}.
type apiError struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

func (e *apiError) err() error {
	if e.Code == "" {
		return cellar.Errorf(cellar.EINTERNAL, "server returned an error without a code: %s", e.Message)
	}
	return &cellar.Error{Code: e.Code, Message: e.Message}
}

// responseError turns an error response into a *cellar.Error: the code and
// message the server sent, or, if the body is not an API error (a proxy's
// error page, a wrong URL), a code derived from the status. A 404 without
// an API error means the URL is wrong, not that a cell is missing, so it is
// not reported as not_found.
func responseError(resp *http.Response, data []byte) error {
	var env struct {
		Error *apiError `json:"error"`
	}
	if json.Unmarshal(data, &env) == nil && env.Error != nil && env.Error.Code != "" {
		return env.Error.err()
	}
	code := cellar.EINTERNAL
	switch resp.StatusCode {
	case http.StatusBadRequest:
		code = cellar.EINVALID
	case http.StatusUnauthorized:
		code = cellar.EUNAUTHENTICATED
	case http.StatusForbidden:
		code = cellar.EPERMISSION
	case http.StatusConflict:
		code = cellar.ECONFLICT
	case http.StatusRequestEntityTooLarge:
		code = cellar.ETOOLARGE
	case http.StatusBadGateway, http.StatusServiceUnavailable, http.StatusGatewayTimeout,
		// A proxy's rate limit or request timeout: retry with backoff.
		http.StatusTooManyRequests, http.StatusRequestTimeout:
		code = cellar.EUNAVAILABLE
	}
	msg := "unexpected response " + resp.Status
	if text := strings.TrimSpace(string(data)); text != "" {
		const max = 200
		if len(text) > max {
			cut := max
			for cut > 0 && !utf8.RuneStart(text[cut]) {
				cut-- // not inside a character
			}
			text = text[:cut] + "..."
		}
		text = strings.ToValidUTF8(text, "\uFFFD")
		msg += ": " + text
	}
	return cellar.Errorf(code, "%s", msg)
}

// cellPath returns /v1/cells/{row_key}/{column}.
func cellPath(rowKey, column string) (string, error) {
	row, err := segment("row_key", rowKey)
	if err != nil {
		return "", err
	}
	col, err := segment("column", column)
	if err != nil {
		return "", err
	}
	return "/v1/cells/" + row + "/" + col, nil
}

// segment escapes s as one path segment. An empty segment cannot be sent
// (the server refuses a path with "//"), and "." and ".." are escaped in
// full, since the server refuses them as literal segments.
func segment(name, s string) (string, error) {
	switch s {
	case "":
		return "", cellar.Errorf(cellar.EINVALID, "%s is empty", name)
	case ".":
		return "%2E", nil
	case "..":
		return "%2E%2E", nil
	}
	return url.PathEscape(s), nil
}

// failGets sets err as the result of each key sent in a failed request.
func failGets(res []cellar.GetResult, idx []int, err error) []cellar.GetResult {
	for _, i := range idx {
		res[i] = cellar.GetResult{Err: err}
	}
	return res
}

// failPuts sets err as the result of each cell sent in a failed request.
func failPuts(res []cellar.PutResult, idx []int, err error) []cellar.PutResult {
	for _, i := range idx {
		res[i].Err = err
	}
	return res
}

// encodeBatchPut writes {"cells":[...]} with each body as it is written
// (checked as JSON before): encoding/json would compact a
// json.RawMessage, so that the server's byte limit, which counts a body as
// sent, would count less than Put sends for the same body.
func encodeBatchPut(cells []cellar.NewCell) ([]byte, error) {
	var buf bytes.Buffer
	buf.WriteString(`{"cells":[`)
	for i, nc := range cells {
		if i > 0 {
			buf.WriteByte(',')
		}
		key, err := encode(struct {
			RowKey string `json:"row_key"`
			Column string `json:"column"`
			RefKey int64  `json:"ref_key"`
		}{nc.RowKey, nc.Column, nc.RefKey})
		if err != nil {
			return nil, err
		}
		key = bytes.TrimRight(key, "\n")
		buf.Write(key[:len(key)-1]) // without its closing brace
		buf.WriteString(`,"body":`)
		if len(nc.Body) == 0 {
			buf.WriteString("null") // the server refuses it, item by item
		} else {
			buf.Write(nc.Body)
		}
		buf.WriteByte('}')
	}
	buf.WriteString("]}\n")
	return buf.Bytes(), nil
}

// encode marshals v without HTML escaping, which would change the bytes of
// a body ("<" would be stored as "\u003c").
func encode(v any) ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// checkUTF8 refuses a key that JSON cannot carry: encoding/json would
// replace its invalid bytes with U+FFFD and so name another key.
func checkUTF8(rowKey, column string) error {
	if !utf8.ValidString(rowKey) {
		return cellar.Errorf(cellar.EINVALID, "row_key is not valid UTF-8")
	}
	if !utf8.ValidString(column) {
		return cellar.Errorf(cellar.EINVALID, "column is not valid UTF-8")
	}
	return nil
}
