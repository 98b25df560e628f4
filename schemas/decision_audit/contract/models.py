"""Pydantic models mirroring the Avro records, and the conversions between them."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Annotated, Any, Literal, Self
from uuid import UUID

import orjson
from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    JsonValue,
    StringConstraints,
    model_validator,
)

# The contract's length limits, declared once with the fields (the worker checks them too);
# the producer's redaction policy truncates an error_message to its max_chars before that.
from decision_audit.contract.fields import MAX_ERROR_MESSAGE as MAX_ERROR_MESSAGE
from decision_audit.contract.fields import MAX_NAME

Name = Annotated[str, StringConstraints(min_length=1, max_length=MAX_NAME)]
OptionalId = Annotated[str, StringConstraints(max_length=4096)] | None
JsonObject = dict[str, JsonValue]
Prediction = str | bool | int | float | list[JsonValue] | dict[str, JsonValue]
Status = Literal["ok", "error", "timeout", "rejected", "fallback"]
"""decision_audit.contract.fields.STATUSES, as a type"""


def dumps_json(value: Any, field: str) -> str:
    """Compact JSON text; NaN and Infinity are refused (they are not JSON).

    The same text the serving fast path writes for every value it accepts.
    """
    if _plain_json(value):
        try:
            return _dumps(value)
        except TypeError:
            pass  # past orjson's range (ints over 64 bits, deep nesting): the stdlib writes it
    try:
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    except ValueError as exc:
        raise ValueError(f"{field}: {exc} (NaN and Infinity cannot be stored as JSON)") from None


class Decision(BaseModel):
    """What serving code supplies for one decision, validated before anything is sent."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    event_id: UUID
    occurred_at: AwareDatetime
    model_name: Name
    model_version: Name
    inputs: JsonObject
    prediction: Prediction | None = None
    """required when ``status`` is ``ok``; else what answered instead, if anything"""
    status: Status = "ok"
    error_type: Name | None = None
    error_message: Annotated[str, StringConstraints(max_length=MAX_ERROR_MESSAGE)] | None = None
    score: float | None = None
    deployment_id: OptionalId = None
    request_id: OptionalId = None
    explanation: JsonValue | None = None
    run_id: OptionalId = None
    dataset_version: OptionalId = None
    code_commit: OptionalId = None
    environment_hash: OptionalId = None
    actor: OptionalId = None
    latency_ms: Annotated[float, Field(ge=0)] | None = None
    tags: dict[str, str] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _status_rules(self) -> Self:
        if self.status == "ok":
            if self.prediction is None:
                raise ValueError(
                    "prediction is required when status is 'ok' (a failed or refused inference "
                    "is logged with status='error', 'timeout', 'rejected' or 'fallback')"
                )
            if self.error_type is not None or self.error_message is not None:
                raise ValueError(
                    "error_type and error_message are for a failed inference: give a status "
                    "other than 'ok' (e.g. status='error')"
                )
        return self

    def to_avro(self, *, redaction_policy: str | None = None) -> dict[str, Any]:
        """The Avro record without its integrity block (producer_id, epoch, seq, prev_hash)."""
        pred = self.prediction
        return {
            "event_id": str(self.event_id),
            "occurred_at": self.occurred_at,
            "model_name": self.model_name,
            "model_version": self.model_version,
            "deployment_id": self.deployment_id,
            "request_id": self.request_id,
            "inputs": dumps_json(self.inputs, "inputs"),
            "prediction": None if pred is None else encode_value(pred, "prediction"),
            "prediction_is_json": not (pred is None or isinstance(pred, str)),
            "status": self.status,
            "error_type": self.error_type,
            "error_message": self.error_message,
            "score": self.score,
            "explanation": (
                None if self.explanation is None else dumps_json(self.explanation, "explanation")
            ),
            "run_id": self.run_id,
            "dataset_version": self.dataset_version,
            "code_commit": self.code_commit,
            "environment_hash": self.environment_hash,
            "actor": self.actor,
            "latency_ms": self.latency_ms,
            "tags": self.tags,
            "redaction_policy": redaction_policy,
        }


def encode_value(value: Prediction, field: str) -> str:
    """A label as given, or the JSON text of any other value (its ``…_is_json`` flag set)."""
    return value if isinstance(value, str) else dumps_json(value, field)


def _dumps(value: Any) -> str:
    # orjson: a tenth of the stdlib encoder's time on the serving path. It writes NaN as null
    # and accepts more types than JSON has, so the fast path runs only on what _plain_json
    # admitted; it raises TypeError on what it cannot write (ints past 64 bits, deep nesting),
    # which sends the call down the model's path.
    return orjson.dumps(value).decode()


_SCALARS = frozenset((str, int, bool, type(None)))
_INF = math.inf


def _plain_json(value: object) -> bool:
    """Only exact JSON types with string keys and finite numbers (what JSON can hold)."""
    t = type(value)
    if t is float:
        return -_INF < value < _INF  # type: ignore[operator]  # False for NaN too
    if t in _SCALARS:
        return True
    if t is dict:
        for k, v in value.items():  # type: ignore[attr-defined]
            if type(k) is not str:
                return False
            tv = type(v)
            if tv is float:
                if not -_INF < v < _INF:
                    return False
            elif tv not in _SCALARS and not _plain_json(v):
                return False
        return True
    if t is list:
        return all(_plain_json(v) for v in value)  # type: ignore[attr-defined]
    return False


def _name_ok(v: object) -> bool:
    return type(v) is str and 0 < len(v) <= 512


def _id_ok(v: object) -> bool:
    return v is None or (type(v) is str and len(v) <= 4096)


def _number_ok(v: object) -> bool:
    return v is None or (type(v) in (float, int) and math.isfinite(v))  # type: ignore[arg-type]


def decision_record(
    *,
    event_id: str,
    occurred_at: datetime | int,
    model_name: str,
    model_version: str,
    inputs: Any,
    prediction: Any,
    status: str = "ok",
    error_type: Any = None,
    error_message: Any = None,
    score: Any = None,
    deployment_id: Any = None,
    request_id: Any = None,
    explanation: Any = None,
    run_id: Any = None,
    dataset_version: Any = None,
    code_commit: Any = None,
    environment_hash: Any = None,
    actor: Any = None,
    latency_ms: Any = None,
    tags: Mapping[str, str] | None = None,
    redaction_policy: str | None = None,
) -> dict[str, Any]:
    """Validate a decision and build its Avro record (without the integrity block) in one pass.

    The serving hot path: plain type checks instead of a pydantic model. Anything the checks
    do not accept is handed to :class:`Decision`, so a bad argument raises the same
    ``ValidationError`` naming the field, and the rules stay those of the model. Time may be
    given as Unix milliseconds (``occurred_at``) to skip building a datetime. Only a decision
    the model made (``status`` ok, no error) takes the fast path.
    """
    try:
        fast = (
            status == "ok"
            and error_type is None
            and error_message is None
            and prediction is not None
            and _name_ok(model_name)
            and _name_ok(model_version)
            and type(inputs) is dict
            and _plain_json(inputs)
            and (score is None or _number_ok(score))
            and (latency_ms is None or _number_ok(latency_ms))
            and (latency_ms is None or latency_ms >= 0)
            and (deployment_id is None or _id_ok(deployment_id))
            and (request_id is None or _id_ok(request_id))
            and (run_id is None or _id_ok(run_id))
            and (dataset_version is None or _id_ok(dataset_version))
            and (code_commit is None or _id_ok(code_commit))
            and (environment_hash is None or _id_ok(environment_hash))
            and (actor is None or _id_ok(actor))
            and (type(occurred_at) is int or occurred_at.tzinfo is not None)  # type: ignore[union-attr]
            and (not tags or all(type(k) is str and type(v) is str for k, v in tags.items()))
            and (type(prediction) is str or _plain_json(prediction))
            and (explanation is None or _plain_json(explanation))
        )
        if fast:
            is_str = type(prediction) is str
            return {
                "event_id": event_id,
                "occurred_at": occurred_at,
                "model_name": model_name,
                "model_version": model_version,
                "deployment_id": deployment_id,
                "request_id": request_id,
                "inputs": _dumps(inputs),
                "prediction": prediction if is_str else _dumps(prediction),
                "prediction_is_json": not is_str,
                "status": "ok",
                "error_type": None,
                "error_message": None,
                "score": None if score is None else float(score),
                "explanation": None if explanation is None else _dumps(explanation),
                "run_id": run_id,
                "dataset_version": dataset_version,
                "code_commit": code_commit,
                "environment_hash": environment_hash,
                "actor": actor,
                "latency_ms": None if latency_ms is None else float(latency_ms),
                "tags": dict(tags) if tags else {},
                "redaction_policy": redaction_policy,
            }
    except (ValueError, TypeError, RecursionError):
        pass  # not JSON as given: let the model name the field
    if type(occurred_at) is int:
        occurred_at = datetime.fromtimestamp(occurred_at / 1000, UTC)
    return Decision(
        event_id=event_id,
        occurred_at=occurred_at,
        model_name=model_name,
        model_version=model_version,
        inputs=inputs,
        prediction=prediction,
        status=status,
        error_type=error_type,
        error_message=error_message,
        score=score,
        deployment_id=deployment_id,
        request_id=request_id,
        explanation=explanation,
        run_id=run_id,
        dataset_version=dataset_version,
        code_commit=code_commit,
        environment_hash=environment_hash,
        actor=actor,
        latency_ms=latency_ms,
        tags=dict(tags) if tags else {},
    ).to_avro(redaction_policy=redaction_policy)


class DecisionEvent(BaseModel):
    """The full decision event as it travels (mirror of ``decision_event`` latest version)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    event_id: UUID
    occurred_at: AwareDatetime
    model_name: str
    model_version: str
    deployment_id: str | None = None
    request_id: str | None = None
    inputs: str
    prediction: str | None = None
    prediction_is_json: bool = False
    status: str = "ok"
    error_type: str | None = None
    error_message: str | None = None
    score: float | None = None
    explanation: str | None = None
    run_id: str | None = None
    dataset_version: str | None = None
    code_commit: str | None = None
    environment_hash: str | None = None
    actor: str | None = None
    latency_ms: float | None = None
    tags: dict[str, str] = Field(default_factory=dict)
    redaction_policy: str | None = None
    key_id: str | None = None
    producer_id: str
    producer_epoch: int
    seq: int = Field(ge=1)
    prev_hash: bytes = Field(min_length=32, max_length=32)

    @property
    def inputs_value(self) -> JsonObject:
        value: JsonObject = json.loads(self.inputs)
        return value

    @property
    def prediction_value(self) -> Prediction | None:
        return decode_value(self.prediction, self.prediction_is_json)


def decode_value(text: str | None, is_json: bool) -> Prediction | None:
    """The value :func:`encode_value` wrote (None stays None)."""
    if text is None:
        return None
    value: Prediction = json.loads(text) if is_json else text
    return value


class Checkpoint(BaseModel):
    """A producer's signed statement about its chain head (mirror of ``checkpoint``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    producer_id: str
    producer_epoch: int
    seq: int = Field(ge=1)
    chain_head: bytes = Field(min_length=32, max_length=32)
    key_id: str
    algorithm: str = "ed25519"
    signature: bytes
    signed_at: AwareDatetime


def utc_now() -> datetime:
    """Now, in UTC, at millisecond precision (what Avro timestamp-millis keeps)."""
    now = datetime.now(UTC)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)
