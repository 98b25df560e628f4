-- Trusted decision events. A redelivered event has the same sorting key, so
-- ReplacingMergeTree collapses it (query with FINAL for exact counts before merges).
CREATE DATABASE IF NOT EXISTS {database};

CREATE TABLE IF NOT EXISTS {database}.decisions
(
    event_id            UUID,
    occurred_at         DateTime64(3, 'UTC') CODEC(Delta, ZSTD(1)),
    model_name          LowCardinality(String),
    model_version       LowCardinality(String),
    deployment_id       LowCardinality(Nullable(String)),
    request_id          Nullable(String),
    inputs              String CODEC(ZSTD(3)),
    prediction          String CODEC(ZSTD(1)),
    prediction_is_json  Bool,
    score               Nullable(Float64),
    explanation         Nullable(String) CODEC(ZSTD(3)),
    run_id              LowCardinality(Nullable(String)),
    dataset_version     LowCardinality(Nullable(String)),
    code_commit         LowCardinality(Nullable(String)),
    environment_hash    LowCardinality(Nullable(String)),
    actor               LowCardinality(Nullable(String)),
    latency_ms          Nullable(Float64),
    tags                Map(LowCardinality(String), String),
    redaction_policy    LowCardinality(Nullable(String)),
    producer_id         LowCardinality(String),
    producer_epoch      UInt64,
    seq                 UInt64 CODEC(Delta, ZSTD(1)),
    prev_hash           FixedString(32),
    event_hash          FixedString(32),
    schema_fingerprint  UInt64,
    raw                 String CODEC(ZSTD(3)),
    kafka_partition     UInt32,
    kafka_offset        UInt64,
    ingested_at         DateTime64(3, 'UTC') DEFAULT now64(3),
    INDEX idx_request_id request_id TYPE bloom_filter(0.01) GRANULARITY 4,
    INDEX idx_event_id event_id TYPE bloom_filter(0.01) GRANULARITY 4,
    INDEX idx_producer producer_id TYPE set(1000) GRANULARITY 4
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(occurred_at)
ORDER BY (model_name, model_version, occurred_at, event_id)
SETTINGS non_replicated_deduplication_window = 10000;
