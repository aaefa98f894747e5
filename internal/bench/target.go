package bench

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"runtime/pprof"
	"strings"
	"time"

	gomysql "github.com/go-sql-driver/mysql"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/cellar-db/cellar"
	"github.com/cellar-db/cellar/client"
	cellarhttp "github.com/cellar-db/cellar/internal/http"
	"github.com/cellar-db/cellar/internal/metrics"
	"github.com/cellar-db/cellar/internal/mysql"
	"github.com/cellar-db/cellar/internal/postgres"
	"github.com/cellar-db/cellar/internal/shard"
	"github.com/cellar-db/cellar/internal/sqlite"
	"github.com/cellar-db/cellar/internal/sqlstore"
)

// Settings the server under test gets, as `cellar serve` does by default.
const (
	nodeName    = "bench"
	nodeTimeout = 2 * time.Second
)

// target is one datastore under test: a fresh node of one engine behind the
// real HTTP handler on a loopback listener, the lean load generator and the
// Go client of it, and the handles the direct measurements use. openTarget
// starts its server goroutine and Close stops it.
type target struct {
	engine string
	node   *sqlstore.Store
	direct *direct
	lean   *lean
	client *client.Client
	info   string // engine version and durability settings
	// dbPIDs lists the database server's processes on this machine, if
	// it runs here (nil for SQLite).
	dbPIDs func() []int

	srv       *http.Server
	transport *http.Transport
	served    chan error // receives Serve's result
	closers   []func() error
}

// openTarget creates a fresh database for engine and serves it. A SQLite
// node commits each put alone if noGroupCommit is set.
func openTarget(ctx context.Context, cfg *Config, engine string, noGroupCommit bool) (t *target, err error) {
	t = &target{engine: engine}
	defer func() {
		if err != nil {
			t.Close()
		}
	}()
	opts := sqlstore.Options{Name: nodeName, ShardCount: cfg.Shards, Create: true, CoalesceReads: cfg.CoalesceReads}
	var wdb *sql.DB // where direct puts go
	switch engine {
	case "sqlite":
		dir, err := os.MkdirTemp(cfg.SQLiteDir, "cellar-bench-")
		if err != nil {
			return t, fmt.Errorf("create sqlite directory: %w", err)
		}
		t.closers = append(t.closers, func() error { return os.RemoveAll(dir) })
		path := filepath.Join(dir, "node.db")
		if t.node, err = sqlite.Open(ctx, path, sqlite.Options{Options: opts, NoGroupCommit: noGroupCommit}); err != nil {
			return t, err
		}
		// The node's single write connection is not exported; open one
		// like it for direct puts.
		_, wdsn := sqlite.DSNs(path, 0) // the node's default checkpointing
		if wdb, err = sql.Open("sqlite", wdsn); err != nil {
			return t, err
		}
		wdb.SetMaxOpenConns(1)
		wdb.SetMaxIdleConns(1)
		t.closers = append(t.closers, wdb.Close)
	case "postgres":
		dsn, drop, err := createPostgres(ctx, cfg.PostgresDSN)
		if err != nil {
			return t, err
		}
		t.closers = append(t.closers, drop)
		if t.node, err = postgres.Open(ctx, dsn, postgres.Options{Options: opts}); err != nil {
			return t, err
		}
		t.dbPIDs = func() []int { return postgresPIDs(t.node.DB()) }
	case "mysql":
		dsn, drop, err := createMySQL(ctx, cfg.MySQLDSN)
		if err != nil {
			return t, err
		}
		t.closers = append(t.closers, drop)
		if t.node, err = mysql.Open(ctx, dsn, mysql.Options{Options: opts}); err != nil {
			return t, err
		}
		if mysqlIsLocal(dsn) {
			t.dbPIDs = func() []int { return processesNamed("mariadbd", "mysqld") }
		}
	default:
		return t, fmt.Errorf("unknown backend %q", engine)
	}
	t.closers = append(t.closers, t.node.Close)
	if wdb == nil {
		wdb = t.node.DB()
	}
	d := dialects[engine]
	t.direct = newDirect(t.node.DB(), wdb, d, cfg.Shards)
	if t.info, err = engineInfo(ctx, engine, t.node.DB()); err != nil {
		return t, fmt.Errorf("read %s settings: %w", engine, err)
	}
	if n := cfg.CoalesceReads; n < 0 {
		t.info += "; cellar reads every get and latest alone (read coalescing off)"
	} else {
		if n == 0 {
			n = sqlstore.DefaultCoalesceReads
		}
		t.info += fmt.Sprintf("; cellar coalesces gets and latests beyond %d statements in flight", n)
	}
	return t, t.serve(cfg)
}

var dialects = map[string]*sqlstore.Dialect{
	"sqlite":   sqlite.Dialect,
	"postgres": postgres.Dialect,
	"mysql":    mysql.Dialect,
}

// serve wires the node as `cellar serve` does (the sharding layer over the
// node, metrics, the HTTP handler with default limits) and serves it on a
// loopback port.
func (t *target) serve(cfg *Config) error {
	log := slog.New(slog.NewTextHandler(cfg.Log, &slog.HandlerOptions{Level: slog.LevelWarn}))
	reg := prometheus.NewRegistry()
	m := metrics.New(reg, reg)
	smap := &cellar.ShardMap{Version: 1, ShardCount: cfg.Shards, Assignments: []cellar.Assignment{
		{Node: nodeName, ShardRange: cellar.ShardRange{First: 0, Last: cfg.Shards - 1}},
	}}
	store, err := shard.New(smap, []*shard.Node{{Name: nodeName, Driver: t.engine, Store: t.node}},
		shard.Options{NodeTimeout: nodeTimeout, Observe: m.ObserveStorage})
	if err != nil {
		return err
	}
	handler := cellarhttp.NewHandler(store, cellarhttp.Options{Logger: log, Metrics: m, Topology: store.Topology})
	t.srv = &http.Server{
		Handler:           handler,
		ReadHeaderTimeout: 10 * time.Second,
		WriteTimeout:      cellarhttp.DefaultRequestTimeout + 30*time.Second,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	t.served = make(chan error, 1)
	// The label passes to every goroutine the server starts, so that a
	// profile tells the server's CPU from the load generator's.
	go pprof.Do(context.Background(), pprof.Labels("role", "server"), func(context.Context) {
		t.served <- t.srv.Serve(ln)
	})
	t.lean = newLean(ln.Addr().String())

	// Keep-alive connections for every worker, so that no request pays
	// for a TCP handshake.
	idle := max(64, slicesMax(cfg.Concurrency))
	t.transport = &http.Transport{MaxIdleConns: 2 * idle, MaxIdleConnsPerHost: 2 * idle, IdleConnTimeout: 90 * time.Second}
	t.client = client.New("http://"+ln.Addr().String(), client.WithHTTPClient(&http.Client{Transport: t.transport}))
	return nil
}

// postgresPIDs returns the pids of the backends connected to db's
// database, which this machine runs if /proc names them postgres. The
// server's shared background processes (WAL writer, checkpointer) are
// left out: on a shared server they work for other databases too.
func postgresPIDs(db *sql.DB) []int {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	rows, err := db.QueryContext(ctx, "SELECT pid FROM pg_stat_activity WHERE datname = current_database()")
	if err != nil {
		return nil
	}
	defer rows.Close()
	var pids []int
	for rows.Next() {
		var pid int
		if rows.Scan(&pid) != nil {
			return nil
		}
		if comm, err := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid)); err == nil && strings.TrimSpace(string(comm)) == "postgres" {
			pids = append(pids, pid)
		}
	}
	if rows.Err() != nil {
		return nil
	}
	return pids
}

// mysqlIsLocal reports whether dsn names a server on this machine.
func mysqlIsLocal(dsn string) bool {
	cfg, err := gomysql.ParseDSN(dsn)
	if err != nil {
		return false
	}
	if cfg.Net == "unix" {
		return true
	}
	host, _, err := net.SplitHostPort(cfg.Addr)
	if err != nil {
		host = cfg.Addr
	}
	ip := net.ParseIP(host)
	return host == "localhost" || (ip != nil && ip.IsLoopback())
}

// Close stops the server and closes and deletes the database.
func (t *target) Close() error {
	var errs []error
	if t.lean != nil {
		t.lean.closeConns()
	}
	if t.srv != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		errs = append(errs, t.srv.Shutdown(ctx))
		cancel()
		if err := <-t.served; !errors.Is(err, http.ErrServerClosed) {
			errs = append(errs, err)
		}
		t.transport.CloseIdleConnections()
	}
	for i := len(t.closers) - 1; i >= 0; i-- {
		errs = append(errs, t.closers[i]())
	}
	return errors.Join(errs...)
}

func slicesMax(xs []int) int {
	m := 0
	for _, x := range xs {
		m = max(m, x)
	}
	return m
}

func dbName() string {
	b := make([]byte, 6)
	_, _ = rand.Read(b) // never fails
	return "cellar_bench_" + hex.EncodeToString(b)
}

// createPostgres creates a database on the server base names and returns
// its DSN and a function that drops it.
func createPostgres(ctx context.Context, base string) (string, func() error, error) {
	admin, err := sql.Open("pgx", base)
	if err != nil {
		return "", nil, fmt.Errorf("postgres dsn: %w", err)
	}
	name := dbName()
	if _, err := admin.ExecContext(ctx, "CREATE DATABASE "+name); err != nil {
		admin.Close()
		return "", nil, fmt.Errorf("create postgres database: %w", err)
	}
	drop := func() error {
		defer admin.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if _, err := admin.ExecContext(ctx, "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)"); err != nil {
			return fmt.Errorf("drop postgres database %s: %w", name, err)
		}
		return nil
	}
	var dsn string
	if strings.Contains(base, "://") {
		u, err := url.Parse(base)
		if err != nil {
			return "", nil, errors.Join(fmt.Errorf("parse postgres dsn: %w", err), drop())
		}
		u.Path = "/" + name
		dsn = u.String()
	} else {
		dsn = base + " dbname=" + name
	}
	return dsn, drop, nil
}

// createMySQL creates a database on the server base names and returns its
// DSN and a function that drops it.
func createMySQL(ctx context.Context, base string) (string, func() error, error) {
	cfg, err := gomysql.ParseDSN(base)
	if err != nil {
		return "", nil, fmt.Errorf("parse mysql dsn: %w", err)
	}
	cfg.DBName = ""
	admin, err := sql.Open("mysql", cfg.FormatDSN())
	if err != nil {
		return "", nil, fmt.Errorf("mysql dsn: %w", err)
	}
	name := dbName()
	if _, err := admin.ExecContext(ctx, "CREATE DATABASE "+name); err != nil {
		admin.Close()
		return "", nil, fmt.Errorf("create mysql database: %w", err)
	}
	drop := func() error {
		defer admin.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if _, err := admin.ExecContext(ctx, "DROP DATABASE IF EXISTS "+name); err != nil {
			return fmt.Errorf("drop mysql database %s: %w", name, err)
		}
		return nil
	}
	cfg.DBName = name
	return cfg.FormatDSN(), drop, nil
}

// engineInfo describes the engine's version and the settings that decide
// what a commit costs.
func engineInfo(ctx context.Context, engine string, db *sql.DB) (string, error) {
	switch engine {
	case "sqlite":
		var version, journal string
		var syncMode int
		if err := db.QueryRowContext(ctx, "SELECT sqlite_version()").Scan(&version); err != nil {
			return "", err
		}
		if err := db.QueryRowContext(ctx, "PRAGMA journal_mode").Scan(&journal); err != nil {
			return "", err
		}
		if err := db.QueryRowContext(ctx, "PRAGMA synchronous").Scan(&syncMode); err != nil {
			return "", err
		}
		modes := map[int]string{0: "OFF", 1: "NORMAL", 2: "FULL", 3: "EXTRA"}
		return fmt.Sprintf("SQLite %s (modernc.org/sqlite), journal_mode=%s, synchronous=%s, 1 write connection, %d read connections",
			version, journal, modes[syncMode], db.Stats().MaxOpenConnections), nil
	case "postgres":
		var version, syncCommit, fsync, buffers string
		for q, dst := range map[string]*string{
			"SHOW server_version": &version, "SHOW synchronous_commit": &syncCommit,
			"SHOW fsync": &fsync, "SHOW shared_buffers": &buffers,
		} {
			if err := db.QueryRowContext(ctx, q).Scan(dst); err != nil {
				return "", err
			}
		}
		return fmt.Sprintf("PostgreSQL %s (pgx via database/sql), synchronous_commit=%s, fsync=%s, shared_buffers=%s, pool of %d connections",
			version, syncCommit, fsync, buffers, db.Stats().MaxOpenConnections), nil
	case "mysql":
		var version string
		var flush, syncBinlog, bufferPool int64
		if err := db.QueryRowContext(ctx, "SELECT VERSION(), @@innodb_flush_log_at_trx_commit, @@sync_binlog, @@innodb_buffer_pool_size").
			Scan(&version, &flush, &syncBinlog, &bufferPool); err != nil {
			return "", err
		}
		return fmt.Sprintf("MySQL/MariaDB %s (go-sql-driver/mysql, interpolated parameters), innodb_flush_log_at_trx_commit=%d, sync_binlog=%d, innodb_buffer_pool_size=%dMiB, pool of %d connections",
			version, flush, syncBinlog, bufferPool>>20, db.Stats().MaxOpenConnections), nil
	}
	return "", fmt.Errorf("unknown backend %q", engine)
}
