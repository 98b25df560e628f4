"""The worker loop: poll → verify → dedupe → batch insert → commit offsets."""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition

from decision_audit.clickhouse.connect import connect, redact_dsn
from decision_audit.clickhouse.migrate import migrate
from decision_audit.contract.codec import SingleObjectCodec, default_codec
from decision_audit.contract.errors import DecisionAuditError
from decision_audit.contract.keys import KeyRing
from decision_audit.worker.chains import ChainTracker, Checked, judge
from decision_audit.worker.checks import (
    EventVerifier,
    Headers,
    Rejection,
    StagedEvent,
    VerifiedCheckpoint,
    VerifiedEvent,
)
from decision_audit.worker.dlq import DeadLetters
from decision_audit.worker.gc_tuning import tuned_gc
from decision_audit.worker.health import Health, MetricsServer
from decision_audit.worker.metrics import WorkerMetrics
from decision_audit.worker.model_events import ModelEventBatch, ModelEventIngest
from decision_audit.worker.retry import Backoff, classify
from decision_audit.worker.settings import WorkerSettings
from decision_audit.worker.staging import Stager, StagingMismatch
from decision_audit.worker.startup import wait_for_broker
from decision_audit.worker.store import (
    CHECKPOINT_COLUMNS,
    INCIDENT_COLUMNS,
    ClickHouseSink,
    DecisionColumns,
    QuarantineRow,
    batch_token,
    checkpoint_row,
)
from decision_audit.worker.topics import ensure_topics, missing_topics

log = logging.getLogger("decision_audit.worker")

_GAP_REFETCHES = 3
"""fetches of a partition's skipped offsets before the gap is taken as real"""


_new_tuple = tuple.__new__


class Received(NamedTuple):
    """A consumed message, with the fields the worker uses (typed, not Optional)."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: Headers

    @classmethod
    def of(cls, msg: Message) -> Received:
        # tuple.__new__ skips the generated __new__'s argument handling: once per message.
        return _new_tuple(
            cls,
            (
                msg.topic() or "",
                msg.partition() or 0,
                msg.offset() or 0,
                msg.key(),
                msg.value(),
                msg.headers(),
            ),
        )


class StoreFailed(DecisionAuditError, RuntimeError):
    """The store failed for good (permanent error, or transient past the retry limit).

    Nothing past the last stored batch was committed: a restarted worker gets the batch again.
    """


class _BatchChanged(Exception):
    """A rebalance took partitions of the batch being retried: build the batch again."""


@dataclass
class PreparedBatch:
    """What one batch of messages becomes: rows per table, rejections, dropped duplicates."""

    decisions: DecisionColumns = field(default_factory=DecisionColumns)
    staged: list[int] = field(default_factory=list)
    staged_total: int = 0
    """how many events the stager holds (all of them copied when ``staged`` is complete)"""
    """``_idx`` of the staged events to copy into ``decisions`` (see :mod:`.staging`)"""
    checkpoints: list[list[Any]] = field(default_factory=list)
    incidents: list[list[Any]] = field(default_factory=list)
    rejected: list[QuarantineRow] = field(default_factory=list)
    duplicates: int = 0
    model_events: ModelEventBatch = field(default_factory=ModelEventBatch)


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


class Worker:
    """Consumes the decisions topic in a consumer group and stores it in ClickHouse.

    Offsets are committed only after the batch's rows (and its rejections, in the quarantine
    table and the DLQ) are stored, so a crash redelivers; redeliveries are dropped by the
    per-chain seq watermarks and the insert deduplication token. A store that fails with a
    transient error is retried with backoff, the same batch under the same tokens, while the
    assigned partitions are paused and the consumer keeps polling (so the group keeps it);
    past ``insert_retry_limit`` tries or ``insert_retry_budget`` seconds, or on a permanent
    error, :meth:`run` raises :class:`StoreFailed` with nothing committed past the batch.
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
        self.metrics = WorkerMetrics()
        self.health = Health(stall_after=settings.health_stall_seconds)
        self.metrics_port: int | None = None
        """port of the /metrics and /healthz endpoint while :meth:`run` serves it"""
        self._backoff = Backoff(
            initial=settings.insert_retry_backoff,
            maximum=settings.insert_retry_max_backoff,
            attempts=settings.insert_retry_limit,
            budget=settings.insert_retry_budget,
        )
        self._client = client
        self._codec = codec or default_codec()
        self._keyring = KeyRing.load(settings.keys)
        self._verifier = EventVerifier(
            self._codec,
            max_event_bytes=settings.max_event_bytes,
            keyring=self._keyring,
            require_signed=settings.require_signed,
        )
        self._stager: Stager | None = None
        self._stop = threading.Event()
        self._pending: list[Received] = []
        self._assigned: set[tuple[str, int]] = set()
        self._consumer: Consumer | None = None
        self._sink: ClickHouseSink | None = None
        self._dlq: DeadLetters | None = None
        self._chains: ChainTracker | None = None
        self._model_events: ModelEventIngest | None = None
        self._retrying = False
        self._paused = False
        self._in_rebalance = False
        self._batch_changed = False
        self._lag_partitions: set[tuple[str, int]] = set()
        self._lag_updated = 0.0
        self._next_offset: dict[tuple[str, int], int] = {}
        """per partition, the offset the next message must have (see :meth:`_receive`)"""
        self._gap_refetches: Counter[tuple[str, int, int]] = Counter()

    def stop(self) -> None:
        """Ask the loop to finish its batch, commit and return (safe from signal handlers)."""
        self._stop.set()

    def run(self) -> WorkerStats:
        """Consume until :meth:`stop` (or ``exit_when_idle``); raises :class:`StoreFailed`."""
        s = self.settings
        server = None
        if s.metrics_port is not None:
            server = MetricsServer(
                s.metrics_host, s.metrics_port, self.metrics.registry, self.health
            )
            self.metrics_port = server.port
            log.info("metrics on http://%s:%d/metrics and /healthz", s.metrics_host, server.port)
        try:
            with tuned_gc():
                self._run()
        finally:
            if server is not None:
                server.close()
        return self.stats

    def _run(self) -> None:
        s = self.settings
        client = self._client or connect(s.clickhouse_url)
        migrate(client, s.database)
        if not wait_for_broker(s.bootstrap_servers, s.broker_wait, self._stop):
            return  # stopped while waiting
        if s.create_topics:
            ensure_topics(
                s.bootstrap_servers,
                {
                    s.topic: s.topic_partitions,
                    s.dlq_topic: s.topic_partitions,
                    s.model_events_topic: s.topic_partitions,
                },
            )
            topics = [s.topic, s.model_events_topic]
        else:
            topics = self._topics_to_consume()
        self._sink = ClickHouseSink(client, s.database)
        self._chains = ChainTracker(self._sink.chain_heads, self._sink.stored_hashes)
        self._model_events = ModelEventIngest(self._sink)
        if s.parse_in_clickhouse:
            self._stager = Stager(
                client,
                self._codec.registry,
                max_event_bytes=s.max_event_bytes,
                keyring=self._keyring,
                require_signed=s.require_signed,
            )
        self._dlq = DeadLetters(s.dlq_producer_config(), s.dlq_topic, s.max_event_bytes)
        self._consumer = consumer = Consumer(s.consumer_config())
        consumer.subscribe(
            topics,
            on_assign=self._on_assign,
            on_revoke=self._on_revoke,
            on_lost=self._on_lost,
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
                polled_at = time.monotonic()
                messages = consumer.consume(num_messages=max(want, 1), timeout=min(timeout, 1.0))
                now = time.monotonic()
                if messages and not self._pending:
                    # consume() waits for a full batch or the timeout, so the first message may
                    # have arrived as early as the call: count the batch's age from there.
                    batch_started = polled_at
                self._receive(messages)
                if self._paused:  # e.g. assigned while a retry had paused the partitions
                    self._resume()
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
                self._observe()
            self._flush()
        except BaseException:
            # Unstored messages stay uncommitted and come back; the revoke in close() must
            # not try to store them again.
            self._pending.clear()
            raise
        finally:
            consumer.close()
            self._dlq.close()
            log.info(
                "worker stopped: consumed=%d inserted=%d duplicates=%d quarantined=%d retries=%d",
                self.stats.consumed,
                self.stats.inserted,
                self.stats.duplicates,
                self.stats.quarantined_total,
                self.stats.insert_retries,
            )

    def _topics_to_consume(self) -> list[str]:
        """The decisions topic, and the model-events topic if it exists.

        Subscribed but missing, the model-events topic slowed the consumer's fetches of the
        decisions topic by a third (bench/RESULTS.md), so a worker that may not create topics
        leaves it out and says so.
        """
        s = self.settings
        if missing_topics(s.bootstrap_servers, [s.model_events_topic]):
            log.warning(
                "model-events topic %r does not exist: model-lifecycle events are not "
                "consumed. Create it and restart the worker, or let the worker create its "
                "topics (--create-topics)",
                s.model_events_topic,
            )
            return [s.topic]
        return [s.topic, s.model_events_topic]

    def _receive(self, messages: list[Message]) -> None:
        """Take consumed messages into the pending batch, guarding against skipped offsets.

        The embedded broker (Tansu) occasionally answers a fetch at the tail of a partition
        with a later batch than the one asked for, so the consumer silently skips offsets
        (measured: a few to ~80 messages, in about one run in three of 80k messages at the
        tail under concurrent producers); fetching again returns them. The worker's topics
        are neither compacted nor transactional, so offsets must be consecutive: on a jump,
        the rest of that partition's messages is dropped and the partition seeks back to the
        missing offset. A gap that persists after ``_GAP_REFETCHES`` tries is accepted with
        a warning (and the chain records a seq_gap incident if events are really missing).
        """
        refetch: dict[tuple[str, int], int] = {}
        next_offset = self._next_offset
        take = self._pending.append
        of = Received.of
        for msg in messages:
            err = msg.error()
            if err is not None:
                self._on_consume_error(err)
                continue
            m = of(msg)
            where = (m.topic, m.partition)
            if refetch and where in refetch:
                continue
            expected = next_offset.get(where)
            if expected is not None and m.offset > expected:
                tries = self._gap_refetches[(*where, expected)]
                if tries < _GAP_REFETCHES:
                    self._gap_refetches[(*where, expected)] += 1
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
            take(m)
        if refetch:
            assert self._consumer is not None
            for (topic, partition), offset in refetch.items():
                self.metrics.offset_refetches.inc()
                self._consumer.seek(TopicPartition(topic, partition, offset))

    # -- batch ------------------------------------------------------------------------------

    def _flush(self) -> None:
        """Store and commit everything pending (retrying transient store failures)."""
        while self._pending:
            try:
                self._flush_pending()
            except _BatchChanged:
                log.warning("rebalance while retrying: rebuilding the batch from what is left")

    def _flush_pending(self) -> None:
        assert self._chains is not None
        started = time.monotonic()
        messages = list(self._pending)
        _, partitions, offsets, _, values, _ = zip(*messages, strict=True)  # by field
        token = batch_token(self.settings.topic, partitions, offsets, values)
        batch = self._store_with_retries(messages, token)
        self._commit(messages)
        self._chains.commit()
        if self._stager is not None:
            self._stager.reset()
        self._pending = self._pending[len(messages) :]
        self._resume()
        self._record(messages, batch, time.monotonic() - started)

    def _check_batch(self, messages: list[Received]) -> list[tuple[Received, Checked]]:
        """Check every message: decision events through ClickHouse when it can parse them."""
        stager = self._stager
        if stager is None:
            return [(m, self._check(m)) for m in messages]
        stager.reset()
        topic = self.settings.topic
        results: list[Checked] = []
        screen, add = stager.screen, results.append
        for m in messages:
            staged = None
            if m.topic == topic:
                staged = screen(m.value, m.key, m.headers, m.partition, m.offset)
            add(staged if staged is not None else self._check(m))
        if not len(stager):
            return list(zip(messages, results, strict=True))
        try:
            flagged: dict[int, str] | None = stager.stage()
        except Exception as exc:
            if not isinstance(exc, StagingMismatch) and classify(exc).transient:
                raise
            # Typically a malformed event among them: find it (and the reason) in Python.
            self.metrics.staging_fallbacks.inc()
            log.warning(
                "ClickHouse could not read this batch's events (%s): checking them in Python. "
                "If this repeats for every batch and the cause is not the data (e.g. the user "
                "may not create temporary tables), run the worker with --parse-in-python",
                f"{type(exc).__name__}: {exc}"[:300],
            )
            flagged = None
        if flagged is None or flagged:
            for i, (m, r) in enumerate(zip(messages, results, strict=True)):
                if isinstance(r, StagedEvent) and (flagged is None or r.index in flagged):
                    results[i] = self._check(m)
        return list(zip(messages, results, strict=True))

    def _check(self, msg: Received) -> VerifiedEvent | VerifiedCheckpoint | Rejection:
        try:
            record = (
                "model_event" if msg.topic == self.settings.model_events_topic else "decision_event"
            )
            return self._verifier.check(msg.value, msg.key, msg.headers, record=record)
        except Exception as exc:  # hostile input must not crash the worker: quarantine it
            log.warning(
                "verifier raised on %s/%d/%d: %r", msg.topic, msg.partition, msg.offset, exc
            )
            return Rejection("invalid_event", f"unverifiable: {type(exc).__name__}: {exc}"[:500])

    def _store_with_retries(self, messages: list[Received], token: str) -> PreparedBatch:
        """Check, prepare and store the batch; on a transient error pause, back off, retry.

        Every try stores the same messages under the same deduplication tokens, so what a
        failed try already wrote is not written twice.
        """
        assert self._chains is not None
        first_failure = 0.0
        tries = 0
        while True:
            try:
                batch = self._prepare(self._check_batch(messages))
                self._store(batch, token)
            except Exception as exc:
                self._chains.abort()
                tries += 1
                now = time.monotonic()
                if tries == 1:
                    first_failure = now
                failure = classify(exc)
                delay = self._backoff.delay(tries)
                where = _describe(messages)
                if not failure.transient:
                    raise StoreFailed(
                        f"storing batch {where} failed with a permanent error ({failure.cause}): "
                        f"{exc}. Nothing past the batch was committed. Fix the cause (schema: run "
                        "`decision-audit migrate`; permissions; the data) and restart the worker."
                    ) from exc
                if self._backoff.gives_up(tries, now - first_failure, delay):
                    raise StoreFailed(
                        f"storing batch {where} failed {tries} time(s) over "
                        f"{now - first_failure:.0f}s with transient errors, last "
                        f"({failure.cause}): {exc}. Nothing past the batch was committed; a "
                        "restarted worker gets it again. Fix the store (is ClickHouse up, with "
                        "free disk and memory, not rejecting inserts for too many parts?) or "
                        "raise --insert-retry-limit / DECISION_AUDIT_INSERT_RETRY_BUDGET."
                    ) from exc
                self.stats.insert_retries += 1
                self.metrics.insert_retries.labels(failure.cause).inc()
                self.metrics.insert_failing.set(1)
                self.health.failing(f"{failure.cause}: {exc}"[:300])
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
                self.metrics.insert_failing.set(0)
                return batch

    def _wait_paused(self, seconds: float) -> None:
        """Wait with the partitions paused, still polling so the group keeps this member."""
        consumer = self._consumer
        assert consumer is not None
        deadline = time.monotonic() + seconds
        self._retrying = True
        try:
            while (remaining := deadline - time.monotonic()) > 0:
                if self._stop.is_set():
                    raise StoreFailed(
                        f"stopped while the store was failing ({self.health.last_error}); "
                        f"{len(self._pending)} message(s) not stored and not committed: a "
                        "restarted worker gets them again"
                    )
                if self._in_rebalance:  # no polling inside a rebalance callback
                    time.sleep(min(remaining, 0.2))
                    continue
                assignment = consumer.assignment()
                if assignment:
                    consumer.pause(assignment)
                    self._paused = True
                self._receive(consumer.consume(num_messages=1000, timeout=min(remaining, 0.2)))
                self._observe()
                if self._batch_changed:
                    self._batch_changed = False
                    raise _BatchChanged
        finally:
            self._retrying = False

    def _resume(self) -> None:
        if self._paused and self._consumer is not None:
            self._paused = False
            assignment = self._consumer.assignment()
            if assignment:
                self._consumer.resume(assignment)

    def _prepare(self, checked: list[tuple[Received, Checked]]) -> PreparedBatch:
        """Follow the chains through the batch: what to insert, drop and quarantine."""
        assert self._chains is not None
        topic = self.settings.topic
        chains = self._chains
        # Lifecycle events follow their own chains (decision_audit.worker.model_events).
        me_topic = self.settings.model_events_topic
        lifecycle = [c for c in checked if c[0].topic == me_topic]
        if lifecycle:
            checked = [c for c in checked if c[0].topic != me_topic]
        j = judge(checked, chains)
        out = PreparedBatch(duplicates=j.duplicates)
        if self._stager is not None:
            out.staged_total = len(self._stager)
        copy = out.staged.append
        for msg, ev in j.accepted:
            if isinstance(ev, StagedEvent):
                copy(ev.index)
            else:
                out.decisions.append(ev, msg.value or b"", msg.partition, msg.offset)
        for msg, cp in j.checkpoints:
            out.checkpoints.append(checkpoint_row(cp, msg.value or b"", msg.partition, msg.offset))
        for msg, rec, lo, hi in j.gaps:
            out.incidents.append(
                [
                    "seq_gap",
                    rec["producer_id"],
                    rec["producer_epoch"],
                    lo,
                    hi,
                    f"{hi - lo + 1} event(s) missing before seq {rec['seq']}",
                    msg.partition,
                    msg.offset,
                ]
            )
        for msg, rejection in j.rejected:
            out.rejected.append(
                QuarantineRow(
                    topic, msg.partition, msg.offset, msg.key, rejection, msg.value or b""
                )
            )
        if lifecycle and self._model_events is not None:
            out.model_events = me = self._model_events.process(lifecycle)
            out.incidents += me.incidents
            out.rejected += me.rejected
            out.duplicates += me.duplicates
        return out

    def _store(self, batch: PreparedBatch, token: str) -> None:
        """Write every table of the batch, then the DLQ; each insert under its own token."""
        assert self._sink is not None and self._dlq is not None
        sink = self._sink
        if batch.staged:
            assert self._stager is not None
            self._stager.copy_into(sink.database, batch.staged, batch.staged_total, token + "/s")
        sink.insert_decisions(batch.decisions, token)
        if self._model_events is not None:
            self._model_events.insert(batch.model_events, token)
        sink.insert_rows("checkpoints", CHECKPOINT_COLUMNS, batch.checkpoints, token + "/c")
        sink.insert_rows("incidents", INCIDENT_COLUMNS, batch.incidents, token + "/i")
        sink.insert_quarantine(batch.rejected, token + "/q")
        self._dlq.publish(batch.rejected)

    def _record(self, messages: list[Received], batch: PreparedBatch, seconds: float) -> None:
        st, m = self.stats, self.metrics
        st.batches += 1
        st.consumed += len(messages)
        inserted = len(batch.decisions) + len(batch.staged)
        st.inserted += inserted
        st.duplicates += batch.duplicates
        st.checkpoints += len(batch.checkpoints)
        st.incidents += len(batch.incidents)
        m.consumed.inc(len(messages))
        m.inserted.inc(inserted)
        m.duplicates.inc(batch.duplicates)
        m.checkpoints.inc(len(batch.checkpoints))
        m.incidents.inc(len(batch.incidents))
        for row in batch.rejected:
            st.quarantined[row.rejection.reason] += 1
            m.quarantined.labels(row.rejection.reason).inc()
        m.batch_size.observe(len(messages))
        m.insert_seconds.observe(seconds)
        m.last_success.set_to_current_time()
        self.health.stored()
        log.info(
            "batch: consumed=%d inserted=%d duplicates=%d checkpoints=%d incidents=%d "
            "quarantined=%d in %.0f ms",
            len(messages),
            inserted,
            batch.duplicates,
            len(batch.checkpoints),
            len(batch.incidents),
            len(batch.rejected),
            seconds * 1000,
        )

    def _commit(self, messages: list[Received]) -> None:
        assert self._consumer is not None
        top: dict[tuple[str, int], int] = {}
        for m in messages:
            k = (m.topic, m.partition)
            if m.offset > top.get(k, -1):
                top[k] = m.offset
        offsets = [TopicPartition(t, p, o + 1) for (t, p), o in sorted(top.items())]
        try:
            self._consumer.commit(offsets=offsets, asynchronous=False)
        except KafkaException as exc:
            err = exc.args[0] if exc.args else None
            if isinstance(err, KafkaError) and err.fatal():
                raise
            # Stored but not committed: the batch comes back and is dropped as duplicates.
            log.warning("commit of %s failed (%s): stored rows will be redelivered", offsets, exc)

    # -- observation ------------------------------------------------------------------------

    def _observe(self) -> None:
        """Refresh liveness, pending and (about once a second) per-partition lag."""
        self.health.looped(len(self._pending))
        self.metrics.pending.set(len(self._pending))
        now = time.monotonic()
        if now - self._lag_updated >= 1.0:
            self._lag_updated = now
            self._update_lag()

    def _update_lag(self) -> None:
        """Lag from the consumer's own view: cached high watermark minus position.

        The broker's ListOffsets "latest" is not trusted (Tansu answers the start of the last
        batch); the high watermark in fetch responses is what the consumer has seen. Before
        a partition returned anything, its position is the committed offset (else the low
        watermark: ``auto.offset.reset=earliest``).
        """
        consumer = self._consumer
        if consumer is None:
            return
        seen: set[tuple[str, int]] = set()
        try:
            assignment = consumer.assignment()
            positions = consumer.position(assignment) if assignment else []
            unread = [tp for tp in positions if tp.offset < 0]
            starts = {
                (tp.topic, tp.partition): tp.offset
                for tp in (consumer.committed(unread, timeout=1.0) if unread else [])
            }
            for tp in positions:
                low, high = consumer.get_watermark_offsets(tp, cached=True)
                key = (tp.topic, tp.partition)
                position = tp.offset if tp.offset >= 0 else starts.get(key, -1)
                if position < 0:
                    position = low
                if high < 0 or position < 0:
                    continue
                seen.add(key)
                self.metrics.lag.labels(tp.topic, str(tp.partition)).set(max(high - position, 0))
        except KafkaException as exc:
            log.debug("lag not available: %s", exc)
            return
        for topic, partition in self._lag_partitions - seen:
            self.metrics.lag.remove(topic, str(partition))
        self._lag_partitions = seen

    # -- rebalance --------------------------------------------------------------------------

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._assigned.update((p.topic, p.partition) for p in partitions)
        # librdkafka keeps a partition's pause across a rebalance: one paused for a retry and
        # assigned again would never be fetched. The loop resumes them (a retry re-pauses).
        self._paused = True
        self._expect_from_commits(consumer, partitions)
        if self._chains is not None:
            self._chains.reset()
        self.metrics.rebalances.labels("assign").inc()
        self.metrics.assigned.set(len(self._assigned))
        log.info("assigned partitions %s", sorted(f"{p.topic}[{p.partition}]" for p in partitions))

    def _on_revoke(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        revoked = {(p.topic, p.partition) for p in partitions}
        if self._retrying:
            # The store is failing: what we hold of these partitions goes to their next owner.
            self._drop_pending(revoked)
        else:
            # Store and commit what we hold before another worker takes these partitions.
            self._in_rebalance = True
            try:
                self._flush()
            finally:
                self._in_rebalance = False
        self._assigned.difference_update(revoked)
        if self._chains is not None:
            self._chains.reset()
        self.metrics.rebalances.labels("revoke").inc()
        self.metrics.assigned.set(len(self._assigned))
        log.info("revoked partitions %s", sorted(f"{t}[{p}]" for t, p in revoked))

    def _on_lost(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        # Lost (not revoked): we may no longer commit, so drop what we hold; it is redelivered.
        lost = {(p.topic, p.partition) for p in partitions}
        self._drop_pending(lost)
        self._assigned.difference_update(lost)
        if self._chains is not None:
            self._chains.reset()
        self.metrics.rebalances.labels("lost").inc()
        self.metrics.assigned.set(len(self._assigned))
        log.warning("lost partitions %s", sorted(f"{t}[{p}]" for t, p in lost))

    def _expect_from_commits(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """A newly assigned partition resumes at its committed offset: expect that one next."""
        for tp in partitions:
            self._next_offset.pop((tp.topic, tp.partition), None)
        try:
            for tp in consumer.committed(partitions, timeout=10.0):
                if tp.offset >= 0 and tp.error is None:
                    self._next_offset[(tp.topic, tp.partition)] = tp.offset
        except KafkaException as exc:
            log.warning("committed offsets not available (%s): skip guard starts later", exc)

    def _drop_pending(self, partitions: set[tuple[str, int]]) -> None:
        kept = [m for m in self._pending if (m.topic, m.partition) not in partitions]
        if len(kept) != len(self._pending):
            self._batch_changed = True
        self._pending = kept

    def _on_consume_error(self, err: KafkaError) -> None:
        if err.code() == KafkaError._PARTITION_EOF:
            return
        if err.fatal():
            raise KafkaException(err)
        log.warning("consumer error: %s", err)


def _describe(messages: Iterable[Received]) -> str:
    """``topic[partition:first-last,...]`` of a batch, for error messages."""
    spans: dict[tuple[str, int], list[int]] = {}
    for m in messages:
        r = spans.setdefault((m.topic, m.partition), [m.offset, m.offset])
        r[0], r[1] = min(r[0], m.offset), max(r[1], m.offset)
    return ", ".join(f"{t}[{p}:{lo}-{hi}]" for (t, p), (lo, hi) in sorted(spans.items()))
