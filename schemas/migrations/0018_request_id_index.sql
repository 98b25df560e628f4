-- Lookups by request id at tens of millions of rows, measured again (bench/lookup_bench.py,
-- bench/RESULTS.md "Lookups at 10M rows"). Under FINAL the engine does not use 0015's
-- by_request_id projection, so a dashboard's `SELECT … FROM decisions FINAL WHERE
-- request_id = …` was answered by 0001's bloom filter, whose blocks span four granules:
-- ~95 ms p50 at 10M rows. A second bloom filter on request_id one granule at a time, beside
-- the first, takes it to ~30 ms (1.2 B per event): the coarse filter rules out most of the
-- table in few reads and the fine one leaves the granule that holds the row. Measured and
-- not kept: the fine filter alone (~112 ms: it reads a filter per granule of the table).
--
-- The projection is dropped, and its ~11 B per event with it: `trace`'s key-first lookup
-- (the one query that could use it) takes the same time with and without it once the
-- bloom filters are there.
ALTER TABLE {database}.decisions
    ADD INDEX IF NOT EXISTS idx_request_id_g1 request_id TYPE bloom_filter(0.01) GRANULARITY 1;

-- Rows stored before this migration get the index too (a mutation, run in the background
-- on a server).
ALTER TABLE {database}.decisions MATERIALIZE INDEX idx_request_id_g1;

ALTER TABLE {database}.decisions DROP PROJECTION IF EXISTS by_request_id;
