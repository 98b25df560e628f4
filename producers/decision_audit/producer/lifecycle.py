"""Model-lifecycle events: their own topic, their own hash chain, a checkpoint per event.

:meth:`producers.AuditProducer.log_model_event` delegates here. Lifecycle events get the
same integrity treatment as decisions — Avro single-object encoding, SHA-256 chain with the
``da-event-hash`` header, signed checkpoints — on a separate chain whose id is
``<producer_id>/model-events`` (why: :func:`decision_audit.contract.lineage.model_event_chain_id`).
Lifecycle events are rare and each one matters (a promotion, an approval), so with a signing
key every event is followed at once by a signed checkpoint of the chain head.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any

from decision_audit.contract.checkpoint import ALGORITHM, checkpoint_message
from decision_audit.contract.codec import SingleObjectCodec
from decision_audit.contract.hashing import chain_hash
from decision_audit.contract.ids import uuid7
from decision_audit.contract.lineage import (
    ModelEventInput,
    Reference,
    ReferenceLike,
    model_event_chain_id,
)
from decision_audit.contract.models import JsonObject, utc_now
from decision_audit.producer.chain import ChainState
from decision_audit.producer.signing import Signer

Enqueue = Callable[[bytes, bytes | None, str, bytes], str | None]
"""``(value, event_hash or None, topic, key) -> problem or None`` (the producer's enqueue)"""


class ModelEventLog:
    """Writes one producer's model-event chain to ``topic``."""

    def __init__(
        self,
        producer_id: str,
        topic: str,
        codec: SingleObjectCodec,
        enqueue: Enqueue,
        signer: Signer | None,
        max_message_bytes: int,
    ) -> None:
        self.chain = ChainState.new(model_event_chain_id(producer_id))
        self.topic = topic
        self._key = self.chain.producer_id.encode()
        self._codec = codec
        self._schema = codec.registry.latest("model_event")
        self._checkpoint_schema = codec.registry.latest("checkpoint")
        self._enqueue = enqueue
        self._signer = signer
        self._max_bytes = max_message_bytes
        self._lock = threading.Lock()

    def log(
        self,
        action: str,
        subject: ReferenceLike,
        *,
        actor: str,
        related: Iterable[ReferenceLike] = (),
        metadata: JsonObject | None = None,
        occurred_at: datetime | None = None,
    ) -> tuple[str, str | None]:
        """Validate, chain and enqueue one event: ``(event_id, problem or None)``.

        Raises ``ValueError`` (naming the field) on bad arguments, before anything is sent.
        """
        event_id = uuid7()
        event = ModelEventInput.model_validate(
            {
                "event_id": event_id,
                "occurred_at": occurred_at or utc_now(),
                "action": action,
                "actor": actor,
                "subject": _plain(subject),
                "related": [_plain(r) for r in related],
                "metadata": dict(metadata or {}),
            }
        )
        record = event.to_avro()
        with self._lock:
            seq, prev_hash = self.chain.next_link()
            record.update(
                key_id=None if self._signer is None else self._signer.key_id,
                producer_id=self.chain.producer_id,
                producer_epoch=self.chain.epoch,
                seq=seq,
                prev_hash=prev_hash,
            )
            body = self._codec.encode_body(self._schema, record)
            value = self._codec.frame(self._schema, body)
            if len(value) > self._max_bytes:
                raise ValueError(
                    f"model event is {len(value)} bytes, over max_message_bytes={self._max_bytes}"
                )
            event_hash = chain_hash(prev_hash, body)
            problem = self._enqueue(value, event_hash, self.topic, self._key)
            if problem is not None:
                return str(event_id), problem
            self.chain.advance(seq, event_hash)
            if self._signer is not None:
                problem = self._checkpoint(seq, event_hash)
        return str(event_id), problem

    def _checkpoint(self, seq: int, head: bytes) -> str | None:
        assert self._signer is not None
        ch = self.chain
        record: dict[str, Any] = {
            "producer_id": ch.producer_id,
            "producer_epoch": ch.epoch,
            "seq": seq,
            "chain_head": head,
            "key_id": self._signer.key_id,
            "algorithm": ALGORITHM,
            "signature": self._signer.sign(checkpoint_message(ch.producer_id, ch.epoch, seq, head)),
            "signed_at": utc_now(),
        }
        value = self._codec.encode(self._checkpoint_schema, record)
        problem = self._enqueue(value, None, self.topic, self._key)
        return None if problem is None else f"checkpoint: {problem}"


def _plain(ref: ReferenceLike) -> Reference | dict[str, object]:
    """Leave a Reference as it is; copy a mapping so pydantic validates (and names) it."""
    return ref if isinstance(ref, Reference) else dict(ref)
