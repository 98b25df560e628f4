"""The producer serving code embeds: validate, encode, chain, enqueue. Never stalls serving."""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime
from types import TracebackType
from typing import Any

from decision_audit.contract.codec import SingleObjectCodec, default_codec
from decision_audit.contract.headers import EVENT_HASH_HEADER
from decision_audit.contract.ids import uuid7_str
from decision_audit.contract.lineage import ReferenceLike, model_event_chain_id
from decision_audit.contract.models import JsonObject, Prediction, decision_record
from decision_audit.contract.registry_codec import (
    ConfluentFraming,
    RegistryClient,
    registry_client,
    subject_name,
)
from decision_audit.contract.schemas import ShippedSchema
from decision_audit.producer.chain import ChainState, ChainWriter
from decision_audit.producer.delivery import Delivery, DeliveryProblem, ProducerStats, Report
from decision_audit.producer.direct_delivery import DirectDelivery
from decision_audit.producer.lifecycle import model_event_record
from decision_audit.producer.redaction import RedactionPolicy, Redactor
from decision_audit.producer.registry import RegistryIds, Wanted
from decision_audit.producer.settings import ProducerSettings
from decision_audit.producer.signing import Signer
from decision_audit.producer.spool import SpoolFull
from decision_audit.producer.spooled_delivery import SpooledDelivery

log = logging.getLogger("decision_audit.producer")

__all__ = ["EVENT_HASH_HEADER", "AuditProducer", "DeliveryProblem", "ProducerStats", "SpoolFull"]


def _kafka_conf(extra: Mapping[str, Any]) -> dict[str, Any]:
    # Accept librdkafka names either dotted ("linger.ms") or as Python keywords (linger_ms).
    return {k.replace("_", "."): v for k, v in extra.items()}


def make_delivery(
    settings: ProducerSettings, conf: dict[str, Any], stats: ProducerStats, report: Report
) -> Delivery:
    """The delivery mode ``settings`` ask for: spooled with ``spool_dir``, else direct."""
    mode = DirectDelivery if settings.spool_dir is None else SpooledDelivery
    return mode(settings, conf, stats, report)


class AuditProducer:
    """Records model decisions to Kafka as Avro events on a per-producer hash chain.

    Thread-safe. ``log_decision`` validates its arguments (raising ``ValueError`` that names
    the bad field, before anything is sent) and returns the event id; delivery problems are
    counted in :attr:`stats` and reported to ``on_error`` and the log, never raised.

    With ``signing_key`` the producer signs a checkpoint of its chain head every
    ``checkpoint_every`` events, every ``checkpoint_interval`` seconds and on close; signing
    runs on a background thread, so ``log_decision`` pays for one SHA-256 step only. With a
    ``redaction`` policy, inputs are redacted before they are encoded.

    With ``spool_dir``, events the broker cannot take now (local queue full, broker down,
    delivery failed) go to a bounded on-disk spool and are replayed in chain order by the
    background thread, also by a later producer started on the same directory; see
    :mod:`.spooled_delivery`. ``spool_full_policy="raise"`` makes ``log_decision`` raise
    :class:`~decision_audit.producer.spool.SpoolFull` when the spool is full.

    With ``schema_registry`` (a URL, or a ``confluent_kafka.schema_registry``
    ``SchemaRegistryClient`` for custom authentication) messages are framed the Confluent
    way, ``00`` + schema id + the same Avro body; the ids are resolved at construction, and a
    registry that does not answer within ``schema_registry_timeout`` is retried in the
    background while the producer logs in single-object framing; see :mod:`.registry`.
    """

    def __init__(
        self,
        bootstrap_servers: str | None = None,
        producer_id: str | None = None,
        topic: str | None = None,
        *,
        on_error: Callable[[DeliveryProblem], None] | None = None,
        enqueue_timeout: float | None = None,
        schema_version: int | None = None,
        signing_key: str | os.PathLike[str] | None = None,
        key_id: str | None = None,
        checkpoint_every: int | None = None,
        checkpoint_interval: float | None = None,
        redaction: RedactionPolicy | str | os.PathLike[str] | None = None,
        redaction_secret: bytes | str | None = None,
        codec: SingleObjectCodec | None = None,
        model_events_topic: str | None = None,
        spool_dir: str | os.PathLike[str] | None = None,
        spool_max_bytes: int | None = None,
        spool_full_policy: str | None = None,
        spool_block_timeout: float | None = None,
        spool_fsync: str | None = None,
        spool_fsync_interval: float | None = None,
        spool_after: float | None = None,
        schema_registry: str | RegistryClient | None = None,
        subject_name_strategy: str | None = None,
        auto_register_schemas: bool | None = None,
        schema_registry_timeout: float | None = None,
        **kafka_config: Any,
    ) -> None:
        given: dict[str, Any] = {
            "bootstrap_servers": bootstrap_servers,
            "producer_id": producer_id,
            "topic": topic,
            "model_events_topic": model_events_topic,
            "enqueue_timeout": enqueue_timeout,
            "schema_version": schema_version,
            "signing_key": signing_key,
            "key_id": key_id,
            "checkpoint_every": checkpoint_every,
            "checkpoint_interval": checkpoint_interval,
            "redaction_secret": redaction_secret.decode()
            if isinstance(redaction_secret, bytes)
            else redaction_secret,
            "spool_dir": spool_dir,
            "spool_max_bytes": spool_max_bytes,
            "spool_full_policy": spool_full_policy,
            "spool_block_timeout": spool_block_timeout,
            "spool_fsync": spool_fsync,
            "spool_fsync_interval": spool_fsync_interval,
            "spool_after": spool_after,
            "schema_registry_url": schema_registry if isinstance(schema_registry, str) else None,
            "subject_name_strategy": subject_name_strategy,
            "auto_register_schemas": auto_register_schemas,
            "schema_registry_timeout": schema_registry_timeout,
        }
        if redaction is not None and not isinstance(redaction, RedactionPolicy):
            given["redaction_policy"] = redaction
        self.settings = ProducerSettings(**{k: v for k, v in given.items() if v is not None})
        st = self.settings
        self._signer = Signer(st.signing_key, st.key_id) if st.signing_key else None
        policy = (
            redaction
            if isinstance(redaction, RedactionPolicy)
            else RedactionPolicy.load(st.redaction_policy)
            if st.redaction_policy
            else None
        )
        secret = st.redaction_secret.get_secret_value().encode() if st.redaction_secret else None
        self._redactor: Redactor | None = policy.compile(secret) if policy else None
        codec = codec or default_codec()
        registry = codec.registry
        schema = (
            registry.latest("decision_event")
            if st.schema_version is None
            else registry.get("decision_event", st.schema_version)
        )
        decision_codec = model_event_codec = codec
        self._registry: RegistryIds | None = None
        if schema_registry is not None or st.schema_registry_url is not None:
            decision_codec = ConfluentFraming(registry)
            model_event_codec = (
                decision_codec if st.model_events_topic == st.topic else ConfluentFraming(registry)
            )
            self._registry = self._resolve_ids(
                schema_registry,
                [
                    (decision_codec, st.topic, schema),
                    (model_event_codec, st.model_events_topic, registry.latest("model_event")),
                ],
            )
        self._checkpoint_due = threading.Event()
        self._on_error = on_error
        self.stats = ProducerStats()
        conf = st.kafka_config()
        conf.update(_kafka_conf(kafka_config))
        conf.setdefault("logger", logging.getLogger("decision_audit.kafka"))
        self._delivery = make_delivery(st, conf, self.stats, self._report)
        self._closed = threading.Event()
        self._stop = threading.Event()
        self._poller = threading.Thread(
            target=self._poll_loop, name="decision-audit-producer-poll", daemon=True
        )
        # Only the spool's full policy tells the background thread from serving code.
        background = self._poller if st.spool_dir is not None else None
        self._decisions = ChainWriter(
            ChainState.new(st.producer_id),
            st.topic,
            schema,
            decision_codec,
            self._delivery,
            self.stats,
            self._report,
            max_message_bytes=st.max_message_bytes,
            signer=self._signer,
            checkpoint_every=st.checkpoint_every,
            checkpoint_due=self._checkpoint_due,
            background=background,
        )
        self._model_events = ChainWriter(
            ChainState.new(model_event_chain_id(st.producer_id)),
            st.model_events_topic,
            registry.latest("model_event"),
            model_event_codec,
            self._delivery,
            self.stats,
            self._report,
            max_message_bytes=st.max_message_bytes,
            signer=self._signer,
            background=background,
            what="model event",
        )
        self._poller.start()

    # -- public API -------------------------------------------------------------------------

    @property
    def producer_id(self) -> str:
        return self.settings.producer_id

    @property
    def epoch(self) -> int:
        """The chain epoch of this producer instance."""
        return self._decisions.chain.epoch

    @property
    def last_seq(self) -> int:
        return self._decisions.chain.seq

    @property
    def framing(self) -> str:
        """How messages are framed now: ``confluent`` (``00`` + schema id) or
        ``single-object`` (``C3 01`` + fingerprint; also while the registry is unreachable)."""
        resolved = self._registry is not None and self._registry.resolved
        return "confluent" if resolved else "single-object"

    def log_decision(
        self,
        model_name: str,
        model_version: str,
        inputs: JsonObject,
        prediction: Prediction,
        *,
        score: float | None = None,
        request_id: str | None = None,
        deployment_id: str | None = None,
        run_id: str | None = None,
        dataset_version: str | None = None,
        code_commit: str | None = None,
        environment_hash: str | None = None,
        actor: str | None = None,
        latency_ms: float | None = None,
        explanation: Any = None,
        tags: Mapping[str, str] | None = None,
        occurred_at: datetime | None = None,
    ) -> str:
        """Record one decision; returns its event id (a UUIDv7 string)."""
        if self._closed.is_set():
            raise RuntimeError("AuditProducer is closed")
        if self._redactor is not None and isinstance(inputs, Mapping):
            inputs = self._redactor.apply(inputs)
        now_ms = time.time_ns() // 1_000_000
        event_id = uuid7_str(now_ms)
        record = decision_record(
            event_id=event_id,
            occurred_at=now_ms if occurred_at is None else occurred_at,
            model_name=model_name,
            model_version=model_version,
            inputs=inputs,
            prediction=prediction,
            score=score,
            request_id=request_id,
            deployment_id=deployment_id,
            run_id=run_id,
            dataset_version=dataset_version,
            code_commit=code_commit,
            environment_hash=environment_hash,
            actor=actor,
            latency_ms=latency_ms,
            explanation=explanation,
            tags=tags,
            redaction_policy=None if self._redactor is None else self._redactor.policy_ref,
        )
        self._decisions.write(record)
        return event_id

    def log_model_event(
        self,
        action: str,
        subject: ReferenceLike,
        *,
        actor: str,
        related: Iterable[ReferenceLike] = (),
        metadata: JsonObject | None = None,
        occurred_at: datetime | None = None,
    ) -> str:
        """Record one model-lifecycle event (register, promote, deploy, rollback, approve,
        reject, retire, grant_access, revoke_access); returns its event id.

        ``subject`` and ``related`` are :class:`decision_audit.contract.lineage.Reference` or plain
        ``{"type": ..., "id": ...}`` dicts. The event goes to ``model_events_topic`` on the
        chain ``<producer_id>/model-events`` (see :mod:`decision_audit.producer.lifecycle`).
        """
        if self._closed.is_set():
            raise RuntimeError("AuditProducer is closed")
        record = model_event_record(
            action,
            subject,
            actor=actor,
            related=related,
            metadata=metadata,
            occurred_at=occurred_at,
        )
        self._model_events.write(record)
        event_id: str = record["event_id"]
        return event_id

    def flush(self, timeout: float = 10.0) -> int:
        """Wait for outstanding events (spooled ones too); returns how many are undelivered."""
        return self._delivery.flush(timeout)

    def checkpoint(self) -> bool:
        """Sign and send a checkpoint of the chain head now (if anything is new since the last).

        Returns True if one was sent. Called by the background thread and by ``close()``.
        """
        return self._decisions.checkpoint(wait=True)

    def close(self, timeout: float = 10.0) -> int:
        """Sign a last checkpoint, flush and stop. Returns the number of events left
        undelivered (logged if any); with a spool they stay in it for the next producer
        started on the same ``spool_dir``."""
        if self._closed.is_set():
            return 0
        self._closed.set()
        deadline = time.monotonic() + timeout
        self.checkpoint()
        # The background thread keeps replaying the spool while we wait.
        self._delivery.flush(timeout)
        self._stop.set()
        self._checkpoint_due.set()  # wakes the background thread at once
        self._poller.join(timeout=5.0)
        if self._registry is not None:
            self._registry.close()
        remaining = self._delivery.close(max(0.0, deadline - time.monotonic()))
        if remaining or self.stats.failed or self.stats.dropped:
            log.warning(
                "producer %s closing with %d undelivered, %d failed, %d dropped events",
                self.producer_id,
                remaining,
                self.stats.failed,
                self.stats.dropped,
            )
        return remaining

    def __enter__(self) -> AuditProducer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- internals --------------------------------------------------------------------------

    def _resolve_ids(
        self,
        given: str | RegistryClient | None,
        topics: list[tuple[ConfluentFraming, str, ShippedSchema]],
    ) -> RegistryIds:
        """Resolve the schema ids of every record written (events, checkpoints) per topic."""
        st = self.settings
        source = given if given is not None else st.schema_registry_url
        assert source is not None
        checkpoint = topics[0][0].registry.latest("checkpoint")
        wanted = [
            Wanted(framing, subject_name(st.subject_name_strategy, topic, s), s)
            for framing, topic, schema in topics
            for s in (schema, checkpoint)
        ]
        ids = RegistryIds(
            registry_client(source, timeout=st.schema_registry_timeout),
            wanted,
            auto_register=st.auto_register_schemas,
            where=source if isinstance(source, str) else type(source).__name__,
            owned=isinstance(source, str),
        )
        ids.start(st.schema_registry_timeout)
        return ids

    def _report(self, problem: DeliveryProblem) -> None:
        log.error(
            "audit event %s: %s (producer %s)", problem.kind, problem.reason, problem.producer_id
        )
        if self._on_error is not None:
            try:
                self._on_error(problem)
            except Exception:  # a broken callback must not reach the serving path
                log.exception("on_error callback raised")

    def _poll_loop(self) -> None:
        interval = self.settings.checkpoint_interval
        decisions = self._decisions
        while not self._stop.is_set():
            try:
                if self._signer is None:
                    # Waits on the event, so that close() need not wait out a tick.
                    self._checkpoint_due.wait(0.05)
                    self._delivery.service(0)
                    continue
                # Wake at once when the hot path says a checkpoint is due; serve callbacks and
                # the spool either way.
                self._checkpoint_due.wait(0.05)
                self._delivery.service(0)
                if (
                    self._checkpoint_due.is_set()
                    or time.monotonic() - decisions.last_checkpoint >= interval
                ) and not self._closed.is_set():
                    self._checkpoint_due.clear()
                    decisions.checkpoint(wait=False)
            except Exception:  # never let the background thread die silently
                log.exception("background thread error (producer %s)", self.producer_id)
                time.sleep(0.05)
