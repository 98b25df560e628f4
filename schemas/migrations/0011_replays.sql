-- Every `decision-audit replay` run: who (actor as in access_log, OS user, host), when, the
-- callable that re-scored the stored inputs (`module:callable`), the selection, the score
-- tolerance, the counts, and per decision what was stored beside what the callable answered.
-- The per-decision fields of the stored decision keep their names and types in
-- audit.decisions (event_id, model_name, model_version, prediction, score); `result` is
-- `agree`, `differ` or `not_replayable`, `reason` says why (empty when they agree).
-- "Was this decision reproduced, and by whom":
--   SELECT finished_at, actor, model, decisions.result, decisions.reason
--   FROM audit.replays ARRAY JOIN decisions WHERE decisions.event_id = '…'
CREATE TABLE IF NOT EXISTS {database}.replays
(
    replay_id       UUID,
    started_at      DateTime64(3, 'UTC'),
    finished_at     DateTime64(3, 'UTC'),
    actor           LowCardinality(String),
    os_user         LowCardinality(String),
    host            LowCardinality(String),
    model           String,
    selection       String,
    tolerance       Float64,
    ok              Bool,
    agreed          UInt64,
    differed        UInt64,
    not_replayable  UInt64,
    decisions Nested
    (
        event_id             UUID,
        model_name           LowCardinality(String),
        model_version        LowCardinality(String),
        result               LowCardinality(String),
        reason               String,
        prediction           Nullable(String),
        replayed_prediction  Nullable(String),
        score                Nullable(Float64),
        replayed_score       Nullable(Float64)
    )
)
ENGINE = MergeTree
PARTITION BY toYYYYMM(finished_at)
ORDER BY (finished_at, replay_id);
