-- Every `decision-audit verify` run: who (actor as in access_log, OS user, host), when,
-- full or incremental, its scope, the result, and per chain the seqs it checked, the
-- checkpoints it relied on and how far the chain is proven (seq 1 .. proven_seq, the last
-- proven event's hash and id): an incremental run starts each chain from there.
-- "When was this trail last proven, and by whom":
--   SELECT finished_at, actor, mode FROM audit.verify_runs WHERE ok
--   ORDER BY finished_at DESC LIMIT 1
CREATE TABLE IF NOT EXISTS {database}.verify_runs
(
    run_id              UUID,
    started_at          DateTime64(3, 'UTC'),
    finished_at         DateTime64(3, 'UTC'),
    actor               LowCardinality(String),
    os_user             LowCardinality(String),
    host                LowCardinality(String),
    mode                LowCardinality(String),
    scope               String,
    signatures_checked  Bool,
    ok                  Bool,
    events              UInt64,
    problems            UInt64,
    problem_kinds       Map(LowCardinality(String), UInt64),
    chains Nested
    (
        producer_id      String,
        producer_epoch   UInt64,
        from_seq         UInt64,
        to_seq           UInt64,
        events           UInt64,
        problems         UInt64,
        proven_seq       UInt64,
        proven_hash      FixedString(32),
        proven_event_id  String,
        attested_to      UInt64,
        key_id           Nullable(String),
        latest_at        Nullable(DateTime64(3, 'UTC')),
        checkpoints      Array(UInt64)
    )
)
ENGINE = MergeTree
PARTITION BY toYYYYMM(finished_at)
ORDER BY (finished_at, run_id);
