"""Where the worker commits offsets: after a batch is stored, never before."""

from __future__ import annotations

import logging
from collections.abc import Iterable

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

from decision_audit.worker.received import Received

log = logging.getLogger("decision_audit.worker")


def next_offsets(messages: Iterable[Received]) -> list[TopicPartition]:
    """Per partition of the batch, the offset after its last message (what to commit)."""
    top: dict[tuple[str, int], int] = {}
    for m in messages:
        k = (m.topic, m.partition)
        if m.offset > top.get(k, -1):
            top[k] = m.offset
    return [TopicPartition(t, p, o + 1) for (t, p), o in sorted(top.items())]


def commit_stored(consumer: Consumer, messages: list[Received]) -> None:
    """Commit the offsets of a batch whose rows are stored (synchronously).

    A failed commit is not fatal unless the consumer says so: the stored batch comes back
    and its chains drop it as duplicates.
    """
    offsets = next_offsets(messages)
    try:
        consumer.commit(offsets=offsets, asynchronous=False)
    except KafkaException as exc:
        err = exc.args[0] if exc.args else None
        if isinstance(err, KafkaError) and err.fatal():
            raise
        # Stored but not committed: the batch comes back and is dropped as duplicates.
        log.warning("commit of %s failed (%s): stored rows will be redelivered", offsets, exc)
