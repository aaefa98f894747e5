CREATE TABLE IF NOT EXISTS triggers (
  trigger_name TEXT PRIMARY KEY,
  -- the definition as JSON: columns, start, max_attempts, park_threshold
  def BLOB NOT NULL,
  created_at INTEGER NOT NULL,
  updated_at INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS trigger_shards (
  trigger_name TEXT NOT NULL,
  shard INTEGER NOT NULL,
  -- the offset: added_id of the last acknowledged cell
  acked INTEGER NOT NULL,
  -- the highest added_id delivered under the current lease
  delivered INTEGER NOT NULL,
  owner TEXT NOT NULL,
  token INTEGER NOT NULL,
  expires_at INTEGER NOT NULL,
  -- the cell being retried after a nack, and its backoff
  retry_added_id INTEGER NOT NULL,
  attempts INTEGER NOT NULL,
  last_error TEXT NOT NULL,
  retry_at INTEGER NOT NULL,
  PRIMARY KEY (trigger_name, shard)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS trigger_parked (
  trigger_name TEXT NOT NULL,
  shard INTEGER NOT NULL,
  added_id INTEGER NOT NULL,
  row_key BLOB NOT NULL,
  col TEXT NOT NULL,
  ref_key INTEGER NOT NULL,
  attempts INTEGER NOT NULL,
  last_error TEXT NOT NULL,
  parked_at INTEGER NOT NULL,
  -- 0 parked, 1 to replay, 2 replayed to a consumer and not yet acked
  replay INTEGER NOT NULL,
  PRIMARY KEY (trigger_name, shard, added_id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS trigger_consumers (
  trigger_name TEXT NOT NULL,
  consumer TEXT NOT NULL,
  seen_at INTEGER NOT NULL,
  PRIMARY KEY (trigger_name, consumer)
) WITHOUT ROWID
