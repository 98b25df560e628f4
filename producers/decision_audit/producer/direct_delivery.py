"""Delivery without a spool: hand each message to librdkafka; count what it drops or fails.

A message the client will not take within ``enqueue_timeout`` is dropped and counted, a
delivery error is counted as failed (the worker then records a ``seq_gap``). Nothing is taken
back or replayed, so a message needs no bookkeeping once the client took it: the client
reports failures only (``delivery.report.only.error``) and the delivered count comes from its
queue (:meth:`DirectDelivery._refresh_delivered`).
"""

from __future__ import annotations

import functools
import logging
from typing import Any

from confluent_kafka import KafkaError, KafkaException

from decision_audit.producer.delivery import (
    Delivery,
    DeliveryProblem,
    ProducerStats,
    Report,
    chain_id,
)
from decision_audit.producer.settings import ProducerSettings
from decision_audit.producer.spool import SpoolRecord

log = logging.getLogger("decision_audit.producer")


class DirectDelivery(Delivery):
    """Sends straight to the Kafka client; drops what it will not take, counts what fails."""

    def __init__(
        self,
        settings: ProducerSettings,
        conf: dict[str, Any],
        stats: ProducerStats,
        report: Report,
    ) -> None:
        conf.setdefault("delivery.report.only.error", True)
        super().__init__(settings, conf, stats, report)
        self._sent = 0
        """messages the client took (delivered, failed or still queued)"""

    @property
    def direct(self) -> bool:
        return True

    def send(self, record: SpoolRecord, seq: int | None, *, background: bool = False) -> str | None:
        # Under the lock, so that _sent and the client's queue are read together.
        with self._state:
            try:
                problem = self._produce(record, functools.partial(self._on_delivery, seq))
            except KafkaException as exc:
                return f"kafka client refused the event: {exc}"
            if problem is None:
                self._sent += 1
            return problem

    def _on_delivery(self, seq: int | None, err: KafkaError | None, msg: Any) -> None:
        if err is None:  # only if the user asked for every delivery report
            return
        with self._state:
            self._stats.failed += 1
        self._report(DeliveryProblem("failed", str(err), chain_id(msg.key(), self._pid), seq))

    def _refresh_delivered(self) -> None:
        """delivered = taken by the client - failed - still in its queue.

        The queue also counts reports not yet served, so this never runs ahead of the
        truth; it is exact once the queue is empty (after ``flush``).
        """
        with self._state:
            delivered = self._sent - self._stats.failed - len(self._producer)
            if delivered > self._stats.delivered:
                self._stats.delivered = delivered

    def _on_client_error(self, err: KafkaError) -> None:
        if err.fatal():
            log.error("kafka client fatal error (producer %s): %s", self._pid, err)
        else:
            log.warning("kafka client error (producer %s): %s", self._pid, err)

    def _poll(self, timeout: float) -> None:
        try:
            self._producer.poll(timeout)
        except KafkaException as exc:
            log.error("kafka client error (producer %s): %s", self._pid, exc)

    def service(self, wait: float) -> None:
        self._poll(wait)
        self._refresh_delivered()

    def undelivered(self) -> int:
        with self._state:
            return len(self._producer)

    def flush(self, timeout: float) -> int:
        remaining: int = self._producer.flush(timeout)
        self._refresh_delivered()
        return remaining

    def close(self, timeout: float) -> int:
        remaining = self.flush(timeout)
        if not remaining:
            self._producer.close()
        return remaining
