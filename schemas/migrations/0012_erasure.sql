-- Crypto-shredding erasure (decision_audit.contract.sealing): the key store and the erasure log.
--
-- subject_keys holds each encrypted decision's data key, sealed to the key store's X25519
-- public key, filed by `decision-audit keystore file` under the keyed hash of the data
-- subject's id. `decision-audit erase` deletes a subject's rows here (a synchronous mutation),
-- never a decision row. The settings make that deletion physical within seconds: the parts
-- a mutation replaces are removed one second after it (old_parts_lifetime, cleanup every
-- second) instead of the default eight minutes, and every part is fsynced, so that a short
-- lifetime cannot lose a key to a crash.
CREATE TABLE IF NOT EXISTS {database}.subject_keys
(
    event_id         UUID,
    occurred_at      DateTime64(3, 'UTC'),
    subject_hash     String,
    keystore_key_id  LowCardinality(String),
    ephemeral_key    String,
    nonce            String,
    sealed_key       String,
    producer_id      LowCardinality(String),
    kafka_partition  UInt32,
    kafka_offset     UInt64,
    filed_at         DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree
ORDER BY (subject_hash, event_id)
SETTINGS non_replicated_deduplication_window = 10000,
    old_parts_lifetime = 1,
    cleanup_delay_period = 1,
    cleanup_delay_period_random_add = 0,
    max_cleanup_delay_period = 1,
    fsync_after_insert = 1,
    fsync_part_directory = 1,
    min_rows_to_fsync_after_merge = 1;

-- One row per `decision-audit erase`: who, when, why, the subject's keyed hash (never its id)
-- and how many decisions' keys were destroyed. Kept for good: the trail records what was
-- done to it.
CREATE TABLE IF NOT EXISTS {database}.erasures
(
    erasure_id        UUID,
    erased_at         DateTime64(3, 'UTC'),
    subject_hash      String,
    actor             String,
    os_user           String,
    host              String,
    reason            String,
    records           UInt64,
    first_occurred_at Nullable(DateTime64(3, 'UTC')),
    last_occurred_at  Nullable(DateTime64(3, 'UTC')),
    keystore_key_ids  Array(String)
)
ENGINE = MergeTree
ORDER BY (subject_hash, erased_at);
