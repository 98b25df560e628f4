"""The dead-letter topic: rejected messages, as received, with the reason in headers."""

from __future__ import annotations

from typing import Any

from confluent_kafka import Producer

from decision_audit.contract.errors import DecisionAuditError
from decision_audit.contract.headers import (
    DETAIL_HEADER,
    REASON_HEADER,
    SOURCE_HEADER,
    TRUNCATED_FROM_HEADER,
)
from decision_audit.worker.rows import QuarantineRow

__all__ = ["REASON_HEADER", "DeadLetterError", "DeadLetters"]


class DeadLetterError(DecisionAuditError, RuntimeError):
    """The DLQ did not acknowledge every rejected message; offsets must not be committed."""


class DeadLetters:
    """Publishes rejected messages to the DLQ topic and waits for the broker's ack."""

    def __init__(self, config: dict[str, Any], topic: str, max_bytes: int) -> None:
        self.topic = topic
        self._max_bytes = max_bytes
        self._failed: list[str] = []
        self._producer = Producer({**config, "on_delivery": self._on_delivery})

    def _on_delivery(self, err: Any, _msg: Any) -> None:
        if err is not None:
            self._failed.append(str(err))

    def publish(self, rows: list[QuarantineRow], timeout: float = 30.0) -> None:
        if not rows:
            return
        for row in rows:
            value = row.raw
            headers: list[tuple[str, str | bytes | None]] = [
                (REASON_HEADER, row.rejection.reason.encode()),
                (DETAIL_HEADER, row.rejection.detail.encode("utf-8", "replace")[:1024]),
                (SOURCE_HEADER, f"{row.topic}/{row.partition}/{row.offset}".encode()),
            ]
            if len(value) > self._max_bytes:
                # The quarantine table holds the full bytes; the DLQ carries a prefix.
                headers.append((TRUNCATED_FROM_HEADER, str(len(value)).encode()))
                value = value[: self._max_bytes]
            self._producer.produce(self.topic, value, row.key, headers=headers)
            self._producer.poll(0)
        remaining = self._producer.flush(timeout)
        failed, self._failed = self._failed, []
        if remaining or failed:
            raise DeadLetterError(
                f"DLQ {self.topic!r}: {remaining} unacknowledged, {len(failed)} failed "
                f"({'; '.join(failed[:3])})"
            )

    def close(self) -> None:
        if self._producer.flush(10) == 0:
            self._producer.close()
