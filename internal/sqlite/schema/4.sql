CREATE TABLE IF NOT EXISTS indexes (
  index_name TEXT PRIMARY KEY,
  -- the definition and the generations as JSON (internal/index)
  def BLOB NOT NULL,
  created_at INTEGER NOT NULL,
  updated_at INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS index_entries (
  index_name TEXT NOT NULL,
  gen INTEGER NOT NULL,
  shard INTEGER NOT NULL,
  -- the encoded field values; empty for fields the index does not have
  k1 BLOB NOT NULL,
  k2 BLOB NOT NULL,
  k3 BLOB NOT NULL,
  k4 BLOB NOT NULL,
  row_key BLOB NOT NULL,
  ref_key INTEGER NOT NULL,
  PRIMARY KEY (index_name, gen, shard, k1, k2, k3, k4, row_key)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS index_rows (
  index_name TEXT NOT NULL,
  gen INTEGER NOT NULL,
  row_key BLOB NOT NULL,
  -- where the row's entries may be, as JSON
  locs BLOB NOT NULL,
  PRIMARY KEY (index_name, gen, row_key)
) WITHOUT ROWID
