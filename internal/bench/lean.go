package bench

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"sync"

	"github.com/cellar-db/cellar/internal/bench/loadgen"
)

// lean drives a target's HTTP API with the lean load generator: one
// keep-alive connection per worker, requests written as bytes, responses
// checked for their status and a JSON object's first byte (and, for
// batchGet, the number of cells) but not decoded. Read requests are built
// once per target, since the preloaded keys do not change; batchGet and
// put requests are built per operation, as the Go client builds them.
type lean struct {
	addr string

	once   sync.Once
	get    [][]byte // by row*refs + ref-1
	latest [][]byte // by row
	mu     sync.Mutex
	conns  []*loadgen.Conn // every worker's, to close; guarded by mu
}

func newLean(addr string) *lean { return &lean{addr: addr} }

// build makes the read requests of the data set.
func (l *lean) build(rows int) {
	l.once.Do(func() {
		l.get = make([][]byte, rows*refs)
		l.latest = make([][]byte, rows)
		for i := range rows {
			path := "/v1/cells/" + url.PathEscape(rowKey(i)) + "/" + url.PathEscape(column)
			l.latest[i] = loadgen.AppendRequest(nil, http.MethodGet, l.addr, path, nil)
			for ref := int64(1); ref <= refs; ref++ {
				l.get[i*refs+int(ref-1)] = loadgen.AppendRequest(nil, http.MethodGet, l.addr, path+"/"+strconv.FormatInt(ref, 10), nil)
			}
		}
	})
}

// closeConns closes the connections of the workers made so far.
func (l *lean) closeConns() {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, c := range l.conns {
		c.Close()
	}
	l.conns = nil
}

// op returns the named operation for one worker, on a connection of its
// own.
func (l *lean) op(name string, wl *workload) op {
	l.build(wl.rows)
	conn := loadgen.NewConn(l.addr)
	l.mu.Lock()
	l.conns = append(l.conns, conn)
	l.mu.Unlock()
	switch name {
	case "get":
		return func(ctx context.Context) error {
			i, ref := wl.readIndex()
			status, body, err := conn.Do(ctx, l.get[i*refs+int(ref-1)])
			if err != nil {
				return err
			}
			return loadgen.CheckJSON(status, http.StatusOK, body)
		}
	case "latest":
		return func(ctx context.Context) error {
			i, _ := wl.readIndex()
			status, body, err := conn.Do(ctx, l.latest[i])
			if err != nil {
				return err
			}
			return loadgen.CheckJSON(status, http.StatusOK, body)
		}
	case "batchGet":
		var req, doc []byte
		return func(ctx context.Context) error {
			doc = appendBatchGet(doc[:0], wl)
			req = loadgen.AppendRequest(req[:0], http.MethodPost, l.addr, "/v1/cells:batchGet", doc)
			status, body, err := conn.Do(ctx, req)
			if err != nil {
				return err
			}
			if err := loadgen.CheckJSON(status, http.StatusOK, body); err != nil {
				return err
			}
			// Each found cell's result starts so; a missing one would be
			// {"error":...}. The bench's bodies never hold this text.
			if n := bytes.Count(body, []byte(`{"cell":{"row_key":`)); n != batchKeys {
				return fmt.Errorf("batch get found %d of %d cells", n, batchKeys)
			}
			return nil
		}
	case "put":
		var req []byte
		return func(ctx context.Context) error {
			c := wl.newCell()
			target := "/v1/cells/" + url.PathEscape(c.RowKey) + "/" + url.PathEscape(c.Column) + "/" + strconv.FormatInt(c.RefKey, 10)
			req = loadgen.AppendRequest(req[:0], http.MethodPut, l.addr, target, c.Body)
			status, body, err := conn.Do(ctx, req)
			if err != nil {
				return err
			}
			return loadgen.CheckJSON(status, http.StatusCreated, body)
		}
	}
	panic("bench: unknown op " + name)
}

// appendBatchGet appends the JSON request of one batchGet, the keys drawn
// as the Go client's side draws them: {"keys":[{"row_key":...,"column":...,
// "ref_key":...}, ...]}, ref_key left out for a latest lookup.
func appendBatchGet(dst []byte, wl *workload) []byte {
	dst = append(dst, `{"keys":[`...)
	for j := range batchKeys {
		i, ref := wl.readIndex()
		if j > 0 {
			dst = append(dst, ',')
		}
		// Row keys and the column are plain ASCII: no escaping needed.
		dst = append(dst, `{"row_key":"`...)
		dst = appendRowKey(dst, i)
		dst = append(dst, `","column":"`+column+`"`...)
		if batchExact(j) {
			dst = append(dst, `,"ref_key":`...)
			dst = strconv.AppendInt(dst, ref, 10)
		}
		dst = append(dst, '}')
	}
	return append(dst, "]}"...)
}
