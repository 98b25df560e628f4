"""The producer serving code embeds: validate, encode, chain, enqueue. Never stalls serving."""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from types import TracebackType
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Producer

from producers.chain import ChainState
from producers.redaction import RedactionPolicy, Redactor
from producers.settings import ProducerSettings
from producers.signing import Signer
from schemas.checkpoint import ALGORITHM, checkpoint_message
from schemas.codec import SingleObjectCodec, default_codec
from schemas.hashing import chain_hash
from schemas.ids import uuid7
from schemas.models import Decision, JsonObject, Prediction, utc_now

log = logging.getLogger("decision_audit.producer")

EVENT_HASH_HEADER = "da-event-hash"


@dataclass
class ProducerStats:
    """Counters since the producer started."""

    logged: int = 0
    """events handed to the Kafka client"""
    delivered: int = 0
    """events the broker acknowledged"""
    failed: int = 0
    """events the Kafka client gave up on (delivery error)"""
    dropped: int = 0
    """events never enqueued (local queue full past ``enqueue_timeout``, or client error)"""
    checkpoints: int = 0
    """signed checkpoints handed to the Kafka client"""


@dataclass(frozen=True)
class DeliveryProblem:
    """Reported to ``on_error`` when an event was dropped or could not be delivered."""

    kind: str
    """``dropped`` or ``failed``"""
    reason: str
    producer_id: str
    seq: int | None = None


def _kafka_conf(extra: Mapping[str, Any]) -> dict[str, Any]:
    # Accept librdkafka names either dotted ("linger.ms") or as Python keywords (linger_ms).
    return {k.replace("_", "."): v for k, v in extra.items()}


class AuditProducer:
    """Records model decisions to Kafka as Avro events on a per-producer hash chain.

    Thread-safe. ``log_decision`` validates its arguments (raising ``ValueError`` that names
    the bad field, before anything is sent) and returns the event id; delivery problems are
    counted in :attr:`stats` and reported to ``on_error`` and the log, never raised.

    With ``signing_key`` the producer signs a checkpoint of its chain head every
    ``checkpoint_every`` events, every ``checkpoint_interval`` seconds and on close; signing
    runs on a background thread, so ``log_decision`` pays for one SHA-256 step only. With a
    ``redaction`` policy, inputs are redacted before they are encoded.
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
        **kafka_config: Any,
    ) -> None:
        given: dict[str, Any] = {
            "bootstrap_servers": bootstrap_servers,
            "producer_id": producer_id,
            "topic": topic,
            "enqueue_timeout": enqueue_timeout,
            "schema_version": schema_version,
            "signing_key": signing_key,
            "key_id": key_id,
            "checkpoint_every": checkpoint_every,
            "checkpoint_interval": checkpoint_interval,
            "redaction_secret": redaction_secret.decode()
            if isinstance(redaction_secret, bytes)
            else redaction_secret,
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
        self._codec = codec or default_codec()
        registry = self._codec.registry
        self._schema = (
            registry.latest("decision_event")
            if self.settings.schema_version is None
            else registry.get("decision_event", self.settings.schema_version)
        )
        self._checkpoint_schema = registry.latest("checkpoint")
        self._checkpointed_seq = 0
        self._last_checkpoint = time.monotonic()
        self._checkpoint_due = threading.Event()
        self._on_error = on_error
        self.stats = ProducerStats()
        self._chain = ChainState.new(self.settings.producer_id)
        self._key = self.settings.producer_id.encode()
        self._every = self.settings.checkpoint_every
        self._lock = threading.Lock()
        conf = self.settings.kafka_config()
        conf.update(_kafka_conf(kafka_config))
        conf["on_delivery"] = self._on_delivery
        conf["error_cb"] = self._on_client_error
        conf.setdefault("logger", logging.getLogger("decision_audit.kafka"))
        self._producer = Producer(conf)
        self._closed = threading.Event()
        self._poller = threading.Thread(
            target=self._poll_loop, name="decision-audit-producer-poll", daemon=True
        )
        self._poller.start()

    # -- public API -------------------------------------------------------------------------

    @property
    def producer_id(self) -> str:
        return self.settings.producer_id

    @property
    def epoch(self) -> int:
        """The chain epoch of this producer instance."""
        return self._chain.epoch

    @property
    def last_seq(self) -> int:
        return self._chain.seq

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
        event_id = uuid7()
        decision = Decision(
            event_id=event_id,
            occurred_at=occurred_at or utc_now(),
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
            tags=dict(tags) if tags else {},
        )
        record = decision.to_avro(
            redaction_policy=None if self._redactor is None else self._redactor.policy_ref
        )
        self._send(record)
        return str(event_id)

    def flush(self, timeout: float = 10.0) -> int:
        """Wait for outstanding events; returns how many are still undelivered."""
        remaining: int = self._producer.flush(timeout)
        return remaining

    def checkpoint(self) -> bool:
        """Sign and send a checkpoint of the chain head now (if anything is new since the last).

        Returns True if one was sent. Called by the background thread and by ``close()``.
        """
        if self._signer is None:
            return False
        with self._lock:
            seq, head = self._chain.seq, self._chain.head
            if seq <= self._checkpointed_seq:
                return False
            self._checkpointed_seq = seq
            self._last_checkpoint = time.monotonic()
        ch = self._chain
        signature = self._signer.sign(checkpoint_message(ch.producer_id, ch.epoch, seq, head))
        value = self._codec.encode(
            self._checkpoint_schema,
            {
                "producer_id": ch.producer_id,
                "producer_epoch": ch.epoch,
                "seq": seq,
                "chain_head": head,
                "key_id": self._signer.key_id,
                "algorithm": ALGORITHM,
                "signature": signature,
                "signed_at": utc_now(),
            },
        )
        # Produced after event `seq` was, so it lands after it in the partition.
        problem = self._enqueue(value, None)
        if problem is not None:
            self._report(DeliveryProblem("dropped", f"checkpoint: {problem}", ch.producer_id, seq))
            return False
        self.stats.checkpoints += 1
        return True

    def close(self, timeout: float = 10.0) -> int:
        """Flush and stop. Returns the number of events left undelivered (logged if any)."""
        if self._closed.is_set():
            return 0
        self._closed.set()
        self._poller.join(timeout=1.0)
        self.checkpoint()
        remaining = self.flush(timeout)
        if not remaining:
            self._producer.close()
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

    def _send(self, record: dict[str, Any]) -> None:
        with self._lock:
            seq, prev_hash = self._chain.next_link()
            record["producer_id"] = self._chain.producer_id
            record["producer_epoch"] = self._chain.epoch
            record["key_id"] = None if self._signer is None else self._signer.key_id
            record["seq"] = seq
            record["prev_hash"] = prev_hash
            try:
                body = self._codec.encode_body(self._schema, record)
            except (ValueError, TypeError, UnicodeError) as exc:
                raise ValueError(f"event cannot be encoded as Avro: {exc}") from None
            value = self._codec.frame(self._schema, body)
            if len(value) > self.settings.max_message_bytes:
                raise ValueError(
                    f"event is {len(value)} bytes, over max_message_bytes="
                    f"{self.settings.max_message_bytes}; shrink inputs/explanation or raise the "
                    "limit (DECISION_AUDIT_MAX_MESSAGE_BYTES) on producer, broker and worker"
                )
            event_hash = chain_hash(prev_hash, body)
            problem = self._enqueue(value, event_hash)
            if problem is not None:
                self.stats.dropped += 1
                self._report(DeliveryProblem("dropped", problem, self._chain.producer_id, seq))
                return
            # Advance only once the client holds the event: a drop leaves no gap in the chain.
            self._chain.advance(seq, event_hash)
            self.stats.logged += 1
            if self._signer is not None and seq - self._checkpointed_seq >= self._every:
                self._checkpoint_due.set()

    def _enqueue(self, value: bytes, event_hash: bytes | None) -> str | None:
        deadline: float | None = None
        headers: list[tuple[str, str | bytes | None]] | None = (
            None if event_hash is None else [(EVENT_HASH_HEADER, event_hash)]
        )
        while True:
            try:
                self._producer.produce(self.settings.topic, value, self._key, headers=headers)
                return None
            except BufferError:
                now = time.monotonic()
                if deadline is None:
                    deadline = now + self.settings.enqueue_timeout
                elif now >= deadline:
                    return "local queue full (broker slow or unreachable)"
                self._producer.poll(0.0002)
            except KafkaException as exc:
                return f"kafka client refused the event: {exc}"

    def _on_delivery(self, err: KafkaError | None, _msg: Any) -> None:
        if err is None:
            self.stats.delivered += 1
            return
        self.stats.failed += 1
        self._report(DeliveryProblem("failed", str(err), self.producer_id))

    def _on_client_error(self, err: KafkaError) -> None:
        log.warning("kafka client error (producer %s): %s", self.producer_id, err)

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
        while not self._closed.is_set():
            if self._signer is None:
                self._producer.poll(0.05)
                continue
            # Wake at once when the hot path says a checkpoint is due; serve callbacks either way.
            self._checkpoint_due.wait(0.05)
            self._producer.poll(0)
            if (
                self._checkpoint_due.is_set()
                or time.monotonic() - self._last_checkpoint >= interval
            ):
                self._checkpoint_due.clear()
                try:
                    self.checkpoint()
                except Exception:  # never let the background thread die silently
                    log.exception("checkpoint failed (producer %s)", self.producer_id)
