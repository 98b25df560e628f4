"""The worker loop: poll → verify → dedupe → batch insert → commit offsets."""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition

from consumers.clickhouse import connect, redact_dsn
from consumers.dedupe import ChainTracker, Outcome
from consumers.dlq import DeadLetters
from consumers.keys import KeyRing
from consumers.migrate import migrate
from consumers.settings import WorkerSettings
from consumers.sink import (
    CHECKPOINT_COLUMNS,
    INCIDENT_COLUMNS,
    ClickHouseSink,
    DecisionColumns,
    QuarantineRow,
    batch_token,
    checkpoint_row,
)
from consumers.topics import ensure_topics
from consumers.verify import (
    EventVerifier,
    Headers,
    Rejection,
    VerifiedCheckpoint,
    VerifiedEvent,
)
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
    checkpoints: int = 0
    incidents: int = 0
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
        self._verifier = EventVerifier(
            self._codec,
            max_event_bytes=settings.max_event_bytes,
            keyring=KeyRing.load(settings.keys),
            require_signed=settings.require_signed,
        )
        self._stop = threading.Event()
        self._pending: list[Received] = []
        self._assigned: set[int] = set()
        self._consumer: Consumer | None = None
        self._sink: ClickHouseSink | None = None
        self._dlq: DeadLetters | None = None
        self._chains: ChainTracker | None = None

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
        self._chains = ChainTracker(sink.chain_heads, sink.stored_hashes)
        self._dlq = DeadLetters(s.dlq_producer_config(), s.dlq_topic, s.max_event_bytes)
        self._consumer = consumer = Consumer(s.consumer_config())
        consumer.subscribe(
            [s.topic], on_assign=self._on_assign, on_revoke=self._on_revoke, on_lost=self._on_lost
        )
        log.info(
            "worker started: topic=%s group=%s store=%s database=%s",
            s.topic,
            s.group,
            redact_dsn(s.clickhouse_url),
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
        assert self._sink is not None and self._chains is not None and self._dlq is not None
        started = time.monotonic()
        messages, topic = self._pending, self.settings.topic
        checked = [(m, self._verifier.check(m.value, m.key, m.headers)) for m in messages]
        chains = self._chains
        chains.prepare(
            (r.record["producer_id"], r.record["producer_epoch"])
            for _, r in checked
            if not isinstance(r, Rejection)
        )
        batch = DecisionColumns()
        checkpoints: list[list[Any]] = []
        incidents: list[list[Any]] = []
        rejected: list[QuarantineRow] = []
        behind: list[tuple[Received, VerifiedEvent]] = []
        duplicates = 0
        for msg, result in checked:
            if not isinstance(result, Rejection):
                rec = result.record
                chain = (rec["producer_id"], rec["producer_epoch"])
                if isinstance(result, VerifiedCheckpoint):
                    head = chains.head(chain)
                    if head is not None and head[0] == rec["seq"] and head[1] != rec["chain_head"]:
                        result = Rejection(
                            "checkpoint_mismatch",
                            f"checkpoint of {chain} at seq {rec['seq']} names another head",
                        )
                    else:
                        checkpoints.append(
                            checkpoint_row(result, msg.value or b"", msg.partition, msg.offset)
                        )
                        continue
                else:
                    verdict = chains.accept(chain, rec["seq"], rec["prev_hash"], result.event_hash)
                    if verdict.outcome is Outcome.DUPLICATE:
                        duplicates += 1
                        continue
                    if verdict.outcome is Outcome.BEHIND:
                        behind.append((msg, result))
                        continue
                    if verdict.outcome is Outcome.NEW:
                        if verdict.gap is not None:
                            lo, hi = verdict.gap
                            incidents.append(
                                [
                                    "seq_gap",
                                    chain[0],
                                    chain[1],
                                    lo,
                                    hi,
                                    f"{hi - lo + 1} event(s) missing before seq {rec['seq']}",
                                    msg.partition,
                                    msg.offset,
                                ]
                            )
                        batch.append(result, msg.value or b"", msg.partition, msg.offset)
                        continue
                    result = Rejection(
                        verdict.outcome.value,
                        f"{chain[0]!r}/{chain[1]} seq {rec['seq']} event {rec['event_id']}",
                    )
            rejected.append(
                QuarantineRow(topic, msg.partition, msg.offset, msg.key, result, msg.value or b"")
            )
        settled = chains.settle(
            [
                (
                    (r.record["producer_id"], r.record["producer_epoch"], r.record["seq"]),
                    r.event_hash,
                )
                for _, r in behind
            ]
        )
        for (msg, ev), outcome in zip(behind, settled, strict=True):
            if outcome is Outcome.DUPLICATE:
                duplicates += 1
                continue
            rec = ev.record
            rejection = Rejection(
                outcome.value,
                f"{rec['producer_id']!r}/{rec['producer_epoch']} seq {rec['seq']} "
                f"event {rec['event_id']} is below the chain head"
                + (" and differs from the stored event" if outcome is Outcome.FORK else ""),
            )
            rejected.append(
                QuarantineRow(
                    topic, msg.partition, msg.offset, msg.key, rejection, msg.value or b""
                )
            )
        token = batch_token(topic, ((m.partition, m.offset, m.value) for m in messages))
        try:
            sink = self._sink
            sink.insert_decisions(batch, token)
            sink.insert_rows("checkpoints", CHECKPOINT_COLUMNS, checkpoints, token + "/c")
            sink.insert_rows("incidents", INCIDENT_COLUMNS, incidents, token + "/i")
            sink.insert_quarantine(rejected, token + "/q")
            self._dlq.publish(rejected)
        except Exception:
            chains.abort()
            raise
        self._commit(messages)
        chains.commit()
        self._pending = []
        st = self.stats
        st.batches += 1
        st.consumed += len(messages)
        st.inserted += len(batch)
        st.duplicates += duplicates
        st.checkpoints += len(checkpoints)
        st.incidents += len(incidents)
        for row in rejected:
            st.quarantined[row.rejection.reason] += 1
        log.info(
            "batch: consumed=%d inserted=%d duplicates=%d checkpoints=%d incidents=%d "
            "quarantined=%d in %.0f ms",
            len(messages),
            len(batch),
            duplicates,
            len(checkpoints),
            len(incidents),
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
        if self._chains is not None:
            self._chains.reset()
        log.info("assigned partitions %s", sorted(p.partition for p in partitions))

    def _on_revoke(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        # Store and commit what we hold before another worker takes these partitions.
        self._flush()
        self._assigned.difference_update(p.partition for p in partitions)
        if self._chains is not None:
            self._chains.reset()
        log.info("revoked partitions %s", sorted(p.partition for p in partitions))

    def _on_lost(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        # Lost (not revoked): we may no longer commit, so drop what we hold; it is redelivered.
        lost = {p.partition for p in partitions}
        self._pending = [m for m in self._pending if m.partition not in lost]
        self._assigned.difference_update(lost)
        if self._chains is not None:
            self._chains.reset()
        log.warning("lost partitions %s", sorted(lost))

    def _on_consume_error(self, err: KafkaError) -> None:
        if err.code() == KafkaError._PARTITION_EOF:
            return
        if err.fatal():
            raise KafkaException(err)
        log.warning("consumer error: %s", err)
