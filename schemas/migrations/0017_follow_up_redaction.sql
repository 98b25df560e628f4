-- outcome v2 and review v2: like decisions, outcomes and reviews carry the id@version of the
-- redaction policy applied at the source (an outcome's `actual`, a review's `reason` and
-- `final_decision` may name the person). Rows stored before read NULL (the Avro default).
ALTER TABLE {database}.outcomes
    ADD COLUMN IF NOT EXISTS redaction_policy LowCardinality(Nullable(String)) AFTER actor;

ALTER TABLE {database}.reviews
    ADD COLUMN IF NOT EXISTS redaction_policy LowCardinality(Nullable(String)) AFTER reason;
