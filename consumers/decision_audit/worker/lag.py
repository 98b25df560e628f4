"""The consumer-lag gauge: what each assigned partition holds after the worker's position.

The poll loop hands over its positions (a local read, no request) about once a second; a
thread of its own asks the broker for the partitions' log end offsets through an admin
client with its own connections, and sets the gauge. Asked on the consumer itself, each
ListOffsets waited behind the consumer's pending fetch (the broker answers one request per
connection at a time, and a fetch waits up to ``fetch.wait.max.ms`` for data): on Apache
Kafka that stalled the loop ~0.45 s per refresh and cut the worker's throughput by 40%.

The broker's answer is used rather than the high watermark of the last fetch so that what
arrives while the partitions are paused (a retried store) is counted. On Tansu, whose
ListOffsets is wrong, :class:`decision_audit.worker.broker_workarounds.ConsumerViewLag`
takes this one's place.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

import prometheus_client
from confluent_kafka import Consumer, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient, OffsetSpec  # type: ignore[attr-defined]

log = logging.getLogger("decision_audit.worker")

Partition = tuple[str, int]
"""``(topic, partition)``"""

_LATEST = OffsetSpec.latest()  # type: ignore[no-untyped-call]
_EARLIEST = OffsetSpec.earliest()  # type: ignore[no-untyped-call]


def positions(consumer: Consumer) -> dict[Partition, int]:
    """Each assigned partition's next offset to read; before it returned anything, the
    committed offset (-1 when there is none: the lag is then counted from the start)."""
    assignment = consumer.assignment()
    if not assignment:
        return {}
    current = consumer.position(assignment)
    unread = [tp for tp in current if tp.offset < 0]
    committed = {
        (tp.topic, tp.partition): tp.offset
        for tp in (consumer.committed(unread, timeout=1.0) if unread else [])
    }
    return {
        (tp.topic, tp.partition): tp.offset
        if tp.offset >= 0
        else committed.get((tp.topic, tp.partition), -1)
        for tp in current
    }


class BrokerLag:
    """Lag = the broker's log end offset minus the worker's position, per partition.

    :meth:`update` is called from the poll loop and asks the broker nothing but, for a
    partition not read yet, its committed offset (the group coordinator answers that apart
    from fetches); the gauge follows within about a second (or ``request_timeout`` when the
    broker is slow).
    """

    def __init__(
        self,
        gauge: prometheus_client.Gauge,
        admin_config: dict[str, Any],
        *,
        request_timeout: float = 5.0,
    ) -> None:
        self._gauge = gauge
        """labelled ``(topic, partition)``"""
        self._admin_config = admin_config
        self._request_timeout = request_timeout
        self._latest: dict[Partition, int] | None = None
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._closed = threading.Event()
        self._thread: threading.Thread | None = None
        self._shown: set[Partition] = set()

    def update(self, consumer: Consumer) -> None:
        """Hand the current positions to the lag thread (started on the first call)."""
        try:
            current = positions(consumer)
        except KafkaException as exc:
            log.debug("positions not available: %s", exc)
            return
        with self._lock:
            self._latest = current
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._run, name="decision-audit-lag", daemon=True
            )
            self._thread.start()
        self._wake.set()

    def close(self) -> None:
        """Stop the lag thread (the gauge keeps its last values)."""
        self._closed.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(self._request_timeout + 1.0)

    def _run(self) -> None:
        admin = AdminClient(self._admin_config)
        while True:
            self._wake.wait()
            if self._closed.is_set():
                return
            self._wake.clear()
            with self._lock:
                current, self._latest = self._latest, None
            if current is None:
                continue
            ends = self._offsets(admin, list(current), _LATEST)
            # Never read and nothing committed: auto.offset.reset=earliest reads from the start.
            unread = [key for key, position in current.items() if position < 0]
            starts = self._offsets(admin, unread, _EARLIEST)
            self._show({k: v if v >= 0 else starts.get(k, -1) for k, v in current.items()}, ends)

    def _offsets(
        self, admin: AdminClient, partitions: list[Partition], spec: OffsetSpec
    ) -> dict[Partition, int]:
        if not partitions:
            return {}
        wanted = {TopicPartition(t, p): spec for t, p in partitions}
        found: dict[Partition, int] = {}
        try:
            futures = admin.list_offsets(wanted, request_timeout=self._request_timeout)
        except KafkaException as exc:
            log.debug("offsets not available: %s", exc)
            return found
        for tp, future in futures.items():
            try:
                found[(tp.topic, tp.partition)] = future.result().offset
            except KafkaException as exc:
                log.debug("offset of %s[%d] not available: %s", tp.topic, tp.partition, exc)
        return found

    def _show(self, current: dict[Partition, int], ends: dict[Partition, int]) -> None:
        shown: set[Partition] = set()
        for key, position in current.items():
            end = ends.get(key)
            if end is None or end < 0 or position < 0:
                if key in self._shown:  # no answer this time: keep the last value
                    shown.add(key)
                continue
            self._gauge.labels(key[0], str(key[1])).set(max(end - position, 0))
            shown.add(key)
        for topic, partition in self._shown - shown:
            self._gauge.remove(topic, str(partition))
        self._shown = shown
