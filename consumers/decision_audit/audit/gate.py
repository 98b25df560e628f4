"""``decision-audit gate``: may this model version be promoted to production now?

The question the worker asks of a ``promote`` event after the fact
(:func:`decision_audit.contract.promotion.promotion_problems`), asked before it from what
``audit.model_events`` holds, so a CI/CD pipeline can stop a promotion the policy would
report as an ``unapproved_promotion`` incident.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

from decision_audit.clickhouse.tables import stored_facts
from decision_audit.contract.models import utc_now
from decision_audit.contract.promotion import Fact, PromotionPolicy, promotion_problems


@dataclass
class GateAnswer:
    """The gate's answer for one model version and target stage."""

    model_version: str
    stage: str
    production: bool
    """whether the policy counts ``stage`` as production (else it asks nothing)"""
    promoter: str | None
    problems: list[str] = field(default_factory=list)
    approvals: list[str] = field(default_factory=list)
    """who approved (distinct actors, in order)"""
    attestations: dict[str, str] = field(default_factory=dict)
    """each predicate's latest result"""
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "ok": self.ok}


def check_gate(
    client: Any,
    database: str,
    model_version: str,
    stage: str = "production",
    *,
    policy: PromotionPolicy | None = None,
    promoter: str | None = None,
    at: datetime | None = None,
) -> GateAnswer:
    """What a promotion of ``model_version`` (``name@version``) to ``stage`` by ``promoter``
    at ``at`` (default now) would miss under ``policy`` (default :meth:`PromotionPolicy.load`)."""
    policy = policy or PromotionPolicy.load()
    answer = GateAnswer(model_version, stage, policy.is_production(stage), promoter)
    facts = stored_facts(client, database, {model_version}).get(model_version, [])
    _describe(answer, facts, policy)
    if not answer.production:
        answer.notes.append(f"{stage!r} is not a production stage: the policy asks nothing")
        return answer
    if promoter is None:
        answer.notes.append("no --promoter given: an approval by the promoter is not checked")
    answer.problems = promotion_problems(
        policy, model_version, promoter or "", at or utc_now(), facts
    )
    return answer


def _describe(answer: GateAnswer, facts: list[Fact], policy: PromotionPolicy) -> None:
    ordered = sorted(facts, key=lambda f: f.occurred_at)
    if not any(f.action == "register" for f in ordered):
        answer.notes.append(f"no register event records model version {answer.model_version}")
    for f in ordered:
        if f.action == "approve" and f.actor not in answer.approvals:
            answer.approvals.append(f.actor)
        if f.action == "attest":
            answer.attestations[str(f.metadata.get("predicate"))] = str(f.metadata.get("result"))


def print_gate(answer: GateAnswer, fmt: str, console: Any) -> None:
    """Print the answer for people (``text``) or machines (``json``)."""
    if fmt == "json":
        print(json.dumps(answer.to_dict(), indent=2, default=str))
        return
    verdict = "[green]may be promoted[/]" if answer.ok else "[red]may NOT be promoted[/]"
    console.print(f"{answer.model_version} → {answer.stage}: {verdict}")
    for problem in answer.problems:
        console.print(f"  missing: {problem}")
    approvals = ", ".join(answer.approvals) or "none"
    attested = ", ".join(f"{p} {r}" for p, r in answer.attestations.items()) or "none"
    console.print(f"  approvals recorded: {approvals}; attestations: {attested}")
    for note in answer.notes:
        console.print(f"  note: {note}")
