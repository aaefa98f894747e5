package redis_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cellar-db/cellar"
	"github.com/cellar-db/cellar/internal/dbtest"
	"github.com/cellar-db/cellar/internal/redis"
)

func as(node string, first, last int) cellar.Assignment {
	return cellar.Assignment{Node: node, ShardRange: cellar.ShardRange{First: first, Last: last}}
}

func TestOpenInvalid(t *testing.T) {
	nodes := []redis.Node{{Name: "r1", Addr: "127.0.0.1:1"}, {Name: "r2", Addr: "127.0.0.1:2"}}
	tests := []struct {
		name string
		cfg  redis.Config
	}{
		{"no shards", redis.Config{Shards: 0, Nodes: nodes, Map: []cellar.Assignment{as("r1", 0, 0)}}},
		{"no nodes", redis.Config{Shards: 4, Map: []cellar.Assignment{as("r1", 0, 3)}}},
		{"unnamed node", redis.Config{Shards: 4, Nodes: []redis.Node{{Addr: "127.0.0.1:1"}}, Map: []cellar.Assignment{as("", 0, 3)}}},
		{"node twice", redis.Config{Shards: 4, Nodes: append(nodes, nodes[0]), Map: []cellar.Assignment{as("r1", 0, 3)}}},
		// go-redis would use database 0 for it, shared with a node on db 0.
		{"negative db", redis.Config{Shards: 4, Nodes: []redis.Node{{Name: "r1", Addr: "127.0.0.1:1", DB: -1}}, Map: []cellar.Assignment{as("r1", 0, 3)}}},
		{"unknown node", redis.Config{Shards: 4, Nodes: nodes, Map: []cellar.Assignment{as("r1", 0, 1), as("r3", 2, 3)}}},
		{"gap", redis.Config{Shards: 4, Nodes: nodes, Map: []cellar.Assignment{as("r1", 0, 1), as("r2", 3, 3)}}},
		{"overlap", redis.Config{Shards: 4, Nodes: nodes, Map: []cellar.Assignment{as("r1", 0, 2), as("r2", 2, 3)}}},
		{"past the end", redis.Config{Shards: 4, Nodes: nodes, Map: []cellar.Assignment{as("r1", 0, 4)}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := redis.Open(tt.cfg)
			if err == nil {
				c.Close()
				t.Fatal("Open succeeded")
			}
			if cellar.ErrorCode(err) != cellar.EINVALID {
				t.Errorf("Open: %v; want invalid_argument", err)
			}
		})
	}
}

func TestRouting(t *testing.T) {
	c, err := redis.Open(redis.Config{
		Shards: 16,
		Nodes:  []redis.Node{{Name: "r1", Addr: "127.0.0.1:1"}, {Name: "r2", Addr: "127.0.0.1:2"}},
		Map:    []cellar.Assignment{as("r2", 8, 15), as("r1", 0, 7)},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for _, key := range []string{"a", "page:1", "/", "ü"} {
		if got, want := c.Shard(key), cellar.ShardOf(key, 16); got != want {
			t.Errorf("Shard(%q) = %d; want %d", key, got, want)
		}
	}
	for s, want := range map[int]string{0: "r1", 7: "r1", 8: "r2", 15: "r2", -1: "", 16: ""} {
		name, cl := c.Node(s)
		if name != want || (cl == nil) != (want == "") {
			t.Errorf("Node(%d) = %q, %v; want %q", s, name, cl, want)
		}
	}
	if want := []cellar.Assignment{as("r1", 0, 7), as("r2", 8, 15)}; !reflect.DeepEqual(c.Map(), want) {
		t.Errorf("Map() = %v; want %v", c.Map(), want)
	}

	// Relieve r2 of shards 8-11.
	if err := c.Remap([]cellar.Assignment{as("r1", 0, 11), as("r2", 12, 15)}); err != nil {
		t.Fatal(err)
	}
	for s, want := range map[int]string{8: "r1", 11: "r1", 12: "r2"} {
		if name, _ := c.Node(s); name != want {
			t.Errorf("after Remap, Node(%d) = %q; want %q", s, name, want)
		}
	}
	// A bad map changes nothing.
	if err := c.Remap([]cellar.Assignment{as("r1", 0, 11)}); cellar.ErrorCode(err) != cellar.EINVALID {
		t.Errorf("Remap of a partial map: %v; want invalid_argument", err)
	}
	if name, _ := c.Node(12); name != "r2" {
		t.Errorf("after a refused Remap, Node(12) = %q; want r2", name)
	}
	if n := c.Nodes(); len(n) != 2 || n["r1"] == nil || n["r2"] == nil {
		t.Errorf("Nodes() = %v; want r1 and r2", n)
	}
}

// TestRemapConcurrent routes keys while the map changes (run with -race).
func TestRemapConcurrent(t *testing.T) {
	c, err := redis.Open(redis.Config{
		Shards: 8,
		Nodes:  []redis.Node{{Name: "r1", Addr: "127.0.0.1:1"}, {Name: "r2", Addr: "127.0.0.1:2"}},
		Map:    []cellar.Assignment{as("r1", 0, 7)},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	var wg sync.WaitGroup
	for i := 0; i < 4; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for n := 0; n < 1000; n++ {
				if name, cl := c.Node(c.Shard(fmt.Sprint(n))); name == "" || cl == nil {
					t.Error("a shard has no node")
					return
				}
			}
		}()
	}
	for n := 0; n < 100; n++ {
		split := n % 8
		m := []cellar.Assignment{as("r2", split, 7)}
		if split > 0 {
			m = append(m, as("r1", 0, split-1))
		}
		if err := c.Remap(m); err != nil {
			t.Fatal(err)
		}
	}
	wg.Wait()
}

// TestNodeDown: commands to a stopped node fail fast; the others answer.
func TestNodeDown(t *testing.T) {
	r1, r2 := dbtest.Redis(t), dbtest.Redis(t)
	c, err := redis.Open(redis.Config{
		Shards: 2,
		Nodes:  []redis.Node{{Name: "r1", Addr: r1.Addr()}, {Name: "r2", Addr: r2.Addr()}},
		Map:    []cellar.Assignment{as("r1", 0, 0), as("r2", 1, 1)},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx := context.Background()
	for s := 0; s < 2; s++ {
		_, cl := c.Node(s)
		if err := cl.Set(ctx, "k", s, 0).Err(); err != nil {
			t.Fatalf("SET on shard %d: %v", s, err)
		}
	}
	r2.Kill()
	_, cl2 := c.Node(1)
	start := time.Now()
	if err := cl2.Get(ctx, "k").Err(); err == nil {
		t.Error("GET on a killed node succeeded")
	}
	if err := cl2.Get(ctx, "k").Err(); err == nil {
		t.Error("second GET on a killed node succeeded")
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("two commands to a killed node took %v; want them to fail at once", d)
	}
	_, cl1 := c.Node(0)
	if v, err := cl1.Get(ctx, "k").Result(); err != nil || v != "0" {
		t.Errorf("GET on the live node = %q, %v; want 0", v, err)
	}
}

// TestSetLoggerRoutesLibraryMessages guards that the Redis client
// library's own messages go to the slog logger: a failed dial of its pool
// was written to stderr in its own format, in the middle of a JSON log.
// (Review of stop 19.)
func TestSetLoggerRoutesLibraryMessages(t *testing.T) {
	var buf bytes.Buffer
	var mu sync.Mutex
	redis.SetLogger(slog.New(slog.NewJSONHandler(lockedWriter{&mu, &buf}, nil)))
	t.Cleanup(func() { redis.SetLogger(slog.Default()) })
	c, err := redis.Open(redis.Config{Shards: 1, Nodes: []redis.Node{{Name: "r1", Addr: "127.0.0.1:1"}},
		Map: []cellar.Assignment{{Node: "r1", ShardRange: cellar.ShardRange{First: 0, Last: 0}}}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for _, cl := range c.Nodes() {
		_ = cl.Ping(context.Background()).Err() // refused: the pool logs its failed dial
	}
	mu.Lock()
	defer mu.Unlock()
	if !strings.Contains(buf.String(), `"msg":"redis client: `) {
		t.Errorf("the library's message did not reach the slog logger; it got %q", buf.String())
	}
}

type lockedWriter struct {
	mu *sync.Mutex
	w  io.Writer
}

func (l lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}
