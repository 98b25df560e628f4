"""What the worker counts: its stats since start, and how a stored batch is recorded."""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field

from decision_audit.worker.batch import PreparedBatch
from decision_audit.worker.health import Health
from decision_audit.worker.metrics import WorkerMetrics

log = logging.getLogger("decision_audit.worker")


@dataclass
class WorkerStats:
    """Counters since the worker started."""

    consumed: int = 0
    inserted: int = 0
    duplicates: int = 0
    checkpoints: int = 0
    incidents: int = 0
    quarantined: Counter[str] = field(default_factory=Counter)
    batches: int = 0
    insert_retries: int = 0

    @property
    def quarantined_total(self) -> int:
        return sum(self.quarantined.values())


def record_batch(
    stats: WorkerStats,
    metrics: WorkerMetrics,
    health: Health,
    consumed: int,
    batch: PreparedBatch,
    seconds: float,
) -> None:
    """Count a stored and committed batch of ``consumed`` messages; log one line for it."""
    st, m = stats, metrics
    st.batches += 1
    st.consumed += consumed
    inserted = batch.inserted
    st.inserted += inserted
    st.duplicates += batch.duplicates
    st.checkpoints += len(batch.checkpoints)
    st.incidents += len(batch.incidents)
    m.consumed.inc(consumed)
    m.inserted.inc(inserted)
    m.duplicates.inc(batch.duplicates)
    m.checkpoints.inc(len(batch.checkpoints))
    m.incidents.inc(len(batch.incidents))
    for row in batch.rejected:
        st.quarantined[row.rejection.reason] += 1
        m.quarantined.labels(row.rejection.reason).inc()
    m.batch_size.observe(consumed)
    m.insert_seconds.observe(seconds)
    m.last_success.set_to_current_time()
    health.stored()
    log.info(
        "batch: consumed=%d inserted=%d duplicates=%d checkpoints=%d incidents=%d "
        "quarantined=%d in %.0f ms",
        consumed,
        inserted,
        batch.duplicates,
        len(batch.checkpoints),
        len(batch.incidents),
        len(batch.rejected),
        seconds * 1000,
    )
