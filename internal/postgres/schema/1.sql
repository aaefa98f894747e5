CREATE TABLE IF NOT EXISTS cellar_schema (version INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS cells (
  shard INTEGER NOT NULL,
  added_id BIGINT NOT NULL,
  row_key BYTEA NOT NULL,
  col TEXT COLLATE "C" NOT NULL,
  ref_key BIGINT NOT NULL,
  body BYTEA NOT NULL,
  created_at BIGINT NOT NULL,
  PRIMARY KEY (shard, added_id)
);
CREATE UNIQUE INDEX IF NOT EXISTS cells_key ON cells (row_key, col, ref_key);
CREATE TABLE IF NOT EXISTS shard_seq (
  shard INTEGER PRIMARY KEY,
  last_added_id BIGINT NOT NULL,
  fenced INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS datastore (
  id INTEGER PRIMARY KEY,
  shard_count INTEGER NOT NULL,
  created_at BIGINT NOT NULL
);
CREATE TABLE IF NOT EXISTS shard_maps (
  version BIGINT PRIMARY KEY,
  map BYTEA NOT NULL,
  created_at BIGINT NOT NULL
)
