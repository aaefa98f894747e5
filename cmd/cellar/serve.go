package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/cellar-db/cellar"
	"github.com/cellar-db/cellar/internal/cache"
	"github.com/cellar-db/cellar/internal/counter"
	cellarhttp "github.com/cellar-db/cellar/internal/http"
	"github.com/cellar-db/cellar/internal/index"
	"github.com/cellar-db/cellar/internal/metrics"
	"github.com/cellar-db/cellar/internal/redis"
	"github.com/cellar-db/cellar/internal/shard"
	"github.com/cellar-db/cellar/internal/sqlstore"
	"github.com/cellar-db/cellar/internal/trigger"
)

// runServe implements `cellar serve`.
func runServe(ctx context.Context, args []string, stderr io.Writer) int {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	fs.SetOutput(stderr)
	configPath := fs.String("config", envOr("CELLAR_CONFIG", ""), "config file (YAML); default: the embedded SQLite datastore under --data-dir")
	listen := fs.String("listen", "", "listen address (overrides config; default 127.0.0.1:7070)")
	dataDir := fs.String("data-dir", "", "data directory (overrides config; default ./cellar-data)")
	allow := fs.Bool("allow-unauthenticated", false, "allow listening on a non-loopback address without auth tokens")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: cellar serve [--config FILE] [--listen ADDR] [--data-dir DIR]\n\nServes the HTTP API. Without a config it runs the embedded SQLite datastore,\ncreating it on first start.")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return parseExit(err)
	}
	// A flag given overrides the file and the environment, whatever its
	// value (--allow-unauthenticated=false included), before either is
	// validated; one not given leaves them.
	cfg, err := loadConfigWith(*configPath, func(cfg *Config) {
		fs.Visit(func(f *flag.Flag) {
			switch f.Name {
			case "listen":
				cfg.Listen = *listen
			case "data-dir":
				cfg.DataDir = *dataDir
			case "allow-unauthenticated":
				cfg.AllowUnauthenticated = *allow
			}
		})
	})
	if err != nil {
		fmt.Fprintf(stderr, "cellar: %v\n", err)
		return 2
	}
	log := newLogger(cfg, stderr)
	if err := serve(ctx, cfg, *configPath == "", log, nil); err != nil {
		log.Error("cellar serve failed", "err", err)
		return 1
	}
	return 0
}

// serve runs the server until ctx is cancelled, then drains it. If embedded
// is set (no config file), the datastore is created on first start. ready,
// if not nil, receives the listening address.
func serve(ctx context.Context, cfg *Config, embedded bool, log *slog.Logger, ready chan<- string) error {
	if err := cfg.complete(); err != nil {
		return err
	}
	if len(cfg.Auth.Tokens) == 0 && !isLoopback(cfg.Listen) && !cfg.AllowUnauthenticated {
		return fmt.Errorf("refusing to listen on %s without auth: configure auth.tokens, or pass --allow-unauthenticated if something else protects this address", cfg.Listen)
	}
	if embedded {
		if err := initDatastore(ctx, cfg, log); err != nil {
			return fmt.Errorf("create embedded datastore in %s: %w", cfg.DataDir, err)
		}
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	m := metrics.New(reg, reg)

	stores, meta, err := openNodes(ctx, cfg, log)
	defer func() {
		for _, s := range stores {
			s.Close()
		}
	}()
	if err != nil {
		return err
	}
	ds, err := meta.ReadDatastore(ctx)
	if errors.Is(err, cellar.ErrNotFound) {
		return fmt.Errorf("node %s holds no datastore: run `cellar init` with this config first", cfg.Metadata)
	}
	if err != nil {
		return fmt.Errorf("read datastore record from metadata node %s: %w", cfg.Metadata, err)
	}
	if ds.ShardCount != cfg.Shards {
		return fmt.Errorf("the datastore has %d shards but the config says %d: set shards: %d", ds.ShardCount, cfg.Shards, ds.ShardCount)
	}
	smap, err := meta.ShardMap(ctx)
	if err != nil {
		return fmt.Errorf("read shard map from metadata node %s: %w", cfg.Metadata, err)
	}
	// The nodes store each cell under its shard of the datastore's count:
	// a map of another count would route keys elsewhere. (A running
	// server refuses such a map too: SetMap keeps the count.)
	if smap.ShardCount != ds.ShardCount {
		return fmt.Errorf("the shard map (version %d) on metadata node %s has %d shards but the datastore %d: publish a map of %d shards", smap.Version, cfg.Metadata, smap.ShardCount, ds.ShardCount, ds.ShardCount)
	}
	var nodes []*shard.Node
	for _, n := range cfg.Nodes {
		nodes = append(nodes, &shard.Node{Name: n.Name, Driver: n.Driver, Store: stores[n.Name]})
	}
	// The trigger engine reads cells through the store, so it is made
	// after it; until then no put can be served, and the engine's first
	// read of the heads finds whatever came before.
	var engine atomic.Pointer[trigger.Engine]
	committed := func(shard int, addedID int64, column string) {
		if e := engine.Load(); e != nil {
			e.Notify(shard, addedID, column)
		}
	}
	store, err := shard.New(smap, nodes, shard.Options{NodeTimeout: cfg.NodeTimeout, Observe: m.ObserveStorage, Committed: committed})
	if err != nil {
		return fmt.Errorf("shard map version %d does not fit the configured nodes: %w", smap.Version, err)
	}

	// The trigger state, index records and map reloads on the metadata
	// node are observed as the data nodes' calls are.
	metaCalls := &observedMeta{Store: meta, node: cfg.Metadata, observe: m.ObserveStorage}

	// Shutdown order (defers run last first): drain HTTP, close the cache,
	// flush counters, close Redis, stop index maintenance, stop the trigger
	// engine, close the nodes.
	triggers, err := trigger.New(trigger.Options{
		Cells:      store,
		State:      metaCalls,
		KnownHeads: trigger.NodeHeads(store.Map, nodes, cfg.NodeTimeout),
		ShardCount: smap.ShardCount,
		Observe:    m,
	})
	if err != nil {
		return fmt.Errorf("start triggers: %w", err)
	}
	engine.Store(triggers)
	triggers.Start()
	defer triggers.Close()
	// Index maintenance and queries read the uncached store: they must see
	// the latest cells.
	indexes, err := index.New(index.Options{
		Cells:      store,
		Entries:    store,
		Records:    metaCalls,
		Triggers:   triggers,
		ShardCount: smap.ShardCount,
		Workers:    cfg.Indexes.Workers,
		Logger:     log,
	})
	if err != nil {
		return fmt.Errorf("start indexes: %w", err)
	}
	indexes.Start()
	defer indexes.Close()

	var cluster *redis.Cluster
	redis.SetLogger(log)
	if len(cfg.Redis.Nodes) > 0 {
		rc, err := cfg.redisConfig()
		if err != nil {
			return err
		}
		if cluster, err = redis.Open(rc); err != nil {
			return fmt.Errorf("open redis nodes: %w", err)
		}
		defer cluster.Close()
	}
	counters, err := openCounters(ctx, cfg, store, cluster, log)
	if err != nil {
		return err
	}
	defer counters.Close()
	m.CounterBuffer(cfg.Counters.Mode, func() metrics.CounterTotals {
		st := counters.Stats()
		return metrics.CounterTotals{Increments: st.Increments, Commits: st.Commits, Flushes: st.Flushes,
			Statements: st.Statements, FlushErrors: st.FlushErrors, Rejected: st.Rejected}
	})
	var reads cellar.Store = store
	if cfg.Cache.Enabled {
		opts := cache.Options{
			MaxBytes:     cfg.Cache.MaxBytes,
			MaxStaleness: cfg.Cache.MaxStaleness,
			RedisPrefix:  cfg.Cache.RedisPrefix,
			RedisTimeout: cfg.Cache.RedisTimeout,
			RedisCellTTL: cfg.Cache.RedisCellTTL,
			RedisRetry:   cfg.Cache.RedisRetry,
			Observer:     m,
			Logger:       log,
		}
		if cfg.Cache.Redis {
			opts.Redis = cluster
		}
		c, err := cache.New(store, opts)
		if err != nil {
			return fmt.Errorf("open cache: %w", err)
		}
		defer c.Close()
		reads = c
	}

	var draining atomic.Bool
	var tokens []cellarhttp.Token
	for _, t := range cfg.Auth.Tokens {
		tokens = append(tokens, cellarhttp.Token{Secret: t.secret(), Scopes: t.Scopes})
	}
	handler := cellarhttp.NewHandler(reads, cellarhttp.Options{
		MaxBodyBytes:    cfg.MaxBodyBytes,
		MaxRequestBytes: cfg.requestBytes(),
		RequestTimeout:  cfg.RequestTimeout,
		Tokens:          tokens,
		Logger:          log,
		Metrics:         m,
		Topology:        store.Topology,
		Timelines:       store,
		Counters:        counters,
		Triggers:        triggers,
		Indexes:         indexes,
		Ready: func(context.Context) error {
			if draining.Load() {
				return cellar.Errorf(cellar.EUNAVAILABLE, "shutting down")
			}
			return nil
		},
	})
	srv := &http.Server{
		Handler:           handler,
		ReadHeaderTimeout: 10 * time.Second,
		// Bounds slow readers of large responses; the handler already bounds
		// reading the request to the request timeout.
		WriteTimeout: cfg.RequestTimeout + 30*time.Second,
		IdleTimeout:  2 * time.Minute,
		ErrorLog:     slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return err
	}
	log.Info("cellar serving", "addr", ln.Addr().String(), "shards", smap.ShardCount, "map_version", smap.Version, "nodes", len(nodes), "auth", len(tokens) > 0)
	if ready != nil {
		ready <- ln.Addr().String()
	}

	// The map refresher is owned here: started before serving, stopped
	// (cancel + wait) before the nodes close.
	refreshCtx, stopRefresh := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		refreshMap(refreshCtx, metaCalls, store, cfg.MapRefresh, cfg.NodeTimeout, log)
	}()
	defer func() {
		stopRefresh()
		wg.Wait()
	}()

	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	draining.Store(true)
	log.Info("draining in-flight requests", "timeout", cfg.ShutdownTimeout)
	sctx, cancel := context.WithTimeout(context.Background(), cfg.ShutdownTimeout)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		// Requests still running past the drain: close their connections,
		// which ends their contexts, so that they stop before the stores
		// and buffers they use are closed below.
		srv.Close()
		return fmt.Errorf("drain: %w", err)
	}
	log.Info("stopped")
	return nil
}

// counterStore is a counter buffer: a journal or a Redis buffer.
type counterStore interface {
	cellar.CounterStore
	Stats() counter.Stats
	Close() error
}

// openCounters opens the counter buffer the config asks for, in front of
// the nodes.
func openCounters(ctx context.Context, cfg *Config, nodes cellar.CounterNode, cluster *redis.Cluster, log *slog.Logger) (counterStore, error) {
	opts := counter.Options{FlushInterval: cfg.Counters.FlushInterval, CommitDelay: cfg.Counters.CommitDelay, RedisPrefix: cfg.Counters.RedisPrefix, Logger: log}
	if opts.CommitDelay == 0 {
		opts.CommitDelay = -1 // off, as configured
	}
	if cfg.Counters.Mode == "redis" {
		b, err := counter.OpenRedis(ctx, cluster, nodes, opts)
		if err != nil {
			return nil, fmt.Errorf("open redis counter buffer: %w", err)
		}
		return b, nil
	}
	j, err := counter.OpenJournal(ctx, cfg.journalPath(), nodes, opts)
	if err != nil {
		return nil, err // it names the journal
	}
	return j, nil
}

// openNodes opens every configured node. A node that is down is opened
// lazily (its shards fail until it answers); a node with the wrong schema
// stops the start, with a message saying what to do. The metadata node must
// answer.
func openNodes(ctx context.Context, cfg *Config, log *slog.Logger) (map[string]*sqlstore.Store, *sqlstore.Store, error) {
	stores := make(map[string]*sqlstore.Store)
	for _, n := range cfg.Nodes {
		s, err := openNode(ctx, cfg, n, cfg.Shards, false, true)
		if err != nil {
			return stores, nil, err
		}
		stores[n.Name] = s
		cctx, cancel := context.WithTimeout(ctx, cfg.NodeTimeout)
		err = s.Check(cctx)
		cancel()
		switch {
		case err == nil:
		case cellar.ErrorCode(err) == cellar.EUNAVAILABLE && n.Name != cfg.Metadata:
			log.Warn("node is unavailable; its shards will fail until it answers", "node", n.Name, "err", err)
		default:
			return stores, nil, err
		}
	}
	return stores, stores[cfg.Metadata], nil
}

// mapSource is where refreshMap reads the shard map: the metadata node.
type mapSource interface {
	ShardMap(ctx context.Context) (*cellar.ShardMap, error)
}

// mapHolder is what refreshMap installs maps in: the sharding layer.
type mapHolder interface {
	Map() *cellar.ShardMap
	SetMap(m *cellar.ShardMap) error
}

// refreshMap reloads the shard map from the metadata node every interval,
// each read bounded by timeout (a metadata node that hangs would otherwise
// stop the refreshes for good), and installs newer versions, so that all
// servers converge on one map.
func refreshMap(ctx context.Context, meta mapSource, store mapHolder, every, timeout time.Duration, log *slog.Logger) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		rctx, cancel := context.WithTimeout(ctx, timeout)
		m, err := meta.ShardMap(rctx)
		cancel()
		if err != nil {
			log.Warn("cannot refresh shard map", "err", err)
			continue
		}
		if m.Version <= store.Map().Version {
			continue
		}
		if err := store.SetMap(m); err != nil {
			log.Error("new shard map rejected", "version", m.Version, "err", err)
			continue
		}
		log.Info("installed new shard map", "version", m.Version)
	}
}

func newLogger(cfg *Config, w io.Writer) *slog.Logger {
	var level slog.Level // validate refused what does not parse
	if err := level.UnmarshalText([]byte(cfg.LogLevel)); err != nil {
		level = slog.LevelInfo
	}
	opts := &slog.HandlerOptions{Level: level}
	if cfg.LogFormat == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

func envOr(name, def string) string {
	if v, ok := os.LookupEnv(name); ok {
		return v
	}
	return def
}
