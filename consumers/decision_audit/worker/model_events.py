"""The worker's model-event path: the rows of model events and the promotion rule.

Messages of the model-events topic are checked like decisions (hash, key, signature,
fields) by :class:`.checks.EventVerifier` with ``record="model_event"``, followed on
their own chains ``<producer_id>/model-events`` (:class:`.side_chains.SideChainIngest`), and
stored in ``audit.model_events`` and ``audit.model_event_checkpoints`` in the same flush as
the decisions, before the offsets are committed.

Guard rail (:class:`PromotionPolicy`, :func:`promotion_problems`): a ``promote`` of a model
version to a production stage that lacks the approvals the policy asks for (from distinct
actors, after the latest rejection; by default neither the registrant nor the promoter), or
whose required attestation predicates have no passing latest ``attest`` event, is stored as
it happened and reported in ``audit.incidents`` as ``unapproved_promotion``, its detail
naming each thing missing. ``decision-audit gate`` (decision_audit.audit.gate) asks the same
rule before a promotion.
"""

from __future__ import annotations

import json
import os
import tomllib
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from decision_audit.contract.fields import MODEL_EVENT
from decision_audit.contract.reasons import IncidentKind
from decision_audit.contract.settings import ENV_PREFIX, AuditSettings
from decision_audit.worker.chain_heads import ChainReader
from decision_audit.worker.checks import VerifiedEvent
from decision_audit.worker.side_chains import Message, SideChainIngest, incident_row

MODEL_EVENT_COLUMNS = MODEL_EVENT.written
"""the columns of ``model_events`` the worker writes (decision_audit.contract.fields)"""


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


def model_event_row(ev: VerifiedEvent, raw: bytes, partition: int, offset: int) -> list[Any]:
    """A row of ``model_events``, in :data:`MODEL_EVENT_COLUMNS` order."""
    r = ev.record
    return [
        r["event_id"],
        r["occurred_at"],
        r["action"],
        r["actor"],
        r["subject"]["type"],
        r["subject"]["id"],
        [(x["type"], x["id"]) for x in r["related"]],
        r["metadata"],
        r["key_id"],
        r["producer_id"],
        r["producer_epoch"],
        r["seq"],
        r["prev_hash"],
        ev.event_hash,
        ev.decoded.writer.fingerprint_int,
        raw,
        partition,
        offset,
    ]


def model_version_of(record: dict[str, Any]) -> str | None:
    """The model version a lifecycle record is about: its subject, else a related one."""
    refs = [record["subject"], *record["related"]]
    return next((r["id"] for r in refs if r["type"] == "model_version"), None)


class ModelEventIngest(SideChainIngest):
    """Model events of a batch: rows, incidents (gaps, unapproved promotions), rejections."""

    what = "model event"

    def __init__(self, stored: ChainReader, policy: PromotionPolicy | None = None) -> None:
        super().__init__(MODEL_EVENT, stored, model_event_row)
        self.policy = policy or PromotionPolicy.load()

    def incidents(self, accepted: list[tuple[Message, VerifiedEvent]]) -> list[list[Any]]:
        return self._guard(accepted)

    # -- guard rail -------------------------------------------------------------------------

    def _guard(self, accepted: list[tuple[Message, VerifiedEvent]]) -> list[list[Any]]:
        policy = self.policy
        promotions = []
        for msg, ev in accepted:
            rec = ev.record
            if rec["action"] == "promote" and policy.targets_production(
                json.loads(rec["metadata"])
            ):
                promotions.append((msg, rec))
        if not promotions:
            return []
        versions = {v for _, rec in promotions if (v := model_version_of(rec)) is not None}
        facts = stored_facts(self.stored.client, self._db, versions)
        for _, ev in accepted:
            rec = ev.record
            version = model_version_of(rec)
            if rec["action"] in GATE_ACTIONS and version in versions:
                facts.setdefault(version, []).append(
                    Fact(
                        rec["occurred_at"], rec["action"], rec["actor"], json.loads(rec["metadata"])
                    )
                )
        incidents = []
        for msg, rec in promotions:
            version = model_version_of(rec)
            problem = self._promotion_problem(rec, version, facts.get(version or "", []))
            if problem is not None:
                incidents.append(
                    incident_row(
                        IncidentKind.UNAPPROVED_PROMOTION, rec, msg, problem, rec["seq"], rec["seq"]
                    )
                )
        return incidents

    def _promotion_problem(
        self, rec: dict[str, Any], version: str | None, facts: list[Fact]
    ) -> str | None:
        """The incident's detail: what the promotion missed, or None when it passed."""
        what = f"promote of {version or '(no model_version reference)'} by {rec['actor']!r}"
        if version is None:
            return f"{what}: names no model version"
        meta = json.loads(rec["metadata"])
        problems = promotion_problems(
            self.policy, version, rec["actor"], rec["occurred_at"], facts, meta
        )
        return f"{what} to production: {'; '.join(problems)}" if problems else None


def stored_facts(client: Any, database: str, versions: set[str]) -> dict[str, list[Fact]]:
    """The stored :data:`GATE_ACTIONS` events about each of ``versions`` (by subject, else
    a related model_version reference, like :func:`model_version_of`)."""
    if not versions:
        return {}
    rows = client.query(
        "SELECT if(subject_type = 'model_version', subject_id, "
        "arrayFirst(r -> r.1 = 'model_version', related).2) AS version, "
        f"occurred_at, action, actor, metadata FROM {database}.model_events FINAL "
        "WHERE action IN {a:Array(String)} AND version IN {v:Array(String)}",
        parameters={"a": list(GATE_ACTIONS), "v": sorted(versions)},
    ).result_rows
    out: dict[str, list[Fact]] = {}
    for version, ts, action, actor, meta in rows:
        out.setdefault(str(version), []).append(Fact(ts, str(action), str(actor), json.loads(meta)))
    return out
