-- Rollups maintained on insert by materialized views (AggregatingMergeTree, -State
-- columns; read them with the matching -Merge functions, GROUP BY the key).
-- The target tables keep an insert-deduplication window like their sources, so a batch
-- the worker re-inserts after a crash (same token) is not counted twice.

-- Per model, version and hour: decisions, prediction mix, score and latency quantiles.
CREATE TABLE IF NOT EXISTS {database}.decisions_hourly
(
    model_name     LowCardinality(String),
    model_version  LowCardinality(String),
    hour           DateTime('UTC'),
    decisions      AggregateFunction(count),
    predictions    AggregateFunction(sumMap, Map(String, UInt64)),
    score_avg      AggregateFunction(avg, Nullable(Float64)),
    score_q        AggregateFunction(quantiles(0.5, 0.9, 0.99), Nullable(Float64)),
    latency_q      AggregateFunction(quantiles(0.5, 0.9, 0.99), Nullable(Float64))
)
ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMM(hour)
ORDER BY (model_name, model_version, hour)
SETTINGS non_replicated_deduplication_window = 10000;

CREATE MATERIALIZED VIEW IF NOT EXISTS {database}.decisions_hourly_mv TO {database}.decisions_hourly AS
SELECT
    model_name,
    model_version,
    toStartOfHour(occurred_at) AS hour,
    countState() AS decisions,
    sumMapState(map(prediction, toUInt64(1))) AS predictions,
    avgState(score) AS score_avg,
    quantilesState(0.5, 0.9, 0.99)(score) AS score_q,
    quantilesState(0.5, 0.9, 0.99)(latency_ms) AS latency_q
FROM {database}.decisions
GROUP BY model_name, model_version, hour;

-- Quarantined messages per hour, topic and reason.
CREATE TABLE IF NOT EXISTS {database}.quarantine_hourly
(
    hour          DateTime('UTC'),
    source_topic  LowCardinality(String),
    reason        LowCardinality(String),
    messages      AggregateFunction(count)
)
ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMM(hour)
ORDER BY (hour, source_topic, reason)
SETTINGS non_replicated_deduplication_window = 10000;

CREATE MATERIALIZED VIEW IF NOT EXISTS {database}.quarantine_hourly_mv TO {database}.quarantine_hourly AS
SELECT toStartOfHour(received_at) AS hour, source_topic, reason, countState() AS messages
FROM {database}.quarantine
GROUP BY hour, source_topic, reason;

-- Integrity incidents per hour and kind.
CREATE TABLE IF NOT EXISTS {database}.incidents_hourly
(
    hour       DateTime('UTC'),
    kind       LowCardinality(String),
    incidents  AggregateFunction(count)
)
ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMM(hour)
ORDER BY (hour, kind)
SETTINGS non_replicated_deduplication_window = 10000;

CREATE MATERIALIZED VIEW IF NOT EXISTS {database}.incidents_hourly_mv TO {database}.incidents_hourly AS
SELECT toStartOfHour(detected_at) AS hour, kind, countState() AS incidents
FROM {database}.incidents
GROUP BY hour, kind;

-- Backfill what was stored before the views existed (migrations run before workers start).
INSERT INTO {database}.decisions_hourly
SELECT
    model_name,
    model_version,
    toStartOfHour(occurred_at) AS hour,
    countState(),
    sumMapState(map(prediction, toUInt64(1))),
    avgState(score),
    quantilesState(0.5, 0.9, 0.99)(score),
    quantilesState(0.5, 0.9, 0.99)(latency_ms)
FROM {database}.decisions FINAL
GROUP BY model_name, model_version, hour;

INSERT INTO {database}.quarantine_hourly
SELECT toStartOfHour(received_at) AS hour, source_topic, reason, countState()
FROM {database}.quarantine FINAL
GROUP BY hour, source_topic, reason;

INSERT INTO {database}.incidents_hourly
SELECT toStartOfHour(detected_at) AS hour, kind, countState()
FROM {database}.incidents FINAL
GROUP BY hour, kind;
