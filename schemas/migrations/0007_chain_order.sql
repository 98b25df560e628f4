-- Chain order beside the lookup order. `decisions` is sorted for lookups (model, version,
-- time); the integrity tools read it per chain (producer_id, producer_epoch) in seq order.
-- `verify` sorts the ~110 bytes an event its chain walk needs in the engine (spilling to
-- disk past a bound), and reads a chain's seq range with a PREWHERE on the chain columns;
-- a projection ordered by chain and seq was measured and not kept (bench/RESULTS.md: it
-- made a worker's check of redelivered events ~10x slower for ~2x on one chain's range).
-- What is kept is the chain index that pays:
--
-- chain_heads: the latest stored seq and its event hash per chain, kept on insert by a
--    materialized view (one row per chain and insert block, merged by
--    AggregatingMergeTree). A worker recovers its chains' heads from here after every
--    partition assignment instead of aggregating over `decisions` (at 10M rows / 10k
--    chains: worker assignment to first insert 8.1 s -> 0.9 s; with the confirmation below,
--    in a later and more loaded run, 4.8 s -> 1.4 s; bench/RESULTS.md). Read with
--    max(seq), argMaxMerge(event_hash) GROUP BY chain. The views write after the insert has
--    written its table, not atomically with it, so the worker confirms each head (nothing
--    stored at the next seq) before it relies on it (worker/chain_heads.py).
--    Rows removed from `decisions` by a mutation are not taken back here: the head stays
--    the highest seq ever stored, which is what the chain followed.
CREATE TABLE IF NOT EXISTS {database}.chain_heads
(
    source          LowCardinality(String),
    producer_id     LowCardinality(String),
    producer_epoch  UInt64,
    seq             SimpleAggregateFunction(max, UInt64),
    event_hash      AggregateFunction(argMax, FixedString(32), UInt64)
)
ENGINE = AggregatingMergeTree
ORDER BY (source, producer_id, producer_epoch)
SETTINGS non_replicated_deduplication_window = 10000;

CREATE MATERIALIZED VIEW IF NOT EXISTS {database}.decision_heads_mv TO {database}.chain_heads AS
SELECT
    'decisions' AS source,
    d.producer_id AS producer_id,
    d.producer_epoch AS producer_epoch,
    max(d.seq) AS seq,
    argMaxState(d.event_hash, d.seq) AS event_hash
FROM {database}.decisions AS d
GROUP BY d.producer_id, d.producer_epoch;

CREATE MATERIALIZED VIEW IF NOT EXISTS {database}.model_event_heads_mv TO {database}.chain_heads AS
SELECT
    'model_events' AS source,
    m.producer_id AS producer_id,
    m.producer_epoch AS producer_epoch,
    max(m.seq) AS seq,
    argMaxState(m.event_hash, m.seq) AS event_hash
FROM {database}.model_events AS m
GROUP BY m.producer_id, m.producer_epoch;

-- Backfill what was stored before the views existed (migrations run before workers start).
INSERT INTO {database}.chain_heads
SELECT 'decisions', producer_id, producer_epoch, max(seq), argMaxState(event_hash, seq)
FROM {database}.decisions
GROUP BY producer_id, producer_epoch;

INSERT INTO {database}.chain_heads
SELECT 'model_events', producer_id, producer_epoch, max(seq), argMaxState(event_hash, seq)
FROM {database}.model_events
GROUP BY producer_id, producer_epoch;
