"""How a stored batch is counted in the stats, the metrics and the health (no services)."""

from __future__ import annotations

from decision_audit.worker.batch import PreparedBatch
from decision_audit.worker.checks import Rejection
from decision_audit.worker.health import Health
from decision_audit.worker.metrics import WorkerMetrics
from decision_audit.worker.rows import QuarantineRow
from decision_audit.worker.stats import WorkerStats, record_batch


def _rejected(reason: str, offset: int) -> QuarantineRow:
    return QuarantineRow("d", 0, offset, None, Rejection(reason, "detail"), b"")


def test_a_stored_batch_is_counted_everywhere() -> None:
    stats, metrics, health = WorkerStats(), WorkerMetrics(), Health(stall_after=30)
    health.failing("TOO_MANY_PARTS: ...")
    batch = PreparedBatch(
        staged=[0, 1, 3],
        staged_total=4,
        checkpoints=[["cp"]],
        rejected=[_rejected("hash_mismatch", 7), _rejected("hash_mismatch", 8)],
        duplicates=2,
    )
    record_batch(stats, metrics, health, 8, batch, 0.25)
    assert (stats.batches, stats.consumed, stats.inserted, stats.duplicates) == (1, 8, 3, 2)
    assert stats.checkpoints == 1 and stats.quarantined == {"hash_mismatch": 2}
    assert stats.quarantined_total == 2
    sample = metrics.registry.get_sample_value
    assert sample("decision_audit_worker_consumed_total") == 8
    assert sample("decision_audit_worker_inserted_total") == 3
    assert sample("decision_audit_worker_quarantined_total", {"reason": "hash_mismatch"}) == 2
    assert sample("decision_audit_worker_batch_size_count") == 1
    assert health.last_error is None and health.retrying_since is None
