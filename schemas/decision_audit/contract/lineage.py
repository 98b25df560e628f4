"""Model-lifecycle events and the typed references that tie decisions to their lineage.

A decision points at its deployment, model version, training run, dataset version, code
commit and environment by id. Lifecycle events (``register``, ``promote``, ``deploy``, …)
name a ``subject`` and ``related`` references of the same types, so the chain
prediction → deployment → model version → run → dataset can be walked with SQL.

Model events travel on their own topic, on their own hash chain: the chain id is the
producer's id plus :data:`MODEL_EVENT_CHAIN_SUFFIX` (see :func:`model_event_chain_id`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime
from typing import Annotated, Any, Literal
from uuid import UUID

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, JsonValue, StringConstraints

from decision_audit.contract.fields import MODEL_EVENT
from decision_audit.contract.models import JsonObject, dumps_json

ACTIONS = (
    "register",
    "promote",
    "deploy",
    "rollback",
    "approve",
    "reject",
    "retire",
    "grant_access",
    "revoke_access",
)
Action = Literal[
    "register",
    "promote",
    "deploy",
    "rollback",
    "approve",
    "reject",
    "retire",
    "grant_access",
    "revoke_access",
]
REFERENCE_TYPES = ("model_version", "run", "dataset", "deployment", "commit", "environment")
ReferenceType = Literal["model_version", "run", "dataset", "deployment", "commit", "environment"]

MODEL_EVENT_CHAIN_SUFFIX = MODEL_EVENT.chain_suffix
"""Appended to a producer's id to name its model-event chain (``/model-events``)."""

RefId = Annotated[str, StringConstraints(min_length=1, max_length=1024)]


def model_event_chain_id(producer_id: str) -> str:
    """The chain id of a producer's model events: ``<producer_id>/model-events``.

    Model events go to their own topic, and Kafka orders messages only within one partition
    of one topic, so one chain spanning both topics could not be verified by a reader of
    either. A separate chain per topic keeps every link in one partition; the suffix keeps
    its id distinct from the decision chain (whose checkpoints and heads are stored apart)
    while naming the serving producer it belongs to.
    """
    return MODEL_EVENT.chain_id(producer_id)


def model_version_id(model_name: str, model_version: str) -> str:
    """The reference id of a model version: ``name@version``."""
    return f"{model_name}@{model_version}"


class Reference(BaseModel):
    """A typed pointer to something in the lineage (a model version, a run, a dataset…)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: ReferenceType
    id: RefId

    @classmethod
    def model_version(cls, model_name: str, model_version: str) -> Reference:
        """``Reference(type="model_version", id="name@version")``."""
        return cls(type="model_version", id=model_version_id(model_name, model_version))

    def to_avro(self) -> dict[str, str]:
        return {"type": self.type, "id": self.id}

    def __str__(self) -> str:
        return f"{self.type}:{self.id}"


ReferenceLike = Reference | Mapping[str, Any]


def as_reference(value: ReferenceLike) -> Reference:
    """A :class:`Reference` from itself or a plain ``{"type": ..., "id": ...}`` mapping."""
    if isinstance(value, Reference):
        return value
    return Reference.model_validate(dict(value))


class ModelEventInput(BaseModel):
    """What a caller supplies for one lifecycle event, validated before anything is sent."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    event_id: UUID
    occurred_at: AwareDatetime
    action: Action
    actor: Annotated[str, StringConstraints(min_length=1, max_length=512)]
    subject: Reference
    related: tuple[Reference, ...] = ()
    metadata: JsonObject = Field(default_factory=dict)

    def to_avro(self) -> dict[str, Any]:
        """The Avro record without its integrity block."""
        return {
            "event_id": str(self.event_id),
            "occurred_at": self.occurred_at,
            "action": self.action,
            "actor": self.actor,
            "subject": self.subject.to_avro(),
            "related": [r.to_avro() for r in self.related],
            "metadata": dumps_json(self.metadata, "metadata"),
        }


class ModelEventRecord(BaseModel):
    """A decoded ``model_event`` record: the contract a worker checks before trusting it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    event_id: UUID
    occurred_at: datetime
    action: Action
    actor: Annotated[str, StringConstraints(min_length=1)]
    subject: Reference
    related: list[Reference]
    metadata: str
    key_id: str | None
    producer_id: Annotated[str, StringConstraints(pattern=r".+/model-events$")]
    producer_epoch: int = Field(ge=0)
    seq: int = Field(ge=1)
    prev_hash: bytes = Field(min_length=32, max_length=32)

    @property
    def metadata_value(self) -> dict[str, JsonValue]:
        value: dict[str, JsonValue] = json.loads(self.metadata)
        return value


def model_event_problem(record: Mapping[str, Any]) -> str | None:
    """Why a decoded record breaks the model-event contract, or None when it is fine."""
    from pydantic import ValidationError

    try:
        rec = ModelEventRecord.model_validate(dict(record))
    except ValidationError as exc:
        return "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())[
            :500
        ]
    try:
        meta = json.loads(rec.metadata)
    except ValueError as exc:
        return f"metadata is not JSON: {exc}"
    if not isinstance(meta, dict):
        return "metadata is not a JSON object"
    return None
