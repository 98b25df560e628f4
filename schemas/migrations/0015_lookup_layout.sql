-- Lookups at tens of millions of rows (bench/lookup_bench.py, bench/RESULTS.md "Lookups at
-- 10M rows"). `decisions` is sorted by model, version and time; a lookup by request id or
-- event id names none of those, so it is answered by what this migration adds beside the
-- bloom filters of 0001:
--
-- by_request_id: a projection holding only each row's request_id, sorted, and its offset in
--    the part (`_part_offset`): a lookup by request id reads a few granules of it through
--    its primary index and then exactly those rows, instead of every bloom filter block.
-- idx_event_id_g1: the bloom filter of 0001 on event_id one granule at a time instead of four
--    (the same bytes in all; a hit reads one granule, not four). A minmax index on the
--    UUIDv7 event id was measured and not kept: ClickHouse does not order UUIDs by their
--    leading time bits, so its ranges skip nothing.
-- idx_prediction_id: `trace ID` also looks for the id in tags['prediction_id']; without an
--    index that predicate reads every granule's tags.
--
-- ReplacingMergeTree refuses projections unless told what a deduplicating merge does with
-- them: rebuild them from the merged rows.
ALTER TABLE {database}.decisions MODIFY SETTING deduplicate_merge_projection_mode = 'rebuild';

ALTER TABLE {database}.decisions
    ADD PROJECTION IF NOT EXISTS by_request_id (SELECT _part_offset ORDER BY request_id);

ALTER TABLE {database}.decisions
    ADD INDEX IF NOT EXISTS idx_event_id_g1 event_id TYPE bloom_filter(0.01) GRANULARITY 1;

ALTER TABLE {database}.decisions
    ADD INDEX IF NOT EXISTS idx_prediction_id tags['prediction_id'] TYPE bloom_filter(0.01) GRANULARITY 1;

-- Rows stored before this migration get the projection and the indexes too (a mutation,
-- run in the background on a server).
ALTER TABLE {database}.decisions MATERIALIZE PROJECTION by_request_id;

ALTER TABLE {database}.decisions MATERIALIZE INDEX idx_event_id_g1;

ALTER TABLE {database}.decisions MATERIALIZE INDEX idx_prediction_id;
