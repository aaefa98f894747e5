package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"
	"unicode"

	"go.yaml.in/yaml/v3"

	"github.com/cellar-db/cellar"
	"github.com/cellar-db/cellar/internal/counter"
	cellarhttp "github.com/cellar-db/cellar/internal/http"
	"github.com/cellar-db/cellar/internal/index"
	"github.com/cellar-db/cellar/internal/mysql"
	"github.com/cellar-db/cellar/internal/postgres"
	"github.com/cellar-db/cellar/internal/redis"
)

// Config is cellar's configuration: a YAML file, then environment
// overrides, then flags. Without a file it describes the embedded default:
// one SQLite node under the data directory.
type Config struct {
	// Listen is the HTTP address (default 127.0.0.1:7070).
	Listen string `yaml:"listen"`
	// DataDir holds the embedded SQLite node and relative SQLite paths
	// (default ./cellar-data).
	DataDir string `yaml:"data_dir"`
	// Shards is the number of logical shards, fixed when the datastore is
	// created (default 4096).
	Shards int `yaml:"shards"`
	// Metadata names the node that holds the datastore record and the
	// shard map (default: the first node).
	Metadata string `yaml:"metadata"`
	// Nodes are the storage nodes.
	Nodes []NodeConfig `yaml:"nodes"`
	// ShardMap is the initial shard map, written by `cellar init`. Once the
	// datastore exists, the map stored on the metadata node is authoritative.
	ShardMap []AssignmentConfig `yaml:"shard_map"`
	// RequestTimeout bounds each HTTP request (default 5s).
	RequestTimeout time.Duration `yaml:"request_timeout"`
	// NodeTimeout bounds each call to one node (default 2s).
	NodeTimeout time.Duration `yaml:"node_timeout"`
	// MapRefresh is how often servers reload the shard map (default 5s).
	MapRefresh time.Duration `yaml:"map_refresh"`
	// ShutdownTimeout bounds the drain of in-flight requests (default 30s).
	ShutdownTimeout time.Duration `yaml:"shutdown_timeout"`
	// MaxBodyBytes bounds one cell body (default 1 MiB).
	MaxBodyBytes int `yaml:"max_body_bytes"`
	// MaxRequestBytes bounds a whole request body, a batch's: at least
	// MaxBodyBytes; if unset, 64 MiB or MaxBodyBytes if that is larger.
	MaxRequestBytes int `yaml:"max_request_bytes"`
	// Auth configures bearer tokens. Without tokens, auth is off.
	Auth AuthConfig `yaml:"auth"`
	// AllowUnauthenticated lets a server without tokens listen on a
	// non-loopback address.
	AllowUnauthenticated bool `yaml:"allow_unauthenticated"`
	// LogLevel is debug, info, warn or error (default info); LogFormat is
	// text or json (default text).
	LogLevel  string `yaml:"log_level"`
	LogFormat string `yaml:"log_format"`
	// Redis names the Redis nodes that the counter buffer (redis mode) and
	// the shared cache tier use, and maps logical shards onto them.
	Redis RedisConfig `yaml:"redis"`
	// Counters configures buffered counters.
	Counters CountersConfig `yaml:"counters"`
	// Cache configures the read-through object cache (off by default).
	Cache CacheConfig `yaml:"cache"`
	// Indexes configures secondary index maintenance.
	Indexes IndexesConfig `yaml:"indexes"`
}

// IndexesConfig configures secondary index maintenance in this process.
type IndexesConfig struct {
	// Workers is the number of claim loops per index this process runs
	// (default 16); every server shares the work through leases.
	Workers int `yaml:"workers"`
}

// RedisConfig is a set of named Redis nodes over the datastore's logical
// shards (Sentry's DB0..DB9 over redis-1 and redis-2).
type RedisConfig struct {
	Nodes []RedisNodeConfig `yaml:"nodes"`
	// Map assigns shard ranges to nodes (default: all on the only node).
	Map []AssignmentConfig `yaml:"map"`
	// Timeout bounds dialing and each command (default 1s).
	Timeout time.Duration `yaml:"timeout"`
}

// RedisNodeConfig is one named Redis server.
type RedisNodeConfig struct {
	Name        string `yaml:"name"`
	Addr        string `yaml:"addr"`
	DB          int    `yaml:"db"`
	PasswordEnv string `yaml:"password_env"`
}

// CountersConfig configures buffered counters.
type CountersConfig struct {
	// Mode is journal (a local durable journal: one process per journal)
	// or redis (a buffer shared by several processes). Default journal.
	Mode string `yaml:"mode"`
	// Journal is the journal file, relative to data_dir (default
	// counters.journal).
	Journal string `yaml:"journal"`
	// FlushInterval is how often buffered deltas are written to the nodes
	// (default 1s).
	FlushInterval time.Duration `yaml:"flush_interval"`
	// CommitDelay is how long a group of increments (a journal commit, a
	// Redis batch) may be held open for more under concurrency (default
	// 1ms; 0 turns it off). See counter.Options.CommitDelay.
	CommitDelay time.Duration `yaml:"commit_delay"`
	// RedisPrefix begins the Redis buffer's keys (default cellar; keys
	// are PREFIX:ctr:...): one per datastore sharing the Redis nodes, as
	// cache.redis_prefix.
	RedisPrefix string `yaml:"redis_prefix"`
}

// CacheConfig configures the object cache.
type CacheConfig struct {
	Enabled bool `yaml:"enabled"`
	// MaxBytes bounds the in-process tier (default 64 MiB).
	MaxBytes int64 `yaml:"max_bytes"`
	// MaxStaleness bounds how stale a latest cell, row or not-found answer
	// may be when served (default 1s).
	MaxStaleness time.Duration `yaml:"max_staleness"`
	// Redis adds the shared Redis tier over the redis nodes.
	Redis bool `yaml:"redis"`
	// RedisPrefix begins the shared tier's keys and channel: one per
	// datastore sharing the Redis nodes (default "cellar").
	RedisPrefix string `yaml:"redis_prefix"`
	// RedisTimeout bounds each round trip to the shared tier (default
	// 100ms); RedisCellTTL is how long it keeps a cell read by its full
	// key (default 1h); RedisRetry is how long a failed Redis node is left
	// alone (default 1s). Zero means the default.
	RedisTimeout time.Duration `yaml:"redis_timeout"`
	RedisCellTTL time.Duration `yaml:"redis_cell_ttl"`
	RedisRetry   time.Duration `yaml:"redis_retry"`
}

// NodeConfig is one storage node.
type NodeConfig struct {
	Name   string `yaml:"name"`
	Driver string `yaml:"driver"` // sqlite, postgres or mysql
	// DSN is the connection string: a file path for sqlite (relative to
	// data_dir), a URL or key=value string for postgres, and
	// user:password@tcp(host:port)/db for mysql.
	DSN string `yaml:"dsn"`
	// MaxConns bounds the node's connection pool (default 32; for sqlite,
	// the read connections, default 8).
	MaxConns int `yaml:"max_conns"`
	// CoalesceReads is how many get (and, apart, latest) statements the
	// node runs at once before further ones are read together in one
	// statement (default 4; -1 turns coalescing off).
	CoalesceReads int `yaml:"coalesce_reads"`
	// CheckpointEvery is how often a sqlite node copies its WAL into the
	// database file, off the write path (default 50ms; a negative value
	// such as -1s leaves it to SQLite, inside the commits). Shorter: lower
	// put p99, fewer puts/s.
	CheckpointEvery time.Duration `yaml:"checkpoint_every"`
}

// AssignmentConfig assigns a range of shards ("0-2047") to a node.
type AssignmentConfig struct {
	Node   string `yaml:"node"`
	Shards string `yaml:"shards"`
}

// AuthConfig lists bearer tokens and their scopes.
type AuthConfig struct {
	Tokens []TokenConfig `yaml:"tokens"`
}

// TokenConfig is one bearer token: its secret inline or, better, in an
// environment variable, and its scopes (read, write, admin).
type TokenConfig struct {
	Token    string   `yaml:"token"`
	TokenEnv string   `yaml:"token_env"`
	Scopes   []string `yaml:"scopes"`
}

// defaultConfig returns the configuration used where nothing is set.
func defaultConfig() *Config {
	return &Config{
		Listen:          "127.0.0.1:7070",
		DataDir:         "./cellar-data",
		Shards:          cellar.DefaultShardCount,
		RequestTimeout:  5 * time.Second,
		NodeTimeout:     2 * time.Second,
		MapRefresh:      5 * time.Second,
		ShutdownTimeout: 30 * time.Second,
		MaxBodyBytes:    cellar.DefaultMaxBodyBytes,
		LogLevel:        "info",
		LogFormat:       "text",
		Counters:        CountersConfig{Mode: "journal", Journal: "counters.journal", FlushInterval: time.Second, CommitDelay: counter.DefaultCommitDelay, RedisPrefix: counter.DefaultRedisPrefix},
		Cache:           CacheConfig{MaxStaleness: time.Second, MaxBytes: 64 << 20},
		Indexes:         IndexesConfig{Workers: index.DefaultWorkers},
	}
}

// loadConfig reads path (if not empty) over the defaults, applies the
// environment, fills in the embedded node if none is configured, and
// validates the result.
func loadConfig(path string) (*Config, error) { return loadConfigWith(path, nil) }

// loadConfigWith is loadConfig with flags applied (by override, if not
// nil) over the file and the environment before the result is completed
// and validated: a flag given replaces a value of theirs that would be
// refused on its own.
func loadConfigWith(path string, override func(*Config)) (*Config, error) {
	cfg := defaultConfig()
	if path != "" {
		raw, err := os.ReadFile(path)
		if err != nil {
			return nil, fmt.Errorf("read config: %w", err)
		}
		dec := yaml.NewDecoder(bytes.NewReader(raw))
		dec.KnownFields(true)
		// An empty file means all defaults.
		if err := dec.Decode(cfg); err != nil && !errors.Is(err, io.EOF) {
			// yaml names the Go types it decodes into ("field listn not
			// found in type main.Config"): a user knows keys, not types.
			return nil, fmt.Errorf("config %s: %s", path, goTypes.ReplaceAllString(err.Error(), ""))
		}
		// A second document would be ignored, and with it whatever the
		// user meant by it.
		var extra yaml.Node
		if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
			return nil, fmt.Errorf("config %s holds more than one YAML document (after ---); put all settings in one", path)
		}
	}
	// The embedded node first, so that CELLAR_NODE_LOCAL_DSN applies to it.
	cfg.addEmbeddedNode()
	if err := applyEnv(cfg, os.LookupEnv); err != nil {
		return nil, err
	}
	if override != nil {
		override(cfg)
	}
	return cfg, cfg.complete()
}

// addEmbeddedNode adds the embedded SQLite node if no node is configured.
func (c *Config) addEmbeddedNode() {
	if len(c.Nodes) == 0 {
		c.Nodes = []NodeConfig{{Name: "local", Driver: "sqlite", DSN: "local.db"}}
	}
}

// complete fills in what follows from the rest (the embedded node, the
// metadata node, a one-node map) and validates the result.
func (c *Config) complete() error {
	c.addEmbeddedNode()
	if c.Metadata == "" {
		c.Metadata = c.Nodes[0].Name
	}
	if len(c.ShardMap) == 0 && len(c.Nodes) == 1 {
		c.ShardMap = []AssignmentConfig{{Node: c.Nodes[0].Name, Shards: fmt.Sprintf("0-%d", c.Shards-1)}}
	}
	return c.validate()
}

// goTypes matches the Go type names in yaml's decoding errors.
var goTypes = regexp.MustCompile(` (in type|into) (\[\])?main\.\w+`)

var nodeNameRE = regexp.MustCompile(`^[A-Za-z][A-Za-z0-9_-]{0,62}$`)

func (c *Config) validate() error {
	if c.Shards < 1 || c.Shards > cellar.MaxShardCount {
		return fmt.Errorf("config: shards must be 1..%d, not %d", cellar.MaxShardCount, c.Shards)
	}
	if c.MaxBodyBytes < 2 {
		return fmt.Errorf("config: max_body_bytes must be at least 2")
	}
	if c.MaxRequestBytes != 0 && c.MaxRequestBytes < c.MaxBodyBytes {
		return fmt.Errorf("config: max_request_bytes (%d) must be at least max_body_bytes (%d)", c.MaxRequestBytes, c.MaxBodyBytes)
	}
	for _, d := range []struct {
		name string
		v    time.Duration
	}{{"request_timeout", c.RequestTimeout}, {"node_timeout", c.NodeTimeout}, {"map_refresh", c.MapRefresh}, {"shutdown_timeout", c.ShutdownTimeout}} {
		if d.v <= 0 {
			return fmt.Errorf("config: %s must be positive", d.name)
		}
		// A day is past any sensible wait, and far from where adding the
		// server's margins (request_timeout + 30s is the write timeout)
		// would overflow.
		if d.v > 24*time.Hour {
			return fmt.Errorf("config: %s must be at most 24h, not %s", d.name, d.v)
		}
	}
	// Each reload is a read of the metadata node by every server.
	if c.MapRefresh < 10*time.Millisecond {
		return fmt.Errorf("config: map_refresh must be at least 10ms, not %s (each server reads the metadata node that often)", c.MapRefresh)
	}
	if err := checkListen(c.Listen); err != nil {
		return err
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(c.LogLevel)); err != nil {
		return fmt.Errorf("config: log_level must be debug, info, warn or error (or one with an offset, such as info+2), not %q", c.LogLevel)
	}
	if c.LogFormat != "text" && c.LogFormat != "json" {
		return fmt.Errorf("config: log_format must be text or json, not %q", c.LogFormat)
	}
	names := map[string]bool{}
	envs := map[string]string{} // environment form -> node name
	dbs := map[string]string{}  // database -> node name
	for _, n := range c.Nodes {
		if !nodeNameRE.MatchString(n.Name) {
			return fmt.Errorf("config: node name %q must match %s", n.Name, nodeNameRE)
		}
		if names[n.Name] {
			return fmt.Errorf("config: node %q is listed twice", n.Name)
		}
		names[n.Name] = true
		if other, ok := envs[envName(n.Name)]; ok {
			return fmt.Errorf("config: node names %q and %q share the environment variable CELLAR_NODE_%s_DSN; rename one", other, n.Name, envName(n.Name))
		}
		envs[envName(n.Name)] = n.Name
		switch n.Driver {
		case "sqlite", "postgres", "mysql":
		default:
			return fmt.Errorf("config: node %s: driver must be sqlite, postgres or mysql, not %q", n.Name, n.Driver)
		}
		if n.DSN == "" {
			return fmt.Errorf("config: node %s has no dsn", n.Name)
		}
		db, err := c.database(n)
		if err != nil {
			return fmt.Errorf("config: node %s: dsn (or CELLAR_NODE_%s_DSN) is %v", n.Name, envName(n.Name), err)
		}
		if other, ok := dbs[db]; ok {
			return fmt.Errorf("config: nodes %s and %s are one database (%s): give each node its own", other, n.Name, db)
		}
		dbs[db] = n.Name
		if n.CheckpointEvery != 0 && n.Driver != "sqlite" {
			return fmt.Errorf("config: node %s: checkpoint_every applies to sqlite nodes only", n.Name)
		}
	}
	if !names[c.Metadata] {
		return fmt.Errorf("config: metadata node %q is not among the nodes", c.Metadata)
	}
	if _, err := c.initialMap(); err != nil {
		return err
	}
	if err := c.validateRedis(); err != nil {
		return err
	}
	for i, t := range c.Auth.Tokens {
		if t.Token != "" && t.TokenEnv != "" {
			return fmt.Errorf("config: auth token %d has both token and token_env: give one", i+1)
		}
		if t.secret() == "" {
			if t.TokenEnv != "" {
				return fmt.Errorf("config: auth token %d: its variable %s (token_env) is unset or empty", i+1, t.TokenEnv)
			}
			return fmt.Errorf("config: auth token %d is empty (token or token_env)", i+1)
		}
		if len(t.Scopes) == 0 {
			return fmt.Errorf("config: auth token %d has no scopes", i+1)
		}
		for _, s := range t.Scopes {
			if s != "read" && s != "write" && s != "admin" {
				return fmt.Errorf("config: auth token %d: scope %q must be read, write or admin", i+1, s)
			}
		}
	}
	return nil
}

// secret is the token's secret, trimmed of surrounding white space as the
// server trims a presented bearer token: a variable filled from a secret
// file usually ends in a newline, which no request can send.
func (t TokenConfig) secret() string {
	if t.TokenEnv != "" {
		return strings.TrimSpace(os.Getenv(t.TokenEnv))
	}
	return strings.TrimSpace(t.Token)
}

// initialMap returns the configured shard map as version 1.
func (c *Config) initialMap() (*cellar.ShardMap, error) {
	m := &cellar.ShardMap{Version: 1, ShardCount: c.Shards}
	nodes := map[string]bool{}
	for _, n := range c.Nodes {
		nodes[n.Name] = true
	}
	for _, a := range c.ShardMap {
		r, err := cellar.ParseShardRange(a.Shards)
		if err != nil {
			return nil, fmt.Errorf("config: shard_map: %s", cellar.ErrorMessage(err))
		}
		m.Assignments = append(m.Assignments, cellar.Assignment{Node: a.Node, ShardRange: r})
	}
	if err := m.Validate(nodes); err != nil {
		return nil, fmt.Errorf("config: shard_map: %s", cellar.ErrorMessage(err))
	}
	return m, nil
}

// applyEnv applies CELLAR_* environment overrides. A variable set but
// empty (as compose files and templated units leave them) counts as unset.
func applyEnv(c *Config, env func(string) (string, bool)) error {
	lookup := func(name string) (string, bool) {
		v, ok := env(name)
		return v, ok && v != ""
	}
	if v, ok := lookup("CELLAR_LISTEN"); ok {
		c.Listen = v
	}
	if v, ok := lookup("CELLAR_DATA_DIR"); ok {
		c.DataDir = v
	}
	if v, ok := lookup("CELLAR_ALLOW_UNAUTHENTICATED"); ok {
		b, err := strconv.ParseBool(v)
		if err != nil {
			return fmt.Errorf("config: CELLAR_ALLOW_UNAUTHENTICATED must be true or false (1, 0, t, f, TRUE, FALSE...), not %q", v)
		}
		c.AllowUnauthenticated = b
	}
	if v, ok := lookup("CELLAR_LOG_LEVEL"); ok {
		c.LogLevel = v
	}
	for i := range c.Nodes {
		if v, ok := lookup("CELLAR_NODE_" + envName(c.Nodes[i].Name) + "_DSN"); ok {
			c.Nodes[i].DSN = v
		}
	}
	return nil
}

// envName turns a node name into its environment form: upper case, with
// '-' as '_'.
func envName(node string) string {
	return strings.ToUpper(strings.ReplaceAll(node, "-", "_"))
}

// requestBytes is max_request_bytes, or if it is unset 64 MiB or
// max_body_bytes if that is larger.
func (c *Config) requestBytes() int {
	if c.MaxRequestBytes != 0 {
		return c.MaxRequestBytes
	}
	return max(cellarhttp.DefaultMaxRequestBytes, c.MaxBodyBytes)
}

// sqlitePath resolves a sqlite node's DSN against the data directory.
func (c *Config) sqlitePath(n NodeConfig) string {
	if filepath.IsAbs(n.DSN) {
		return n.DSN
	}
	return filepath.Join(c.DataDir, n.DSN)
}

// checkListen refuses a listen address that is not host:port with a port
// number (0 for any free one; the host may be left out, for every
// interface), so that a port forgotten or mistyped is named here, before
// anything is opened or created, rather than by net.Listen after the
// datastore was set up (or as a missing auth, since only host:port can be
// loopback).
func checkListen(addr string) error {
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("config: listen must be an address host:port (such as 127.0.0.1:7070), not %q", addr)
	}
	if _, err := strconv.ParseUint(port, 10, 16); err != nil {
		return fmt.Errorf("config: listen %q: the port must be a number in 0..65535, not %q", addr, port)
	}
	return nil
}

// isLoopback reports whether addr (host:port) listens on loopback only.
func isLoopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// validateRedis checks the redis, counters and cache sections.
func (c *Config) validateRedis() error {
	switch c.Counters.Mode {
	case "journal", "redis":
	default:
		return fmt.Errorf("config: counters.mode must be journal or redis, not %q", c.Counters.Mode)
	}
	if c.Counters.FlushInterval <= 0 {
		return fmt.Errorf("config: counters.flush_interval must be positive")
	}
	if c.Counters.CommitDelay < 0 || c.Counters.CommitDelay > time.Second {
		return fmt.Errorf("config: counters.commit_delay must be between 0 (off) and 1s, not %v", c.Counters.CommitDelay)
	}
	for _, d := range []struct {
		name string
		v    time.Duration
	}{{"cache.max_staleness", c.Cache.MaxStaleness}, {"cache.redis_timeout", c.Cache.RedisTimeout}, {"cache.redis_cell_ttl", c.Cache.RedisCellTTL}, {"cache.redis_retry", c.Cache.RedisRetry}, {"redis.timeout", c.Redis.Timeout}} {
		if d.v < 0 {
			return fmt.Errorf("config: %s must not be negative", d.name)
		}
	}
	// Zero would be taken for the defaults further down; refused, so
	// that a 0 written to mean "none" does not silently become 1s or 16.
	if c.Cache.MaxStaleness == 0 {
		return fmt.Errorf("config: cache.max_staleness must be positive (it bounds how long a latest, row or not-found answer is served from the cache; to serve none, leave the cache off)")
	}
	if c.Indexes.Workers < 1 {
		return fmt.Errorf("config: indexes.workers must be at least 1, not %d", c.Indexes.Workers)
	}
	if p := c.Counters.RedisPrefix; p == "" || strings.ContainsFunc(p, unicode.IsControl) || strings.ContainsAny(p, " {}") {
		return fmt.Errorf("config: counters.redis_prefix %q must be non-empty, with no spaces, braces or control characters", p)
	}
	if c.Cache.Enabled && c.Cache.MaxBytes < 0 && !c.Cache.Redis {
		return fmt.Errorf("config: cache.enabled with cache.max_bytes %d (the in-process tier off) and cache.redis false leaves the cache no tier: set max_bytes to 0 or more (0: 64 MiB), turn on cache.redis, or turn the cache off", c.Cache.MaxBytes)
	}
	if (c.Counters.Mode == "redis" || c.Cache.Redis) && len(c.Redis.Nodes) == 0 {
		return fmt.Errorf("config: counters.mode redis and cache.redis need redis.nodes")
	}
	if len(c.Redis.Nodes) > 0 {
		if _, err := c.redisConfig(); err != nil {
			return err
		}
	}
	return nil
}

// redisConfig returns the cluster configuration of the redis section.
func (c *Config) redisConfig() (redis.Config, error) {
	rc := redis.Config{Shards: c.Shards, Timeout: c.Redis.Timeout}
	seen := map[string]bool{}
	for _, n := range c.Redis.Nodes {
		if n.Name == "" || n.Addr == "" {
			return rc, fmt.Errorf("config: every redis node needs a name and an addr")
		}
		if seen[n.Name] {
			return rc, fmt.Errorf("config: redis node %q is listed twice", n.Name)
		}
		seen[n.Name] = true
		if n.DB < 0 {
			return rc, fmt.Errorf("config: redis node %s: db %d is negative", n.Name, n.DB)
		}
		node := redis.Node{Name: n.Name, Addr: n.Addr, DB: n.DB}
		if n.PasswordEnv != "" {
			if node.Password = os.Getenv(n.PasswordEnv); node.Password == "" {
				return rc, fmt.Errorf("config: redis node %s: password_env %s is unset or empty", n.Name, n.PasswordEnv)
			}
		}
		rc.Nodes = append(rc.Nodes, node)
	}
	amap := c.Redis.Map
	if len(amap) == 0 && len(c.Redis.Nodes) == 1 {
		amap = []AssignmentConfig{{Node: c.Redis.Nodes[0].Name, Shards: fmt.Sprintf("0-%d", c.Shards-1)}}
	}
	m := &cellar.ShardMap{ShardCount: c.Shards}
	names := map[string]bool{}
	for _, n := range c.Redis.Nodes {
		names[n.Name] = true
	}
	for _, a := range amap {
		r, err := cellar.ParseShardRange(a.Shards)
		if err != nil {
			return rc, fmt.Errorf("config: redis.map: %s", cellar.ErrorMessage(err))
		}
		m.Assignments = append(m.Assignments, cellar.Assignment{Node: a.Node, ShardRange: r})
	}
	if err := m.Validate(names); err != nil {
		return rc, fmt.Errorf("config: redis.map: %s", cellar.ErrorMessage(err))
	}
	rc.Map = m.Assignments
	return rc, nil
}

// journalPath resolves the counter journal against the data directory.
func (c *Config) journalPath() string {
	if filepath.IsAbs(c.Counters.Journal) {
		return c.Counters.Journal
	}
	return filepath.Join(c.DataDir, c.Counters.Journal)
}

// database names the database n's DSN points at (a SQLite file's absolute
// path, a server's address and database), refusing a DSN that cannot be
// n's kind: one that would otherwise pass for a node that is down
// (PostgreSQL's is parsed only when it connects) or create a SQLite file
// named after a URL.
func (c *Config) database(n NodeConfig) (string, error) {
	switch n.Driver {
	case "postgres":
		return postgres.Database(n.DSN)
	case "mysql":
		return mysql.Database(n.DSN)
	}
	if strings.Contains(n.DSN, "://") {
		return "", fmt.Errorf("a URL, not a file path (driver sqlite takes a path; is the driver wrong?)")
	}
	p, err := filepath.Abs(c.sqlitePath(n))
	return "sqlite:" + p, err
}
