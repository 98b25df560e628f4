-- Integrity: the key a chain is signed with, signed checkpoints, and incidents
-- (sequence gaps) that the worker detects while it reads.
ALTER TABLE {database}.decisions
    ADD COLUMN IF NOT EXISTS key_id LowCardinality(Nullable(String)) AFTER redaction_policy;

CREATE TABLE IF NOT EXISTS {database}.checkpoints
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

CREATE TABLE IF NOT EXISTS {database}.incidents
(
    detected_at     DateTime64(3, 'UTC') DEFAULT now64(3),
    kind            LowCardinality(String),
    producer_id     LowCardinality(String),
    producer_epoch  UInt64,
    seq_from        UInt64,
    seq_to          UInt64,
    detail          String,
    source_partition UInt32,
    source_offset   UInt64
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(detected_at)
ORDER BY (kind, producer_id, producer_epoch, seq_from)
SETTINGS non_replicated_deduplication_window = 10000;
