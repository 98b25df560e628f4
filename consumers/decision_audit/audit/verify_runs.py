"""The record of ``verify`` runs (``{database}.verify_runs``, migration 0008).

Each run appends one row: who ran it (the actor, as in ``access_log``, the OS user and the
host), when, full or incremental, its scope, the result, and per chain the range of seqs
it checked, its problems, the checkpoints it relied on, and how far the chain is now proven
— from seq 1 up to ``proven_seq``, whose event hash is ``proven_hash``. An incremental run
starts each chain from the latest recorded proof (:func:`boundaries`).

A chain is proven as far as the run reached when the run found nothing wrong with it. When
it did, a full run leaves nothing proven (its next incremental run starts again from seq 1),
an incremental run leaves the previous proof standing (the next one checks the same events
again, and reports the same problems until they are dealt with). A run limited to a time
window proves nothing new and keeps each chain's previous proof.

"When was the trail last proven, and by whom"::

    SELECT finished_at, actor, mode FROM audit.verify_runs WHERE ok
    ORDER BY finished_at DESC LIMIT 1
"""

from __future__ import annotations

import logging
import socket
import uuid
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from decision_audit.audit.access_log import AccessSettings, os_user
from decision_audit.audit.chain_walk import ChainRow
from decision_audit.audit.verify_report import ChainReport, TrailReport

log = logging.getLogger("decision_audit.verify")

Chain = tuple[str, int]
_NO_HASH = bytes(32)

_CHAIN_FIELDS = (
    "producer_id",
    "producer_epoch",
    "from_seq",
    "to_seq",
    "events",
    "problems",
    "proven_seq",
    "proven_hash",
    "proven_event_id",
    "attested_to",
    "key_id",
    "latest_at",
    "checkpoints",
)


@dataclass(frozen=True, slots=True)
class Boundary:
    """How far a chain is proven: seq 1..``seq``, the last one's hash and id."""

    seq: int
    event_hash: bytes
    event_id: str
    attested_to: int
    """the highest seq a valid checkpoint vouched for"""
    key_id: str | None
    latest: datetime | None
    """the latest ``occurred_at`` among the proven events"""


def boundaries(client: Any, database: str, producer: str | None = None) -> dict[Chain, Boundary]:
    """Each chain's latest recorded proof (chains with none recorded are absent)."""
    cond = "" if producer is None else "WHERE chains.producer_id = {producer:String}"
    try:
        rows = client.query(
            "SELECT chains.producer_id, chains.producer_epoch, argMax(tuple(chains.proven_seq, "
            "chains.proven_hash, chains.proven_event_id, chains.attested_to, chains.key_id, "
            "chains.latest_at), (finished_at, run_id)) "
            f"FROM {database}.verify_runs ARRAY JOIN chains {cond} "
            "GROUP BY chains.producer_id, chains.producer_epoch",
            parameters={"producer": producer} if producer is not None else None,
            column_formats={"chains.proven_hash": "bytes"},
        ).result_rows
    except Exception as exc:
        if "verify_runs" not in str(exc):
            raise
        log.warning("no %s.verify_runs (migrate the store): verifying from seq 1", database)
        return {}
    out = {}
    for pid, epoch, (seq, h, eid, attested, key_id, latest) in rows:
        if seq > 0:
            raw = h if isinstance(h, bytes) else str(h).encode("latin-1")
            out[(str(pid), int(epoch))] = Boundary(
                int(seq), raw.ljust(32, b"\0"), str(eid), int(attested), key_id, latest
            )
    return out


class RunRecorder:
    """Collects a run's chains and appends the run to ``verify_runs``."""

    def __init__(
        self, client: Any, database: str, started: datetime, *, actor: str | None = None
    ) -> None:
        self.client = client
        self.db = database
        self.started = started
        self.actor = actor
        self._chains: list[tuple[ChainReport, ChainRow | None, datetime | None, list[int]]] = []

    def chain(
        self,
        rep: ChainReport,
        last: ChainRow | None,
        latest: datetime | None,
        relied_on: list[int],
    ) -> None:
        self._chains.append((rep, last, latest, relied_on))

    def finish(
        self,
        report: TrailReport,
        *,
        mode: str,
        scope: str,
        previous: dict[Chain, Boundary],
        proves: bool,
    ) -> bool:
        """Append the run; False (and a warning) if it cannot be written."""
        columns: dict[str, list[Any]] = {f: [] for f in _CHAIN_FIELDS}
        kinds: Counter[str] = Counter()
        for rep, last, latest, relied_on in self._chains:
            kinds.update(str(p.kind) for p in rep.problems)
            chain = (rep.producer_id, rep.producer_epoch)
            before = previous.get(chain)
            proven = self._proven(rep, last, latest, before, mode, proves)
            values = {
                "producer_id": rep.producer_id,
                "producer_epoch": rep.producer_epoch,
                "from_seq": rep.first_seq or 0,
                "to_seq": rep.last_seq or 0,
                "events": rep.events,
                "problems": len(rep.problems),
                "proven_seq": proven.seq if proven else 0,
                "proven_hash": proven.event_hash if proven else _NO_HASH,
                "proven_event_id": proven.event_id if proven else "",
                "attested_to": proven.attested_to if proven else 0,
                "key_id": rep.key_id,
                "latest_at": proven.latest if proven else None,
                "checkpoints": relied_on,
            }
            for k, v in values.items():
                columns[k].append(v)
        who = self.actor or AccessSettings().actor
        row = [
            uuid.uuid4(),
            self.started,
            datetime.now(UTC),
            who,
            os_user(),
            socket.gethostname(),
            mode,
            scope,
            report.keys_checked,
            report.ok,
            report.events,
            sum(kinds.values()),
            dict(kinds),
            *(columns[f] for f in _CHAIN_FIELDS),
        ]
        names = [
            "run_id",
            "started_at",
            "finished_at",
            "actor",
            "os_user",
            "host",
            "mode",
            "scope",
            "signatures_checked",
            "ok",
            "events",
            "problems",
            "problem_kinds",
            *(f"chains.{f}" for f in _CHAIN_FIELDS),
        ]
        try:
            self.client.insert(
                f"{self.db}.verify_runs", [row], column_names=names, settings={"async_insert": 0}
            )
        except Exception as exc:
            log.warning("verify run not recorded in %s.verify_runs: %s", self.db, exc)
            return False
        return True

    @staticmethod
    def _proven(
        rep: ChainReport,
        last: ChainRow | None,
        latest: datetime | None,
        before: Boundary | None,
        mode: str,
        proves: bool,
    ) -> Boundary | None:
        if not proves:
            return before
        if not rep.ok:
            return before if mode == "incremental" else None
        if last is None:
            return before
        return Boundary(
            last.seq, last.event_hash, last.event_id, rep.attested_to, rep.key_id, latest
        )
