"""The worker loop: poll → verify → dedupe → batch insert → commit offsets."""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition

from consumers.clickhouse import connect
from consumers.dedupe import SeqWatermarks
from consumers.dlq import DeadLetters
from consumers.migrate import migrate
from consumers.settings import WorkerSettings
from consumers.sink import ClickHouseSink, DecisionColumns, QuarantineRow, batch_token
from consumers.topics import ensure_topics
from consumers.verify import EventVerifier, Headers, Rejection
from schemas.codec import SingleObjectCodec, default_codec

log = logging.getLogger("decision_audit.worker")


@dataclass(frozen=True, slots=True)
class Received:
    """A consumed message, with the fields the worker uses (typed, not Optional)."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: Headers

    @classmethod
    def of(cls, msg: Message) -> Received:
        return cls(
            msg.topic() or "",
            msg.partition() or 0,
            msg.offset() or 0,
            msg.key(),
            msg.value(),
            msg.headers(),  # type: ignore[arg-type]
        )


@dataclass
class WorkerStats:
    """Counters since the worker started."""

    consumed: int = 0
    inserted: int = 0
    duplicates: int = 0
    quarantined: Counter[str] = field(default_factory=Counter)
    batches: int = 0

    @property
    def quarantined_total(self) -> int:
        return sum(self.quarantined.values())


class Worker:
    """Consumes the decisions topic in a consumer group and stores it in ClickHouse.

    Offsets are committed only after the batch's rows (and its rejections, in the quarantine
    table and the DLQ) are stored, so a crash redelivers; redeliveries are dropped by the
    per-chain seq watermarks and the insert deduplication token.
    """

    def __init__(
        self,
        settings: WorkerSettings,
        *,
        client: Any | None = None,
        codec: SingleObjectCodec | None = None,
    ) -> None:
        self.settings = settings
        self.stats = WorkerStats()
        self._client = client
        self._codec = codec or default_codec()
        self._verifier = EventVerifier(self._codec, max_event_bytes=settings.max_event_bytes)
        self._stop = threading.Event()
        self._pending: list[Received] = []
        self._assigned: set[int] = set()
        self._consumer: Consumer | None = None
        self._sink: ClickHouseSink | None = None
        self._dlq: DeadLetters | None = None
        self._watermarks: SeqWatermarks | None = None

    def stop(self) -> None:
        """Ask the loop to finish its batch, commit and return (safe from signal handlers)."""
        self._stop.set()

    def run(self) -> WorkerStats:
        s = self.settings
        client = self._client or connect(s.clickhouse_url)
        migrate(client, s.database)
        if s.create_topics:
            ensure_topics(
                s.bootstrap_servers, {s.topic: s.topic_partitions, s.dlq_topic: s.topic_partitions}
            )
        self._sink = sink = ClickHouseSink(client, s.database)
        self._watermarks = SeqWatermarks(sink.max_seq)
        self._dlq = DeadLetters(s.dlq_producer_config(), s.dlq_topic, s.max_event_bytes)
        self._consumer = consumer = Consumer(s.consumer_config())
        consumer.subscribe(
            [s.topic], on_assign=self._on_assign, on_revoke=self._on_revoke, on_lost=self._on_lost
        )
        log.info(
            "worker started: topic=%s group=%s store=%s database=%s",
            s.topic,
            s.group,
            _redact_dsn(s.clickhouse_url),
            s.database,
        )
        last_activity = time.monotonic()
        batch_started = 0.0
        try:
            while not self._stop.is_set():
                timeout = s.flush_interval
                if self._pending:
                    timeout = max(0.0, batch_started + s.flush_interval - time.monotonic())
                want = min(s.batch_size - len(self._pending), 10_000)
                messages = consumer.consume(num_messages=max(want, 1), timeout=min(timeout, 1.0))
                now = time.monotonic()
                for msg in messages:
                    err = msg.error()
                    if err is not None:
                        self._on_consume_error(err)
                        continue
                    if not self._pending:
                        batch_started = now
                    self._pending.append(Received.of(msg))
                if messages or not self._assigned:
                    last_activity = now
                if self._pending and (
                    len(self._pending) >= s.batch_size or now - batch_started >= s.flush_interval
                ):
                    self._flush()
                    last_activity = time.monotonic()
                elif (
                    s.exit_when_idle is not None
                    and not self._pending
                    and now - last_activity >= s.exit_when_idle
                ):
                    log.info("idle for %.1fs with everything stored: exiting", s.exit_when_idle)
                    break
            self._flush()
        finally:
            consumer.close()
            self._dlq.close()
            log.info(
                "worker stopped: consumed=%d inserted=%d duplicates=%d quarantined=%d",
                self.stats.consumed,
                self.stats.inserted,
                self.stats.duplicates,
                self.stats.quarantined_total,
            )
        return self.stats

    # -- batch ------------------------------------------------------------------------------

    def _flush(self) -> None:
        if not self._pending:
            return
        assert self._sink is not None and self._watermarks is not None and self._dlq is not None
        assert self._consumer is not None
        started = time.monotonic()
        messages, topic = self._pending, self.settings.topic
        checked = [(m, self._verifier.check(m.value, m.key, m.headers)) for m in messages]
        wm = self._watermarks
        wm.prepare(
            (r.record["producer_id"], r.record["producer_epoch"])
            for _, r in checked
            if not isinstance(r, Rejection)
        )
        batch = DecisionColumns()
        rejected: list[QuarantineRow] = []
        duplicates = 0
        for msg, result in checked:
            if isinstance(result, Rejection):
                rejected.append(
                    QuarantineRow(
                        topic, msg.partition, msg.offset, msg.key, result, msg.value or b""
                    )
                )
                continue
            rec = result.record
            if not wm.accept((rec["producer_id"], rec["producer_epoch"]), rec["seq"]):
                duplicates += 1
                continue
            batch.append(result, msg.value or b"", msg.partition, msg.offset)
        token = batch_token(topic, ((m.partition, m.offset, m.value) for m in messages))
        try:
            self._sink.insert_decisions(batch, token)
            self._sink.insert_quarantine(rejected, token + "/q")
            self._dlq.publish(rejected)
        except Exception:
            wm.abort()
            raise
        self._commit(messages)
        wm.commit()
        self._pending = []
        st = self.stats
        st.batches += 1
        st.consumed += len(messages)
        st.inserted += len(batch)
        st.duplicates += duplicates
        for row in rejected:
            st.quarantined[row.rejection.reason] += 1
        log.info(
            "batch: consumed=%d inserted=%d duplicates=%d quarantined=%d in %.0f ms",
            len(messages),
            len(batch),
            duplicates,
            len(rejected),
            (time.monotonic() - started) * 1000,
        )

    def _commit(self, messages: list[Received]) -> None:
        assert self._consumer is not None
        top: dict[tuple[str, int], int] = {}
        for m in messages:
            k = (m.topic, m.partition)
            top[k] = max(top.get(k, -1), m.offset)
        offsets = [TopicPartition(t, p, o + 1) for (t, p), o in sorted(top.items())]
        self._consumer.commit(offsets=offsets, asynchronous=False)

    # -- rebalance --------------------------------------------------------------------------

    def _on_assign(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._assigned.update(p.partition for p in partitions)
        if self._watermarks is not None:
            self._watermarks.reset()
        log.info("assigned partitions %s", sorted(p.partition for p in partitions))

    def _on_revoke(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        # Store and commit what we hold before another worker takes these partitions.
        self._flush()
        self._assigned.difference_update(p.partition for p in partitions)
        if self._watermarks is not None:
            self._watermarks.reset()
        log.info("revoked partitions %s", sorted(p.partition for p in partitions))

    def _on_lost(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        # Lost (not revoked): we may no longer commit, so drop what we hold; it is redelivered.
        lost = {p.partition for p in partitions}
        self._pending = [m for m in self._pending if m.partition not in lost]
        self._assigned.difference_update(lost)
        if self._watermarks is not None:
            self._watermarks.reset()
        log.warning("lost partitions %s", sorted(lost))

    def _on_consume_error(self, err: KafkaError) -> None:
        if err.code() == KafkaError._PARTITION_EOF:
            return
        if err.fatal():
            raise KafkaException(err)
        log.warning("consumer error: %s", err)


def _redact_dsn(dsn: str) -> str:
    """The DSN without its password, for logs."""
    if "@" not in dsn or "://" not in dsn:
        return dsn
    scheme, rest = dsn.split("://", 1)
    creds, host = rest.rsplit("@", 1)
    user = creds.split(":", 1)[0]
    return f"{scheme}://{user}:***@{host}"
