"""Outcomes and reviews: the records that follow a decision, each on its own chain.

:meth:`decision_audit.AuditProducer.log_outcome` and ``log_review`` validate a record here
and write it with their :class:`~decision_audit.producer.chain.ChainWriter`: outcomes on
``<producer_id>/outcomes`` to ``outcomes_topic``, signed on the decisions' cadence (they can
be as many as the decisions); reviews on ``<producer_id>/reviews`` to ``reviews_topic``, each
followed at once by a signed checkpoint (few, and each one a person's act). Why chains of
their own: :func:`decision_audit.contract.followups.outcome_chain_id`.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

from decision_audit.contract.followups import OutcomeInput, ReviewInput
from decision_audit.contract.ids import uuid7
from decision_audit.contract.models import Prediction, utc_now


def _decision_id(decision: str | UUID) -> str:
    return str(decision) if isinstance(decision, UUID) else decision


def outcome_record(
    decision: str | UUID,
    actual: Prediction,
    *,
    observed_at: datetime | None = None,
    source: str | None = None,
    actor: str | None = None,
    redaction_policy: str | None = None,
) -> dict[str, Any]:
    """The Avro record of one outcome, without its integrity fields; ``actual`` as redacted
    under the policy ``redaction_policy`` names.

    Raises ``ValueError`` (naming the field) on bad arguments, before anything is sent.
    """
    return OutcomeInput.model_validate(
        {
            "event_id": uuid7(),
            "occurred_at": utc_now(),
            "decision_id": _decision_id(decision),
            "actual": actual,
            "observed_at": observed_at,
            "source": source,
            "actor": actor,
        }
    ).to_avro(redaction_policy=redaction_policy)


def review_record(
    decision: str | UUID,
    reviewer: str,
    verdict: str,
    *,
    final_decision: Prediction | None = None,
    reason: str | None = None,
    occurred_at: datetime | None = None,
    redaction_policy: str | None = None,
) -> dict[str, Any]:
    """The Avro record of one review, without its integrity fields; ``final_decision`` and
    ``reason`` as redacted under the policy ``redaction_policy`` names.

    Raises ``ValueError`` (naming the field) on bad arguments, before anything is sent.
    """
    return ReviewInput.model_validate(
        {
            "event_id": uuid7(),
            "occurred_at": occurred_at or utc_now(),
            "decision_id": _decision_id(decision),
            "reviewer": reviewer,
            "verdict": verdict,
            "final_decision": final_decision,
            "reason": reason,
        }
    ).to_avro(redaction_policy=redaction_policy)
