// Package redis spreads keys over named Redis nodes the way cells are
// spread over storage nodes: a key belongs to a logical shard
// (cellar.ShardOf), and ranges of logical shards are assigned to named
// nodes by a map that can be replaced at run time (Remap), so that a loaded
// node is relieved by moving shard ranges off it, as Sentry spreads its
// buffers over DB0..DB9 on redis-1 and redis-2.
//
// Users put the logical shard in every Redis key they write (for example
// "cellar:ctr:{17}:deltas"), so that a remap moves whole shards and nothing
// else.
package redis

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"sync/atomic"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/cellar-db/cellar"
)

// Node is one named Redis server.
type Node struct {
	Name string
	// Addr is host:port.
	Addr     string
	DB       int
	Password string
}

// Assignment places a range of logical shards on a named node.
type Assignment = cellar.Assignment

// Defaults for Config.
const (
	DefaultTimeout  = time.Second
	DefaultPoolSize = 64
)

// Config describes a cluster: its shard count, nodes and shard map.
type Config struct {
	// Shards is the number of logical shards (1..cellar.MaxShardCount).
	Shards int
	Nodes  []Node
	// Map assigns every shard in [0, Shards) to exactly one node.
	Map []cellar.Assignment

	// Timeout bounds dialing and each read and write on a node's
	// connections (default DefaultTimeout), so that a stopped or hung node
	// fails its shards quickly instead of holding callers.
	Timeout time.Duration
	// Retries is how many times a command is resent after a network
	// error. The default, 0, never resends: a resent command may already
	// have run (an increment would then count twice), so callers that know
	// their commands are idempotent retry themselves.
	Retries int
	// PoolSize bounds the connections to each node (default
	// DefaultPoolSize).
	PoolSize int
}

// Cluster routes keys to Redis nodes by logical shard. It is safe for
// concurrent use; Remap may run while other goroutines route keys.
type Cluster struct {
	shards  int
	clients map[string]*goredis.Client // by node name; fixed after Open
	routes  atomic.Pointer[routing]
}

// routing is one installed shard map.
type routing struct {
	m       []cellar.Assignment
	byShard []string // shard -> node name
}

// SetLogger sends the Redis client library's own messages (a failed dial
// of its pool, say) to log at warn level: it writes them to stderr in its
// own format otherwise, in the middle of a structured log. The library's
// logger is one for the process.
func SetLogger(log *slog.Logger) { goredis.SetLogger(slogAdapter{log}) }

type slogAdapter struct{ log *slog.Logger }

func (a slogAdapter) Printf(ctx context.Context, format string, v ...any) {
	a.log.WarnContext(ctx, "redis client: "+fmt.Sprintf(format, v...))
}

// Open returns a cluster over cfg's nodes. It does not contact them: a
// node that is down fails only the operations on its shards, when they
// run.
func Open(cfg Config) (*Cluster, error) {
	if cfg.Shards < 1 || cfg.Shards > cellar.MaxShardCount {
		return nil, cellar.Errorf(cellar.EINVALID, "redis shard count %d is out of range 1..%d", cfg.Shards, cellar.MaxShardCount)
	}
	if len(cfg.Nodes) == 0 {
		return nil, cellar.Errorf(cellar.EINVALID, "no redis nodes configured")
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = DefaultTimeout
	}
	if cfg.PoolSize <= 0 {
		cfg.PoolSize = DefaultPoolSize
	}
	retries := cfg.Retries
	if retries <= 0 {
		retries = -1 // go-redis: -1 disables retries, 0 means its default of 3
	}
	c := &Cluster{shards: cfg.Shards, clients: make(map[string]*goredis.Client, len(cfg.Nodes))}
	for _, n := range cfg.Nodes {
		if n.Name == "" || n.Addr == "" {
			c.Close()
			return nil, cellar.Errorf(cellar.EINVALID, "redis node %q needs a name and an address", n.Name)
		}
		if _, dup := c.clients[n.Name]; dup {
			c.Close()
			return nil, cellar.Errorf(cellar.EINVALID, "redis node %q is configured twice", n.Name)
		}
		if n.DB < 0 {
			// go-redis selects no database for it: it would share db 0.
			c.Close()
			return nil, cellar.Errorf(cellar.EINVALID, "redis node %q: db %d is negative", n.Name, n.DB)
		}
		c.clients[n.Name] = goredis.NewClient(&goredis.Options{
			Addr:         n.Addr,
			DB:           n.DB,
			Password:     n.Password,
			DialTimeout:  cfg.Timeout,
			ReadTimeout:  cfg.Timeout,
			WriteTimeout: cfg.Timeout,
			// Dial once: a node that refuses connections is down, and
			// its callers should hear so now, not after five dials.
			DialerRetries:         1,
			MaxRetries:            retries,
			PoolSize:              cfg.PoolSize,
			PoolTimeout:           cfg.Timeout,
			ContextTimeoutEnabled: true,
			DisableIdentity:       true,
		})
	}
	if err := c.Remap(cfg.Map); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

// Shards returns the number of logical shards.
func (c *Cluster) Shards() int { return c.shards }

// Shard returns the logical shard of key.
func (c *Cluster) Shard(key string) int { return cellar.ShardOf(key, c.shards) }

// Node returns the node that holds shard under the current map, or "" and
// nil for a shard out of range.
func (c *Cluster) Node(shard int) (name string, client *goredis.Client) {
	r := c.routes.Load()
	if shard < 0 || shard >= len(r.byShard) {
		return "", nil
	}
	name = r.byShard[shard]
	return name, c.clients[name]
}

// Remap installs m as the shard map. Returns EINVALID unless m assigns
// every shard to exactly one configured node; the current map then stays.
// Data already written under a shard stays on its old node: users that
// must find it there (such as the counter buffer, which flushes every
// node) look at every node.
func (c *Cluster) Remap(m []cellar.Assignment) error {
	known := make(map[string]bool, len(c.clients))
	for name := range c.clients {
		known[name] = true
	}
	sm := cellar.ShardMap{ShardCount: c.shards, Assignments: m}
	if err := sm.Validate(known); err != nil {
		return fmt.Errorf("redis shard map: %w", err)
	}
	r := &routing{m: append([]cellar.Assignment(nil), m...), byShard: make([]string, c.shards)}
	sort.Slice(r.m, func(i, j int) bool { return r.m[i].First < r.m[j].First })
	for _, a := range r.m {
		for s := a.First; s <= a.Last; s++ {
			r.byShard[s] = a.Node
		}
	}
	c.routes.Store(r)
	return nil
}

// Map returns the current shard map, ordered by first shard.
func (c *Cluster) Map() []cellar.Assignment {
	return append([]cellar.Assignment(nil), c.routes.Load().m...)
}

// Nodes returns every configured node's client by name, whether the
// current map assigns it shards or not.
func (c *Cluster) Nodes() map[string]*goredis.Client {
	out := make(map[string]*goredis.Client, len(c.clients))
	for name, cl := range c.clients {
		out[name] = cl
	}
	return out
}

// Close closes every node's connections.
func (c *Cluster) Close() error {
	var errs []error
	for name, cl := range c.clients {
		if err := cl.Close(); err != nil {
			errs = append(errs, fmt.Errorf("close redis node %s: %w", name, err))
		}
	}
	return errors.Join(errs...)
}
