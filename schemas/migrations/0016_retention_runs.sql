-- What each `decision-audit retention` run was told (issue 17 §3): one row per run and record
-- kind it pruned, written before that kind's prunings, with the window in days and whether
-- --below-eu-ai-act-floor was passed, so that verify can hold a pruning to the window it was
-- run with. Each retention_prunings row names its run (run_id; the zero UUID for a pruning
-- recorded before this migration, which no run covers). Kept for good.
CREATE TABLE IF NOT EXISTS {database}.retention_runs
(
    run_id          UUID,
    ran_at          DateTime64(3, 'UTC'),
    kind            LowCardinality(String),
    window_days     UInt32,
    below_floor     Bool,
    horizon         DateTime64(3, 'UTC'),
    actor           String,
    os_user         String,
    host            String
)
ENGINE = MergeTree
ORDER BY (run_id, kind);

ALTER TABLE {database}.retention_prunings
    ADD COLUMN IF NOT EXISTS run_id UUID AFTER pruning_id;
