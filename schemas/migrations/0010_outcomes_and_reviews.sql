-- What follows a decision, each on hash chains of its own (<producer_id>/outcomes,
-- <producer_id>/reviews) with their own signed checkpoints: outcomes (the ground truth,
-- known later) and human reviews (confirm, override, escalate). Both name the decision by
-- `decision_id`, its event id or its request id; an outcome or review naming a decision
-- that was not stored when it arrived is kept and reported as an `unknown_decision`
-- incident. Ordered by decision_id: the lookups are per decision.
CREATE TABLE IF NOT EXISTS {database}.outcomes
(
    event_id            UUID,
    occurred_at         DateTime64(3, 'UTC'),
    decision_id         String,
    actual              String CODEC(ZSTD(1)),
    actual_is_json      Bool,
    observed_at         DateTime64(3, 'UTC'),
    source              LowCardinality(Nullable(String)),
    actor               LowCardinality(Nullable(String)),
    key_id              LowCardinality(Nullable(String)),
    producer_id         LowCardinality(String),
    producer_epoch      UInt64,
    seq                 UInt64,
    prev_hash           FixedString(32),
    event_hash          FixedString(32),
    schema_fingerprint  UInt64,
    raw                 String CODEC(ZSTD(1)),
    kafka_partition     UInt32,
    kafka_offset        UInt64,
    ingested_at         DateTime64(3, 'UTC') DEFAULT now64(3),
    INDEX idx_event_id event_id TYPE bloom_filter(0.01) GRANULARITY 4,
    INDEX idx_producer producer_id TYPE set(1000) GRANULARITY 4
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(occurred_at)
ORDER BY (decision_id, occurred_at, event_id)
SETTINGS non_replicated_deduplication_window = 10000;

CREATE TABLE IF NOT EXISTS {database}.reviews
(
    event_id                UUID,
    occurred_at             DateTime64(3, 'UTC'),
    decision_id             String,
    reviewer                LowCardinality(String),
    verdict                 LowCardinality(String),
    final_decision          Nullable(String) CODEC(ZSTD(1)),
    final_decision_is_json  Bool,
    reason                  Nullable(String) CODEC(ZSTD(1)),
    key_id                  LowCardinality(Nullable(String)),
    producer_id             LowCardinality(String),
    producer_epoch          UInt64,
    seq                     UInt64,
    prev_hash               FixedString(32),
    event_hash              FixedString(32),
    schema_fingerprint      UInt64,
    raw                     String CODEC(ZSTD(1)),
    kafka_partition         UInt32,
    kafka_offset            UInt64,
    ingested_at             DateTime64(3, 'UTC') DEFAULT now64(3),
    INDEX idx_event_id event_id TYPE bloom_filter(0.01) GRANULARITY 4,
    INDEX idx_producer producer_id TYPE set(1000) GRANULARITY 4
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(occurred_at)
ORDER BY (decision_id, occurred_at, event_id)
SETTINGS non_replicated_deduplication_window = 10000;

-- Same shape as checkpoints, one table per record kind (see model_event_checkpoints).
CREATE TABLE IF NOT EXISTS {database}.outcome_checkpoints
(
    producer_id         LowCardinality(String),
    producer_epoch      UInt64,
    seq                 UInt64,
    chain_head          FixedString(32),
    key_id              LowCardinality(String),
    algorithm           LowCardinality(String),
    signature           String,
    signed_at           DateTime64(3, 'UTC'),
    signature_verified  Bool,
    raw                 String CODEC(ZSTD(3)),
    kafka_partition     UInt32,
    kafka_offset        UInt64,
    ingested_at         DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree
ORDER BY (producer_id, producer_epoch, seq)
SETTINGS non_replicated_deduplication_window = 10000;

CREATE TABLE IF NOT EXISTS {database}.review_checkpoints
(
    producer_id         LowCardinality(String),
    producer_epoch      UInt64,
    seq                 UInt64,
    chain_head          FixedString(32),
    key_id              LowCardinality(String),
    algorithm           LowCardinality(String),
    signature           String,
    signed_at           DateTime64(3, 'UTC'),
    signature_verified  Bool,
    raw                 String CODEC(ZSTD(3)),
    kafka_partition     UInt32,
    kafka_offset        UInt64,
    ingested_at         DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree
ORDER BY (producer_id, producer_epoch, seq)
SETTINGS non_replicated_deduplication_window = 10000;

-- Every outcome and review beside the decision it names (by event id or request id; a
-- request id names every decision made for that request). Filter on the decision's columns
-- (decided_at, model_name, ...) to read a window. Outcomes or reviews whose decision is
-- unknown are absent here: they are in their tables, and reported as incidents.
CREATE VIEW IF NOT EXISTS {database}.decision_outcomes AS
SELECT
    d.event_id AS decision_event_id,
    d.request_id AS request_id,
    d.occurred_at AS decided_at,
    d.model_name AS model_name,
    d.model_version AS model_version,
    d.deployment_id AS deployment_id,
    d.status AS status,
    d.prediction AS prediction,
    d.prediction_is_json AS prediction_is_json,
    d.score AS score,
    o.event_id AS outcome_event_id,
    o.actual AS actual,
    o.actual_is_json AS actual_is_json,
    o.observed_at AS observed_at,
    o.source AS source,
    o.actor AS actor
FROM {database}.decisions AS d FINAL
INNER JOIN {database}.outcomes AS o FINAL
    ON o.decision_id = toString(d.event_id) OR o.decision_id = d.request_id;

CREATE VIEW IF NOT EXISTS {database}.decision_reviews AS
SELECT
    d.event_id AS decision_event_id,
    d.request_id AS request_id,
    d.occurred_at AS decided_at,
    d.model_name AS model_name,
    d.model_version AS model_version,
    d.deployment_id AS deployment_id,
    d.status AS status,
    d.prediction AS prediction,
    d.prediction_is_json AS prediction_is_json,
    d.score AS score,
    r.event_id AS review_event_id,
    r.occurred_at AS reviewed_at,
    r.reviewer AS reviewer,
    r.verdict AS verdict,
    r.final_decision AS final_decision,
    r.final_decision_is_json AS final_decision_is_json,
    r.reason AS reason
FROM {database}.decisions AS d FINAL
INNER JOIN {database}.reviews AS r FINAL
    ON r.decision_id = toString(d.event_id) OR r.decision_id = d.request_id;
