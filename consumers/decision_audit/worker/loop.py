"""The worker loop: poll → check → follow chains → store → commit offsets.

The pieces it drives: :mod:`.batch` checks a batch and follows its chains,
:mod:`.retrying_store` stores it (retrying with the partitions paused), :mod:`.store` owns
every write to ClickHouse, :mod:`.offsets` commits, and :mod:`.broker_workarounds` holds
what the embedded broker needs and a well-behaved one would not.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition

from decision_audit.clickhouse.connect import connect, redact_dsn
from decision_audit.clickhouse.migrate import migrate
from decision_audit.contract.codec import SingleObjectCodec, default_codec
from decision_audit.contract.keys import KeyRing
from decision_audit.contract.registry_codec import RegistryClient, RegistryCodec
from decision_audit.worker.batch import BatchChecker
from decision_audit.worker.broker_workarounds import ConsumerViewLag, OffsetGapGuard, needed
from decision_audit.worker.dlq import DeadLetters
from decision_audit.worker.gc_tuning import tuned_gc
from decision_audit.worker.health import Health, MetricsServer
from decision_audit.worker.lag import BrokerLag
from decision_audit.worker.metrics import WorkerMetrics
from decision_audit.worker.offsets import commit_stored
from decision_audit.worker.received import Received
from decision_audit.worker.retry import Backoff
from decision_audit.worker.retrying_store import BatchChanged, RetryingStore, StoreFailed
from decision_audit.worker.settings import WorkerSettings
from decision_audit.worker.startup import wait_for_broker
from decision_audit.worker.stats import WorkerStats, record_batch
from decision_audit.worker.store import Store, batch_token
from decision_audit.worker.topics import ensure_topics, missing_topics
from decision_audit.worker.witness import Witness, witness_for

__all__ = ["StoreFailed", "Worker", "WorkerStats"]

log = logging.getLogger("decision_audit.worker")


class Worker:
    """Consumes the decisions topic (and the model-events, outcomes and reviews topics) in a
    consumer group and stores them in ClickHouse.

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
        schema_registry: str | RegistryClient | None = None,
    ) -> None:
        """``schema_registry`` (a URL or a ``SchemaRegistryClient``; default the setting
        ``schema_registry_url``) lets the worker read the Confluent framing too."""
        self.settings = settings
        self.stats = WorkerStats()
        self.metrics = WorkerMetrics()
        self.health = Health(stall_after=settings.health_stall_seconds)
        self.metrics_port: int | None = None
        """port of the /metrics and /healthz endpoint while :meth:`run` serves it"""
        self._client = client
        self._codec = codec or default_codec()
        registry = schema_registry if schema_registry is not None else settings.schema_registry_url
        if registry is not None:
            self._codec = RegistryCodec.connect(
                registry, self._codec.registry, timeout=settings.schema_registry_timeout
            )
        self._keyring = KeyRing.load(settings.keys)
        self._stop = threading.Event()
        self._pending: list[Received] = []
        self._assigned: set[tuple[str, int]] = set()
        self._consumer: Consumer | None = None
        self._checker: BatchChecker | None = None
        self._retrying_store: RetryingStore | None = None
        self._witness: Witness | None = None
        self._paused = False
        self._in_rebalance = False
        self._batch_changed = False
        self._gaps = OffsetGapGuard(self.metrics.offset_refetches)
        self._lag: ConsumerViewLag | BrokerLag | None = None
        self._lag_updated = 0.0

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
        side_topics = {
            s.model_events_topic: "model-lifecycle events",
            s.outcomes_topic: "outcomes",
            s.reviews_topic: "reviews",
        }
        if s.create_topics:
            partitions = dict.fromkeys((s.topic, s.dlq_topic, *side_topics), s.topic_partitions)
            configs: dict[str, dict[str, str]] = {}
            if s.witness_key is not None:
                partitions[s.witness_topic] = 1  # a few small statements, read in order
                # A chain's head is only in the statement where it last moved: keep them all.
                configs[s.witness_topic] = {"retention.ms": "-1"}
            ensure_topics(s.bootstrap_servers, partitions, configs=configs)
            topics = [s.topic, *side_topics]
        else:
            topics = self._topics_to_consume(side_topics)
        dlq = DeadLetters(s.dlq_producer_config(), s.dlq_topic, s.max_event_bytes)
        self._checker = BatchChecker.for_settings(
            s, client, self._codec, self._keyring, self.metrics.staging_fallbacks
        )
        store = Store(client, s.database)
        self._witness = witness_for(s, store)
        self._retrying_store = RetryingStore(
            self._checker,
            store,
            dlq,
            Backoff(
                initial=s.insert_retry_backoff,
                maximum=s.insert_retry_max_backoff,
                attempts=s.insert_retry_limit,
                budget=s.insert_retry_budget,
            ),
            stats=self.stats,
            metrics=self.metrics,
            health=self.health,
            poll_paused=self._poll_paused,
            stopping=self._stop.is_set,
            pending=lambda: len(self._pending),
        )
        self._consumer = consumer = Consumer(s.consumer_config())
        cluster_id = consumer.list_topics(timeout=10).cluster_id
        self._gaps.enabled = needed(s.broker_workarounds, cluster_id)
        self._lag = (
            ConsumerViewLag(self.metrics.lag)
            if self._gaps.enabled
            else BrokerLag(self.metrics.lag, s.admin_config())
        )
        log.info(
            "broker cluster %s: Tansu workarounds %s",
            cluster_id,
            "on" if self._gaps.enabled else "off",
        )
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
        try:
            self._poll(consumer)
            if self._stop.is_set():
                log.info("stop requested: storing %d pending message(s)", len(self._pending))
            self._flush()
            if self._witness is not None:
                self._witness.close()
        except BaseException:
            # Unstored messages stay uncommitted and come back; the revoke in close() must
            # not try to store them again.
            self._pending.clear()
            raise
        finally:
            if self._lag is not None:
                self._lag.close()
            consumer.close()
            dlq.close()
            st = self.stats
            log.info(
                "worker stopped: consumed=%d inserted=%d duplicates=%d quarantined=%d retries=%d",
                st.consumed,
                st.inserted,
                st.duplicates,
                st.quarantined_total,
                st.insert_retries,
            )

    def _topics_to_consume(self, side_topics: dict[str, str]) -> list[str]:
        """The decisions topic, and those of the side topics (model events, outcomes, reviews)
        that exist.

        Subscribed but missing, the model-events topic slowed the consumer's fetches of the
        decisions topic by a third (bench/RESULTS.md), so a worker that may not create topics
        leaves a missing one out and says so.
        """
        s = self.settings
        missing = missing_topics(s.bootstrap_servers, side_topics)
        for name in missing:
            log.warning(
                "topic %r does not exist: its %s are not consumed. Create it and restart the "
                "worker, or let the worker create its topics (--create-topics)",
                name,
                side_topics[name],
            )
        return [s.topic, *(t for t in side_topics if t not in missing)]

    # -- the loop ---------------------------------------------------------------------------

    def _poll(self, consumer: Consumer) -> None:
        """Poll into the pending batch, flushing it when full or old, until stopped or idle."""
        s = self.settings
        last_activity = last_return = time.monotonic()
        batch_started = 0.0
        while not self._stop.is_set():
            # A new batch's messages may have been queued since the last consume() returned
            # (during a flush, say): its age counts from there, not from this call.
            started = batch_started if self._pending else last_return
            timeout = max(0.0, started + s.flush_interval - time.monotonic())
            want = min(s.batch_size - len(self._pending), 10_000)
            messages = consumer.consume(num_messages=max(want, 1), timeout=min(timeout, 1.0))
            now = time.monotonic()
            if messages and not self._pending:
                batch_started = last_return
            last_return = now
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
                return
            self._observe()
            if self._witness is not None:
                self._witness.tick()

    def _receive(self, messages: list[Message]) -> None:
        """Take consumed messages into the pending batch (past the offset-gap guard)."""
        received: list[Received] = []
        take, of = received.append, Received.of
        for msg in messages:
            err = msg.error()
            if err is not None:
                self._on_consume_error(err)
                continue
            take(of(msg))
        if received:
            assert self._consumer is not None
            self._pending += self._gaps.take(self._consumer, received)

    def _flush(self) -> None:
        """Store and commit everything pending (retrying transient store failures)."""
        while self._pending:
            try:
                self._flush_pending()
            except BatchChanged:
                log.warning("rebalance while retrying: rebuilding the batch from what is left")

    def _flush_pending(self) -> None:
        assert self._retrying_store is not None and self._checker is not None
        assert self._consumer is not None
        started = time.monotonic()
        messages = list(self._pending)
        _, partitions, offsets, _, values, _ = zip(*messages, strict=True)  # by field
        token = batch_token(self.settings.topic, partitions, offsets, values)
        batch = self._retrying_store.store(messages, token)
        commit_stored(self._consumer, messages)
        heads = self._checker.commit_chains()
        if self._witness is not None:
            self._witness.observe(heads)
        self._pending = self._pending[len(messages) :]
        self._resume()
        seconds = time.monotonic() - started
        record_batch(self.stats, self.metrics, self.health, len(messages), batch, seconds)

    def _poll_paused(self, timeout: float) -> None:
        """Poll once with the partitions paused (while a store is retried): keeps the group."""
        consumer = self._consumer
        assert consumer is not None
        if self._in_rebalance:  # no polling inside a rebalance callback
            time.sleep(timeout)
            return
        assignment = consumer.assignment()
        if assignment:
            consumer.pause(assignment)
            self._paused = True
        self._receive(consumer.consume(num_messages=1000, timeout=timeout))
        self._observe()
        if self._batch_changed:
            self._batch_changed = False
            raise BatchChanged

    def _resume(self) -> None:
        if self._paused and self._consumer is not None:
            self._paused = False
            assignment = self._consumer.assignment()
            if assignment:
                self._consumer.resume(assignment)

    def _observe(self) -> None:
        """Refresh liveness, pending and (about once a second) per-partition lag."""
        self.health.looped(len(self._pending))
        self.metrics.pending.set(len(self._pending))
        now = time.monotonic()
        if now - self._lag_updated >= 1.0 and self._consumer is not None and self._lag:
            self._lag_updated = now
            self._lag.update(self._consumer)

    def _on_consume_error(self, err: KafkaError) -> None:
        if err.code() == KafkaError._PARTITION_EOF:
            return
        if err.fatal():
            raise KafkaException(err)
        log.warning("consumer error: %s", err)

    # -- rebalance --------------------------------------------------------------------------

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._assigned.update((p.topic, p.partition) for p in partitions)
        # librdkafka keeps a partition's pause across a rebalance: one paused for a retry and
        # assigned again would never be fetched. The loop resumes them (a retry re-pauses).
        self._paused = True
        self._gaps.expect_from_commits(consumer, partitions)
        self._rebalanced("assign")
        log.info("assigned partitions %s", sorted(f"{p.topic}[{p.partition}]" for p in partitions))

    def _on_revoke(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        revoked = {(p.topic, p.partition) for p in partitions}
        if self._retrying_store is not None and self._retrying_store.waiting:
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
        self._rebalanced("revoke")
        log.info("revoked partitions %s", sorted(f"{t}[{p}]" for t, p in revoked))

    def _on_lost(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        # Lost (not revoked): we may no longer commit, so drop what we hold; it is redelivered.
        lost = {(p.topic, p.partition) for p in partitions}
        self._drop_pending(lost)
        self._assigned.difference_update(lost)
        self._rebalanced("lost")
        log.warning("lost partitions %s", sorted(f"{t}[{p}]" for t, p in lost))

    def _rebalanced(self, kind: str) -> None:
        # Another worker may have advanced the chains of the partitions that moved.
        if self._checker is not None:
            self._checker.reset_chains()
        self.metrics.rebalances.labels(kind).inc()
        self.metrics.assigned.set(len(self._assigned))

    def _drop_pending(self, partitions: set[tuple[str, int]]) -> None:
        kept = [m for m in self._pending if (m.topic, m.partition) not in partitions]
        if len(kept) != len(self._pending):
            self._batch_changed = True
        self._pending = kept
