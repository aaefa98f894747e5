package http

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/cellar-db/cellar"
	"github.com/cellar-db/cellar/internal/sqlite"
	"github.com/cellar-db/cellar/internal/sqlstore"
)

const testShards = 64

// openStore opens a real SQLite node in a temporary directory.
func openStore(tb testing.TB) *sqlstore.Store {
	tb.Helper()
	st, err := sqlite.Open(context.Background(), filepath.Join(tb.TempDir(), "n.db"),
		sqlite.Options{Options: sqlstore.Options{Name: "t", ShardCount: testShards, Create: true}})
	if err != nil {
		tb.Fatalf("open sqlite store: %v", err)
	}
	tb.Cleanup(func() {
		if err := st.Close(); err != nil {
			tb.Errorf("close store: %v", err)
		}
	})
	return st
}

// countingStore counts the cells its Put and BatchPut report as created.
type countingStore struct {
	cellar.Store
	created atomic.Int64
}

func (s *countingStore) Put(ctx context.Context, c cellar.NewCell) (cellar.Cell, bool, error) {
	cell, created, err := s.Store.Put(ctx, c)
	if err == nil && created {
		s.created.Add(1)
	}
	return cell, created, err
}

func (s *countingStore) BatchPut(ctx context.Context, cells []cellar.NewCell) []cellar.PutResult {
	res := s.Store.BatchPut(ctx, cells)
	for _, r := range res {
		if r.Err == nil && r.Created {
			s.created.Add(1)
		}
	}
	return res
}

// syncBuffer is a bytes.Buffer safe for the server's goroutines to log to.
type syncBuffer struct {
	mu  sync.Mutex // guards buf
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func discardLogger() *slog.Logger { return slog.New(slog.DiscardHandler) }

// client talks to a test server.
type client struct {
	tb    testing.TB
	url   string
	token string
}

// newServer starts the handler over store in an httptest server.
func newServer(tb testing.TB, store cellar.Store, opts Options) *client {
	tb.Helper()
	if opts.Logger == nil {
		opts.Logger = discardLogger()
	}
	srv := httptest.NewServer(NewHandler(store, opts))
	tb.Cleanup(srv.Close)
	return &client{tb: tb, url: srv.URL}
}

type response struct {
	status int
	header http.Header
	body   []byte
}

// do sends a request with path already escaped, and checks that every
// response but /metrics's is JSON.
func (c *client) do(method, path, body string) response {
	c.tb.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, c.url+path, rd)
	if err != nil {
		c.tb.Fatalf("new request %s %s: %v", method, path, err)
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		c.tb.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		c.tb.Fatalf("%s %s: read body: %v", method, path, err)
	}
	if path != "/metrics" && method != http.MethodHead {
		if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
			c.tb.Errorf("%s %s: Content-Type = %q; want application/json", method, path, ct)
		}
		if !json.Valid(b) {
			c.tb.Errorf("%s %s: response is not JSON: %q", method, path, b)
		}
	}
	return response{status: resp.StatusCode, header: resp.Header, body: b}
}

// want checks the status and, for errors, the error code.
func (r response) want(tb testing.TB, status int, code string) response {
	tb.Helper()
	if r.status != status {
		tb.Fatalf("status = %d; want %d (body %s)", r.status, status, r.body)
	}
	if code != "" {
		if got := errCode(tb, r.body); got != code {
			tb.Fatalf("error code = %q; want %q (body %s)", got, code, r.body)
		}
	}
	return r
}

func errCode(tb testing.TB, b []byte) string {
	tb.Helper()
	var doc struct {
		Error *errorBody `json:"error"`
	}
	if err := json.Unmarshal(b, &doc); err != nil {
		tb.Fatalf("decode error %s: %v", b, err)
	}
	if doc.Error == nil {
		return ""
	}
	if doc.Error.Message == "" {
		tb.Errorf("error %s has no message", b)
	}
	return doc.Error.Code
}

// decode unmarshals a response body into v.
func decode[T any](tb testing.TB, r response) T {
	tb.Helper()
	var v T
	if err := json.Unmarshal(r.body, &v); err != nil {
		tb.Fatalf("decode %s: %v", r.body, err)
	}
	return v
}

// wireCell is a cell as the API returns it, with the body kept raw.
type wireCell struct {
	RowKey    string          `json:"row_key"`
	Column    string          `json:"column"`
	RefKey    int64           `json:"ref_key"`
	Shard     int             `json:"shard"`
	AddedID   int64           `json:"added_id"`
	CreatedAt string          `json:"created_at"`
	Body      json.RawMessage `json:"body"`
	Created   *bool           `json:"created"`
}

// escapeRow escapes a row key for a path segment, as clients must:
// url.PathEscape, and "." and ".." spelled out so the path stays canonical.
func escapeRow(row string) string {
	switch row {
	case ".":
		return "%2E"
	case "..":
		return "%2E%2E"
	}
	return url.PathEscape(row)
}

func cellPath(row, col string, ref int64) string {
	return "/v1/cells/" + escapeRow(row) + "/" + col + "/" + strconv.FormatInt(ref, 10)
}
