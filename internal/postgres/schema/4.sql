CREATE TABLE IF NOT EXISTS indexes (
  index_name TEXT COLLATE "C" PRIMARY KEY,
  def BYTEA NOT NULL,
  created_at BIGINT NOT NULL,
  updated_at BIGINT NOT NULL
);
CREATE TABLE IF NOT EXISTS index_entries (
  index_name TEXT COLLATE "C" NOT NULL,
  gen BIGINT NOT NULL,
  shard INTEGER NOT NULL,
  k1 BYTEA NOT NULL,
  k2 BYTEA NOT NULL,
  k3 BYTEA NOT NULL,
  k4 BYTEA NOT NULL,
  row_key BYTEA NOT NULL,
  ref_key BIGINT NOT NULL,
  PRIMARY KEY (index_name, gen, shard, k1, k2, k3, k4, row_key)
);
CREATE TABLE IF NOT EXISTS index_rows (
  index_name TEXT COLLATE "C" NOT NULL,
  gen BIGINT NOT NULL,
  row_key BYTEA NOT NULL,
  locs BYTEA NOT NULL,
  PRIMARY KEY (index_name, gen, row_key)
)
