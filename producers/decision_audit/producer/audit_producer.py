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
from uuid import UUID

from decision_audit.contract.codec import SingleObjectCodec, default_codec
from decision_audit.contract.followups import outcome_chain_id, review_chain_id
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
from decision_audit.producer.followups import outcome_record, review_record
from decision_audit.producer.lifecycle import model_event_record
from decision_audit.producer.redaction import (
    EventBox,
    RedactionPolicy,
    Redactor,
    Sealer,
    TextRule,
    redact_text,
)
from decision_audit.producer.registry import RegistryIds, Wanted
from decision_audit.producer.settings import ProducerSettings
from decision_audit.producer.signing import Signer
from decision_audit.producer.spool import SpoolFull, SpoolRecord
from decision_audit.producer.spooled_delivery import SpooledDelivery

log = logging.getLogger("decision_audit.producer")

__all__ = ["EVENT_HASH_HEADER", "AuditProducer", "DeliveryProblem", "ProducerStats", "SpoolFull"]


def _kafka_conf(extra: Mapping[str, Any]) -> dict[str, Any]:
    # Accept librdkafka names either dotted ("linger.ms") or as Python keywords (linger_ms).
    return {k.replace("_", "."): v for k, v in extra.items()}


def _sealer(redactor: Redactor | None, settings: ProducerSettings) -> Sealer | None:
    """The key store sealer a policy with ``encrypt`` rules needs (None without them)."""
    if redactor is None or not redactor.encrypts:
        return None
    if settings.keystore_public_key is None:
        raise ValueError(
            f"redaction policy {redactor.policy_ref} has encrypt rule(s) "
            f"{', '.join(redactor.policy.encrypt_paths)}: pass keystore_public_key= "
            "(DECISION_AUDIT_KEYSTORE_PUBLIC_KEY), the key store's KEY_ID.pub from "
            "`decision-audit keystore keygen`"
        )
    try:
        from decision_audit.producer.sealing import KeystoreSealer
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise ImportError(
            "encrypt rules need the cryptography package: pip install 'decision-audit[signing]'"
        ) from exc
    return KeystoreSealer(settings.keystore_public_key)


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

    ``log_decision`` also records an inference that failed or was refused (``status``,
    ``error``); ``log_outcome`` and ``log_review`` record what follows a decision, each on its
    own topic and chain (:mod:`.followups`).

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
        outcomes_topic: str | None = None,
        reviews_topic: str | None = None,
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
        keystore_public_key: str | os.PathLike[str] | None = None,
        keys_topic: str | None = None,
        **kafka_config: Any,
    ) -> None:
        given: dict[str, Any] = {
            "bootstrap_servers": bootstrap_servers,
            "producer_id": producer_id,
            "topic": topic,
            "model_events_topic": model_events_topic,
            "outcomes_topic": outcomes_topic,
            "reviews_topic": reviews_topic,
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
            "keystore_public_key": keystore_public_key,
            "keys_topic": keys_topic,
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
        self._sealer = _sealer(self._redactor, st)
        self._default_text = TextRule()
        codec = codec or default_codec()
        registry = codec.registry
        schema = (
            registry.latest("decision_event")
            if st.schema_version is None
            else registry.get("decision_event", st.schema_version)
        )
        self._key_schema = registry.latest("subject_key") if self._sealer else None
        # Each chain's topic and the schema it writes there.
        written = {
            "decision_event": (st.topic, schema),
            "model_event": (st.model_events_topic, registry.latest("model_event")),
            "outcome": (st.outcomes_topic, registry.latest("outcome")),
            "review": (st.reviews_topic, registry.latest("review")),
        }
        codecs: dict[str, SingleObjectCodec] = dict.fromkeys(written, codec)
        key_codec = codec
        self._registry: RegistryIds | None = None
        if schema_registry is not None or st.schema_registry_url is not None:
            # One framing per topic (subjects are named by topic): every record kind is
            # framed 00 + id, not only decisions, so a Confluent consumer reads every topic.
            framings: dict[str, ConfluentFraming] = {}
            for kind, (topic, _) in written.items():
                codecs[kind] = framings.setdefault(topic, ConfluentFraming(registry))
            keys = None
            if self._key_schema is not None:  # sealed data keys, on their own topic
                key_codec = framings.setdefault(st.keys_topic, ConfluentFraming(registry))
                keys = (key_codec, st.keys_topic, self._key_schema)
            self._registry = self._resolve_ids(
                schema_registry,
                [(framings[topic], topic, s) for topic, s in written.values()],
                keys,
            )
        self._key_codec = key_codec
        self._carries_status = "status" in {f["name"] for f in schema.definition["fields"]}
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

        def writer(chain: str, kind: str, what: str, *, cadenced: bool) -> ChainWriter:
            """The writer of one chain, on its kind's topic with its schema and framing;
            ``cadenced`` chains are signed every N events or T seconds (by the background
            thread), the others at every event."""
            topic, kind_schema = written[kind]
            return ChainWriter(
                ChainState.new(chain),
                topic,
                kind_schema,
                codecs[kind],
                self._delivery,
                self.stats,
                self._report,
                max_message_bytes=st.max_message_bytes,
                signer=self._signer,
                checkpoint_every=st.checkpoint_every if cadenced else 1,
                checkpoint_due=self._checkpoint_due if cadenced else None,
                background=background,
                what=what,
            )

        pid = st.producer_id
        self._decisions = writer(pid, "decision_event", "event", cadenced=True)
        self._model_events = writer(
            model_event_chain_id(pid), "model_event", "model event", cadenced=False
        )
        self._outcomes = writer(outcome_chain_id(pid), "outcome", "outcome", cadenced=True)
        self._reviews = writer(review_chain_id(pid), "review", "review", cadenced=False)
        # The chains signed on a cadence (every N events or T seconds) by the background thread.
        self._cadenced = (self._decisions, self._outcomes)
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
        prediction: Prediction | None = None,
        *,
        status: str | None = None,
        error: BaseException | None = None,
        error_type: str | None = None,
        error_message: str | None = None,
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
        subject_id: str | None = None,
    ) -> str:
        """Record one decision; returns its event id (a UUIDv7 string).

        A decision the model made needs a ``prediction``. An inference that failed or was
        refused is recorded with ``status`` (``error``, ``timeout``, ``rejected``, or
        ``fallback`` when a fallback answered, its answer in ``prediction``) and what went
        wrong: ``error=exc`` (its class and message), or ``error_type``/``error_message``;
        the status is ``error`` when only an error is given. The message passes the
        redaction policy's ``error_message`` rule (by default kept, cut to 1024 characters).

        ``subject_id`` names the data subject whose input fields the policy's ``encrypt``
        rules encrypt (else the policy's ``subject`` input path does); ignored without them.
        """
        if self._closed.is_set():
            raise RuntimeError("AuditProducer is closed")
        if status is None and error is None and error_type is None and error_message is None:
            status = "ok"
        else:
            status, error_type, error_message = self._failure(
                status, error, error_type, error_message
            )
        now_ms = time.time_ns() // 1_000_000
        event_id = uuid7_str(now_ms)
        box = None
        if self._redactor is not None and isinstance(inputs, Mapping):
            if self._sealer is None:
                inputs = self._redactor.apply(inputs)
            else:
                inputs, box = self._redactor.seal(inputs, self._sealer, event_id, subject_id)
        record = decision_record(
            event_id=event_id,
            occurred_at=now_ms if occurred_at is None else occurred_at,
            model_name=model_name,
            model_version=model_version,
            inputs=inputs,
            prediction=prediction,
            status=status,
            error_type=error_type,
            error_message=error_message,
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
        if box is not None:
            self._send_key(box, now_ms if occurred_at is None else occurred_at)
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
        """Record one model-lifecycle event; returns its event id.

        ``action`` is one of :data:`decision_audit.contract.lineage.ACTIONS` (register,
        promote, deploy, rollback, approve, reject, retire, grant_access, revoke_access,
        train, evaluate, data_snapshot, retrain, attest); the details each action needs
        (metadata keys, reference types) are declared in
        :data:`decision_audit.contract.lineage.ACTION_DETAILS`. An unknown action, or a missing
        or ill-typed detail, raises ``ValueError`` naming it, before anything is sent.

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

    def log_outcome(
        self,
        decision: str | UUID,
        actual: Prediction,
        *,
        observed_at: datetime | None = None,
        source: str | None = None,
        actor: str | None = None,
    ) -> str:
        """Record what actually happened after a decision (a default, a chargeback, a label);
        returns the outcome's event id.

        ``decision`` is the decision's event id or its request id. ``actual`` is a label or any
        JSON value (a number for a numeric prediction), as the redaction policy's
        ``outcome_actual`` rule leaves it (kept by default); ``observed_at`` is when it was
        observed (default: now). The outcome goes to ``outcomes_topic`` on the chain
        ``<producer_id>/outcomes``; the worker stores it in ``audit.outcomes`` whether or not
        the decision is known (an unknown one is recorded as an ``unknown_decision`` incident).
        """
        if self._closed.is_set():
            raise RuntimeError("AuditProducer is closed")
        redactor = self._redactor
        record = outcome_record(
            decision,
            actual if redactor is None else redactor.outcome_actual(actual),
            observed_at=observed_at,
            source=source,
            actor=actor,
            redaction_policy=None if redactor is None else redactor.policy_ref,
        )
        self._outcomes.write(record)
        event_id: str = record["event_id"]
        return event_id

    def log_review(
        self,
        decision: str | UUID,
        reviewer: str,
        verdict: str,
        *,
        final_decision: Prediction | None = None,
        reason: str | None = None,
        occurred_at: datetime | None = None,
    ) -> str:
        """Record a person's review of a decision; returns the review's event id.

        ``verdict`` is ``confirm``, ``override`` (with the ``final_decision`` that stands
        instead) or ``escalate``; ``reason`` says why. The redaction policy's
        ``review_reason`` and ``final_decision`` rules apply to them at the source. The review
        goes to ``reviews_topic`` on the chain ``<producer_id>/reviews``, followed at once by a
        signed checkpoint when the producer signs.
        """
        if self._closed.is_set():
            raise RuntimeError("AuditProducer is closed")
        redactor = self._redactor
        if redactor is not None:
            if final_decision is not None:
                final_decision = redactor.final_decision(final_decision)
            if reason is not None:
                reason = redactor.review_reason(reason)
        record = review_record(
            decision,
            reviewer,
            verdict,
            final_decision=final_decision,
            reason=reason,
            occurred_at=occurred_at,
            redaction_policy=None if redactor is None else redactor.policy_ref,
        )
        self._reviews.write(record)
        event_id: str = record["event_id"]
        return event_id

    def flush(self, timeout: float = 10.0) -> int:
        """Wait for outstanding events (spooled ones too); returns how many are undelivered."""
        return self._delivery.flush(timeout)

    def checkpoint(self) -> bool:
        """Sign and send a checkpoint of the chain heads now (of the decisions and the
        outcomes, each if anything is new since its last one).

        Returns True if one was sent. Called by ``close()``; the background thread signs on
        the cadence.
        """
        sent = [w.checkpoint(wait=True) for w in self._cadenced]
        return any(sent)

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

    def _send_key(self, box: EventBox, occurred_at: datetime | int) -> None:
        """Send an event's sealed data key to the keys topic (before the event: a decision
        seen in the store usually has its key filed). A dropped key is reported; the event
        is still recorded, its encrypted fields unreadable."""
        assert self._key_schema is not None
        st = self.settings
        record = box.key_record(occurred_at, st.producer_id)
        value = self._key_codec.encode(self._key_schema, record)
        message = SpoolRecord(st.keys_topic, st.producer_id.encode(), value, ())
        problem = self._delivery.send(message, None)
        if problem is not None:
            self._report(
                DeliveryProblem(
                    "dropped", f"data key of event {box.event_id}: {problem}", st.producer_id
                )
            )

    def _resolve_ids(
        self,
        given: str | RegistryClient | None,
        topics: list[tuple[ConfluentFraming, str, ShippedSchema]],
        keys: tuple[ConfluentFraming, str, ShippedSchema] | None,
    ) -> RegistryIds:
        """Resolve the schema ids of every record written per topic: events and checkpoints,
        and the sealed keys on the keys topic (``keys``: with encrypt rules)."""
        st = self.settings
        source = given if given is not None else st.schema_registry_url
        assert source is not None
        checkpoint = topics[0][0].registry.latest("checkpoint")
        wanted: dict[tuple[int, str, bytes], Wanted] = {}
        for framing, topic, schema in topics:
            for s in (schema, checkpoint):
                subject = subject_name(st.subject_name_strategy, topic, s)
                # Chains sharing a topic share its checkpoint schema: resolved once.
                key = (id(framing), subject, s.fingerprint)
                wanted.setdefault(key, Wanted(framing, subject, s))
        if keys is not None:
            framing, topic, schema = keys
            subject = subject_name(st.subject_name_strategy, topic, schema)
            wanted.setdefault(
                (id(framing), subject, schema.fingerprint), Wanted(framing, subject, schema)
            )
        ids = RegistryIds(
            registry_client(source, timeout=st.schema_registry_timeout),
            list(wanted.values()),
            auto_register=st.auto_register_schemas,
            where=source if isinstance(source, str) else type(source).__name__,
            owned=isinstance(source, str),
        )
        ids.start(st.schema_registry_timeout)
        return ids

    def _failure(
        self,
        status: str | None,
        error: BaseException | None,
        error_type: str | None,
        error_message: str | None,
    ) -> tuple[str, str | None, str | None]:
        """The status and error fields of a failed inference, its message redacted."""
        if error is not None:
            if error_type is None:
                kind = type(error)
                error_type = (
                    kind.__qualname__
                    if kind.__module__ == "builtins"
                    else f"{kind.__module__}.{kind.__qualname__}"
                )
            if error_message is None:
                error_message = str(error) or None
        if status is None:
            status = "error" if (error_type or error_message) else "ok"
        if not self._carries_status and (status != "ok" or error_type or error_message):
            raise ValueError(
                "a failed or refused inference needs decision_event v4 or later: this producer "
                f"writes v{self.settings.schema_version} (schema_version)"
            )
        if isinstance(error_message, str):
            error_message = (
                self._redactor.error_message(error_message)
                if self._redactor is not None
                else redact_text(self._default_text, error_message)
            )
        return status, error_type, error_message

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
                due = self._checkpoint_due.is_set()
                if due:
                    self._checkpoint_due.clear()
                for chain in self._cadenced:
                    if (
                        due or time.monotonic() - chain.last_checkpoint >= interval
                    ) and not self._closed.is_set():
                        chain.checkpoint(wait=False)
            except Exception:  # never let the background thread die silently
                log.exception("background thread error (producer %s)", self.producer_id)
                time.sleep(0.05)
