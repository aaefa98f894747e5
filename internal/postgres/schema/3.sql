CREATE TABLE IF NOT EXISTS triggers (
  trigger_name TEXT COLLATE "C" PRIMARY KEY,
  def BYTEA NOT NULL,
  created_at BIGINT NOT NULL,
  updated_at BIGINT NOT NULL
);
CREATE TABLE IF NOT EXISTS trigger_shards (
  trigger_name TEXT COLLATE "C" NOT NULL,
  shard INTEGER NOT NULL,
  acked BIGINT NOT NULL,
  delivered BIGINT NOT NULL,
  owner TEXT COLLATE "C" NOT NULL,
  token BIGINT NOT NULL,
  expires_at BIGINT NOT NULL,
  retry_added_id BIGINT NOT NULL,
  attempts INTEGER NOT NULL,
  last_error TEXT NOT NULL,
  retry_at BIGINT NOT NULL,
  PRIMARY KEY (trigger_name, shard)
);
CREATE TABLE IF NOT EXISTS trigger_parked (
  trigger_name TEXT COLLATE "C" NOT NULL,
  shard INTEGER NOT NULL,
  added_id BIGINT NOT NULL,
  row_key BYTEA NOT NULL,
  col TEXT COLLATE "C" NOT NULL,
  ref_key BIGINT NOT NULL,
  attempts INTEGER NOT NULL,
  last_error TEXT NOT NULL,
  parked_at BIGINT NOT NULL,
  replay INTEGER NOT NULL,
  PRIMARY KEY (trigger_name, shard, added_id)
);
CREATE TABLE IF NOT EXISTS trigger_consumers (
  trigger_name TEXT COLLATE "C" NOT NULL,
  consumer TEXT COLLATE "C" NOT NULL,
  seen_at BIGINT NOT NULL,
  PRIMARY KEY (trigger_name, consumer)
)
