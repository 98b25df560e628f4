"""The worker's model-event path: the rows of model events and the promotion guard rail.

Messages of the model-events topic are checked like decisions (hash, key, signature,
fields) by :class:`.checks.EventVerifier` with ``record="model_event"``, followed on
their own chains ``<producer_id>/model-events`` (:class:`.side_chains.SideChainIngest`), and
stored in ``audit.model_events`` and ``audit.model_event_checkpoints`` in the same flush as
the decisions, before the offsets are committed.

Guard rail (the promotion rule of :mod:`decision_audit.contract.promotion`): a ``promote``
of a model version to a production stage that breaks the rule is stored as it happened and
reported in ``audit.incidents`` as ``unapproved_promotion``, its detail naming each thing
missing. ``decision-audit gate`` (decision_audit.audit.gate) asks the same rule before a
promotion.
"""

from __future__ import annotations

import json
from typing import Any

from decision_audit.clickhouse.tables import stored_facts
from decision_audit.contract.fields import MODEL_EVENT
from decision_audit.contract.promotion import (
    GATE_ACTIONS,
    Fact,
    PromotionPolicy,
    model_version_of,
    promotion_problems,
)
from decision_audit.contract.reasons import IncidentKind
from decision_audit.worker.chain_heads import ChainReader
from decision_audit.worker.checks import VerifiedEvent
from decision_audit.worker.side_chains import Message, SideChainIngest, incident_row

MODEL_EVENT_COLUMNS = MODEL_EVENT.written
"""the columns of ``model_events`` the worker writes (decision_audit.contract.fields)"""


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
