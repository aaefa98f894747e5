package sqlstore

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"

	"github.com/cellar-db/cellar"
)

// ShardMap returns the newest shard map stored on this (metadata) node.
// Returns ErrNotFound if there is none.
func (s *Store) ShardMap(ctx context.Context) (*cellar.ShardMap, error) {
	var raw []byte
	err := s.db.QueryRowContext(ctx, "SELECT map FROM shard_maps ORDER BY version DESC LIMIT 1").Scan(&raw)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, cellar.Errorf(cellar.ENOTFOUND, "node %s holds no shard map", s.name)
	}
	if err != nil {
		return nil, s.wrap(err, "read shard map")
	}
	var m cellar.ShardMap
	if err := json.Unmarshal(raw, &m); err != nil {
		return nil, cellar.Internal(err, "decode shard map")
	}
	return &m, nil
}

// PutShardMap stores m as a new version. Returns ErrConflict if a map with
// that version exists: versions are never overwritten, so two processes
// racing to publish the next version cannot both win. A map whose shard
// count is not the datastore record's (where the node holds one) is
// invalid: the nodes store every cell under its shard of that count.
func (s *Store) PutShardMap(ctx context.Context, m *cellar.ShardMap) error {
	if err := m.Validate(nil); err != nil {
		return err
	}
	raw, err := json.Marshal(m)
	if err != nil {
		return cellar.Internal(err, "encode shard map")
	}
	tx, err := s.db.BeginTx(ctx, s.d.WriteTx)
	if err != nil {
		return s.wrap(err, "store shard map")
	}
	defer tx.Rollback()
	switch ds, err := s.readDatastore(ctx, tx); {
	case errors.Is(err, cellar.ErrNotFound):
	case err != nil:
		return err
	case ds.ShardCount != m.ShardCount:
		return cellar.Errorf(cellar.EINVALID, "shard map of %d shards for a datastore of %d", m.ShardCount, ds.ShardCount)
	}
	var n int
	if err := tx.QueryRowContext(ctx, s.d.Rebind("SELECT COUNT(*) FROM shard_maps WHERE version >= ?"), m.Version).Scan(&n); err != nil {
		return s.wrap(err, "store shard map")
	}
	if n > 0 {
		return cellar.Errorf(cellar.ECONFLICT, "shard map version %d or newer exists", m.Version)
	}
	if _, err := tx.ExecContext(ctx, s.d.Rebind("INSERT INTO shard_maps (version, map, created_at) VALUES (?, ?, ?)"),
		m.Version, raw, s.now().UnixMilli()); err != nil {
		if s.d.UniqueViolation(err) {
			return cellar.Errorf(cellar.ECONFLICT, "shard map version %d exists", m.Version)
		}
		return s.wrap(err, "store shard map")
	}
	if err := tx.Commit(); err != nil {
		return s.wrap(err, "store shard map")
	}
	return nil
}

// SetFence fences (or unfences) writes to shard on this node. A fenced
// shard refuses puts with ErrUnavailable. Fencing takes the shard's sequence
// row lock, so it waits for in-flight writes to the shard and no write can
// commit after it: this is the hook an online shard move builds on.
func (s *Store) SetFence(ctx context.Context, shard int, fenced bool) error {
	if err := s.ensureSeq(ctx, shard); err != nil {
		return err
	}
	f := 0
	if fenced {
		f = 1
	}
	if _, err := s.wdb.ExecContext(ctx, s.d.Rebind("UPDATE shard_seq SET fenced = ? WHERE shard = ?"), f, shard); err != nil {
		return s.wrap(err, "fence shard %d", shard)
	}
	return nil
}
