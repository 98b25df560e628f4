-- A lookup by request id as a dashboard writes it (`SELECT … FROM decisions FINAL WHERE
-- request_id = …`) at tens of millions of rows (bench/lookup_bench.py, bench/RESULTS.md).
-- Under FINAL the engine does not use 0015's by_request_id projection, so such a query was
-- answered by 0001's bloom filter, whose blocks span four granules: 87 ms p50 at 10M rows.
-- A second bloom filter on request_id one granule at a time, beside the first, takes it to
-- 29 ms (1.2 B per event): the coarse filter rules out most of the table in few reads and
-- the fine one leaves the one granule that holds the row. Measured and not kept: the fine
-- filter alone (104 ms: it reads a filter per granule of the table).
ALTER TABLE {database}.decisions
    ADD INDEX IF NOT EXISTS idx_request_id_g1 request_id TYPE bloom_filter(0.01) GRANULARITY 1;

-- Rows stored before this migration get the index too (a mutation, run in the background
-- on a server).
ALTER TABLE {database}.decisions MATERIALIZE INDEX idx_request_id_g1;
