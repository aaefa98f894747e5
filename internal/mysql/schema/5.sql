-- A BLOB holds at most 64 KiB: a shard map of many small ranges, or an
-- index row of many locations, can be larger.
ALTER TABLE shard_maps MODIFY map LONGBLOB NOT NULL;
ALTER TABLE index_rows MODIFY locs LONGBLOB NOT NULL
