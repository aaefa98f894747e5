package cache_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cellar-db/cellar"
	"github.com/cellar-db/cellar/client"
	"github.com/cellar-db/cellar/internal/bench/loadgen"
	"github.com/cellar-db/cellar/internal/cache"
	"github.com/cellar-db/cellar/internal/dbtest"
	cellarhttp "github.com/cellar-db/cellar/internal/http"
	"github.com/cellar-db/cellar/internal/postgres"
	"github.com/cellar-db/cellar/internal/shard"
	"github.com/cellar-db/cellar/internal/sqlstore"
)

// The target: latest-cell reads through the cache at least 3x the
// throughput of uncached reads on PostgreSQL, 64 readers at a time.
//
//	CELLAR_TEST_POSTGRES_DSN=... CELLAR_TEST_REDIS_ADDR=... \
//	  go test -run '^$' -bench . -benchtime 5s ./internal/cache
const (
	benchRows    = 1000
	benchReaders = 64
)

// benchStore is the sharding layer over one fresh PostgreSQL node holding
// benchRows rows of one latest cell each (and an older one), as serve wires
// it.
func benchStore(b testing.TB) cellar.Store {
	b.Helper()
	const shards = 256
	node, err := postgres.Open(context.Background(), dbtest.Postgres(b), postgres.Options{
		Options:  sqlstore.Options{Name: "pg", ShardCount: shards, Create: true},
		MaxConns: benchReaders,
	})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { node.Close() })
	s, err := shard.New(&cellar.ShardMap{Version: 1, ShardCount: shards, Assignments: []cellar.Assignment{
		{Node: "pg", ShardRange: cellar.ShardRange{First: 0, Last: shards - 1}},
	}}, []*shard.Node{{Name: "pg", Driver: "postgres", Store: node}}, shard.Options{})
	if err != nil {
		b.Fatal(err)
	}
	var cells []cellar.NewCell
	for i := 0; i < benchRows; i++ {
		for ref := int64(1); ref <= 2; ref++ {
			body := fmt.Sprintf(`{"user":%d,"version":%d,"name":"user %d","email":"user%d@example.com","tags":["a","b","c"],"bio":"%s"}`, i, ref, i, i, strings.Repeat("x", 100))
			cells = append(cells, cellar.NewCell{Key: cellar.Key{RowKey: benchRow(i), Column: "profile", RefKey: ref}, Body: []byte(body)})
		}
	}
	for start := 0; start < len(cells); start += cellar.MaxBatchKeys {
		for _, r := range s.BatchPut(context.Background(), cells[start:min(start+cellar.MaxBatchKeys, len(cells))]) {
			if r.Err != nil {
				b.Fatal(r.Err)
			}
		}
	}
	return s
}

func benchRow(i int) string { return fmt.Sprintf("user:%d", i) }

// benchConfigs are the stores compared: the sharding layer alone, behind
// the in-process tier, and behind Redis alone.
func benchConfigs() []struct {
	name string
	open func(b testing.TB, back cellar.Store) cellar.Store
} {
	return []struct {
		name string
		open func(b testing.TB, back cellar.Store) cellar.Store
	}{
		{"uncached", func(b testing.TB, back cellar.Store) cellar.Store { return back }},
		{"local", func(b testing.TB, back cellar.Store) cellar.Store {
			return newCache(b, back, cache.Options{})
		}},
		{"redis", func(b testing.TB, back cellar.Store) cellar.Store {
			return newCache(b, back, cache.Options{MaxBytes: -1, Redis: newCluster(b, 256, dbtest.Redis(b))})
		}},
	}
}

// BenchmarkLatest reads latest cells through the Store interface.
func BenchmarkLatest(b *testing.B) {
	back := benchStore(b)
	for _, cfg := range benchConfigs() {
		b.Run(cfg.name, func(b *testing.B) {
			s := cfg.open(b, back)
			var next atomic.Int64
			b.SetParallelism(max(1, benchReaders/runtime.GOMAXPROCS(0)))
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				ctx := context.Background()
				for pb.Next() {
					i := int(next.Add(1)) % benchRows
					c, err := s.Latest(ctx, benchRow(i), "profile")
					if err != nil || c.RefKey != 2 {
						b.Errorf("Latest(%s) = %d, %v", benchRow(i), c.RefKey, err)
						return
					}
				}
			})
		})
	}
}

// BenchmarkHTTPLatest reads latest cells over HTTP: GET
// /v1/cells/{row}/{column} on a loopback listener.
func BenchmarkHTTPLatest(b *testing.B) {
	back := benchStore(b)
	for _, cfg := range benchConfigs() {
		b.Run(cfg.name, func(b *testing.B) {
			srv := httptest.NewServer(cellarhttp.NewHandler(cfg.open(b, back), cellarhttp.Options{}))
			b.Cleanup(srv.Close)
			client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: benchReaders, MaxConnsPerHost: benchReaders}}
			b.Cleanup(client.CloseIdleConnections)
			var next atomic.Int64
			b.SetParallelism(max(1, benchReaders/runtime.GOMAXPROCS(0)))
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if err := httpLatest(client, srv.URL, int(next.Add(1))%benchRows); err != nil {
						b.Error(err)
						return
					}
				}
			})
		})
	}
}

// TestThroughput measures what the benchmarks measure, but alternating the
// stores in short rounds, so that a noisy neighbour on a shared machine
// slows them all alike, and checks the target at the store level.
// Over HTTP each store is read three ways: by the lean load generator
// (internal/bench/loadgen: a keep-alive HTTP/1.1 connection per reader,
// requests written as bytes, responses checked but not decoded, like wrk),
// which measures the server; by net/http's client, discarding the body;
// and through the public Go client, which decodes every cell. It runs only
// with CELLAR_CACHE_BENCH=1:
//
//	CELLAR_CACHE_BENCH=1 CELLAR_TEST_POSTGRES_DSN=... CELLAR_TEST_REDIS_ADDR=... \
//	  go test -run TestThroughput -v ./internal/cache
func TestThroughput(t *testing.T) {
	if os.Getenv("CELLAR_CACHE_BENCH") == "" {
		t.Skip("set CELLAR_CACHE_BENCH=1 to measure throughput")
	}
	const rounds, round = 5, 2 * time.Second
	back := benchStore(t)
	type reader func(ctx context.Context, i int) error
	type target struct {
		name string
		// reader returns a reader for one worker, and what closes it.
		reader func() (reader, func())
	}
	shared := func(r reader) func() (reader, func()) {
		return func() (reader, func()) { return r, func() {} }
	}
	var targets []target
	for _, cfg := range benchConfigs() {
		s := cfg.open(t, back)
		targets = append(targets, target{"store/" + cfg.name, shared(func(ctx context.Context, i int) error {
			c, err := s.Latest(ctx, benchRow(i), "profile")
			if err == nil && c.RefKey != 2 {
				err = fmt.Errorf("Latest(%s) = ref %d", benchRow(i), c.RefKey)
			}
			return err
		})})
	}
	nethttp := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: benchReaders, MaxConnsPerHost: benchReaders}}
	t.Cleanup(nethttp.CloseIdleConnections)
	goTransport := &http.Transport{MaxIdleConnsPerHost: benchReaders, MaxConnsPerHost: benchReaders}
	t.Cleanup(goTransport.CloseIdleConnections)
	var httpTargets, nethttpTargets, clientTargets []target
	for _, cfg := range benchConfigs() {
		srv := httptest.NewServer(cellarhttp.NewHandler(cfg.open(t, back), cellarhttp.Options{}))
		t.Cleanup(srv.Close)
		addr := srv.Listener.Addr().String()
		reqs := make([][]byte, benchRows)
		for i := range reqs {
			reqs[i] = loadgen.AppendRequest(nil, http.MethodGet, addr, "/v1/cells/"+url.PathEscape(benchRow(i))+"/profile", nil)
		}
		httpTargets = append(httpTargets, target{"http/" + cfg.name, func() (reader, func()) {
			conn := loadgen.NewConn(addr)
			return func(ctx context.Context, i int) error {
				status, body, err := conn.Do(ctx, reqs[i])
				if err == nil {
					err = loadgen.CheckJSON(status, http.StatusOK, body)
				}
				if err == nil && !bytes.Contains(body, []byte(`"ref_key":2,`)) {
					err = fmt.Errorf("GET latest of %s: not ref_key 2: %s", benchRow(i), body)
				}
				return err
			}, func() { conn.Close() }
		}})
		nethttpTargets = append(nethttpTargets, target{"nethttp/" + cfg.name, shared(func(ctx context.Context, i int) error {
			return httpLatest(nethttp, srv.URL, i)
		})})
		cl := client.New(srv.URL, client.WithHTTPClient(&http.Client{Transport: goTransport}))
		clientTargets = append(clientTargets, target{"client/" + cfg.name, shared(func(ctx context.Context, i int) error {
			c, err := cl.Latest(ctx, benchRow(i), "profile")
			if err == nil && c.RefKey != 2 {
				err = fmt.Errorf("Latest(%s) = ref %d", benchRow(i), c.RefKey)
			}
			return err
		})})
	}
	targets = append(append(append(targets, httpTargets...), nethttpTargets...), clientTargets...)

	done := make([]int64, len(targets))
	for r := 0; r < rounds; r++ {
		for j, tg := range targets {
			ctx, cancel := context.WithTimeout(context.Background(), round)
			var n atomic.Int64
			var wg sync.WaitGroup
			errc := make(chan error, benchReaders)
			for w := 0; w < benchReaders; w++ {
				read, closeReader := tg.reader()
				wg.Add(1)
				go func() {
					defer wg.Done()
					defer closeReader()
					for i := w; ctx.Err() == nil; i += benchReaders {
						if err := read(context.Background(), i%benchRows); err != nil {
							errc <- err
							return
						}
						n.Add(1)
					}
				}()
			}
			wg.Wait()
			cancel()
			close(errc)
			for err := range errc {
				t.Fatalf("%s: %v", tg.name, err)
			}
			done[j] += n.Load()
		}
	}
	secs := (time.Duration(rounds) * round).Seconds()
	rate := map[string]float64{}
	t.Logf("%d readers, %d rounds of %v per target, alternating; http: the lean load generator, nethttp: net/http's client discarding the body, client: the Go client decoding cells:", benchReaders, rounds, round)
	for j, tg := range targets {
		rate[tg.name] = float64(done[j]) / secs
	}
	for _, tg := range targets {
		level, _, _ := strings.Cut(tg.name, "/")
		t.Logf("  %-16s %9.0f reads/s  %5.1fx uncached", tg.name, rate[tg.name], rate[tg.name]/rate[level+"/uncached"])
	}
	if r := rate["store/local"] / rate["store/uncached"]; r < 3 {
		t.Errorf("latest reads through the in-process cache: %.1fx the uncached throughput; want at least 3x", r)
	}
	verdict := "met"
	if r := rate["http/local"] / rate["http/uncached"]; r < 3 {
		verdict = "not met"
	}
	t.Logf("target >= 3x over HTTP (lean load generator): %s (%.1fx)", verdict, rate["http/local"]/rate["http/uncached"])
}

// httpLatest reads the latest cell of row i over HTTP.
func httpLatest(client *http.Client, base string, i int) error {
	resp, err := client.Get(base + "/v1/cells/" + url.PathEscape(benchRow(i)) + "/profile")
	if err != nil {
		return err
	}
	_, err = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if err == nil && resp.StatusCode != http.StatusOK {
		err = fmt.Errorf("GET latest of %s: %s", benchRow(i), resp.Status)
	}
	return err
}
