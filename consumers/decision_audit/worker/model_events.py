"""The worker's model-event path: the rows of model events and the promotion rule.

Messages of the model-events topic are checked like decisions (hash, key, signature,
fields) by :class:`.checks.EventVerifier` with ``record="model_event"``, followed on
their own chains ``<producer_id>/model-events`` (:class:`.side_chains.SideChainIngest`), and
stored in ``audit.model_events`` and ``audit.model_event_checkpoints`` in the same flush as
the decisions, before the offsets are committed.

Guard rail (:class:`PromotionPolicy`): a ``promote`` of a model version to a production
stage without a recorded approval (the latest ``approve``/``reject`` of that model version
at or before the promotion must be an approval) or without the attestations the policy
names is stored as it happened and reported in ``audit.incidents`` as
``unapproved_promotion``.
"""

from __future__ import annotations

import json
from datetime import datetime
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


class PromotionPolicy(AuditSettings):
    """What a promotion to production needs (env ``DECISION_AUDIT_PROMOTION_*``)."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX + "PROMOTION_", extra="ignore")

    production_stages: list[str] = Field(
        default_factory=lambda: ["production", "prod"],
        description="stage names that count as production (case-insensitive)",
    )
    stage_keys: list[str] = Field(
        default_factory=lambda: ["stage", "to_stage"],
        description="metadata keys of a promote event that name the target stage",
    )
    require_approval: bool = Field(True, description="a recorded approve event is needed")
    required_attestations: list[str] = Field(
        default_factory=list,
        description="metadata keys (e.g. artifact_sha256) that the promote event or its "
        "approval must carry, non-empty",
    )

    def targets_production(self, metadata: dict[str, Any]) -> bool:
        stages = {s.lower() for s in self.production_stages}
        return any(str(metadata.get(k, "")).lower() in stages for k in self.stage_keys)


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
        self.policy = policy or PromotionPolicy()

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
        verdicts = self._stored_verdicts(versions)
        for _, ev in accepted:
            rec = ev.record
            version = model_version_of(rec)
            if rec["action"] in ("approve", "reject") and version in versions:
                verdicts.setdefault(version, []).append(
                    (rec["occurred_at"], rec["action"], json.loads(rec["metadata"]), rec["actor"])
                )
        incidents = []
        for msg, rec in promotions:
            version = model_version_of(rec)
            problem = self._promotion_problem(rec, version, verdicts.get(version or "", []))
            if problem is not None:
                incidents.append(
                    incident_row(
                        IncidentKind.UNAPPROVED_PROMOTION, rec, msg, problem, rec["seq"], rec["seq"]
                    )
                )
        return incidents

    def _promotion_problem(
        self,
        rec: dict[str, Any],
        version: str | None,
        verdicts: list[tuple[datetime, str, dict[str, Any], str]],
    ) -> str | None:
        what = f"promote of {version or '(no model_version reference)'} by {rec['actor']!r}"
        if version is None:
            return f"{what}: names no model version"
        before = sorted((v for v in verdicts if v[0] <= rec["occurred_at"]), key=lambda v: v[0])
        latest = before[-1] if before else None
        if self.policy.require_approval:
            if latest is None:
                return f"{what} to production: no recorded approval"
            if latest[1] != "approve":
                return f"{what} to production: latest decision is a rejection by {latest[3]!r}"
        meta = json.loads(rec["metadata"])
        approval_meta = latest[2] if latest is not None and latest[1] == "approve" else {}
        missing = [
            k
            for k in self.policy.required_attestations
            if not (meta.get(k) or approval_meta.get(k))
        ]
        if missing:
            return f"{what} to production: missing attestation(s) {', '.join(missing)}"
        return None

    def _stored_verdicts(
        self, versions: set[str]
    ) -> dict[str, list[tuple[datetime, str, dict[str, Any], str]]]:
        if not versions:
            return {}
        rows = self.stored.client.query(
            f"SELECT subject_id, occurred_at, action, metadata, actor "
            f"FROM {self._db}.model_events FINAL "
            "WHERE subject_type = 'model_version' AND subject_id IN {v:Array(String)} "
            "AND action IN ('approve', 'reject')",
            parameters={"v": sorted(versions)},
        ).result_rows
        out: dict[str, list[tuple[datetime, str, dict[str, Any], str]]] = {}
        for sid, ts, action, meta, actor in rows:
            out.setdefault(str(sid), []).append((ts, str(action), json.loads(meta), str(actor)))
        return out
