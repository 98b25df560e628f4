-- The long text columns compress with ZSTD level 1 instead of 3: writing a 10k-event batch
-- into decisions takes ~15 % less time (the worker's copy is on its critical path), for
-- ~14 % more bytes on disk per stored event (206 -> 234 B merged; bench/RESULTS.md). A codec
-- change rewrites nothing: parts written before keep their codec until merged. To favour
-- disk over insert speed, run these statements with ZSTD(3) (or higher) instead.
ALTER TABLE {database}.decisions MODIFY COLUMN raw String CODEC(ZSTD(1));
ALTER TABLE {database}.decisions MODIFY COLUMN inputs String CODEC(ZSTD(1));
ALTER TABLE {database}.decisions MODIFY COLUMN explanation Nullable(String) CODEC(ZSTD(1));
