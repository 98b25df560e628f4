-- The witness log (decision_audit.contract.witness): each worker with a witness key signs, every
-- witness_interval seconds and at shutdown, a statement carrying the chains whose head (seq and
-- event hash) moved since its previous statement, with the count (`chains`) and a digest of
-- every chain it has stored, linked to its previous statement by hash; every
-- witness_full_every statements it restates the whole set over consecutive statements marked
-- `full` (version 3; a version-1 statement listed them all). A copy of each statement goes to the decision-witness topic.
-- `statement` holds the exact signed bytes (canonical JSON); the other columns are read from
-- them for queries. verify checks the bytes.
CREATE TABLE IF NOT EXISTS {database}.witness_statements
(
    witness_id      LowCardinality(String),
    seq             UInt64,
    prev_hash       FixedString(32),
    statement_hash  FixedString(32),
    signed_at       DateTime64(3, 'UTC'),
    chains          UInt64,
    statement       String CODEC(ZSTD(3)),
    signature       String,
    ingested_at     DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = MergeTree
ORDER BY (witness_id, seq)
SETTINGS non_replicated_deduplication_window = 10000;
