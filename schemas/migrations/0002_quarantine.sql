-- Messages that failed decoding or verification, with the reason. Never mixed into
-- the trusted tables; keyed by source position so a redelivered message collapses.
CREATE TABLE IF NOT EXISTS {database}.quarantine
(
    received_at       DateTime64(3, 'UTC') DEFAULT now64(3),
    source_topic      LowCardinality(String),
    source_partition  UInt32,
    source_offset     UInt64,
    message_key       Nullable(String),
    reason            LowCardinality(String),
    detail            String,
    raw               String CODEC(ZSTD(3))
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(received_at)
ORDER BY (source_topic, source_partition, source_offset)
SETTINGS non_replicated_deduplication_window = 10000;
