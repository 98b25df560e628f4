"""A producer's hash chains and their one writer: link, encode, hash, enqueue, advance, sign.

An :class:`AuditProducer <decision_audit.producer.audit_producer.AuditProducer>` writes four
chains, each with a :class:`ChainWriter`: its decisions (``<producer_id>`` on ``topic``), its
model-lifecycle events (``<producer_id>/model-events`` on ``model_events_topic``), its
outcomes (``<producer_id>/outcomes`` on ``outcomes_topic``) and its reviews
(``<producer_id>/reviews`` on ``reviews_topic``).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any

from decision_audit.contract.checkpoint import ALGORITHM, checkpoint_message
from decision_audit.contract.codec import SingleObjectCodec
from decision_audit.contract.hashing import chain_hash, genesis_hash
from decision_audit.contract.headers import EVENT_HASH_HEADER
from decision_audit.contract.models import utc_now
from decision_audit.contract.schemas import ShippedSchema
from decision_audit.producer.delivery import Delivery, DeliveryProblem, ProducerStats, Report
from decision_audit.producer.signing import Signer
from decision_audit.producer.spool import SpoolFull, SpoolRecord

_new_tuple = tuple.__new__


@dataclass(slots=True)
class ChainState:
    """One chain: its identity, the last sequence number written and the head hash.

    A chain is identified by ``(producer_id, producer_epoch)``. A fresh producer takes a new
    epoch (microseconds since the Unix epoch), so a restarted process never re-uses sequence
    numbers of an earlier chain and two processes sharing a ``producer_id`` still write
    separate chains.
    """

    producer_id: str
    epoch: int
    seq: int = 0
    head: bytes = field(default=b"")

    def __post_init__(self) -> None:
        if not self.head:
            self.head = genesis_hash(self.producer_id, self.epoch)

    @classmethod
    def new(cls, producer_id: str) -> ChainState:
        return cls(producer_id, time.time_ns() // 1000)


class ChainWriter:
    """Writes one chain to one topic, keyed by the chain's id, and signs its checkpoints.

    Thread-safe: :meth:`write` links, encodes, size-checks, hashes and enqueues an event under
    the chain's lock, and advances the chain only once the client (or the spool) holds it, so
    a dropped event leaves no gap. Outcomes are counted in ``stats`` (``logged``, ``dropped``,
    ``checkpoints``) and problems passed to ``report``, never raised, except a bad event
    (``ValueError``, before anything is sent) and :class:`SpoolFull` under the spool's
    ``raise`` policy.

    With a ``signer``, checkpoints of the head are signed either when due — ``checkpoint_due``
    is set every ``checkpoint_every`` events and the owner calls :meth:`checkpoint` from its
    background thread — or, without ``checkpoint_due``, right behind every event, under the
    same lock (the model-event chain: rare events, each one matters).
    """

    __slots__ = (
        "_background",
        "_checkpoint_schema",
        "_codec",
        "_delivery",
        "_due",
        "_every",
        "_key",
        "_key_id",
        "_lock",
        "_max_bytes",
        "_report",
        "_schema",
        "_signer",
        "_stats",
        "_topic",
        "_what",
        "chain",
        "checkpointed_seq",
        "last_checkpoint",
    )

    def __init__(
        self,
        chain: ChainState,
        topic: str,
        schema: ShippedSchema,
        codec: SingleObjectCodec,
        delivery: Delivery,
        stats: ProducerStats,
        report: Report,
        *,
        max_message_bytes: int,
        signer: Signer | None = None,
        checkpoint_every: int = 1,
        checkpoint_due: threading.Event | None = None,
        background: threading.Thread | None = None,
        what: str = "event",
    ) -> None:
        """``background``: the thread that must never block on a full spool (the producer's
        background thread, which may run ``on_error`` callbacks that log); ``what`` names an
        event in error messages."""
        self.chain = chain
        self._topic = topic
        self._key = chain.producer_id.encode()
        self._schema = schema
        self._checkpoint_schema = codec.registry.latest("checkpoint")
        self._codec = codec
        self._delivery = delivery
        self._stats = stats
        self._report = report
        self._max_bytes = max_message_bytes
        self._signer = signer
        self._key_id = None if signer is None else signer.key_id
        self._every = checkpoint_every
        self._due = checkpoint_due
        self._background = background
        self._what = what
        self._lock = threading.Lock()
        self.checkpointed_seq = 0
        self.last_checkpoint = time.monotonic()

    def write(self, record: dict[str, Any]) -> None:
        """Chain, encode and enqueue one event (``record`` without its integrity fields)."""
        with self._lock:
            chain = self.chain
            seq = chain.seq + 1
            prev_hash = chain.head
            record["producer_id"] = chain.producer_id
            record["producer_epoch"] = chain.epoch
            record["key_id"] = self._key_id
            record["seq"] = seq
            record["prev_hash"] = prev_hash
            try:
                body = self._codec.encode_body(self._schema, record)
            except (ValueError, TypeError, UnicodeError) as exc:
                raise ValueError(f"{self._what} cannot be encoded as Avro: {exc}") from None
            value = self._codec.frame(self._schema, body)
            if len(value) > self._max_bytes:
                raise ValueError(
                    f"{self._what} is {len(value)} bytes, over max_message_bytes="
                    f"{self._max_bytes}; shrink the inputs, explanation or metadata, or raise "
                    "the limit (DECISION_AUDIT_MAX_MESSAGE_BYTES) on producer, broker and worker"
                )
            event_hash = chain_hash(prev_hash, body)
            # tuple.__new__: the named tuple's generated __new__ costs more, once per event.
            message = _new_tuple(
                SpoolRecord, (self._topic, self._key, value, ((EVENT_HASH_HEADER, event_hash),))
            )
            # Only the spool's full policy tells the background thread from serving code.
            background = (
                self._background is not None and threading.current_thread() is self._background
            )
            try:
                problem = self._delivery.send(message, seq, background=background)
            except SpoolFull as exc:
                self._drop(str(exc), seq)
                raise
            if problem is not None:
                self._drop(problem, seq)
                return
            # Advance only once the client holds the event: a drop leaves no gap in the chain.
            chain.seq = seq
            chain.head = event_hash
            self._stats.logged += 1
            if self._signer is not None:
                if self._due is None:
                    self.checkpointed_seq = seq
                    self.last_checkpoint = time.monotonic()
                    self._send_checkpoint(seq, event_hash)
                elif seq - self.checkpointed_seq >= self._every:
                    self._due.set()

    def checkpoint(self, *, wait: bool = True) -> bool:
        """Sign and send a checkpoint of the head if anything is new since the last one.

        Returns True if one was sent. ``wait=False`` gives up when the chain's lock is taken
        (the background thread must not wait for it: a ``write`` blocked on a full spool
        holds it until the background thread makes room).
        """
        if self._signer is None or not self._lock.acquire(blocking=wait):
            return False
        try:
            seq, head = self.chain.seq, self.chain.head
            if seq <= self.checkpointed_seq:
                return False
            self.checkpointed_seq = seq
            self.last_checkpoint = time.monotonic()
        finally:
            self._lock.release()
        # Produced after event `seq` was, so it lands after it in the partition.
        return self._send_checkpoint(seq, head)

    def _send_checkpoint(self, seq: int, head: bytes) -> bool:
        signer = self._signer
        assert signer is not None
        ch = self.chain
        value = self._codec.encode(
            self._checkpoint_schema,
            {
                "producer_id": ch.producer_id,
                "producer_epoch": ch.epoch,
                "seq": seq,
                "chain_head": head,
                "key_id": signer.key_id,
                "algorithm": ALGORITHM,
                "signature": signer.sign(checkpoint_message(ch.producer_id, ch.epoch, seq, head)),
                "signed_at": utc_now(),
            },
        )
        message = _new_tuple(SpoolRecord, (self._topic, self._key, value, ()))
        problem = self._delivery.send(message, None, background=True)
        if problem is not None:
            self._report(DeliveryProblem("dropped", f"checkpoint: {problem}", ch.producer_id, seq))
            return False
        self._stats.checkpoints += 1
        return True

    def _drop(self, problem: str, seq: int) -> None:
        self._stats.dropped += 1
        self._report(DeliveryProblem("dropped", problem, self.chain.producer_id, seq))
