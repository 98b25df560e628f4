"""Storing a batch, retrying transient failures with backoff while the consumer keeps polling.

Every try checks, prepares and writes the same messages under the same deduplication tokens,
so what a failed try already wrote is not written twice. Between tries the assigned
partitions are paused and the consumer keeps polling, so the group keeps this member; past
the backoff's limits, or on a permanent error, :class:`StoreFailed` says what to fix.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable

from decision_audit.contract.errors import DecisionAuditError
from decision_audit.worker.batch import BatchChecker, PreparedBatch
from decision_audit.worker.dlq import DeadLetters
from decision_audit.worker.health import Health
from decision_audit.worker.metrics import WorkerMetrics
from decision_audit.worker.received import Received
from decision_audit.worker.retry import Backoff, Failure, classify
from decision_audit.worker.stats import WorkerStats
from decision_audit.worker.store import Store

log = logging.getLogger("decision_audit.worker")


class StoreFailed(DecisionAuditError, RuntimeError):
    """The store failed for good (permanent error, or transient past the retry limit).

    Nothing past the last stored batch was committed: a restarted worker gets the batch again.
    """


class BatchChanged(Exception):
    """A rebalance took partitions of the batch being retried: build the batch again."""


def describe(messages: Iterable[Received]) -> str:
    """``topic[partition:first-last,...]`` of a batch, for error messages."""
    spans: dict[tuple[str, int], list[int]] = {}
    for m in messages:
        r = spans.setdefault((m.topic, m.partition), [m.offset, m.offset])
        r[0], r[1] = min(r[0], m.offset), max(r[1], m.offset)
    return ", ".join(f"{t}[{p}:{lo}-{hi}]" for (t, p), (lo, hi) in sorted(spans.items()))


def give_up(
    backoff: Backoff,
    where: str,
    exc: BaseException,
    failure: Failure,
    tries: int,
    elapsed: float,
    delay: float,
) -> StoreFailed | None:
    """The error to stop with after ``tries`` failed tries over ``elapsed`` s, or None: retry.

    ``delay`` is the wait before the next try (which must still fit the budget).
    """
    if not failure.transient:
        return StoreFailed(
            f"storing batch {where} failed with a permanent error ({failure.cause}): "
            f"{exc}. Nothing past the batch was committed. Fix the cause (schema: run "
            "`decision-audit migrate`; permissions; the data) and restart the worker."
        )
    if backoff.gives_up(tries, elapsed, delay):
        return StoreFailed(
            f"storing batch {where} failed {tries} time(s) over "
            f"{elapsed:.0f}s with transient errors, last "
            f"({failure.cause}): {exc}. Nothing past the batch was committed; a "
            "restarted worker gets it again. Fix the store (is ClickHouse up, with "
            "free disk and memory, not rejecting inserts for too many parts?) or "
            "raise --insert-retry-limit / DECISION_AUDIT_INSERT_RETRY_BUDGET."
        )
    return None


class RetryingStore:
    """Checks, prepares and stores a batch (:meth:`store`); waits paused between tries.

    The consumer stays with the loop: ``poll_paused(timeout)`` polls it once with the
    assigned partitions paused (raising :class:`BatchChanged` when a rebalance took
    messages of the batch), ``stopping()`` says the worker was asked to stop, ``pending()``
    counts the messages it holds.
    """

    def __init__(
        self,
        checker: BatchChecker,
        store: Store,
        dlq: DeadLetters,
        backoff: Backoff,
        *,
        stats: WorkerStats,
        metrics: WorkerMetrics,
        health: Health,
        poll_paused: Callable[[float], None],
        stopping: Callable[[], bool],
        pending: Callable[[], int],
    ) -> None:
        self._checker = checker
        self._store = store
        self._dlq = dlq
        self._backoff = backoff
        self._stats = stats
        self._metrics = metrics
        self._health = health
        self._poll_paused = poll_paused
        self._stopping = stopping
        self._pending = pending
        self.waiting = False
        """True while waiting between tries (a revoke then drops what the loop holds)"""

    def store(self, messages: list[Received], token: str) -> PreparedBatch:
        """Check, prepare and store the batch; on a transient error pause, back off, retry."""
        first_failure = 0.0
        tries = 0
        while True:
            try:
                batch = self._checker.prepare(messages)
                self._write(batch, token)
            except Exception as exc:
                self._checker.abort_chains()
                tries += 1
                now = time.monotonic()
                if tries == 1:
                    first_failure = now
                failure = classify(exc)
                delay = self._backoff.delay(tries)
                where = describe(messages)
                elapsed = now - first_failure
                error = give_up(self._backoff, where, exc, failure, tries, elapsed, delay)
                if error is not None:
                    raise error from exc
                self._stats.insert_retries += 1
                self._metrics.insert_retries.labels(failure.cause).inc()
                self._metrics.insert_failing.set(1)
                self._health.failing(f"{failure.cause}: {exc}"[:300])
                log.warning(
                    "store of batch %s failed (try %d, %s: %s); retrying in %.1fs",
                    where,
                    tries,
                    failure.cause,
                    exc,
                    delay,
                )
                self._wait_paused(delay)
            else:
                self._metrics.insert_failing.set(0)
                return batch

    def _write(self, batch: PreparedBatch, token: str) -> None:
        """Write every table of the batch, then the DLQ; each insert under its own token."""
        store = self._store
        if batch.staged:
            store.copy_staged(self._checker.staged_rows(batch), token)
        store.insert_decisions(batch.decisions, token)
        for ingest, side in batch.sides:
            store.insert_side(ingest.kind, side, token)
        store.insert_checkpoints(batch.checkpoints, token)
        # Outcomes and reviews naming a decision that is not stored, this batch's included
        # (the batch is prepared afresh for every try).
        batch.incidents += self._checker.linked(batch)
        store.insert_incidents(batch.incidents, token)
        store.insert_quarantine(batch.rejected, token)
        self._dlq.publish(batch.rejected)

    def _wait_paused(self, seconds: float) -> None:
        """Wait with the partitions paused, still polling so the group keeps this member."""
        deadline = time.monotonic() + seconds
        self.waiting = True
        try:
            while (remaining := deadline - time.monotonic()) > 0:
                if self._stopping():
                    raise StoreFailed(
                        f"stopped while the store was failing ({self._health.last_error}); "
                        f"{self._pending()} message(s) not stored and not committed: a "
                        "restarted worker gets them again"
                    )
                self._poll_paused(min(remaining, 0.2))
        finally:
            self.waiting = False
