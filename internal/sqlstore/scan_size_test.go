package sqlstore_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	gomysql "github.com/go-sql-driver/mysql"

	"github.com/cellar-db/cellar"
	"github.com/cellar-db/cellar/internal/dbtest"
	"github.com/cellar-db/cellar/internal/mysql"
	"github.com/cellar-db/cellar/internal/postgres"
	"github.com/cellar-db/cellar/internal/sqlstore"
)

// countingProxy forwards TCP connections to a database server and counts
// the bytes the server sends back.
type countingProxy struct {
	ln   net.Listener
	sent atomic.Int64
}

// newCountingProxy listens on a free loopback port and forwards to target
// until tb ends.
func newCountingProxy(tb testing.TB, target string) *countingProxy {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	p := &countingProxy{ln: ln}
	var wg sync.WaitGroup
	var mu sync.Mutex // protects conns
	var conns []net.Conn
	tb.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			up, err := net.Dial("tcp", target)
			if err != nil {
				c.Close()
				continue
			}
			mu.Lock()
			conns = append(conns, c, up)
			mu.Unlock()
			wg.Add(2)
			go func() {
				defer wg.Done()
				_, _ = io.Copy(up, c) // ends when either side closes
				up.Close()
			}()
			go func() {
				defer wg.Done()
				_, _ = io.Copy(countingWriter{c, &p.sent}, up)
				c.Close()
			}()
		}
	}()
	return p
}

type countingWriter struct {
	w io.Writer
	n *atomic.Int64
}

func (w countingWriter) Write(b []byte) (int, error) {
	n, err := w.w.Write(b)
	w.n.Add(int64(n))
	return n, err
}

// openCounted opens a one-shard node of backend (postgres or mysql) on a
// fresh database, through a counting proxy.
func openCounted(t *testing.T, backend string) (*sqlstore.Store, *countingProxy) {
	t.Helper()
	ctx := context.Background()
	opts := sqlstore.Options{Name: backend, ShardCount: 1, Create: true}
	var s *sqlstore.Store
	var p *countingProxy
	var err error
	switch backend {
	case "postgres":
		u, perr := url.Parse(dbtest.Postgres(t))
		if perr != nil {
			t.Fatal(perr)
		}
		p = newCountingProxy(t, u.Host)
		u.Host = p.ln.Addr().String()
		s, err = postgres.Open(ctx, u.String(), postgres.Options{Options: opts})
	case "mysql":
		cfg, perr := gomysql.ParseDSN(dbtest.MySQL(t))
		if perr != nil {
			t.Fatal(perr)
		}
		p = newCountingProxy(t, cfg.Addr)
		cfg.Addr = p.ln.Addr().String()
		s, err = mysql.Open(ctx, cfg.FormatDSN(), mysql.Options{Options: opts})
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s, p
}

// sizedBody returns a JSON body of n bytes (n >= 8).
func sizedBody(n int, fill byte) string {
	return `{"x":"` + strings.Repeat(string(fill), n-8) + `"}`
}

// TestScanPageSendsOnlyThePage: a scan page stops once its bodies reach
// cellar.MaxScanPageBytes, and closing a result set early still makes pgx
// and go-sql-driver/mysql read every remaining row. So the node must not
// send the bodies past the page: it may send the page's bodies and at most
// a quarter page more. The pages are those the documented rule gives, with
// every body intact, and paging on reads every cell once, in order.
func TestScanPageSendsOnlyThePage(t *testing.T) {
	const kib, mib = 1 << 10, 1 << 20
	type cell struct {
		col  string
		size int
	}
	many := func(n int, c cell) []cell {
		cs := make([]cell, n)
		for i := range cs {
			cs[i] = c
		}
		return cs
	}
	cat := func(parts ...[]cell) []cell {
		var cs []cell
		for _, p := range parts {
			cs = append(cs, p...)
		}
		return cs
	}
	for _, tt := range []struct {
		name   string
		cells  []cell
		limit  int
		column string
	}{
		// Every body large: a page of five, out of limit 10000.
		{"large", many(40, cell{"c", 900 * kib}), cellar.MaxScanLimit, ""},
		// Small bodies, sent with the rows, between large ones that
		// cross the cap in the middle of the rows asked for.
		{"mixed", cat(many(3, cell{"c", 100}), many(1, cell{"c", 1500 * kib}), many(5, cell{"c", 2 * kib}),
			many(1, cell{"c", 1500 * kib}), many(2, cell{"c", 300}), many(3, cell{"c", 1500 * kib}),
			many(50, cell{"c", 3 * kib}), many(2, cell{"c", mib})), 100, ""},
		// One column's cells among another's: only the column's bodies
		// count, and the other's are never sent.
		{"column", cat(many(6, cell{"other", 900 * kib}), many(2, cell{"c", 700 * kib}), many(6, cell{"other", 900 * kib}),
			many(20, cell{"c", 700 * kib}), many(100, cell{"c", 200})), 1000, "c"},
		// Only small bodies: pages of limit cells.
		{"small", many(300, cell{"c", 150}), 100, ""},
	} {
		for _, backend := range []string{"postgres", "mysql"} {
			t.Run(tt.name+"/"+backend, func(t *testing.T) {
				ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
				defer cancel()
				s, p := openCounted(t, backend)
				var want []cellar.Cell // of tt.column, in added_id order
				for i, c := range tt.cells {
					body := sizedBody(c.size, byte('a'+i%26))
					k := cellar.Key{RowKey: fmt.Sprintf("r%03d", i), Column: c.col, RefKey: 1}
					put, _, err := s.Put(ctx, cellar.NewCell{Key: k, Body: []byte(body)})
					if err != nil {
						t.Fatal(err)
					}
					if tt.column == "" || c.col == tt.column {
						put.Body = []byte(body)
						want = append(want, put)
					}
				}
				var got []cellar.Cell
				for after := int64(0); ; {
					before := p.sent.Load()
					res, err := s.Scan(ctx, 0, after, tt.limit, tt.column)
					if err != nil {
						t.Fatal(err)
					}
					sent := p.sent.Load() - before
					if len(res.Cells) == 0 {
						if res.Next != after {
							t.Errorf("empty page after %d: next = %d; want %d", after, res.Next, after)
						}
						break
					}
					// The documented page: the cells after after, up to
					// limit, ending with the one whose body reaches the cap.
					rest := want[len(got):]
					n, size := 0, 0
					for n < len(rest) && n < tt.limit && size < cellar.MaxScanPageBytes {
						size += len(rest[n].Body)
						n++
					}
					page := 0
					for _, c := range res.Cells {
						page += len(c.Body)
					}
					if len(res.Cells) != n {
						t.Errorf("page after %d: %d cells; want %d", after, len(res.Cells), n)
					}
					if last := res.Cells[len(res.Cells)-1].AddedID; res.Next != last {
						t.Errorf("page after %d: next = %d; want the last added_id %d", after, res.Next, last)
					}
					// Rows' other columns and the protocol take a few
					// KiB at most here.
					if max := int64(page + cellar.MaxScanPageBytes/4 + 64*kib); sent > max {
						t.Errorf("page after %d: %d cells, %d bytes of bodies; the node sent %d bytes (want at most %d)", after, len(res.Cells), page, sent, max)
					}
					got = append(got, res.Cells...)
					after = res.Next
				}
				if len(got) != len(want) {
					t.Fatalf("paging read %d cells; want %d", len(got), len(want))
				}
				for i, c := range got {
					w := want[i]
					if c.Key != w.Key || c.AddedID != w.AddedID || c.Shard != w.Shard || !c.CreatedAt.Equal(w.CreatedAt) || string(c.Body) != string(w.Body) {
						t.Errorf("cell %d = %v added_id %d, %d bytes of body; want %v added_id %d, %d bytes", i, c.Key, c.AddedID, len(c.Body), w.Key, w.AddedID, len(w.Body))
					}
				}
			})
		}
	}
}

// BenchmarkScan reads pages of a shard on each backend: 1000 cells of
// small bodies (about 100 bytes, the ordinary scan), and pages of large
// ones (100 cells asked for, 900 KiB bodies, so five to a page).
//
//	go test ./internal/sqlstore -run '^$' -bench Scan
func BenchmarkScan(b *testing.B) {
	eachBackend(b, 1, func(b *testing.B, s *sqlstore.Store) {
		ctx := context.Background()
		fill := func(prefix string, n, size int) (first int64) {
			cells := make([]cellar.NewCell, 0, 100)
			flush := func() {
				for _, r := range s.BatchPut(ctx, cells) {
					if r.Err != nil {
						b.Fatal(r.Err)
					}
					if first == 0 {
						first = r.Cell.AddedID
					}
				}
				cells = cells[:0]
			}
			for i := 0; i < n; i++ {
				k := cellar.Key{RowKey: fmt.Sprintf("%s/%d", prefix, i), Column: "profile", RefKey: 1}
				cells = append(cells, cellar.NewCell{Key: k, Body: []byte(sizedBody(size, 'a'+byte(i%26)))})
				if len(cells) == cap(cells) || size > 64<<10 {
					flush()
				}
			}
			if len(cells) > 0 {
				flush()
			}
			return first
		}
		small := fill("small", 4000, 100)
		large := fill("large", 50, 900<<10)
		for _, c := range []struct {
			name  string
			first int64
			pages int64 // distinct first added_ids to read from
			step  int64
			limit int
		}{{"small", small, 3, 1000, 1000}, {"large", large, 9, 5, 100}} {
			b.Run(c.name, func(b *testing.B) {
				bodies := 0
				for i := 0; i < b.N; i++ {
					after := c.first - 1 + int64(i)%c.pages*c.step
					res, err := s.Scan(ctx, 0, after, c.limit, "")
					if err != nil {
						b.Fatal(err)
					}
					if len(res.Cells) == 0 {
						b.Fatalf("empty page after %d", after)
					}
					for _, c := range res.Cells {
						bodies += len(c.Body)
					}
				}
				b.ReportMetric(float64(bodies)/float64(b.N), "body-B/op")
			})
		}
	})
}
