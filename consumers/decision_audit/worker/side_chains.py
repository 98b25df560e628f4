"""The worker's path for the record kinds beside decisions: model events, outcomes, reviews.

Each kind comes on its own topic, on chains named ``<producer_id>`` + the kind's suffix
(``Chain`` in decision_audit.contract.fields). Its messages are checked by
:class:`.checks.EventVerifier` with the kind's record name, followed on their chains (heads
recovered from the kind's table, like the decisions' in :class:`.chains.ChainTracker`:
advanced when the batch is committed, forgotten on a rebalance), and turned into the rows of
the kind's table and checkpoint table, stored in the same flush as the decisions, before the
offsets are committed.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from decision_audit.contract.fields import RecordKind
from decision_audit.contract.reasons import IncidentKind, Reason
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


RowBuilder = Callable[[VerifiedEvent, bytes, int, int], list[Any]]
"""``(event, raw bytes, partition, offset) -> row`` of the kind's table, in ``kind.written``
order"""


def record_row(kind: RecordKind) -> RowBuilder:
    """The row builder of a kind whose fields are each one column of the same name."""
    if any(len(f.columns) != 1 or f.columns[0].name != f.name for f in kind):
        raise ValueError(f"{kind.schema}: a field is not one column of its name")
    pick = operator.itemgetter(*kind.names)

    def row(ev: VerifiedEvent, raw: bytes, partition: int, offset: int) -> list[Any]:
        return [
            *pick(ev.record),
            ev.event_hash,
            ev.decoded.writer.fingerprint_int,
            raw,
            partition,
            offset,
        ]

    return row


@dataclass
class SideBatch:
    """What one flush stores for one side kind's topic."""

    rows: list[list[Any]] = field(default_factory=list)
    checkpoints: list[list[Any]] = field(default_factory=list)
    incidents: list[list[Any]] = field(default_factory=list)
    rejected: list[QuarantineRow] = field(default_factory=list)
    duplicates: int = 0
    accepted: list[tuple[Message, VerifiedEvent]] = field(default_factory=list)
    """the accepted events, beside their messages (for checks made after the decisions are
    stored: decision_audit.worker.followups)"""


def incident_row(
    kind: IncidentKind, rec: dict[str, Any], msg: Message, detail: str, lo: int, hi: int
) -> list[Any]:
    """A row of ``incidents`` about ``rec``'s chain, seqs ``lo..hi``."""
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


class SideChainIngest:
    """Turns one side kind's messages of a batch into rows, incidents and rejections."""

    what = "event"
    """how a gap incident names the kind's records"""

    def __init__(self, kind: RecordKind, stored: ChainReader, row: RowBuilder | None = None):
        self.kind = kind
        self.stored = stored
        self.chains = ChainTracker(self._heads, self._hashes)
        self._row = row or record_row(kind)
        self._suffix = kind.chain_suffix

    @property
    def _db(self) -> str:
        return self.stored.database

    def process(self, checked: Sequence[tuple[Message, Checked]]) -> SideBatch:
        """Judge messages already checked with ``EventVerifier.check(record=kind.schema)``."""
        out = SideBatch()
        if not checked:
            return out
        # Side chains are named apart from decision chains (decision_audit.contract.fields).
        named: list[tuple[Message, Checked]] = [
            (msg, r) if isinstance(r, Rejection) else (msg, self._misnamed(r) or r)
            for msg, r in checked
        ]
        j = judge(named, self.chains)
        out.duplicates = j.duplicates
        out.checkpoints = [
            checkpoint_row(cp, msg.value or b"", msg.partition, msg.offset)
            for msg, cp in j.checkpoints
        ]
        out.incidents = [
            incident_row(
                IncidentKind.SEQ_GAP,
                rec,
                msg,
                f"{hi - lo + 1} {self.what}(s) missing before seq {rec['seq']}",
                lo,
                hi,
            )
            for msg, rec, lo, hi in j.gaps
        ]
        out.rejected = [
            QuarantineRow(
                msg.topic, msg.partition, msg.offset, msg.key, rejection, msg.value or b""
            )
            for msg, rejection in j.rejected
        ]
        out.accepted = [(m, ev) for m, ev in j.accepted if isinstance(ev, VerifiedEvent)]
        out.rows = [self._row(ev, m.value or b"", m.partition, m.offset) for m, ev in out.accepted]
        out.incidents.extend(self.incidents(out.accepted))
        return out

    def incidents(self, accepted: list[tuple[Message, VerifiedEvent]]) -> list[list[Any]]:
        """What the kind's accepted events raise as incidents (none by default)."""
        return []

    def _misnamed(
        self, result: VerifiedEvent | StagedEvent | VerifiedCheckpoint
    ) -> Rejection | None:
        producer_id = result.record["producer_id"]
        if producer_id.endswith(self._suffix):
            return None
        return Rejection(
            Reason.INVALID_EVENT,
            f"chain {producer_id!r} on the {self.kind.table.replace('_', '-')} topic does not "
            f"end with {self._suffix!r}",
        )

    def _heads(self, chains: set[Chain]) -> dict[Chain, Head]:
        return self.stored.chain_heads(chains, self.kind.table)

    def _hashes(self, links: set[Link]) -> dict[Link, bytes]:
        return self.stored.stored_hashes(links, self.kind.table)
