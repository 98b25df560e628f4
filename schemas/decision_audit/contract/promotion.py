"""The promotion rule: what a model version's promotion to production needs.

A ``promote`` of a model version to a production stage that lacks the approvals the policy
asks for (from distinct actors, after the latest rejection; by default neither the
registrant nor the promoter), or whose required attestation predicates have no passing
latest ``attest`` event, breaks the rule. The worker reports such a promotion after the
fact as an ``unapproved_promotion`` incident (decision_audit.worker.model_events);
``decision-audit gate`` (decision_audit.audit.gate) asks the same rule before it, and
``trace`` shows it. The stored facts the rule reads come from
:func:`decision_audit.clickhouse.tables.stored_facts`.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from decision_audit.contract.settings import ENV_PREFIX, AuditSettings

POLICY_FILE_ENV = ENV_PREFIX + "PROMOTION_POLICY_FILE"
"""names a TOML file of the promotion policy (its settings, top-level or under ``[promotion]``)"""


class PromotionPolicy(AuditSettings):
    """What a promotion to production needs (env ``DECISION_AUDIT_PROMOTION_*``, over the
    TOML file :data:`POLICY_FILE_ENV` names; see :meth:`load`)."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX + "PROMOTION_", extra="ignore")

    production_stages: list[str] = Field(
        default_factory=lambda: ["production", "prod"],
        description="stage names that count as production (case-insensitive)",
    )
    stage_keys: list[str] = Field(
        default_factory=lambda: ["stage", "to_stage"],
        description="metadata keys of a promote event that name the target stage",
    )
    require_approval: bool = Field(
        True, description="approvals are needed at all (false: required_approvals is ignored)"
    )
    required_approvals: int = Field(
        1, ge=0, description="approvals from distinct actors a production promotion needs"
    )
    approver_may_be_registrant: bool = Field(
        False, description="an approval by who registered the model version counts"
    )
    approver_may_be_promoter: bool = Field(False, description="an approval by who promotes counts")
    required_predicates: list[str] = Field(
        default_factory=list,
        description="attestation predicates (tests, bias-report…) whose latest attest event "
        "about the model version must exist and pass",
    )
    required_attestations: list[str] = Field(
        default_factory=list,
        description="metadata keys (e.g. artifact_sha256) that the promote event or one of "
        "its counted approvals must carry, non-empty",
    )

    @classmethod
    def load(cls, path: Path | None = None, **overrides: Any) -> PromotionPolicy:
        """The policy of the TOML file ``path`` (else the one :data:`POLICY_FILE_ENV` names,
        if any), each setting overridden by its environment variable, then by ``overrides``."""
        name = path or os.environ.get(POLICY_FILE_ENV)
        base: dict[str, Any] = {}
        if name:
            with Path(name).open("rb") as f:
                data = tomllib.load(f)
            base = data.get("promotion", data)
            unknown = sorted(set(base) - set(cls.model_fields))
            if unknown:
                raise ValueError(
                    f"promotion policy {name}: unknown setting(s) {', '.join(unknown)}"
                )
        from_env = cls()
        base.update({k: getattr(from_env, k) for k in from_env.model_fields_set})
        return cls(**{**base, **overrides})

    @property
    def approvals_needed(self) -> int:
        return self.required_approvals if self.require_approval else 0

    def targets_production(self, metadata: dict[str, Any]) -> bool:
        return self.is_production(
            next((str(metadata[k]) for k in self.stage_keys if metadata.get(k)), "")
        )

    def is_production(self, stage: str) -> bool:
        return stage.lower() in {s.lower() for s in self.production_stages}


GATE_ACTIONS = ("register", "approve", "reject", "attest")
"""the lifecycle actions the promotion rule reads"""


@dataclass(frozen=True, slots=True)
class Fact:
    """One lifecycle event of a model version that the promotion rule reads."""

    occurred_at: datetime
    action: str
    actor: str
    metadata: dict[str, Any]


def promotion_problems(
    policy: PromotionPolicy,
    version: str,
    promoter: str,
    at: datetime,
    facts: list[Fact],
    promote_metadata: dict[str, Any] | None = None,
) -> list[str]:
    """What a promotion of ``version`` to production by ``promoter`` at ``at`` misses under
    ``policy``, given the version's events (:data:`GATE_ACTIONS`); empty when it may pass.

    Approvals count from distinct actors, after the version's latest rejection; with
    separation of duties, not the registrant's nor the promoter's. Each required predicate's
    latest attestation must have passed.
    """
    before = sorted((f for f in facts if f.occurred_at <= at), key=lambda f: f.occurred_at)
    problems: list[str] = []
    registrants = {f.actor for f in before if f.action == "register"}
    verdicts = [f for f in before if f.action in ("approve", "reject")]
    last_reject = next((f for f in reversed(verdicts) if f.action == "reject"), None)
    approvals = [
        f
        for f in verdicts
        if f.action == "approve"
        and (last_reject is None or f.occurred_at > last_reject.occurred_at)
    ]
    counted: dict[str, Fact] = {}
    for f in approvals:
        if f.actor in counted:
            continue
        if f.actor in registrants and not policy.approver_may_be_registrant:
            problems.append(
                f"approval by {f.actor!r} does not count: {f.actor!r} registered {version} "
                "(separation of duties)"
            )
        elif f.actor == promoter and not policy.approver_may_be_promoter:
            problems.append(
                f"approval by {f.actor!r} does not count: {f.actor!r} is the promoter "
                "(separation of duties)"
            )
        else:
            counted[f.actor] = f
    need = policy.approvals_needed
    if len(counted) < need:
        has = f"{len(counted)} ({', '.join(repr(a) for a in counted)})" if counted else "none"
        what = "no recorded approval" if not counted else "too few approvals"
        rejected = ""
        if last_reject is not None:
            when = last_reject.occurred_at.isoformat()
            rejected = f" since the rejection by {last_reject.actor!r} at {when}"
        problems.append(f"{what}: needs {need} from distinct actors, has {has}{rejected}")
    for predicate in policy.required_predicates:
        attests = [
            f for f in before if f.action == "attest" and f.metadata.get("predicate") == predicate
        ]
        if not attests:
            problems.append(f"no {predicate!r} attestation")
        elif (last := attests[-1]).metadata.get("result") != "pass":
            problems.append(
                f"{predicate!r} attestation by {last.actor!r} at {last.occurred_at.isoformat()} "
                f"did not pass ({last.metadata.get('result')})"
            )
    metas = [promote_metadata or {}, *(f.metadata for f in counted.values())]
    missing = [k for k in policy.required_attestations if not any(m.get(k) for m in metas)]
    if missing:
        problems.append(f"missing attestation(s) {', '.join(missing)} in metadata")
    return problems


def model_version_of(record: dict[str, Any]) -> str | None:
    """The model version a lifecycle record is about: its subject, else a related one."""
    refs = [record["subject"], *record["related"]]
    return next((r["id"] for r in refs if r["type"] == "model_version"), None)
