"""Workarounds for brokers that answer some Kafka requests wrongly; each says which and why.

Both are needed by the embedded broker (Tansu) only: :func:`needed` turns them on for it and
off for Apache Kafka (where the lag is asked of the broker, :mod:`decision_audit.worker.lag`,
so that what arrives while the partitions are paused is counted). Remove them when no
supported broker needs them.
"""

from __future__ import annotations

import logging
from collections import Counter

import prometheus_client
from confluent_kafka import Consumer, KafkaException, TopicPartition

from decision_audit.worker.lag import positions
from decision_audit.worker.received import Received

log = logging.getLogger("decision_audit.worker")

TANSU_CLUSTER_ID = "tansu"
"""Tansu's cluster id starts with this (``tansu_cluster`` by default)"""

GAP_REFETCHES = 3
"""fetches of a partition's skipped offsets before the gap is taken as real"""

Partition = tuple[str, int]
"""``(topic, partition)``"""


def needed(setting: str, cluster_id: str | None) -> bool:
    """Whether to work around Tansu: ``on``/``off`` as set, ``auto`` by the cluster id."""
    if setting != "auto":
        return setting == "on"
    return (cluster_id or "").lower().startswith(TANSU_CLUSTER_ID)


class OffsetGapGuard:
    """Refetches offsets that a fetch skipped.

    Needed for Tansu: it occasionally answers a fetch at the tail of a partition with a later
    batch than the one asked for, so the consumer silently skips offsets (measured: a few to
    ~80 messages, in about one run in three of 80k messages at the tail under concurrent
    producers); fetching again returns them. The worker's topics are neither compacted nor
    transactional, so offsets must be consecutive: on a jump, the rest of that partition's
    messages is dropped and the partition seeks back to the missing offset. A gap that
    persists after ``refetches`` tries is accepted with a warning (and the chain records a
    seq_gap incident if events are really missing). Apache Kafka does not skip.
    """

    def __init__(
        self,
        refetched: prometheus_client.Counter,
        *,
        enabled: bool = True,
        refetches: int = GAP_REFETCHES,
    ) -> None:
        self.enabled = enabled
        self._refetched = refetched
        """counts the seeks back"""
        self._refetches = refetches
        self._next_offset: dict[Partition, int] = {}
        """per partition, the offset the next message must have"""
        self._tries: Counter[tuple[str, int, int]] = Counter()

    def admit(self, received: list[Received]) -> tuple[list[Received], dict[Partition, int]]:
        """The messages to keep, and the partitions to fetch again from the offset given."""
        if not self.enabled:
            return received, {}
        refetch: dict[Partition, int] = {}
        next_offset = self._next_offset
        kept: list[Received] = []
        keep = kept.append
        for m in received:
            where = (m.topic, m.partition)
            if refetch and where in refetch:
                continue
            expected = next_offset.get(where)
            if expected is not None and m.offset > expected:
                tries = self._tries[(*where, expected)]
                if tries < self._refetches:
                    self._tries[(*where, expected)] += 1
                    refetch[where] = expected
                    log.warning(
                        "offsets %d-%d of %s[%d] were skipped by the fetch: fetching again",
                        expected,
                        m.offset - 1,
                        m.topic,
                        m.partition,
                    )
                    continue
                log.warning(
                    "offsets %d-%d of %s[%d] still missing after %d fetches: going on",
                    expected,
                    m.offset - 1,
                    m.topic,
                    m.partition,
                    tries,
                )
            if expected is None or m.offset >= expected:
                next_offset[where] = m.offset + 1
            keep(m)
        return kept, refetch

    def take(self, consumer: Consumer, received: list[Received]) -> list[Received]:
        """:meth:`admit`, then seek each partition with a gap back to its missing offset."""
        kept, refetch = self.admit(received)
        for (topic, partition), offset in refetch.items():
            self._refetched.inc()
            consumer.seek(TopicPartition(topic, partition, offset))
        return kept

    def expect_from_commits(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """A newly assigned partition resumes at its committed offset: expect that one next."""
        if not self.enabled:
            return
        for tp in partitions:
            self._next_offset.pop((tp.topic, tp.partition), None)
        try:
            for tp in consumer.committed(partitions, timeout=10.0):
                if tp.offset >= 0 and tp.error is None:
                    self._next_offset[(tp.topic, tp.partition)] = tp.offset
        except KafkaException as exc:
            log.warning("committed offsets not available (%s): skip guard starts later", exc)


class ConsumerViewLag:
    """Per-partition lag from the consumer's own view: cached high watermark minus position.

    Needed for Tansu: its ListOffsets "latest" answers the start of the partition's last
    batch, not its end, so lag from the broker's answer is wrong; the high watermark in fetch
    responses is what the consumer has seen (it misses what arrives while the partitions are
    paused). No request is made. Elsewhere :class:`decision_audit.worker.lag.BrokerLag`
    asks the broker. Before a partition returned anything, its position is the committed
    offset, else the low watermark (``auto.offset.reset=earliest``).
    """

    def __init__(self, gauge: prometheus_client.Gauge) -> None:
        self._gauge = gauge
        """labelled ``(topic, partition)``"""
        self._partitions: set[Partition] = set()

    def update(self, consumer: Consumer) -> None:
        """Set the gauge of every assigned partition; drop the gauges of the others."""
        seen: set[Partition] = set()
        try:
            for (topic, partition), position in positions(consumer).items():
                tp = TopicPartition(topic, partition)
                low, high = consumer.get_watermark_offsets(tp, cached=True)
                at = position if position >= 0 else low
                if high < 0 or at < 0:
                    continue
                seen.add((topic, partition))
                self._gauge.labels(topic, str(partition)).set(max(high - at, 0))
        except KafkaException as exc:
            log.debug("lag not available: %s", exc)
            return
        for topic, partition in self._partitions - seen:
            self._gauge.remove(topic, str(partition))
        self._partitions = seen

    def close(self) -> None:
        """Nothing to stop (the same shape as :class:`decision_audit.worker.lag.BrokerLag`)."""
