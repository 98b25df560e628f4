"""What follows a decision: its outcome (the ground truth, known later) and human reviews.

Both name the decision by ``decision_id``, its event id or its request id as the caller has
it; the audit tools match either. Each travels on its own topic and its own hash chain,
``<producer_id>/outcomes`` and ``<producer_id>/reviews`` (why apart from the decisions: see
:func:`outcome_chain_id`), and is stored in ``outcomes`` / ``reviews``.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Self
from uuid import UUID

from pydantic import AwareDatetime, BaseModel, ConfigDict, StringConstraints, model_validator

from decision_audit.contract.fields import MAX_FOLLOW_UP_VALUE, OUTCOME, REVIEW
from decision_audit.contract.fields import MAX_REASON as MAX_REASON
from decision_audit.contract.models import Name, OptionalId, Prediction, encode_value

Verdict = Literal["confirm", "override", "escalate"]
"""decision_audit.contract.fields.VERDICTS, as a type"""

DecisionId = Annotated[str, StringConstraints(min_length=1, max_length=4096)]
"""a decision's event id or request id"""


def outcome_chain_id(producer_id: str) -> str:
    """The chain id of a producer's outcomes: ``<producer_id>/outcomes``.

    Outcomes arrive later than their decisions and often from another process (a labelling
    job, a chargeback feed), so they are not links of the decision chain: on a chain and a
    topic of their own, ``log_outcome`` never waits for the serving path's lock, the worker's
    fast path for decisions keeps one record type, and each table's chains are verified from
    that table alone. Kafka orders only within one partition of one topic, hence one chain
    per topic, as for model events.
    """
    return OUTCOME.chain_id(producer_id)


def review_chain_id(producer_id: str) -> str:
    """The chain id of a producer's reviews: ``<producer_id>/reviews`` (see
    :func:`outcome_chain_id`)."""
    return REVIEW.chain_id(producer_id)


def _bounded(text: str, field: str) -> str:
    """``text``, unless longer than the contract allows (the worker would quarantine it)."""
    if len(text) > MAX_FOLLOW_UP_VALUE:
        raise ValueError(
            f"{field}: {len(text)} characters as stored, more than the {MAX_FOLLOW_UP_VALUE} "
            "the contract allows"
        )
    return text


class OutcomeInput(BaseModel):
    """What a caller supplies for one outcome, validated before anything is sent."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    event_id: UUID
    occurred_at: AwareDatetime
    decision_id: DecisionId
    actual: Prediction
    observed_at: AwareDatetime | None = None
    """when it was observed; default: when it is recorded"""
    source: OptionalId = None
    actor: OptionalId = None

    def to_avro(self, *, redaction_policy: str | None = None) -> dict[str, Any]:
        """The Avro record without its integrity block."""
        return {
            "event_id": str(self.event_id),
            "occurred_at": self.occurred_at,
            "decision_id": self.decision_id,
            "actual": _bounded(encode_value(self.actual, "actual"), "actual"),
            "actual_is_json": not isinstance(self.actual, str),
            "observed_at": self.observed_at or self.occurred_at,
            "source": self.source,
            "actor": self.actor,
            "redaction_policy": redaction_policy,
        }


class ReviewInput(BaseModel):
    """What a caller supplies for one review, validated before anything is sent."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    event_id: UUID
    occurred_at: AwareDatetime
    decision_id: DecisionId
    reviewer: Name
    verdict: Verdict
    final_decision: Prediction | None = None
    """the decision that stands instead of the model's: required for (only) an override"""
    reason: Annotated[str, StringConstraints(max_length=MAX_REASON)] | None = None

    @model_validator(mode="after")
    def _final_decision_with_override(self) -> Self:
        if self.verdict == "override" and self.final_decision is None:
            raise ValueError("an override needs final_decision: the decision that stands")
        if self.verdict != "override" and self.final_decision is not None:
            raise ValueError(
                f"final_decision is for an override; a {self.verdict!r} keeps the decision as it is"
            )
        return self

    def to_avro(self, *, redaction_policy: str | None = None) -> dict[str, Any]:
        """The Avro record without its integrity block."""
        final = self.final_decision
        return {
            "event_id": str(self.event_id),
            "occurred_at": self.occurred_at,
            "decision_id": self.decision_id,
            "reviewer": self.reviewer,
            "verdict": self.verdict,
            "final_decision": (
                None
                if final is None
                else _bounded(encode_value(final, "final_decision"), "final_decision")
            ),
            "final_decision_is_json": not (final is None or isinstance(final, str)),
            "reason": self.reason,
            "redaction_policy": redaction_policy,
        }
