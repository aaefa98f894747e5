CREATE TABLE IF NOT EXISTS triggers (
  trigger_name VARCHAR(64) CHARACTER SET ascii COLLATE ascii_bin NOT NULL PRIMARY KEY,
  def BLOB NOT NULL,
  created_at BIGINT NOT NULL,
  updated_at BIGINT NOT NULL
) ENGINE=InnoDB;
CREATE TABLE IF NOT EXISTS trigger_shards (
  trigger_name VARCHAR(64) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
  shard INT NOT NULL,
  acked BIGINT NOT NULL,
  delivered BIGINT NOT NULL,
  owner VARBINARY(255) NOT NULL,
  token BIGINT NOT NULL,
  expires_at BIGINT NOT NULL,
  retry_added_id BIGINT NOT NULL,
  attempts INT NOT NULL,
  last_error BLOB NOT NULL,
  retry_at BIGINT NOT NULL,
  PRIMARY KEY (trigger_name, shard)
) ENGINE=InnoDB;
CREATE TABLE IF NOT EXISTS trigger_parked (
  trigger_name VARCHAR(64) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
  shard INT NOT NULL,
  added_id BIGINT NOT NULL,
  row_key VARBINARY(255) NOT NULL,
  col VARCHAR(64) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
  ref_key BIGINT NOT NULL,
  attempts INT NOT NULL,
  last_error BLOB NOT NULL,
  parked_at BIGINT NOT NULL,
  replay INT NOT NULL,
  PRIMARY KEY (trigger_name, shard, added_id)
) ENGINE=InnoDB;
CREATE TABLE IF NOT EXISTS trigger_consumers (
  trigger_name VARCHAR(64) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
  consumer VARBINARY(255) NOT NULL,
  seen_at BIGINT NOT NULL,
  PRIMARY KEY (trigger_name, consumer)
) ENGINE=InnoDB
