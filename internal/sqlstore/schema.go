package sqlstore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"

	"github.com/cellar-db/cellar"
)

// querier is what *sql.DB and *sql.Conn share.
type querier interface {
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
}

// SchemaVersion returns the node's schema version, or 0 if the node has no
// cellar schema yet.
func SchemaVersion(ctx context.Context, db querier) (int, error) {
	var v int
	err := db.QueryRowContext(ctx, "SELECT MAX(version) FROM cellar_schema").Scan(&v)
	if err != nil {
		// The table is missing on a fresh node; engines word this
		// differently, so probe for it by running a query that cannot fail
		// otherwise.
		if _, err2 := db.ExecContext(ctx, "SELECT 1"); err2 != nil {
			return 0, err2
		}
		return 0, nil
	}
	return v, nil
}

// Migrate brings the node's schema up to the newest version the dialect
// knows. It refuses a node whose schema is newer than that.
func Migrate(ctx context.Context, db *sql.DB, d *Dialect) error {
	conn, err := db.Conn(ctx)
	if err != nil {
		return fmt.Errorf("connect: %w", err)
	}
	defer conn.Close()
	if d.Lock != nil {
		unlock, err := d.Lock(ctx, conn)
		if err != nil {
			return fmt.Errorf("take migration lock: %w", err)
		}
		defer unlock()
	}
	have, err := SchemaVersion(ctx, conn)
	if err != nil {
		return fmt.Errorf("read schema version: %w", err)
	}
	if have > len(d.Migrations) {
		return fmt.Errorf("node has schema version %d, newer than this cellar binary knows (%d): upgrade cellar", have, len(d.Migrations))
	}
	for v := have + 1; v <= len(d.Migrations); v++ {
		for _, stmt := range strings.Split(d.Migrations[v-1], ";\n") {
			if strings.TrimSpace(stmt) == "" {
				continue
			}
			if _, err := conn.ExecContext(ctx, stmt); err != nil {
				return fmt.Errorf("migrate to schema version %d: %w", v, err)
			}
		}
		if _, err := conn.ExecContext(ctx, d.Rebind("INSERT INTO cellar_schema (version) VALUES (?)"), v); err != nil {
			return fmt.Errorf("record schema version %d: %w", v, err)
		}
	}
	return nil
}

// checkSchema refuses a node whose schema version is not the one this
// binary was built for, saying what to do.
func checkSchema(ctx context.Context, db *sql.DB, d *Dialect, name string) error {
	have, err := SchemaVersion(ctx, db)
	if err != nil {
		return cellar.Unavailable(err, "node %s: cannot read schema version", name)
	}
	want := len(d.Migrations)
	switch {
	case have == 0:
		return cellar.Errorf(cellar.EINVALID, "node %s has no cellar schema: run `cellar init` with this node in the config to create it", name)
	case have < want:
		return cellar.Errorf(cellar.EINVALID, "node %s has schema version %d but this cellar needs %d: run `cellar init` to migrate it", name, have, want)
	case have > want:
		return cellar.Errorf(cellar.EINVALID, "node %s has schema version %d, newer than this cellar binary knows (%d): upgrade cellar", name, have, want)
	}
	return nil
}

// Datastore is the record of a datastore, kept on its metadata node.
type Datastore struct {
	ShardCount int
}

// ReadDatastore returns the datastore record. Returns ErrNotFound if this
// node holds none (it is not an initialized metadata node).
func (s *Store) ReadDatastore(ctx context.Context) (Datastore, error) {
	return s.readDatastore(ctx, s.db)
}

// readDatastore is ReadDatastore through q (the node, or a transaction).
func (s *Store) readDatastore(ctx context.Context, q interface {
	QueryRowContext(context.Context, string, ...any) *sql.Row
}) (Datastore, error) {
	var ds Datastore
	err := q.QueryRowContext(ctx, "SELECT shard_count FROM datastore WHERE id = 1").Scan(&ds.ShardCount)
	if errors.Is(err, sql.ErrNoRows) {
		return ds, cellar.Errorf(cellar.ENOTFOUND, "node %s holds no datastore record", s.name)
	}
	if err != nil {
		return ds, s.wrap(err, "read datastore record")
	}
	return ds, nil
}

// CreateDatastore writes the datastore record if there is none. Returns
// ErrConflict if one exists with a different shard count. Several
// processes may run it at once on a new node (`cellar init`, or embedded
// servers on their first start): a loser of the insert reads the winner's
// record and compares.
func (s *Store) CreateDatastore(ctx context.Context, ds Datastore) error {
	have, err := s.ReadDatastore(ctx)
	if errors.Is(err, cellar.ErrNotFound) {
		_, err = s.db.ExecContext(ctx, s.d.Rebind("INSERT INTO datastore (id, shard_count, created_at) VALUES (1, ?, ?)"),
			ds.ShardCount, s.now().UnixMilli())
		if err == nil {
			return nil
		}
		if !s.d.UniqueViolation(err) {
			return s.wrap(err, "create datastore record")
		}
		have, err = s.ReadDatastore(ctx)
	}
	if err != nil {
		return err
	}
	if have.ShardCount != ds.ShardCount {
		return cellar.Errorf(cellar.ECONFLICT, "datastore exists with %d shards, not %d; the shard count cannot change", have.ShardCount, ds.ShardCount)
	}
	return nil
}
