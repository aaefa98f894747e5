CREATE TABLE IF NOT EXISTS cellar_schema (version INT NOT NULL) ENGINE=InnoDB;
CREATE TABLE IF NOT EXISTS cells (
  shard INT NOT NULL,
  added_id BIGINT NOT NULL,
  row_key VARBINARY(255) NOT NULL,
  col VARCHAR(64) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
  ref_key BIGINT NOT NULL,
  body LONGBLOB NOT NULL,
  created_at BIGINT NOT NULL,
  PRIMARY KEY (shard, added_id),
  UNIQUE KEY cells_key (row_key, col, ref_key)
) ENGINE=InnoDB;
CREATE TABLE IF NOT EXISTS shard_seq (
  shard INT NOT NULL PRIMARY KEY,
  last_added_id BIGINT NOT NULL,
  fenced INT NOT NULL DEFAULT 0
) ENGINE=InnoDB;
CREATE TABLE IF NOT EXISTS datastore (
  id INT NOT NULL PRIMARY KEY,
  shard_count INT NOT NULL,
  created_at BIGINT NOT NULL
) ENGINE=InnoDB;
CREATE TABLE IF NOT EXISTS shard_maps (
  version BIGINT NOT NULL PRIMARY KEY,
  map BLOB NOT NULL,
  created_at BIGINT NOT NULL
) ENGINE=InnoDB
