CREATE TABLE IF NOT EXISTS timelines (
  timeline_key BYTEA PRIMARY KEY,
  cap INTEGER NOT NULL,
  stored INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS timeline_members (
  timeline_key BYTEA NOT NULL,
  member BYTEA NOT NULL,
  score DOUBLE PRECISION NOT NULL,
  PRIMARY KEY (timeline_key, member)
);
CREATE INDEX IF NOT EXISTS timeline_members_rank ON timeline_members (timeline_key, score, member);
CREATE TABLE IF NOT EXISTS counters (
  counter_key BYTEA PRIMARY KEY,
  value BIGINT NOT NULL
);
CREATE TABLE IF NOT EXISTS counter_flushes (
  flush_id BYTEA PRIMARY KEY,
  applied_at BIGINT NOT NULL
);
CREATE INDEX IF NOT EXISTS counter_flushes_applied_at ON counter_flushes (applied_at)
