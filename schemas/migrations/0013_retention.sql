-- Retention (decision_audit.audit.retention): legal holds and the record of every pruning.
--
-- legal_holds is append-only: `decision-audit hold add` writes an `add` row, `hold release`
-- a `release` row naming the same hold_id; a hold is active while it has no release row.
-- A NULL filter matches every row (a hold naming only a time range holds every record kind
-- in it).
CREATE TABLE IF NOT EXISTS {database}.legal_holds
(
    hold_id        UUID,
    action         LowCardinality(String),
    recorded_at    DateTime64(3, 'UTC'),
    actor          String,
    os_user        String,
    host           String,
    reason         String,
    model          Nullable(String),
    deployment     Nullable(String),
    producer       Nullable(String),
    from_time      Nullable(DateTime64(3, 'UTC')),
    until_time     Nullable(DateTime64(3, 'UTC'))
)
ENGINE = MergeTree
ORDER BY (hold_id, recorded_at);

-- One row per record kind and chain a `decision-audit retention` run pruned, written before
-- its rows are deleted: up to which time (horizon), for a chained kind the chain's boundary
-- (the last removed seq and that event's hash, which the first kept event links to), who and
-- when. verify walks each chain from its latest boundary. Kept for good.
CREATE TABLE IF NOT EXISTS {database}.retention_prunings
(
    pruning_id      UUID,
    pruned_at       DateTime64(3, 'UTC'),
    kind            LowCardinality(String),
    horizon         DateTime64(3, 'UTC'),
    producer_id     String,
    producer_epoch  UInt64,
    boundary_seq    UInt64,
    boundary_hash   FixedString(32),
    rows            UInt64,
    actor           String,
    os_user         String,
    host            String
)
ENGINE = MergeTree
ORDER BY (kind, producer_id, producer_epoch, boundary_seq);
