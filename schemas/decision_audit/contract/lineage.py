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
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import Enum
from typing import Annotated, Any, Literal
from uuid import UUID

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    JsonValue,
    StringConstraints,
    field_validator,
    model_validator,
)

from decision_audit.contract.fields import MODEL_EVENT
from decision_audit.contract.models import JsonObject, dumps_json
from decision_audit.contract.rules import MAX_DETAIL_TEXT, PREDICATE_RE, SHA256_RE

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
    "train",
    "evaluate",
    "data_snapshot",
    "retrain",
    "attest",
)
"""Every lifecycle action; an event with another is refused (by the producer and the worker)."""
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
    "train",
    "evaluate",
    "data_snapshot",
    "retrain",
    "attest",
]
REFERENCE_TYPES = ("model_version", "run", "dataset", "deployment", "commit", "environment")
ReferenceType = Literal["model_version", "run", "dataset", "deployment", "commit", "environment"]


class DetailKind(Enum):
    """What a lifecycle detail must be."""

    REFERENCE = "a reference of its type, as the subject or among related"
    TEXT = "non-empty text"
    OBJECT = "a JSON object"
    NUMBERS = "a JSON object of numbers"
    LIST = "a JSON array"
    NUMBER = "a number"
    SHA256 = "the lowercase hex SHA-256 of the artifact (64 characters)"
    SLUG = "a lowercase slug (letters, digits, '-', '_', '.'; up to 64)"
    ONE_OF = "one of its declared values"


@dataclass(frozen=True, slots=True)
class Detail:
    """One detail of a lifecycle action: a metadata key, or (``REFERENCE``) a reference."""

    name: str
    kind: DetailKind
    meaning: str
    required: bool = True
    values: tuple[str, ...] = ()
    """``ONE_OF``: the values it may take"""
    ref_type: ReferenceType | None = None
    """``REFERENCE``: the reference type (the detail's name by default)"""

    @property
    def what(self) -> str:
        """What it must be, for an error message."""
        if self.kind is DetailKind.ONE_OF:
            return f"one of {', '.join(self.values)}"
        if self.kind is DetailKind.REFERENCE:
            return f"a {self.ref_type or self.name} reference (subject or related)"
        return str(self.kind.value)


def _req(name: str, kind: DetailKind, meaning: str, **more: Any) -> Detail:
    return Detail(name, kind, meaning, True, **more)


def _opt(name: str, kind: DetailKind, meaning: str, **more: Any) -> Detail:
    return Detail(name, kind, meaning, False, **more)


_R, _T, _N = DetailKind.REFERENCE, DetailKind.TEXT, DetailKind.NUMBERS
_ARTIFACT = (
    _opt("artifact_uri", _T, "where the artifact is stored (a path or URL)"),
    _opt("artifact_sha256", DetailKind.SHA256, "the SHA-256 of the artifact"),
)

ATTESTATION_RESULTS = ("pass", "fail")
"""An ``attest`` event's ``result``."""

PREDICATES = ("tests", "fairness", "bias-report", "data-validation", "performance", "drift-check")
"""Attestation predicates the docs name; any slug (:data:`rules.PREDICATE_PATTERN`) is valid."""

ACTION_DETAILS: dict[str, tuple[Detail, ...]] = {
    "register": _ARTIFACT,
    "promote": (_opt("stage", _T, "the stage promoted to (production, staging…)"),),
    "deploy": (),
    "rollback": (_opt("reason", _T, "why the deployment was rolled back"),),
    "approve": (),
    "reject": (_opt("reason", _T, "why the model version was rejected"),),
    "retire": (),
    "grant_access": (),
    "revoke_access": (),
    "train": (
        _req("run", _R, "the training run"),
        _req("parameters", DetailKind.OBJECT, "the training parameters (hyperparameters)"),
        _req("dataset", _R, "the dataset version trained on"),
        _req("commit", _R, "the code commit trained with"),
        _req("environment", _R, "the environment (lockfile or image digest) trained in"),
        _opt("model_version", _R, "the model version the run produced"),
        _opt("metrics", _N, "training metrics"),
        *_ARTIFACT,
    ),
    "evaluate": (
        _req("metrics", _N, "the metrics measured"),
        _req("dataset", _R, "the test dataset evaluated on"),
        _req("thresholds", _N, "the thresholds the metrics are judged against"),
        _opt("model_version", _R, "the model version evaluated"),
        _opt("run", _R, "the run evaluated"),
    ),
    "data_snapshot": (
        _req("dataset", _R, "the dataset version snapshotted"),
        _req("source", _T, "where the data came from"),
        _req("transformations", DetailKind.LIST, "the transformations applied (may be empty)"),
        _opt("rows", DetailKind.NUMBER, "how many rows the snapshot holds"),
        *_ARTIFACT,
    ),
    "retrain": (
        _req("reason", _T, "why the model is retrained"),
        _opt("trigger", _T, "what triggered it (e.g. the id of the drift alert)"),
        _opt("model_version", _R, "the model version being replaced"),
        _opt("dataset", _R, "the new dataset version"),
    ),
    "attest": (
        _req("predicate", DetailKind.SLUG, f"what is claimed ({', '.join(PREDICATES)}, …)"),
        _req("result", DetailKind.ONE_OF, "the claim's result", values=ATTESTATION_RESULTS),
        _req("artifact_sha256", DetailKind.SHA256, "the SHA-256 of the evidence artifact"),
        _opt("artifact_uri", _T, "where the evidence artifact is stored"),
    ),
}
"""Each action's details, declared once: the producer refuses and the worker quarantines an
event whose required details are missing or whose details are not what they must be. Other
metadata keys are free."""


def _unknown_action(action: object) -> str:
    return f"action {str(action)[:64]!r} is not one of {', '.join(ACTIONS)}"


def _detail_problem(d: Detail, value: Any) -> str | None:
    k = d.kind
    if k in (DetailKind.TEXT, DetailKind.SLUG, DetailKind.SHA256, DetailKind.ONE_OF):
        if not isinstance(value, str) or not value:
            return "is not text" if not isinstance(value, str) else "is empty"
        if len(value) > MAX_DETAIL_TEXT:
            return f"is longer than {MAX_DETAIL_TEXT} characters"
        if k is DetailKind.SLUG and not PREDICATE_RE.match(value):
            return f"{value[:64]!r} is not a lowercase slug"
        if k is DetailKind.SHA256 and not SHA256_RE.match(value):
            return f"{value[:72]!r} is not 64 lowercase hex characters"
        if k is DetailKind.ONE_OF and value not in d.values:
            return f"{value[:64]!r} is not one of {', '.join(d.values)}"
        return None
    if k is DetailKind.OBJECT:
        return None if isinstance(value, dict) else "is not a JSON object"
    if k is DetailKind.LIST:
        return None if isinstance(value, list) else "is not a JSON array"
    if k is DetailKind.NUMBER:
        return None if _is_number(value) else "is not a number"
    if not isinstance(value, dict):  # NUMBERS
        return "is not a JSON object"
    bad = next((str(n) for n, v in value.items() if not _is_number(v)), None)
    return None if bad is None else f"has {bad[:64]!r}, which is not a number"


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def action_problem(
    action: str, subject: Reference, related: Iterable[Reference], metadata: Mapping[str, Any]
) -> str | None:
    """Why an event's details break its action's declaration (:data:`ACTION_DETAILS`), naming
    the detail; None when they are fine."""
    details = ACTION_DETAILS.get(action)
    if details is None:
        return _unknown_action(action)
    refs = {subject.type, *(r.type for r in related)}
    for d in details:
        if d.kind is DetailKind.REFERENCE:
            if d.required and (d.ref_type or d.name) not in refs:
                return f"{action} needs detail {d.name!r}: {d.what}"
            continue
        if d.name not in metadata:
            if d.required:
                return f"{action} needs detail {d.name!r} in metadata: {d.what} ({d.meaning})"
            continue
        problem = _detail_problem(d, metadata[d.name])
        if problem is not None:
            return f"{action} detail {d.name!r} {problem}"
    return None


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

    _known_action = field_validator("action", mode="before")(lambda v: _known(v))

    @model_validator(mode="after")
    def _details(self) -> ModelEventInput:
        problem = action_problem(self.action, self.subject, self.related, self.metadata)
        if problem is not None:
            raise ValueError(problem)
        return self

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

    _known_action = field_validator("action", mode="before")(lambda v: _known(v))

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
    return action_problem(rec.action, rec.subject, rec.related, meta)


def _known(action: Any) -> Any:
    """The action, if it is one of :data:`ACTIONS` (else the error names them all)."""
    if action not in ACTIONS:
        raise ValueError(_unknown_action(action))
    return action
