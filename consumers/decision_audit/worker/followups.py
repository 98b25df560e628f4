"""The worker's path for outcomes and reviews, and their link to the decision they name.

Outcomes and reviews follow their own chains like model events (:mod:`.side_chains`). Each
names a decision by ``decision_id``, its event id or its request id. Once the batch's
decisions are stored (so a decision and its outcome in one batch find each other), the
worker looks the named decisions up: a record whose decision is not stored is kept all the
same and reported in ``audit.incidents`` as ``unknown_decision`` — what the worker saw when
it arrived (a decision consumed later, from another partition, is joined by the
``decision_outcomes`` and ``decision_reviews`` views at query time).
"""

from __future__ import annotations

from typing import Any

from decision_audit.contract.fields import RecordKind
from decision_audit.contract.reasons import IncidentKind
from decision_audit.contract.rules import UUID_RE
from decision_audit.worker.chain_heads import ChainReader
from decision_audit.worker.side_chains import SideBatch, SideChainIngest, incident_row


class FollowUpIngest(SideChainIngest):
    """Outcomes or reviews of a batch: rows, gap incidents, rejections; then their links."""

    def __init__(self, kind: RecordKind, stored: ChainReader) -> None:
        super().__init__(kind, stored)
        self.what = kind.schema

    def unknown_decisions(self, batch: SideBatch) -> list[list[Any]]:
        """``unknown_decision`` incidents of the batch's records whose decision is not stored
        (call once the batch's decisions are)."""
        if not batch.accepted:
            return []
        named = {ev.record["decision_id"] for _, ev in batch.accepted}
        found = self._stored_decisions(named)
        return [
            incident_row(
                IncidentKind.UNKNOWN_DECISION,
                ev.record,
                msg,
                f"{self.kind.schema} {ev.record['event_id']} names decision "
                f"{ev.record['decision_id'][:200]!r}: no decision has that event id or "
                "request id",
                ev.record["seq"],
                ev.record["seq"],
            )
            for msg, ev in batch.accepted
            if ev.record["decision_id"] not in found
        ]

    def _stored_decisions(self, ids: set[str]) -> set[str]:
        """Those of ``ids`` that are the event id or the request id of a stored decision."""
        uuids = sorted(i for i in ids if UUID_RE.match(i))
        table = f"{self.stored.database}.decisions"
        result = self.stored.client.query(
            f"SELECT toString(event_id) FROM {table} WHERE event_id IN {{uuids:Array(UUID)}} "
            f"UNION DISTINCT SELECT assumeNotNull(request_id) FROM {table} "
            "WHERE request_id IN {ids:Array(String)}",
            parameters={"uuids": uuids, "ids": sorted(ids)},
        )
        return {str(r[0]) for r in result.result_rows}
