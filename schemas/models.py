"""Pydantic models mirroring the Avro records, and the conversions between them."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Annotated, Any
from uuid import UUID

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, JsonValue, StringConstraints

Name = Annotated[str, StringConstraints(min_length=1, max_length=512)]
OptionalId = Annotated[str, StringConstraints(max_length=4096)] | None
JsonObject = dict[str, JsonValue]
Prediction = str | bool | int | float | list[JsonValue] | dict[str, JsonValue]


def dumps_json(value: Any, field: str) -> str:
    """Compact JSON text; NaN and Infinity are refused (they are not JSON)."""
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
    prediction: Prediction
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
            "prediction": pred if isinstance(pred, str) else dumps_json(pred, "prediction"),
            "prediction_is_json": not isinstance(pred, str),
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
    prediction: str
    prediction_is_json: bool = False
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
    def prediction_value(self) -> Prediction:
        return json.loads(self.prediction) if self.prediction_is_json else self.prediction


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
