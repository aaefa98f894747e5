CREATE TABLE IF NOT EXISTS timelines (
  timeline_key VARBINARY(255) NOT NULL PRIMARY KEY,
  cap INT NOT NULL,
  stored INT NOT NULL
) ENGINE=InnoDB;
CREATE TABLE IF NOT EXISTS timeline_members (
  timeline_key VARBINARY(255) NOT NULL,
  member VARBINARY(255) NOT NULL,
  score DOUBLE NOT NULL,
  PRIMARY KEY (timeline_key, member),
  KEY timeline_members_rank (timeline_key, score, member)
) ENGINE=InnoDB;
CREATE TABLE IF NOT EXISTS counters (
  counter_key VARBINARY(255) NOT NULL PRIMARY KEY,
  value BIGINT NOT NULL
) ENGINE=InnoDB;
CREATE TABLE IF NOT EXISTS counter_flushes (
  flush_id VARBINARY(255) NOT NULL PRIMARY KEY,
  applied_at BIGINT NOT NULL,
  KEY counter_flushes_applied_at (applied_at)
) ENGINE=InnoDB
