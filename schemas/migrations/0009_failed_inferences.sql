-- decision_event v4: an inference that failed or was refused is a decision too. `status`
-- (ok, error, timeout, rejected, fallback), `error_type` and `error_message`, and no
-- `prediction` when there is none. Rows stored before read `status` 'ok' (the Avro default
-- of older writers), so they still equal their original bytes.
--
-- The hourly rollup's view maps `prediction`, which a Map key cannot hold once it is
-- Nullable: the view is dropped before the change and created again with the status mix.
-- A worker inserting between the two statements would not be counted in decisions_hourly:
-- run migrations before starting workers (the worker migrates on start, before it polls).
DROP VIEW IF EXISTS {database}.decisions_hourly_mv;

ALTER TABLE {database}.decisions
    MODIFY COLUMN prediction Nullable(String) CODEC(ZSTD(1));

ALTER TABLE {database}.decisions
    ADD COLUMN IF NOT EXISTS status LowCardinality(String) DEFAULT 'ok' AFTER prediction_is_json,
    ADD COLUMN IF NOT EXISTS error_type LowCardinality(Nullable(String)) AFTER status,
    ADD COLUMN IF NOT EXISTS error_message Nullable(String) CODEC(ZSTD(1)) AFTER error_type;

-- Per model, version and hour: decisions per status (read sumMapMerge(statuses); the
-- error rate is the share of decisions whose status is not 'ok').
ALTER TABLE {database}.decisions_hourly
    ADD COLUMN IF NOT EXISTS statuses AggregateFunction(sumMap, Map(String, UInt64));

CREATE MATERIALIZED VIEW IF NOT EXISTS {database}.decisions_hourly_mv TO {database}.decisions_hourly AS
SELECT
    model_name,
    model_version,
    toStartOfHour(occurred_at) AS hour,
    countState() AS decisions,
    sumMapStateIf(map(assumeNotNull(prediction), toUInt64(1)), prediction IS NOT NULL) AS predictions,
    avgState(score) AS score_avg,
    quantilesState(0.5, 0.9, 0.99)(score) AS score_q,
    quantilesState(0.5, 0.9, 0.99)(latency_ms) AS latency_q,
    sumMapState(map(status, toUInt64(1))) AS statuses
FROM {database}.decisions
GROUP BY model_name, model_version, hour;
