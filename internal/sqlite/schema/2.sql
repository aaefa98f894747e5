CREATE TABLE IF NOT EXISTS timelines (
  timeline_key BLOB PRIMARY KEY,
  cap INTEGER NOT NULL,
  -- member rows stored, which runs ahead of cap by up to the trim slack
  stored INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS timeline_members (
  timeline_key BLOB NOT NULL,
  member BLOB NOT NULL,
  score REAL NOT NULL,
  PRIMARY KEY (timeline_key, member)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS timeline_members_rank ON timeline_members (timeline_key, score, member);
CREATE TABLE IF NOT EXISTS counters (
  counter_key BLOB PRIMARY KEY,
  -- SQLite turns an integer overflow in value + delta into a REAL: refuse it
  value INTEGER NOT NULL CHECK (typeof(value) = 'integer')
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS counter_flushes (
  flush_id BLOB PRIMARY KEY,
  applied_at INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS counter_flushes_applied_at ON counter_flushes (applied_at)
