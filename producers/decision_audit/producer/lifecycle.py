"""Model-lifecycle events: their own topic, their own hash chain, a checkpoint per event.

:meth:`decision_audit.AuditProducer.log_model_event` validates an event here and writes it
with its model-event :class:`~decision_audit.producer.chain.ChainWriter`. Lifecycle events get
the same integrity treatment as decisions — Avro single-object encoding, SHA-256 chain with the
``da-event-hash`` header, signed checkpoints — on a separate chain whose id is
``<producer_id>/model-events`` (why: :func:`decision_audit.contract.lineage.model_event_chain_id`).
Lifecycle events are rare and each one matters (a promotion, an approval), so with a signing
key every event is followed at once by a signed checkpoint of the chain head.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from decision_audit.contract.ids import uuid7
from decision_audit.contract.lineage import ModelEventInput, Reference, ReferenceLike
from decision_audit.contract.models import JsonObject, utc_now


def model_event_record(
    action: str,
    subject: ReferenceLike,
    *,
    actor: str,
    related: Iterable[ReferenceLike] = (),
    metadata: JsonObject | None = None,
    occurred_at: datetime | None = None,
) -> dict[str, Any]:
    """The Avro record of one lifecycle event, without its integrity fields.

    Raises ``ValueError`` (naming the field) on bad arguments, before anything is sent.
    """
    event = ModelEventInput.model_validate(
        {
            "event_id": uuid7(),
            "occurred_at": occurred_at or utc_now(),
            "action": action,
            "actor": actor,
            "subject": _plain(subject),
            "related": [_plain(r) for r in related],
            "metadata": dict(metadata or {}),
        }
    )
    return event.to_avro()


def _plain(ref: ReferenceLike) -> Reference | dict[str, object]:
    """Leave a Reference as it is; copy a mapping so pydantic validates (and names) it."""
    return ref if isinstance(ref, Reference) else dict(ref)
