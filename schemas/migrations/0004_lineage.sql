-- Lineage: model-lifecycle events on their own hash chains (<producer_id>/model-events),
-- the signed checkpoints of those chains, and who read the trail (access_log).
CREATE TABLE IF NOT EXISTS {database}.model_events
(
    event_id            UUID,
    occurred_at         DateTime64(3, 'UTC'),
    action              LowCardinality(String),
    actor               String,
    subject_type        LowCardinality(String),
    subject_id          String,
    related             Array(Tuple(type LowCardinality(String), id String)),
    metadata            String CODEC(ZSTD(3)),
    key_id              LowCardinality(Nullable(String)),
    producer_id         LowCardinality(String),
    producer_epoch      UInt64,
    seq                 UInt64,
    prev_hash           FixedString(32),
    event_hash          FixedString(32),
    schema_fingerprint  UInt64,
    raw                 String CODEC(ZSTD(3)),
    kafka_partition     UInt32,
    kafka_offset        UInt64,
    ingested_at         DateTime64(3, 'UTC') DEFAULT now64(3),
    INDEX idx_related_ids related.id TYPE bloom_filter(0.01) GRANULARITY 1
)
ENGINE = ReplacingMergeTree
ORDER BY (subject_type, subject_id, occurred_at, event_id)
SETTINGS non_replicated_deduplication_window = 10000;

-- Same shape as checkpoints; kept apart so `verify` (decision chains) never mistakes a
-- model-event chain for a decision chain whose rows were deleted.
CREATE TABLE IF NOT EXISTS {database}.model_event_checkpoints
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

-- Every read of the trail through the command line (query, trace, report).
CREATE TABLE IF NOT EXISTS {database}.access_log
(
    accessed_at  DateTime64(3, 'UTC') DEFAULT now64(3),
    actor        LowCardinality(String),
    os_user      LowCardinality(String),
    host         LowCardinality(String),
    command      LowCardinality(String),
    target       String,
    status       LowCardinality(String),
    detail       String
)
ENGINE = MergeTree
PARTITION BY toYYYYMM(accessed_at)
ORDER BY (accessed_at, actor);
