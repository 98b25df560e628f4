"""The worker's model-event path: verify, follow chains, build rows, apply the promotion rule.

Messages of the model-events topic are checked like decisions (hash, key, signature,
fields) by :class:`.checks.EventVerifier` with ``record="model_event"``, followed on
their own chains ``<producer_id>/model-events`` (the chain heads come from
``audit.model_events``), and stored in ``audit.model_events`` and
``audit.model_event_checkpoints`` in the same flush as the decisions, before the offsets
are committed. Lifecycle events are rare, so chain heads are looked up afresh for every
batch that carries any: no state survives a batch, and a rebalance needs no hook.

Guard rail (:class:`PromotionPolicy`): a ``promote`` of a model version to a production
stage without a recorded approval (the latest ``approve``/``reject`` of that model version
at or before the promotion must be an approval) or without the attestations the policy
names is stored as it happened and reported in ``audit.incidents`` as
``unapproved_promotion``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from decision_audit.contract.fields import MODEL_EVENT
from decision_audit.contract.lineage import MODEL_EVENT_CHAIN_SUFFIX
from decision_audit.contract.reasons import IncidentKind, Reason
from decision_audit.contract.settings import ENV_PREFIX, AuditSettings
from decision_audit.worker.chain_heads import ChainReader
from decision_audit.worker.chains import Chain, ChainTracker, Checked, Head, Link, judge
from decision_audit.worker.checks import (
    Headers,
    Rejection,
    StagedEvent,
    VerifiedCheckpoint,
    VerifiedEvent,
)
from decision_audit.worker.rows import QuarantineRow, checkpoint_row

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


class Message(Protocol):
    """What the worker's consumed message offers (see ``decision_audit.worker.received``)."""

    @property
    def topic(self) -> str: ...
    @property
    def partition(self) -> int: ...
    @property
    def offset(self) -> int: ...
    @property
    def key(self) -> bytes | None: ...
    @property
    def value(self) -> bytes | None: ...
    @property
    def headers(self) -> Headers: ...


@dataclass
class ModelEventBatch:
    """What one flush stores for the model-events topic."""

    rows: list[list[Any]] = field(default_factory=list)
    checkpoints: list[list[Any]] = field(default_factory=list)
    incidents: list[list[Any]] = field(default_factory=list)
    rejected: list[QuarantineRow] = field(default_factory=list)
    duplicates: int = 0


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


def _misnamed(result: VerifiedEvent | StagedEvent | VerifiedCheckpoint) -> Rejection | None:
    producer_id = result.record["producer_id"]
    if producer_id.endswith(MODEL_EVENT_CHAIN_SUFFIX):
        return None
    return Rejection(
        Reason.INVALID_EVENT,
        f"chain {producer_id!r} on the model-events topic does not end "
        f"with {MODEL_EVENT_CHAIN_SUFFIX!r}",
    )


class ModelEventIngest:
    """Turns the model-events messages of a batch into rows, incidents and rejections."""

    def __init__(
        self,
        stored: ChainReader,
        policy: PromotionPolicy | None = None,
    ) -> None:
        self.stored = stored
        self.policy = policy or PromotionPolicy()

    @property
    def _db(self) -> str:
        return self.stored.database

    def process(self, checked: Sequence[tuple[Message, Checked]]) -> ModelEventBatch:
        """Judge messages already checked with ``EventVerifier.check(record="model_event")``."""
        out = ModelEventBatch()
        if not checked:
            return out
        chains = ChainTracker(self._heads, self._hashes)
        # Model-event chains are named apart from decision chains (decision_audit.contract.lineage).
        named: list[tuple[Message, Checked]] = [
            (msg, _misnamed(r) or r) if not isinstance(r, Rejection) else (msg, r)
            for msg, r in checked
        ]
        j = judge(named, chains)
        out.duplicates = j.duplicates
        out.checkpoints = [
            checkpoint_row(cp, msg.value or b"", msg.partition, msg.offset)
            for msg, cp in j.checkpoints
        ]
        out.incidents = [
            self._incident(
                IncidentKind.SEQ_GAP,
                rec,
                msg,
                f"{hi - lo + 1} model event(s) missing before seq {rec['seq']}",
                lo,
                hi,
            )
            for msg, rec, lo, hi in j.gaps
        ]
        out.rejected = [self._quarantine(msg, rejection) for msg, rejection in j.rejected]
        accepted = [(m, ev) for m, ev in j.accepted if isinstance(ev, VerifiedEvent)]
        out.rows = [
            model_event_row(ev, m.value or b"", m.partition, m.offset) for m, ev in accepted
        ]
        out.incidents.extend(self._guard(accepted))
        return out

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
                    self._incident(
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

    # -- helpers ----------------------------------------------------------------------------

    def _incident(
        self, kind: IncidentKind, rec: dict[str, Any], msg: Message, detail: str, lo: int, hi: int
    ) -> list[Any]:
        return [
            kind,
            rec["producer_id"],
            rec["producer_epoch"],
            lo,
            hi,
            detail,
            msg.partition,
            msg.offset,
        ]

    def _quarantine(self, msg: Message, rejection: Rejection) -> QuarantineRow:
        return QuarantineRow(
            msg.topic, msg.partition, msg.offset, msg.key, rejection, msg.value or b""
        )

    def _heads(self, chains: set[Chain]) -> dict[Chain, Head]:
        return self.stored.chain_heads(chains, "model_events")

    def _hashes(self, links: set[Link]) -> dict[Link, bytes]:
        return self.stored.stored_hashes(links, "model_events")
